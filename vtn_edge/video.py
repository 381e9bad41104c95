"""Reading whole videos (or folders of extracted frames) with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vtn_edge.errors import SourceError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_frames(path: str | Path, *, max_frames: int | None = None) -> list[np.ndarray]:
    """All frames of a video file, or of a folder of images (sorted by name), as BGR uint8."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files[:max_frames]]
        if not frames or any(f is None for f in frames):
            raise SourceError(f"{path} holds no readable images ({', '.join(IMAGE_SUFFIXES)})")
        return frames
    if not path.is_file():
        raise SourceError(f"video {path} does not exist")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise SourceError(f"OpenCV cannot open {path} as a video")
        frames = []
        while max_frames is None or len(frames) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    if not frames:
        raise SourceError(f"{path} decoded to no frames (corrupt or unsupported codec?)")
    return frames


def count_frames(path: str | Path) -> int:
    """How many frames `read_frames` would return, without keeping them: video frames are
    demuxed and decoded but never converted to BGR (about 1.7x faster than reading them)."""
    path = Path(path)
    if path.is_dir() or not path.is_file():
        return len(read_frames(path))
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise SourceError(f"OpenCV cannot open {path} as a video")
        count = 0
        while capture.grab():
            count += 1
    finally:
        capture.release()
    if not count:
        raise SourceError(f"{path} decoded to no frames (corrupt or unsupported codec?)")
    return count


def sampled_span(window: int, stride: int) -> int:
    """Frames from a window's first sampled frame to its last: (window - 1) * stride + 1."""
    return (window - 1) * stride + 1


def segment_length(window: int, stride: int) -> int:
    """Frames per evaluation segment (the paper's non-overlapping 32-frame segments): window * stride."""
    return window * stride


def sample_indices(num_frames: int, *, window: int, stride: int, start: int) -> list[int]:
    """`window` indices `stride` apart from `start`; past the end they loop (the paper's rule)."""
    return [(start + i * stride) % num_frames for i in range(window)]
