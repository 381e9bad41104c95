"""`converter build`: a checkpoint in, a complete model directory out, or nothing at all.

Steps: load -> export ONNX -> convert to OpenVINO (preprocessing folded in) -> quantise or
compress -> verify against torch on held-out clips -> write atomically.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import openvino as ov
import torch

import converter
from converter.calibration import clips_from_path, labelled_clips, synthetic_clips
from converter.checkpoints import load_any, read_config, sha256_file
from converter.config import INTERFACES, PRECISIONS, VTNConfig
from converter.export import export_onnx, save_ir, to_openvino
from converter.models.vtn import VTN, build_vtn
from converter.progress import progress
from converter.quantize import quantize, quantize_with_accuracy_control
from converter.verify import (
    F32,
    Reference,
    Verification,
    check_tolerance,
    inference_copy,
    ir_embeddings,
    runtime_precision_hint,
    torch_reference,
    verify,
)
from vtn_edge.compile_options import CompileOptions
from vtn_edge.errors import VtnEdgeError
from vtn_edge.metadata import DECODER_XML, ENCODER_XML, LABELS_NAME, MANIFEST_NAME, Manifest, read_labels
from vtn_edge.preprocess import encoder_inputs
from vtn_edge.report import format_table

REPO_ROOT = Path(__file__).resolve().parents[1]
# The project's shipped default models (see ir_models/README.md), used when no --checkpoint is given.
DEFAULT_CHECKPOINTS = {"mobilenetv2": REPO_ROOT / "ir_models" / "default" / "mobilenetv2-vtn-synth.safetensors"}

log = logging.getLogger(__name__)


class BuildError(VtnEdgeError):
    """A build that cannot start, or whose IR disagrees with torch."""


@dataclass(frozen=True)
class BuildOptions:
    arch: str
    modality: str = "rgb"
    checkpoint: Path | None = None
    checkpoint_format: str = "ours"
    labels: Path | None = None
    precision: str = "int8"
    calibration: Path | None = None
    validation: Path | None = None
    interface: str = "native"
    out: Path | None = None
    force: bool = False
    seed: int = 0
    calibration_clips: int = 48
    verify_clips: int = 60
    max_accuracy_drop: float | None = None  # NNCF accuracy control on the labelled --validation data

    def check(self) -> None:
        """Options that cannot build, refused before anything loads."""
        if self.precision not in PRECISIONS:
            raise BuildError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.interface not in INTERFACES:
            raise BuildError(f"unknown interface {self.interface!r}; choose one of: {', '.join(INTERFACES)}")
        if self.max_accuracy_drop is None:
            return
        if self.precision != "int8":
            raise BuildError(f"--max-accuracy-drop applies to --precision int8, not {self.precision}")
        if self.validation is None:
            raise BuildError(
                "--max-accuracy-drop needs --validation DATA: labelled held-out videos to measure the drop"
            )
        if not 0 < self.max_accuracy_drop < 1:
            raise BuildError(
                f"--max-accuracy-drop is a fraction of accuracy in (0, 1), e.g. 0.01; got {self.max_accuracy_drop}"
            )

    def output_dir(self) -> Path:
        if self.out is not None:
            return self.out
        suffix = "-omz" if self.interface == "omz" else ""
        return Path("ir_models") / f"{self.arch}-{self.modality}-{self.precision}{suffix}"


class _Steps:
    """Logs each step as it starts; `summary()` gives every step's seconds for the final line."""

    NAMES = ("load", "export", "convert", "calibrate", "verify", "write")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.starts: list[float] = []

    def __call__(self, text: str) -> None:
        self.starts.append(time.perf_counter())
        log.info("[%d/%d] %s", len(self.starts), len(self.NAMES), text)

    def seconds(self) -> dict[str, float]:
        ends = self.starts[1:] + [time.perf_counter()]
        return {name: round(e - s, 1) for name, s, e in zip(self.NAMES, self.starts, ends)}

    def summary(self) -> str:
        total = time.perf_counter() - self.started
        return f"{total:.1f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds().items()) + ")"


