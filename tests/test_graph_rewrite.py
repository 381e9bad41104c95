"""Int8 MatMuls compiled as 1x1 convolutions (vtn_edge.graph_rewrite), and when that happens."""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest
from conftest import SHIPPED_FP16, SHIPPED_INT8
from openvino import opset13 as ops

from vtn_edge import CompileOptions, StreamingRecognizer, load_model
from vtn_edge.compile_options import _cpu_flags, add_compile_flags, compile_options_from_flags, cpu_has_vnni
from vtn_edge.errors import ModelError
from vtn_edge.graph_rewrite import int8_matmuls_as_convolutions
from vtn_edge.model import compile_pair
from vtn_edge.preprocess import encoder_inputs
from vtn_edge.smoothing import softmax

F32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"}


def _count(model: ov.Model, kind: str) -> int:
    return sum(op.get_type_name() == kind for op in model.get_ops())


def _real_windows(count: int) -> np.ndarray:
    """Decoder inputs from the shipped encoder on rendered clips of the benchmark's actions."""
    from converter.calibration import synthetic_clips  # renders with numpy and OpenCV, no torch

    model = load_model(SHIPPED_INT8)
    m = model.manifest
    encoder = ov.Core().compile_model(model.encoder, "CPU", F32)
    clips = synthetic_clips(count, m.preprocessing, window=m.window, stride=m.stride, seed=5)
    return np.stack([np.stack([encoder(list(x))[0].reshape(-1) for x in encoder_inputs(c, m)]) for c in clips])


def test_the_shipped_int8_decoder_gives_the_same_answers_as_convolutions():
    decoder = load_model(SHIPPED_INT8).decoder
    matmuls = _count(decoder, "MatMul")
    rewritten, count = int8_matmuls_as_convolutions(decoder)
    # the 12 query/key/value projections and the classifier; attention itself is its own op
    assert count == matmuls == 13
    assert _count(rewritten, "MatMul") == 0
    assert _count(rewritten, "Convolution") == _count(decoder, "Convolution") + 13
    assert _count(decoder, "MatMul") == 13, "the loaded model itself must not change"
    assert [o.get_names() for o in rewritten.outputs] == [o.get_names() for o in decoder.outputs]

    core = ov.Core()
    before, after = (core.compile_model(m, "CPU", F32) for m in (decoder, rewritten))
    windows = _real_windows(14)
    logits_before = np.stack([before([w[None]])[0].reshape(-1) for w in windows])
    logits_after = np.stack([after([w[None]])[0].reshape(-1) for w in windows])
    assert np.abs(logits_after - logits_before).max() < 0.02  # the same int8 products; float sums differ
    assert (logits_after.argmax(1) == logits_before.argmax(1)).all()
    probs = [softmax(x.astype(np.float64)) for x in (logits_before, logits_after)]
    assert np.abs(probs[0] - probs[1]).max() < 2e-3
    # and OpenVINO really runs them as convolutions: no FullyConnected left in what it compiled
    layers = [op.get_rt_info()["layerType"].astype(str) for op in after.get_runtime_model().get_ops()]
    assert "FullyConnected" not in layers and "Convolution" in layers


def test_float_models_and_the_encoder_are_left_as_they_are():
    for model in (load_model(SHIPPED_FP16).decoder, load_model(SHIPPED_INT8).encoder):
        rewritten, count = int8_matmuls_as_convolutions(model)
        assert count == 0
        assert len(rewritten.get_ops()) == len(model.get_ops())


def _matmul_model(scale: np.ndarray, *, transpose_b: bool, zero_point: np.ndarray | None = None) -> ov.Model:
    """x [1, 4, 8] times int8 weights [6, 8] (or [8, 6]) dequantised by scale (and zero point)."""
    rng = np.random.default_rng(0)
    q = rng.integers(-60, 60, (6, 8) if transpose_b else (8, 6)).astype(np.int8)
    x = ops.parameter([1, 4, 8], np.float32)
    w = ops.convert(ops.constant(q), ov.Type.f32)
    if zero_point is not None:
        w = ops.subtract(w, ops.constant(zero_point))
    w = ops.multiply(w, ops.constant(scale))
    return ov.Model([ops.matmul(x, w, False, transpose_b)], [x])


