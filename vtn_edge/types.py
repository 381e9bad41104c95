"""Results the runtime hands out: frozen dataclasses, never tuples."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prediction:
    """The label for one pushed frame.

    Frames that did not run the encoder carry the newest decoder result of their stream. Until
    the stream has a full window of embeddings (`window_full` False) `label` is None: no partial
    windows are decoded. With a score threshold, `label` is also None while the (smoothed) top
    score stays below it.
    """

    stream: int
    frame_index: int
    timestamp: float
    label: str | None
    score: float
    top_k: tuple[tuple[str, float], ...]
    window_full: bool
    latency_ms: float
