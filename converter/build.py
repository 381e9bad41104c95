"""`converter build`: a checkpoint in, a complete model directory out, or nothing at all.

Steps: load -> export ONNX -> convert to OpenVINO (preprocessing folded in) -> quantise or
compress -> verify against torch on held-out clips -> write atomically.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
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
from vtn_edge.errors import VtnEdgeError
from vtn_edge.metadata import DECODER_XML, ENCODER_XML, LABELS_NAME, MANIFEST_NAME, Manifest, read_labels
from vtn_edge.preprocess import encoder_inputs, normalize
from vtn_edge.report import format_table

F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # the IR's own numbers, not bf16 execution
REPO_ROOT = Path(__file__).resolve().parents[1]
# The project's shipped default models (see ir_models/README.md), used when no --checkpoint is given.
DEFAULT_CHECKPOINTS = {"mobilenetv2": REPO_ROOT / "ir_models" / "default" / "mobilenetv2-vtn-synth.safetensors"}
# Verification tolerances per precision: (minimum embedding cosine, which statistic, minimum top-1
# agreement). INT8 is judged on the mean cosine: a few frames of a depthwise-convolution encoder
# always lose more, and top-1 agreement is what users see.
TOLERANCES = {"fp32": (0.9999, "min", 1.0), "fp16": (0.999, "min", 0.97), "int8": (0.97, "mean", 0.95)}
# Top-1 agreement counts only clips whose torch top-1 leads the runner-up by this many logits: a
# flip between two classes that torch itself barely separates is rounding, not a broken IR (the
# tiny test model's INT8 IR flipped 3 of 40 such clips on an AVX-512 VNNI CPU, its logits within
# 0.27 of torch's, while it passed on an AMX one).
TIE_MARGIN = 0.5

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


@dataclass(frozen=True)
class Verification:
    precision: str
    execution: str  # the precision OpenVINO executed the float parts in (f32, bf16)
    clips: int
    embedding_cosine_min: float
    embedding_cosine_mean: float
    logit_max_abs_diff: float
    top1_agreement: float  # over the clips torch decides by at least TIE_MARGIN
    decisive_clips: int
    encoder_ms: float
    decoder_ms: float

    def row(self) -> tuple:
        return (
            f"{self.precision} @ {self.execution}",
            self.clips,
            f"{self.embedding_cosine_min:.5f}",
            f"{self.embedding_cosine_mean:.5f}",
            f"{self.logit_max_abs_diff:.4g}",
            f"{100 * self.top1_agreement:.1f}% of {self.decisive_clips}",
            f"{self.encoder_ms:.2f}",
            f"{self.decoder_ms:.2f}",
        )

    HEADERS = (
        "IR @ execution",
        "clips",
        "cos min",
        "cos mean",
        "logit max|diff|",
        "top-1 agree (decisive clips)",
        "encoder ms",
        "decoder ms",
    )


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


def torch_reference(model: VTN, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame embeddings [N, T', 512] and logits [N, classes] of torch on uint8 BGR clips."""
    pre = model.config.preprocessing
    # channels-last convolution weights: the same numbers (within 1e-5) about 1.5x faster on CPU,
    # the largest part of the verification step; the model is handed back in its own layout
    model.to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            x = torch.from_numpy(normalize(np.stack(clips), pre))
            embeddings = torch.cat([model.embed(x[i : i + 8]) for i in range(0, len(x), 8)])
            logits = model.split()[1](embeddings)
    finally:
        model.to(memory_format=torch.contiguous_format)
    return embeddings.numpy(), logits.numpy()


def ir_embeddings(compiled: ov.CompiledModel, clip: np.ndarray, manifest: Manifest) -> np.ndarray:
    request = compiled.create_infer_request()
    out = [request.infer(list(inputs))[0].reshape(-1).copy() for inputs in encoder_inputs(clip, manifest)]
    return np.stack(out)