@pytest.mark.parametrize(
    "scale, transpose_b, zero_point",
    [
        (np.full((6, 1), 0.01, np.float32), True, None),  # NNCF's layout: per output channel, weights [O, I]
        (np.linspace(0.01, 0.02, 6, dtype=np.float32)[None], False, np.full((1, 6), 3.0, np.float32)),  # [I, O]
        (np.array(0.02, np.float32), True, np.array(1.0, np.float32)),  # one scale and zero point for all
    ],
)
def test_each_weight_layout_is_rewritten_exactly(scale, transpose_b, zero_point):
    model = _matmul_model(scale, transpose_b=transpose_b, zero_point=zero_point)
    rewritten, count = int8_matmuls_as_convolutions(model)
    assert count == 1 and _count(rewritten, "Convolution") == 1
    x = np.random.default_rng(1).standard_normal((1, 4, 8)).astype(np.float32)
    core = ov.Core()
    want, got = (core.compile_model(m, "CPU", F32)([x])[0] for m in (model, rewritten))
    assert got.shape == want.shape == (1, 4, 6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_weights_it_cannot_keep_exact_are_left_alone():
    per_input_channel = np.linspace(0.01, 0.02, 8, dtype=np.float32)[None]  # [1, I] with weights [O, I]
    assert int8_matmuls_as_convolutions(_matmul_model(per_input_channel, transpose_b=True))[1] == 0
    x, y = ops.parameter([1, 4, 8], np.float32), ops.parameter([1, 8, 5], np.float32)
    two_activations = ov.Model([ops.matmul(x, y, False, False)], [x, y])
    assert int8_matmuls_as_convolutions(two_activations)[1] == 0


def test_auto_rewrites_exactly_where_the_cpu_has_no_vnni(monkeypatch, tmp_path):
    zen3 = frozenset({"avx2", "fma", "sse4_2"})
    zen4 = zen3 | {"avx512f", "avx512_vnni", "avx512_bf16"}
    alder_lake = zen3 | {"avx_vnni"}
    assert not cpu_has_vnni(zen3)
    assert cpu_has_vnni(zen4) and cpu_has_vnni(alder_lake)
    assert cpu_has_vnni(None)  # flags unknown (not Linux): OpenVINO's own kernels stay
    assert not cpu_has_vnni(zen4, "AVX2")  # `--edge-profile` caps a VNNI CPU to AVX2
    assert not cpu_has_vnni(zen4, "avx512_core")
    assert cpu_has_vnni(zen4, "avx512_core_vnni") and cpu_has_vnni(zen4, "ALL")
    assert not cpu_has_vnni(zen3, "avx512_core_amx")  # a cap never adds what the CPU lacks

    (tmp_path / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\n")
    assert _cpu_flags(tmp_path / "cpuinfo") == frozenset({"fpu", "avx2", "avx512_vnni"})
    (tmp_path / "no-flags").write_text("processor\t: 0\n")
    assert _cpu_flags(tmp_path / "no-flags") is None
    assert _cpu_flags(tmp_path / "missing") is None

    assert CompileOptions(matmul_as_conv="on").matmuls_as_convolutions()
    assert not CompileOptions(matmul_as_conv="off").matmuls_as_convolutions()
    assert not CompileOptions(device="GPU").matmuls_as_convolutions()  # measured on CPUs only
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert CompileOptions().matmuls_as_convolutions()
    with pytest.raises(ModelError, match="matmul_as_conv must be one of auto, on, off, got 'yes'"):
        CompileOptions(matmul_as_conv="yes").matmuls_as_convolutions()


def test_the_flag_reaches_what_the_recognizer_compiles(shared_data):
    import argparse

    parser = argparse.ArgumentParser()
    add_compile_flags(parser)
    assert compile_options_from_flags(parser.parse_args([])).matmul_as_conv == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["--matmul-as-conv", "yes"])
    model = load_model(SHIPPED_INT8)
    for choice, fully_connected in (("on", 0), ("off", 13)):
        options = compile_options_from_flags(parser.parse_args(["--matmul-as-conv", choice]))
        decoder = compile_pair(model, options)[1]
        layers = [op.get_rt_info()["layerType"].astype(str) for op in decoder.get_runtime_model().get_ops()]
        assert layers.count("FullyConnected") == fully_connected, choice

    clip = shared_data / "videos" / "arm_wrestling.mp4"
    # in f32 the two forms compute the same; at the default execution (bf16 on CPUs that have it)
    # their roundings differ, and only frames whose top two classes are near tied may flip
    for hint, tolerance in (("f32", 2e-3), (None, 1e-2)):
        runs = {}
        for choice in ("on", "off"):
            with StreamingRecognizer(model, options=CompileOptions(matmul_as_conv=choice, precision_hint=hint)) as rec:
                runs[choice] = list(rec.run(clip))
        decisive = [i for i, p in enumerate(runs["off"]) if len(p.top_k) < 2 or p.top_k[0][1] - p.top_k[1][1] > 0.05]
        assert len(decisive) > 0.8 * len(runs["off"])
        assert [runs["on"][i].label for i in decisive] == [runs["off"][i].label for i in decisive], hint
        if hint == "f32":
            assert [p.label for p in runs["on"]] == [p.label for p in runs["off"]]
        assert max(abs(a.score - b.score) for a, b in zip(runs["on"], runs["off"])) < tolerance, hint
