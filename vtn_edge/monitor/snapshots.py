"""Snapshots: with each event, a JPEG of the frame at which its label scored highest.

Written when the event starts (its first frame is the best so far) and again when it ends (the
best of the whole event), under the same name, atomically: a reader never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from vtn_edge.errors import VtnEdgeError
from vtn_edge.monitor.events import ActionEvent
from vtn_edge.monitor.preview import SourceView, ZoneView, annotate
from vtn_edge.monitor.zones import FULL_FRAME, Zone

RECENT_FRAMES = 64  # predictions arrive a few frames after their frame was pushed


def check_folder(folder: Path) -> Path:
    """The snapshot folder, created and proven writable before any camera opens."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise VtnEdgeError(f"--snapshots {folder}: cannot write there ({exc.strerror or exc})") from None
    return folder


@dataclass
class _Best:
    score: float
    frame: np.ndarray


class SnapshotKeeper:
    """One stream's recent frames and the best frame of its open event. Thread-safe: frames come
    from the monitor's loop, predictions and events from the recognizer's thread. A zone's
    snapshot is the whole frame with the zone's box drawn on it."""

    def __init__(self, folder: Path, source: str, zone: Zone = FULL_FRAME):
        self.folder = folder
        self.source = source
        self.zone = zone
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, np.ndarray]] = deque(maxlen=RECENT_FRAMES)
        self._candidate: _Best | None = None  # the newest prediction's frame and score
        self._best: _Best | None = None

    def add_frame(self, timestamp: float, frame: np.ndarray) -> None:
        with self._lock:
            self._recent.append((timestamp, frame))  # a reference: the reader hands over a new array per frame

    def observe(self, timestamp: float, score: float) -> None:
        """Before the tracker sees a prediction: remember its frame. A frame that was only grabbed
        (no pixels; it carries the newest encoded frame's result) keeps that frame as candidate."""
        with self._lock:
            frame = next((f for t, f in reversed(self._recent) if t == timestamp), None)
            if frame is not None:
                self._candidate = _Best(score, frame)

    def consider(self) -> None:
        """After the tracker saw a prediction of the open event's label: keep its frame if best."""
        with self._lock:
            if self._candidate is not None and (self._best is None or self._candidate.score > self._best.score):
                self._best = self._candidate

    def write(self, event: ActionEvent) -> tuple[Path, bytes] | None:
        """The event's snapshot (path, JPEG bytes); None if no frame of it was seen."""
        with self._lock:
            if event.event == "start":
                self._best = self._candidate
            best = self._best
            if event.event == "end":
                self._best = None
        if best is None:
            return None
        if self.zone.name is None:
            view = SourceView(self.source, best.frame, event.label, best.score, 0.0, True)
        else:
            zone = ZoneView(self.zone.name, self.zone.box, event.label, best.score)
            view = SourceView(self.source, best.frame, None, 0.0, 0.0, True, (zone,))
        ok, encoded = cv2.imencode(".jpg", annotate(view), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            return None
        path = self.folder / f"{event.file_stem}.jpg"
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(encoded.tobytes())
        os.replace(partial, path)
        return path, encoded.tobytes()


class SnapshotSink:
    """As an event sink: each event's snapshot written by its stream's keeper, its path in the event."""

    def __init__(self, keepers: dict[tuple[str, str | None], SnapshotKeeper]):
        self._keepers = keepers  # (camera, zone) -> keeper

    def handle(self, event: ActionEvent) -> ActionEvent:
        written = self._keepers[(event.source, event.zone)].write(event)
        return event if written is None else replace(event, snapshot=str(written[0]))

    def close(self) -> None:
        pass
