"""Both checkpoint formats. The original layout is written from REFERENCE 2's description,
independently of our module, and its outputs checked against a functional re-implementation."""

from __future__ import annotations

import math
import pickle

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from converter.checkpoints import (  # noqa: E402
    CheckpointError,
    load_any,
    load_backbone_weights,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from converter.config import VTNConfig  # noqa: E402
from converter.models.vtn import build_vtn  # noqa: E402

SIZE = 64


# ------------------------------------------------------------ the authors' layout, by hand
def _bn(prefix: str, c: int) -> dict:
    return {
        f"{prefix}.weight": [c],
        f"{prefix}.bias": [c],
        f"{prefix}.running_mean": [c],
        f"{prefix}.running_var": [c],
        f"{prefix}.num_batches_tracked": [],
    }


def resnet34_original_table(classes: int) -> dict[str, list[int]]:
    """resnet.0 conv1, resnet.1 bn1, resnet.4..7 layer1..4 (BasicBlock x 3,4,6,3)."""
    t = {"resnet.0.weight": [64, 3, 7, 7], **_bn("resnet.1", 64)}
    cin = 64
    for li, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for b in range(blocks):
            p = f"resnet.{4 + li}.{b}"
            t[f"{p}.conv1.weight"] = [planes, cin, 3, 3]
            t.update(_bn(f"{p}.bn1", planes))
            t[f"{p}.conv2.weight"] = [planes, planes, 3, 3]
            t.update(_bn(f"{p}.bn2", planes))
            if b == 0 and li > 0:
                t[f"{p}.downsample.0.weight"] = [planes, cin, 1, 1]
                t.update(_bn(f"{p}.downsample.1", planes))
            cin = planes
    return {**t, **decoder_original_table(classes)}


def decoder_original_table(classes: int) -> dict[str, list[int]]:
    t = {"self_attention_decoder.position_encoding.enc.weight": [16, 512]}
    for i in range(4):
        p = f"self_attention_decoder.layers.{i}"
        for w in ("w_qs", "w_ks", "w_vs"):
            t[f"{p}.slf_attn.{w}"] = [8, 512, 64]
        t[f"{p}.pos_ffn.w_1.weight"] = [1024, 512, 1]
        t[f"{p}.pos_ffn.w_1.bias"] = [1024]
        t[f"{p}.pos_ffn.w_2.weight"] = [512, 1024, 1]
        t[f"{p}.pos_ffn.w_2.bias"] = [512]
    t["fc.weight"] = [classes, 512]
    t["fc.bias"] = [classes]
    return t


def _random_state(table: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in table.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("running_mean", "bias")):
            state[key] = torch.randn(shape, generator=g) * 0.1
        elif ".bn" in key or key.startswith("resnet.1.") or "downsample.1" in key:
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            state[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return state


def reference_resnet34_vtn(state: dict[str, torch.Tensor], clip: torch.Tensor) -> torch.Tensor:
    """The original model's forward, written functionally from the state dict."""

    def bn(x, p):
        return F.batch_norm(
            x,
            state[f"{p}.running_mean"],
            state[f"{p}.running_var"],
            state[f"{p}.weight"],
            state[f"{p}.bias"],
            False,
            0.0,
            1e-5,
        )

    b, t = clip.shape[:2]
    x = clip.flatten(0, 1)
    x = F.max_pool2d(F.relu(bn(F.conv2d(x, state["resnet.0.weight"], stride=2, padding=3), "resnet.1")), 3, 2, 1)
    for li, blocks in enumerate((3, 4, 6, 3)):
        for bi in range(blocks):
            p = f"resnet.{4 + li}.{bi}"
            stride = 2 if (bi == 0 and li > 0) else 1
            out = F.relu(bn(F.conv2d(x, state[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
            out = bn(F.conv2d(out, state[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            if f"{p}.downsample.0.weight" in state:
                x = bn(F.conv2d(x, state[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            x = F.relu(out + x)
    h = x.mean((2, 3)).view(b, t, 512)
    h = h + state["self_attention_decoder.position_encoding.enc.weight"][:t]
    for i in range(4):
        p = f"self_attention_decoder.layers.{i}"
        q = torch.einsum("btd,hdk->bhtk", h, state[f"{p}.slf_attn.w_qs"])
        k = torch.einsum("btd,hdk->bhtk", h, state[f"{p}.slf_attn.w_ks"])
        v = torch.einsum("btd,hdk->bhtk", h, state[f"{p}.slf_attn.w_vs"])
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(512), -1) @ v
        h = a.permute(0, 2, 1, 3).reshape(b, t, 512) + h
        f = F.conv1d(h.transpose(1, 2), state[f"{p}.pos_ffn.w_1.weight"], state[f"{p}.pos_ffn.w_1.bias"])
        f = F.conv1d(F.relu(f), state[f"{p}.pos_ffn.w_2.weight"], state[f"{p}.pos_ffn.w_2.bias"])
        h = f.transpose(1, 2) + h
    return F.linear(h, state["fc.weight"], state["fc.bias"]).mean(1)


def _write_original(path, state, *, module_prefix: bool):
    prefix = "module." if module_prefix else ""
    torch.save(
        {
            "epoch": 7,
            "state_dict": {prefix + k: v for k, v in state.items()},
            "optimizer": {"state": {}, "param_groups": []},
        },
        path,
    )


@pytest.mark.parametrize("module_prefix", [False, True])
def test_original_resnet34_checkpoint_loads_and_matches_reference(tmp_path, module_prefix):
    table = resnet34_original_table(classes=10)
    state = _random_state(table)
    path = tmp_path / "vtn_resnet34.pth"
    _write_original(path, state, module_prefix=module_prefix)

    model = load_any(path, fmt="original", config=VTNConfig(arch="resnet34"))
    assert model.config.num_classes == 10  # taken from the checkpoint
    clip = torch.randn(1, 16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(clip), reference_resnet34_vtn(state, clip), rtol=1e-4, atol=1e-4)


def test_original_mobilenetv2_layout_with_reduce_conv(tmp_path):
    """MobileNetV2: `resnet.0..18` is torchvision's features; reduce_conv 1280->512 with bias."""
    config = VTNConfig(arch="mobilenetv2", num_classes=9)
    model = build_vtn(config)
    table = decoder_original_table(9)
    table["reduce_conv.weight"] = [512, 1280, 1, 1]
    table["reduce_conv.bias"] = [512]
    table["resnet.0.0.weight"] = [32, 3, 3, 3]
    table.update(_bn("resnet.0.1", 32))
    table["resnet.1.conv.0.0.weight"] = [32, 1, 3, 3]  # first block: depthwise, no expansion
    table["resnet.1.conv.1.weight"] = [16, 32, 1, 1]
    table["resnet.2.conv.0.0.weight"] = [96, 16, 1, 1]  # expansion 6
    table["resnet.18.0.weight"] = [1280, 320, 1, 1]
    table.update(_bn("resnet.18.1", 1280))
    from converter.checkpoints import ours_to_original

    written = {k: tuple(v.shape) for k, v in ours_to_original(model).items()}
    for key, shape in table.items():
        assert written[key] == tuple(shape), key
    state = _random_state(written_shapes := {k: list(s) for k, s in written.items()})
    assert written_shapes.keys() >= table.keys()
    path = tmp_path / "mnv2.pth"
    _write_original(path, state, module_prefix=True)
    loaded = load_any(path, fmt="original", config=VTNConfig(arch="mobilenetv2"))
    assert not loaded.config.relu6  # the original MobileNetV2 uses plain ReLU
    clip = torch.randn(1, 16, 3, SIZE, SIZE)
    with torch.no_grad():
        features = loaded.encoder.backbone(clip[0])
        pooled = F.conv2d(features, state["reduce_conv.weight"], state["reduce_conv.bias"]).mean((2, 3))
        torch.testing.assert_close(loaded.encoder(clip[0]), pooled, rtol=1e-4, atol=1e-5)


def test_original_rgbdiff_keys_under_motion_decoder(tmp_path):
    state = {"motion_decoder." + k: v for k, v in _random_state(resnet34_original_table(4)).items()}
    path = tmp_path / "diff.pth"
    torch.save({"epoch": 1, "state_dict": state, "optimizer": {}}, path)
    model = load_any(path, fmt="original", config=VTNConfig(arch="resnet34", modality="rgbdiff"))
    assert model.config.num_classes == 4
    torch.testing.assert_close(model.fc.weight, state["motion_decoder.fc.weight"])


def test_original_two_stream(tmp_path):
    base = _random_state(resnet34_original_table(4))
    state = {
        **{"rgb_recoder." + k: v for k, v in base.items()},
        **{"motion_decoder." + k: v * 0.5 for k, v in base.items()},
    }
    path = tmp_path / "two.pth"
    torch.save({"epoch": 1, "state_dict": state, "optimizer": {}}, path)
    model = load_any(path, fmt="original", config=VTNConfig(arch="resnet34", modality="two_stream"))
    torch.testing.assert_close(model.rgb.fc.weight, base["fc.weight"])
    torch.testing.assert_close(model.motion.fc.weight, base["fc.weight"] * 0.5)


def test_mismatch_names_keys_and_shapes_and_reinit_head(tmp_path):
    state = _random_state(resnet34_original_table(10))
    del state["resnet.4.0.conv1.weight"]
    state["resnet.9.extra"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    _write_original(path, state, module_prefix=False)
    with pytest.raises(CheckpointError) as err:
        load_any(path, fmt="original", config=VTNConfig(arch="resnet34"))
    text = str(err.value)
    assert "missing keys: encoder.backbone.layer1.0.conv1.weight" in text
    assert "unexpected keys: resnet.9.extra" in text
    with pytest.raises(CheckpointError, match=r"unexpected keys: encoder.backbone.layer1.2"):
        load_any(path, fmt="original", config=VTNConfig(arch="resnet18"))

    good = _random_state(resnet34_original_table(10))
    path = tmp_path / "ten.pth"
    _write_original(path, good, module_prefix=False)
    labels = tuple("abcde")
    with pytest.raises(CheckpointError, match=r"shape conflict at fc.weight.*\[5, 512\].*\[10, 512\]"):
        load_any(path, fmt="original", config=VTNConfig(arch="resnet34"), labels=labels)
    model = load_any(path, fmt="original", config=VTNConfig(arch="resnet34"), labels=labels, reinit_head=True)
    assert model.fc.out_features == 5
    torch.testing.assert_close(
        model.decoder.layers[2].slf_attn.w_qs, good["self_attention_decoder.layers.2.slf_attn.w_qs"]
    )


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_refuses_pickled_code_truncated_and_non_checkpoints(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": _Evil()}, evil)
    with pytest.raises(CheckpointError, match="refusing"):
        load_any(evil, fmt="original", config=VTNConfig(arch="resnet18"))
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        load_any(raw, fmt="original", config=VTNConfig(arch="resnet18"))

    good = tmp_path / "good.pth"
    _write_original(good, _random_state(resnet34_original_table(3)), module_prefix=False)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_any(truncated, fmt="original", config=VTNConfig(arch="resnet34"))

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError):
        load_any(text, fmt="original", config=VTNConfig(arch="resnet34"))
    with pytest.raises(CheckpointError, match="not a vtn-edge checkpoint"):
        load_any(text, fmt="ours")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_any(tmp_path / "absent.safetensors")

    ours = save_checkpoint(build_vtn(VTNConfig(arch="mobilenetv2", num_classes=3)), tmp_path / "ours.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(ours.read_bytes()[: ours.stat().st_size // 2])  # an interrupted copy
    with pytest.raises(CheckpointError, match="cut.safetensors is a damaged or truncated checkpoint"):
        load_any(cut)


# ------------------------------------------------------------ our format
@pytest.mark.parametrize("modality", ["rgb", "stacked", "two_stream"])
def test_our_format_round_trip_is_exact(tmp_path, modality):
    torch.manual_seed(0)
    config = VTNConfig(
        arch="mobilenetv2",
        modality=modality,
        num_classes=3,
        labels=("a", "b", "c"),
        layer_norm=True,
        window=12,
        stride=3,
    )
    model = build_vtn(config).eval()
    path = save_checkpoint(model, tmp_path / "ckpt.safetensors")
    assert read_config(path) == config
    loaded = load_checkpoint(path)
    assert loaded.config == config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    clip = torch.randn(1, 12, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(clip), model(clip))


def test_half_precision_checkpoint_is_half_the_size(tmp_path):
    model = build_vtn(VTNConfig(arch="mobilenetv2", num_classes=5)).eval()
    full = save_checkpoint(model, tmp_path / "f32.safetensors")
    half = save_checkpoint(model, tmp_path / "f16.safetensors", half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded = load_checkpoint(half)
    torch.testing.assert_close(loaded.fc.weight, model.fc.weight, rtol=1e-3, atol=1e-3)


def test_backbone_weights_in_torchvision_format(tmp_path):
    model = build_vtn(VTNConfig(arch="resnet18"))
    donor = build_vtn(VTNConfig(arch="resnet18")).encoder.backbone.state_dict()
    donor = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in donor.items()}
    donor["fc.weight"], donor["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(donor, path)
    load_backbone_weights(model, path)
    torch.testing.assert_close(model.encoder.backbone.layer3[1].conv2.weight, donor["layer3.1.conv2.weight"])
    with pytest.raises(CheckpointError, match="does not fit the resnet34 backbone"):
        load_backbone_weights(build_vtn(VTNConfig(arch="resnet34")), path)


# ------------------------------------------------------------ weight averaging
def _run_of(model, seed: int, path):
    """A fine-tuning run of `model`: its decoder and classifier moved a little, the rest kept."""
    torch.manual_seed(seed)
    run = build_vtn(model.config)
    run.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, p in run.named_parameters():
            if name.startswith(("decoder.", "fc.")):
                p.add_(0.01 * torch.randn_like(p))
    return save_checkpoint(run.eval(), path)


def test_average_is_the_mean_of_runs_from_one_start(tmp_path):
    from converter.average import average_checkpoints

    torch.manual_seed(0)
    start = build_vtn(VTNConfig(arch="mobilenetv2", num_classes=3, labels=("a", "b", "c"))).eval()
    runs = [_run_of(start, seed, tmp_path / f"run{seed}.safetensors") for seed in (1, 2, 3)]
    result = average_checkpoints(runs, tmp_path / "soup.safetensors")
    soup = load_checkpoint(result.path).state_dict()
    members = [load_checkpoint(r).state_dict() for r in runs]
    floats = [k for k, v in members[0].items() if v.is_floating_point()]
    flat = [torch.cat([m[k].double().flatten() for k in floats]) for m in members]
    furthest = max(float((f - flat[0]).norm() / flat[0].norm()) for f in flat)
    assert result.runs == 3 and result.max_distance == pytest.approx(furthest, rel=1e-4)
    for key, value in soup.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(m[key] for m in members) / 3, rtol=0, atol=1e-6)
    assert not torch.equal(soup["fc.weight"], members[0]["fc.weight"])
    assert read_config(result.path) == start.config
    assert average_checkpoints(runs[:2], tmp_path / "half.safetensors", half=True).path.stat().st_size < (
        0.55 * result.path.stat().st_size
    )


def test_average_refuses_what_cannot_be_averaged(tmp_path):
    import subprocess
    import sys

    from converter.average import average_checkpoints

    torch.manual_seed(0)
    config = VTNConfig(arch="mobilenetv2", num_classes=3, labels=("a", "b", "c"))
    start = build_vtn(config).eval()
    a, b = (_run_of(start, seed, tmp_path / f"run{seed}.safetensors") for seed in (1, 2))
    torch.manual_seed(7)
    unrelated = save_checkpoint(build_vtn(config).eval(), tmp_path / "fresh.safetensors")
    other_classes = save_checkpoint(
        build_vtn(VTNConfig(arch="mobilenetv2", num_classes=2, labels=("a", "b"))).eval(), tmp_path / "two.safetensors"
    )
    out = tmp_path / "soup.safetensors"
    cases = [
        ([a], out, "at least two checkpoints, got 1"),
        ([a, b], tmp_path / "soup.pt", "is written as .safetensors"),
        ([a, unrelated], out, "fresh.safetensors is .* away from .*did not start from the same checkpoint"),
        ([a, other_classes], out, "two.safetensors is another model than .*num_classes: 3 vs 2"),
        ([a, tmp_path / "missing.safetensors"], out, "missing.safetensors does not exist"),
    ]
    for paths, target, message in cases:
        with pytest.raises(CheckpointError, match=message):
            average_checkpoints(paths, target)
        assert not target.exists()
    average_checkpoints([a, b], out)
    cli = subprocess.run(
        [sys.executable, "-m", "converter", "average", str(a), str(b), "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert cli.returncode == 2 and "soup.safetensors exists; pass --force to replace it" in cli.stderr, cli.stderr
    assert "Traceback" not in cli.stderr
    forced = subprocess.run(
        [sys.executable, "-m", "converter", "average", str(a), str(b), "--out", str(out), "--force"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert forced.returncode == 0 and "the mean of 2 runs' weights" in forced.stdout, forced.stderr
