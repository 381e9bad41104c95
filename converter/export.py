"""torch -> two ONNX graphs -> two OpenVINO models with preprocessing folded in.

Interfaces:
- native: encoder inputs are uint8 BGR NHWC [1, S, S, 3] frames as the runtime has them after
  cropping (two inputs, `frame` and `previous`, for the difference modalities); colour order,
  scaling and mean/std happen inside the graph. Decoder: `embeddings` [1, T, 512] -> `logits`.
- omz: the Open Model Zoo reference interface: encoder input "0" float BGR NCHW [1, 3, S, S] in
  0..255, output [1, 512, 1, 1]; decoder input "0" [1, 16, 512] -> [1, N] logits.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import openvino as ov
import torch
from openvino.preprocess import ColorFormat, PrePostProcessor
from torch import nn

from converter.config import EMBED_DIM, INTERFACES
from converter.models.vtn import VTN
from vtn_edge.errors import VtnEdgeError
from vtn_edge.metadata import RT_INFO_KEY, Manifest, Preprocessing

ENCODER_ONNX = "encoder.onnx"
DECODER_ONNX = "decoder.onnx"


class ExportError(VtnEdgeError):
    """A model that cannot be exported with the requested interface."""


class _OmzEncoder(nn.Module):
    """Reference interface: output [1, 512, 1, 1]."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return self.encoder(frame).view(-1, EMBED_DIM, 1, 1)


def export_onnx(model: VTN, out_dir: Path, *, interface: str) -> tuple[Path, Path]:
    """Both halves as ONNX with named inputs/outputs and static shapes (batch 1)."""
    if interface not in INTERFACES:
        raise ExportError(f"unknown interface {interface!r}; choose one of: {', '.join(INTERFACES)}")
    config = model.config
    if interface == "omz" and (config.modality != "rgb" or config.window != 16):
        raise ExportError(
            "--interface omz is the reference RGB interface with a 16-frame window; "
            f"this model is {config.modality} with window {config.window}: use --interface native"
        )
    size = config.preprocessing.input_size
    encoder, decoder = model.eval().split()
    frame = torch.zeros(1, 3, size, size)
    if interface == "omz":
        # ONNX forbids the name "0"; the OpenVINO tensors are renamed after conversion
        enc_module, enc_args, enc_in, enc_out = _OmzEncoder(encoder), (frame,), ["frame"], ["embedding"]
        dec_in = ["embeddings"]
    elif config.uses_difference:
        enc_module, enc_args, enc_in, enc_out = encoder, (frame, frame), ["frame", "previous"], ["embedding"]
        dec_in = ["embeddings"]
    else:
        enc_module, enc_args, enc_in, enc_out = encoder, (frame,), ["frame"], ["embedding"]
        dec_in = ["embeddings"]
    enc_path, dec_path = out_dir / ENCODER_ONNX, out_dir / DECODER_ONNX
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            enc_module,
            enc_args,
            str(enc_path),
            input_names=enc_in,
            output_names=enc_out,
            opset_version=17,
            dynamo=False,
        )
        torch.onnx.export(
            decoder,
            (torch.zeros(1, config.seq_len, EMBED_DIM),),
            str(dec_path),
            input_names=dec_in,
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
        )
    return enc_path, dec_path


def fold_preprocessing(model: ov.Model, pre: Preprocessing, *, native: bool) -> ov.Model:
    """Put colour conversion, scaling and mean/std into the encoder graph; `native` also takes
    uint8 BGR NHWC frames (else float BGR NCHW, the Open Model Zoo interface)."""
    ppp = PrePostProcessor(model)
    model_color = ColorFormat.RGB if pre.color_order == "RGB" else ColorFormat.BGR
    mean = [255.0 * m for m in pre.mean]
    scale = [255.0 * s for s in pre.std]
    for i in range(len(model.inputs)):
        info = ppp.input(i)
        if native:
            info.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
            info.preprocess().convert_element_type(ov.Type.f32)
        else:
            info.tensor().set_element_type(ov.Type.f32).set_layout(ov.Layout("NCHW")).set_color_format(ColorFormat.BGR)
        info.model().set_layout(ov.Layout("NCHW"))
        info.preprocess().convert_color(model_color).mean(mean).scale(scale)
    return ppp.build()


def stamp(model: ov.Model, manifest: Manifest, part: str) -> None:
    """The manifest in rt_info: an IR found without model.json still describes itself."""
    model.set_rt_info(manifest.to_json(), [RT_INFO_KEY, "manifest"])
    model.set_rt_info(part, [RT_INFO_KEY, "part"])


def to_openvino(enc_onnx: Path, dec_onnx: Path, manifest: Manifest) -> tuple[ov.Model, ov.Model]:
    encoder = fold_preprocessing(
        ov.convert_model(str(enc_onnx)), manifest.preprocessing, native=manifest.interface == "native"
    )
    decoder = ov.convert_model(str(dec_onnx))
    if manifest.interface == "omz":
        for model in (encoder, decoder):
            model.input(0).get_tensor().set_names({"0"})
    return encoder, decoder


def save_ir(model: ov.Model, path: Path, manifest: Manifest, part: str) -> None:
    stamp(model, manifest, part)
    ov.save_model(model, str(path), compress_to_fp16=manifest.precision == "fp16")
