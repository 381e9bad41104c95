"""StreamingRecognizer on the shipped IRs (no torch needed) and the real clips in ../shared/data/videos."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import openvino as ov
import pytest
from conftest import SHIPPED_FP16, SHIPPED_INT8

from vtn_edge import CompileOptions, LabelPolicy, StreamingRecognizer, load_model
from vtn_edge.errors import FrameError, ModelError, SourceError, VtnEdgeError
from vtn_edge.model import compile_pair
from vtn_edge.preprocess import center_crop_resize
from vtn_edge.smoothing import softmax
from vtn_edge.video import count_frames, read_frames

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _clips(shared_data):
    return sorted((shared_data / "videos").iterdir())


def test_every_frame_gets_a_prediction_in_order_for_every_clip(shared_data):
    with StreamingRecognizer(SHIPPED_INT8) as rec:
        for clip in _clips(shared_data):
            rec_new = StreamingRecognizer(rec.model)  # fresh stream state per clip
            with rec_new:
                predictions = list(rec_new.run(clip))
            frames = len(read_frames(clip))
            assert [p.frame_index for p in predictions] == list(range(frames)), clip.name
            assert not any(p.window_full for p in predictions[:30]), clip.name  # 16 sampled frames: 0..30
            assert all(p.window_full and p.label in rec.labels for p in predictions[30:]), clip.name
            assert all(p.label is None for p in predictions[:30])


def test_counting_frames_agrees_with_reading_them(shared_data, tmp_path):
    for clip in _clips(shared_data):  # MPEG-4 part 2 in AVI, H.264 in MP4 and Matroska
        assert count_frames(clip) == len(read_frames(clip)), clip.name
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(SourceError, match="broken.mp4"):
        count_frames(tmp_path / "broken.mp4")
    with pytest.raises(SourceError, match="does not exist"):
        count_frames(tmp_path / "missing.mp4")


def test_predictions_equal_offline_decoder_on_the_same_sampled_frames(shared_data):
    model = load_model(SHIPPED_INT8)
    options = CompileOptions()
    clip = shared_data / "videos" / "arm_wrestling.mp4"
    with StreamingRecognizer(model, options=options, top_k=4) as rec:
        predictions = list(rec.run(clip))
    frames = read_frames(clip)
    encoder, decoder = compile_pair(model, options)
    pre = model.manifest.preprocessing
    for f in (30, 31, 100, 101, 278, 279):
        last_sampled = f - f % 2
        window = [center_crop_resize(frames[i], pre)[None] for i in range(last_sampled - 30, last_sampled + 1, 2)]
        embeddings = np.stack([encoder([x])[0].reshape(-1) for x in window])
        probs = softmax(decoder([embeddings[None]])[0].reshape(-1).astype(np.float64))
        p = predictions[f]
        assert p.label == model.manifest.labels[int(np.argmax(probs))]
        for name, score in p.top_k:
            assert score == pytest.approx(probs[model.manifest.labels.index(name)], abs=1e-5)


def test_out_of_order_completion_keeps_frame_order(shared_data):
    frames = read_frames(shared_data / "videos" / "v_BaseballPitch_g01_c01.avi")
    options = CompileOptions(mode="throughput")

    def labels(recognizer_class) -> list[tuple]:
        # frames pushed back to back (already decoded), so several requests are always in flight
        with recognizer_class(SHIPPED_INT8, options=options, requests=4) as rec:
            out = [p for f in frames for p in rec.push(f)] + rec.flush()
        return [(p.frame_index, p.label, round(p.score, 5)) for p in out]

    expected = labels(StreamingRecognizer)
    completions: list[int] = []

    class SlowRequests(StreamingRecognizer):
        def _on_encoded(self, request, userdata):
            if userdata[1] % 3 == 0:
                time.sleep(0.05)  # this request finishes after later ones
            completions.append(userdata[1])
            super()._on_encoded(request, userdata)

    got = labels(SlowRequests)
    assert completions != sorted(completions)  # requests really did complete out of order
    assert got == expected


def test_streams_equal_separate_recognizers(shared_data):
    clips = _clips(shared_data)[:3]
    frames = [read_frames(c, max_frames=80) for c in clips]
    options = CompileOptions(mode="throughput")
    separate = []
    for fr in frames:
        with StreamingRecognizer(SHIPPED_INT8, options=options) as rec:
            out = [p for f in fr for p in rec.push(f)] + rec.flush()
            separate.append([(p.frame_index, p.label, p.score) for p in out])
    with StreamingRecognizer(SHIPPED_INT8, streams=3, options=options) as rec:
        got = [[] for _ in clips]
        for i in range(80):
            for s in range(3):
                for p in rec.push(frames[s][i], stream=s):
                    got[p.stream].append((p.frame_index, p.label, p.score))
        for p in rec.flush():
            got[p.stream].append((p.frame_index, p.label, p.score))
    for s in range(3):
        assert [x[:2] for x in got[s]] == [x[:2] for x in separate[s]]
        np.testing.assert_allclose([x[2] for x in got[s]], [x[2] for x in separate[s]], atol=1e-5)


def test_open_model_zoo_pair_runs(shared_data, tmp_path):
    """The reference encoder topology (random weights) + a decoder with the reference interface."""
    ref = (
        shared_data
        / "omz-topologies/driver-action-recognition-adas-0002/driver-action-recognition-adas-0002-encoder.xml"
    )
    shutil.copy(ref, tmp_path / "driver-encoder.xml")
    end = max(
        int(layer.find("data").get("offset")) + int(layer.find("data").get("size"))
        for layer in ET.parse(ref).getroot().iter("layer")
        if layer.get("type") == "Const"
    )
    rng = np.random.default_rng(0)
    (rng.standard_normal(end // 4).astype(np.float32) * 0.05).tofile(tmp_path / "driver-encoder.bin")
    labels = (shared_data / "labels" / "driver_actions.txt").read_text().split("\n")
    labels = [x for x in labels if x.strip()]
    from openvino import opset13 as ops

    x = ops.parameter([1, 16, 512], ov.Type.f32, name="0")
    w = ops.constant(rng.standard_normal((512, len(labels))).astype(np.float32) * 0.05)
    logits = ops.reduce_mean(ops.matmul(x, w, False, False), ops.constant(np.int64(1)), False)
    ov.save_model(ov.Model([logits], [x], "decoder"), tmp_path / "driver-decoder.xml")
    shutil.copy(shared_data / "labels" / "driver_actions.txt", tmp_path / "labels.txt")

    model = load_model(tmp_path)
    assert model.manifest.interface == "omz" and model.manifest.window == 16
    assert model.manifest.preprocessing.input_size == 224 and model.manifest.labels[0] == labels[0]
    with StreamingRecognizer(model) as rec:
        predictions = list(rec.run(shared_data / "videos" / "short_32frames.mp4"))
    assert len(predictions) == 32 and predictions[-1].window_full and predictions[-1].label in labels
    (tmp_path / "labels.txt").write_text("only\ntwo\n")
    with pytest.raises(ModelError, match="decoder has 9 classes but there are 2 labels"):
        load_model(tmp_path)


def test_bad_model_files(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nothing")
    with pytest.raises(ModelError, match="not a model directory"):
        load_model(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(SHIPPED_FP16, broken)
    (broken / "encoder.xml").write_text((broken / "encoder.xml").read_text()[:5000])
    with pytest.raises(ModelError, match="not a readable OpenVINO IR"):
        load_model(broken)
    shutil.copy(SHIPPED_FP16 / "encoder.xml", broken / "encoder.xml")
    (broken / "decoder.bin").unlink()
    with pytest.raises(ModelError, match="missing weights file"):
        load_model(broken)
    shutil.copy(SHIPPED_FP16 / "decoder.bin", broken / "decoder.bin")
    (broken / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(broken)


def test_frames_of_every_kind(shared_data):
    frame = read_frames(shared_data / "videos" / "carving_ice.mp4", max_frames=1)[0]
    kinds = [
        frame,
        frame[:, :, 0],
        np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)]),
        frame.astype(np.uint16) * 257,
        frame[:100, :50],
        np.ascontiguousarray(frame[::-1]),
    ]
    with StreamingRecognizer(SHIPPED_INT8) as rec:
        pushed = [p for i in range(40) for p in rec.push(kinds[i % len(kinds)])]
        labelled = pushed + rec.flush()
        assert [p.frame_index for p in labelled] == list(range(40))  # every kind of frame got its label
        with pytest.raises(FrameError, match="empty frame"):
            rec.push(np.zeros((0, 0, 3), np.uint8))
        with pytest.raises(FrameError, match="not supported"):
            rec.push(np.zeros((4, 4, 3), np.int32))
        with pytest.raises(FrameError, match="cannot be None"):
            rec.push(None)
        out = rec.push(frame, wait=True)
        assert out[-1].frame_index == 40  # refused frames did not advance the stream


def test_sources_that_cannot_be_opened(tmp_path):
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"\x00" * 1000)
    with StreamingRecognizer(SHIPPED_INT8) as rec:
        with pytest.raises(SourceError, match="does not exist"):
            list(rec.run(tmp_path / "absent.mp4"))
        with pytest.raises(SourceError, match="cannot open"):
            list(rec.run(bogus))


def test_one_label_policy_per_stream(shared_data):
    clip = read_frames(shared_data / "videos" / "arm_wrestling.mp4")
    strict = LabelPolicy(threshold=0.0, smoothing=None, hold_seconds=1000.0)  # no label can lead that long
    loose = LabelPolicy(threshold=0.0, smoothing=None)
    with StreamingRecognizer(SHIPPED_INT8, streams=2, policy=[strict, loose]) as rec:
        labels: dict[int, list] = {0: [], 1: []}
        for frame in clip:
            for stream in (0, 1):
                for p in rec.push(frame, stream=stream):
                    labels[p.stream].append(p.label)
        for p in rec.flush():
            labels[p.stream].append(p.label)
    assert not any(labels[0]) and any(labels[1])  # the same frames, each stream under its own policy
    with pytest.raises(VtnEdgeError, match="2 label policies for 3 streams: give one, or one per stream"):
        StreamingRecognizer(SHIPPED_INT8, streams=3, policy=[strict, loose])


def test_smoothing_threshold_and_hysteresis(shared_data):
    video = shared_data / "videos" / "arm_wrestling.mp4"

    def run(policy: LabelPolicy) -> list:
        with StreamingRecognizer(SHIPPED_INT8, policy=policy, top_k=15) as rec:
            return [p for p in rec.run(video) if p.window_full]

    raw = run(LabelPolicy())
    policy = LabelPolicy(smoothing="ema", alpha=0.2, threshold=0.99, hold_seconds=0.5)
    smoothed = run(policy)
    assert all(p.label is None or p.score >= 0.99 for p in smoothed)
    # each decoder result is alpha * its own probabilities + (1 - alpha) * the previous result
    label = raw[0].top_k[0][0]

    def results(predictions: list) -> list[float]:  # one value per decoder run (frames between carry it)
        values = [dict(p.top_k).get(label) for p in predictions]
        return [v for i, v in enumerate(values) if i == 0 or predictions[i].top_k != predictions[i - 1].top_k]

    raw_p, ema_p = results(raw), results(smoothed)
    assert len(raw_p) == len(ema_p) > 10 and None not in raw_p + ema_p  # top_k holds all 15 classes
    expected = [raw_p[0]]
    for p in raw_p[1:]:
        expected.append(0.2 * p + 0.8 * expected[-1])
    assert np.allclose(ema_p, expected, atol=1e-5)
    assert np.abs(np.diff(ema_p)).sum() < np.abs(np.diff(raw_p)).sum()  # smoother than what came in
    # hysteresis: no label replaced within the hold of its start
    changes = [p.timestamp for a, p in zip(smoothed, smoothed[1:]) if p.label != a.label]
    assert all(b - a >= 0.5 - 1e-6 for a, b in zip(changes, changes[1:]))


def test_decoding_every_second_window_carries_each_result_for_twice_as_long(shared_data):
    frames = read_frames(shared_data / "videos" / "arm_wrestling.mp4")

    first = 30  # the first full window: 16 sampled frames, stride 2

    def scores(decode_every: int) -> list[tuple]:
        with StreamingRecognizer(SHIPPED_INT8, top_k=15, decode_every=decode_every) as rec:
            out = [p for f in frames for p in rec.push(f)] + rec.flush()
        assert [p.frame_index for p in out] == list(range(len(frames)))
        assert [p.frame_index for p in out if p.fresh] == list(range(first, len(frames), 2 * decode_every))
        return [tuple(score for _, score in sorted(p.top_k)) if p.window_full else None for p in out]

    every, second = scores(1), scores(2)
    assert every[first - 1] is None and second[first - 1] is None and second[first] is not None
    for f in range(first, len(frames)):
        decoded = first + (f - first) // 4 * 4  # every 4th frame: the newest window decode_every=2 decoded
        np.testing.assert_allclose(second[f], every[decoded], atol=1e-6, err_msg=f"frame {f}")
    assert len(set(second[first:])) < len(set(every[first:]))  # it really skipped windows
    for bad in (0, -1, 1.5):
        with pytest.raises(VtnEdgeError, match="decode_every must be a whole number >= 1"):
            StreamingRecognizer(SHIPPED_INT8, decode_every=bad)


def test_runtime_runs_without_torch(shared_data):
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'nncf', 'onnx'):
            raise ImportError(name + ' is not installed')
sys.meta_path.insert(0, Block())
from vtn_edge import StreamingRecognizer
with StreamingRecognizer({str(SHIPPED_INT8)!r}) as rec:
    n = sum(1 for p in rec.run({str(shared_data / "videos" / "short_32frames.mp4")!r}))
print('FRAMES', n, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'nncf', 'onnx')))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "FRAMES 32 []" in out.stdout


def test_cli_run_json_and_bench(shared_data):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "vtn_edge",
            "run",
            str(SHIPPED_INT8),
            str(shared_data / "videos" / "short_32frames.mp4"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [x["frame"] for x in lines] == list(range(32))
    with StreamingRecognizer(SHIPPED_INT8) as rec:  # the same labels as the Python API gives
        expected = [p.label for p in rec.run(shared_data / "videos" / "short_32frames.mp4")]
    assert lines[-1]["window_full"] and [x["label"] for x in lines] == expected
    clip = shared_data / "videos" / "v_ApplyEyeMakeup_g01_c01.avi"
    cmd = [sys.executable, "-m", "vtn_edge", "run", str(SHIPPED_INT8), str(clip), "--json", "--decode-every", "2"]
    every_second = [
        json.loads(line) for line in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
    ]
    with StreamingRecognizer(SHIPPED_INT8, decode_every=2) as rec:
        expected = [(round(p.score, 4), p.fresh) for p in rec.run(clip)]
    assert [(x["score"], x["fresh"]) for x in every_second] == expected and sum(f for _, f in expected) > 10
    bench = subprocess.run(
        [
            sys.executable,
            "-m",
            "vtn_edge",
            "bench",
            str(SHIPPED_INT8),
            "--frames",
            "200",
            "--rounds",
            "2",
            "--source",
            str(shared_data / "videos" / "v_ApplyEyeMakeup_g01_c01.avi"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(bench.stdout)
    assert result["e2e_fps"] > 0 and result["raw_schedule_fps"] > 0 and result["video_fps"] > 0
    ratios = sorted(r["ratio"] for r in result["rounds"])  # raw and end to end measured back to back
    assert len(ratios) == 2 and result["e2e_ratio_range"] == ratios
    assert result["e2e_ratio"] == pytest.approx(sum(ratios) / 2)  # the median of two rounds
    no_rounds = subprocess.run(
        [sys.executable, "-m", "vtn_edge", "bench", str(SHIPPED_INT8), "--rounds", "0"], capture_output=True, text=True
    )
    assert no_rounds.returncode == 2 and "at least 1 round" in no_rounds.stderr and "Traceback" not in no_rounds.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "vtn_edge", "run", "/nonexistent", "x.mp4"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
    zero = subprocess.run(cmd[:-1] + ["0"], capture_output=True, text=True)
    assert zero.returncode == 2 and "--decode-every: expected a whole number >= 1" in zero.stderr
