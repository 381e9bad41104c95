"""Where one camera's CPU time goes, stage by stage, and how many cameras that leaves a box.

Each stage is timed alone on the same video, as CPU time of this process (all threads: what the
box pays, spinning included), per frame of the camera:

- decode: FFmpeg turns a packet into a YUV picture (`grab`); every frame, even the ones nobody encodes.
- colour conversion: YUV to BGR pixels (`retrieve`).
- crop + resize, encoder, decoder: for the frames the schedule encodes (every `stride`-th), each
  timed alone.
- recognizer: StreamingRecognizer as the monitor runs it (`--streams` streams, throughput mode,
  `--decode-every` as the monitor's flag):
  crop + resize, encoder and decoder together, with its threads and Python.

The last table puts it together for a camera at `--fps`, once with every frame converted to pixels
(what a reader that calls `read()` does) and once with only the encoded ones (what the monitor does
without clips, see LiveSource.want_pixels), and divides the box's cores by it.

    python benchmarks/camera_profile.py --video camera-1080p.mkv --frames 300
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
import openvino as ov

from vtn_edge import StreamingRecognizer, load_model
from vtn_edge.compile_options import MATMUL_AS_CONV_CHOICES, CompileOptions, add_decode_every_flag
from vtn_edge.model import compile_pair
from vtn_edge.preprocess import center_crop_resize, encoder_frame
from vtn_edge.report import format_table

ROOT = Path(__file__).resolve().parents[1]


def _cpu_ms_per(count: int, work) -> float:
    t0 = time.process_time()
    work()
    return 1000 * (time.process_time() - t0) / count


def decode_stages(video: Path, frames: int) -> tuple[float, float, list[np.ndarray]]:
    """(decode ms, conversion ms) per frame, and up to 120 frames as pixels for the other stages."""

    def read(convert: bool, keep: list[np.ndarray] | None = None) -> None:
        capture = cv2.VideoCapture(str(video))
        for _ in range(frames):
            if not capture.grab():
                raise SystemExit(f"{video} has fewer than {frames} frames; pass a smaller --frames")
            if convert:
                frame = capture.retrieve()[1]  # a new array per frame, as the live reader gets
                if keep is not None and len(keep) < 120:
                    keep.append(frame)
        capture.release()

    pixels: list[np.ndarray] = []
    read(True, pixels)  # warm-up, and the frames
    decode = _cpu_ms_per(frames, lambda: read(False))
    both = _cpu_ms_per(frames, lambda: read(True))
    return decode, max(both - decode, 0.0), pixels


def inference_stages(
    model_dir: Path, pixels: list[np.ndarray], streams: int, decode_every: int = 1, matmul_as_conv: str = "auto"
) -> dict[str, float]:
    """CPU ms per encoded frame of crop + resize, encoder and decoder, and of the recognizer as a whole."""
    model = load_model(model_dir)
    manifest = model.manifest
    crops: list[np.ndarray] = []
    crop = _cpu_ms_per(len(pixels), lambda: crops.extend(center_crop_resize(f, manifest.preprocessing) for f in pixels))
    options = CompileOptions(matmul_as_conv=matmul_as_conv).for_streams(streams)
    encoder, decoder = compile_pair(model, options)

    def run_async(compiled: ov.CompiledModel, inputs: list[list[np.ndarray]]) -> None:
        jobs = ov.AsyncInferQueue(compiled)
        for item in inputs:
            jobs.start_async(item)
        jobs.wait_all()

    enc_inputs = [[encoder_frame(c, manifest)] for c in crops]
    run_async(encoder, enc_inputs[:16])  # warm-up
    enc = _cpu_ms_per(len(enc_inputs), lambda: run_async(encoder, enc_inputs))
    window = [np.random.default_rng(0).standard_normal(tuple(decoder.input(0).get_shape())).astype(np.float32)]
    request = decoder.create_infer_request()
    dec = _cpu_ms_per(len(crops), lambda: [request.infer(window) for _ in crops])

    with StreamingRecognizer(model, streams=streams, options=options, decode_every=decode_every) as rec:

        def recognize() -> None:
            for i, frame in enumerate(pixels):
                rec.push(frame, stream=i % streams)
            rec.flush()

        fill = manifest.stride * manifest.window * streams  # frames until every stream decodes
        for _ in range(-(-fill // len(pixels)) + 1):
            recognize()  # warm-up: every window full, so the decoder runs from the first timed frame on
        total = _cpu_ms_per(len(pixels), recognize)
    stride = manifest.stride
    return {"crop": crop, "encoder": enc, "decoder": dec, "stride": stride, "recognizer": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "ir_models" / "mobilenetv2-rgb-int8")
    parser.add_argument("--video", type=Path, required=True, help="a camera-like video (its size and codec matter)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--streams", type=int, default=8, help="streams the recognizer serves, as in the monitor")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--matmul-as-conv", choices=MATMUL_AS_CONV_CHOICES, default="auto")
    add_decode_every_flag(parser)
    args = parser.parse_args()

    decode, convert, pixels = decode_stages(args.video, args.frames)
    s = inference_stages(args.model, pixels, args.streams, args.decode_every, args.matmul_as_conv)
    stride = s["stride"]
    per_frame = {  # CPU ms per camera frame
        "decode (every frame)": decode,
        "colour conversion (every frame)": convert,
        "colour conversion (encoded frames only)": convert / stride,
        "crop + resize (encoded frames)": s["crop"] / stride,
        "encoder (encoded frames)": s["encoder"] / stride,
        "decoder (decoded windows)": s["decoder"] / (stride * args.decode_every),
    }
    per_frame["recognizer (the three above, run together)"] = s["recognizer"]
    height, width = pixels[0].shape[:2]
    as_conv = CompileOptions(matmul_as_conv=args.matmul_as_conv).matmuls_as_convolutions()
    print(f"{args.video.name} ({width}x{height}), {args.model.name}, stride {stride}, "
          f"decoder every {args.decode_every} window(s), int8 MatMuls as convolutions: {as_conv}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(format_table(["stage", "CPU ms per camera frame", f"CPU ms per camera second at {args.fps:g} fps"],
                       [(k, f"{v:.3f}", f"{v * args.fps:.0f}") for k, v in per_frame.items()]))  # fmt: skip

    shared = decode + s["recognizer"]
    rows = []
    for name, conversion in (("every frame converted", convert), ("encoded frames converted", convert / stride)):
        per_second = (shared + conversion) * args.fps
        rows.append((name, f"{per_second:.0f}", f"{1000 * (os.cpu_count() or 1) / per_second:.1f}"))
    print(format_table(["camera", "CPU ms per camera second", "cameras per box (CPU bound)"], rows))


if __name__ == "__main__":
    main()
