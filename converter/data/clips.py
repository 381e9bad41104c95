"""Torch datasets over videos: decoding, sampling and the paper's augmentation."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from converter.config import ConfigError
from vtn_edge.datasets import VideoDataset, VideoItem
from vtn_edge.errors import DataError, VtnEdgeError
from vtn_edge.metadata import Preprocessing
from vtn_edge.preprocess import center_crop_resize, normalize
from vtn_edge.video import count_frames, read_frames, sample_indices, sampled_span, segment_length

log = logging.getLogger(__name__)

SCALES = tuple(2 ** (-i / 4) for i in range(4))  # multi-scale crops: 1, 2^-1/4, 2^-1/2, 2^-3/4


def usable_items(dataset: VideoDataset, *, window: int, stride: int) -> list[tuple[VideoItem, int]]:
    """(item, frame count) for decodable videos; the others are reported once and skipped.

    Videos shorter than one clip are kept and looped (the original code's rule), with a note.
    """
    usable = []
    span = sampled_span(window, stride)
    for item in dataset.items:
        try:
            count = count_frames(item.path)
        except VtnEdgeError as exc:
            log.warning("skipping %s: %s", item.path, exc)
            continue
        if count < span:
            log.warning("%s has %d frames, fewer than one clip (%d): its frames will be looped", item.path, count, span)
        usable.append((item, count))
    if not usable:
        raise DataError(f"no decodable video in {dataset.source} ({len(dataset.items)} listed)")
    return usable


def random_crop_params(height: int, width: int, rng: random.Random) -> tuple[int, int, int]:
    side = int(min(height, width) * rng.choice(SCALES))
    return rng.randint(0, height - side), rng.randint(0, width - side), side


def augment(frames: Sequence[np.ndarray], size: int, rng: random.Random, *, flip: bool) -> np.ndarray:
    """The paper's training augmentation, the same for every frame of a clip: a multi-scale square
    crop resized to `size`, and a horizontal flip half the time when `flip` -> uint8 [T, S, S, 3]."""
    top, left, side = random_crop_params(*frames[0].shape[:2], rng)
    interpolation = cv2.INTER_AREA if side > 2 * size else cv2.INTER_LINEAR
    crops = [f[top : top + side, left : left + side] for f in frames]
    out = np.stack([cv2.resize(c, (size, size), interpolation=interpolation) for c in crops])
    if flip and rng.random() < 0.5:
        out = out[:, :, ::-1]
    return out


class ClipDataset(Dataset):
    """Yields (clip [T, 3, S, S] float32 normalised, label). Training: random start, multi-scale
    crop and optional horizontal flip, the same for every frame of a clip. Evaluation: the first
    clip, centre crop."""

    def __init__(
        self,
        items: Sequence[tuple[VideoItem, int]],
        pre: Preprocessing,
        *,
        window: int,
        stride: int,
        train: bool,
        flip: bool = True,
        seed: int = 0,
    ):
        self.items = list(items)
        self.pre, self.window, self.stride = pre, window, stride
        self.train, self.flip, self.seed = train, flip, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def frames_u8(self, index: int, rng: random.Random | None = None) -> np.ndarray:
        """The sampled, cropped frames as uint8 BGR [T, S, S, 3]."""
        item, count = self.items[index]
        frames = read_frames(item.path)
        span = segment_length(self.window, self.stride)
        start = rng.randint(0, max(0, len(frames) - span)) if (self.train and rng) else 0
        idx = sample_indices(len(frames), window=self.window, stride=self.stride, start=start)
        if not (self.train and rng):
            return np.stack([center_crop_resize(frames[i], self.pre) for i in idx])
        return augment([frames[i] for i in idx], self.pre.input_size, rng, flip=self.flip)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = random.Random(hash((self.seed, self.epoch, index))) if self.train else None
        clip = normalize(self.frames_u8(index, rng), self.pre)
        return torch.from_numpy(clip), self.items[index][0].label


def read_reversal_pairs(path: str | Path, labels: Sequence[str]) -> torch.Tensor:
    """Partner class per class for reversal augmentation, -1 where a reversed clip is no class.

    The file names one pair a line (`open close`: either played backwards is the other) or one
    class alone (`still`: backwards it is itself); classes not named are never reversed.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--reverse-pairs {path} does not exist (a text file of 'class partner' lines)")
    partner = [-1] * len(labels)
    for number, line in enumerate(path.read_text().splitlines(), 1):
        names = line.split()
        if not names:
            continue
        unknown = [n for n in names if n not in labels]
        if len(names) > 2 or unknown:
            problem = f"unknown class {unknown[0]!r}" if unknown else "more than two names"
            raise ConfigError(f"{path}:{number}: {problem}; expected 'class partner' or 'class' from {list(labels)}")
        a, b = labels.index(names[0]), labels.index(names[-1])
        partner[a], partner[b] = b, a
    return torch.tensor(partner)


def reverse_some(
    clips: torch.Tensor, labels: torch.Tensor, partner: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Play half of the reversible clips [B, T, ...] backwards, labelled as their partner class:
    the same frames then stand for two classes, so only their order can tell them apart."""
    flip = (torch.rand(len(labels), generator=generator) < 0.5).to(labels.device) & (partner[labels] >= 0)
    shape = (-1,) + (1,) * (clips.dim() - 1)
    return torch.where(flip.view(shape), clips.flip(1), clips), torch.where(flip, partner[labels], labels)


class ReversedSome(Dataset):
    """`reverse_some` one item at a time, for the part of an epoch whose items are clips (the
    trimmed clips trained beside stream windows; a stream window played backwards is no action)."""

    def __init__(self, items: Dataset, partner: torch.Tensor):
        self.items, self.partner = items, partner.cpu()

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip, label = self.items[index]
        clips, labels = reverse_some(clip[None], torch.tensor([label]), self.partner)
        return clips[0], int(labels[0])