def load_model(opts: BuildOptions) -> tuple[VTN, bool, str | None]:
    """(model, trained?, checkpoint sha256)."""
    labels = read_labels(opts.labels) if opts.labels else None
    base = VTNConfig(arch=opts.arch, modality=opts.modality)
    checkpoint, fmt = opts.checkpoint, opts.checkpoint_format
    shipped = DEFAULT_CHECKPOINTS.get(opts.arch) if opts.modality == "rgb" else None  # the default is RGB
    if checkpoint is None and shipped is not None and shipped.is_file():
        checkpoint, fmt = DEFAULT_CHECKPOINTS[opts.arch], "ours"
        log.info("      using the shipped default model %s", checkpoint)
    if checkpoint is None:
        log.warning(
            "      no --checkpoint and no shipped default for this arch: building an UNTRAINED "
            "model with random weights. Its labels mean nothing; model.json records trained=false."
        )
        config = base.with_classes(labels) if labels else base
        torch.manual_seed(opts.seed)
        return build_vtn(config).eval(), False, None
    if fmt == "ours":
        stored = read_config(checkpoint)
        if stored.arch != opts.arch:
            raise BuildError(f"{checkpoint} is a {stored.arch} VTN, but --arch {opts.arch} was given")
        if labels is not None and len(labels) != stored.num_classes:
            raise BuildError(
                f"{opts.labels} has {len(labels)} labels but {checkpoint} has {stored.num_classes} classes"
            )
    model = load_any(checkpoint, fmt=fmt, config=base, labels=labels)
    if model.config.modality == "two_stream":
        raise BuildError("two-stream models have two encoders; build each stream (rgb, rgbdiff) separately")
    if model.config.modality != opts.modality and opts.checkpoint_format == "ours":
        log.info("      note: the checkpoint is %s; --modality %s is ignored", model.config.modality, opts.modality)
    return model, True, sha256_file(checkpoint)


def build(opts: BuildOptions) -> Path:
    """Run a build; returns the finished model directory."""
    opts.check()
    out = opts.output_dir()
    if out.exists() and not opts.force:
        raise BuildError(f"{out} already exists; pass --force to replace it or --out to choose another directory")
    step = _Steps()
    step(f"loading the {opts.arch} {opts.modality} model")
    model, trained, sha = load_model(opts)
    manifest = _manifest(opts, model.config, trained, sha)
    # clips need nothing from the IR, nor do torch's answers on the held-out ones: rendered and
    # computed beside export and quantisation (which leave a core partly idle), the answers from a
    # copy of the model the exporter never sees
    calibration = _Background(_calibration_clips, opts, manifest) if opts.precision == "int8" else None
    reference = _Background(_reference, opts, inference_copy(model), manifest)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    work.chmod(0o755)
    try:
        step("exporting encoder and decoder to ONNX")
        enc_onnx, dec_onnx = export_onnx(model, work, interface=opts.interface)
        step("converting to OpenVINO IR with preprocessing in the graph")
        encoder, decoder = to_openvino(enc_onnx, dec_onnx, manifest)
        encoder, decoder, accuracy = _calibrate(opts, step, encoder, decoder, manifest, calibration)
        step("verifying the IR against torch on held-out clips")
        results = _verify_or_refuse(encoder, decoder, reference.result(), manifest, trained and accuracy is None)
        step(f"writing {out}")
        verification = {
            **_as_dict(results[0]),
            "default_execution": _as_dict(results[-1]),
            "matmul_as_conv": CompileOptions().matmuls_as_convolutions(),  # as verify() compiled it here
            "build_seconds": round(time.perf_counter() - step.started, 1),
            "step_seconds": step.seconds(),
        }
        if accuracy is not None:
            verification["accuracy_control"] = accuracy
        manifest = replace(manifest, verification=verification, precision_hint=runtime_precision_hint(results))
        save_ir(encoder, work / ENCODER_XML, manifest, "encoder")
        save_ir(decoder, work / DECODER_XML, manifest, "decoder")
        (work / LABELS_NAME).write_text("\n".join(manifest.labels) + "\n")
        (work / MANIFEST_NAME).write_text(manifest.to_json() + "\n")  # written last: marks completeness
        _replace_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("done in %s: %s%s", step.summary(), out, "" if trained else "  (UNTRAINED)")
    return out


def _manifest(opts: BuildOptions, config: VTNConfig, trained: bool, sha: str | None) -> Manifest:
    return Manifest(
        arch=config.arch,
        modality=config.modality,
        interface=opts.interface,
        precision=opts.precision,
        labels=config.labels,
        window=config.window,
        stride=config.stride,
        preprocessing=config.preprocessing,
        trained=trained,
        checkpoint_sha256=sha,
        versions={"converter": converter.__version__, "openvino": ov.__version__, "torch": torch.__version__},
    )


