from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VTN_SHARED_DATA", ROOT.parent / "shared" / "data"))
SHIPPED_INT8 = ROOT / "ir_models" / "mobilenetv2-rgb-int8"
SHIPPED_FP16 = ROOT / "ir_models" / "mobilenetv2-rgb-fp16"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: real third-party clips and files. Skip where absent (never in CI)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


# ---------------------------------------------------------------- a small trained model, built once
TINY_CLASSES = ("fill", "empty", "zoom_in", "zoom_out")
TINY_SIZE = 96
TINY_INT8_DROP = 0.15  # 4 of 32 labelled clips; the decoder gets half


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Four easy classes of the temporal benchmark, written as real MPEG-4 files."""
    pytest.importorskip("torch")
    from converter.data.synth import write_dataset

    root = tmp_path_factory.mktemp("tiny_synth")
    write_dataset(root / "train", clips_per_class=10, seed=11, splits=("core",), classes=TINY_CLASSES, progress=False)
    write_dataset(root / "val", clips_per_class=8, seed=12, splits=("core",), classes=TINY_CLASSES, progress=False)
    return root


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_dataset, shared_data, tmp_path_factory) -> Path:
    """A MobileNetV2-VTN on the shared ImageNet encoder whose decoder is trained on the tiny dataset
    with the frozen-encoder path: confident predictions in about a minute. (A randomly initialised
    frozen MobileNetV2 gives all-zero pooled features, so there is nothing to train without it.)"""
    from converter.train import TrainOptions, train

    tflite = shared_data / "pretrained" / "mobilenet_v2_1.0_224_quant.tflite"
    out = tmp_path_factory.mktemp("tiny_run")
    train(
        TrainOptions(
            arch="mobilenetv2",
            data=str(tiny_dataset / "train" / "core"),
            validation=str(tiny_dataset / "val" / "core"),
            out=str(out),
            freeze_encoder=True,
            views=1,
            input_size=TINY_SIZE,
            epochs=40,
            batch_size=8,
            lr=1e-3,
            workers=0,
            flip=False,
            backbone_weights=str(tflite),
        )
    )
    return out / "best.safetensors"


@pytest.fixture(scope="session")
def built_models(trained_checkpoint, tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    """The tiny model built at every precision (native interface), verified against torch.

    INT8 is built with accuracy control, whose contract is labelled top-1 rather than top-1
    agreement with torch: the tiny decoder is overfit (training loss 0 on 40 clips), and plain INT8
    flipped 4 of its 37 decisive clips on an AVX2 CPU without VNNI (AMD EPYC Zen 1, whose int8
    kernels saturate) while it agreed on an AMX one."""
    from converter.build import BuildOptions, build

    root = tmp_path_factory.mktemp("ir")
    return {
        precision: build(
            BuildOptions(
                arch="mobilenetv2",
                checkpoint=trained_checkpoint,
                precision=precision,
                out=root / f"tiny-{precision}",
                calibration=tiny_dataset / "train" / "core",
                validation=tiny_dataset / "val" / "core",
                calibration_clips=24,
                verify_clips=32 if precision == "int8" else 40,
                max_accuracy_drop=TINY_INT8_DROP if precision == "int8" else None,
            )
        )
        for precision in ("int8", "fp16", "fp32")
    }
