"""converter train / evaluate / dataset on tiny real video data."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from converter.data.synth import CORE_CLASSES, PARTNERS, draw_spec, render_clip, write_dataset  # noqa: E402
from converter.train import TrainOptions, train  # noqa: E402
from vtn_edge.datasets import open_dataset  # noqa: E402
from vtn_edge.errors import DataError  # noqa: E402
from vtn_edge.video import read_frames  # noqa: E402

FAST = dict(arch="mobilenetv2", input_size=64, epochs=1, batch_size=2, max_steps=2, workers=0, flip=False)


def _run(tmp_path, data, **kw):
    out = tmp_path / "run"
    train(TrainOptions(data=str(data), out=str(out), **{**FAST, **kw}))
    return out


def test_folder_per_class_layout(tiny_dataset, tmp_path):
    out = _run(tmp_path, tiny_dataset / "train" / "core", validation=str(tiny_dataset / "val" / "core"))
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and np.isfinite(record["loss"])
    assert (out / "best.safetensors").is_file() and (out / "last.safetensors").is_file()
    assert (out / "curves.png").stat().st_size > 1000


def test_bf16_autocast_trains_and_saves_float_weights(tiny_dataset, tmp_path):
    from converter.checkpoints import load_any

    out = _run(tmp_path, tiny_dataset / "train" / "core", bf16=True, max_steps=3)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(record["loss"])
    model = load_any(out / "last.safetensors")
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_list_file_layout(tiny_dataset, tmp_path):
    root = tiny_dataset / "train" / "core"
    labels = (root / "labels.txt").read_text().split()
    lines = [f"{p.relative_to(root)} {labels.index(p.parent.name)}" for p in sorted(root.glob("*/*.mp4"))]
    (root.parent / "train_list.txt").write_text("\n".join(lines) + "\n")
    listed = open_dataset(root.parent / "train_list.txt", labels_file=root / "labels.txt")
    assert len(listed) == 40 and listed.labels == tuple(labels)
    # relative paths resolve against the list file's folder
    (tmp_path / "list.txt").write_text("\n".join(f"{root}/{line}" for line in lines))
    (tmp_path / "labels.txt").write_text("\n".join(labels))
    _run(tmp_path, tmp_path / "list.txt")
    (tmp_path / "bad.txt").write_text("a.mp4 7\n")
    with pytest.raises(DataError, match="bad.txt:1"):
        open_dataset(tmp_path / "bad.txt")


def test_original_authors_layout(tiny_dataset, tmp_path):
    """ActivityNet-style JSON, frames extracted as <root>/<label>/<video>/image_%05d.jpg."""
    source = open_dataset(tiny_dataset / "val" / "core")
    database = {}
    for i, item in enumerate(source.items[:8]):
        label = source.labels[item.label]
        folder = tmp_path / label / f"v{i}"
        folder.mkdir(parents=True)
        for j, frame in enumerate(read_frames(item.path)):
            cv2.imwrite(str(folder / f"image_{j + 1:05d}.jpg"), frame)
        database[f"v{i}"] = {"subset": "training" if i % 2 == 0 else "validation", "annotations": {"label": label}}
    (tmp_path / "annotation.json").write_text(json.dumps({"labels": list(source.labels), "database": database}))
    assert len(open_dataset(tmp_path / "annotation.json", subset="training")) == 4
    _run(tmp_path, tmp_path / "annotation.json", validation=str(tmp_path / "annotation.json"))


def test_undecodable_videos_are_skipped_and_an_empty_dataset_is_an_error(tmp_path, caplog):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "broken.mp4").write_bytes(b"junk")
    with pytest.raises(DataError, match="no decodable video"):
        _run(tmp_path, tmp_path)
    assert "skipping" in caplog.text and "broken.mp4" in caplog.text


def test_resume_continues_where_it_stopped(tiny_dataset, tmp_path):
    out = _run(tmp_path, tiny_dataset / "train" / "core", epochs=1)
    first = (out / "last.safetensors").read_bytes()
    subprocess.run(
        [sys.executable, "-m", "converter", "train", "--resume", str(out), "--epochs", "2"],
        check=True,
        capture_output=True,
    )
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert (out / "last.safetensors").read_bytes() != first


def test_frozen_encoder_cache_is_reused(tiny_dataset, tmp_path, caplog):
    cache = tmp_path / "cache"
    opts = dict(freeze_encoder=True, views=2, cache_dir=str(cache), max_steps=None, epochs=2)
    _run(tmp_path / "a", tiny_dataset / "train" / "core", **opts)
    files = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(files) == 40
    caplog.clear()
    import logging

    with caplog.at_level(logging.INFO):
        _run(tmp_path / "b", tiny_dataset / "train" / "core", **opts)
    assert "0 videos embedded, 40 from the cache" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == files


def test_distillation_from_a_two_stream_teacher(tiny_dataset, tmp_path, trained_checkpoint):
    out = _run(
        tmp_path,
        tiny_dataset / "train" / "core",
        modality="stacked",
        input_size=96,
        teachers=(str(trained_checkpoint), str(trained_checkpoint)),
    )
    assert np.isfinite(json.loads((out / "metrics.jsonl").read_text())["loss"])
    with pytest.raises(Exception, match="cannot be combined with --freeze-encoder"):
        _run(tmp_path / "x", tiny_dataset / "train" / "core", teachers=(str(trained_checkpoint),), freeze_encoder=True)


def test_two_processes_with_gloo(tiny_dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            "-m",
            "converter",
            "train",
            "--arch",
            "mobilenetv2",
            "--data",
            str(tiny_dataset / "train" / "core"),
            "--input-size",
            "64",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--max-steps",
            "2",
            "--workers",
            "0",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # written once, by rank 0


def test_synthetic_benchmark_is_deterministic_and_pairs_share_appearance(tmp_path):
    a = write_dataset(tmp_path / "a", clips_per_class=1, seed=5, classes=("open", "swipe_left"), progress=False)
    b = write_dataset(tmp_path / "b", clips_per_class=1, seed=5, classes=("open", "swipe_left"), progress=False)
    digest = lambda root: sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.mp4"))  # noqa: E731
    assert [digest(r) for r in a] == [digest(r) for r in b]
    rng = np.random.default_rng(0)
    for label in CORE_CLASSES[:14]:
        spec = draw_spec(label, rng)
        partner = type(spec)(**{**spec.__dict__, "label": PARTNERS[label], "start": 0.0, "end": 1.0})
        spec = type(spec)(**{**spec.__dict__, "start": 0.0, "end": 1.0})
        mean_a = np.mean([f.astype(np.float32) for f in render_clip(spec, 1)], axis=0)
        mean_b = np.mean([f.astype(np.float32) for f in render_clip(partner, 1)], axis=0)
        if label not in ("appear", "disappear"):  # a step in the middle is symmetric only on average
            assert np.abs(mean_a - mean_b).mean() < 6.0, label


def test_feature_head_equals_the_whole_model_on_pooled_features():
    from converter.config import VTNConfig
    from converter.models.vtn import build_vtn

    model = build_vtn(VTNConfig(arch="mobilenetv2", num_classes=3)).eval()
    clip = torch.randn(2, 16, 3, 64, 64)
    with torch.no_grad():
        pooled = model.encoder.pool(clip.flatten(0, 1)).view(2, 16, -1)
        assert torch.allclose(model.feature_head()(pooled), model(clip), atol=1e-5)
    trainable = {id(p) for p in model.feature_head().parameters()}
    assert id(model.encoder.reduce_conv.weight) in trainable  # the projection trains with the decoder
    assert not trainable & {id(p) for p in model.encoder.backbone.parameters()}


def test_feature_windows_start_anywhere_in_training_and_at_frame_0_otherwise():
    from converter.embedding_cache import FeatureWindows

    frames = np.arange(50, dtype=np.float16)[None, :, None].repeat(3, axis=2)  # feature = frame index
    args = dict(window=16, stride=2, difference=False)
    train_windows = FeatureWindows([frames], [0], train=True, **args)
    starts = {int(train_windows[0][0][0, 0]) for _ in range(200)}
    assert starts == set(range(50 - 32 + 1))
    first, label = FeatureWindows([frames], [0], train=False, **args)[0]
    assert first[:, 0].tolist() == list(range(0, 32, 2)) and label == 0
    diff, _ = FeatureWindows([frames], [0], train=False, window=16, stride=2, difference=True)[0]
    assert diff[:, 0].tolist() == list(range(2, 32, 2))  # 15 differences, each with the frame before


def test_temporal_report_on_the_trained_model(trained_checkpoint, tiny_dataset, tmp_path):
    from converter.temporal import temporal_report

    report = temporal_report(
        trained_checkpoint, tiny_dataset / "train" / "core", tiny_dataset / "val" / "core", tmp_path / "cache"
    )
    assert report.clips == 4 * 8 * 4  # 4 windows of each of 8 videos of 4 classes
    assert report.decoder_accuracy > 0.5  # chance: 0.25
    for _, value in report.rows():
        assert 0.0 <= float(value.rstrip("%")) <= 100.0
    print(report)


def test_frozen_encoder_needs_at_least_one_view(tiny_dataset, tmp_path):
    from converter.train import TrainError

    with pytest.raises(TrainError, match="--views must be >= 1"):
        _run(tmp_path, tiny_dataset / "train" / "core", freeze_encoder=True, views=0)
    with pytest.raises(TrainError, match="--epochs must be >= 1, got 0"):
        _run(tmp_path, tiny_dataset / "train" / "core", epochs=0)


def test_reversal_pairs_play_clips_backwards_as_their_partner(tmp_path):
    from converter.config import ConfigError
    from converter.data.clips import read_reversal_pairs, reverse_some

    labels = ("open", "close", "still", "wave")
    (tmp_path / "pairs.txt").write_text("open close\n\nstill\n")
    partner = read_reversal_pairs(tmp_path / "pairs.txt", labels)
    assert partner.tolist() == [1, 0, 2, -1]  # wave is never reversed
    clips = torch.arange(64 * 4, dtype=torch.float32).view(64, 4, 1).repeat(1, 1, 3)  # [B, T, C]
    labels_in = torch.arange(64) % 4
    out, out_labels = reverse_some(clips, labels_in, partner, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0] != clips[:, 0, 0]).tolist()
    for i, was_flipped in enumerate(flipped):
        y = int(labels_in[i])
        if was_flipped:
            assert torch.equal(out[i], clips[i].flip(0)) and int(out_labels[i]) == partner[y]
        else:
            assert torch.equal(out[i], clips[i]) and int(out_labels[i]) == y
    assert 10 < sum(flipped) < 40 and not any(f for f, y in zip(flipped, labels_in) if y == 3)
    (tmp_path / "bad.txt").write_text("open shut\n")
    with pytest.raises(ConfigError, match="bad.txt:1: unknown class 'shut'"):
        read_reversal_pairs(tmp_path / "bad.txt", labels)


def test_reversal_one_item_at_a_time_reverses_clips_of_paired_classes_only():
    from converter.data.clips import ReversedSome

    partner = torch.tensor([1, 0, -1])
    items = [(torch.arange(4.0).view(4, 1) + 10 * i, i % 3) for i in range(60)]  # clips [T, C], classes 0..2
    torch.manual_seed(0)
    out = [ReversedSome(items, partner)[i] for i in range(60)]
    reversed_ = [not torch.equal(x, items[i][0]) for i, (x, _) in enumerate(out)]
    for (x, y), (clip, label), flipped in zip(out, items, reversed_):
        assert (torch.equal(x, clip.flip(0)) and y == partner[label]) if flipped else (y == label)
    assert 8 < sum(reversed_) < 32 and not any(f for f, (_, y) in zip(reversed_, items) if y == 2)


def test_feature_noise_is_a_fraction_of_each_frames_rms(tiny_dataset, tmp_path):
    from converter.train import TrainError, add_feature_noise

    features = torch.rand(4, 16, 256) * torch.arange(1, 17.0).view(1, 16, 1)  # frames of different scale
    noise = add_feature_noise(features, 0.1) - features
    ratio = noise.norm(dim=-1) / features.norm(dim=-1)
    assert torch.allclose(ratio, torch.full_like(ratio, 0.1), atol=0.02)
    assert torch.equal(add_feature_noise(features, 0.0), features)
    with pytest.raises(TrainError, match="--feature-noise is a fraction >= 0, got -0.1"):
        _run(tmp_path, tiny_dataset / "train" / "core", freeze_encoder=True, feature_noise=-0.1)
    with pytest.raises(TrainError, match="--feature-noise works on cached features"):
        _run(tmp_path, tiny_dataset / "train" / "core", feature_noise=0.1)


def test_synthetic_pairs_file_names_every_core_class(tmp_path):
    from converter.data.clips import read_reversal_pairs

    root = write_dataset(tmp_path, clips_per_class=0, seed=0, splits=("core",), progress=False)[0]
    partner = read_reversal_pairs(root / "pairs.txt", CORE_CLASSES).tolist()
    assert [CORE_CLASSES[p] for p in partner] == [PARTNERS.get(c, c) for c in CORE_CLASSES]


def test_synthetic_per_class_counts_only_add_clips(tmp_path):
    from converter.cli import main
    from vtn_edge.video import read_frames

    classes = ("rotate_cw", "still")
    small = write_dataset(tmp_path / "a", clips_per_class=1, seed=7, splits=("core",), classes=classes, progress=False)
    more = write_dataset(
        tmp_path / "b",
        clips_per_class=1,
        seed=7,
        splits=("core",),
        classes=classes,
        class_clips={"rotate_cw": 2},
        progress=False,
    )
    assert sorted(p.name for p in (more[0] / "rotate_cw").iterdir()) == ["rotate_cw_0000.mp4", "rotate_cw_0001.mp4"]
    assert len(list((more[0] / "still").iterdir())) == 1
    for name in ("rotate_cw/rotate_cw_0000.mp4", "still/still_0000.mp4"):  # clip k does not depend on the counts
        assert np.array_equal(read_frames(small[0] / name), read_frames(more[0] / name))
    assert main(["dataset", "synth", "--out", str(tmp_path / "c"), "--class-clips", "spin=3"]) == 2
    assert main(["dataset", "synth", "--out", str(tmp_path / "c"), "--class-clips", "still:3"]) == 2


def test_synthetic_class_subset_in_parallel_writes_the_same_files(tmp_path):
    from converter.cli import main

    full = write_dataset(tmp_path / "a", clips_per_class=2, seed=4, splits=("core",), progress=False)[0]
    args = ["dataset", "synth", "--out", str(tmp_path / "b"), "--clips-per-class", "2", "--seed", "4"]
    assert main([*args, "--classes", "rotate_cw, still", "--workers", "2"]) == 0
    subset = tmp_path / "b" / "core"
    assert not (tmp_path / "b" / "position").exists()  # a split with none of the classes is not written
    assert (subset / "labels.txt").read_text().split() == ["rotate_cw", "still"]
    assert sorted(p.relative_to(subset) for p in subset.rglob("*.mp4")) == sorted(
        p.relative_to(full) for p in full.glob("*/*.mp4") if p.parent.name in ("rotate_cw", "still")
    )
    for name in ("rotate_cw/rotate_cw_0001.mp4", "still/still_0000.mp4"):  # clip k is the same file
        assert (subset / name).read_bytes() == (full / name).read_bytes()
    assert main([*args, "--classes", "spin"]) == 2
    assert main([*args, "--workers", "0"]) == 2


def test_synthetic_step_actions_show_their_step_in_every_window():
    """appear/disappear change once: each 32-frame window (training windows start anywhere,
    Video@1 reads from frame 0) must hold frames from before and after the step."""
    from converter.data.synth import synth_clips

    for label, _, spec, seed in synth_clips("core", 40, 9, ("appear", "disappear")):
        plain = type(spec)(**{**spec.__dict__, "noise": 0.0, "shake": 0.0, "distractors": 0})
        frames = [f.astype(np.float32) for f in render_clip(plain, seed)]
        first, last = frames[0], frames[-1]
        # each frame is nearer the first or the last one, and switches once
        after = [np.abs(f - last).mean() < np.abs(f - first).mean() for f in frames]
        step = after.index(True)
        assert not any(after[:step]) and all(after[step:]), label
        assert all(start < step <= start + 30 for start in range(len(frames) - 32 + 1)), (label, len(frames), step)


def test_synthetic_colour_change_stands_out_from_the_background():
    from converter.data.synth import BLUE, CONTRAST, RED

    rng = np.random.default_rng(0)
    for _ in range(300):
        spec = draw_spec("red_to_blue", rng)
        for background in spec.background:
            for colour in (RED, BLUE):
                assert np.abs(colour - np.asarray(background)).sum() >= CONTRAST


def test_within_video_subspace_folds_into_a_plain_projection():
    from converter.config import VTNConfig
    from converter.embedding_cache import within_video_subspace
    from converter.models.vtn import build_vtn

    rng = np.random.default_rng(0)
    with torch.random.fork_rng():  # the same weights and features every run, no effect on other tests
        torch.manual_seed(0)
        # videos whose frames differ along channel 3 only; the videos differ from each other everywhere
        videos = []
        for _ in range(20):
            video = np.repeat(rng.normal(0, 5, (1, 1, 1280)), 30, axis=1)
            video[0, :, 3] += np.linspace(-1, 1, 30)
            videos.append(video.astype(np.float16))
        mean, basis = within_video_subspace(videos, 4)
        assert basis.shape == (1280, 4) and int(basis[:, 0].abs().argmax()) == 3
        model = build_vtn(VTNConfig(arch="mobilenetv2", num_classes=3)).eval()
        head = model.feature_head((mean, basis)).eval()
        features = torch.randn(2, 16, 1280)
        with torch.no_grad():
            before = head(features)
            head.fold()
            assert torch.allclose(model.feature_head()(features), before, rtol=1e-4, atol=1e-3)  # saved model == head
    with pytest.raises(ValueError, match="1..1280"):
        within_video_subspace(videos, 2000)


def test_frozen_encoder_with_subspace_reversal_onecycle_clipping_and_centring_trains_and_resumes(
    tiny_dataset, tmp_path
):
    from converter.checkpoints import load_checkpoint
    from converter.train import TrainError

    root = tiny_dataset / "train" / "core"
    opts = dict(freeze_encoder=True, subspace=8, reverse_pairs=str(root / "pairs.txt"), max_steps=None, epochs=1)
    opts["schedule"] = "onecycle"  # stepped per batch; a resumed run with more epochs keeps going
    opts["cache_dir"] = str(tmp_path / "cache")
    opts["clip_grad"] = 1.0
    opts["centre_window"] = True
    out = _run(tmp_path, root, **opts)
    model = load_checkpoint(out / "last.safetensors")
    assert model.encoder.reduce_conv.weight.shape == (512, 1280, 1, 1)  # a plain VTN
    assert model.config.centre_window and model.decoder.centre
    subprocess.run(
        [sys.executable, "-m", "converter", "train", "--resume", str(out), "--epochs", "2"],
        check=True,
        capture_output=True,
    )
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert load_checkpoint(out / "last.safetensors").config.centre_window
    with pytest.raises(TrainError, match="add --freeze-encoder"):
        _run(tmp_path / "x", root, subspace=8)
    with pytest.raises(TrainError, match="--schedule must be one of plateau, onecycle"):
        _run(tmp_path / "z", root, schedule="cosine")
    with pytest.raises(TrainError, match="--clip-grad must be a positive norm"):
        _run(tmp_path / "w", root, clip_grad=0.0)
    with pytest.raises(TrainError, match="needs --modality rgb"):
        _run(tmp_path / "y", root, modality="rgbdiff", reverse_pairs=str(root / "pairs.txt"))


def test_feature_head_with_a_tuned_tail_equals_the_whole_model_and_trains_only_the_tail():
    from converter.config import VTNConfig
    from converter.models.vtn import build_vtn

    model = build_vtn(VTNConfig(arch="mobilenetv2", num_classes=3)).eval()
    clip = torch.randn(2, 16, 3, 64, 64)
    trunk, tail = model.encoder.split_backbone(2)
    assert len(trunk) == 17 and len(tail) == 2  # MobileNetV2: the last block and the 1x1 conv to 1280
    head = model.feature_head(tuned=2)
    with torch.no_grad():
        maps = trunk(clip.flatten(0, 1))
        assert torch.allclose(head.eval()(maps.view(2, 16, *maps.shape[1:])), model(clip), atol=1e-5)
    trainable = {id(p) for p in head.parameters()}
    assert {id(p) for p in tail.parameters()} <= trainable
    assert not trainable & {id(p) for p in trunk.parameters()}
    head.train()
    assert not any(m.training for m in tail.modules() if isinstance(m, torch.nn.BatchNorm2d))  # statistics kept
    assert head.clip_decoder.training


def test_frozen_encoder_with_tuned_layers_trains_the_tail_on_cached_maps(tiny_dataset, tmp_path):
    from converter.checkpoints import load_checkpoint
    from converter.train import TrainError

    root = tiny_dataset / "train" / "core"
    opts = dict(freeze_encoder=True, tune_layers=2, cache_dir=str(tmp_path / "cache"), max_steps=None, epochs=1)
    out = _run(tmp_path, root, lr=1e-3, **opts)
    cached = np.load(next((tmp_path / "cache").iterdir()))
    assert cached.shape[0] == 1 and cached.shape[2:] == (160, 2, 2)  # [views, frames, C, H, W] at 64 px
    before, after = _untrained_model(root), load_checkpoint(out / "last.safetensors")
    changed = {
        k for k, v in after.state_dict().items() if v.is_floating_point() and not torch.equal(v, before.state_dict()[k])
    }
    assert any(k.startswith("encoder.backbone.features.18.") for k in changed)
    assert not any(k.startswith("encoder.backbone.features.16.") for k in changed)
    with pytest.raises(TrainError, match="add --freeze-encoder"):
        _run(tmp_path / "x", root, tune_layers=2)
    with pytest.raises(TrainError, match="cannot be combined with --tune-layers"):
        _run(tmp_path / "y", root, freeze_encoder=True, tune_layers=2, subspace=8)
    with pytest.raises(TrainError, match="--tune-layers: can tune 0..18"):
        _run(tmp_path / "z", root, freeze_encoder=True, tune_layers=19)


def _untrained_model(root):
    """The model `train` starts from with seed 0 (the same initialisation)."""
    from converter.train import build_model

    torch.manual_seed(0)
    return build_model(TrainOptions(data=str(root), out="unused", **FAST), open_dataset(root).labels)


def test_backbone_fingerprint_ignores_half_precision_and_covers_only_the_trunk():
    from converter.config import VTNConfig
    from converter.embedding_cache import backbone_fingerprint
    from converter.models.vtn import build_vtn

    model = build_vtn(VTNConfig(arch="mobilenetv2", num_classes=3))
    half = build_vtn(model.config)
    half.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    assert backbone_fingerprint(half) == backbone_fingerprint(model)  # a fp16 copy reuses the features
    assert backbone_fingerprint(model, tuned=2) != backbone_fingerprint(model)
    with torch.no_grad():
        model.encoder.backbone.features[18][0].weight.add_(1.0)  # in the tuned tail
    assert backbone_fingerprint(model, tuned=2) == backbone_fingerprint(half, tuned=2)
    assert backbone_fingerprint(model) != backbone_fingerprint(half)


@pytest.mark.parametrize("modality", ["rgb", "rgbdiff"])
def test_feature_extractor_takes_uint8_frames_and_matches_torch(modality):
    """The cache's OpenVINO extractor normalises in the graph; it must give what the torch
    trunk gives on `normalize`d frames (colour order, mean and std included)."""
    from converter.config import VTNConfig
    from converter.embedding_cache import FeatureExtractor, _Trunk
    from converter.models.vtn import build_vtn
    from vtn_edge.metadata import Preprocessing
    from vtn_edge.preprocess import normalize

    torch.manual_seed(0)
    pre = Preprocessing(input_size=64, resize_short=64)
    model = build_vtn(VTNConfig(arch="resnet18", modality=modality, num_classes=3, preprocessing=pre)).eval()
    frames = np.random.default_rng(0).integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
    features = FeatureExtractor(model)(frames, stride=2)
    x = torch.from_numpy(normalize(frames, pre))
    with torch.no_grad():
        expected = _Trunk(model, 0)(x, x[(torch.arange(10) - 2) % 10] if modality == "rgbdiff" else None).numpy()
    assert features.shape == expected.shape and np.abs(expected).max() > 0.1
    np.testing.assert_allclose(features, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_progress_in_a_log_is_one_plain_line_per_report(capsys, monkeypatch):
    """Progress bars redraw one line with carriage returns; in a log (stderr not a terminal, as
    under pytest) each report is its own line, and closing does not repeat the last one."""
    import converter.progress as shown

    monkeypatch.setattr(shown, "LOG_EVERY_S", 0.0)
    for _ in shown.progress(range(3), desc="steps", unit="step"):
        pass
    for _ in shown.progress(range(2), desc="hidden", unit="step", enabled=False):
        pass
    lines = capsys.readouterr().err.split("\n")
    assert "\r" not in "".join(lines) and lines[-1] == ""
    assert [line.split("|")[0] for line in lines[:-1]] == [f"steps: {p:>3}%" for p in (0, 33, 67, 100)]


def test_the_train_command_line_is_the_options_dataclass(tmp_path, tiny_dataset, capsys):
    from dataclasses import fields

    from converter.cli import build_parser, main

    train_help = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    flags = {f.name: f.metadata.get("flag") or "--" + f.name.replace("_", "-") for f in fields(TrainOptions)}
    flags["flip"] = "--no-flip"
    assert all(flag in train_help for flag in flags.values()), train_help  # every option has its flag

    out, val = tmp_path / "run", tiny_dataset / "val" / "core"
    argv = ["train", "--arch", "mobilenetv2", "--data", str(tiny_dataset / "train" / "core"), "--val", str(val),
            "--out", str(out), "--input-size", "64", "--epochs", "1", "--batch-size", "2", "--max-steps", "2",
            "--workers", "0", "--no-flip"]  # fmt: skip
    assert main(argv) == 0
    stored = json.loads((out / "options.json").read_text())
    assert stored["validation"] == str(val)  # the old --val spelling still works
    assert (stored["flip"], stored["epochs"], stored["input_size"], stored["out"]) == (False, 1, 64, str(out))
    assert stored["lr"] == TrainOptions.__dataclass_fields__["lr"].default  # not given: the dataclass's default

    for bad, message in [
        (["--mix-share", "2"], "--mix-share is a fraction of each epoch in (0, 1), got 2.0"),
        (["--subspace", "8"], "--subspace works on cached features: add --freeze-encoder"),
        ([], "train needs --arch and --data"),
    ]:
        base = ["train", "--arch", "mobilenetv2", "--data", "nowhere"] if bad else ["train"]
        assert main(base + bad) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_features_from_an_int8_ir_are_what_its_trunk_computes(built_models, trained_checkpoint, tiny_dataset, tmp_path,
                                                              caplog):  # fmt: skip
    """`--features-from`: the decoder trains on the pooled features the built INT8 encoder computes
    (cached apart from the float trunk's), and an IR that is not this model's trunk is refused."""
    import logging

    from conftest import TINY_SIZE

    from converter.checkpoints import load_checkpoint
    from converter.config import VTNConfig
    from converter.embedding_cache import FeatureExtractor, FeatureSourceError, ir_trunk
    from converter.models.vtn import build_vtn
    from converter.train import TrainError
    from vtn_edge.preprocess import center_crop_resize

    data, cache = tiny_dataset / "train" / "core", tmp_path / "cache"
    opts = dict(freeze_encoder=True, input_size=TINY_SIZE, init_checkpoint=str(trained_checkpoint),
                cache_dir=str(cache))  # fmt: skip
    with caplog.at_level(logging.INFO):
        _run(tmp_path / "float", data, **opts)
        run = _run(tmp_path / "int8", data, **opts, features_from=str(built_models["int8"]))
    assert caplog.text.count("train: 40 videos embedded, 0 from the cache") == 2  # one cache entry each
    assert (run / "best.safetensors").is_file()
    assert json.loads((run / "options.json").read_text())["features_from"] == str(built_models["int8"])

    model = load_checkpoint(trained_checkpoint)
    video = sorted(data.rglob("*.mp4"))[0]
    frames = np.stack([center_crop_resize(f, model.config.preprocessing) for f in read_frames(video)])
    ir = ir_trunk(built_models["int8"], model)
    int8, float_ = FeatureExtractor(model, ir=ir)(frames, stride=2), FeatureExtractor(model)(frames, stride=2)
    cosine = np.sum(int8 * float_, axis=1) / (np.linalg.norm(int8, axis=1) * np.linalg.norm(float_, axis=1))
    assert int8.shape == float_.shape and cosine.min() > 0.95 and not np.allclose(int8, float_, rtol=1e-3)

    with pytest.raises(TrainError, match="--features-from caches an IR's features: add --freeze-encoder"):
        _run(tmp_path / "x", data, features_from=str(built_models["int8"]))
    with pytest.raises(TrainError, match="cannot be combined with --tune-layers"):
        _run(tmp_path / "x", data, freeze_encoder=True, tune_layers=2, features_from=str(built_models["int8"]))
    with pytest.raises(FeatureSourceError, match="--features-from: model directory .*nowhere does not exist"):
        ir_trunk(tmp_path / "nowhere", model)
    other = build_vtn(VTNConfig(arch="resnet18", num_classes=4, preprocessing=model.config.preprocessing))
    with pytest.raises(FeatureSourceError, match="its encoder is mobilenetv2/rgb .* this model needs resnet18/rgb"):
        ir_trunk(built_models["int8"], other)
    with torch.no_grad():
        for p in model.encoder.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.05 * p.std())
    with pytest.raises(FeatureSourceError, match="point elsewhere than this model's trunk"):
        FeatureExtractor(model, ir=ir)
