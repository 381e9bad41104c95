"""vtn-edge runtime: streaming, per-frame action recognition with OpenVINO.

Torch-free by design: only openvino, numpy and opencv-python-headless.
"""

__version__ = "0.1.0"
