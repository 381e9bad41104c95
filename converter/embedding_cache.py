"""Frozen-encoder training: per-frame backbone features computed once, cached on disk; the
projection to 512, the decoder and the classifier train on them.

Why every frame, and why before the projection: a training window can then start anywhere in a
video (temporal augmentation at no extra encoder cost), and the 1x1 projection stays trainable
(frozen, it would be a random matrix on top of an ImageNet backbone). An entry holds
[views, frames, C] float16: the centre crop, then views - 1 fixed random multi-scale crops
(flipped half the time unless flips are off). With `tuned` > 0 the backbone's last modules
train too, so an entry holds the maps [views, frames, C, H, W] that the frozen trunk hands them.
It is keyed by the video (path, size, mtime), the views, the flip setting, the stride (difference
modalities pair each frame with the one `stride` before it), the cut and a fingerprint of the
trunk and its preprocessing, so a changed encoder never reuses stale features.
"""

from __future__ import annotations

import hashlib
import logging
import random
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from torch.utils.data import Dataset

from converter.data.clips import ClipDataset, augment
from converter.export import fold_preprocessing
from converter.models.vtn import VTN
from converter.progress import progress
from vtn_edge.preprocess import center_crop_resize
from vtn_edge.video import read_frames, sample_indices, segment_length

log = logging.getLogger(__name__)

BATCH = 32
EIGEN_FLOOR = 1e-6


def backbone_fingerprint(model: VTN, tuned: int = 0) -> str:
    """The trunk's weights (rounded to float16, so a half-precision copy of a checkpoint reuses
    its features) and everything else that changes what the trunk computes."""
    config = model.config
    trunk = model.encoder.split_backbone(tuned)[0]
    digest = hashlib.sha1(f"{config.arch}|{config.modality}|{config.relu6}|{config.preprocessing}".encode())
    if tuned:
        digest.update(f"|trunk of {len(trunk)}".encode())
    for key, value in sorted(trunk.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().half().numpy().tobytes())
    return digest.hexdigest()[:16]


class _Trunk(torch.nn.Module):
    """Frames -> what the frozen part of the backbone gives: pooled features [B, C] when the
    whole backbone is frozen, else the trunk's maps [B, C, H, W]."""

    def __init__(self, model: VTN, tuned: int):
        super().__init__()
        self.encoder = model.encoder
        self.trunk = model.encoder.split_backbone(tuned)[0]
        self.pooled = tuned == 0

    def forward(self, current: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        x = self.trunk(self.encoder.backbone_input(current, previous))
        return x.mean(dim=(2, 3)) if self.pooled else x


class FeatureExtractor:
    """The frozen backbone (or its trunk) compiled with OpenVINO (f32): the same numbers as torch,
    several times faster on a CPU. It takes uint8 BGR frames, like the runtime's encoder: the
    normalisation runs in the graph, not as numpy passes over float copies of every frame."""

    def __init__(self, model: VTN, tuned: int = 0):
        size = model.config.preprocessing.input_size
        self.pairs = model.config.uses_difference
        example = torch.zeros(1, 3, size, size)
        shapes = [ov.PartialShape([-1, 3, size, size])] * (2 if self.pairs else 1)
        with warnings.catch_warnings():
            # the input-shape checks are Python branches the tracer notes as constants: shapes are fixed here
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            converted = ov.convert_model(
                _Trunk(model.eval(), tuned), example_input=(example, example) if self.pairs else example, input=shapes
            )
        converted = fold_preprocessing(converted, model.config.preprocessing, native=True)
        self.compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def __call__(self, frames: np.ndarray, stride: int) -> np.ndarray:
        """[F, S, S, 3] uint8 BGR frames of a video -> [F, C] (or a trunk's maps [F, C, H, W]);
        with a difference modality, frame t is paired with frame t - stride (looping, like the
        sampling)."""
        previous = frames[(np.arange(len(frames)) - stride) % len(frames)] if self.pairs else None
        out = []
        for i in range(0, len(frames), BATCH):
            inputs = [frames[i : i + BATCH]] + ([previous[i : i + BATCH]] if self.pairs else [])
            out.append(self.compiled(inputs)[0])
        return np.concatenate(out)


class FeatureCache:
    def __init__(self, root: Path, model: VTN, *, views: int, flip: bool, stride: int, tuned: int = 0):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.model, self.views, self.flip, self.stride, self.tuned = model, views, flip, stride, tuned
        self.fingerprint = backbone_fingerprint(model, tuned)
        self._extractor: FeatureExtractor | None = None

    def _key(self, video: Path) -> str:
        stat = video.stat()
        stride = self.stride if self.model.config.uses_difference else 0
        return (
            f"{video.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.views}|{self.flip}|{stride}|{self.fingerprint}"
        )

    def features(self, clips: ClipDataset, desc: str) -> list[np.ndarray]:
        """[views, frames, C] (with a tuned tail [views, frames, C, H, W]) per video, computing
        only what is not cached yet."""
        out, computed = [], 0
        for item, _ in progress(clips.items, desc=f"features {desc}", unit="video"):
            key = self._key(item.path)
            path = self.root / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"
            if path.is_file():
                out.append(np.load(path))
                continue
            out.append(self._compute(item.path, clips))
            np.save(path.with_suffix(".partial.npy"), out[-1])
            path.with_suffix(".partial.npy").replace(path)
            computed += 1
        log.info("%s: %d videos embedded, %d from the cache", desc, computed, len(clips) - computed)
        return out

    def _compute(self, video: Path, clips: ClipDataset) -> np.ndarray:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.model, self.tuned)
        frames = read_frames(video)
        pre = clips.pre
        # crops drawn from the file's name and size: the same on every machine and in every copy
        rng = random.Random(f"{video.name}|{video.stat().st_size}")
        views = [np.stack([center_crop_resize(f, pre) for f in frames])]
        views += [augment(frames, pre.input_size, rng, flip=self.flip) for _ in range(self.views - 1)]
        return np.stack([self._extractor(v, self.stride) for v in views]).astype(np.float16)


