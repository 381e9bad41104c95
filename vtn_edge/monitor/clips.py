"""MP4 clips around events: the last few seconds before an event start, until a few seconds after its end.

Per source, the recorder keeps references to the recent frames it was shown (no copies) and
writes each clip on its own writer thread, so encoding never slows the labelling. A clip is
written under a hidden temporary name and renamed when complete: a file named like a clip is a
whole, playable clip. Frames are those the monitor processed, placed by their timestamps: where
frames were dropped to stay live, the previous frame is shown for as long as they would have
been, so a clip plays at the real speed and lasts as long as what it shows. An event's end is
known only once its merge gap has passed (`events.EventRules`): a clip runs until `after_s` past
the event's end time or until the end was known, whichever is later.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from vtn_edge.monitor.events import ActionEvent

log = logging.getLogger(__name__)

KNOWN_LATE_S = 2.0  # longest wait from a frame to its label that a clip's start still covers


@dataclass(frozen=True)
class ClipOptions:
    folder: Path
    before_s: float = 3.0
    after_s: float = 3.0
    max_s: float = 60.0  # a long event gets its first minute
    max_gap_s: float = 2.0  # a longer gap (an outage) is not filled with a still frame
    start_offset_s: float = 0.0  # how far event starts are dated back (EventRules.start_offset)


@dataclass
class _Clip:
    path: Path
    first_time: float
    deadline: float | None = None  # set when the event ends
    writer: cv2.VideoWriter | None = field(default=None, repr=False)
    size: tuple[int, int] | None = None
    frames: int = 0  # written, repeats included
    start: float | None = None  # timestamp of the clip's first frame
    skipped_s: float = 0.0  # gaps longer than max_gap_s, left out

    @property
    def temporary(self) -> Path:
        return self.path.with_name("." + self.path.name)


def clip_path(folder: Path, event: ActionEvent) -> Path:
    return Path(folder) / f"{event.file_stem}.mp4"


class ClipRecorder:
    def __init__(self, source: str, options: ClipOptions, fps: float = 25.0):
        self.source = source
        self.options = options
        self.fps = fps
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
            # an event is known a few frames after its label appeared, and its start is dated back
            # before that: keep what its "before" part needs then
            keep_s = self.options.before_s + self.options.start_offset_s + KNOWN_LATE_S
            while self._recent and self._recent[0][0] < timestamp - keep_s:
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
                self._jobs.put(("frames", [(timestamp, frame)], targets))

    def start(self, event: ActionEvent) -> Path:
        path = clip_path(self.options.folder, event)
        with self._lock:
            first = event.start_time - self.options.before_s
            recent = [(t, f) for t, f in self._recent if t >= first - 1e-6]
            clip = _Clip(path, recent[0][0] if recent else event.start_time)
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
                        for timestamp, frame in job[1]:
                            self._write(clip, timestamp, frame)
                else:
                    self._finish(job[1])
            except Exception:  # a clip failing must not stop the others
                log.exception("%s: writing a clip failed", self.source)

    def _write(self, clip: _Clip, timestamp: float, frame: np.ndarray) -> None:
        if clip.start is None:
            clip.start = timestamp
        gap = timestamp - clip.start - clip.skipped_s - clip.frames / self.fps
        if gap > self.options.max_gap_s:
            clip.skipped_s += gap
            gap = 0.0
        for _ in range(max(int(round(gap * self.fps)) + 1, 0) if clip.frames else 1):  # 0: ahead of time
            self._put(clip, frame)

    def _put(self, clip: _Clip, frame: np.ndarray) -> None:
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
        log.info("%s: wrote %s (%d frames)", self.source, clip.path, clip.frames)


class ClipSink:
    """Clips for every camera: the monitor shows it each camera's frames, and as an event sink it
    starts and ends clips and puts their paths into the events."""

    def __init__(self, options: ClipOptions):
        self.options = options
        self._recorders: dict[str, ClipRecorder] = {}
        self._paths: dict[str, str] = {}  # open event id -> its clip

    def add(self, camera: str, frame: np.ndarray, timestamp: float, fps: float) -> None:
        """Every processed frame of a camera (the monitor's loop); fps: the camera's nominal rate."""
        recorder = self._recorders.get(camera)
        if recorder is None:
            recorder = self._recorders[camera] = ClipRecorder(camera, self.options, fps)
        recorder.add(frame, timestamp)

    def handle(self, event: ActionEvent) -> ActionEvent:
        recorder = self._recorders.get(event.source)
        if recorder is None:  # no frame of this camera yet
            return event
        if event.event == "start":
            self._paths[event.id] = str(recorder.start(event))
            return replace(event, clip=self._paths[event.id])
        recorder.end(event)
        return replace(event, clip=self._paths.pop(event.id, None))

    def close(self) -> None:
        for recorder in self._recorders.values():
            recorder.close()
