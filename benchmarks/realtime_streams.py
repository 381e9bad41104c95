"""How many 30 fps cameras one box labels without dropping frames.

Each "camera" is a video file played at its own frame rate by the monitor's live reader (decoded
on its own thread, newest frame kept), so this measures the whole monitor: decoding, dropping to
stay live, preprocessing, the shared encoder/decoder in throughput mode and event tracking.

    python benchmarks/realtime_streams.py --streams 8 12 16 --seconds 30
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from vtn_edge.compile_options import CompileOptions, add_decode_every_flag
from vtn_edge.live import LiveOptions
from vtn_edge.monitor.app import Monitor, MonitorConfig
from vtn_edge.report import format_table

ROOT = Path(__file__).resolve().parents[1]


def run(
    model: Path, clip: Path, streams: int, seconds: float, precision_hint: str | None = None, decode_every: int = 1
) -> tuple[int, float, int, int, float]:
    config = MonitorConfig(
        model=model,
        compile_options=CompileOptions(precision_hint=precision_hint),
        sources=[str(clip)] * streams,
        live=LiveOptions(loop=True, pace=True),
        decode_every=decode_every,
        duration_s=seconds,
        status_every_s=0,
    )
    monitor = Monitor(config)
    summary = monitor.run(threading.Event())
    read = sum(st.source.stats.frames_read for st in monitor.cameras)
    labelled = sum(s.frames for s in summary.sources)
    dropped = sum(s.dropped for s in summary.sources)
    return streams, labelled / summary.seconds, read, dropped, 100 * dropped / max(read, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "ir_models" / "mobilenetv2-rgb-int8")
    parser.add_argument("--clip", type=Path, default=ROOT.parent / "shared/data/videos/flipping_pancake.mkv")
    parser.add_argument("--streams", type=int, nargs="+", default=[8, 12, 16])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--precision-hint", help="e.g. bf16 or f32 (default: what the model's model.json asks for)")
    add_decode_every_flag(parser)
    args = parser.parse_args()
    rows = []
    for n in args.streams:
        print(f"{n} streams for {args.seconds:.0f} s ...", flush=True)
        streams, fps, read, dropped, share = run(
            args.model, args.clip, n, args.seconds, args.precision_hint, args.decode_every
        )
        rows.append((streams, f"{fps:.0f}", read, dropped, f"{share:.2f}%"))
    print(format_table(["streams", "labelled frames/s", "frames read", "dropped", "dropped share"], rows))


if __name__ == "__main__":
    main()
