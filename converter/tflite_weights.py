"""ImageNet MobileNetV2 weights from a TFLite file (the only real pretrained encoder offline).

OpenVINO reads .tflite directly; each convolution's weights and bias are small constant
subgraphs (int8 values, dequantised). We evaluate them, in graph order, and copy them into our
torchvision-named MobileNetV2. TFLite folds batch norm into the convolutions, so our batch
norms become the identity plus the folded bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov
import torch

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


def _conv_ops(model: ov.Model) -> list[ov.Node]:
    return [op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]


def _bias_output(conv: ov.Node) -> ov.Output | None:
    for target in conv.output(0).get_target_inputs():
        node = target.get_node()
        if node.get_type_name() == "Add":
            other = 1 - target.get_index()
            return node.input_value(other)
    return None


def read_tflite_mobilenetv2(path: str | Path) -> TFLiteMobileNetV2:
    path = Path(path)
    if not path.is_file():
        raise TFLiteWeightsError(f"{path} does not exist")
    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as exc:
        raise TFLiteWeightsError(f"OpenVINO cannot read {path}: {str(exc).splitlines()[0]}") from None
    convs = _conv_ops(model)
    outputs = []
    for conv in convs:
        outputs.append(conv.input_value(1))
        bias = _bias_output(conv)
        if bias is None:
            raise TFLiteWeightsError(f"{path}: convolution {conv.get_friendly_name()} has no bias add")
        outputs.append(bias)
    # evaluate every weight and bias subgraph at once (they depend on constants only)
    values = ov.Core().compile_model(ov.Model(outputs, [], "weights"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({})
    arrays = [np.asarray(values[i]) for i in range(len(outputs))]

    reference = MobileNetV2()
    ours = [(name, m) for name, m in reference.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if len(convs) != len(ours) + 1:
        raise TFLiteWeightsError(f"{path} has {len(convs)} convolutions; MobileNetV2 1.0 has {len(ours) + 1}")
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    for i, (name, conv) in enumerate(ours):
        weight = arrays[2 * i].reshape(conv.weight.shape)
        bias = arrays[2 * i + 1].reshape(-1)
        state[f"{name}.weight"] = torch.from_numpy(weight.astype(np.float32))
        bn = _bn_after(name)
        eps = 1e-5
        state[f"{bn}.weight"] = torch.ones(bias.shape[0])
        state[f"{bn}.bias"] = torch.from_numpy(bias.astype(np.float32))
        state[f"{bn}.running_mean"] = torch.zeros(bias.shape[0])
        state[f"{bn}.running_var"] = torch.full((bias.shape[0],), 1 - eps)
    fc_w, fc_b = arrays[-2], arrays[-1]
    return TFLiteMobileNetV2(
        state,
        torch.from_numpy(fc_w.reshape(fc_w.shape[0], -1).astype(np.float32)),
        torch.from_numpy(fc_b.reshape(-1).astype(np.float32)),
    )


def _bn_after(conv_name: str) -> str:
    """The batch norm that follows a convolution in torchvision's MobileNetV2 naming."""
    parts = conv_name.split(".")
    parts[-1] = str(int(parts[-1]) + 1)
    return ".".join(parts)
