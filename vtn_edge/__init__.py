"""vtn-edge runtime: streaming, per-frame action recognition with OpenVINO.

Torch-free by design: only openvino, numpy and opencv-python-headless. Heavy modules load on
first use, so `python -m vtn_edge bench --edge-profile` can still cap oneDNN's instruction set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["StreamingRecognizer", "Prediction", "LabelPolicy", "CompileOptions", "load_model", "VtnEdgeError"]

if TYPE_CHECKING:
    from vtn_edge.errors import VtnEdgeError
    from vtn_edge.model import CompileOptions, load_model
    from vtn_edge.recognizer import StreamingRecognizer
    from vtn_edge.smoothing import LabelPolicy
    from vtn_edge.types import Prediction

_LAZY = {
    "StreamingRecognizer": "vtn_edge.recognizer",
    "Prediction": "vtn_edge.types",
    "LabelPolicy": "vtn_edge.smoothing",
    "CompileOptions": "vtn_edge.model",
    "load_model": "vtn_edge.model",
    "VtnEdgeError": "vtn_edge.errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vtn_edge' has no attribute {name!r}")
