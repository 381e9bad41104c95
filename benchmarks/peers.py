"""Our streaming schedule against its peers, on the same clip in the same run.

- vtn_edge: StreamingRecognizer (encoder every 2nd frame, async, decoder per embedding).
- OMZ demo schedule: the same IR, encoder and decoder on every frame, synchronous.
- torch eager and onnxruntime (fp32, from the model directory's ONNX files): our schedule.
Frames are decoded once beforehand, so every row measures preprocessing + inference.

    python benchmarks/peers.py ir_models/mobilenetv2-rgb-int8 --checkpoint ir_models/default/....safetensors \\
        --source ../shared/data/videos/v_ApplyEyeMakeup_g01_c01.avi
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from pathlib import Path

import numpy as np

from vtn_edge import StreamingRecognizer, load_model
from vtn_edge.model import CompileOptions, compile_pair
from vtn_edge.preprocess import center_crop_resize, encoder_frame, normalize
from vtn_edge.report import format_table
from vtn_edge.video import read_frames


def ours(model, frames):
    with StreamingRecognizer(model) as rec:
        for f in frames[:64]:
            rec.push(f)
        rec.flush()
        t0 = time.perf_counter()
        n = sum(len(rec.push(f)) for f in frames) + len(rec.flush())
        return n / (time.perf_counter() - t0)


def omz_schedule(model, frames):
    """Encoder and decoder on every frame, one request each, synchronous (the OMZ demo's schedule)."""
    encoder, decoder = compile_pair(model, CompileOptions())
    enc, dec = encoder.create_infer_request(), decoder.create_infer_request()
    pre, window = model.manifest.preprocessing, deque(maxlen=model.manifest.seq_len)
    interface = model.manifest.interface
    t0 = time.perf_counter()
    for f in frames:
        window.append(enc.infer([encoder_frame(center_crop_resize(f, pre), interface)])[0].reshape(-1).copy())
        if len(window) == window.maxlen:
            dec.infer([np.stack(window)[None]])
    return len(frames) / (time.perf_counter() - t0)


def our_schedule(encode, decode, model, frames):
    pre, window = model.manifest.preprocessing, deque(maxlen=model.manifest.seq_len)
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        if i % model.manifest.stride == 0:
            window.append(encode(normalize(center_crop_resize(f, pre)[None], pre)))
            if len(window) == window.maxlen:
                decode(np.stack(window)[None])
    return len(frames) / (time.perf_counter() - t0)


def torch_eager(checkpoint, model, frames):
    import torch

    from converter.checkpoints import load_checkpoint

    torch.set_num_threads(2)
    net = load_checkpoint(checkpoint)
    encoder, decoder = net.split()
    with torch.no_grad():
        return our_schedule(
            lambda x: encoder(torch.from_numpy(x))[0].numpy(),
            lambda w: decoder(torch.from_numpy(w.astype(np.float32))),
            model,
            frames,
        )


def onnxruntime_fp32(model, frames):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    enc = ort.InferenceSession(str(model.path / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(model.path / "decoder.onnx"), opts, providers=["CPUExecutionProvider"])
    e_in, d_in = enc.get_inputs()[0].name, dec.get_inputs()[0].name
    return our_schedule(
        lambda x: enc.run(None, {e_in: x})[0][0], lambda w: dec.run(None, {d_in: w.astype(np.float32)}), model, frames
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--checkpoint", type=Path, help="the torch checkpoint the IR was built from")
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=600)
    args = parser.parse_args()
    model = load_model(args.model)
    clip = read_frames(args.source)
    frames = [clip[i % len(clip)] for i in range(args.frames)]
    rows = [
        ("vtn_edge StreamingRecognizer", ours(model, frames)),
        ("OMZ demo schedule, same IR", omz_schedule(model, frames)),
    ]
    if args.checkpoint:
        rows.append(("torch eager fp32, our schedule", torch_eager(args.checkpoint, model, frames[:200])))
    try:
        rows.append(("onnxruntime fp32, our schedule", onnxruntime_fp32(model, frames[:300])))
    except ImportError:
        print("onnxruntime is not installed: `pip install onnxruntime` to include it")
    best = rows[0][1]
    print(
        format_table(
            ["pipeline", "frames/s", "vtn_edge is faster by"],
            [(name, f"{fps:.0f}", f"{best / fps:.2f}x") for name, fps in rows],
        )
    )


if __name__ == "__main__":
    main()
