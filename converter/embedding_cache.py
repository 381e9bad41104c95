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

The features can also come from a built encoder IR (`IRTrunk`, `train --features-from`): the
pooled features its INT8 trunk computes, in the precision the runtime runs it, so that the
projection and decoder learn the numbers the deployed encoder gives them.
"""

from __future__ import annotations

import hashlib
import logging
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from openvino import opset13 as opset
from torch.utils.data import Dataset

from converter.data.clips import ClipDataset, augment
from converter.export import fold_preprocessing
from converter.models.vtn import VTN
from converter.progress import progress
from converter.verify import row_cosines
from vtn_edge.compile_options import CompileOptions
from vtn_edge.errors import ModelError, VtnEdgeError
from vtn_edge.metadata import ENCODER_XML
from vtn_edge.model import load_model
from vtn_edge.preprocess import center_crop_resize
from vtn_edge.video import read_frames, sample_indices, segment_length

log = logging.getLogger(__name__)

BATCH = 32
EIGEN_FLOOR = 1e-6
# an IR's trunk against this model's torch trunk on test frames: an INT8 trunk of the same weights
# gives 0.99 and more; an IR of another checkpoint's trunk is far below
SAME_TRUNK_COSINE = 0.95


class FeatureSourceError(VtnEdgeError):
    """An encoder IR that cannot stand in for this model's trunk."""


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


@dataclass(frozen=True)
class IRTrunk:
    """The pooled backbone features [B, C] of a built encoder IR (what its projection reads, after
    the INT8 IR's quantiser), in the precision the runtime runs it by default."""

    model: ov.Model
    properties: dict[str, str]
    fingerprint: str
    path: Path


def ir_trunk(directory: Path, model: VTN) -> IRTrunk:
    """The trunk of the encoder IR in `directory` (a `converter build` output of this model's arch,
    modality and preprocessing; whether it holds this model's trunk is checked when it compiles)."""
    try:
        built = load_model(directory)
    except ModelError as exc:
        raise FeatureSourceError(f"--features-from: {exc}") from None
    config, manifest = model.config, built.manifest
    ours = (config.arch, config.modality, config.preprocessing)
    if manifest.interface != "native" or (manifest.arch, manifest.modality, manifest.preprocessing) != ours:
        raise FeatureSourceError(
            f"--features-from {directory}: its encoder is {manifest.arch}/{manifest.modality} "
            f"({manifest.interface} interface, {manifest.preprocessing.input_size} px); this model needs "
            f"{config.arch}/{config.modality} (native, {config.preprocessing.input_size} px): build the IR "
            "from the checkpoint you train from"
        )
    pools = [op for op in built.encoder.get_ordered_ops() if op.get_type_name() == "ReduceMean"]
    if not pools:
        raise FeatureSourceError(f"--features-from {directory}: its encoder has no global pooling to read features at")
    pooled = pools[-1].output(0)
    readers = list(pooled.get_target_inputs())
    if len(readers) == 1 and readers[0].get_node().get_type_name() == "FakeQuantize":
        pooled = readers[0].get_node().output(0)  # what the INT8 projection actually reads
    flat = opset.reshape(pooled, opset.constant(np.array([0, -1], dtype=np.int64)), special_zero=True)
    trunk = ov.Model([flat.output(0)], built.encoder.get_parameters(), "trunk")
    trunk.reshape({p.output(0): [-1, *list(p.get_partial_shape())[1:]] for p in trunk.get_parameters()})
    properties = CompileOptions().with_model_hint(manifest.precision_hint).properties()
    digest = hashlib.sha1(b"ir")
    encoder_xml = directory / ENCODER_XML
    for path in (encoder_xml, encoder_xml.with_suffix(".bin")):
        digest.update(path.read_bytes())
    digest.update(repr(sorted(properties.items())).encode())
    return IRTrunk(trunk, properties, digest.hexdigest()[:16], directory)


class FeatureExtractor:
    """The frozen backbone (or its trunk) compiled with OpenVINO (f32): the same numbers as torch,
    several times faster on a CPU. It takes uint8 BGR frames, like the runtime's encoder: the
    normalisation runs in the graph, not as numpy passes over float copies of every frame.
    With `ir`, the IR's trunk instead, once it has shown it computes this model's features."""

    def __init__(self, model: VTN, tuned: int = 0, ir: IRTrunk | None = None):
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
        if ir is not None:
            frames = _test_frames(size)
            expected = self(frames, stride=1)
            self.compiled = ov.Core().compile_model(ir.model, "CPU", ir.properties)
            _check_same_trunk(self(frames, stride=1), expected, ir.path)

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


def _test_frames(size: int) -> np.ndarray:
    """Four smooth random uint8 frames [4, size, size, 3]: blocks of an 8 x 8 colour grid."""
    coarse = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    scale = -(-size // 8)
    return np.ascontiguousarray(coarse.repeat(scale, axis=1).repeat(scale, axis=2)[:, :size, :size])


def _check_same_trunk(ours: np.ndarray, expected: np.ndarray, where: Path) -> None:
    """Refuse an IR whose trunk is not this model's: its features of the test frames must point
    the way this model's float trunk's do."""
    cosine = row_cosines(ours, expected)
    if cosine.min() < SAME_TRUNK_COSINE:
        raise FeatureSourceError(
            f"--features-from {where}: its encoder's features point elsewhere than this model's trunk "
            f"(cosine {cosine.min():.3f} on test frames, expected >= {SAME_TRUNK_COSINE}): build the IR from the "
            "checkpoint you train from (--init-checkpoint)"
        )


class FeatureCache:
    def __init__(
        self,
        root: Path,
        model: VTN,
        *,
        views: int,
        flip: bool,
        stride: int,
        tuned: int = 0,
        ir: IRTrunk | None = None,
    ):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.model, self.views, self.flip, self.stride, self.tuned, self.ir = model, views, flip, stride, tuned, ir
        self.fingerprint = ir.fingerprint if ir else backbone_fingerprint(model, tuned)
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
            self._extractor = FeatureExtractor(self.model, self.tuned, self.ir)
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
