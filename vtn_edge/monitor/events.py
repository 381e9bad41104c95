"""Action events: a start when a stable label appears, an end when it goes; JSON lines on disk.

Labels come from StreamingRecognizer with the monitor's LabelPolicy (threshold and hysteresis),
so an event is a run of frames with the same non-None label. Each event is published twice:
`"event": "start"` (end fields null) as soon as it begins and `"event": "end"` with the same id
when it is over.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from vtn_edge.types import Prediction

log = logging.getLogger("vtn_edge.monitor")

# why an event ended
LABEL_CHANGED = "label_changed"
SOURCE_LOST = "source_lost"
SOURCE_ENDED = "source_ended"
SHUTDOWN = "shutdown"


def iso_time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ActionEvent:
    event: str  # "start" or "end"
    id: str
    source: str
    label: str
    score: float  # mean score of the label over the event's frames so far
    max_score: float
    start_time: float  # wall-clock seconds
    end_time: float | None
    start_frame: int  # frame indices count the frames the monitor processed for this source
    end_frame: int | None
    reason: str | None = None  # for "end": label_changed, source_lost, source_ended, shutdown
    host: str = ""
    clip: str | None = None
    snapshot: str | None = None  # JPEG of the event's best-scoring frame (--snapshots)
    zone: str | None = None  # the camera's zone; None: its whole frame

    def to_dict(self) -> dict:
        d = asdict(self)
        d = {"source": d.pop("source"), "zone": d.pop("zone"), **d}  # who first, then what and when
        d = {"event": d.pop("event"), "id": d.pop("id"), **d}
        d["start_time"], d["end_time"] = iso_time(self.start_time), iso_time(self.end_time)
        d["duration_s"] = None if self.end_time is None else round(self.end_time - self.start_time, 3)
        d["score"], d["max_score"] = round(self.score, 4), round(self.max_score, 4)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @property
    def file_stem(self) -> str:
        """The name its clip and snapshot files share: id and label, safe as a file name."""
        return re.sub(r"[^\w.-]+", "_", f"{self.id}-{self.label}")


class EventTracker:
    """Turns one stream's predictions (a camera, or a zone of one; in frame order) into start/end
    events. Thread-safe.

    Labels in `ignore` (the model's background classes, see `Manifest.background`) are no action:
    they end an event like no label does and never start one.
    """

    def __init__(
        self,
        source: str,
        emit: Callable[[ActionEvent], None],
        host: str | None = None,
        ignore: Collection[str] = (),
        zone: str | None = None,
    ):
        self.source = source
        self.zone = zone
        self._prefix = source if zone is None else f"{source}-{zone}"
        self._emit = emit
        self._host = socket.gethostname() if host is None else host
        self._ignore = frozenset(ignore)
        self._lock = threading.Lock()
        self._open: ActionEvent | None = None
        self._score_sum = 0.0
        self._frames = 0
        self._last: tuple[int, float] | None = None  # (frame index, time) of the newest prediction

    @property
    def current(self) -> ActionEvent | None:
        return self._open

    def update(self, p: Prediction) -> None:
        with self._lock:
            label = p.label if p.window_full and p.label not in self._ignore else None
            if self._open is not None and label != self._open.label:
                self._close(LABEL_CHANGED, p.frame_index - 1, p.timestamp)
            if label is not None:
                if self._open is None:
                    event_id = f"{self._prefix}-{p.frame_index}-{int(p.timestamp * 1000)}"
                    self._open = ActionEvent(
                        "start", event_id, self.source, label, p.score, p.score, p.timestamp, None, p.frame_index, None,
                        host=self._host, zone=self.zone,
                    )  # fmt: skip
                    self._score_sum, self._frames = p.score, 1
                    self._emit(self._open)
                else:
                    self._score_sum += p.score
                    self._frames += 1
                    if p.score > self._open.max_score:
                        self._open = replace(self._open, max_score=p.score)
            self._last = (p.frame_index, p.timestamp)

    def close(self, reason: str, when: float | None = None) -> None:
        """End the open event, if any (the camera went away, the file ended, the monitor stops)."""
        with self._lock:
            if self._open is not None:
                frame, last_time = self._last
                self._close(reason, frame, when if when is not None else last_time)

    def _close(self, reason: str, end_frame: int, end_time: float) -> None:
        event = replace(
            self._open,
            event="end",
            score=self._score_sum / self._frames,
            end_time=max(end_time, self._open.start_time),
            end_frame=max(end_frame, self._open.start_frame),
            reason=reason,
        )
        self._open = None
        self._emit(event)


class JsonLinesWriter:
    """Appends one JSON object per line, flushed and fsynced per event: a killed process loses none.
    An event sink (`sinks.EventSink`)."""

    def __init__(self, path: Path | None = None, stream: IO[str] | None = None):
        self.path = path
        self._lock = threading.Lock()
        self._stream = stream
        self._file = None
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def handle(self, event: ActionEvent) -> ActionEvent:
        try:
            self.write(event)
        except OSError as exc:  # e.g. a full disk: say so loudly, and the other sinks still get it
            log.error("could not write event %s to %s: %s", event.id, self.path, exc)
        return event

    def write(self, event: ActionEvent) -> None:
        line = event.to_json() + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(line)
                self._file.flush()
                os.fsync(self._file.fileno())
            if self._stream is not None:
                self._stream.write(line)
                self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
