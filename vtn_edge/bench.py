"""`vtn_edge bench`: raw inference versus the whole per-frame pipeline, measured in one run."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import openvino as ov

from vtn_edge.errors import VtnEdgeError
from vtn_edge.model import CompileOptions, VtnModel, compile_pair, encoder_requests, set_shared_inputs
from vtn_edge.recognizer import StreamingRecognizer
from vtn_edge.report import format_table
from vtn_edge.sources import open_source
from vtn_edge.types import Prediction


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p99_ms: float
    per_second: float

    @classmethod
    def of(cls, seconds: list[float]) -> Timing:
        a = np.asarray(seconds) * 1000
        return cls(float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(1000 / a.mean()))


@dataclass(frozen=True)
class Round:
    """Inference alone and the whole pipeline, measured back to back: on a shared, noisy machine only
    figures taken close together compare."""

    encoder_throughput: float  # per second, with as many requests in flight as the recognizer uses
    decoder_throughput: float
    raw_schedule_fps: float  # stride frames per (encoder + decoder) at those throughputs: inference alone
    e2e_fps: float  # decoded frames in memory -> predictions

    @property
    def ratio(self) -> float:
        return self.e2e_fps / self.raw_schedule_fps


@dataclass(frozen=True)
class BenchResult:
    model: str
    streams: int
    frames: int
    stride: int
    encoder: Timing
    decoder: Timing
    rounds: tuple[Round, ...]
    encoder_throughput: float  # the rounds' medians
    decoder_throughput: float
    raw_schedule_fps: float
    e2e_fps: float
    e2e_ratio: float  # median of the rounds' own ratios
    e2e_ratio_range: tuple[float, float]
    e2e_latency_all: Timing
    e2e_latency_encoded: Timing  # frames that ran the encoder
    live_latency_all: Timing | None  # one frame in flight, as at camera rate (1 stream only)
    live_latency_encoded: Timing | None
    video_fps: float | None  # with video decoding (from --source)
    video_ratio: float | None
    settings: dict

    def table(self) -> str:
        rows = [
            _row("encoder (1 frame)", self.encoder, f"{self.encoder.per_second:.0f}/s"),
            _row("decoder (1 window)", self.decoder, f"{self.decoder.per_second:.0f}/s"),
            _row("encoder, requests in flight", None, f"{self.encoder_throughput:.0f}/s"),
            _row("decoder, requests in flight", None, f"{self.decoder_throughput:.0f}/s"),
            _row(f"raw schedule (stride {self.stride})", None, f"{self.raw_schedule_fps:.0f} frames/s"),
            _row(
                f"end-to-end, decoded frames, {self.streams} stream(s)",
                self.e2e_latency_all,
                f"{self.e2e_fps:.0f} frames/s",
            ),
            _row("  latency of encoded frames", self.e2e_latency_encoded),
            _row(f"  end-to-end / raw, median of {len(self.rounds)} rounds", None, self._ratio_text()),
        ]
        if self.live_latency_all is not None:
            rows.append(_row("latency at camera rate (1 frame in flight)", self.live_latency_all))
            rows.append(_row("  latency of encoded frames", self.live_latency_encoded))
        if self.video_fps is not None:
            rows.append(_row("end-to-end with video decoding", None, f"{self.video_fps:.0f} frames/s"))
            rows.append(_row("  with decoding / raw", None, f"{100 * self.video_ratio:.0f}%"))
        head = f"{self.model}: {self.frames} frames, settings {self.settings}"
        return head + "\n" + format_table(["stage", "p50 ms", "p99 ms", "throughput"], rows)

    def _ratio_text(self) -> str:
        low, high = self.e2e_ratio_range
        return f"{100 * self.e2e_ratio:.0f}% ({100 * low:.0f}-{100 * high:.0f}%)"

    def to_dict(self) -> dict:
        return {**asdict(self), "rounds": [{**asdict(r), "ratio": r.ratio} for r in self.rounds]}


def _row(stage: str, timing: Timing | None, throughput: str = "") -> tuple[str, str, str, str]:
    if timing is None:
        return stage, "", "", throughput
    return stage, f"{timing.p50_ms:.2f}", f"{timing.p99_ms:.2f}", throughput


def _time_requests(compiled: ov.CompiledModel, inputs: list[np.ndarray], runs: int) -> Timing:
    request = compiled.create_infer_request()
    set_shared_inputs(request, inputs)  # once: what is timed is inference, not handing inputs over
    for _ in range(10):
        request.infer()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer()
        times.append(time.perf_counter() - t0)
    return Timing.of(times)


def _throughput(compiled: ov.CompiledModel, inputs: list[np.ndarray], requests: int, runs: int) -> float:
    """Inferences per second with `requests` in flight: what the hardware gives, nothing else."""
    jobs = ov.AsyncInferQueue(compiled, requests)
    for i in range(requests):
        set_shared_inputs(jobs[i], inputs)
    for _ in range(2 * requests):
        jobs.start_async()
    jobs.wait_all()
    t0 = time.perf_counter()
    for _ in range(runs):
        jobs.start_async()
    jobs.wait_all()
    return runs / (time.perf_counter() - t0)


def _synthetic_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    return [np.roll(base, i, axis=1) for i in range(count)]


def _read_frames(source: Path, count: int) -> list[np.ndarray]:
    frames = []
    with open_source(source, loop=True) as src:
        for _, frame, _ in src.frames():
            frames.append(frame)
            if len(frames) >= count:
                break
    return frames


def _zero_inputs(compiled: ov.CompiledModel) -> list[np.ndarray]:
    return [np.zeros(tuple(i.get_shape()), i.get_element_type().to_dtype()) for i in compiled.inputs]


def _raw_throughputs(
    encoder: ov.CompiledModel,
    decoder: ov.CompiledModel,
    enc_inputs: list[np.ndarray],
    dec_inputs: list[np.ndarray],
    runs: int,
) -> tuple[float, float]:
    """Encoder and decoder inferences per second with the recognizer's requests in flight."""
    enc_tp = _throughput(encoder, enc_inputs, encoder_requests(encoder), runs)
    dec_tp = _throughput(decoder, dec_inputs, 1, runs)  # the recognizer runs its decoder on one request
    return enc_tp, dec_tp


