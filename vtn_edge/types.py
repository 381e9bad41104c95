"""Results the runtime hands out: frozen dataclasses, never tuples."""

from __future__ import annotations

from dataclasses import dataclass

# How far apart two timestamps may be and still count as the same instant, when a duration (a
# hold, a merge gap) is compared with its setting. Timestamps come from different clocks: frame
# index / fps when streams are evaluated, the container's or camera's millisecond timestamps
# placed on the wall clock in the monitor. A 0.2 s hold at 15 decoder results a second ends exactly
# on a result; without a tolerance, float and millisecond rounding decide whether it has passed.
CLOCK_TOLERANCE_S = 1e-3


@dataclass(frozen=True)
class Prediction:
    """The label for one pushed frame.

    Frames that did not run the encoder carry the newest decoder result of their stream. Until
    the stream has a full window of embeddings (`window_full` False) `label` is None: no partial
    windows are decoded. With a score threshold, `label` is also None while the (smoothed) top
    score stays below it. `fresh` is True on the frame whose window the decoder has just run on
    (a new result; the frames after it carry it).
    """

    stream: int
    frame_index: int
    timestamp: float
    label: str | None
    score: float
    top_k: tuple[tuple[str, float], ...]
    window_full: bool
    latency_ms: float
    fresh: bool = False
