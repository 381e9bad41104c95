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
    result: EvalResult, labels: Sequence[str], *, as_json: bool = False, confusion_png: Path | None = None
) -> None:
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
        write_confusion_png(result.confusion, labels, confusion_png)


def write_confusion_png(confusion: np.ndarray, labels: Sequence[str], path: Path, cell: int = 28) -> None:
    """A row-normalised confusion matrix drawn with OpenCV (no plotting library in the runtime)."""
    n = len(labels)
    margin = 8 * max(len(x) for x in labels) + 10
    img = np.full((margin + n * cell + 10, margin + n * cell + 10, 3), 255, np.uint8)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    for i in range(n):
        cv2.putText(
            img, labels[i], (4, margin + i * cell + cell // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1
        )
        for j in range(n):
            shade = int(255 * (1 - rows[i, j]))
            x0, y0 = margin + j * cell, margin + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), (255, shade, shade), -1)
            if confusion[i, j]:
                color = (255, 255, 255) if rows[i, j] > 0.5 else (0, 0, 0)
                cv2.putText(
                    img, str(confusion[i, j]), (x0 + 3, y0 + cell // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1
                )
    for j in range(n):
        cv2.putText(img, str(j), (margin + j * cell + 6, margin - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
