"""Prometheus metrics (prometheus-client) on their own registry, served on 127.0.0.1 by default.

`source` is the camera; `zone` its zone, "" for a camera's whole frame (a camera without zones).

| name | type | labels |
|---|---|---|
| vtn_frames_total | counter | source, zone: frames labelled |
| vtn_frames_per_second | gauge | source, zone: over the last few seconds |
| vtn_inference_latency_seconds | histogram | source, zone: frame pushed -> its label |
| vtn_dropped_frames_total | counter | source: read from the camera but never processed (to stay live) |
| vtn_reconnects_total | counter | source |
| vtn_source_up | gauge | source: 1 while the camera delivers |
| vtn_current_label | gauge | source, zone, label: 1 for the current label ("none" when there is none) |
| vtn_current_score | gauge | source, zone |
| vtn_events_total | counter | source, zone, label: events started |
| vtn_mqtt_connected | gauge | 1 while the broker is connected (only with --mqtt) |
"""

from __future__ import annotations

from vtn_edge.errors import VtnEdgeError, port_error
from vtn_edge.monitor.events import ActionEvent
from vtn_edge.types import Prediction

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class MonitorMetrics:
    def __init__(self, sources: dict[str, list[str | None]]):
        """`sources`: each camera and its zones (None: the whole frame)."""
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:
            raise VtnEdgeError("--metrics-port needs prometheus-client: pip install 'vtn-edge[monitor]'") from None

        self.registry = CollectorRegistry()
        r = self.registry
        zone = ["source", "zone"]
        self.frames = Counter("vtn_frames", "Frames labelled", zone, registry=r)
        self.fps = Gauge("vtn_frames_per_second", "Frames labelled per second, recent", zone, registry=r)
        self.latency = Histogram(
            "vtn_inference_latency_seconds",
            "Frame pushed to its label available",
            zone,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dropped = Counter("vtn_dropped_frames", "Frames dropped to stay live", ["source"], registry=r)
        self.reconnects = Counter("vtn_reconnects", "Reconnections to the source", ["source"], registry=r)
        self.up = Gauge("vtn_source_up", "1 while the source delivers frames", ["source"], registry=r)
        self.label = Gauge("vtn_current_label", "1 for the current label of a stream", [*zone, "label"], registry=r)
        self.score = Gauge("vtn_current_score", "Score of the current label", zone, registry=r)
        self.events = Counter("vtn_events", "Action events started", [*zone, "label"], registry=r)
        self.mqtt_connected = Gauge("vtn_mqtt_connected", "1 while the MQTT broker is connected", registry=r)
        self._current: dict[tuple[str, str], str] = {}
        self._synced: dict[tuple[str, str], int] = {}
        for source, zones in sources.items():
            for metric in (self.dropped, self.reconnects, self.up):
                metric.labels(source)
            for z in zones:
                for metric in (self.frames, self.score, self.latency, self.fps):
                    metric.labels(source, z or "")
                self._set_label((source, z or ""), "none")
        self._server = None

    def observe(self, source: str, zone: str | None, p: Prediction) -> None:
        """Per prediction (the ordering thread)."""
        key = (source, zone or "")
        self.frames.labels(*key).inc()
        self.latency.labels(*key).observe(p.latency_ms / 1000)
        self.score.labels(*key).set(p.score if p.label is not None else 0.0)
        self._set_label(key, p.label or "none")

    def set_fps(self, source: str, zone: str | None, fps: float) -> None:
        self.fps.labels(source, zone or "").set(fps)

    def handle(self, event: ActionEvent) -> ActionEvent:
        """As an event sink: count events as they start."""
        if event.event == "start":
            self.events.labels(event.source, event.zone or "", event.label).inc()
        return event

    def sync_source(self, source: str, dropped: int, reconnects: int, up: bool) -> None:
        """Copy a reader's running totals (counters only move forward) and whether it delivers."""
        for name, counter, total in (("dropped", self.dropped, dropped), ("reconnects", self.reconnects, reconnects)):
            delta = total - self._synced.get((name, source), 0)
            if delta > 0:
                counter.labels(source).inc(delta)
                self._synced[(name, source)] = total
        self.up.labels(source).set(1 if up else 0)

    def _set_label(self, key: tuple[str, str], label: str) -> None:
        old = self._current.get(key)
        if old == label:
            return
        if old is not None:
            self.label.remove(*key, old)
        self.label.labels(*key, label).set(1)
        self._current[key] = label

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import start_http_server

        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise port_error("metrics", host, port, exc, "--metrics-port") from None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
