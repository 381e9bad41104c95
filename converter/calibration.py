"""Clips for calibration and verification: real videos from a path, or synthetic ones.

A clip here is what the runtime feeds the encoder: `window` sampled frames, each cropped and
resized to the model's input square, as uint8 BGR [window, S, S, 3].
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np

from converter.data.synth import CORE_CLASSES, draw_spec, render_clip
from vtn_edge.datasets import open_dataset
from vtn_edge.errors import DataError, VtnEdgeError
from vtn_edge.metadata import Preprocessing
from vtn_edge.preprocess import center_crop_resize
from vtn_edge.video import VIDEO_SUFFIXES, read_frames, sample_indices, sampled_span

log = logging.getLogger(__name__)


def clip_from_frames(
    frames: list[np.ndarray], pre: Preprocessing, *, window: int, stride: int, start: int = 0
) -> np.ndarray:
    idx = sample_indices(len(frames), window=window, stride=stride, start=start)
    return np.stack([center_crop_resize(frames[i], pre) for i in idx])


def synthetic_clips(count: int, pre: Preprocessing, *, window: int, stride: int, seed: int) -> list[np.ndarray]:
    """Clips of the temporal benchmark's core classes rendered in memory (no files)."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(count):
        label = CORE_CLASSES[i % len(CORE_CLASSES)]
        spec = draw_spec(label, rng)
        span = sampled_span(window, stride)  # render only the frames the clip samples
        frames = list(itertools.islice(render_clip(spec, int(rng.integers(1 << 31))), span))
        clips.append(clip_from_frames(frames, pre, window=window, stride=stride))
    return clips


def _video_paths(path: Path) -> list[Path]:
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return [path]
    if path.is_dir():
        direct = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if direct:
            return direct
    return [item.path for item in open_dataset(path).items]


def clips_from_path(
    path: str | Path, pre: Preprocessing, *, window: int, stride: int, max_clips: int, min_clips: int
) -> list[np.ndarray]:
    """Up to `max_clips` clips (two per video at most) from a video, folder, list file or JSON."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"calibration path {path} does not exist")
    videos = _video_paths(path)
    clips, failed = [], []
    span = sampled_span(window, stride)
    for video in videos:
        if len(clips) >= max_clips:
            break
        try:
            frames = read_frames(video)
        except VtnEdgeError as exc:
            log.warning("skipping %s: %s", video, exc)
            failed.append(video)
            continue
        starts = [0] if len(frames) < 2 * span else [0, len(frames) - span]
        clips += [clip_from_frames(frames, pre, window=window, stride=stride, start=s) for s in starts]
    clips = clips[:max_clips]
    if len(clips) < min_clips:
        raise DataError(
            f"{path}: found {len(videos)} videos ({len(failed)} undecodable), giving {len(clips)} clips of "
            f"{window} frames; at least {min_clips} clips ({min_clips * window} frames) are needed"
        )
    return clips


def labelled_clips(
    path: str | Path, model_labels: list[str], pre: Preprocessing, *, window: int, stride: int, max_clips: int
) -> tuple[list[np.ndarray], list[int]]:
    """One centred clip per video of a labelled dataset, classes interleaved so that any prefix is
    balanced; labels are indices into `model_labels` (matched by name)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"validation data {path} does not exist")
    dataset = open_dataset(path)
    index = {name: i for i, name in enumerate(model_labels)}
    unknown = [name for name in dataset.labels if name not in index]
    if unknown:
        raise DataError(
            f"{path}: classes {', '.join(unknown[:5])} are not among the model's {len(model_labels)} labels "
            "(validation data must use the model's class names)"
        )
    per_class = [[item for item in dataset.items if item.label == c] for c in range(len(dataset.labels))]
    interleaved = [item for group in itertools.zip_longest(*per_class) for item in group if item is not None]
    span = sampled_span(window, stride)
    clips, labels = [], []
    for item in interleaved:
        if len(clips) >= max_clips:
            break
        try:
            frames = read_frames(item.path)
        except VtnEdgeError as exc:
            log.warning("skipping %s: %s", item.path, exc)
            continue
        start = max(0, (len(frames) - span) // 2)
        clips.append(clip_from_frames(frames, pre, window=window, stride=stride, start=start))
        labels.append(index[dataset.labels[item.label]])
    if len(clips) < 2:
        raise DataError(f"{path}: only {len(clips)} decodable labelled videos; accuracy control needs at least 2")
    return clips, labels
