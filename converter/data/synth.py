"""The temporal benchmark: procedurally rendered actions in which frame order decides the class.

A VTN sees each frame as one pooled embedding, which keeps what is in the frame and how it
looks but loses most of where it is. So the core classes come in pairs that pass through the
same appearance states in opposite order (averaging a pair's frames gives the same picture),
plus a still class. A separate position split (swipes) measures how much position a fine-tuned
encoder keeps. Everything a single frame could cheat with is randomised, but never the action
itself: every 32-frame window of a clip (what training and Video@1 look at) shows it, and the
object stands out from its background. Same seed, same files.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from converter.config import ConfigError

CORE_CLASSES = (
    "open",
    "close",
    "fill",
    "empty",
    "fade_in",
    "fade_out",
    "appear",
    "disappear",
    "zoom_in",
    "zoom_out",
    "rotate_cw",
    "rotate_ccw",
    "red_to_blue",
    "blue_to_red",
    "still",
)
POSITION_CLASSES = ("swipe_left", "swipe_right", "swipe_up", "swipe_down")
SPLITS = {"core": CORE_CLASSES, "position": POSITION_CLASSES}
PARTNERS = {a: b for x, y in zip(CORE_CLASSES[:14:2], CORE_CLASSES[1:14:2]) for a, b in ((x, y), (y, x))} | {
    "swipe_left": "swipe_right",
    "swipe_right": "swipe_left",
    "swipe_up": "swipe_down",
    "swipe_down": "swipe_up",
}

SIZES = ((320, 240), (256, 256), (352, 288), (240, 180), (400, 300))
FPS = (15, 24, 25, 30)
CLIP_FRAMES = (36, 72)  # a clip's length is drawn from [min, max)
SHAPES = ("circle", "square", "triangle", "diamond", "hexagon")
ROTATION_DEGREES = 240.0  # how far the arrow turns over a rotate_cw / rotate_ccw clip
RED, BLUE = np.array([40, 40, 220.0]), np.array([220, 60, 40.0])  # BGR
CONTRAST = 150.0  # least L1 distance (BGR) between an object's colour and the background it is on
STEP_CLASSES = ("appear", "disappear")  # a single change, at the middle of the clip
STEP_MAX_FRAMES = 60  # so that every 32-frame window of such a clip holds frames before and after it


@dataclass(frozen=True)
class ClipSpec:
    """Everything random about one clip, drawn from its own seed."""

    label: str
    width: int
    height: int
    fps: int
    frames: int
    start: float  # progress starts and ends at these fractions of the clip
    end: float
    shape: str
    size: float  # object radius as a fraction of the short side
    cx: float
    cy: float
    color: tuple[float, float, float]
    background: tuple[tuple[float, float, float], tuple[float, float, float]]
    texture: float
    noise: float
    shake: float
    distractors: int
    angle0: float


def _visible(colors: tuple[np.ndarray, ...], *backgrounds: np.ndarray) -> bool:
    return all(np.abs(c - b).sum() >= CONTRAST for c in colors for b in backgrounds)


def draw_spec(label: str, rng: np.random.Generator) -> ClipSpec:
    width, height = SIZES[rng.integers(len(SIZES))]
    bg0 = rng.uniform(0, 255, 3)
    bg1 = np.clip(bg0 + rng.uniform(-80, 80, 3), 0, 255)
    if label in ("red_to_blue", "blue_to_red"):
        # these objects take the fixed colours RED and BLUE: both must stand out from both ends of
        # the background, or the colour change looks like fading into it (or like nothing)
        while not _visible((RED, BLUE), bg0, bg1):
            bg0 = rng.uniform(0, 255, 3)
            bg1 = np.clip(bg0 + rng.uniform(-80, 80, 3), 0, 255)
    color = rng.uniform(0, 255, 3)
    while not _visible((color,), bg0):  # keep the object visible against the background
        color = rng.uniform(0, 255, 3)
    fps = int(FPS[rng.integers(len(FPS))])
    frames = int(rng.integers(*CLIP_FRAMES))
    start, end = float(rng.uniform(0.0, 0.15)), float(rng.uniform(0.85, 1.0))
    if label in STEP_CLASSES:
        # Video@1 reads 32-frame segments from frame 0 and training windows start anywhere: with
        # the step at the middle of a clip of at most 60 frames, every window shows it (a window
        # without it shows a still object, which is `still`)
        low, high = CLIP_FRAMES
        frames = low + (frames - low) * (STEP_MAX_FRAMES - low) // (high - 1 - low)
        start, end = 0.0, 1.0
    return ClipSpec(
        label=label,
        width=int(width),
        height=int(height),
        fps=fps,
        frames=frames,
        start=start,
        end=end,
        shape=SHAPES[rng.integers(len(SHAPES))],
        size=float(rng.uniform(0.22, 0.38)),
        cx=float(rng.uniform(0.38, 0.62)),
        cy=float(rng.uniform(0.38, 0.62)),
        color=tuple(color),
        background=(tuple(bg0), tuple(bg1)),
        texture=float(rng.uniform(0, 30)),
        noise=float(rng.uniform(0, 8)),
        shake=float(rng.uniform(0, 4)),
        distractors=int(rng.integers(0, 4)),
        angle0=float(rng.uniform(0, 360)),
    )


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    sides = {"square": 4, "triangle": 3, "diamond": 4, "hexagon": 6, "circle": 32}[shape]
    offset = 45.0 if shape == "square" else 0.0
    theta = np.deg2rad(angle + offset + np.arange(sides) * 360.0 / sides)
    stretch = 1.5 if shape == "diamond" else 1.0
    pts = np.stack([cx + r * np.cos(theta), cy + stretch * r * np.sin(theta)], axis=1)
    return np.round(pts).astype(np.int32)


def _arrow(cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """An asymmetric shape whose orientation is visible (for rotation)."""
    local = np.array([[1.0, 0], [0.2, 0.55], [0.2, 0.2], [-1, 0.2], [-1, -0.2], [0.2, -0.2], [0.2, -0.55]])
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return np.round(local @ rot.T * r + [cx, cy]).astype(np.int32)


def _background(spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    h, w = spec.height, spec.width
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    img = np.asarray(spec.background[0], np.float32) * (1 - ramp) + np.asarray(spec.background[1], np.float32) * ramp
    img = np.broadcast_to(img, (h, w, 3)).copy()
    if spec.texture > 0:
        coarse = rng.normal(0, spec.texture, (h // 16 + 1, w // 16 + 1, 3)).astype(np.float32)
        img += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return img


def _progress(spec: ClipSpec, t: int) -> float:
    p = (t / max(spec.frames - 1, 1) - spec.start) / (spec.end - spec.start)
    p = min(max(p, 0.0), 1.0)
    return p * p * (3 - 2 * p)  # smoothstep: actions ease in and out


def render_clip(spec: ClipSpec, seed: int) -> Iterator[np.ndarray]:
    """Frames (BGR uint8) of one clip."""
    rng = np.random.default_rng(seed)
    background = _background(spec, rng)
    short = min(spec.width, spec.height)
    cx, cy, r = spec.cx * spec.width, spec.cy * spec.height, spec.size * short
    distractors = [
        (
            rng.uniform(0, spec.width),
            rng.uniform(0, spec.height),
            rng.uniform(0.04, 0.08) * short,
            tuple(float(c) for c in rng.uniform(0, 255, 3)),
            rng.uniform(-1.5, 1.5, 2),
            SHAPES[rng.integers(len(SHAPES))],
        )
        for _ in range(spec.distractors)
    ]
    label = spec.label
    for t in range(spec.frames):
        p = _progress(spec, t)
        frame = background.copy()
        for x, y, dr, dcolor, vel, dshape in distractors:
            cv2.fillPoly(frame, [_polygon(dshape, x + vel[0] * t, y + vel[1] * t, dr, 0)], dcolor)
        _draw_action(frame, label, p, spec, cx, cy, r)
        if spec.noise > 0:
            frame += rng.normal(0, spec.noise, frame.shape).astype(np.float32)
        if spec.shake > 0:
            dx, dy = rng.normal(0, spec.shake, 2)
            frame = cv2.warpAffine(
                frame, np.float32([[1, 0, dx], [0, 1, dy]]), (spec.width, spec.height), borderMode=cv2.BORDER_REFLECT
            )
        yield np.clip(frame, 0, 255).astype(np.uint8)


def _draw_action(frame: np.ndarray, label: str, p: float, spec: ClipSpec, cx: float, cy: float, r: float) -> None:
    color = spec.color
    poly = _polygon(spec.shape, cx, cy, r, spec.angle0)
    if label in ("open", "close"):
        # a box whose two doors slide apart (open) or together (close)
        opened = p if label == "open" else 1 - p
        x0, y0, x1, y1 = int(cx - r), int(cy - r), int(cx + r), int(cy + r)
        inner = tuple(255 - c for c in color)
        cv2.rectangle(frame, (x0, y0), (x1, y1), inner, -1)
        door = int(round((1 - opened) * r))
        cv2.rectangle(frame, (x0, y0), (x0 + door, y1), color, -1)
        cv2.rectangle(frame, (x1 - door, y0), (x1, y1), color, -1)
        cv2.rectangle(frame, (x0, y0), (x1, y1), (0, 0, 0), 2)
    elif label in ("fill", "empty"):
        level = p if label == "fill" else 1 - p
        x0, y0, x1, y1 = int(cx - 0.7 * r), int(cy - r), int(cx + 0.7 * r), int(cy + r)
        top = int(round(y1 - level * (y1 - y0)))
        if top < y1:
            cv2.rectangle(frame, (x0, top), (x1, y1), color, -1)
        cv2.rectangle(frame, (x0, y0), (x1, y1), (20, 20, 20), 3)
    elif label in ("fade_in", "fade_out", "appear", "disappear"):
        if label.startswith("fade"):
            alpha = p if label == "fade_in" else 1 - p
        else:
            alpha = float(p >= 0.5) if label == "appear" else float(p < 0.5)
        if alpha > 0:
            layer = frame.copy()
            cv2.fillPoly(layer, [poly], color)
            cv2.addWeighted(layer, alpha, frame, 1 - alpha, 0, dst=frame)
    elif label in ("zoom_in", "zoom_out"):
        scale = 0.2 + 0.8 * (p if label == "zoom_in" else 1 - p)
        cv2.fillPoly(frame, [_polygon(spec.shape, cx, cy, r * scale, spec.angle0)], color)
    elif label in ("rotate_cw", "rotate_ccw"):
        # the same orientations, in opposite order (image y points down: + is clockwise)
        turned = ROTATION_DEGREES * (p if label == "rotate_cw" else 1 - p)
        cv2.fillPoly(frame, [_arrow(cx, cy, r, spec.angle0 + turned)], color)
    elif label in ("red_to_blue", "blue_to_red"):
        a = p if label == "red_to_blue" else 1 - p
        jitter = (np.asarray(color) - 127.5) * 0.15
        mixed = tuple(float(v) for v in np.clip(RED * (1 - a) + BLUE * a + jitter, 0, 255))
        cv2.fillPoly(frame, [poly], mixed)
    elif label == "still":
        cv2.fillPoly(frame, [poly], color)
    elif label.startswith("swipe_"):
        travel = 2 * p - 1  # -1 .. 1 across the frame
        dx = {"swipe_left": -1, "swipe_right": 1}.get(label, 0) * travel
        dy = {"swipe_up": -1, "swipe_down": 1}.get(label, 0) * travel
        small = 0.6 * r
        x = spec.width / 2 + dx * (spec.width / 2 - small)
        y = spec.height / 2 + dy * (spec.height / 2 - small)
        cv2.fillPoly(frame, [_polygon(spec.shape, x, y, small, spec.angle0)], color)
    else:
        raise ValueError(f"no renderer for class {label!r}")


def reversal_pairs_text(names: tuple[str, ...]) -> str:
    """`train --reverse-pairs` lines: each pair once, and `still`, which backwards is itself."""
    lines = [f"{a} {PARTNERS[a]}" for a in names if a in PARTNERS and PARTNERS[a] in names and a < PARTNERS[a]]
    return "\n".join(lines + [n for n in names if n == "still"]) + "\n"


def clip_seed(seed: int, split: str, class_index: int, clip_index: int) -> int:
    return int(np.random.SeedSequence([seed, len(split), class_index, clip_index]).generate_state(1)[0])


def write_video(path: Path, frames: Iterator[np.ndarray], fps: int, size: tuple[int, int]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MPEG-4 video to {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()


def synth_clips(
    split: str,
    clips_per_class: int,
    seed: int,
    classes: tuple[str, ...] | None = None,
    class_clips: Mapping[str, int] | None = None,
) -> Iterator[tuple[str, int, ClipSpec, int]]:
    """(class, clip index, spec, render seed) for every clip of a split, in a fixed order.

    Clip k of a class is the same whatever the counts, so more clips only add files.
    """
    for ci, label in enumerate(SPLITS[split]):
        if classes is not None and label not in classes:
            continue
        for k in range((class_clips or {}).get(label, clips_per_class)):
            s = clip_seed(seed, split, ci, k)
            yield label, k, draw_spec(label, np.random.default_rng(s)), s + 1


def _write_clip(job: tuple[Path, ClipSpec, int]) -> None:
    path, spec, render_seed = job
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, render_clip(spec, render_seed), spec.fps, (spec.width, spec.height))


def write_dataset(
    out: Path,
    *,
    clips_per_class: int,
    seed: int,
    splits: tuple[str, ...] = ("core", "position"),
    classes: tuple[str, ...] | None = None,
    class_clips: Mapping[str, int] | None = None,
    workers: int = 1,
    progress: bool = True,
) -> list[Path]:
    """Write `out/<split>/<class>/<class>_NNNN.mp4`, `out/<split>/labels.txt` and the reversal
    pairs `out/<split>/pairs.txt`; returns split roots.

    `classes` keeps a subset (a split with none of them is not written); `class_clips` gives some
    classes their own count (more clips where the benchmark is hard). A clip's content depends on
    neither, nor on `workers` (rendering processes).
    """
    for split in splits:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    known = [c for split in splits for c in SPLITS[split]]
    class_clips = dict(class_clips or {})
    for what, names in (("per-class clip counts for", class_clips), ("classes", classes or ())):
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ConfigError(f"{what} {', '.join(unknown)}: not a class here; choose from {', '.join(known)}")
    jobs, roots = [], []
    for split in splits:
        names = tuple(c for c in SPLITS[split] if classes is None or c in classes)
        if not names:
            continue
        root = out / split
        root.mkdir(parents=True, exist_ok=True)
        (root / "labels.txt").write_text("\n".join(names) + "\n")
        (root / "pairs.txt").write_text(reversal_pairs_text(names))
        jobs += [
            (root / label / f"{label}_{k:04d}.mp4", spec, render_seed)
            for label, k, spec, render_seed in synth_clips(split, clips_per_class, seed, names, class_clips)
        ]
        roots.append(root)
    render_jobs(_write_clip, jobs, workers=workers, desc="synth", unit="clip", progress=progress)
    return roots


def render_jobs(write, jobs: list, *, workers: int, desc: str, unit: str, progress: bool) -> None:
    """Run `write(job)` for every job, in `workers` processes (spawned), with a progress bar."""
    from converter.progress import progress as progress_bar

    bar = progress_bar(total=len(jobs), desc=desc, enabled=progress, unit=unit)
    if workers == 1:
        for job in jobs:
            write(job)
            bar.update()
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(write, jobs, chunksize=4 if unit == "clip" else 1):
                bar.update()
    bar.close()
