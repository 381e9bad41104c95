"""`python -m converter {info,build,train,import,evaluate,dataset}`: the torch side's commands.

Heavy imports live inside each command so `--help` is instant.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from converter.config import ARCHS, BUILD_MODALITIES, FORMATS, INTERFACES, MODALITIES, PRECISIONS, ConfigError
from vtn_edge.errors import VtnEdgeError, run_command


def _cmd_info(args: argparse.Namespace) -> int:
    from converter.complexity import complexity
    from converter.config import VTNConfig
    from converter.models.vtn import build_vtn
    from vtn_edge.report import format_table

    config = VTNConfig(arch=args.arch, modality=args.modality, num_classes=args.num_classes, layer_norm=args.layer_norm)
    rows = complexity(build_vtn(config))
    print(
        f"{args.arch} VTN, modality {args.modality}, {args.num_classes} classes, "
        f"input {config.preprocessing.input_size}px, window {config.window}"
    )
    print(format_table(["part", "params (M)", "GMAC"], [(r.part, f"{r.params_m:.2f}", f"{r.gmac:.3f}") for r in rows]))
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from converter.build import BuildOptions, build

    if args.precision == "int8":
        import nncf  # noqa: F401 - importing it sets its logger to INFO; what shows is decided here

        # NNCF logs every ignored node at INFO through its own handler: details for --verbose
        logging.getLogger("nncf").setLevel(logging.INFO if args.verbose else logging.WARNING)
    build(
        BuildOptions(
            arch=args.arch,
            modality=args.modality,
            checkpoint=args.checkpoint,
            checkpoint_format=args.checkpoint_format,
            labels=args.labels,
            precision=args.precision,
            calibration=args.calibration,
            validation=args.validation,
            max_accuracy_drop=args.max_accuracy_drop,
            interface=args.interface,
            out=args.out,
            force=args.force,
            verify_clips=args.verify_clips,
            seed=args.seed,
        )
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import json

    from converter.options import TrainOptions
    from converter.train import train

    if args.resume:
        options = Path(args.resume) / "options.json"
        if not options.is_file() or not (Path(args.resume) / "state.pt").is_file():
            raise VtnEdgeError(f"--resume {args.resume}: no options.json and state.pt there (not a run directory?)")
        stored = json.loads(options.read_text())
        if args.epochs is not None:
            stored["epochs"] = args.epochs
        train(TrainOptions.from_dict(stored), resume=True)
        return 0
    train(TrainOptions.from_flags(args))  # checks itself: bad options stop here, before torch loads a thing
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from converter.ir_import import check_import, import_vtn, write_import

    if args.out.suffix != ".safetensors":
        raise VtnEdgeError(f"--out {args.out}: a checkpoint is written as .safetensors")
    result = import_vtn(args.encoder, args.decoder, labels=args.labels, arch=args.arch)
    config = result.model.config
    activation = "ReLU6" if config.relu6 else "ReLU"
    projection = "before" if config.project_before_pool else "after"
    print(
        f"encoder {args.encoder}: {config.arch}, {activation}"
        + (f", projection to 512 {projection} pooling" if config.arch == "mobilenetv2" else "")
        + f", input {config.preprocessing.input_size}px"
    )
    if result.decoder_trained:
        print(f"decoder {args.decoder}: window {config.window}, {config.num_classes} classes")
    else:
        print("decoder: none given; it starts untrained (train it with `converter train --freeze-encoder`)")
    check = check_import(result, args.encoder, args.decoder)
    logits = "" if check.logits_max_diff is None else f", logits {check.logits_max_diff:.1e}"
    summary = f"embeddings max |diff| {check.embedding_max_diff:.1e} (largest {check.embedding_scale:.2f}){logits}"
    if not check.ok:
        raise VtnEdgeError(f"the imported model does not reproduce the IR ({summary}); nothing written")
    print(f"checked against the IR's float arithmetic on {check.frames} frames: {summary}")
    print(f"wrote {write_import(result, args.out)}")
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    from converter.average import average_checkpoints

    result = average_checkpoints(args.checkpoints, args.out, half=args.half, force=args.force)
    print(
        f"wrote {result.path}: the mean of {result.runs} runs' weights "
        f"(furthest run {result.max_distance:.3f} of the weights' size from the first)"
    )
    return 0


def _add_average_parser(sub: argparse._SubParsersAction) -> None:
    average = sub.add_parser(
        "average", help="checkpoints fine-tuned from one start -> the mean of their weights (a model soup)"
    )
    average.add_argument("checkpoints", type=Path, nargs="+", help="our .safetensors checkpoints, one model")
    average.add_argument("--out", type=Path, required=True, help="the checkpoint to write (.safetensors)")
    average.add_argument("--half", action="store_true", help="store float16 weights (half the file)")
    average.add_argument("--force", action="store_true", help="replace an existing --out")
    average.set_defaults(func=_cmd_average)


def _add_import_parser(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser(
        "import", help="an Open Model Zoo VTN IR (or an --interface omz build) -> a checkpoint to fine-tune"
    )
    imp.add_argument("--encoder", type=Path, required=True, help="encoder .xml (its .bin beside it)")
    imp.add_argument("--decoder", type=Path, help="decoder .xml; without it the decoder starts untrained")
    imp.add_argument("--labels", type=Path, help="class names, one per line (default: labels.txt beside the IR)")
    imp.add_argument("--arch", choices=ARCHS, help="insist on this encoder architecture (default: recognised)")
    imp.add_argument("--out", type=Path, required=True, help="the checkpoint to write (.safetensors)")
    imp.set_defaults(func=_cmd_import)


def _cmd_evaluate(args: argparse.Namespace) -> int:

    import torch

    from converter.checkpoints import load_any
    from converter.config import VTNConfig
    from converter.progress import progress as bar
    from vtn_edge.datasets import open_dataset
    from vtn_edge.evaluation import report_evaluation
    from vtn_edge.metrics import evaluate_dataset
    from vtn_edge.preprocess import normalize

    config = VTNConfig(arch=args.arch, modality=args.modality) if args.arch else None
    model = load_any(args.checkpoint, fmt=args.checkpoint_format, config=config)
    dataset = open_dataset(args.data, labels_file=args.labels)
    pre = model.config.preprocessing

    def predict(clip):
        with torch.no_grad():
            return model(torch.from_numpy(normalize(clip, pre))[None])[0].numpy()

    result = evaluate_dataset(
        dataset,
        predict,
        pre,
        window=model.config.window,
        stride=model.config.stride,
        progress=lambda items: bar(items, desc="evaluate", unit="video"),
    )
    what = f"{Path(args.checkpoint).name} (torch) on {args.data}"
    report_evaluation(result, dataset.labels, as_json=args.json, confusion_png=args.confusion_png, what=what)
    return 0


def _cmd_temporal(args: argparse.Namespace) -> int:
    from converter.temporal import temporal_report
    from vtn_edge.report import format_table

    report = temporal_report(args.checkpoint, args.data, args.validation, args.cache_dir)
    print(f"{report.clips} held-out clips (4 evenly spaced windows of each video in {args.validation})")
    print(format_table(["check", "result"], report.rows()))
    return 0


def _names(text: str) -> tuple[str, ...]:
    """'core, position' -> ('core', 'position')."""
    return tuple(filter(None, (part.strip() for part in text.split(","))))


def _class_counts(text: str | None) -> dict[str, int]:
    """'rotate_cw=1300,rotate_ccw=1300' -> {'rotate_cw': 1300, 'rotate_ccw': 1300}."""
    counts = {}
    for part in _names(text or ""):
        name, _, number = part.partition("=")
        if not number.strip().isdigit():
            raise ConfigError(f"--class-clips expects CLASS=COUNT pairs separated by commas, got {part!r}")
        counts[name.strip()] = int(number)
    return counts


def _cmd_dataset(args: argparse.Namespace) -> int:
    if args.streams is not None:
        from converter.data.streams import write_streams

        path = write_streams(
            args.out,
            streams=args.streams,
            seconds=args.stream_seconds,
            seed=args.seed,
            subset=args.subset,
            workers=args.workers,
        )
        print(f"wrote {args.streams} streams and {path}")
        return 0
    from converter.data.synth import write_dataset

    roots = write_dataset(
        args.out,
        clips_per_class=args.clips_per_class,
        seed=args.seed,
        splits=_names(args.splits),
        classes=_names(args.classes) if args.classes else None,
        class_clips=_class_counts(args.class_clips),
        workers=args.workers,
    )
    for root in roots:
        print(f"wrote {root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m converter", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_info_parser, _add_build_parser, _add_train_parser, _add_average_parser, _add_import_parser,
                _add_evaluate_parser, _add_temporal_parser, _add_dataset_parser):  # fmt: skip
        add(sub)
    return parser


def _add_info_parser(sub: argparse._SubParsersAction) -> None:
    info = sub.add_parser("info", help="parameters and GMAC of encoder and decoder")
    info.add_argument("--arch", required=True, choices=ARCHS)
    info.add_argument("--modality", default="rgb", choices=MODALITIES)
    info.add_argument("--num-classes", type=int, default=400)
    info.add_argument("--layer-norm", action="store_true", help="the original post-residual norm")
    info.set_defaults(func=_cmd_info)


def _add_build_parser(sub: argparse._SubParsersAction) -> None:
    build = sub.add_parser("build", help="checkpoint -> encoder/decoder OpenVINO IR (INT8 by default)")
    build.add_argument("--arch", required=True, choices=ARCHS)
    build.add_argument("--modality", default="rgb", choices=BUILD_MODALITIES)
    build.add_argument("--checkpoint", type=Path, help="weights; default: the shipped model for --arch, if any")
    build.add_argument("--checkpoint-format", default="ours", choices=FORMATS)
    build.add_argument("--labels", type=Path, help="class names, one a line")
    build.add_argument("--precision", default="int8", choices=PRECISIONS)
    build.add_argument(
        "--calibration", type=Path,
        help="videos for INT8 calibration: a folder, list file or JSON (default: synthetic clips)",
    )  # fmt: skip
    build.add_argument("--validation", type=Path, help="held-out videos for verification (default: synthetic)")
    build.add_argument(
        "--interface", default="native", choices=INTERFACES,
        help="native: uint8 BGR NHWC frames in; omz: the Open Model Zoo reference interface",
    )  # fmt: skip
    build.add_argument("--out", type=Path, help="default: ir_models/<arch>-<modality>-<precision>")
    build.add_argument("--force", action="store_true", help="replace an existing output directory")
    build.add_argument("--verify-clips", type=int, default=60, help="held-out clips for verification")
    build.add_argument(
        "--max-accuracy-drop", type=float,
        help="int8: NNCF accuracy control, losing at most this top-1 fraction (e.g. 0.01) on labelled --validation",
    )  # fmt: skip
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(func=_cmd_build)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    from converter.options import TrainOptions, add_option_flags

    train = sub.add_parser("train", help="train a VTN (CPU, one GPU, or torchrun for many)")
    add_option_flags(train, TrainOptions)  # every TrainOptions field, with its default, help and choices
    train.add_argument("--resume", type=Path, help="continue the run in this directory")
    train.set_defaults(func=_cmd_train)


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser("evaluate", help="clip@1, Video@1, top-5, mean class accuracy, confusion")
    evaluate.add_argument("--checkpoint", type=Path, required=True)
    evaluate.add_argument("--checkpoint-format", default="ours", choices=FORMATS)
    evaluate.add_argument("--arch", choices=ARCHS, help="for original-format checkpoints")
    evaluate.add_argument("--modality", default="rgb", choices=MODALITIES)
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--labels", type=Path)
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--confusion-png", type=Path)
    evaluate.set_defaults(func=_cmd_evaluate)


def _add_temporal_parser(sub: argparse._SubParsersAction) -> None:
    temporal = sub.add_parser("temporal", help="does the model use frame order? reversal and order-blind baseline")
    temporal.add_argument("--checkpoint", type=Path, required=True)
    temporal.add_argument("--data", type=Path, required=True, help="training clips (fits the baseline)")
    temporal.add_argument("--validation", "--val", type=Path, required=True, help="held-out clips of the benchmark")
    temporal.add_argument("--cache-dir", type=Path, default=Path("runs/embedding-cache"))
    temporal.set_defaults(func=_cmd_temporal)


def _add_dataset_parser(sub: argparse._SubParsersAction) -> None:
    dataset = sub.add_parser("dataset", help="datasets: `synth` writes the temporal benchmark")
    dataset_sub = dataset.add_subparsers(dest="dataset_command", required=True)
    synth = dataset_sub.add_parser("synth", help="procedurally rendered actions whose frame order decides the class")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--clips-per-class", type=int, default=50)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--splits", default="core,position", help="comma-separated: core, position")
    synth.add_argument(
        "--class-clips", metavar="CLASS=N,...",
        help="clips for some classes instead of --clips-per-class (clip k is the same file either way)",
    )  # fmt: skip
    synth.add_argument(
        "--classes", metavar="CLASS,...", help="render only these classes (clip k is the same file as in a full render)"
    )
    synth.add_argument("--workers", type=int, default=1, help="rendering processes")
    streams = synth.add_argument_group("continuous streams (instead of trimmed clips)")
    streams.add_argument("--streams", type=int, help="write this many long videos and one annotations.json")
    streams.add_argument("--stream-seconds", type=float, default=120.0, help="length of each stream")
    streams.add_argument(
        "--subset", default="validation", choices=("training", "validation", "testing"),
        help="the subset the streams are annotated with",
    )  # fmt: skip
    synth.set_defaults(func=_cmd_dataset)


class _Stdout(logging.StreamHandler):
    """Whatever sys.stdout is when a message comes (tests and callers may swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text.strip()}"


def _configure_logging(verbose: bool) -> None:
    """The converter's own messages (steps, tables, epochs) as plain lines on stdout; everything
    else (libraries) on stderr with its origin, at WARNING unless --verbose."""
    ours = _Stdout()
    ours.setFormatter(_PlainFormatter("%(message)s"))
    converter_log = logging.getLogger("converter")
    converter_log.handlers[:] = [ours]
    converter_log.setLevel(logging.DEBUG if verbose else logging.INFO)
    converter_log.propagate = False
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    # Ctrl-C and SIGTERM clean up: no half-written output. SIGINT explicitly too: a shell script's
    # background job inherits it ignored, and Python would leave it so.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    return run_command(args.func, args)
