"""The continuous-stream benchmark: long videos in which actions happen at random times.

One scene per stream (background, lighting, camera, frame rate). A single prop sits in the
middle: a box (open/close), a glass (fill/empty), a shape (zoom_in/zoom_out), an arrow
(rotate_cw/rotate_ccw) or a coloured shape (red_to_blue/blue_to_red); any prop can fade out or
disappear, and an empty scene gets a new prop by fade_in or appear. The scene keeps what an
action changed until another action changes it, and the next action is drawn among those that
make sense from the current state, so the only changes to the prop are annotated ones.

Between actions (idle, 2 to 20 s, sometimes none) what a real camera sees goes on: sensor noise,
camera shake (steady and in bursts), slow lighting drift, a distractor drifting through, a brief
occlusion, a static object that stays put. None of it is an action.

Actions last 1.2 to 3 s (appear/disappear 1.2 to 1.5 s: the step happens at their first frame,
the rest shows the new state). `annotations.json` follows the ActivityNet layout with `fps` and
`frames` per video. Stream k of a seed is the same file whatever the number of streams.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from converter.config import ConfigError
from converter.data.synth import (
    CORE_CLASSES,
    SHAPES,
    SIZES,
    _background,
    _draw_action,
    _polygon,
    _visible,
    draw_spec,
    render_jobs,
    write_video,
)
from vtn_edge.online import ANNOTATIONS

STREAM_FPS = (25, 30)  # drawn from [min, max] per stream
ACTION_SECONDS = (1.2, 3.0)
STEP_SECONDS = (1.2, 1.5)  # appear / disappear: the step is at the first frame
IDLE_SECONDS = (2.0, 20.0)
BACK_TO_BACK = 0.15  # chance that an action follows the previous one with no idle gap
BACKGROUND = "still"  # the benchmark's class for "no action"; never annotated as an event
ACTIONS = tuple(c for c in CORE_CLASSES if c != BACKGROUND)

# prop kind -> (its idle renderer, the class that moves its state 0 -> 1, the one that moves 1 -> 0)
KINDS = {
    "box": ("open", "open", "close"),
    "glass": ("fill", "fill", "empty"),
    "shape": ("zoom_in", "zoom_in", "zoom_out"),
    "arrow": ("rotate_cw", "rotate_cw", "rotate_ccw"),
    "colour": ("red_to_blue", "red_to_blue", "blue_to_red"),
}


@dataclass(frozen=True)
class Prop:
    kind: str
    spec: object  # a ClipSpec: colour, shape, size, position and angle of the prop
    state: float  # 0 or 1: closed/open, empty/full, small/large, red/blue (arrows: always 0)
    present: bool = True


@dataclass(frozen=True)
class Segment:
    """An annotated action: frames [start, end) of the stream; `before` is the prop it acts on."""

    label: str
    start: int
    end: int
    before: Prop
    after: Prop


@dataclass(frozen=True)
class Nuisance:
    """Something that happens in idle time: kind in drift_by, occlusion, shake."""

    kind: str
    start: int
    end: int
    seed: int


@dataclass(frozen=True)
class StreamPlan:
    name: str
    width: int
    height: int
    fps: int
    frames: int
    scene: object  # a ClipSpec for the background, noise, shake and texture
    first: Prop
    segments: tuple[Segment, ...]
    nuisances: tuple[Nuisance, ...]
    drift: tuple[float, float, float]  # lighting: amplitude, period (s), phase
    static_object: tuple[float, float, float, str, tuple[float, float, float]]  # x, y, radius, shape, colour
    render_seed: int

    def annotation(self, subset: str) -> dict:
        return {
            "subset": subset,
            "duration": round(self.frames / self.fps, 4),
            "fps": self.fps,
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "annotations": [{"label": s.label, "segment": self._seconds(s.start, s.end)} for s in self.segments],
            # not actions: what happens in idle time, for analysing false events and for training
            "nuisances": [{"kind": n.kind, "segment": self._seconds(n.start, n.end)} for n in self.nuisances],
        }

    def _seconds(self, start: int, end: int) -> list[float]:
        return [round(start / self.fps, 4), round(end / self.fps, 4)]


def stream_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, 0x5717EA, index]).generate_state(1)[0])


def _new_prop(rng: np.random.Generator, scene) -> Prop:
    kind = list(KINDS)[rng.integers(len(KINDS))]
    spec = draw_spec("still", rng)
    color = np.asarray(spec.color)
    while not _visible((color,), *(np.asarray(b) for b in scene.background)):
        color = rng.uniform(0, 255, 3)
    spec = replace(spec, width=scene.width, height=scene.height, color=tuple(float(c) for c in color))
    return Prop(kind, spec, float(rng.integers(2)) if kind != "arrow" else 0.0)


def _choices(prop: Prop) -> tuple[str, ...]:
    if not prop.present:
        return ("fade_in", "appear")
    _, up, down = KINDS[prop.kind]
    if prop.kind == "arrow":
        moves = (up, down)
    else:
        moves = (down,) if prop.state else (up,)
    return moves + ("fade_out", "disappear")


def _after(prop: Prop, label: str, rng: np.random.Generator, scene) -> Prop:
    if label in ("fade_out", "disappear"):
        return replace(prop, present=False)
    if label in ("fade_in", "appear"):
        return _new_prop(rng, scene)
    if prop.kind == "arrow":
        turn = 240.0 if label == "rotate_cw" else -240.0
        return replace(prop, spec=replace(prop.spec, angle0=(prop.spec.angle0 + turn) % 360))
    return replace(prop, state=1.0 - prop.state)


def plan_stream(seed: int, index: int, seconds: float) -> StreamPlan:
    """Everything random about stream `index` of `seed`, drawn from its own seed."""
    rng = np.random.default_rng(stream_seed(seed, index))
    width, height = SIZES[rng.integers(len(SIZES))]
    fps = int(rng.integers(STREAM_FPS[0], STREAM_FPS[1] + 1))
    frames = int(round(seconds * fps))
    scene = draw_spec("red_to_blue", rng)  # a background on which red, blue and the object stand out
    scene = replace(scene, width=int(width), height=int(height), fps=fps, shake=float(rng.uniform(0, 1.5)))
    prop = first = _new_prop(rng, scene)
    segments, idle_spans = [], []
    t = int(round(rng.uniform(*IDLE_SECONDS) / 2 * fps))  # the first action may come early
    idle_spans.append((0, t))
    while True:
        label = _choices(prop)[rng.integers(len(_choices(prop)))]
        span = STEP_SECONDS if label in ("appear", "disappear") else ACTION_SECONDS
        length = int(round(rng.uniform(*span) * fps))
        if t + length > frames:
            break
        after = _after(prop, label, rng, scene)
        segments.append(Segment(label, t, t + length, prop, after))
        prop, t = after, t + length
        idle = 0 if rng.random() < BACK_TO_BACK else int(round(rng.uniform(*IDLE_SECONDS) * fps))
        idle_spans.append((t, min(t + idle, frames)))
        t += idle
    idle_spans.append((min(t, frames), frames))
    nuisances = [n for start, end in idle_spans for n in _nuisances(rng, start, end, fps)]
    short = min(width, height)
    static = (
        float(rng.choice([0.08, 0.92]) * width),
        float(rng.choice([0.1, 0.9]) * height),
        float(rng.uniform(0.04, 0.06) * short),
        SHAPES[rng.integers(len(SHAPES))],
        tuple(float(c) for c in rng.uniform(0, 255, 3)),
    )
    drift = (float(rng.uniform(0, 0.12)), float(rng.uniform(20, 60)), float(rng.uniform(0, 2 * np.pi)))
    return StreamPlan(
        f"stream_{index:04d}", int(width), int(height), fps, frames, scene, first, tuple(segments),
        tuple(nuisances), drift, static, int(rng.integers(2**31)),
    )  # fmt: skip


def _nuisances(rng: np.random.Generator, start: int, end: int, fps: int) -> list[Nuisance]:
    """Idle-time events, kept a second away from the actions on either side."""
    margin, out = fps, []
    for kind, chance, seconds in (
        ("drift_by", 0.5, (2.0, 5.0)),
        ("occlusion", 0.3, (0.3, 0.8)),
        ("shake", 0.3, (0.4, 1.0)),
    ):
        length = int(round(rng.uniform(*seconds) * fps))
        room = end - start - 2 * margin - length
        if rng.random() < chance and room > 0:
            s = start + margin + int(rng.integers(room))
            out.append(Nuisance(kind, s, s + length, int(rng.integers(2**31))))
    return out


# ---------------------------------------------------------------------- rendering
def _draw_prop(frame: np.ndarray, prop: Prop, label: str | None = None, p: float = 0.0) -> None:
    """The prop at rest (label None) or during `label` at progress p (for fade_in and appear: the
    prop that comes)."""
    spec = prop.spec
    cx, cy = spec.cx * spec.width, spec.cy * spec.height
    r = spec.size * min(spec.width, spec.height)
    if label in ("fade_in", "fade_out", "appear", "disappear"):
        alpha = {"fade_in": p, "fade_out": 1 - p, "appear": 1.0, "disappear": 0.0}[label]
        if alpha > 0:
            layer = frame.copy()
            _draw_prop(layer, replace(prop, present=True))
            cv2.addWeighted(layer, alpha, frame, 1 - alpha, 0, dst=frame)
        return
    if not prop.present:
        return
    if label is None:
        idle, _, _ = KINDS[prop.kind]
        label, p = idle, prop.state
    elif label == "rotate_ccw":  # turns from the arrow's angle back by the full turn
        spec = replace(spec, angle0=spec.angle0 - 240.0)
    _draw_action(frame, label, p, spec, cx, cy, r)


def _progress(t: int, segment: Segment) -> float:
    x = (t - segment.start) / max(segment.end - segment.start - 1, 1)
    return 0.5 * (x + x * x * (3 - 2 * x))  # half linear, half eased: an action shows from its start


def render_stream(plan: StreamPlan) -> Iterator[np.ndarray]:
    """Frames (BGR uint8) of one stream."""
    rng = np.random.default_rng(plan.render_seed)
    scene = plan.scene
    background = _background(scene, rng)
    w, h = plan.width, plan.height
    sx, sy, sr, sshape, scolor = plan.static_object
    static = _polygon(sshape, sx, sy, sr, 0)
    segments, seg = list(plan.segments), 0
    prop = plan.first
    amplitude, period, phase = plan.drift
    cv2.setRNGSeed(plan.render_seed % 2**31)
    noise = np.empty((h, w, 3), np.float32)
    for t in range(plan.frames):
        while seg < len(segments) and t >= segments[seg].end:
            prop = segments[seg].after
            seg += 1
        frame = background * (1 + amplitude * np.sin(2 * np.pi * t / (period * plan.fps) + phase))
        cv2.fillPoly(frame, [static], scolor)
        active = [n for n in plan.nuisances if n.start <= t < n.end]
        for n in active:
            if n.kind == "drift_by":
                _draw_drift_by(frame, n, t)
        if seg < len(segments) and segments[seg].start <= t:
            s = segments[seg]
            shown = s.after if s.label in ("fade_in", "appear") else s.before  # the prop that comes or goes
            _draw_prop(frame, shown, s.label, _progress(t, s))
        else:
            _draw_prop(frame, prop)
        for n in active:
            if n.kind == "occlusion":
                _draw_occlusion(frame, n, t)
        if scene.noise > 0:
            frame += cv2.randn(noise, 0.0, scene.noise)
        shake = scene.shake + sum(6.0 for n in active if n.kind == "shake")
        if shake > 0:
            dx, dy = rng.normal(0, shake, 2)
            frame = cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REFLECT)
        yield np.clip(frame, 0, 255).astype(np.uint8)


def _draw_drift_by(frame: np.ndarray, n: Nuisance, t: int) -> None:
    """A small object crossing the top or bottom of the frame."""
    r = np.random.default_rng(n.seed)
    h, w = frame.shape[:2]
    x = (t - n.start) / max(n.end - n.start - 1, 1)
    if r.random() < 0.5:
        x = 1 - x
    y = h * (0.12 if r.random() < 0.5 else 0.88)
    radius = min(w, h) * r.uniform(0.05, 0.08)
    color = tuple(float(c) for c in r.uniform(0, 255, 3))
    cv2.fillPoly(frame, [_polygon(SHAPES[r.integers(len(SHAPES))], x * w, y, radius, 0)], color)


def _draw_occlusion(frame: np.ndarray, n: Nuisance, t: int) -> None:
    """Something dark passing close to the camera: a wide band sweeping across the frame."""
    r = np.random.default_rng(n.seed)
    h, w = frame.shape[:2]
    band = w * r.uniform(0.15, 0.3)
    x = -band + (w + band) * (t - n.start) / max(n.end - n.start - 1, 1)
    shade = float(r.uniform(10, 60))
    cv2.rectangle(frame, (int(x), 0), (int(x + band), h), (shade, shade, shade), -1)


# ---------------------------------------------------------------------- writing
def _write_stream(job: tuple[Path, StreamPlan]) -> None:
    path, plan = job
    write_video(path, render_stream(plan), plan.fps, (plan.width, plan.height))


def write_streams(
    out: Path, *, streams: int, seconds: float, seed: int, subset: str = "validation", workers: int = 1,
    progress: bool = True,
) -> Path:  # fmt: skip
    """Write `out/stream_NNNN.mp4` and `out/annotations.json`; returns the annotations' path."""
    if streams < 1:
        raise ConfigError(f"--streams must be >= 1, got {streams}")
    if seconds < 10:
        raise ConfigError(f"--stream-seconds must be >= 10 (an action plus idle time around it), got {seconds}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out.mkdir(parents=True, exist_ok=True)
    plans = [plan_stream(seed, k, seconds) for k in range(streams)]
    jobs = [(out / f"{p.name}.mp4", p) for p in plans]
    render_jobs(_write_stream, jobs, workers=workers, desc="streams", unit="stream", progress=progress)
    annotations = {
        "version": "vtn-edge streams 1",
        "labels": list(CORE_CLASSES),
        "background": BACKGROUND,
        "database": {p.name: p.annotation(subset) for p in plans},
    }
    path = out / ANNOTATIONS
    path.with_suffix(".partial").write_text(json.dumps(annotations, indent=1))
    path.with_suffix(".partial").replace(path)
    return path
