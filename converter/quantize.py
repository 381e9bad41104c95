"""INT8 post-training quantisation with NNCF: the project's only caller of nncf."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import openvino as ov

log = logging.getLogger(__name__)


def quantize(model: ov.Model, samples: Sequence[object], *, transformer: bool = False) -> ov.Model:
    """Quantise `model` on `samples` (each one model input: an array or a tuple of arrays).

    Transformers (the decoder) get NNCF's transformer model type, which keeps the softmax and
    layer-wise sensitive parts in float.
    """
    import nncf

    dataset = nncf.Dataset(list(samples))
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    return nncf.quantize(model, dataset, subset_size=len(samples), preset=nncf.QuantizationPreset.MIXED, **kwargs)


def quantize_with_accuracy_control(
    model: ov.Model,
    samples: Sequence[object],
    validation: Sequence[object],
    validate,
    *,
    max_drop: float,
    transformer: bool = False,
) -> ov.Model:
    """NNCF's accuracy-controlled quantisation: keep the metric within `max_drop` of float."""
    import nncf

    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    return nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(list(samples)),
        nncf.Dataset(list(validation)),
        validation_fn=validate,
        max_drop=max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(samples),
        **kwargs,
    )


def count_quantized_ops(model: ov.Model) -> int:
    """FakeQuantize/Convert-to-int8 nodes: proof that a model really was quantised."""
    return sum(1 for op in model.get_ops() if op.get_type_name() == "FakeQuantize") + sum(
        1
        for op in model.get_ops()
        if op.get_type_name() == "Constant"
        and op.get_element_type() in (ov.Type.i8, ov.Type.u8)
        and np.prod(op.get_output_shape(0)) > 1
    )
