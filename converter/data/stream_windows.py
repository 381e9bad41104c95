"""Training windows cut from annotated streams, on cached per-frame features.

A window's label follows what the monitor should say at its newest frame (a causal window has
seen nothing later):
- the newest sampled frame lies inside an action and the window holds at least
  MIN_ACTION_FRAMES sampled frames of it: that action;
- the newest sampled frame lies inside an action, but fewer of its frames are in the window: left
  out (the action has barely begun; either answer is defensible);
- the newest sampled frame is idle, but the window still holds at least END_HOLD_FRAMES (half
  the window) sampled frames of the latest action: that action (a window mostly of one action
  is that action, as in a trimmed clip);
- the newest sampled frame is idle and the window holds MIN_ACTION_FRAMES to END_HOLD_FRAMES - 1
  frames of the latest action: left out (the action is fading out of the window), or the
  background class with `after_action="background"`;
- otherwise: the background class (`still`), which never raises an event.
An idle window that shows part of a nuisance the annotation names (a distractor drifting through,
an occlusion, camera shake) is marked, so that training can draw such hard negatives more often.
At stride 2 and 25-30 fps that is about 0.3 s of an action before its label is asked for, and
about 0.6 s after its end before "no action" is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from converter.config import LEAVE_OUT
from converter.embedding_cache import window_features
from vtn_edge.errors import DataError
from vtn_edge.online import AnnotatedStream
from vtn_edge.video import sampled_span

MIN_ACTION_FRAMES = 4
END_HOLD_FRAMES = 8
ACTION_SHARE = 0.5  # of the windows in a training epoch, this share shows an action


@dataclass(frozen=True)
class LabelledWindow:
    video: int
    start: int  # first sampled frame
    label: int
    nuisance: bool = False  # an idle window that shows part of an annotated nuisance


def segment_ids(stream: AnnotatedStream) -> np.ndarray:
    """Per frame: the index of the annotated action it belongs to, or -1 (idle)."""
    ids = np.full(stream.frames, -1, np.int64)
    for k, span in enumerate(stream.truth):
        ids[span.frames(stream.fps)] = k
    return ids


def nuisance_frames(stream: AnnotatedStream) -> np.ndarray:
    """Per frame: whether an annotated nuisance is on screen."""
    shown = np.zeros(stream.frames, bool)
    for span in stream.nuisances:
        shown[span.frames(stream.fps)] = True
    return shown


def window_label(
    ids: np.ndarray, sampled: np.ndarray, actions: Sequence[int], background: int, after_action: str = LEAVE_OUT
) -> int | None:
    """The rule above, for one window whose sampled frame indices are `sampled` (oldest first);
    `actions[k]` is the class of annotated action k."""
    seen = ids[sampled]
    newest = seen[-1]
    if newest >= 0:
        return actions[newest] if int((seen == newest).sum()) >= MIN_ACTION_FRAMES else None
    past = seen[seen >= 0]
    shown = int((seen == past[-1]).sum()) if len(past) else 0  # frames of the latest action
    if shown >= END_HOLD_FRAMES:
        return actions[past[-1]]
    fading = shown >= MIN_ACTION_FRAMES and after_action == LEAVE_OUT
    return None if fading else background


def label_windows(
    streams: Sequence[AnnotatedStream],
    labels: Sequence[str],
    background: str,
    *,
    window: int,
    stride: int,
    step: int,
    after_action: str = LEAVE_OUT,
) -> list[LabelledWindow]:
    """Every `step`-th window start of every stream that the rule labels."""
    if background not in labels:
        raise DataError(f"the background class {background!r} is not among the model's classes {list(labels)}")
    index = {name: i for i, name in enumerate(labels)}
    span = sampled_span(window, stride)
    out = []
    for v, stream in enumerate(streams):
        ids, nuisance = segment_ids(stream), nuisance_frames(stream)
        actions = [index[s.label] for s in stream.truth]
        for start in range(0, stream.frames - span + 1, step):
            sampled = np.arange(start, start + span, stride)
            label = window_label(ids, sampled, actions, index[background], after_action)
            if label is not None:
                hard = label == index[background] and bool(nuisance[sampled].any())
                out.append(LabelledWindow(v, start, label, hard))
    return out


class StreamWindows(Dataset):
    """(features [T, C], label) of labelled stream windows. In training each epoch draws
    `per_epoch` windows, ACTION_SHARE of them showing an action (idle time would otherwise
    outnumber the actions several times); otherwise every window, in order."""

    def __init__(
        self,
        features: Sequence[np.ndarray],
        windows: Sequence[LabelledWindow],
        background: int,
        *,
        window: int,
        stride: int,
        difference: bool,
        train: bool,
        per_epoch: int | None = None,
        nuisance_weight: float = 1.0,
        seed: int = 0,
    ):
        self.features, self.all = list(features), list(windows)
        self.window, self.stride, self.difference, self.train = window, stride, difference, train
        self.background, self.per_epoch, self.seed = background, per_epoch, seed
        self.nuisance_weight = nuisance_weight
        self.chosen = self.all
        if train:
            self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if not self.train or self.per_epoch is None:
            return
        rng = np.random.default_rng([self.seed, epoch])
        action = [w for w in self.all if w.label != self.background]
        idle = [w for w in self.all if w.label == self.background]
        n_action = min(len(action), int(self.per_epoch * ACTION_SHARE))
        n_idle = min(len(idle), self.per_epoch - n_action)
        picks = [action[i] for i in rng.choice(len(action), n_action, replace=False)] if n_action else []
        if n_idle:
            picks += [idle[i] for i in rng.choice(len(idle), n_idle, replace=False, p=self._idle_odds(idle))]
        self.chosen = picks

    def _idle_odds(self, idle: list[LabelledWindow]) -> np.ndarray | None:
        """Draw odds of the idle windows; None (a uniform draw, numpy's other algorithm) at weight 1,
        so that runs without --nuisance-weight draw the same windows as before the option existed."""
        if self.nuisance_weight == 1:
            return None
        weights = np.array([self.nuisance_weight if w.nuisance else 1.0 for w in idle])
        return weights / weights.sum()

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        w = self.chosen[index]
        views = self.features[w.video]
        view = np.random.randint(len(views)) if self.train else 0
        clip = window_features(views[view], w.start, window=self.window, stride=self.stride, difference=self.difference)
        return torch.from_numpy(clip), w.label
