"""INT8 post-training quantisation with NNCF: the project's only caller of nncf."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import openvino as ov


def _settings(transformer: bool) -> dict:
    """Transformers (the decoder) get NNCF's transformer model type, which keeps the softmax and
    layer-wise sensitive parts in float."""
    import nncf

    # CNN encoders get full bias correction: on the default MobileNetV2-VTN it took top-1 agreement
    # with torch from 93% to 98% and the minimum embedding cosine from 0.93 to 0.98, for 10 s more.
    # Depthwise convolutions (GroupConvolution) stay in float: int8 depthwise filters flipped the top-1 of
    # 2 in 30 held-out clips of the default MobileNetV2-VTN.
    # validate=False: ResNets have no depthwise convolutions, which is fine.
    depthwise = nncf.IgnoredScope(types=["GroupConvolution"], validate=False)
    kwargs = (
        {"model_type": nncf.ModelType.TRANSFORMER}
        if transformer
        else {"fast_bias_correction": False, "ignored_scope": depthwise}
    )
    return {"preset": nncf.QuantizationPreset.MIXED, **kwargs}


def _advanced():
    """7-bit weight ranges everywhere (NNCF's default does it for the first layer only): CPUs without
    VNNI (AVX2, e.g. AMD EPYC Zen 1 and older low-power Intel parts) multiply int8 in pairs into
    saturating int16. Without it the default MobileNetV2-VTN's INT8 embeddings fell to cosine 0.45
    (min) / 0.955 (mean) against torch on a Zen 1; with it 0.93 / 0.990."""
    import nncf

    return nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.ENABLE)


@contextlib.contextmanager
def _nncf_output() -> Iterator[None]:
    """NNCF draws its progress bars (rich, on stdout, one final line per algorithm in a log) with no
    switch to turn them off; they show where NNCF's INFO log shows (`converter build --verbose`)."""
    if logging.getLogger("nncf").isEnabledFor(logging.INFO):
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def quantize(model: ov.Model, samples: Sequence[object], *, transformer: bool = False) -> ov.Model:
    """Quantise `model` on `samples` (each one model input: an array or a tuple of arrays)."""
    import nncf

    with _nncf_output():
        return nncf.quantize(
            model,
            nncf.Dataset(list(samples)),
            subset_size=len(samples),
            advanced_parameters=_advanced(),
            **_settings(transformer),
        )


def quantize_with_accuracy_control(
    model: ov.Model,
    samples: Sequence[object],
    validation: Sequence[object],
    validate: Callable[[ov.CompiledModel, Iterable[object]], tuple[float, list[float]]],
    *,
    max_drop: float,
    transformer: bool = False,
) -> ov.Model:
    """Like `quantize`, but NNCF returns layers to float until `validate` (accuracy, per-item
    correctness) has lost at most `max_drop` (absolute) against the float model."""
    import nncf

    with _nncf_output():
        return nncf.quantize_with_accuracy_control(
            model,
            nncf.Dataset(list(samples)),
            nncf.Dataset(list(validation)),
            validate,
            max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(samples),
            advanced_quantization_parameters=_advanced(),
            **_settings(transformer),
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
