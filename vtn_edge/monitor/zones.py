"""Zones: rectangles of a camera's frame, each watched as its own stream of the shared recognizer.

One decode, N windows: every zone is a view into the same decoded frame (no copy), pushed to its
own recognizer stream, with its own label policy, events, state and metrics. A camera without
zones has one, `FULL_FRAME`, whose name is None; events then carry `"zone": null`. The model sees
the centre square of each zone, as it sees the centre square of a whole frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vtn_edge.smoothing import LabelPolicy

Box = tuple[float, float, float, float]  # x, y, width, height as fractions of the frame


def box_problem(box: object) -> str | None:
    """Why `box` cannot be a zone (None when it can): four fractions, inside the frame, some area."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return f"must be [x, y, width, height] (four fractions of the frame), got {box!r}"
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in box):
        return f"must hold four numbers, got {box!r}"
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return f"has no area (width {w}, height {h}): both must be above 0"
    if x < 0 or y < 0 or x + w > 1 + 1e-9 or y + h > 1 + 1e-9:
        return f"reaches outside the frame: x={x}, y={y}, x+width={x + w:g}, y+height={y + h:g} must lie in 0..1"
    return None


@dataclass(frozen=True)
class Zone:
    name: str | None = None  # None: the camera's whole frame
    box: Box = (0.0, 0.0, 1.0, 1.0)
    policy: LabelPolicy | None = None  # None: the camera's policy
    actions: tuple[str, ...] | None = None  # the actions that raise events; None: the camera's

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the zone in a frame of this size; at least one pixel each way."""
        x, y, w, h = self.box
        x0, y0 = min(int(round(x * width)), width - 1), min(int(round(y * height)), height - 1)
        x1, y1 = max(int(round((x + w) * width)), x0 + 1), max(int(round((y + h) * height)), y0 + 1)
        return x0, y0, min(x1, width), min(y1, height)

    def crop(self, frame: np.ndarray) -> np.ndarray:
        """The zone's part of the frame: a view, not a copy."""
        if self.name is None:
            return frame
        x0, y0, x1, y1 = self.pixels(frame.shape[1], frame.shape[0])
        return frame[y0:y1, x0:x1]

    def stream_name(self, camera: str) -> str:
        """How logs and the preview call this zone's stream: 'door' or 'door/left'."""
        return camera if self.name is None else f"{camera}/{self.name}"


FULL_FRAME = Zone()
