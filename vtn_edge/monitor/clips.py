"""MP4 clips around events: the last few seconds before an event start, until a few seconds after its end.

Per source, the recorder keeps references to the recent frames it was shown (no copies) and
writes each clip on its own writer thread, so encoding never slows the labelling. A clip is
written under a hidden temporary name and renamed when complete: a file named like a clip is a
whole, playable clip. Frames are those the monitor processed; frames dropped to stay live are
not in the clip either.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vtn_edge.monitor.events import ActionEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipOptions:
    folder: Path
    before_s: float = 3.0
    after_s: float = 3.0
    max_s: float = 60.0  # a long event gets its first minute


@dataclass
class _Clip:
    path: Path
    first_time: float
    deadline: float | None = None  # set when the event ends
    writer: cv2.VideoWriter | None = field(default=None, repr=False)
    size: tuple[int, int] | None = None
    frames: int = 0

    @property
    def temporary(self) -> Path:
        return self.path.with_name("." + self.path.name)


def clip_path(folder: Path, event: ActionEvent) -> Path:
    safe = re.sub(r"[^\w.-]+", "_", f"{event.id}-{event.label}")
    return Path(folder) / f"{safe}.mp4"


class ClipRecorder:
    def __init__(self, source: str, options: ClipOptions, fps: float = 25.0):
        self.source = source
        self.options = options
        self.fps = fps
        self.written: list[Path] = []
        Path(options.folder).mkdir(parents=True, exist_ok=True)
        self._recent: deque[tuple[float, np.ndarray]] = deque()
        self._clips: dict[str, _Clip] = {}
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, name=f"clips-{source}", daemon=True)
        self._thread.start()

    def add(self, frame: np.ndarray, timestamp: float) -> None:
        """Every processed frame, in order (the monitor's loop)."""
        with self._lock:
            self._recent.append((timestamp, frame))
            while self._recent and self._recent[0][0] < timestamp - self.options.before_s:
                self._recent.popleft()
            targets = []
            for event_id, clip in list(self._clips.items()):
                over = clip.deadline is not None and timestamp > clip.deadline
                if over or timestamp - clip.first_time > self.options.max_s:
                    del self._clips[event_id]
                    self._jobs.put(("close", clip))
                else:
                    targets.append(clip)
            if targets:
                self._jobs.put(("frames", [frame], targets))

    def start(self, event: ActionEvent) -> Path:
        path = clip_path(self.options.folder, event)
        with self._lock:
            recent = [f for _, f in self._recent]
            clip = _Clip(path, self._recent[0][0] if self._recent else event.start_time)
            self._clips[event.id] = clip
            self._jobs.put(("frames", recent, [clip]))
        return path

    def end(self, event: ActionEvent) -> None:
        with self._lock:
            clip = self._clips.get(event.id)
            if clip is not None:
                clip.deadline = event.end_time + self.options.after_s

    def close(self, timeout: float = 5.0) -> None:
        """Finish every open clip with what it has now."""
        with self._lock:
            for clip in self._clips.values():
                self._jobs.put(("close", clip))
            self._clips.clear()
            self._jobs.put(None)
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the writer thread
    def _write_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                if job[0] == "frames":
                    for clip in job[2]:
                        for frame in job[1]:
                            self._write(clip, frame)
                else:
                    self._finish(job[1])
            except Exception:  # a clip failing must not stop the others
                log.exception("%s: writing a clip failed", self.source)

    def _write(self, clip: _Clip, frame: np.ndarray) -> None:
        if clip.writer is None:
            clip.size = (frame.shape[1], frame.shape[0])
            clip.writer = cv2.VideoWriter(str(clip.temporary), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, clip.size)
            if not clip.writer.isOpened():
                raise OSError(f"cannot write {clip.temporary}")
        if (frame.shape[1], frame.shape[0]) != clip.size:  # the camera came back at another size
            frame = cv2.resize(frame, clip.size, interpolation=cv2.INTER_AREA)
        clip.writer.write(frame)
        clip.frames += 1

    def _finish(self, clip: _Clip) -> None:
        if clip.writer is None:
            return
        clip.writer.release()
        os.replace(clip.temporary, clip.path)
        self.written.append(clip.path)
        log.info("%s: wrote %s (%d frames)", self.source, clip.path, clip.frames)
