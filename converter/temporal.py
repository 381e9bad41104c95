"""Does the model use frame order? Two checks on the temporal benchmark's paired classes.

- Reversal: decode each held-out clip's embeddings in reverse order; a model that uses order
  turns each paired class into its partner.
- Order-blind baseline: a linear classifier on the time-averaged pooled features of the same
  frozen encoder; within a pair it should stay near chance (50%), since a pair's frames average to the
  same picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from converter.checkpoints import load_checkpoint
from converter.data.clips import ClipDataset, usable_items
from converter.data.synth import PARTNERS
from converter.embedding_cache import FeatureCache, window_features
from vtn_edge.datasets import open_dataset


@dataclass(frozen=True)
class TemporalReport:
    clips: int
    decoder_accuracy: float
    reversed_to_partner: float  # paired classes only
    baseline_accuracy: float
    baseline_pair_accuracy: float  # paired classes, choosing between the class and its partner

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("VTN decoder, clip accuracy", f"{100 * self.decoder_accuracy:.1f}%"),
            ("reversed clips -> partner class", f"{100 * self.reversed_to_partner:.1f}%"),
            ("order-blind baseline (mean embedding + linear)", f"{100 * self.baseline_accuracy:.1f}%"),
            ("  ... within each pair (chance 50%)", f"{100 * self.baseline_pair_accuracy:.1f}%"),
        ]


def _windows(model, data: Path, cache_dir: Path, per_video: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Pooled backbone features [clips, T, C] of `per_video` evenly spaced windows of each video."""
    config = model.config
    dataset = open_dataset(data)
    items = usable_items(dataset, window=config.window, stride=config.stride)
    clips = ClipDataset(items, config.preprocessing, window=config.window, stride=config.stride, train=False)
    cache = FeatureCache(cache_dir, model, views=1, flip=False, stride=config.stride)
    x, y = [], []
    for (item, _), features in zip(items, cache.features(clips, data.name)):
        frames = features.shape[1]
        for start in np.linspace(0, max(0, frames - config.window * config.stride), per_video).round():
            x.append(
                window_features(
                    features[0],
                    int(start),
                    window=config.window,
                    stride=config.stride,
                    difference=config.uses_difference,
                )
            )
            y.append(item.label)
    return np.stack(x), np.array(y)


def temporal_report(
    checkpoint: Path, train_data: Path, val_data: Path, cache_dir: Path, epochs: int = 300
) -> TemporalReport:
    model = load_checkpoint(checkpoint).eval()
    labels = model.config.labels
    head = model.feature_head()
    xtr, ytr = _windows(model, train_data, cache_dir)
    xva, yva = _windows(model, val_data, cache_dir)
    with torch.no_grad():
        logits = head(torch.from_numpy(xva)).numpy()
        reversed_logits = head(torch.from_numpy(xva[:, ::-1].copy())).numpy()
    paired = np.array([labels[c] in PARTNERS for c in yva])
    partner = np.array([labels.index(PARTNERS[labels[c]]) if labels[c] in PARTNERS else -1 for c in yva])

    # order-blind baseline: logistic regression on the mean embedding
    mean_tr, mean_va = torch.from_numpy(xtr.mean(1)), torch.from_numpy(xva.mean(1))
    mu, sd = mean_tr.mean(0), mean_tr.std(0) + 1e-6
    linear = torch.nn.Linear(mean_tr.shape[1], len(labels))
    opt = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=1e-4)
    target = torch.from_numpy(ytr).long()
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(linear((mean_tr - mu) / sd), target).backward()
        opt.step()
    with torch.no_grad():
        base = linear((mean_va - mu) / sd).numpy()
    idx = np.arange(len(yva))
    pair_right = base[idx, yva] > base[idx, np.maximum(partner, 0)]
    return TemporalReport(
        clips=len(yva),
        decoder_accuracy=float((logits.argmax(1) == yva).mean()),
        reversed_to_partner=float((reversed_logits.argmax(1) == partner)[paired].mean()),
        baseline_accuracy=float((base.argmax(1) == yva).mean()),
        baseline_pair_accuracy=float(pair_right[paired].mean()),
    )
