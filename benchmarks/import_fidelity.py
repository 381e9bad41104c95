"""How closely does an imported encoder reproduce its Open Model Zoo IR on real frames?

Imports the encoder IR, builds the checkpoint back (`--interface omz --precision fp32`), and
compares embeddings on real video frames (every 5th frame of each clip in a folder):

- imported torch vs the IR's float arithmetic (its activation quantisation removed): the import;
- imported torch vs the IR as OpenVINO runs it (8-bit activations);
- the IR's float arithmetic with only its activation rounding put back (emulated in f32): what
  8-bit activations alone do to the embeddings;
- the rebuilt IR vs the original IR, both ways.

    python benchmarks/import_fidelity.py ../shared/data/omz-weights/driver-*/driver-*-encoder.xml \
        --videos ../shared/data/videos
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import torch

from converter.build import BuildOptions, build
from converter.checkpoints import save_checkpoint
from converter.ir_graph import constant_value, float_reference, read_ir
from converter.ir_import import import_vtn
from vtn_edge.preprocess import center_crop_resize, normalize
from vtn_edge.report import format_table


def frames(videos: Path, pre, per_video: int, every: int = 5) -> np.ndarray:
    crops = []
    for video in sorted(p for p in videos.iterdir() if p.is_file()):
        cap, index, taken = cv2.VideoCapture(str(video)), 0, 0
        while taken < per_video:
            ok, frame = cap.read()
            if not ok:
                break
            if index % every == 0:
                crops.append(center_crop_resize(frame, pre))
                taken += 1
            index += 1
        cap.release()
    return np.stack(crops)


def rounding_only(model: ov.Model) -> ov.Model:
    """Each activation FakeQuantize replaced by its rounding alone (no clipping), in f32."""
    for op in model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize" and constant_value(op.input_value(0)) is None:
            low, high = constant_value(op.input_value(1)), constant_value(op.input_value(2))
            steps = op.get_attributes()["levels"] - 1
            scale = (high - low) / steps
            y = ops.round(ops.divide(ops.subtract(op.input_value(0), low), scale), "half_to_even")
            op.output(0).replace(ops.add(ops.multiply(y, scale), low).output(0))
    return model


def embed(model: ov.Model | str, crops: np.ndarray) -> np.ndarray:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.stack([compiled(np.moveaxis(c.astype(np.float32), -1, 0)[None])[0].reshape(-1) for c in crops])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("encoder", type=Path, help="encoder .xml (Open Model Zoo interface)")
    parser.add_argument("--videos", type=Path, required=True, help="a folder of video files")
    parser.add_argument("--per-video", type=int, default=20)
    args = parser.parse_args()

    result = import_vtn(args.encoder)
    pre = result.model.config.preprocessing
    crops = frames(args.videos, pre, args.per_video)
    with torch.no_grad():
        imported = result.model.encoder(torch.from_numpy(normalize(crops, pre))).numpy()
    as_run = embed(str(args.encoder), crops)
    float_ir = embed(float_reference(read_ir(args.encoder)), crops)
    rounded = embed(rounding_only(read_ir(args.encoder)), crops)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint(result.model, Path(tmp) / "imported.safetensors")
        out = build(
            BuildOptions(arch=result.model.config.arch, checkpoint=checkpoint, precision="fp32", interface="omz",
                         out=Path(tmp) / "rebuilt", verify_clips=1)
        )  # fmt: skip
        rebuilt = embed(str(out / "encoder.xml"), crops)
    rows = []
    for name, a, b in (
        ("imported torch vs the IR's float arithmetic", imported, float_ir),
        ("imported torch vs the IR as run (8-bit activations)", imported, as_run),
        ("the IR's float arithmetic + its activation rounding, vs as run", rounded, as_run),
        ("imported torch vs the IR's float arithmetic + activation rounding", imported, rounded),
        ("rebuilt IR (omz, fp32) vs the IR's float arithmetic", rebuilt, float_ir),
        ("rebuilt IR (omz, fp32) vs the IR as run", rebuilt, as_run),
    ):
        c = cosine(a, b)
        rows.append((name, f"{c.min():.4f}", f"{c.mean():.4f}", f"{np.abs(a - b).max():.2e}"))
    cpu = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
    print(f"{len(crops)} frames from {args.videos}; {cpu}, OpenVINO {ov.__version__}")
    print(format_table(["comparison", "cosine min", "cosine mean", "max |diff|"], rows))


if __name__ == "__main__":
    main()