def _latency_ms(core: ov.Core, model: ov.Model, props: dict[str, str], inputs: list, runs: int = 40) -> float:
    """Median milliseconds of one request, batch 1, in the given execution precision."""
    request = core.compile_model(model, "CPU", {**props, "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
    for _ in range(5):
        request.infer(inputs)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer(inputs)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def verify(
    encoder: ov.Model, decoder: ov.Model, model: VTN, clips: list[np.ndarray], manifest: Manifest
) -> list[Verification]:
    """The IR against torch, executed in f32 (its own numbers) and, where the CPU plugin's default
    differs (bf16 on CPUs that have it), in the precision the runtime gets without a hint."""
    core = ov.Core()
    ref_emb, ref_logits = torch_reference(model, clips)
    results: list[Verification] = []
    for props in (F32, {}):
        enc = core.compile_model(encoder, "CPU", props)
        execution = enc.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if results and execution == results[0].execution:
            break  # the default is f32 on this CPU: the first row already says it
        dec = core.compile_model(decoder, "CPU", props)
        result = _compare(enc, dec, clips, ref_emb, ref_logits, manifest, execution)
        results.append(
            replace(
                result,
                encoder_ms=_latency_ms(core, encoder, props, list(encoder_inputs(clips[0], manifest)[0])),
                decoder_ms=_latency_ms(core, decoder, props, [ref_emb[0][None]]),
            )
        )
    return results


def _compare(
    enc: ov.CompiledModel,
    dec: ov.CompiledModel,
    clips: list[np.ndarray],
    ref_emb: np.ndarray,
    ref_logits: np.ndarray,
    manifest: Manifest,
    execution: str,
) -> Verification:
    """Embeddings, logits on torch's embeddings, and top-1 end to end, clip by clip."""
    cosines, diffs, agree = [], [], []
    dec_request = dec.create_infer_request()
    for i, clip in enumerate(progress(clips, desc=f"verify ({execution})", unit="clip", leave=False)):
        emb = ir_embeddings(enc, clip, manifest)
        ref = ref_emb[i]
        cosines += list((emb * ref).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12))
        logits_on_ref = dec_request.infer([ref[None]])[0][0]
        diffs.append(float(np.abs(logits_on_ref - ref_logits[i]).max()))
        ranked = np.sort(ref_logits[i])  # a one-class model (an imported encoder alone) has no runner-up
        if len(ranked) > 1 and ranked[-1] - ranked[-2] >= TIE_MARGIN:
            logits = dec_request.infer([emb[None]])[0][0]
            agree.append(int(np.argmax(logits) == np.argmax(ref_logits[i])))
    return Verification(
        precision=manifest.precision,
        execution=execution,
        clips=len(clips),
        embedding_cosine_min=float(np.min(cosines)),
        embedding_cosine_mean=float(np.mean(cosines)),
        logit_max_abs_diff=float(np.max(diffs)),
        top1_agreement=float(np.mean(agree)) if agree else 1.0,
        decisive_clips=len(agree),
        encoder_ms=float("nan"),
        decoder_ms=float("nan"),
    )


def runtime_precision_hint(results: list[Verification]) -> str | None:
    """What model.json tells the runtime to execute in: f32 when the CPU's default precision agreed
    with torch less often than f32 did on the same clips (no accuracy lost silently), else nothing."""
    f32, default = results[0], results[-1]
    if default is not f32 and default.top1_agreement < f32.top1_agreement:
        return "f32"
    return None


def check_tolerance(result: Verification, judge_top1: bool) -> list[str]:
    min_cos, statistic, min_agree = TOLERANCES[result.precision]
    cosine = result.embedding_cosine_min if statistic == "min" else result.embedding_cosine_mean
    problems = []
    if cosine < min_cos:
        problems.append(f"{statistic} embedding cosine {cosine:.5f} < {min_cos}")
    # an untrained model's logits are near ties, so only a trained model's top-1 is meaningful
    if judge_top1 and result.top1_agreement < min_agree:
        problems.append(f"top-1 agreement {100 * result.top1_agreement:.1f}% < {100 * min_agree:.0f}%")
    return problems


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
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    work.chmod(0o755)
    try:
        step("exporting encoder and decoder to ONNX")
        enc_onnx, dec_onnx = export_onnx(model, work, interface=opts.interface)
        model.eval()  # the exporter restores each module's own mode; keep dropout off for verification
        step("converting to OpenVINO IR with preprocessing in the graph")
        encoder, decoder = to_openvino(enc_onnx, dec_onnx, manifest)
        encoder, decoder, accuracy = _calibrate(opts, step, encoder, decoder, manifest)
        step("verifying the IR against torch on held-out clips")
        results = _verify_or_refuse(opts, encoder, decoder, model, manifest, judge_top1=trained and accuracy is None)
        step(f"writing {out}")
        verification = {
            **_as_dict(results[0]),
            "default_execution": _as_dict(results[-1]),
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


def _calibrate(
    opts: BuildOptions, step: _Steps, encoder: ov.Model, decoder: ov.Model, manifest: Manifest
) -> tuple[ov.Model, ov.Model, dict | None]:
    """INT8: the quantised pair (with accuracy control: and what it measured); float: as it is."""
    if opts.precision != "int8":
        step(f"{opts.precision}: no calibration needed")
        return encoder, decoder, None
    step("calibrating and quantising")
    pre, window, stride = manifest.preprocessing, manifest.window, manifest.stride
    if opts.calibration is not None:
        calib = clips_from_path(
            opts.calibration, pre, window=window, stride=stride, max_clips=opts.calibration_clips, min_clips=4
        )
    else:
        log.info("      no --calibration given: using the synthetic benchmark's clips")
        calib = synthetic_clips(opts.calibration_clips, pre, window=window, stride=stride, seed=opts.seed + 1)
    if opts.max_accuracy_drop is None:
        return (*_quantize_pair(encoder, decoder, calib, manifest), None)
    val_clips, val_labels = labelled_clips(
        opts.validation, list(manifest.labels), pre, window=window, stride=stride, max_clips=opts.verify_clips
    )
    encoder, decoder, accuracy = _quantize_pair_controlled(
        encoder, decoder, calib, manifest, val_clips, val_labels, opts.max_accuracy_drop
    )
    return encoder, decoder, {**accuracy, "data": str(opts.validation)}


def _verify_or_refuse(
    opts: BuildOptions, encoder: ov.Model, decoder: ov.Model, model: VTN, manifest: Manifest, *, judge_top1: bool
) -> list[Verification]:
    """The IR against torch on held-out clips (see `verify`); a BuildError with the table when its f32
    execution disagrees. With
    accuracy control, labelled top-1 is the contract (already checked): flips that cancel out
    there must not fail the build on top-1 agreement."""
    pre, window, stride = manifest.preprocessing, manifest.window, manifest.stride
    if opts.validation is not None:
        held_out = clips_from_path(
            opts.validation, pre, window=window, stride=stride, max_clips=opts.verify_clips, min_clips=1
        )
    else:
        held_out = synthetic_clips(opts.verify_clips, pre, window=window, stride=stride, seed=opts.seed + 7919)
    results = verify(encoder, decoder, model, held_out, manifest)
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
