"""Weight averaging ("model soup"): one checkpoint whose every tensor is the mean of several runs
fine-tuned from the same start.

Runs of one recipe that differ only in their seed land a few points of event F1 apart on the
stream benchmark; the mean of their weights sits near the centre of that spread and runs at the
cost of one model (an ensemble of their outputs would run each decoder). It only works for runs
that share a start: the weights of independently trained models do not line up, and their mean
is a broken model. That is checked: every run must lie within MAX_RELATIVE_DISTANCE of the first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from converter.checkpoints import CheckpointError, compare_keys, read_config, save_checkpoint, sha256_file
from converter.config import VTNConfig
from converter.models.vtn import build_vtn

# ||w - w_first|| / ||w_first|| over all float tensors. Fine-tuning the default's head from one
# start with a frozen encoder: 0.026-0.027; a fresh initialisation against a trained model: 0.97.
MAX_RELATIVE_DISTANCE = 0.5


@dataclass(frozen=True)
class Averaged:
    path: Path
    runs: int
    max_distance: float  # the furthest run from the first, relative


def average_checkpoints(paths: list[Path], out: Path, *, half: bool = False, force: bool = False) -> Averaged:
    """Write the uniform mean of `paths`' weights to `out` (our safetensors format)."""
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs at least two checkpoints, got {len(paths)}")
    if out.suffix != ".safetensors":
        raise CheckpointError(f"--out {out}: a checkpoint is written as .safetensors")
    if out.exists() and not force:
        raise CheckpointError(f"{out} exists; pass --force to replace it")
    config = read_config(paths[0])
    first = load_file(str(paths[0]))
    total = {k: v.double() if v.is_floating_point() else v for k, v in first.items()}
    first_norm = _norm(first)
    max_distance = 0.0
    for path in paths[1:]:
        other_config = read_config(path)
        if other_config != config:
            raise CheckpointError(
                f"{path} is another model than {paths[0]} ({_config_difference(config, other_config)}); "
                "only runs of one model can be averaged"
            )
        state = load_file(str(path))
        report = compare_keys(first, state)
        if not report.ok:
            raise CheckpointError(f"{path} does not have {paths[0]}'s tensors:\n{report.describe()}")
        change = {k: state[k].double() - v.double() for k, v in first.items() if v.is_floating_point()}
        distance = _norm(change) / first_norm
        if distance > MAX_RELATIVE_DISTANCE:
            raise CheckpointError(
                f"{path} is {distance:.2f} of its size away from {paths[0]} (at most {MAX_RELATIVE_DISTANCE} "
                "expected): these runs did not start from the same checkpoint, and the mean of unrelated "
                "weights is a broken model"
            )
        max_distance = max(max_distance, distance)
        for k, v in state.items():
            if v.is_floating_point():
                total[k] += v.double()
    model = build_vtn(config)
    model.load_state_dict({k: (v / len(paths)).float() if v.is_floating_point() else v for k, v in total.items()})
    sources = [{"file": p.name, "sha256": sha256_file(p)} for p in paths]
    save_checkpoint(model, out, half=half, extra={"averaged_from": json.dumps(sources)})
    return Averaged(out, len(paths), max_distance)


def _norm(state: dict[str, torch.Tensor]) -> float:
    """The L2 norm of all float tensors together."""
    return sum(float(v.double().square().sum()) for v in state.values() if v.is_floating_point()) ** 0.5


def _config_difference(a: VTNConfig, b: VTNConfig) -> str:
    da, db = a.to_dict(), b.to_dict()
    keys = [k for k in da if da[k] != db.get(k)]
    return ", ".join(f"{k}: {da[k]!r} vs {db.get(k)!r}" for k in keys[:4])
