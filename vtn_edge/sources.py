"""Video sources: files, camera indices and URLs through OpenCV.

`VideoSource.frames()` decodes only the frames the schedule encodes: the others are grabbed
(demuxed and decoded by FFmpeg) but never converted to BGR pixels or copied into Python.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from vtn_edge.errors import SourceError

LIVE_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://", "rtmp://")
FALLBACK_FPS = 25.0  # for sources that report no usable frame rate


def nominal_fps(capture: cv2.VideoCapture) -> float:
    """The frame rate a capture reports, or FALLBACK_FPS where it reports none or nonsense."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return fps if fps and 1 <= fps <= 240 else FALLBACK_FPS


def is_live(source: str | int | Path) -> bool:
    return isinstance(source, int) or str(source).startswith(LIVE_PREFIXES) or str(source).isdigit()


class VideoSource:
    def __init__(self, source: str | int | Path, *, loop: bool = False, params: tuple[int, ...] = ()):
        self.source = source
        self.loop = loop
        self.live = is_live(source)
        target: str | int = int(source) if (isinstance(source, int) or str(source).isdigit()) else str(source)
        if not self.live and not Path(str(source)).is_file():
            raise SourceError(f"video file {source} does not exist")
        self.capture = cv2.VideoCapture(target, cv2.CAP_ANY, list(params)) if params else cv2.VideoCapture(target)
        if not self.capture.isOpened():
            self.capture.release()
            raise SourceError(
                f"cannot open video source {source!r} (not a video OpenCV can decode, "
                "an unreachable URL, or a camera index that does not exist)"
            )
        self.fps = nominal_fps(self.capture)

    def frames(self, needs_pixels: Callable[[], bool] = lambda: True) -> Iterator[tuple[int, np.ndarray | None, float]]:
        """(index, BGR frame or None when `needs_pixels()` is False, timestamp in seconds)."""
        index = 0
        while True:
            if needs_pixels():
                ok, frame = self.capture.read()
            else:
                ok, frame = self.capture.grab(), None
            if not ok:
                if self.loop and not self.live and index > 0:
                    self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok = True
                    continue
                return
            yield index, frame, index / self.fps
            index += 1

    def close(self) -> None:
        self.capture.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(source: str | int | Path, *, loop: bool = False) -> VideoSource:
    return VideoSource(source, loop=loop)
