"""Graph rewrites made just before compiling: the same integer arithmetic, in the kernels OpenVINO
runs faster on the CPU at hand. The IR files are never changed.

One rewrite so far. On CPUs without VNNI (AVX2 only: Intel Core up to the 10th generation, older
Atom and Celeron parts, AMD up to Zen 3), OpenVINO runs an int8 MatMul (`FullyConnected`) through
a generic int8 GEMM, at about a third of the speed of its int8 1x1 convolution over the same
numbers. The VTN decoder's query, key and value projections and its classifier are such MatMuls
(its feed-forward layers are already 1x1 convolutions), so each MatMul of an activation by int8
weights becomes: rows to a batch of 1x1 images, a 1x1 Convolution with the same int8 weights and
dequantisation, and back. The integer products are the same; only the float sums after them
round differently (on the shipped decoder, logits move by less than 0.02).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import openvino as ov
from openvino import opset13 as ops

from vtn_edge.compile_options import CompileOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Int8Weights:
    """A MatMul's weights in output-channel-first layout: int8 values, float type of the Convert,
    and per-output-channel (or scalar) zero point and scale, each an array of 1 or `rows` values."""

    values: np.ndarray  # [O, I], int8 or uint8
    float_type: ov.Type
    zero_point: np.ndarray | None
    scale: np.ndarray


def for_compile(model: ov.Model, options: CompileOptions) -> ov.Model:
    """`model` as the runtime compiles it with `options` (the rule in one place: runtime and build
    verification both come here)."""
    if not options.matmuls_as_convolutions():
        return model
    rewritten, count = int8_matmuls_as_convolutions(model)
    log.debug("%s: %d int8 MatMuls run as 1x1 convolutions", model.get_friendly_name(), count)
    return rewritten


def int8_matmuls_as_convolutions(model: ov.Model) -> tuple[ov.Model, int]:
    """A copy of `model` with every MatMul of a static-shape activation by int8 weights as a 1x1
    Convolution; and how many were rewritten. Any other MatMul is left as it is (a model without
    MatMuls, such as the encoder, is returned as it is, not copied)."""
    if not any(node.get_type_name() == "MatMul" for node in model.get_ops()):
        return model, 0
    model = model.clone()
    count = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() == "MatMul" and _rewrite(node):
            count += 1
    if count:
        model.validate_nodes_and_infer_types()
    return model, count


def _rewrite(matmul: ov.Node) -> bool:
    x = matmul.input_value(0)
    shape = x.get_partial_shape()
    weights = _int8_weights(matmul)
    if matmul.get_attributes()["transpose_a"] or not shape.is_static or weights is None:
        return False
    rows, inputs = weights.values.shape
    if shape[-1].get_length() != inputs:
        return False

    def per_row(array: np.ndarray) -> ov.Node:
        return ops.constant(array.reshape(-1, 1, 1, 1) if array.size > 1 else array.reshape(()))

    w = ops.convert(ops.constant(weights.values.reshape(rows, inputs, 1, 1)), weights.float_type)
    if weights.zero_point is not None:
        w = ops.subtract(w, per_row(weights.zero_point))
    w = ops.multiply(w, per_row(weights.scale))
    images = ops.reshape(x, ops.constant(np.array([-1, inputs, 1, 1], np.int64)), special_zero=False)
    y = ops.convolution(images, w, [1, 1], [0, 0], [0, 0], [1, 1])
    out_shape = [d.get_length() for d in shape][:-1] + [rows]
    out = ops.reshape(y, ops.constant(np.array(out_shape, np.int64)), special_zero=False)
    out.set_friendly_name(matmul.get_friendly_name())
    names = matmul.output(0).get_names()
    matmul.output(0).replace(out.output(0))
    out.output(0).set_names(names)
    return True


def _constant_and_other(node: ov.Node) -> tuple[np.ndarray, ov.Node] | None:
    """For a binary node with one Constant input: (its values, the other input's node)."""
    a, b = (node.input_value(i).get_node() for i in (0, 1))
    if b.get_type_name() == "Constant":
        return b.get_data(), a
    if a.get_type_name() == "Constant" and node.get_type_name() == "Multiply":  # commutative only
        return a.get_data(), b
    return None


def _int8_weights(matmul: ov.Node) -> _Int8Weights | None:
    """Constant int8 -> Convert -> [Subtract zero point] -> Multiply scale -> MatMul's second input."""
    multiply = matmul.input_value(1).get_node()
    if multiply.get_type_name() != "Multiply" or (found := _constant_and_other(multiply)) is None:
        return None
    scale, node = found
    zero_point = None
    if node.get_type_name() == "Subtract":
        if (found := _constant_and_other(node)) is None:
            return None
        zero_point, node = found
    if node.get_type_name() != "Convert":
        return None
    source = node.input_value(0).get_node()
    if source.get_type_name() != "Constant" or source.get_output_element_type(0) not in (ov.Type.i8, ov.Type.u8):
        return None
    values = source.get_data()
    if values.ndim != 2:
        return None
    transpose_b = matmul.get_attributes()["transpose_b"]
    values = values if transpose_b else values.T
    rows = values.shape[0]
    channel_axis = 0 if transpose_b else 1  # where a per-output-channel scale varies in the original layout
    row_scale = _per_row(scale, rows, channel_axis)
    row_zero_point = None if zero_point is None else _per_row(zero_point, rows, channel_axis)
    if row_scale is None or (zero_point is not None and row_zero_point is None):
        return None
    return _Int8Weights(np.ascontiguousarray(values), node.get_output_element_type(0), row_zero_point, row_scale)


def _per_row(array: np.ndarray, rows: int, channel_axis: int) -> np.ndarray | None:
    """A scale or zero point as 1 value or one per output channel; None if it varies along the input
    channels (not a pattern this rewrite keeps exact)."""
    if array.size == 1:
        return array.reshape(1)
    if array.ndim == 2 and array.shape[channel_axis] == rows and array.shape[1 - channel_axis] == 1:
        return array.reshape(rows)
    return None
