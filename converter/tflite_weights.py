"""ImageNet MobileNetV2 weights from a TFLite file (the only real pretrained encoder offline).

OpenVINO reads .tflite directly; the same reader as `converter import` folds each convolution's int8 weights,
scales and bias into float arrays, in graph order (`converter.ir_graph`), and we copy them into our torchvision-named
MobileNetV2. TFLite folds batch norm into the convolutions, so our batch norms become the
identity plus the folded bias (the same rule as an imported Open Model Zoo encoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from converter.ir_graph import IRImportError, batch_norm_after, conv_layers, identity_batch_norm, read_ir
from converter.models.encoders import MobileNetV2
from vtn_edge.errors import VtnEdgeError

# The quantised TFLite MobileNetV2 takes uint8 input as (x - 128) / 128.
TFLITE_MEAN = (128 / 255,) * 3
TFLITE_STD = (128 / 255,) * 3


class TFLiteWeightsError(VtnEdgeError):
    """A .tflite file that is not the expected MobileNetV2."""


@dataclass(frozen=True)
class TFLiteMobileNetV2:
    backbone: dict[str, torch.Tensor]
    classifier_weight: torch.Tensor  # [classes, 1280]
    classifier_bias: torch.Tensor


def read_tflite_mobilenetv2(path: str | Path) -> TFLiteMobileNetV2:
    path = Path(path)
    try:
        layers = conv_layers(read_ir(path))
    except IRImportError as exc:
        raise TFLiteWeightsError(str(exc)) from None
    reference = MobileNetV2()
    ours = [(name, m) for name, m in reference.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if len(layers) != len(ours) + 1:
        raise TFLiteWeightsError(f"{path} has {len(layers)} convolutions; MobileNetV2 1.0 has {len(ours) + 1}")
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    batch_norms = batch_norm_after(reference)
    for layer, (name, conv) in zip(layers, ours):
        if layer.weight.shape != tuple(conv.weight.shape):
            raise TFLiteWeightsError(
                f"{path}: layer {layer.name} has weights {list(layer.weight.shape)}, "
                f"MobileNetV2's {name} has {list(conv.weight.shape)}"
            )
        state[f"{name}.weight"] = torch.from_numpy(layer.weight)
        state.update(identity_batch_norm(batch_norms[name], torch.from_numpy(layer.bias)))
    head = layers[-1]
    return TFLiteMobileNetV2(
        state, torch.from_numpy(head.weight.reshape(head.weight.shape[0], -1)), torch.from_numpy(head.bias)
    )
