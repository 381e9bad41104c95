"""One picture per stream: annotated events, the monitor's events, and what the model said per frame.

Drawn with OpenCV (the runtime has no plotting library). Rows, top to bottom: the annotation as a
bar of coloured segments, the predicted events below it, the per-frame top class of the raw
decoder output (its brightness is the score; background classes grey) and the top score as a
line with the policy's threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vtn_edge.online import Recording, Replay, Span, event_spans

WIDTH = 1600
LEFT = 80  # room for the row names
ROW = 28
PLOT = 70
FONT = cv2.FONT_HERSHEY_SIMPLEX
GREY = (170, 170, 170)


def class_colours(labels: Sequence[str], background: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """A BGR colour per action class (hues spread so that neighbouring classes, often a reversal
    pair, differ; alternate classes darker), grey for background."""
    actions = [label for label in labels if label not in background]
    n = max(len(actions), 1)
    colours = {}
    for i, label in enumerate(actions):
        hue = int(180 * ((i * 5) % n) / n) if n % 5 else int(180 * i / n)
        hsv = np.uint8([[[hue, 210, 240 if i % 2 else 170]]])
        colours[label] = tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
    return colours | {label: GREY for label in background}


def draw_timeline(
    rec: Recording, rep: Replay, background: Sequence[str], threshold: float, path: Path, title: str = ""
) -> Path:
    stream = rec.stream
    colours = class_colours(rec.labels, background)
    height = 40 + 3 * (ROW + 8) + PLOT + 70
    img = np.full((height, WIDTH, 3), 255, np.uint8)
    scale = (WIDTH - LEFT - 20) / stream.duration
    x_of = lambda t: int(LEFT + t * scale)  # noqa: E731
    cv2.putText(img, title or stream.name, (10, 22), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    y = 40
    for name, spans in (("truth", stream.truth), ("events", event_spans(rep.events))):
        _row_name(img, name, y)
        cv2.rectangle(img, (LEFT, y), (WIDTH - 20, y + ROW), (245, 245, 245), -1)
        for s in spans:
            _segment(img, s, x_of, y, colours)
        y += ROW + 8
    _row_name(img, "top-1", y)
    top = rec.probs.argmax(axis=1)
    for x in range(LEFT, WIDTH - 20):
        i = min(int((x - LEFT) / scale * stream.fps), stream.frames - 1)
        if not rec.window_full[i]:
            continue
        shade = float(rec.probs[i, top[i]])
        base = np.array(colours[rec.labels[top[i]]], float)
        cv2.line(img, (x, y), (x, y + ROW), tuple(int(c) for c in 255 - (255 - base) * shade), 1)
    y += ROW + 8
    _row_name(img, "score", y + PLOT // 2)
    cv2.rectangle(img, (LEFT, y), (WIDTH - 20, y + PLOT), (200, 200, 200), 1)
    ty = int(y + PLOT * (1 - threshold))
    cv2.line(img, (LEFT, ty), (WIDTH - 20, ty), (0, 0, 200), 1, cv2.LINE_AA)
    full = np.flatnonzero(rec.window_full)
    if len(full):
        pts = [(x_of(i / stream.fps), int(y + PLOT * (1 - rec.probs[i].max()))) for i in full]
        cv2.polylines(img, [np.int32(pts)], False, (60, 60, 60), 1, cv2.LINE_AA)
    y += PLOT + 14
    for t in range(0, int(stream.duration) + 1, 10):
        cv2.line(img, (x_of(t), y - 14), (x_of(t), y - 10), (0, 0, 0), 1)
        cv2.putText(img, f"{t}s", (x_of(t) - 8, y + 2), FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    _legend(img, colours, y + 22)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")
    return path


def _row_name(img: np.ndarray, name: str, y: int) -> None:
    cv2.putText(img, name, (8, y + 18), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)


def _segment(img: np.ndarray, s: Span, x_of, y: int, colours: dict) -> None:
    x0, x1 = x_of(s.start), max(x_of(s.end), x_of(s.start) + 1)
    cv2.rectangle(img, (x0, y), (x1, y + ROW), colours.get(s.label, (0, 0, 0)), -1)
    cv2.rectangle(img, (x0, y), (x1, y + ROW), (60, 60, 60), 1)
    text = s.label.replace("_", " ")
    if cv2.getTextSize(text, FONT, 0.33, 1)[0][0] < x1 - x0 + 30:
        cv2.putText(img, text, (x0 + 2, y + ROW - 8), FONT, 0.33, (0, 0, 0), 1, cv2.LINE_AA)


def _legend(img: np.ndarray, colours: dict, y: int) -> None:
    x = LEFT
    for label, colour in colours.items():
        width = cv2.getTextSize(label, FONT, 0.35, 1)[0][0]
        if x + width + 24 > WIDTH:
            break
        cv2.rectangle(img, (x, y - 9), (x + 12, y + 1), colour, -1)
        cv2.putText(img, label, (x + 15, y), FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        x += width + 30
