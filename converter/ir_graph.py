"""Weights out of OpenVINO graphs: an IR (or a TFLite file OpenVINO reads) with its constant
subgraphs folded, each convolution with the per-channel constant ops after it folded in, and the
identity batch norm that carries a folded shift in our modules.

Used by `converter.ir_import` (Open Model Zoo VTNs) and `converter.tflite_weights` (ImageNet).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from openvino.passes import ConstantFolding, Manager

from vtn_edge.errors import VtnEdgeError

BN_EPS = 1e-5
ELEMENTWISE = ("Add", "Subtract", "Multiply", "Divide")
PASS_THROUGH = ("FakeQuantize", "Convert")


class IRImportError(VtnEdgeError):
    """An IR that is not a VTN encoder/decoder this import can map onto our model."""


@dataclass(frozen=True)
class ConvLayer:
    """One convolution of an IR with its folded per-channel affine and what follows it."""

    name: str
    weight: np.ndarray  # [O, I/groups, *kernel]
    bias: np.ndarray  # [O]
    activation: str | None  # "relu", "relu6" or None
    input_spatial: int  # height of its input (1 after global pooling)


def read_ir(path: str | Path) -> ov.Model:
    """The IR with its constant subgraphs folded into single constants."""
    path = Path(path)
    if not path.is_file():
        raise IRImportError(f"{path} does not exist")
    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as exc:
        raise IRImportError(f"OpenVINO cannot read {path}: {str(exc).splitlines()[0]}") from None
    manager = Manager()
    manager.register_pass(ConstantFolding())
    manager.run_passes(model)
    _freeze_constant_subgraphs(model)
    return model


def _freeze_constant_subgraphs(model: ov.Model) -> None:
    """Evaluate what constant folding keeps on purpose (frontends mark dequantisation subgraphs
    so that the plugin can run them in int8) and put the values in as constants."""
    constant: set[str] = set()
    frontier = []
    for op in model.get_ordered_ops():  # topological: inputs come first
        inputs = [op.input_value(i) for i in range(op.get_input_size())]
        if op.get_type_name() == "Constant" or (
            inputs and op.get_type_name() != "Parameter" and all(v.get_node().get_name() in constant for v in inputs)
        ):
            constant.add(op.get_name())
            continue
        frontier += [
            v for v in inputs if v.get_node().get_name() in constant and v.get_node().get_type_name() != "Constant"
        ]
    if not frontier:
        return
    values = ov.Core().compile_model(ov.Model(frontier, [], "weights"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({})
    for i, value in enumerate(frontier):
        value.replace(ov.op.Constant(np.ascontiguousarray(values[i])).output(0))


def constant_value(value: ov.Output) -> np.ndarray | None:
    node = value.get_node()
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    if node.get_type_name() != "Constant":
        return None
    return np.array(node.get_data(), dtype=np.float32)


def consumers(node: ov.Node) -> list[ov.Node]:
    return [t.get_node() for t in node.output(0).get_target_inputs()]


def elementwise_const(node: ov.Node) -> tuple[int, np.ndarray] | None:
    """(index of the data input, the constant) for an elementwise op with one constant input."""
    for data, other in ((0, 1), (1, 0)):
        value = constant_value(node.input_value(other))
        if value is not None and constant_value(node.input_value(data)) is None:
            return data, value
    return None


def per_channel(value: np.ndarray, channels: int, axis: int) -> np.ndarray | None:
    """A constant that broadcasts along one channel axis only, as a [channels] vector."""
    if value.size == 1:
        return np.full(channels, float(value.reshape(-1)[0]), dtype=np.float32)
    if value.size == channels and value.ndim > axis and value.shape[axis] == channels:
        return value.reshape(-1)
    return None


def conv_layers(model: ov.Model) -> list[ConvLayer]:
    """Every convolution in graph order, with the constant affine ops after it folded in."""
    layers = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "GroupConvolution"):
            continue
        weight = constant_value(op.input_value(1))
        if weight is None:
            raise IRImportError(f"layer {op.get_friendly_name()}: its weights are not constant")
        if kind == "GroupConvolution":  # [G, O/G, I/G, *k] -> [O, I/G, *k]
            weight = weight.reshape(weight.shape[0] * weight.shape[1], *weight.shape[2:])
        scale = np.ones(weight.shape[0], np.float32)
        bias = np.zeros(weight.shape[0], np.float32)
        node = op
        while len(consumers(node)) == 1 and consumers(node)[0].get_type_name() in ELEMENTWISE:
            nxt = consumers(node)[0]
            found = elementwise_const(nxt)
            vector = per_channel(found[1], weight.shape[0], 1) if found else None
            if vector is None or (nxt.get_type_name() in ("Subtract", "Divide") and found[0] != 0):
                break  # a residual add, or not a per-channel constant
            kind_next = nxt.get_type_name()
            if kind_next == "Add":
                bias = bias + vector
            elif kind_next == "Subtract":
                bias = bias - vector
            elif kind_next == "Multiply":
                scale, bias = scale * vector, bias * vector
            else:
                scale, bias = scale / vector, bias / vector
            node = nxt
        weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        layers.append(ConvLayer(op.get_friendly_name(), weight, bias, _activation(node), _spatial(op)))
    return layers


def _activation(node: ov.Node) -> str | None:
    seen = node
    while True:
        nexts = consumers(seen)
        if len(nexts) != 1:
            return None
        seen = nexts[0]
        kind = seen.get_type_name()
        if kind == "Relu":
            return "relu"
        if kind == "Clamp":
            attrs = seen.get_attributes()
            return "relu6" if attrs["min"] == 0 and attrs["max"] == 6 else None
        if kind not in PASS_THROUGH:
            return None


def _spatial(op: ov.Node) -> int:
    shape = op.get_input_partial_shape(0)
    return shape[2].get_length() if shape.rank.get_length() == 4 and shape[2].is_static else 0


def float_reference(model: ov.Model) -> ov.Model:
    """The IR without its activation quantisation: the float arithmetic an import reproduces."""
    for op in model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize" and constant_value(op.input_value(0)) is None:
            op.output(0).replace(op.input_value(0))
    return model


def batch_norm_after(module: torch.nn.Module) -> dict[str, str]:
    """Each convolution's batch norm (names relative to `module`): the next BatchNorm2d in module order."""
    pairs, pending = {}, None
    for name, child in module.named_modules():
        if isinstance(child, torch.nn.Conv2d):
            pending = name
        elif isinstance(child, torch.nn.BatchNorm2d) and pending is not None:
            pairs[pending], pending = name, None
    return pairs


def identity_batch_norm(name: str, shift: torch.Tensor) -> dict[str, torch.Tensor]:
    """A batch norm that adds `shift` and otherwise passes its input through (in eval mode)."""
    channels = shift.shape[0]
    return {
        f"{name}.weight": torch.ones(channels),
        f"{name}.bias": shift.float(),
        f"{name}.running_mean": torch.zeros(channels),
        f"{name}.running_var": torch.full((channels,), 1 - BN_EPS),
    }
