"""`python -m converter {info,build,train,evaluate,dataset}`: the torch side's commands.

Heavy imports live inside each command so `--help` is instant.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from converter.config import ARCHS, MODALITIES
from vtn_edge.errors import VtnEdgeError


def _cmd_info(args: argparse.Namespace) -> int:
    from converter.complexity import complexity
    from converter.config import VTNConfig
    from converter.models.vtn import build_vtn
    from vtn_edge.report import format_table

    config = VTNConfig(arch=args.arch, modality=args.modality, num_classes=args.num_classes,
                       layer_norm=args.layer_norm)
    rows = complexity(build_vtn(config))
    print(f"{args.arch} VTN, modality {args.modality}, {args.num_classes} classes, "
          f"input {config.preprocessing.input_size}px, window {config.window}")
    print(format_table(["part", "params (M)", "GMAC"],
                       [(r.part, f"{r.params_m:.2f}", f"{r.gmac:.3f}") for r in rows]))
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from converter.build import BuildOptions, build

    build(BuildOptions(
        arch=args.arch, modality=args.modality, checkpoint=args.checkpoint,
        checkpoint_format=args.checkpoint_format, labels=args.labels, precision=args.precision,
        calibration=args.calibration, validation=args.validation, interface=args.interface, out=args.out,
        force=args.force, seed=args.seed,
    ))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m converter", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="parameters and GMAC of encoder and decoder")
    info.add_argument("--arch", required=True, choices=ARCHS)
    info.add_argument("--modality", default="rgb", choices=MODALITIES)
    info.add_argument("--num-classes", type=int, default=400)
    info.add_argument("--layer-norm", action="store_true", help="the original post-residual norm")
    info.set_defaults(func=_cmd_info)

    build = sub.add_parser("build", help="checkpoint -> encoder/decoder OpenVINO IR (INT8 by default)")
    build.add_argument("--arch", required=True, choices=ARCHS)
    build.add_argument("--modality", default="rgb", choices=("rgb", "rgbdiff", "stacked"))
    build.add_argument("--checkpoint", type=Path, help="weights; default: the shipped model for --arch, if any")
    build.add_argument("--checkpoint-format", default="ours", choices=("ours", "original"))
    build.add_argument("--labels", type=Path, help="class names, one a line")
    build.add_argument("--precision", default="int8", choices=("int8", "fp16", "fp32"))
    build.add_argument("--calibration", type=Path,
                       help="videos for INT8 calibration: a folder, list file or JSON (default: synthetic clips)")
    build.add_argument("--validation", type=Path, help="held-out videos for verification (default: synthetic)")
    build.add_argument("--interface", default="native", choices=("native", "omz"),
                       help="native: uint8 BGR NHWC frames in; omz: the Open Model Zoo reference interface")
    build.add_argument("--out", type=Path, help="default: ir_models/<arch>-<modality>-<precision>")
    build.add_argument("--force", action="store_true", help="replace an existing output directory")
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(func=_cmd_build)
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)  # clean up like Ctrl-C: no half-written output
    try:
        return args.func(args)
    except VtnEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
