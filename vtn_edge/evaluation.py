"""Printing evaluation results (tables, JSON, a confusion-matrix PNG) the same way on both sides."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vtn_edge.metrics import EvalResult, format_confusion
from vtn_edge.report import format_table


def report_evaluation(
    result: EvalResult,
    labels: Sequence[str],
    *,
    as_json: bool = False,
    confusion_png: Path | None = None,
    what: str = "",
) -> None:
    """Prints the result; `what` (for example "model X on data Y") titles the confusion picture."""
    if as_json:
        print(
            json.dumps(
                {
                    **result.summary(),
                    "per_class": dict(zip(labels, result.per_class_accuracy)),
                    "confusion": result.confusion.tolist(),
                    "skipped": list(result.skipped),
                }
            )
        )
    else:
        s = result.summary()
        print(
            format_table(
                ["videos", "clips", "clip@1", "Video@1", "top-5", "mean class acc"],
                [
                    (
                        s["videos"],
                        s["clips"],
                        f"{100 * s['clip@1']:.1f}",
                        f"{100 * s['video@1']:.1f}",
                        f"{100 * s['top5']:.1f}",
                        f"{100 * s['mean_class_acc']:.1f}",
                    )
                ],
            )
        )
        print(
            format_table(
                ["class", "Video@1"],
                [(n, f"{100 * a:.1f}") for n, a in zip(labels, result.per_class_accuracy) if not np.isnan(a)],
            )
        )
        print(format_confusion(result.confusion, labels))
        for line in result.skipped:
            print(f"skipped: {line}")
    if confusion_png is not None:
        s = result.summary()
        scores = f"Video@1 {100 * s['video@1']:.1f}%, clip@1 {100 * s['clip@1']:.1f}% ({s['videos']} videos)"
        write_confusion_png(result.confusion, labels, confusion_png, title=f"{what}: {scores}" if what else scores)


def write_confusion_png(
    confusion: np.ndarray, labels: Sequence[str], path: Path, *, title: str = "", cell: int = 28
) -> None:
    """A row-normalised confusion matrix drawn with OpenCV (no plotting library in the runtime): true
    classes down the left, predicted classes along the top (names written upwards), counts in the
    cells, `title` above."""
    n = len(labels)
    font, scale, black = cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0)
    names = 8 * max(len(x) for x in labels) + 10  # room for the longest class name
    top, left = 44 + names, 24 + names  # title and axis caption + names
    grid = n * cell
    width = max(left + grid + 10, 9 * len(title) + 20)
    img = np.full((top + grid + 10, width, 3), 255, np.uint8)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    for i in range(n):
        cv2.putText(img, labels[i], (left - names, top + i * cell + cell // 2 + 4), font, scale, black, 1)
        for j in range(n):
            x0, y0 = left + j * cell, top + i * cell
            shade = int(255 * (1 - rows[i, j]))
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), (255, shade, shade), -1)
            if confusion[i, j]:
                color = (255, 255, 255) if rows[i, j] > 0.5 else black
                cv2.putText(img, str(confusion[i, j]), (x0 + 3, y0 + cell // 2 + 4), font, 0.35, color, 1)
    # predicted class names, written upwards: drawn on a strip lying on its side, then turned
    strip = np.full((grid, names, 3), 255, np.uint8)
    for j in range(n):
        cv2.putText(strip, labels[n - 1 - j], (4, j * cell + cell // 2 + 4), font, scale, black, 1)
    img[top - names : top, left : left + grid] = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    cv2.putText(img, "predicted class", (left, top - names - 6), font, 0.45, black, 1)
    caption = np.full((20, grid, 3), 255, np.uint8)
    cv2.putText(caption, "true class", (4, 14), font, 0.45, black, 1)
    img[top : top + grid, 0:20] = cv2.rotate(caption, cv2.ROTATE_90_COUNTERCLOCKWISE)
    cv2.putText(img, title, (10, 20), font, 0.5, black, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write the confusion matrix picture {path}")
