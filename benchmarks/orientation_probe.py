"""Do frozen encoder features show which way the benchmark's arrow rotates?

Renders rotate_cw / rotate_ccw clips of the temporal benchmark, embeds 16 frames (stride 2) of
each with the frozen ImageNet MobileNetV2 (the shared .tflite), fits a ridge regression from the
features to the arrow's orientation, and reads the direction of rotation off the fitted
orientations (sign of the cross product of consecutive frames). High direction accuracy means the
information is in the features, so a decoder that stays at chance fails to learn it, not to see it.

    python benchmarks/orientation_probe.py --clips 200
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from tqdm import tqdm

from converter.data.synth import ROTATION_DEGREES, _progress, draw_spec, render_clip
from converter.models.encoders import MobileNetV2
from converter.tflite_weights import TFLITE_MEAN, TFLITE_STD, read_tflite_mobilenetv2
from vtn_edge.metadata import Preprocessing
from vtn_edge.preprocess import center_crop_resize, normalize
from vtn_edge.report import format_table

TFLITE = Path(__file__).resolve().parents[1].parent / "shared/data/pretrained/mobilenet_v2_1.0_224_quant.tflite"


class PooledAndGrid(torch.nn.Module):
    def __init__(self, backbone: MobileNetV2):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.backbone(x)
        return maps.mean((2, 3)), torch.nn.functional.adaptive_avg_pool2d(maps, 2).flatten(1)


def _ridge(x: np.ndarray, y: np.ndarray, lam: float):
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xn = (x - mu) / sd
    w = np.linalg.solve(xn.T @ xn + lam * np.eye(x.shape[1]), xn.T @ y)
    return lambda z: ((z - mu) / sd) @ w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200, help="half clockwise, half counter-clockwise")
    parser.add_argument("--tflite", type=Path, default=TFLITE)
    args = parser.parse_args()

    backbone = MobileNetV2()
    backbone.load_state_dict(read_tflite_mobilenetv2(args.tflite).backbone)
    pre = replace(Preprocessing(input_size=224, resize_short=224), mean=TFLITE_MEAN, std=TFLITE_STD)
    model = ov.convert_model(
        PooledAndGrid(backbone.eval()),
        example_input=torch.zeros(1, 3, 224, 224),
        input=[ov.PartialShape([-1, 3, 224, 224])],
    )
    encoder = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    pooled, grid, angles, direction = [], [], [], []
    for n in tqdm(range(args.clips), desc="render + embed", unit="clip"):
        label = "rotate_cw" if n % 2 == 0 else "rotate_ccw"
        spec = draw_spec(label, np.random.default_rng(1000 + n))
        frames = list(render_clip(spec, 5000 + n))
        idx = list(range(0, min(32, len(frames)), 2))
        out = encoder(normalize(np.stack([center_crop_resize(frames[i], pre) for i in idx]), pre))
        pooled.append(np.asarray(out[0]))
        grid.append(np.asarray(out[1]))
        turned = [
            ROTATION_DEGREES * (_progress(spec, i) if label == "rotate_cw" else 1 - _progress(spec, i)) for i in idx
        ]
        angles.append(np.deg2rad(spec.angle0 + np.asarray(turned)))
        direction.append(1 if label == "rotate_cw" else -1)
    angles, direction = np.stack(angles), np.array(direction)
    fit = args.clips * 3 // 4
    rows = []
    for name, feats in (("global pool, 1280-d", np.stack(pooled)), ("2x2 grid, 5120-d", np.stack(grid))):
        for harmonic in (1, 2):
            target = np.stack([np.cos(harmonic * angles), np.sin(harmonic * angles)], -1)
            best = None
            for lam in (1.0, 10.0, 100.0, 1000.0, 10000.0):
                predict = _ridge(feats[:fit].reshape(-1, feats.shape[-1]), target[:fit].reshape(-1, 2), lam)
                p = predict(feats[fit:].reshape(-1, feats.shape[-1])).reshape(len(feats) - fit, -1, 2)
                r2 = 1 - ((p - target[fit:]) ** 2).sum() / ((target[fit:] - target[fit:].mean((0, 1))) ** 2).sum()
                cross = (p[:, :-1, 0] * p[:, 1:, 1] - p[:, :-1, 1] * p[:, 1:, 0]).sum(1)
                accuracy = float((np.sign(cross) == direction[fit:]).mean())
                if best is None or r2 > best[0]:
                    best = (r2, lam, accuracy)
            rows.append((name, f"{harmonic}θ", f"{best[0]:.3f}", f"{best[1]:g}", f"{100 * best[2]:.1f}%"))
    print(f"{args.clips - fit} held-out clips ({fit} fitted), 16 frames each")
    print(format_table(["features", "orientation", "R² held out", "ridge λ", "direction from the fit"], rows))


if __name__ == "__main__":
    main()
