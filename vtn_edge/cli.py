"""`python -m vtn_edge {run,evaluate,bench}`: the runtime's commands (no torch anywhere)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from vtn_edge.compile_options import add_decode_every_flag
from vtn_edge.errors import VtnEdgeError, run_command
from vtn_edge.monitor.events import add_actions_flag, add_event_flags, rules_from_flags
from vtn_edge.smoothing import add_policy_flags

EDGE_ISA = "AVX2"


def _compile_options(args: argparse.Namespace, streams: int = 1):
    from vtn_edge.compile_options import compile_options_from_flags

    return compile_options_from_flags(args).for_streams(streams)


def _cmd_run(args: argparse.Namespace) -> int:
    import time

    from vtn_edge.recognizer import StreamingRecognizer
    from vtn_edge.smoothing import LabelPolicy

    policy = LabelPolicy(smoothing=args.smoothing, threshold=args.threshold, hold_seconds=args.hold)
    source = int(args.source) if args.source.isdigit() else args.source
    count, started = 0, time.perf_counter()
    with StreamingRecognizer(
        args.model, options=_compile_options(args), policy=policy, labels=args.labels, decode_every=args.decode_every
    ) as rec:
        for p in rec.run(source, loop=args.loop):
            count += 1
            if args.json:
                print(
                    json.dumps(
                        {
                            "frame": p.frame_index,
                            "time": round(p.timestamp, 3),
                            "label": p.label,
                            "score": round(p.score, 4),
                            "window_full": p.window_full,
                            "fresh": p.fresh,
                            "latency_ms": round(p.latency_ms, 2),
                            "top_k": [[n, round(s, 4)] for n, s in p.top_k],
                        }
                    ),
                    flush=False,
                )
            elif p.frame_index % args.every == 0:
                label = p.label if p.window_full else "(filling the window)"
                print(
                    f"frame {p.frame_index:6d}  t={p.timestamp:7.2f}s  {label!s:<28} {p.score:.3f}  "
                    f"{p.latency_ms:6.2f} ms"
                )
            if args.max_frames and count >= args.max_frames:
                break
    seconds = time.perf_counter() - started
    print(
        f"{count} frames in {seconds:.2f} s: {count / max(seconds, 1e-9):.1f} frames/s (decoding included)",
        file=sys.stderr if args.json else sys.stdout,
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.online is not None:
        return _cmd_evaluate_online(args)
    if args.data is None:
        raise VtnEdgeError("evaluate needs --data (trimmed clips) or --online (annotated streams)")
    import numpy as np

    from vtn_edge.datasets import open_dataset
    from vtn_edge.evaluation import report_evaluation
    from vtn_edge.metrics import evaluate_dataset
    from vtn_edge.model import compile_pair, load_model
    from vtn_edge.preprocess import encoder_inputs

    model = load_model(args.model, labels=args.labels)
    manifest = model.manifest
    dataset = open_dataset(args.data, labels_file=args.labels)
    encoder, decoder = compile_pair(model, _compile_options(args))
    enc, dec = encoder.create_infer_request(), decoder.create_infer_request()

    def predict(clip: np.ndarray) -> np.ndarray:
        embeddings = np.stack([enc.infer(list(x))[0].reshape(-1) for x in encoder_inputs(clip, manifest)])
        return dec.infer([embeddings[None]])[0].reshape(-1)

    def progress(items):
        for i, item in enumerate(items):
            if i % 20 == 0:
                print(f"evaluate: {i}/{len(items)} videos", file=sys.stderr, flush=True)
            yield item

    result = evaluate_dataset(
        dataset, predict, manifest.preprocessing, window=manifest.window, stride=manifest.stride, progress=progress
    )
    what = f"{Path(args.model).name} ({manifest.precision} IR) on {args.data}"
    report_evaluation(result, dataset.labels, as_json=args.json, confusion_png=args.confusion_png, what=what)
    return 0


def _cmd_evaluate_online(args: argparse.Namespace) -> int:
    from vtn_edge.model import load_model
    from vtn_edge.online import evaluate_online, load_streams, online_table, watching
    from vtn_edge.recognizer import StreamingRecognizer
    from vtn_edge.smoothing import LabelPolicy, policy_from_flags
    from vtn_edge.timeline import draw_timeline

    model = load_model(args.model, labels=args.labels)
    manifest = model.manifest
    streams, background = watching(load_streams(args.online, manifest.labels), manifest, args.actions)
    policy = policy_from_flags(args.smoothing, args.threshold, args.hold)
    rules = rules_from_flags(args)
    with StreamingRecognizer(
        model, options=_compile_options(args), policy=LabelPolicy(), top_k=len(manifest.labels),
        decode_every=args.decode_every,
    ) as rec:  # fmt: skip
        result, recordings, replays = evaluate_online(
            rec, streams, policy, background, rules, progress=lambda line: print(f"evaluate: {line}", file=sys.stderr)
        )
    if args.timeline_png is not None:
        for recording, replay in zip(recordings, replays):
            title = (
                f"{recording.stream.name}: {args.model.name}, {args.smoothing} smoothing, "
                f"threshold {policy.threshold}, hold {policy.hold_seconds} s, merge gap {rules.merge_gap} s, "
                f"start / end offset {rules.start_offset} / {rules.end_offset} s"
            )
            draw_timeline(
                recording,
                replay,
                background,
                policy.threshold,
                args.timeline_png / f"{recording.stream.name}.png",
                title,
            )
        print(f"timelines: {args.timeline_png}/", file=sys.stderr)
    if args.actions:
        result["actions"] = list(args.actions)
    print(json.dumps(result) if args.json else online_table(result))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from vtn_edge.bench import run_bench
    from vtn_edge.model import load_model

    result = run_bench(
        load_model(args.model),
        source=args.source,
        streams=args.streams,
        frames=args.frames,
        rounds=args.rounds,
        options=_compile_options(args, args.streams),
    )
    if args.edge_profile:
        result = type(result)(**{**result.__dict__, "settings": {**result.settings, "ONEDNN_MAX_CPU_ISA": EDGE_ISA}})
    print(json.dumps(result.to_dict()) if args.json else result.table())
    return 0


def _add_compile_flags(p: argparse.ArgumentParser) -> None:
    from vtn_edge.compile_options import add_compile_flags

    add_compile_flags(p)
    p.add_argument("--labels", type=Path, help="labels file (for Open Model Zoo IR pairs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vtn_edge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="print a label for every frame of a video, camera or stream")
    run.add_argument("model", type=Path, help="model directory (from `converter build`)")
    run.add_argument("source", help="video file, camera index or URL")
    run.add_argument("--json", action="store_true", help="one JSON object per frame")
    run.add_argument("--every", type=int, default=1, help="print every N-th frame (text output)")
    run.add_argument("--loop", action="store_true", help="loop a video file")
    run.add_argument("--max-frames", type=int)
    run.add_argument("--smoothing", choices=("mean", "ema"))
    run.add_argument("--threshold", type=float, default=0.0, help="below this score the label is None")
    run.add_argument("--hold", type=float, default=0.0, help="seconds a new label must lead before it shows")
    _add_compile_flags(run)
    add_decode_every_flag(run)
    run.set_defaults(func=_cmd_run)

    evaluate = sub.add_parser("evaluate", help="clip@1, Video@1, top-5, mean class accuracy of an IR model")
    evaluate.add_argument("model", type=Path)
    what = evaluate.add_mutually_exclusive_group(required=True)
    what.add_argument("--data", type=Path, help="trimmed labelled clips: clip@1, Video@1, top-5")
    what.add_argument(
        "--online", type=Path, metavar="DIR",
        help="annotated streams (annotations.json): the monitor's events against the annotation",
    )  # fmt: skip
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--confusion-png", type=Path)
    evaluate.add_argument("--timeline-png", type=Path, metavar="OUT_DIR", help="with --online: a picture per stream")
    policy_flags = evaluate.add_argument_group("label policy and event rules (with --online; defaults: the monitor's)")
    add_policy_flags(policy_flags)
    add_event_flags(policy_flags)
    add_actions_flag(policy_flags)
    _add_compile_flags(evaluate)
    add_decode_every_flag(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate)

    bench = sub.add_parser("bench", help="raw inference vs end-to-end per-frame throughput and latency")
    bench.add_argument("model", type=Path)
    bench.add_argument("--source", type=Path, help="a video (its decoding is measured too)")
    bench.add_argument("--streams", type=int, default=1)
    bench.add_argument("--frames", type=int, default=2000, help="frames per end-to-end round (default 2000)")
    bench.add_argument(
        "--rounds", type=int, default=3,
        help="rounds of raw inference then end to end, back to back; the ratio is their median (default 3)",
    )  # fmt: skip
    bench.add_argument("--json", action="store_true")
    bench.add_argument(
        "--edge-profile",
        action="store_true",
        help=f"a low-power CPU: one inference thread, instruction set capped at {EDGE_ISA}",
    )
    _add_compile_flags(bench)
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "edge_profile", False):
        # must be set before OpenVINO's CPU plugin (oneDNN) first loads, i.e. before any compile
        os.environ["ONEDNN_MAX_CPU_ISA"] = EDGE_ISA
        args.threads = args.threads or 1
    return run_command(args.func, args)