def _calibration_clips(opts: BuildOptions, manifest: Manifest) -> list[np.ndarray]:
    """From --calibration, else rendered from the synthetic benchmark."""
    pre, window, stride = manifest.preprocessing, manifest.window, manifest.stride
    if opts.calibration is not None:
        return clips_from_path(
            opts.calibration, pre, window=window, stride=stride, max_clips=opts.calibration_clips, min_clips=4
        )
    return synthetic_clips(opts.calibration_clips, pre, window=window, stride=stride, seed=opts.seed + 1)


def _calibrate(
    opts: BuildOptions,
    step: _Steps,
    encoder: ov.Model,
    decoder: ov.Model,
    manifest: Manifest,
    calibration: _Background | None,
) -> tuple[ov.Model, ov.Model, dict | None]:
    """INT8: the quantised pair (with accuracy control: and what it measured); float: as it is."""
    if calibration is None:
        step(f"{opts.precision}: no calibration needed")
        return encoder, decoder, None
    step("calibrating and quantising")
    if opts.calibration is None:
        log.info("      no --calibration given: using the synthetic benchmark's clips")
    calib = calibration.result()
    pre, window, stride = manifest.preprocessing, manifest.window, manifest.stride
    if opts.max_accuracy_drop is None:
        return (*_quantize_pair(encoder, decoder, calib, manifest), None)
    val_clips, val_labels = labelled_clips(
        opts.validation, list(manifest.labels), pre, window=window, stride=stride, max_clips=opts.verify_clips
    )
    encoder, decoder, accuracy = _quantize_pair_controlled(
        encoder, decoder, calib, manifest, val_clips, val_labels, opts.max_accuracy_drop
    )
    return encoder, decoder, {**accuracy, "data": str(opts.validation)}


class _Background:
    """`fn(*args)` in a daemon thread (Ctrl-C does not wait for it); `result()` waits and re-raises
    what it raised."""

    def __init__(self, fn: Callable, *args: object) -> None:
        self._value: object = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), name="converter-background", daemon=True)
        self._thread.start()

    def _run(self, fn: Callable, args: tuple) -> None:
        try:
            self._value = fn(*args)
        except BaseException as error:  # handed to the caller of result()
            self._error = error

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _reference(opts: BuildOptions, model: VTN, manifest: Manifest) -> Reference:
    """Torch on the held-out clips: from --validation, else rendered from a seed calibration never uses."""
    pre, window, stride = manifest.preprocessing, manifest.window, manifest.stride
    if opts.validation is not None:
        held_out = clips_from_path(
            opts.validation, pre, window=window, stride=stride, max_clips=opts.verify_clips, min_clips=1
        )
    else:
        held_out = synthetic_clips(opts.verify_clips, pre, window=window, stride=stride, seed=opts.seed + 7919)
    return torch_reference(model, held_out)


def _verify_or_refuse(
    encoder: ov.Model, decoder: ov.Model, reference: Reference, manifest: Manifest, judge_top1: bool
) -> list[Verification]:
    """The IR against torch on held-out clips (see `verify`); a BuildError with the table when its f32
    execution disagrees. With accuracy control, labelled top-1 is the contract (already checked):
    flips that cancel out there must not fail the build on top-1 agreement."""
    results = verify(encoder, decoder, reference, manifest)
    table = format_table(Verification.HEADERS, [result.row() for result in results])
    log.info("%s", table)
    problems = check_tolerance(results[0], judge_top1=judge_top1)
    if problems:
        why = "; ".join(problems)
        raise BuildError(f"the IR disagrees with torch beyond tolerance ({why}); no model was written:\n{table}")
    if runtime_precision_hint(results) is not None:
        log.warning(
            "      %s execution agrees with torch less often than f32: model.json tells the runtime to run f32",
            results[-1].execution,
        )
    return results


def _as_dict(result: Verification) -> dict:
    return {k: getattr(result, k) for k in result.__dataclass_fields__}


