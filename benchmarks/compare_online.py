"""Compare two models' event F1 on the same annotated streams, with a paired 95% interval.

Takes the JSON that `vtn_edge evaluate MODEL --online DIR --json` prints, for model A and model B
on the same stream folders (one file per folder, in the same order for both). Pools the streams of
all folders, and prints each model's event F1 with its interval and A minus B with a paired
interval: a bootstrap over streams that draws the same streams for both models, so the scene-to-
scene spread that both share cancels (`vtn_edge.online.f1_interval`); then one line that says
what the paired interval shows: one model better, or no difference.

    python -m vtn_edge evaluate ir_models/mobilenetv2-rgb-int8 --online data/streams-105 --json > int8-105.json
    python -m vtn_edge evaluate ir_models/mobilenetv2-rgb-fp16 --online data/streams-105 --json > fp16-105.json
    python benchmarks/compare_online.py --a int8-105.json int8-106.json --b fp16-105.json fp16-106.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vtn_edge.errors import DataError, VtnEdgeError
from vtn_edge.online import StreamCounts, f1_interval, fmt_interval, pooled_f1
from vtn_edge.report import format_table

WHAT = "the output of `vtn_edge evaluate MODEL --online DIR --json` (this version or later)"


def load_counts(paths: list[Path]) -> list[StreamCounts]:
    """The per-stream counts of several `evaluate --online --json` results, each stream named
    by its file's position and its own name (streams of different folders share names)."""
    counts = []
    for k, path in enumerate(paths):
        try:
            result = json.loads(path.read_text())
            streams = result["per_stream"]
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read it as JSON ({e}); expected {WHAT}") from None
        except (KeyError, TypeError):
            raise DataError(f"{path}: no 'per_stream' counts; expected {WHAT}") from None
        counts += [StreamCounts(f"{k}/{s['name']}", s["events"], s["predicted"], s["matched"]) for s in streams]
    return counts


def check_same_truth(a: list[StreamCounts], b: list[StreamCounts]) -> None:
    """Both runs scored against the same annotated actions, stream by stream (not, say, one of them
    with `evaluate --actions`, which leaves the other actions out of the truth)."""
    for sa, sb in zip(a, b):
        if sa.events != sb.events:
            raise DataError(
                f"stream {sa.name}: A was scored against {sa.events} annotated actions, B against {sb.events}: "
                "compare runs on the same folders with the same --actions"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, nargs="+", required=True, metavar="JSON", help="model A, one file per folder")
    parser.add_argument("--b", type=Path, nargs="+", required=True, metavar="JSON", help="model B, the same folders")
    parser.add_argument("--names", nargs=2, default=("A", "B"), metavar=("A", "B"), help="what to call them")
    args = parser.parse_args(argv)
    try:
        if len(args.a) != len(args.b):
            raise DataError(f"{len(args.a)} files for A but {len(args.b)} for B: give one per stream folder for each")
        a, b = load_counts(args.a), load_counts(args.b)
        difference = f1_interval(a, baseline=b)
        check_same_truth(a, b)
    except VtnEdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name_a, name_b = args.names
    f1_a, f1_b = pooled_f1(a), pooled_f1(b)
    if f1_a is None or f1_b is None:
        print("error: no events and no predictions in these streams: nothing to compare", file=sys.stderr)
        return 2
    rows = [
        (name, len(c), sum(s.events for s in c), sum(s.predicted for s in c), sum(s.matched for s in c),
         f"{100 * f1:.1f}{fmt_interval(f1_interval(c))}")
        for name, c, f1 in ((name_a, a, f1_a), (name_b, b, f1_b))
    ]  # fmt: skip
    paired = f"{100 * (f1_a - f1_b):+.1f}{fmt_interval(difference)}"
    rows.append((f"{name_a} - {name_b} (paired)", "", "", "", "", paired))
    print(format_table(["model", "streams", "events", "predicted", "matched", "event F1 % (95% CI)"], rows))
    print(verdict(name_a, name_b, difference))
    return 0


def verdict(name_a: str, name_b: str, difference: tuple[float, float] | None) -> str:
    """What the paired interval of F1(A) - F1(B) says, in one line."""
    if difference is None:
        return "One stream only: no interval, so no verdict; compare on more streams."
    low, high = difference
    if low > 0:
        return f"{name_a} is better than {name_b} on these streams: the paired interval is above zero."
    if high < 0:
        return f"{name_b} is better than {name_a} on these streams: the paired interval is below zero."
    return (
        "No difference shown: the paired interval includes zero, so these streams give no reason to prefer "
        "either model (halving the interval takes about four times the streams)."
    )


if __name__ == "__main__":
    sys.exit(main())
