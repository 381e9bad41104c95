"""Finding, checking and compiling an encoder/decoder IR pair.

Accepted: a `converter build` directory (model.json, or the manifest in the IRs' rt_info), or an
Open Model Zoo VTN pair (`*encoder*.xml` + `*decoder*.xml` with the reference interface) plus a
labels file, whose window and input size are read off the IRs themselves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import openvino as ov

from vtn_edge.compile_options import CompileOptions
from vtn_edge.errors import ModelError
from vtn_edge.graph_rewrite import for_compile
from vtn_edge.metadata import (
    DECODER_XML,
    ENCODER_XML,
    LABELS_NAME,
    MANIFEST_NAME,
    RT_INFO_KEY,
    Manifest,
    Preprocessing,
    read_labels,
)


@dataclass(frozen=True)
class VtnModel:
    manifest: Manifest
    encoder: ov.Model
    decoder: ov.Model
    path: Path


def _read(core: ov.Core, path: Path) -> ov.Model:
    if not path.is_file():
        raise ModelError(f"missing IR file {path}")
    bin_path = path.with_suffix(".bin")
    if not bin_path.is_file():
        raise ModelError(f"missing weights file {bin_path} for {path}")
    try:
        return core.read_model(str(path))
    except RuntimeError as exc:
        raise ModelError(
            f"{path} is not a readable OpenVINO IR (corrupt or truncated?): {str(exc).strip().splitlines()[-1][:200]}"
        ) from None


def _rt_manifest(model: ov.Model) -> Manifest | None:
    if not model.has_rt_info([RT_INFO_KEY, "manifest"]):
        return None
    return Manifest.from_dict(json.loads(model.get_rt_info([RT_INFO_KEY, "manifest"]).astype(str)))


def _find_pair(directory: Path) -> tuple[Path, Path]:
    if (directory / ENCODER_XML).is_file() or (directory / DECODER_XML).is_file():
        return directory / ENCODER_XML, directory / DECODER_XML
    encoders = sorted(directory.glob("*encoder*.xml"))
    decoders = sorted(directory.glob("*decoder*.xml"))
    if len(encoders) != 1 or len(decoders) != 1:
        raise ModelError(
            f"{directory} is not a model directory: expected {ENCODER_XML} and {DECODER_XML} "
            f"(from `converter build`) or one *encoder*.xml and one *decoder*.xml; found "
            f"{[p.name for p in encoders + decoders] or 'none'}"
        )
    return encoders[0], decoders[0]


def _omz_manifest(encoder: ov.Model, decoder: ov.Model, labels: tuple[str, ...], path: Path) -> Manifest:
    enc_shape = encoder.input(0).get_partial_shape()
    dec_shape = decoder.input(0).get_partial_shape()
    if enc_shape.rank.get_length() != 4 or dec_shape.rank.get_length() != 3 or not dec_shape.is_static:
        raise ModelError(
            f"{path}: not the reference VTN interface (encoder [1,3,H,W], decoder [1,T,512]); "
            f"got encoder {enc_shape}, decoder {dec_shape}"
        )
    size = enc_shape[2].get_length()
    return Manifest(
        arch="unknown",
        modality="rgb",
        interface="omz",
        precision="unknown",
        labels=labels,
        window=dec_shape[1].get_length(),
        stride=2,
        embed_dim=dec_shape[2].get_length(),
        preprocessing=Preprocessing(input_size=size, resize_short=size),
    )


def _labels_beside(directory: Path) -> tuple[str, ...] | None:
    for name in (LABELS_NAME, "labels.json"):
        if (directory / name).is_file():
            return read_labels(directory / name)
    return None


def load_model(path: str | Path, *, labels: str | Path | None = None, core: ov.Core | None = None) -> VtnModel:
    directory = Path(path)
    if not directory.is_dir():
        raise ModelError(f"model directory {directory} does not exist (build one with `python -m converter build`)")
    core = core or ov.Core()
    enc_path, dec_path = _find_pair(directory)
    encoder, decoder = _read(core, enc_path), _read(core, dec_path)
    label_list = read_labels(labels) if labels else None
    if (directory / MANIFEST_NAME).is_file():
        manifest = Manifest.load(directory / MANIFEST_NAME)
    else:
        manifest = _rt_manifest(encoder) or _rt_manifest(decoder)
        if manifest is None:
            label_list = label_list or _labels_beside(directory)
            if label_list is None:
                raise ModelError(
                    f"{directory}: an IR pair without a manifest needs a labels file "
                    f"({LABELS_NAME} beside it, or labels=...)"
                )
            manifest = _omz_manifest(encoder, decoder, label_list, directory)
    if label_list is not None and label_list != manifest.labels:
        manifest = replace(manifest, labels=label_list)
    check_pair(encoder, decoder, manifest, directory)
    return VtnModel(manifest, encoder, decoder, directory)


def check_pair(encoder: ov.Model, decoder: ov.Model, manifest: Manifest, where: Path) -> None:
    """Refuse pairs that cannot work together, naming both numbers."""
    emb = encoder.output(0).get_partial_shape()
    emb_size = 1
    for d in emb:
        emb_size *= d.get_length()
    dec_in = decoder.input(0).get_partial_shape()
    classes = decoder.output(0).get_partial_shape()[-1].get_length()
    if emb_size != dec_in[2].get_length():
        raise ModelError(f"{where}: encoder gives {emb_size}-d embeddings but the decoder takes {dec_in[2]}-d")
    if dec_in[1].get_length() != manifest.seq_len:
        raise ModelError(
            f"{where}: decoder window is {dec_in[1]} embeddings but the manifest says "
            f"{manifest.seq_len} ({manifest.modality}, window {manifest.window})"
        )
    if classes != manifest.num_classes:
        raise ModelError(f"{where}: decoder has {classes} classes but there are {manifest.num_classes} labels")


def compile_pair(
    model: VtnModel, options: CompileOptions, core: ov.Core | None = None
) -> tuple[ov.CompiledModel, ov.CompiledModel]:
    core = core or ov.Core()
    if options.cache_dir:
        core.set_property({"CACHE_DIR": options.cache_dir})
    props = options.with_model_hint(model.manifest.precision_hint).properties()
    try:
        return (
            core.compile_model(for_compile(model.encoder, options), options.device, props),
            core.compile_model(for_compile(model.decoder, options), options.device, props),
        )
    except RuntimeError as exc:
        raise ModelError(
            f"OpenVINO cannot compile {model.path} for {options.device} with {props}: "
            f"{str(exc).strip().splitlines()[-1][:200]}"
        ) from None


def set_shared_inputs(request: ov.InferRequest, arrays: Sequence[np.ndarray]) -> None:
    """Put C-contiguous arrays on a request's inputs as shared tensors: no copy, and none of the
    ~45 us of Python that OpenVINO's generic input dispatch (`infer(inputs)`) costs per call."""
    for i, array in enumerate(arrays):
        request.set_input_tensor(i, ov.Tensor(array, shared_memory=True))


def encoder_requests(encoder: ov.CompiledModel) -> int:
    """Encoder requests in flight: OpenVINO's optimum, and at least 2 so preprocessing overlaps inference."""
    return max(2, encoder.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
