"""The VTN family in torch: the deployable halves compose exactly into the full model."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from converter.config import ARCHS, ConfigError, VTNConfig  # noqa: E402
from converter.models.decoder import sinusoid_table  # noqa: E402
from converter.models.vtn import InputShapeError, TwoStreamVTN, build_vtn  # noqa: E402

SIZE = 64  # small frames keep every architecture fast; the maths does not depend on size


def _clip(frames: int = 16, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _compose(model, clip: torch.Tensor) -> torch.Tensor:
    """decoder(stack(encoder(frame) for each frame)), frame by frame as the runtime does it."""
    encoder, decoder = model.split()
    embeddings = []
    for t in range(clip.shape[1]):
        if model.config.uses_difference:
            if t == 0:
                continue
            embeddings.append(encoder(clip[:, t], clip[:, t - 1]))
        else:
            embeddings.append(encoder(clip[:, t]))
    return decoder(torch.stack(embeddings, dim=1))


@pytest.mark.parametrize("modality", ["rgb", "rgbdiff", "stacked"])
@pytest.mark.parametrize("arch", ARCHS)
def test_split_composes_into_full_model(arch, modality):
    torch.manual_seed(0)
    model = build_vtn(VTNConfig(arch=arch, modality=modality, num_classes=7)).eval()
    clip = _clip()
    with torch.no_grad():
        full = model(clip)
        composed = _compose(model, clip)
    assert full.shape == (2, 7)
    torch.testing.assert_close(composed, full, rtol=1e-4, atol=1e-5)
    assert full.abs().max() > 0  # not a degenerate all-zero network


@pytest.mark.parametrize("arch", ["mobilenetv2", "resnet18"])
def test_two_stream_is_average_of_streams(arch):
    torch.manual_seed(0)
    model = build_vtn(VTNConfig(arch=arch, modality="two_stream", num_classes=5)).eval()
    assert isinstance(model, TwoStreamVTN)
    clip = _clip()
    with torch.no_grad():
        fused = model(clip)
        expected = 0.5 * (_compose(model.rgb, clip) + _compose(model.motion, clip))
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-5)


def test_embedding_is_512_for_every_arch():
    for arch in ARCHS:
        encoder, _ = build_vtn(VTNConfig(arch=arch)).eval().split()
        with torch.no_grad():
            assert encoder(torch.zeros(1, 3, SIZE, SIZE)).shape == (1, 512)


def test_decoder_matches_reference_maths():
    """Scores divided by sqrt(512), head-major concatenation, no output projection."""
    torch.manual_seed(1)
    model = build_vtn(VTNConfig(arch="resnet18", num_classes=3)).eval()
    _, decoder = model.split()
    x = torch.randn(1, 16, 512)
    dec = model.decoder
    h = x + dec.position_encoding.enc.weight
    for layer in dec.layers:
        att = layer.slf_attn
        outs = []
        for head in range(8):
            q, k, v = h @ att.w_qs[head], h @ att.w_ks[head], h @ att.w_vs[head]
            outs.append(torch.softmax(q @ k.transpose(-1, -2) / 512**0.5, -1) @ v)
        h = torch.cat(outs, dim=-1) + h
        ffn = layer.pos_ffn
        inner = torch.relu(h @ ffn.w_1.weight[:, :, 0].T + ffn.w_1.bias)
        h = inner @ ffn.w_2.weight[:, :, 0].T + ffn.w_2.bias + h
    expected = (h @ model.fc.weight.T + model.fc.bias).mean(dim=1)
    with torch.no_grad():
        torch.testing.assert_close(decoder(x), expected, rtol=1e-4, atol=1e-5)


def test_sinusoid_table():
    table = sinusoid_table(16, 512)
    assert table.shape == (16, 512)
    assert torch.all(table[0] == 0)
    assert table[3, 0] == pytest.approx(torch.sin(torch.tensor(3.0)).item(), abs=1e-6)
    assert table[3, 1] == pytest.approx(torch.cos(torch.tensor(3.0)).item(), abs=1e-6)
    assert table[5, 10] == pytest.approx(torch.sin(torch.tensor(5 / 10000 ** (10 / 512))).item(), abs=1e-6)


def test_layer_norm_option_adds_original_parameters():
    plain = build_vtn(VTNConfig(arch="resnet18")).state_dict()
    normed = build_vtn(VTNConfig(arch="resnet18", layer_norm=True)).state_dict()
    extra = sorted(set(normed) - set(plain))
    assert "decoder.layers.0.slf_attn.layer_norm.a_2" in extra
    assert "decoder.layers.3.pos_ffn.layer_norm.b_2" in extra
    assert len(extra) == 4 * 2 * 2


def test_centred_window_sees_only_how_frames_differ(tmp_path):
    from converter.checkpoints import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_vtn(VTNConfig(arch="mobilenetv2", num_classes=5, centre_window=True)).eval()
    decoder = model.split()[1]
    embeddings = torch.randn(2, 16, 512)
    shared = torch.randn(2, 1, 512) * 10  # what every frame of a window has in common
    with torch.no_grad():
        logits = decoder(embeddings)
        torch.testing.assert_close(decoder(embeddings + shared), logits, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(decoder(embeddings.flip(1)), logits, atol=1e-3)  # order still counts
        plain = build_vtn(VTNConfig(arch="mobilenetv2", num_classes=5)).eval()
        plain.load_state_dict(model.state_dict())  # no parameters of its own: the same state dict
        assert not torch.allclose(plain.split()[1](embeddings + shared), logits, atol=1e-3)

    save_checkpoint(model, tmp_path / "centred.safetensors")
    loaded = load_checkpoint(tmp_path / "centred.safetensors").eval()
    assert loaded.config.centre_window
    with torch.no_grad():
        torch.testing.assert_close(loaded.split()[1](embeddings + shared), logits, rtol=1e-4, atol=1e-4)


def test_unknown_arch_and_modality_list_choices():
    with pytest.raises(ConfigError, match="resnet34"):
        VTNConfig(arch="vgg16")
    with pytest.raises(ConfigError, match="rgbdiff"):
        VTNConfig(arch="resnet34", modality="flow")


def test_wrong_input_shapes_say_what_was_expected():
    model = build_vtn(VTNConfig(arch="mobilenetv2", modality="rgbdiff")).eval()
    encoder, decoder = model.split()
    with pytest.raises(InputShapeError, match=r"\[B, 3, H, W\]"):
        encoder(torch.zeros(1, 4, SIZE, SIZE), torch.zeros(1, 4, SIZE, SIZE))
    with pytest.raises(InputShapeError, match="previous frame"):
        encoder(torch.zeros(1, 3, SIZE, SIZE))
    with pytest.raises(InputShapeError, match="2...17 frames"):
        model(torch.zeros(1, 1, 3, SIZE, SIZE))
    with pytest.raises(InputShapeError, match=r"\[B, T<=16, 512\]"):
        decoder(torch.zeros(1, 17, 512))
