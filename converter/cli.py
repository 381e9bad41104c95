"""`python -m converter {info,build,train,evaluate,dataset}`: the torch side's commands.

Heavy imports live inside each command so `--help` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except VtnEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
