"""`vtn_edge bench`: raw inference versus the whole per-frame pipeline, measured in one run."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import openvino as ov

from vtn_edge.model import CompileOptions, VtnModel, compile_pair, encoder_requests
from vtn_edge.recognizer import StreamingRecognizer
from vtn_edge.report import format_table
from vtn_edge.sources import open_source


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
class BenchResult:
    model: str
    streams: int
    frames: int
    stride: int
    encoder: Timing
    decoder: Timing
    encoder_throughput: float  # per second, with as many requests in flight as the recognizer uses
    decoder_throughput: float
    raw_schedule_fps: float  # stride frames per (encoder + decoder) at those throughputs: inference alone
    e2e_fps: float  # decoded frames in memory -> predictions
    e2e_latency_all: Timing
    e2e_latency_encoded: Timing  # frames that ran the encoder
    e2e_ratio: float
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
            _row("  end-to-end / raw", None, f"{100 * self.e2e_ratio:.0f}%"),
        ]
        if self.live_latency_all is not None:
            rows.append(_row("latency at camera rate (1 frame in flight)", self.live_latency_all))
            rows.append(_row("  latency of encoded frames", self.live_latency_encoded))
        if self.video_fps is not None:
            rows.append(_row("end-to-end with video decoding", None, f"{self.video_fps:.0f} frames/s"))
            rows.append(_row("  with decoding / raw", None, f"{100 * self.video_ratio:.0f}%"))
        head = f"{self.model}: {self.frames} frames, settings {self.settings}"
        return head + "\n" + format_table(["stage", "p50 ms", "p99 ms", "throughput"], rows)

    def to_dict(self) -> dict:
        return asdict(self)


def _row(stage: str, timing: Timing | None, throughput: str = "") -> tuple[str, str, str, str]:
    if timing is None:
        return stage, "", "", throughput
    return stage, f"{timing.p50_ms:.2f}", f"{timing.p99_ms:.2f}", throughput


def _time_requests(compiled: ov.CompiledModel, inputs: list[np.ndarray], runs: int) -> Timing:
    request = compiled.create_infer_request()
    for _ in range(10):
        request.infer(inputs, share_inputs=True)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer(inputs, share_inputs=True)
        times.append(time.perf_counter() - t0)
    return Timing.of(times)


def _throughput(compiled: ov.CompiledModel, inputs: list[np.ndarray], requests: int, runs: int) -> float:
    """Inferences per second with `requests` in flight: what the hardware gives, nothing else."""
    jobs = ov.AsyncInferQueue(compiled, requests)
    for _ in range(2 * requests):
        jobs.start_async(inputs, share_inputs=True)
    jobs.wait_all()
    t0 = time.perf_counter()
    for _ in range(runs):
        jobs.start_async(inputs, share_inputs=True)
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


def run_bench(
    model: VtnModel,
    *,
    source: Path | None = None,
    streams: int = 1,
    frames: int = 2000,
    options: CompileOptions | None = None,
    runs: int = 300,
) -> BenchResult:
    options = (options or CompileOptions()).for_streams(streams)
    manifest = model.manifest
    encoder, decoder = compile_pair(model, options)
    enc_inputs = [np.zeros(tuple(i.get_shape()), dtype=i.get_element_type().to_dtype()) for i in encoder.inputs]
    dec_inputs = [np.zeros(tuple(decoder.input(0).get_shape()), np.float32)]
    enc_t = _time_requests(encoder, enc_inputs, runs)
    dec_t = _time_requests(decoder, dec_inputs, runs)
    enc_tp = _throughput(encoder, enc_inputs, encoder_requests(encoder), runs)
    dec_tp = _throughput(decoder, dec_inputs, 1, runs)  # the recognizer runs its decoder on one request
    del encoder, decoder
    stride = manifest.stride
    raw_fps = stride / (1 / enc_tp + 1 / dec_tp)

    pool = _read_frames(source, min(frames, 600)) if source else _synthetic_frames(64)
    with StreamingRecognizer(model, streams=streams, options=options) as rec:
        for i in range(4 * stride * manifest.window):  # warm-up: fill every stream's window
            rec.push(pool[i % len(pool)], stream=i % streams)
        rec.flush()
        predictions = []
        t0 = time.perf_counter()
        for i in range(frames):
            predictions += rec.push(pool[i % len(pool)], stream=i % streams)
        predictions += rec.flush()
        e2e = frames / (time.perf_counter() - t0)
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
    latencies = [p.latency_ms / 1000 for p in predictions]
    encoded = [p.latency_ms / 1000 for p in predictions if p.frame_index % stride == 0]
    return BenchResult(
        model=str(model.path),
        streams=streams,
        frames=frames,
        stride=stride,
        encoder=enc_t,
        decoder=dec_t,
        encoder_throughput=enc_tp,
        decoder_throughput=dec_tp,
        raw_schedule_fps=raw_fps,
        e2e_fps=e2e,
        e2e_latency_all=Timing.of(latencies),
        e2e_latency_encoded=Timing.of(encoded),
        e2e_ratio=e2e / raw_fps,
        live_latency_all=live_all,
        live_latency_encoded=live_encoded,
        video_fps=video_fps,
        video_ratio=None if video_fps is None else video_fps / raw_fps,
        settings={**options.properties(), "device": options.device},
    )
