"""The torch side of build verification: the inference copy computes what the model computes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from converter.config import VTNConfig  # noqa: E402
from converter.models.vtn import build_vtn  # noqa: E402
from converter.verify import inference_copy, torch_reference  # noqa: E402
from vtn_edge.metadata import Preprocessing  # noqa: E402
from vtn_edge.preprocess import normalize  # noqa: E402


def _batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("arch", ["mobilenetv2", "resnet18"])
def test_the_folded_copy_computes_what_the_model_computes_and_leaves_it_alone(arch):
    torch.manual_seed(0)
    pre = Preprocessing(input_size=64, resize_short=64)
    model = build_vtn(VTNConfig(arch=arch, num_classes=5, preprocessing=pre))
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # statistics a trained model has
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    model.train()
    before = _batch_norms(model)
    clips = [np.random.default_rng(i).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8) for i in range(2)]

    copy = inference_copy(model)
    # MobileNetV2 keeps every batch norm in a Sequential right after its convolution; ResNet's blocks
    # call theirs by name, so only the three downsampling ones fold
    assert _batch_norms(copy) == (0 if arch == "mobilenetv2" else before - 3)
    assert _batch_norms(model) == before and model.training  # the original is untouched
    assert all(p.is_contiguous() for p in model.parameters())  # not left in channels-last

    got = torch_reference(model, clips)
    model.eval()
    with torch.inference_mode():
        x = torch.from_numpy(normalize(np.stack(clips), pre))
        embeddings = model.embed(x)
        logits = model.split()[1](embeddings)
    assert np.abs(got.embeddings - embeddings.numpy()).max() <= 1e-4 * np.abs(embeddings.numpy()).max()
    assert np.abs(got.logits - logits.numpy()).max() <= 1e-4 * max(1.0, np.abs(logits.numpy()).max())
    assert got.clips is clips
