"""Frame preprocessing: one crop-and-resize per sampled frame, nothing per pixel in Python.

The model's view of a frame is its centre square region scaled to `input_size` (the short side
resized to `resize_short` and then centre-cropped, done as a single resize of the matching
source region). Colour conversion and normalisation live inside the native IR.

What the encoder eats for a sampled frame is written once, here (`encoder_frame`,
`encoder_request`, `encoder_inputs`): the streaming recognizer, `vtn_edge evaluate` and the
build's verification all feed it through these, so the build verifies what the runtime feeds.
"""

from __future__ import annotations

import cv2
import numpy as np

from vtn_edge.errors import FrameError
from vtn_edge.metadata import Manifest, Preprocessing


def as_bgr8(frame: np.ndarray) -> np.ndarray:
    """Accept what cameras and files deliver: BGR uint8 as is; gray, BGRA and 16-bit converted."""
    if not isinstance(frame, np.ndarray) or frame.size == 0:
        raise FrameError(f"empty frame: expected an HxWx3 uint8 BGR image, got {_describe(frame)}")
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype in (np.float32, np.float64):
        frame = np.clip(frame * 255.0 if frame.max() <= 1.0 else frame, 0, 255).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise FrameError(f"frame dtype {frame.dtype} is not supported: expected uint8 (or uint16/float)")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise FrameError(f"frame shape {frame.shape} is not an image: expected HxW, HxWx1, HxWx3 or HxWx4")


def _describe(frame: object) -> str:
    if isinstance(frame, np.ndarray):
        return f"array of shape {frame.shape}"
    return type(frame).__name__


def crop_box(height: int, width: int, pre: Preprocessing) -> tuple[int, int, int]:
    """(top, left, side) of the source region that becomes the model's input square."""
    side = round(min(height, width) * pre.input_size / pre.resize_short)
    return (height - side) // 2, (width - side) // 2, side


def center_crop_resize(frame: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """BGR uint8 frame of any size -> contiguous [S, S, 3] uint8 (S = input_size)."""
    frame = as_bgr8(frame)
    top, left, side = crop_box(frame.shape[0], frame.shape[1], pre)
    region = frame[top : top + side, left : left + side]
    size = pre.input_size
    if side == size:
        return np.ascontiguousarray(region)
    interp = cv2.INTER_AREA if side > 2 * size else cv2.INTER_LINEAR
    return cv2.resize(region, (size, size), interpolation=interp)


def encoder_frame(crop: np.ndarray, interface: str) -> np.ndarray:
    """A [S, S, 3] uint8 BGR crop as one encoder input: [1, S, S, 3] uint8 for our native IRs, or
    [1, 3, S, S] float32 BGR 0..255 for the Open Model Zoo interface. C-contiguous either way: the
    recognizer hands it to OpenVINO as shared memory, uncopied."""
    if interface == "omz":
        return np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32)
    return crop[None]


def encoder_request(
    frame: np.ndarray, previous: np.ndarray | None, manifest: Manifest
) -> tuple[np.ndarray, ...] | None:
    """The encoder's inputs for a sampled frame (from `encoder_frame`): the frame alone, or with a
    difference modality the frame and the sampled frame before it (None for a stream's first)."""
    if not manifest.uses_frame_pairs:
        return (frame,)
    return None if previous is None else (frame, previous)


def encoder_inputs(crops: np.ndarray, manifest: Manifest) -> list[tuple[np.ndarray, ...]]:
    """The encoder's inputs for each sampled frame of a clip of crops [T, S, S, 3] uint8 BGR."""
    frames = [encoder_frame(crop, manifest.interface) for crop in crops]
    requests = [encoder_request(f, frames[t - 1] if t else None, manifest) for t, f in enumerate(frames)]
    return [r for r in requests if r is not None]


def normalize(frames: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """[..., S, S, 3] uint8 BGR -> [..., 3, S, S] float32 in the model's colour order, normalised.

    For the torch side and tests; the native IR does this itself.
    """
    x = frames.astype(np.float32) / 255.0
    if pre.color_order == "RGB":
        x = x[..., ::-1]
    x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))