def _calibration_samples(
    float_encoder: ov.CompiledModel, calib: list[np.ndarray], manifest: Manifest
) -> tuple[list[list[np.ndarray]], list[np.ndarray]]:
    """Encoder inputs (at most 800 frames) and decoder inputs (the float encoder's windows)."""
    frames = [list(inputs) for clip in calib for inputs in encoder_inputs(clip, manifest)]
    frames = frames[:: max(1, len(frames) // 800)][:800]
    windows = [
        ir_embeddings(float_encoder, clip, manifest)[None]
        for clip in progress(calib, desc="embedding windows", unit="clip", leave=False)
    ]
    return frames, windows


def _quantize_pair(
    encoder: ov.Model, decoder: ov.Model, calib: list[np.ndarray], manifest: Manifest
) -> tuple[ov.Model, ov.Model]:
    float_encoder = ov.Core().compile_model(encoder, "CPU", F32)
    frames, windows = _calibration_samples(float_encoder, calib, manifest)
    log.info("      quantising the encoder on %d frames from %d clips", len(frames), len(calib))
    q_encoder = quantize(encoder, frames)
    log.info("      quantising the decoder on %d embedding windows (transformer model type)", len(windows))
    q_decoder = quantize(decoder, windows, transformer=True)
    return q_encoder, q_decoder


def _quantize_pair_controlled(
    encoder: ov.Model,
    decoder: ov.Model,
    calib: list[np.ndarray],
    manifest: Manifest,
    val_clips: list[np.ndarray],
    val_labels: list[int],
    max_drop: float,
) -> tuple[ov.Model, ov.Model, dict]:
    """NNCF accuracy control, decoder first (on float-encoder windows, half the budget), then the
    encoder (what the decoder did not use), each judged by clip top-1 on the labelled clips."""
    core = ov.Core()
    float_encoder = core.compile_model(encoder, "CPU", F32)
    frames, windows = _calibration_samples(float_encoder, calib, manifest)
    val_windows = [(ir_embeddings(float_encoder, clip, manifest)[None], y) for clip, y in zip(val_clips, val_labels)]

    def decoder_accuracy(compiled: ov.CompiledModel, items) -> tuple[float, list[float]]:
        request = compiled.create_infer_request()
        hits = [float(np.argmax(request.infer([w])[0]) == y) for w, y in items]
        return float(np.mean(hits)), hits

    float_accuracy = decoder_accuracy(core.compile_model(decoder, "CPU", F32), val_windows)[0]
    log.info(
        "      accuracy control: float top-1 %.1f%% on %d labelled clips; allowed drop %.1f points",
        100 * float_accuracy, len(val_clips), 100 * max_drop,
    )  # fmt: skip
    q_decoder = quantize_with_accuracy_control(
        decoder, windows, val_windows, decoder_accuracy, max_drop=max_drop / 2, transformer=True
    )
    q_decoder_compiled = core.compile_model(q_decoder, "CPU", F32)
    spent = max(0.0, float_accuracy - decoder_accuracy(q_decoder_compiled, val_windows)[0])

    def pipeline_accuracy(compiled: ov.CompiledModel, items) -> tuple[float, list[float]]:
        request = q_decoder_compiled.create_infer_request()
        hits = [
            float(np.argmax(request.infer([ir_embeddings(compiled, clip, manifest)[None]])[0]) == y)
            for clip, y in items
        ]
        return float(np.mean(hits)), hits

    val_items = list(zip(val_clips, val_labels))
    q_encoder = quantize_with_accuracy_control(
        encoder, frames, val_items, pipeline_accuracy, max_drop=max(max_drop - spent, 1e-6)
    )
    int8_accuracy = pipeline_accuracy(core.compile_model(q_encoder, "CPU", F32), val_items)[0]
    drop = float_accuracy - int8_accuracy
    log.info("      accuracy control: INT8 top-1 %.1f%% (%+.1f points against float)", 100 * int8_accuracy, -100 * drop)
    if drop > max_drop + 1e-9:
        raise BuildError(
            f"INT8 loses {100 * drop:.1f} points of top-1 on the validation data (float {100 * float_accuracy:.1f}%, "
            f"INT8 {100 * int8_accuracy:.1f}%), more than --max-accuracy-drop {max_drop}; no model was written"
        )
    return (
        q_encoder,
        q_decoder,
        {
            "clips": len(val_clips),
            "max_drop": max_drop,
            "float_top1": float_accuracy,
            "int8_top1": int8_accuracy,
        },
    )


def _replace_dir(work: Path, out: Path) -> None:
    """Rename the finished build into place; an old directory (with --force) is removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{int(time.time())}")
        out.rename(old)
    work.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
