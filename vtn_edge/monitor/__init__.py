"""A camera monitor for an edge box: live sources -> StreamingRecognizer -> action events.

`examples/rtsp_monitor.py` (or `python -m vtn_edge.monitor`) is the command; the parts:
events (start/end events from per-frame labels, JSON-lines sink), mqtt (publisher), metrics
(Prometheus), clips (MP4 around events), preview (MJPEG page) and app (wiring, signals).
Needs the `monitor` extra (paho-mqtt, prometheus-client) only for MQTT and metrics.
"""
