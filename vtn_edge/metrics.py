"""Classification metrics shared by `converter evaluate` (torch) and `vtn_edge evaluate` (IR).

Definitions (the paper's): a video is cut into non-overlapping 32-frame segments (16 frames at
stride 2; a shorter video gives one looped segment). clip@1 is the accuracy over segments;
Video@1 and top-5 average a video's segment probabilities; mean class accuracy averages the
per-class Video@1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vtn_edge.datasets import VideoDataset
from vtn_edge.errors import VtnEdgeError
from vtn_edge.metadata import Preprocessing
from vtn_edge.preprocess import center_crop_resize
from vtn_edge.smoothing import softmax
from vtn_edge.video import read_frames, sample_indices, segment_length


@dataclass(frozen=True)
class EvalResult:
    clip_top1: float
    video_top1: float
    video_top5: float
    mean_class_accuracy: float
    confusion: np.ndarray  # [true, predicted] counts over videos
    per_class_accuracy: tuple[float, ...]
    videos: int
    clips: int
    skipped: tuple[str, ...] = ()

    def summary(self) -> dict[str, float | int]:
        return {
            "clip@1": self.clip_top1,
            "video@1": self.video_top1,
            "top5": self.video_top5,
            "mean_class_acc": self.mean_class_accuracy,
            "videos": self.videos,
            "clips": self.clips,
        }


def segment_starts(num_frames: int, *, window: int, stride: int) -> list[int]:
    span = segment_length(window, stride)
    return [i * span for i in range(max(1, num_frames // span))]


def compute_metrics(
    video_labels: Sequence[int], segment_probs: Sequence[np.ndarray], num_classes: int, skipped: Sequence[str] = ()
) -> EvalResult:
    """`segment_probs[v]` is [segments, classes] for video v (softmax probabilities)."""
    if len(video_labels) != len(segment_probs) or not video_labels:
        raise VtnEdgeError(f"{len(video_labels)} labels for {len(segment_probs)} videos: need one per video, >= 1")
    labels = np.asarray(video_labels)
    clip_hits = [np.argmax(p, axis=1) == y for p, y in zip(segment_probs, labels)]
    video_probs = np.stack([p.mean(axis=0) for p in segment_probs])
    predicted = video_probs.argmax(axis=1)
    top5 = np.argsort(-video_probs, axis=1)[:, :5]
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    present = confusion.sum(axis=1) > 0
    per_class = np.where(present, np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1), np.nan)
    return EvalResult(
        clip_top1=float(np.concatenate(clip_hits).mean()),
        video_top1=float((predicted == labels).mean()),
        video_top5=float(np.mean([y in row for y, row in zip(labels, top5)])),
        mean_class_accuracy=float(np.nanmean(per_class)),
        confusion=confusion,
        per_class_accuracy=tuple(float(x) for x in per_class),
        videos=len(labels),
        clips=int(sum(len(p) for p in segment_probs)),
        skipped=tuple(skipped),
    )


def evaluate_dataset(
    dataset: VideoDataset,
    predict: Callable[[np.ndarray], np.ndarray],
    pre: Preprocessing,
    *,
    window: int,
    stride: int,
    progress: Callable | None = None,
) -> EvalResult:
    """Run `predict` ([window, S, S, 3] uint8 BGR clip -> logits) over every segment of every video."""
    labels, probs, skipped = [], [], []
    items = dataset.items if progress is None else progress(dataset.items)
    for item in items:
        try:
            frames = read_frames(item.path)
        except VtnEdgeError as exc:
            skipped.append(f"{item.path}: {exc}")
            continue
        clips = []
        for start in segment_starts(len(frames), window=window, stride=stride):
            idx = sample_indices(len(frames), window=window, stride=stride, start=start)
            clip = np.stack([center_crop_resize(frames[i], pre) for i in idx])
            clips.append(softmax(np.asarray(predict(clip), dtype=np.float64).reshape(-1)))
        labels.append(item.label)
        probs.append(np.stack(clips))
    if not labels:
        raise VtnEdgeError(f"no video of {dataset.source} could be decoded: " + "; ".join(skipped[:3]))
    return compute_metrics(labels, probs, len(dataset.labels), skipped)


def format_confusion(confusion: np.ndarray, labels: Sequence[str]) -> str:
    width = max(len(x) for x in labels)
    head = " " * (width + 1) + " ".join(f"{i:>3}" for i in range(len(labels)))
    rows = [f"{name:>{width}} " + " ".join(f"{c:>3}" for c in row) for name, row in zip(labels, confusion)]
    return "\n".join([head] + rows)
