"""Parameter and multiply-accumulate counts, per frame for the encoder and per window for the
decoder: the figures the paper reports (its GMAC counts one encoder pass plus one decoder pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from converter.config import EMBED_DIM
from converter.models.vtn import VTN, TwoStreamVTN


@dataclass(frozen=True)
class Complexity:
    part: str
    params_m: float
    gmac: float


def _gmac(module: torch.nn.Module, *inputs: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*inputs)
    return counter.get_total_flops() / 2e9


def _params_m(*modules: torch.nn.Module) -> float:
    return sum(p.numel() for m in modules for p in m.parameters()) / 1e6


def complexity(model: VTN | TwoStreamVTN) -> list[Complexity]:
    """Rows: encoder (per frame), decoder (per window, classifier included), and their sum."""
    if isinstance(model, TwoStreamVTN):
        rows = [
            Complexity(f"{name}/{row.part}", row.params_m, row.gmac)
            for name, sub in (("rgb", model.rgb), ("motion", model.motion))
            for row in complexity(sub)[:2]
        ]
        return rows + [Complexity("total", sum(r.params_m for r in rows), sum(r.gmac for r in rows))]
    model = model.eval()
    encoder, decoder = model.split()
    size = model.config.preprocessing.input_size
    frame = torch.zeros(1, 3, size, size)
    previous = frame if model.config.uses_difference else None
    inputs = (frame,) if previous is None else (frame, previous)
    enc = Complexity("encoder (per frame)", _params_m(encoder), _gmac(encoder, *inputs))
    window = torch.zeros(1, model.config.seq_len, EMBED_DIM)
    dec = Complexity("decoder (per window)", _params_m(decoder), _gmac(decoder, window))
    return [enc, dec, Complexity("total", enc.params_m + dec.params_m, enc.gmac + dec.gmac)]
