"""A camera monitor for an edge box: live sources -> StreamingRecognizer -> action events.

`examples/rtsp_monitor.py` (or `python -m vtn_edge.monitor`) is the command; the parts:
events (start/end events from per-frame labels, JSON-lines sink), mqtt (publisher),
homeassistant (discovery), metrics (Prometheus), clips (MP4 around events), snapshots (JPEG per
event), preview (MJPEG page), zones, site (the site file), app (wiring) and cli (flags, signals).
Needs the `monitor` extra (paho-mqtt, prometheus-client) only for MQTT and metrics.
"""