def window_features(features: np.ndarray, start: int, *, window: int, stride: int, difference: bool) -> np.ndarray:
    """One window [T', C] cut from a video's cached features [frames, C], sampled like a clip; with
    a difference modality the first frame only serves as the previous one (N frames, N - 1 pairs)."""
    idx = sample_indices(len(features), window=window, stride=stride, start=start)
    return features[idx[1:] if difference else idx].astype(np.float32)


class FeatureWindows(Dataset):
    """(pooled features [T', C], label) of one window per video: in training a random view and a
    random start; otherwise the centre view from frame 0 (the first Video@1 segment)."""

    def __init__(
        self,
        features: Sequence[np.ndarray],
        labels: Sequence[int],
        *,
        window: int,
        stride: int,
        difference: bool,
        train: bool,
    ):
        self.features, self.labels = list(features), list(labels)
        self.window, self.stride, self.difference, self.train = window, stride, difference, train

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        views = self.features[index]
        frames = views.shape[1]
        view, start = 0, 0
        if self.train:
            view = np.random.randint(len(views))
            start = np.random.randint(max(0, frames - segment_length(self.window, self.stride)) + 1)
        clip = window_features(views[view], start, window=self.window, stride=self.stride, difference=self.difference)
        return torch.from_numpy(clip), self.labels[index]


def within_video_subspace(features: Sequence[np.ndarray], dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [C], basis [C, dims]): the `dims` directions along which pooled features change most
    *within* a video (centre views), scaled to unit variance.

    Why: a frozen backbone's features vary mostly with what differs between videos (background,
    colour, shape); how one frame differs from the others of its video, which is what a temporal
    model needs, lies in small directions. On a few hundred videos the decoder memorises the
    large ones instead (rotation direction stayed at chance while a linear probe of the same
    features read it). On this subspace it sees the changes at unit scale and little else.
    """
    channels = features[0].shape[-1]
    if not 1 <= dims <= channels:
        raise ValueError(f"subspace dims must be in 1..{channels}, got {dims}")
    scatter = np.zeros((channels, channels))
    total, frames = np.zeros(channels), 0
    for video in features:
        x = video[0].astype(np.float64)
        deviation = x - x.mean(axis=0)
        scatter += deviation.T @ deviation
        total += x.sum(axis=0)
        frames += len(x)
    values, vectors = np.linalg.eigh(scatter / frames)
    top = np.argsort(values)[::-1][:dims]
    basis = vectors[:, top] / np.sqrt(np.maximum(values[top], EIGEN_FLOOR))
    return torch.from_numpy(total / frames).float(), torch.from_numpy(basis).float()
