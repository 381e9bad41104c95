"""How many 30 fps cameras one box labels without dropping frames.

Each "camera" is a video file played at its own frame rate by the monitor's live reader (decoded
on its own thread, newest frame kept), so this measures the whole monitor: decoding, dropping to
stay live, preprocessing, the shared encoder/decoder in throughput mode and event tracking.
A box that drops no frame can still fall behind (labels later and later): the latency columns
(push to label; the cameras' median p50 and their worst p99) show it.

    python benchmarks/realtime_streams.py --streams 8 12 16 --seconds 30
"""

from __future__ import annotations

import argparse
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vtn_edge.compile_options import MATMUL_AS_CONV_CHOICES, CompileOptions, add_decode_every_flag
from vtn_edge.live import LiveOptions
from vtn_edge.monitor.app import Monitor, MonitorConfig
from vtn_edge.report import format_table

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    """One monitor run with `streams` cameras."""

    streams: int
    labelled_fps: float
    read: int
    dropped: int
    latency_p50_ms: float  # the cameras' median p50, push to label
    latency_p99_ms: float  # the worst camera's p99

    HEADERS = ("streams", "labelled frames/s", "frames read", "dropped", "dropped share", "latency p50 ms", "p99 ms")

    def cells(self) -> tuple:
        share = 100 * self.dropped / max(self.read, 1)
        return (self.streams, f"{self.labelled_fps:.0f}", self.read, self.dropped, f"{share:.2f}%",
                f"{self.latency_p50_ms:.0f}", f"{self.latency_p99_ms:.0f}")  # fmt: skip


def run(model: Path, clip: Path, streams: int, seconds: float, options: CompileOptions, decode_every: int = 1) -> Row:
    config = MonitorConfig(
        model=model,
        compile_options=options,
        sources=[str(clip)] * streams,
        live=LiveOptions(loop=True, pace=True),
        decode_every=decode_every,
        duration_s=seconds,
        status_every_s=0,
    )
    monitor = Monitor(config)
    summary = monitor.run(threading.Event())
    latencies = [s.latency_ms for s in summary.sources if s.latency_ms is not None]
    return Row(
        streams=streams,
        labelled_fps=sum(s.frames for s in summary.sources) / summary.seconds,
        read=sum(st.source.stats.frames_read for st in monitor.cameras),
        dropped=sum(s.dropped for s in summary.sources),
        latency_p50_ms=float(np.median([p50 for p50, _ in latencies])) if latencies else float("nan"),
        latency_p99_ms=max((p99 for _, p99 in latencies), default=float("nan")),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "ir_models" / "mobilenetv2-rgb-int8")
    parser.add_argument("--clip", type=Path, default=ROOT.parent / "shared/data/videos/flipping_pancake.mkv")
    parser.add_argument("--streams", type=int, nargs="+", default=[8, 12, 16])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--precision-hint", help="e.g. bf16 or f32 (default: what the model's model.json asks for)")
    parser.add_argument("--matmul-as-conv", choices=MATMUL_AS_CONV_CHOICES, default="auto")
    add_decode_every_flag(parser)
    args = parser.parse_args()
    options = CompileOptions(precision_hint=args.precision_hint, matmul_as_conv=args.matmul_as_conv)
    rows = []
    for n in args.streams:
        print(f"{n} streams for {args.seconds:.0f} s ...", flush=True)
        rows.append(run(args.model, args.clip, n, args.seconds, options, args.decode_every).cells())
    print(format_table(list(Row.HEADERS), rows))


if __name__ == "__main__":
    main()