def _e2e_round(
    rec: StreamingRecognizer, pool: list[np.ndarray], frames: int, streams: int
) -> tuple[float, list[Prediction]]:
    predictions: list[Prediction] = []
    t0 = time.perf_counter()
    for i in range(frames):
        predictions += rec.push(pool[i % len(pool)], stream=i % streams)
    predictions += rec.flush()
    return frames / (time.perf_counter() - t0), predictions


def _median(values: list[float]) -> float:
    return float(np.median(values))


def run_bench(
    model: VtnModel,
    *,
    source: Path | None = None,
    streams: int = 1,
    frames: int = 2000,
    options: CompileOptions | None = None,
    runs: int = 300,
    rounds: int = 3,
) -> BenchResult:
    """Single-request timings, then `rounds` rounds of (raw schedule, end to end on `frames` frames)
    back to back, so that each round's ratio compares figures taken under the same machine load."""
    if rounds < 1 or frames < 1 or streams < 1:
        raise VtnEdgeError(f"bench needs at least 1 round, 1 frame and 1 stream; got {rounds}, {frames}, {streams}")
    options = (options or CompileOptions()).for_streams(streams)
    stride = model.manifest.stride
    encoder, decoder = compile_pair(model, options)
    enc_inputs, dec_inputs = _zero_inputs(encoder), _zero_inputs(decoder)
    enc_t = _time_requests(encoder, enc_inputs, runs)
    dec_t = _time_requests(decoder, dec_inputs, runs)

    pool = _read_frames(source, min(frames, 600)) if source else _synthetic_frames(64)
    measured, predictions = [], []
    with StreamingRecognizer(model, streams=streams, options=options) as rec:
        for i in range(4 * stride * model.manifest.window):  # warm-up: fill every stream's window
            rec.push(pool[i % len(pool)], stream=i % streams)
        rec.flush()
        for _ in range(rounds):
            enc_tp, dec_tp = _raw_throughputs(encoder, decoder, enc_inputs, dec_inputs, runs)
            fps, round_predictions = _e2e_round(rec, pool, frames, streams)
            schedule = stride / (1 / enc_tp + 1 / dec_tp)  # stride frames per encoder pass + decoder pass
            measured.append(
                Round(encoder_throughput=enc_tp, decoder_throughput=dec_tp, raw_schedule_fps=schedule, e2e_fps=fps)
            )
            predictions += round_predictions
        live_all = live_encoded = None
        if streams == 1:  # a camera delivers a frame every ~33 ms: nothing queues behind it
            live = [rec.push(pool[i % len(pool)], wait=True)[-1] for i in range(min(frames, 600))]
            live_all = Timing.of([p.latency_ms / 1000 for p in live])
            live_encoded = Timing.of([p.latency_ms / 1000 for p in live if p.frame_index % stride == 0])
        video_fps = None
        if source is not None and streams == 1:
            t0 = time.perf_counter()
            count = sum(1 for _ in rec.run(source))
            video_fps = count / (time.perf_counter() - t0)
    raw_fps = _median([r.raw_schedule_fps for r in measured])
    ratios = [r.ratio for r in measured]
    return BenchResult(
        model=str(model.path),
        streams=streams,
        frames=frames,
        stride=stride,
        encoder=enc_t,
        decoder=dec_t,
        rounds=tuple(measured),
        encoder_throughput=_median([r.encoder_throughput for r in measured]),
        decoder_throughput=_median([r.decoder_throughput for r in measured]),
        raw_schedule_fps=raw_fps,
        e2e_fps=_median([r.e2e_fps for r in measured]),
        e2e_ratio=_median(ratios),
        e2e_ratio_range=(min(ratios), max(ratios)),
        e2e_latency_all=Timing.of([p.latency_ms / 1000 for p in predictions]),
        e2e_latency_encoded=Timing.of([p.latency_ms / 1000 for p in predictions if p.frame_index % stride == 0]),
        live_latency_all=live_all,
        live_latency_encoded=live_encoded,
        video_fps=video_fps,
        video_ratio=None if video_fps is None else video_fps / raw_fps,
        settings={
            **options.properties(),
            "device": options.device,
            "matmul_as_conv": options.matmuls_as_convolutions(),
        },
    )
