"""Progress for long steps: a live bar on a terminal; in a log (stderr redirected to a file or a
pipe) one plain line every LOG_EVERY_S seconds and one at the end, instead of a redraw per update
that piles up on a single line."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable

from tqdm import tqdm

LOG_EVERY_S = 30.0


class _Lines(io.TextIOBase):
    """tqdm redraws its line with carriage returns; a log gets each state as its own line."""

    def __init__(self, stream: io.TextIOBase):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        state = line.split(" [")[0]  # the count, without the timings
        if line and state != self.last:  # closing redraws the last state once more
            self.stream.write(line + "\n")
            self.last = state
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress(
    iterable: Iterable | None = None,
    *,
    desc: str,
    unit: str,
    total: int | None = None,
    enabled: bool = True,
    leave: bool = True,
) -> tqdm:
    """tqdm as this project shows it (see the module docstring)."""
    stream = sys.stderr
    interactive = stream.isatty()
    return tqdm(
        iterable,
        desc=desc,
        unit=unit,
        total=total,
        disable=not enabled,
        leave=leave or not interactive,
        file=stream if interactive else _Lines(stream),
        mininterval=0.1 if interactive else LOG_EVERY_S,
    )
