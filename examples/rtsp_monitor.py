#!/usr/bin/env python3
"""Watch cameras on an edge box and publish action events.

    python examples/rtsp_monitor.py --model ir_models/mobilenetv2-rgb-int8 \
        --source rtsp://127.0.0.1:8554/stream --events events.jsonl \
        --mqtt mqtt://127.0.0.1:1883/vtn/events --metrics-port 9400 --preview-port 8080

The monitor lives in `vtn_edge.monitor` (this file runs `python -m vtn_edge.monitor`); see the
README's "Camera monitor" section for the event schema and the metric names.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("vtn_edge.monitor", run_name="__main__", alter_sys=True)
