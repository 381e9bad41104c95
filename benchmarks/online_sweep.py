"""Sweep the monitor's label policy (threshold x hold x smoothing) and event rules on annotated streams.

The model runs once per stream; every policy is replayed over the recorded probabilities with the
runtime's own stabiliser and the monitor's own event tracker (`vtn_edge.online`). First every label
policy with plain events (no merge gap, no offsets); then, for the best few of them, every
combination of event rules (merge gap x end offset x start offset); and the monitor's defaults
wherever they rank. Prints the precision / recall / delay table and draws the trade-off as a PNG.

    python benchmarks/online_sweep.py ir_models/mobilenetv2-rgb-int8 data/streams-val --png sweep.png

`--actions open,close` sweeps for a camera that watches only those actions (as the monitor's flag).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import astuple
from pathlib import Path

from vtn_edge.errors import VtnEdgeError
from vtn_edge.model import load_model
from vtn_edge.monitor.events import MONITOR_EVENT_RULES, EventRules, add_actions_flag
from vtn_edge.online import load_streams, record, replay, score, watching
from vtn_edge.recognizer import StreamingRecognizer
from vtn_edge.report import format_table
from vtn_edge.smoothing import MONITOR_POLICY, LabelPolicy, policy_from_flags

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
HOLDS = (0.0, 0.1, 0.2, 0.3, 0.5)
SMOOTHINGS = ("none", "ema", "mean")
MERGE_GAPS = (0.0, 0.5, 1.0, 1.5)
END_OFFSETS = (0.0, 0.2, 0.3, 0.4)
START_OFFSETS = (0.0, 0.3, 0.5, 0.7)
POLICY_FORM = "SMOOTHING,THRESHOLD,HOLD[,MERGE_GAP,END_OFFSET[,START_OFFSET]]"
RULES_FOR_BEST = 5  # label policies that get the event-rule grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("streams", type=Path, help="a folder with annotations.json (a validation seed, not a test one)")
    parser.add_argument("--png", type=Path, help="the trade-off picture")
    parser.add_argument("--json", type=Path, help="every policy's metrics")
    parser.add_argument(
        "--policy", action="append", type=_policy, metavar=POLICY_FORM,
        help="replay only these (repeatable), e.g. to compare two on a held-out seed: "
        "mean,0.5,0.5 none,0.9,0.2,1,0.2,0.7",
    )  # fmt: skip
    add_actions_flag(parser)  # a camera that watches only these: the others leave the truth and raise nothing
    args = parser.parse_args(argv)

    try:
        model = load_model(args.model)
        streams, background = watching(load_streams(args.streams, model.manifest.labels), model.manifest, args.actions)
    except VtnEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with StreamingRecognizer(model, policy=LabelPolicy(), top_k=len(model.manifest.labels)) as rec:
        recordings = []
        for i, s in enumerate(streams):
            print(f"recording {i + 1}/{len(streams)}: {s.name}", file=sys.stderr, flush=True)
            recordings.append(record(rec, s))

    def run(grid) -> list[dict]:
        results = []
        for smoothing, threshold, hold, gap, end, start in grid:
            policy, rules = policy_from_flags(smoothing, threshold, hold), EventRules(gap, end, start)
            metrics = score([(r.stream, replay(r, policy, background, rules)) for r in recordings])
            metrics.pop("per_class")
            results.append({"smoothing": smoothing, "threshold": threshold, "hold": hold, "merge_gap": gap,
                            "end_offset": end, "start_offset": start, **metrics})  # fmt: skip
        return sorted(results, key=lambda r: -(r["event_f1"] or 0))

    if args.policy:
        results = run(args.policy)
    else:
        results = run((*p, 0.0, 0.0, 0.0) for p in itertools.product(SMOOTHINGS, THRESHOLDS, HOLDS))
        best = [(r["smoothing"], r["threshold"], r["hold"]) for r in results[:RULES_FOR_BEST]]
        grid = list(itertools.product(MERGE_GAPS, END_OFFSETS, START_OFFSETS))
        rules = [(*p, *e) for p in best for e in grid if e != (0.0, 0.0, 0.0)]
        results = results + run(rules)
        if not any(_is_default(r) for r in results):  # always show where the monitor's default stands
            results += run([_default_grid_point()])
        results = sorted(results, key=lambda r: -(r["event_f1"] or 0))
    rows = [
        (r["smoothing"], r["threshold"], r["hold"], r["merge_gap"], r["end_offset"], r["start_offset"],
         _pct(r["event_precision"]),
         _pct(r["event_recall"]),
         _pct(r["event_f1"]), _pct(r["event_f1_iou50"]), _s(r["delay_p50_s"]), _s(r["delay_p90_s"]),
         _s(r["false_per_hour"]), _pct(r["frame_acc"]), _s(r["flicker_per_min"]))
        for r in results
    ]  # fmt: skip
    hours = results[0]["hours"]
    print(f"{len(streams)} streams, {hours:.2f} h, {results[0]['events']} events; best event F1 first")
    print(
        format_table(
            [
                "smoothing",
                "threshold",
                "hold s",
                "merge gap s",
                "end offset s",
                "start offset s",
                "precision",
                "recall",
                "F1",
                "F1@0.5",
                "delay p50",
                "delay p90",
                "false/h",
                "frame acc",
                "flicker/min",
            ],
            rows,
        )  # fmt: skip
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.png:
        _plot(results, args.png, f"{args.model.name} on {args.streams.name}: {len(streams)} streams, {hours:.2f} h")
    return 0


def _policy(text: str) -> tuple[str, float, float, float, float, float]:
    try:
        smoothing, *numbers = text.split(",")
        if len(numbers) not in (2, 4, 5):
            raise ValueError(f"{len(numbers)} numbers")
        threshold, hold, gap, end, start = (*map(float, numbers), 0.0, 0.0, 0.0)[:5]
        policy_from_flags(smoothing, threshold, hold), EventRules(gap, end, start)  # checks the values
        return smoothing, threshold, hold, gap, end, start
    except (ValueError, VtnEdgeError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {POLICY_FORM} like mean,0.5,0.5 ({exc})") from None


def _default_grid_point() -> tuple[str, float, float, float, float, float]:
    policy, rules = MONITOR_POLICY, MONITOR_EVENT_RULES
    return (policy.smoothing or "none", policy.threshold, policy.hold_seconds, *astuple(rules))


def _is_default(r: dict) -> bool:
    policy = policy_from_flags(r["smoothing"], r["threshold"], r["hold"])
    rules = EventRules(r["merge_gap"], r["end_offset"], r["start_offset"])
    return policy == MONITOR_POLICY and rules == MONITOR_EVENT_RULES


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    markers = {"none": "o", "ema": "s", "mean": "^"}
    for smoothing, marker in markers.items():
        rs = [r for r in results if r["smoothing"] == smoothing and r["event_precision"] is not None]
        kw = dict(marker=marker, label=f"smoothing {smoothing}", cmap="viridis", vmin=0, vmax=1.5, edgecolors="k")
        sc = ax1.scatter([r["event_recall"] for r in rs], [r["event_precision"] for r in rs],
                         c=[r["delay_p50_s"] or 0 for r in rs], **kw)  # fmt: skip
        ax2.scatter([r["delay_p50_s"] or 0 for r in rs], [r["event_f1"] for r in rs],
                    c=[r["delay_p50_s"] or 0 for r in rs], **kw)  # fmt: skip
    default = [r for r in results if _is_default(r) and r["event_precision"] is not None]
    for r in default:
        ax1.scatter(r["event_recall"], r["event_precision"], marker="*", s=300, c="red", label="the monitor's default")
        ax2.scatter(r["delay_p50_s"] or 0, r["event_f1"], marker="*", s=300, c="red")
    fig.colorbar(sc, ax=ax2, label="start delay p50 (s)")
    ax1.set_xlabel("event recall (IoU 0.3)"), ax1.set_ylabel("event precision"), ax1.legend()
    ax2.set_xlabel("start delay p50 (s)"), ax2.set_ylabel("event F1 (IoU 0.3)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(f"Label policies (threshold x hold x smoothing) and event rules: {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
