"""OpenVINO IR -> our torch VTN: start from Intel's trained Open Model Zoo VTNs (or our own
`--interface omz` builds) and fine-tune them.

The IR is read with its constant subgraphs folded (`converter.ir_graph`), so every weight is one
constant whatever the precision: FP32, FP16 (Convert) and FP16-INT8 (int8 Constant, Convert, zero
point, scale, or FakeQuantize on constants) all come out as float arrays. Quantisation of
activations (FakeQuantize on non-constant inputs) is dropped: the torch model is float, the build
quantises again.

Encoder: convolutions are taken in graph order and matched to our modules by shape. The IRs fold
batch norm into each convolution; we carry the folded scale in the convolution's weight and the
folded shift as the beta of an identity batch norm (weight 1, mean 0, variance 1 - eps). That
keeps our module tree and checkpoint format unchanged, so training, export and loading need no
folded variant, and in eval mode the identity batch norm is exact. The preprocessing in front of
the first convolution (mean subtraction, scaling, a channel reversal) is folded into the first
convolution's weights and the checkpoint's mean, for RGB input normalised with ImageNet's std.

Decoder: found by data flow (the attention op's query, key and value inputs), not by position.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov
import torch

from converter.checkpoints import save_checkpoint, sha256_file
from converter.config import EMBED_DIM, VTNConfig
from converter.ir_graph import (
    ELEMENTWISE,
    PASS_THROUGH,
    ConvLayer,
    IRImportError,
    batch_norm_after,
    constant_value,
    consumers,
    conv_layers,
    elementwise_const,
    float_reference,
    identity_batch_norm,
    per_channel,
    read_ir,
)
from converter.models.decoder import sinusoid_table
from converter.models.vtn import VTN, FrameEncoder
from vtn_edge.metadata import IMAGENET_STD, LABELS_NAME, Preprocessing, read_labels
from vtn_edge.preprocess import normalize

IMPORTABLE_ARCHS = ("mobilenetv2", "resnet18", "resnet34")
HEADS = 8


@dataclass(frozen=True)
class ImportedEncoder:
    arch: str
    relu6: bool
    project_before_pool: bool
    preprocessing: Preprocessing
    state: dict[str, torch.Tensor]  # keys as in FrameEncoder


@dataclass(frozen=True)
class ImportedDecoder:
    window: int
    num_classes: int
    centre_window: bool
    state: dict[str, torch.Tensor]  # "decoder.*" and "fc.*" keys, as in VTN


# ---------------------------------------------------------------- the encoder
def _our_convs(encoder: FrameEncoder) -> list[tuple[str, torch.nn.Conv2d]]:
    convs = [(f"backbone.{n}", m) for n, m in encoder.backbone.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if encoder.reduce_conv is not None:
        convs.append(("reduce_conv", encoder.reduce_conv))
    return convs


def _reference(arch: str, relu6: bool = True) -> FrameEncoder:
    return FrameEncoder(VTNConfig(arch=arch, relu6=relu6))


def recognise_arch(layers: list[ConvLayer]) -> str | None:
    """The one importable architecture whose convolutions have exactly the IR's shapes."""
    shapes = Counter(tuple(layer.weight.shape) for layer in layers)
    for arch in IMPORTABLE_ARCHS:
        if Counter(tuple(m.weight.shape) for _, m in _our_convs(_reference(arch))) == shapes:
            return arch
    return None


def _match(layers: list[ConvLayer], ours: list[tuple[str, torch.nn.Conv2d]], arch: str, source: str) -> list[int]:
    """For each IR layer, the index of our convolution it maps to: graph order, checked by shape.

    Topological order may put a residual block's shortcut convolution before or after the main
    path's; the next three unassigned modules are the candidates, so only shapes decide.
    """
    if len(layers) != len(ours):
        raise IRImportError(f"{source} has {len(layers)} convolutions; a {arch} VTN encoder has {len(ours)}")
    free = list(range(len(ours)))
    order = []
    for layer in layers:
        want = tuple(layer.weight.shape)
        pick = next((i for i in free[:3] if tuple(ours[i][1].weight.shape) == want), None)
        if pick is None:
            name, module = ours[free[0]]
            raise IRImportError(
                f"{source}: layer {layer.name} has weights {list(want)}, but the {arch} module it must map "
                f"to ({name}) has {list(module.weight.shape)}"
            )
        free.remove(pick)
        order.append(pick)
    return order


