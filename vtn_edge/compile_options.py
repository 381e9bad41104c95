"""OpenVINO compile settings and the command-line flags that set them, with the recognizer's one
schedule flag (`--decode-every`); no OpenVINO import here, so building a parser stays cheap."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from pathlib import Path

from vtn_edge.errors import ModelError

MATMUL_AS_CONV_CHOICES = ("auto", "on", "off")
# CPU flags (Linux /proc/cpuinfo) of an int8 dot-product instruction: with one, OpenVINO's int8 MatMul
# is fast as it is; without (AVX2 only), its int8 1x1 convolution is (see vtn_edge/graph_rewrite.py)
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@dataclass(frozen=True)
class CompileOptions:
    """OpenVINO settings. mode: "latency" or "throughput"; None lets the number of streams decide
    (`for_streams`, the one place that rule lives)."""

    device: str = "CPU"
    mode: str | None = None
    threads: int | None = None
    streams: int | None = None
    precision_hint: str | None = None  # e.g. "f32" to disable bf16 execution
    cache_dir: str | None = None
    matmul_as_conv: str = "auto"  # int8 MatMuls as 1x1 convolutions; auto: on CPUs without VNNI

    def for_streams(self, streams: int) -> CompileOptions:
        """These options for `streams` concurrent streams: without a mode, one stream gets the
        latency hint and more streams the throughput hint (one compiled model serves them all)."""
        if self.mode is not None:
            return self
        return replace(self, mode="throughput" if streams > 1 else "latency")

    def with_model_hint(self, hint: str | None) -> CompileOptions:
        """The model's own precision hint (`Manifest.precision_hint`, measured by its build) where
        the user set none."""
        return self if self.precision_hint or not hint else replace(self, precision_hint=hint)

    def matmuls_as_convolutions(self) -> bool:
        """Whether int8 MatMuls are compiled as 1x1 convolutions (`vtn_edge.graph_rewrite`)."""
        if self.matmul_as_conv not in MATMUL_AS_CONV_CHOICES:
            choices = ", ".join(MATMUL_AS_CONV_CHOICES)
            raise ModelError(f"matmul_as_conv must be one of {choices}, got {self.matmul_as_conv!r}")
        if self.matmul_as_conv != "auto":
            return self.matmul_as_conv == "on"
        return self.device == "CPU" and not cpu_has_vnni(_cpu_flags(), os.environ.get("ONEDNN_MAX_CPU_ISA", ""))

    def properties(self) -> dict[str, str]:
        mode = self.for_streams(1).mode
        if mode not in ("latency", "throughput"):
            raise ModelError(f"mode must be 'latency' or 'throughput', got {mode!r}")
        props = {"PERFORMANCE_HINT": mode.upper()}
        if self.threads:
            props["INFERENCE_NUM_THREADS"] = str(self.threads)
        if self.streams:
            props["NUM_STREAMS"] = str(self.streams)
        if self.precision_hint:
            props["INFERENCE_PRECISION_HINT"] = self.precision_hint
        elif os.environ.get("ONEDNN_MAX_CPU_ISA"):
            # a capped instruction set stands for a smaller CPU: the plugin would still pick bf16 when
            # the real CPU has it, which oneDNN cannot run under the cap ("object is not initialized")
            props["INFERENCE_PRECISION_HINT"] = "f32"
        return props


def cpu_has_vnni(cpu_flags: frozenset[str] | None, isa_cap: str = "") -> bool:
    """Whether OpenVINO's CPU plugin gets an int8 dot-product instruction: the CPU has one and
    `isa_cap` (oneDNN's ONEDNN_MAX_CPU_ISA, e.g. `--edge-profile`'s AVX2) allows it. Flags that
    cannot be read (None: not Linux) count as VNNI, which leaves OpenVINO's own choice alone."""
    cap = isa_cap.strip().lower()
    if cap and cap != "all" and not ("vnni" in cap or cap.startswith(("avx512_core_", "avx10"))):
        return False
    return cpu_flags is None or bool(cpu_flags & VNNI_FLAGS)


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def add_compile_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The OpenVINO flags of every runtime command (`run`, `evaluate`, `bench`, the monitor)."""
    parser.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    parser.add_argument(
        "--mode",
        choices=("latency", "throughput"),
        help="OpenVINO performance hint (default: latency for one stream, throughput for more)",
    )
    parser.add_argument("--threads", type=int, help="inference threads")
    parser.add_argument("--ov-streams", type=int, help="OpenVINO CPU streams")
    parser.add_argument("--precision-hint", help="e.g. f32 to disable bf16 execution")
    parser.add_argument("--cache-dir", help="OpenVINO model cache directory (faster start)")
    parser.add_argument(
        "--matmul-as-conv", choices=MATMUL_AS_CONV_CHOICES, default="auto",
        help="run int8 MatMuls (the decoder's projections) as 1x1 convolutions, the faster int8 kernel on "
        "CPUs without VNNI (default auto: on exactly there)",
    )  # fmt: skip


def _decode_every(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 (1: every window), got {text!r}")
    return int(text)


def add_decode_every_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--decode-every N` of the commands that run streams (the monitor, `run`, `evaluate --online`)."""
    parser.add_argument(
        "--decode-every", type=_decode_every, default=1, metavar="N",
        help="run the decoder on every N-th window only: a new label every N x stride frames, for less "
        "CPU per camera where the decoder is slow (default 1: every window)",
    )  # fmt: skip


def compile_options_from_flags(args: argparse.Namespace) -> CompileOptions:
    return CompileOptions(
        device=args.device,
        mode=args.mode,
        threads=args.threads,
        streams=args.ov_streams,
        precision_hint=args.precision_hint,
        cache_dir=args.cache_dir,
        matmul_as_conv=args.matmul_as_conv,
    )
