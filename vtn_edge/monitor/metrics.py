"""Prometheus metrics (prometheus-client) on their own registry, served on 127.0.0.1 by default.

| name | type | labels |
|---|---|---|
| vtn_frames_total | counter | source: frames labelled |
| vtn_frames_per_second | gauge | source: over the last few seconds |
| vtn_inference_latency_seconds | histogram | source: frame pushed -> its label |
| vtn_dropped_frames_total | counter | source: read from the camera but never processed (to stay live) |
| vtn_reconnects_total | counter | source |
| vtn_source_up | gauge | source: 1 while the camera delivers |
| vtn_current_label | gauge | source, label: 1 for the current label ("none" when there is none) |
| vtn_current_score | gauge | source |
| vtn_events_total | counter | source, label: events started |
| vtn_mqtt_connected | gauge | 1 while the broker is connected (only with --mqtt) |
"""

from __future__ import annotations

from vtn_edge.errors import VtnEdgeError, port_error
from vtn_edge.types import Prediction

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class MonitorMetrics:
    def __init__(self, sources: list[str]):
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:
            raise VtnEdgeError("--metrics-port needs prometheus-client: pip install 'vtn-edge[monitor]'") from None

        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("vtn_frames", "Frames labelled", ["source"], registry=r)
        self.fps = Gauge("vtn_frames_per_second", "Frames labelled per second, recent", ["source"], registry=r)
        self.latency = Histogram(
            "vtn_inference_latency_seconds",
            "Frame pushed to its label available",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dropped = Counter("vtn_dropped_frames", "Frames dropped to stay live", ["source"], registry=r)
        self.reconnects = Counter("vtn_reconnects", "Reconnections to the source", ["source"], registry=r)
        self.up = Gauge("vtn_source_up", "1 while the source delivers frames", ["source"], registry=r)
        self.label = Gauge("vtn_current_label", "1 for the current label of a source", ["source", "label"], registry=r)
        self.score = Gauge("vtn_current_score", "Score of the current label", ["source"], registry=r)
        self.events = Counter("vtn_events", "Action events started", ["source", "label"], registry=r)
        self.mqtt_connected = Gauge("vtn_mqtt_connected", "1 while the MQTT broker is connected", registry=r)
        self._current: dict[str, str] = {}
        self._synced: dict[tuple[str, str], int] = {}
        for s in sources:
            for metric in (self.frames, self.dropped, self.reconnects, self.up, self.score, self.latency, self.fps):
                metric.labels(s)
            self._set_label(s, "none")
        self._server = None

    def observe(self, source: str, p: Prediction) -> None:
        """Per prediction (the ordering thread)."""
        self.frames.labels(source).inc()
        self.latency.labels(source).observe(p.latency_ms / 1000)
        self.score.labels(source).set(p.score if p.label is not None else 0.0)
        self._set_label(source, p.label or "none")

    def sync_source(self, source: str, dropped: int, reconnects: int, up: bool, fps: float) -> None:
        """Copy a reader's running totals (counters only move forward) and the recent frame rate."""
        for name, counter, total in (("dropped", self.dropped, dropped), ("reconnects", self.reconnects, reconnects)):
            delta = total - self._synced.get((name, source), 0)
            if delta > 0:
                counter.labels(source).inc(delta)
                self._synced[(name, source)] = total
        self.up.labels(source).set(1 if up else 0)
        self.fps.labels(source).set(fps)

    def _set_label(self, source: str, label: str) -> None:
        old = self._current.get(source)
        if old == label:
            return
        if old is not None:
            self.label.remove(source, old)
        self.label.labels(source, label).set(1)
        self._current[source] = label

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