def _input_affine(model: ov.Model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(perm, a, b) with first-convolution input[c] = a[c] * x[perm[c]] + b[c], x the IR input."""
    first = next(op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution"))
    perm, a, b = np.arange(3), np.ones(3, np.float32), np.zeros(3, np.float32)
    value = first.input_value(0)
    while value.get_node().get_type_name() != "Parameter":
        node = value.get_node()
        kind = node.get_type_name()
        if kind in PASS_THROUGH:
            value = node.input_value(0)
            continue
        if kind in ELEMENTWISE:
            found = elementwise_const(node)
            vector = per_channel(found[1], 3, 1) if found else None
            if vector is not None and (kind in ("Add", "Multiply") or found[0] == 0):
                v = vector[perm]
                if kind == "Add":
                    b = b + a * v
                elif kind == "Subtract":
                    b = b - a * v
                elif kind == "Multiply":
                    a = a * v
                else:
                    a = a / v
                value = node.input_value(found[0])
                continue
        if kind == "Gather":
            indices, axis = constant_value(node.input_value(1)), constant_value(node.input_value(2))
            if indices is not None and axis is not None and int(axis.reshape(-1)[0]) == 1:
                perm = indices.astype(int).reshape(-1)[perm]
                value = node.input_value(0)
                continue
        raise IRImportError(
            f"unsupported op {kind} ({node.get_friendly_name()}) between the input and the first convolution: "
            "the import reads mean subtraction, scaling and channel reordering only"
        )
    if sorted(perm.tolist()) != [0, 1, 2] or np.any(a == 0):
        raise IRImportError("the input preprocessing does not map each input channel to one convolution input")
    return perm, a, b


def import_encoder(path: str | Path, arch: str | None = None) -> ImportedEncoder:
    """Map an encoder IR (float BGR NCHW input "0" as in the Open Model Zoo) onto our encoder."""
    model = read_ir(path)
    source = str(path)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise IRImportError(
            f"{source}: a VTN encoder has one input and one output, this has "
            f"{len(model.inputs)} and {len(model.outputs)}"
        )
    in_shape, out_shape = model.input(0).get_partial_shape(), model.output(0).get_partial_shape()
    if not (in_shape.is_static and out_shape.is_static):
        raise IRImportError(f"{source}: shapes must be static, got input {in_shape} and output {out_shape}")
    dims_in, dims_out = list(in_shape.to_shape()), list(out_shape.to_shape())
    if len(dims_in) != 4 or dims_in[1] != 3 or dims_in[2] != dims_in[3]:
        raise IRImportError(f"{source}: input {dims_in} is not one square BGR frame [1, 3, S, S] (--interface omz)")
    if int(np.prod(dims_out)) != EMBED_DIM:
        raise IRImportError(
            f"{source} is not a VTN encoder: its output is {dims_out}, a VTN encoder's is [1, {EMBED_DIM}, 1, 1]"
        )
    layers = conv_layers(model)
    found = recognise_arch(layers)
    if arch is None and found is None:
        first, last = (list(layer.weight.shape) for layer in (layers[0], layers[-1])) if layers else ([], [])
        raise IRImportError(
            f"{source} is not a VTN encoder this import knows: {len(layers)} convolutions (first {first}, "
            f"last {last}) match none of {', '.join(IMPORTABLE_ARCHS)}; pass --arch to see where it differs"
        )
    arch = arch or found
    if arch not in IMPORTABLE_ARCHS:
        raise IRImportError(f"import supports {', '.join(IMPORTABLE_ARCHS)}, not {arch!r}")
    activations = {layer.activation for layer in layers} - {None}
    relu6 = activations == {"relu6"} if arch == "mobilenetv2" else True  # only MobileNetV2 has the choice
    reference = _reference(arch, relu6)
    ours = _our_convs(reference)
    order = _match(layers, ours, arch, source)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    batch_norms = {f"backbone.{c}": f"backbone.{b}" for c, b in batch_norm_after(reference.backbone).items()}
    for layer, index in zip(layers, order):
        name, _ = ours[index]
        weight = layer.weight
        if index == 0:
            weight, mean = _fold_input(model, weight)
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        if name == "reduce_conv":
            state["reduce_conv.bias"] = torch.from_numpy(layer.bias)
        else:
            state.update(identity_batch_norm(batch_norms[name], torch.from_numpy(layer.bias)))
    projection = next((layer for layer, i in zip(layers, order) if ours[i][0] == "reduce_conv"), None)
    return ImportedEncoder(
        arch=arch,
        relu6=relu6,
        project_before_pool=projection is not None and projection.input_spatial > 1,
        preprocessing=Preprocessing(input_size=dims_in[2], resize_short=dims_in[2], mean=mean, std=IMAGENET_STD),
        state=state,
    )


def _fold_input(model: ov.Model, weight: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The first convolution's weights for normalised RGB input, and the mean that makes it exact.

    The IR sees y[c] = a[c] * bgr[perm[c]] + b[c]; ours z[r] = (rgb[r] / 255 - mean[r]) / std[r].
    With mean[r] = -b[c] / (255 a[c]) the offsets cancel, so y[c] = 255 a[c] std[r] z[r] (zero
    padding stays zero on both sides), for r = 2 - perm[c] (BGR index -> RGB index).
    """
    perm, a, b = _input_affine(model)
    folded = np.empty_like(weight)
    mean = [0.0, 0.0, 0.0]
    for c in range(3):
        r = 2 - int(perm[c])
        folded[:, r] = weight[:, c] * a[c] * 255.0 * IMAGENET_STD[r]
        mean[r] = float(-b[c] / (255.0 * a[c]))
    return folded, (mean[0], mean[1], mean[2])


# ---------------------------------------------------------------- the decoder
_ATTENTION = ("ScaledDotProductAttention", "Softmax")
_LAYOUT = ("Transpose", "Reshape", "Squeeze", "Unsqueeze")


def _projection_weight(value: ov.Output, source: str) -> np.ndarray:
    """Walk up from an attention input through layout ops to the MatMul with a constant weight;
    that weight as our [heads, d, d_k] parameter."""
    node = value.get_node()
    while node.get_type_name() in _LAYOUT + PASS_THROUGH:
        node = node.input_value(0).get_node()
    if node.get_type_name() != "MatMul":
        raise IRImportError(
            f"{source}: attention input {node.get_friendly_name()} is a {node.get_type_name()}, "
            "not a projection (MatMul with constant weights)"
        )
    weight = constant_value(node.input_value(1))
    transpose_b = node.get_attributes().get("transpose_b", False)
    if weight is None or weight.shape[-2 if not transpose_b else -1] != EMBED_DIM:
        raise IRImportError(
            f"{source}: projection {node.get_friendly_name()} has no constant [{EMBED_DIM}, ...] weight"
        )
    if weight.ndim == 3:  # per-head [H, d, d_k], the original code's layout
        return weight.swapaxes(1, 2) if transpose_b else weight
    flat = weight.T if transpose_b else weight  # [d, H * d_k], heads major
    return flat.reshape(EMBED_DIM, HEADS, -1).transpose(1, 0, 2)


def _attention_inputs(node: ov.Node, source: str) -> tuple[ov.Output, ov.Output, ov.Output]:
    """Query, key and value of one attention: the fused op's inputs, or around a Softmax."""
    if node.get_type_name() == "ScaledDotProductAttention":
        return node.input_value(0), node.input_value(1), node.input_value(2)
    scores = node.input_value(0).get_node()
    while scores.get_type_name() in ("Multiply", "Divide", "Add") + PASS_THROUGH:
        scores = scores.input_value(0).get_node()
    apply = consumers(node)
    if scores.get_type_name() != "MatMul" or len(apply) != 1 or apply[0].get_type_name() != "MatMul":
        raise IRImportError(f"{source}: softmax {node.get_friendly_name()} is not between two MatMuls (attention)")
    return scores.input_value(0), scores.input_value(1), apply[0].input_value(1)


def import_decoder(path: str | Path) -> ImportedDecoder:
    """Map a decoder IR ([1, T, 512] embeddings -> [1, N] logits) onto our decoder and classifier."""
    model = read_ir(path)
    source = str(path)
    shape = model.input(0).get_partial_shape()
    dims = list(shape.to_shape()) if shape.is_static else []
    if len(model.inputs) != 1 or len(dims) != 3 or not 2 <= dims[1] <= 16:
        raise IRImportError(f"{source} is not a VTN decoder: its input is {shape}, expected [1, T<=16, 512]")
    if dims[2] != EMBED_DIM:
        raise IRImportError(
            f"{source}: the decoder takes {dims[2]}-d embeddings; VTN encoders give {EMBED_DIM}-d, so they cannot pair"
        )
    ops = model.get_ordered_ops()
    kinds = Counter(op.get_type_name() for op in ops)
    if kinds["Sqrt"] or kinds["Power"] or kinds["MVN"]:
        raise IRImportError(f"{source}: a decoder with layer norm; import maps decoders without it only")
    attentions = [op for op in ops if op.get_type_name() in _ATTENTION]
    ffn = [layer for layer in conv_layers(model) if layer.weight.ndim == 3]
    if not attentions or len(ffn) != 2 * len(attentions):
        raise IRImportError(
            f"{source} is not a VTN decoder: {len(attentions)} attention ops and {len(ffn)} feed-forward "
            "convolutions (each block has one and two)"
        )
    window = dims[1]
    state: dict[str, torch.Tensor] = {}
    position = next(
        (
            c
            for op in ops
            if op.get_type_name() == "Add"
            and (found := elementwise_const(op))
            and (c := found[1]).size == window * EMBED_DIM
        ),
        None,
    )
    if position is None:
        raise IRImportError(f"{source}: no position table (a constant [{window}, {EMBED_DIM}] added to the input)")
    table = sinusoid_table(16, EMBED_DIM)
    table[:window] = torch.from_numpy(position.reshape(window, EMBED_DIM))
    state["decoder.position_encoding.enc.weight"] = table
    for i, node in enumerate(attentions):
        for name, value in zip(("w_qs", "w_ks", "w_vs"), _attention_inputs(node, source)):
            weight = _projection_weight(value, source)
            if weight.shape != (HEADS, EMBED_DIM, EMBED_DIM // HEADS):
                raise IRImportError(
                    f"{source}: attention {i} has {name} {list(weight.shape)}; ours is "
                    f"[{HEADS}, {EMBED_DIM}, {EMBED_DIM // HEADS}]"
                )
            state[f"decoder.layers.{i}.slf_attn.{name}"] = torch.from_numpy(np.ascontiguousarray(weight))
        for j, layer in enumerate(ffn[2 * i : 2 * i + 2], start=1):
            state[f"decoder.layers.{i}.pos_ffn.w_{j}.weight"] = torch.from_numpy(layer.weight)
            state[f"decoder.layers.{i}.pos_ffn.w_{j}.bias"] = torch.from_numpy(layer.bias)
    state.update(_classifier(model, source))
    centre = any(
        op.get_type_name() == "ReduceMean" and op.input_value(0).get_node().get_type_name() == "Parameter" for op in ops
    )
    return ImportedDecoder(window, state["fc.weight"].shape[0], centre, state)


def _classifier(model: ov.Model, source: str) -> dict[str, torch.Tensor]:
    """The per-frame classifier: Result <- ReduceMean over time <- Add(bias) <- MatMul(weight)."""
    node = model.output(0).get_node().input_value(0).get_node()
    if node.get_type_name() == "ReduceMean":
        node = node.input_value(0).get_node()
    bias = None
    if node.get_type_name() == "Add" and (found := elementwise_const(node)):
        bias, node = found[1].reshape(-1), node.input_value(found[0]).get_node()
    weight = constant_value(node.input_value(1)) if node.get_type_name() == "MatMul" else None
    if weight is None or weight.ndim != 2:
        raise IRImportError(f"{source}: no classifier (MatMul with a constant weight) before the logits")
    if not node.get_attributes().get("transpose_b", False):
        weight = weight.T
    if weight.shape[1] != EMBED_DIM:
        raise IRImportError(f"{source}: the classifier's weight is {list(weight.shape)}, expected [N, {EMBED_DIM}]")
    bias = np.zeros(weight.shape[0], np.float32) if bias is None else bias
    return {"fc.weight": torch.from_numpy(np.ascontiguousarray(weight)), "fc.bias": torch.from_numpy(bias)}


# ---------------------------------------------------------------- the whole model
@dataclass(frozen=True)
class ImportResult:
    model: VTN
    decoder_trained: bool
    metadata: dict[str, str]  # what the checkpoint records about where it came from


def _labels(labels: str | Path | None, irs: list[Path], classes: int | None) -> tuple[str, ...]:
    candidates = [Path(labels)] if labels else [ir.parent / LABELS_NAME for ir in irs]
    for path in candidates:
        if labels or path.is_file():
            names = read_labels(path)
            if classes is not None and len(names) != classes:
                raise IRImportError(f"{path} has {len(names)} labels, but the decoder classifies {classes} classes")
            return names
    return tuple(f"class_{i}" for i in range(classes or 1))


def import_vtn(
    encoder: str | Path, decoder: str | Path | None = None, *, labels: str | Path | None = None, arch: str | None = None
) -> ImportResult:
    """Our torch VTN from an encoder IR and, optionally, its decoder IR (else an untrained decoder)."""
    enc = import_encoder(encoder, arch)
    dec = import_decoder(decoder) if decoder is not None else None
    irs = [Path(encoder)] + ([Path(decoder)] if decoder is not None else [])
    names = _labels(labels, irs, dec.num_classes if dec else None)
    config = VTNConfig(
        arch=enc.arch,
        modality="rgb",
        num_classes=len(names),
        labels=names,
        window=dec.window if dec else 16,
        stride=2,
        relu6=enc.relu6,
        project_before_pool=enc.project_before_pool,
        centre_window=dec.centre_window if dec else False,
        preprocessing=enc.preprocessing,
    )
    model = VTN(config)
    state = {f"encoder.{k}": v for k, v in enc.state.items()}
    if dec is not None:
        state.update(dec.state)
    missing = [k for k in state if k not in model.state_dict()]
    if missing:
        raise IRImportError(f"internal: imported keys the model lacks: {missing[:5]}")
    model.load_state_dict(state, strict=dec is not None)
    metadata = {"source": "openvino-ir", "encoder_ir_sha256": sha256_file(encoder), "decoder": "untrained"}
    if decoder is not None:
        metadata.update(decoder="imported", decoder_ir_sha256=sha256_file(decoder))
    return ImportResult(model.eval(), dec is not None, metadata)


@dataclass(frozen=True)
class ImportCheck:
    """Imported torch model vs the IR's float arithmetic on the same frames."""

    frames: int
    embedding_max_diff: float
    embedding_scale: float  # the largest embedding magnitude, for scale
    logits_max_diff: float | None  # None without a decoder

    @property
    def ok(self) -> bool:
        return self.embedding_max_diff <= CHECK_TOLERANCE * max(1.0, self.embedding_scale) and (
            self.logits_max_diff is None or self.logits_max_diff <= CHECK_TOLERANCE * max(1.0, self.embedding_scale)
        )


CHECK_TOLERANCE = 1e-3  # relative to the embeddings' scale; a wrong mapping is off by O(1)


def check_import(result: ImportResult, encoder: str | Path, decoder: str | Path | None, frames: int = 4) -> ImportCheck:
    """Run the imported model and the IRs (activation quantisation removed, f32) on random frames."""
    config = result.model.config
    size = config.preprocessing.input_size
    bgr = np.random.default_rng(0).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    ir_encoder = core.compile_model(float_reference(read_ir(encoder)), "CPU", f32)
    ir_emb = np.stack([ir_encoder(np.moveaxis(f.astype(np.float32), -1, 0)[None])[0].reshape(-1) for f in bgr])
    with torch.no_grad():
        ours = result.model.encoder(torch.from_numpy(normalize(bgr, config.preprocessing))).numpy()
        logits_diff = None
        if decoder is not None:
            window = ir_emb[np.arange(config.window) % frames][None]
            ir_logits = core.compile_model(float_reference(read_ir(decoder)), "CPU", f32)(window)[0]
            mine = result.model.split()[1](torch.from_numpy(window)).numpy()
            logits_diff = float(np.abs(ir_logits - mine).max())
    return ImportCheck(frames, float(np.abs(ir_emb - ours).max()), float(np.abs(ir_emb).max()), logits_diff)


def write_import(result: ImportResult, out: str | Path) -> Path:
    return save_checkpoint(result.model, out, extra=result.metadata)
