"""The monitor: N cameras share one compiled model; labels become events, metrics, clips, preview.

Threads: one reader per camera (newest frame only); this module's loop takes the newest frame of
each camera and pushes each of its zones (the whole frame when it has none) to that zone's
recognizer stream, as views of the one decoded frame; the recognizer's ordering thread calls
back with predictions in frame order, which feed the zones' event trackers, metrics and the
preview. A camera that drops keeps reconnecting while the others go on; after a reconnect its
windows start afresh. SIGINT/SIGTERM end open events, flush every sink and exit 0. The command
line is in `cli.py`.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vtn_edge import __version__
from vtn_edge.errors import FrameError, VtnEdgeError
from vtn_edge.live import LiveOptions, LiveSource, describe, parse_source
from vtn_edge.metadata import Manifest
from vtn_edge.model import CompileOptions, load_model
from vtn_edge.monitor.clips import ClipOptions, ClipSink
from vtn_edge.monitor.events import (
    MONITOR_EVENT_RULES,
    SHUTDOWN,
    SOURCE_ENDED,
    SOURCE_LOST,
    ActionEvent,
    EventRules,
    EventTracker,
    JsonLinesWriter,
    ignored_labels,
)
from vtn_edge.monitor.homeassistant import Discovery, object_id
from vtn_edge.monitor.mqtt import MqttPublisher, TlsOptions, parse_mqtt_url
from vtn_edge.monitor.preview import PreviewServer, RecentEvents, SourceView, ZoneView, explain
from vtn_edge.monitor.sinks import EventSink, LogSink
from vtn_edge.monitor.snapshots import SnapshotKeeper, SnapshotSink, check_folder
from vtn_edge.monitor.zones import FULL_FRAME, Zone
from vtn_edge.recognizer import StreamingRecognizer
from vtn_edge.report import format_table
from vtn_edge.smoothing import MONITOR_POLICY, LabelPolicy
from vtn_edge.types import Prediction

log = logging.getLogger("vtn_edge.monitor")
LATENCIES_KEPT = 20_000  # per zone, for the summary's latency: the last 11 minutes of a 30 fps camera


@dataclass(frozen=True)
class MonitorConfig:
    model: Path
    sources: list[str]
    names: list[str] = field(default_factory=list)
    labels: Path | None = None
    events_file: Path | None = None
    events_stdout: bool = False
    mqtt: str | None = None
    mqtt_tls: TlsOptions = TlsOptions()
    ha_discovery: str | None = None  # Home Assistant discovery prefix
    metrics_port: int | None = None
    preview_port: int | None = None
    bind: str = "127.0.0.1"  # metrics and preview
    clips: ClipOptions | None = None
    snapshots: Path | None = None
    policy: LabelPolicy = MONITOR_POLICY
    camera_policies: list[LabelPolicy] | None = None  # one per source (a site file's cameras), else `policy`
    actions: tuple[str, ...] | None = None  # the actions that raise events; None: every action
    camera_actions: list[tuple[str, ...] | None] | None = None  # per source (a site file's), else `actions`
    event_rules: EventRules = MONITOR_EVENT_RULES
    zones: list[list[Zone]] | None = None  # per source; none given: the whole frame is one zone
    live: LiveOptions = LiveOptions()
    compile_options: CompileOptions | None = None
    decode_every: int = 1  # StreamingRecognizer's: decode every N-th window (less CPU, fewer labels)
    duration_s: float | None = None
    status_every_s: float = 10.0


@dataclass
class _Stream:
    """One zone of one camera: one recognizer stream, with its own events and label."""

    index: int  # the recognizer's stream
    camera: int  # index into Monitor.cameras
    camera_name: str
    zone: Zone
    tracker: EventTracker
    policy: LabelPolicy
    ignore: frozenset[str]  # labels that raise no event here: the background, and actions not watched
    snapshots: SnapshotKeeper | None = None
    label: str | None = None
    score: float = 0.0
    why: str = "starting"  # why there is no label, for the preview
    frames: int = 0
    events: int = 0
    rate: tuple[float, int] = (0.0, 0)  # (since, frames) for the frames/s estimate
    fps: float = 0.0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES_KEPT))  # push -> label

    @property
    def name(self) -> str:
        return self.zone.stream_name(self.camera_name)


@dataclass
class _Camera:
    name: str
    source: LiveSource
    streams: list[_Stream]
    connection: int = 0
    frame: np.ndarray | None = None  # newest processed frame, for the preview
    frames: int = 0  # frames taken from the reader and pushed
    unusable: int = 0  # taken without pixels where the schedule needed them (counted as dropped)

    @property
    def dropped(self) -> int:
        return self.source.stats.frames_dropped + self.unusable


@dataclass(frozen=True)
class SourceSummary:
    name: str
    frames: int  # frames processed (each pushed to every zone of the camera)
    fps: float
    dropped: int
    reconnects: int
    events: int  # over all its zones
    zones: int = 1
    latency_ms: tuple[float, float] | None = None  # p50, p99 of push -> label over its last labels; None: none


@dataclass(frozen=True)
class MonitorSummary:
    seconds: float
    sources: list[SourceSummary]
    rss_mb_start: float
    rss_mb_end: float
    mqtt_unacknowledged: int | None

    def table(self) -> str:
        rows = [
            (s.name, s.zones, s.frames, f"{s.fps:.1f}", s.dropped, s.reconnects, s.events,
             "-" if s.latency_ms is None else f"{s.latency_ms[0]:.0f} / {s.latency_ms[1]:.0f}")
            for s in self.sources
        ]  # fmt: skip
        headers = ["source", "zones", "frames", "frames/s", "dropped", "reconnects", "events", "latency p50 / p99 ms"]
        text = format_table(headers, rows)
        return (
            f"ran {self.seconds:.0f} s; resident memory {self.rss_mb_start:.1f} MB at start, "
            f"{self.rss_mb_end:.1f} MB at end\n{text}"
        )


def _ignored_per_zone(
    config: MonitorConfig, manifest: Manifest, names: list[str], zones: list[list[Zone]]
) -> list[list[frozenset[str]]]:
    """Per camera, per zone: the labels that raise no event there (its `actions`: the zone's, else
    its camera's, else the monitor's; None: every action). Unknown action names stop the monitor."""
    ignored = []
    for c, name in enumerate(names):
        camera_actions = config.camera_actions[c] if config.camera_actions else None
        ignored.append([
            ignored_labels(
                manifest.labels, manifest.background, zone.actions or camera_actions or config.actions,
                f"actions of camera {name!r}" + (f", zone {zone.name!r}" if zone.name else ""),
            )
            for zone in zones[c]
        ])  # fmt: skip
    return ignored


def resident_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Monitor:
    def __init__(self, config: MonitorConfig):
        self.config = config
        parsed = [parse_source(s) for s in config.sources]  # bad sources fail before anything starts
        if not parsed:
            raise VtnEdgeError("give at least one --source (RTSP URL, video file or camera index)")
        if config.names and len(config.names) != len(parsed):
            raise VtnEdgeError(f"{len(config.names)} --name for {len(parsed)} --source: give one name per source")
        names = config.names or [f"cam{i}" for i in range(len(parsed))]
        if len(set(names)) != len(names):
            raise VtnEdgeError(f"source names must be unique, got {names}")
        zones = [list(z) or [FULL_FRAME] for z in config.zones] if config.zones else [[FULL_FRAME]] * len(parsed)
        if len(zones) != len(parsed):
            raise VtnEdgeError(f"zones are given for {len(zones)} cameras, but there are {len(parsed)}")
        # a bad URL is a startup error, an absent broker is not
        self._mqtt_target = parse_mqtt_url(config.mqtt) if config.mqtt else None
        if config.ha_discovery is not None and self._mqtt_target is None:
            raise VtnEdgeError("--ha-discovery announces cameras over MQTT: add --mqtt mqtt://host:port/topic")
        keys = [object_id(z.stream_name(n)) for n, zs in zip(names, zones) for z in zs]
        if self._mqtt_target is not None and len(set(keys)) != len(keys):
            raise VtnEdgeError(
                f"camera and zone names {sorted(keys)} collide as MQTT topics and ids: make them differ in letters "
                "or digits"
            )
        if config.snapshots is not None:
            check_folder(config.snapshots)
        model = load_model(config.model, labels=config.labels)
        ignored = _ignored_per_zone(config, model.manifest, names, zones)  # unknown actions: before anything opens
        self._closers: list = []
        try:
            self._open_sinks(config, model, names, zones)
            self._open_cameras(config, model, parsed, names, zones, ignored)
        except BaseException:
            self._close_all()
            raise

    def _open_sinks(self, config: MonitorConfig, model, names: list[str], zones: list[list[Zone]]) -> None:
        self.metrics = None
        if config.metrics_port is not None:
            from vtn_edge.monitor.metrics import MonitorMetrics

            self.metrics = MonitorMetrics({n: [z.name for z in zs] for n, zs in zip(names, zones)})
            self.metrics.serve(config.metrics_port, config.bind)
            self._closers.append(self.metrics.close)
        self.preview, self.recent = None, None
        if config.preview_port is not None:
            self.recent = RecentEvents()
            self.preview = PreviewServer(self.views, config.preview_port, config.bind, snapshots=config.snapshots)
            self._closers.append(self.preview.close)
        self.writer = None
        if config.events_file or config.events_stdout:
            self.writer = JsonLinesWriter(config.events_file, sys.stdout if config.events_stdout else None)
            self._closers.append(self.writer.close)
        self.mqtt = None
        if self._mqtt_target is not None:
            discovery = None
            if config.ha_discovery is not None:
                discovery = Discovery(config.ha_discovery, socket.gethostname(), model.manifest.arch, __version__)
            streams = tuple((n, z.name) for n, zs in zip(names, zones) for z in zs)
            self.mqtt = MqttPublisher(self._mqtt_target, config.mqtt_tls, streams=streams, discovery=discovery)
            self._closers.append(self.mqtt.close)
            for camera, zone in streams:  # a consumer that connects later sees every camera, idle ones too
                self.mqtt.publish_state(camera, zone, None, None, time.time())

    def _open_cameras(
        self,
        config: MonitorConfig,
        model,
        parsed: list,
        names: list[str],
        zones: list,
        ignored: list[list[frozenset[str]]],
    ) -> None:
        self._wake = threading.Event()
        self._background = model.manifest.background
        self.cameras: list[_Camera] = []
        self.streams: list[_Stream] = []  # by recognizer stream index
        policies = []
        for c, (source, name) in enumerate(zip(parsed, names)):
            camera_policy = config.camera_policies[c] if config.camera_policies else config.policy
            camera = _Camera(name, LiveSource(source, config.live, name=name, wake=self._wake), [])
            for zone, ignore in zip(zones[c], ignored[c]):
                i = len(self.streams)
                tracker = EventTracker(
                    name, lambda e, i=i: self._emit(i, e), ignore=ignore, zone=zone.name, rules=config.event_rules
                )  # fmt: skip
                snapshots = SnapshotKeeper(config.snapshots, name, zone) if config.snapshots is not None else None
                stream = _Stream(i, c, name, zone, tracker, zone.policy or camera_policy, ignore, snapshots)
                camera.streams.append(stream)
                self.streams.append(stream)
                policies.append(stream.policy)
            self.cameras.append(camera)
        self.clips = None
        if config.clips is not None:  # a clip's before part counts from the dated-back start
            self.clips = ClipSink(replace(config.clips, start_offset_s=config.event_rules.start_offset))
        snapshots = None
        if config.snapshots is not None:
            snapshots = SnapshotSink({(s.camera_name, s.zone.name): s.snapshots for s in self.streams})
        # in this order: what adds to an event (clip, snapshot) before what reports it
        reporters = [LogSink(), self.recent, self.metrics, self.writer, self.mqtt]
        self.sinks: list[EventSink] = [s for s in (self.clips, snapshots, *reporters) if s is not None]
        options = (config.compile_options or CompileOptions()).for_streams(len(self.streams))
        self.recognizer = StreamingRecognizer(
            model, streams=len(self.streams), options=options, policy=policies, decode_every=config.decode_every
        )
        self._closers.append(self.recognizer.close)
        self.recognizer.on_prediction(self._on_prediction)

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event) -> MonitorSummary:
        started, rss_start = time.monotonic(), resident_mb()
        for cam in self.cameras:
            cam.source.start()
            zones = ", ".join(s.zone.name for s in cam.streams if s.zone.name is not None)
            log.info("%s: watching %s%s", cam.name, describe(cam.source.source), f" (zones {zones})" if zones else "")
        last_status = last_sync = started
        try:
            while not stop.is_set():
                if self.config.duration_s is not None and time.monotonic() - started >= self.config.duration_s:
                    break
                self._wake.wait(0.2)
                self._wake.clear()
                for cam in self.cameras:
                    self._step(cam)
                if all(c.source.stats.finished and not self._open_events(c) for c in self.cameras):
                    log.info("every source has ended")
                    break
                now = time.monotonic()
                if self.metrics is not None and now - last_sync >= 0.5:
                    last_sync = now
                    self._sync_metrics()
                if self.config.status_every_s and now - last_status >= self.config.status_every_s:
                    last_status = now
                    statuses = "; ".join(self._status(c) for c in self.cameras)
                    log.info("status: %s; resident memory %.1f MB", statuses, resident_mb())
        finally:
            mqtt_left = self._shutdown()
        seconds = time.monotonic() - started
        return MonitorSummary(seconds, [self._summary(c, seconds) for c in self.cameras], rss_start, resident_mb(),
                              mqtt_left)  # fmt: skip

    @staticmethod
    def _open_events(cam: _Camera) -> bool:
        return any(s.tracker.current is not None for s in cam.streams)

    def _step(self, cam: _Camera) -> None:
        item = cam.source.take()
        if item is None:
            stats = cam.source.stats
            if not stats.connected:
                for s in cam.streams:
                    s.fps = 0.0
            if not stats.connected and self._open_events(cam):
                for s in cam.streams:
                    self.recognizer.flush(s.index)  # label what was in flight before closing the event
                    s.tracker.close(SOURCE_ENDED if stats.finished else SOURCE_LOST)
                    s.label, s.score = None, 0.0
            return
        if item.connection != cam.connection:
            if cam.connection:  # a reconnected camera: do not mix old and new frames in one window
                for s in cam.streams:
                    self.recognizer.flush(s.index)
                    s.tracker.close(SOURCE_LOST)
                    self.recognizer.reset(s.index)
            cam.connection = item.connection
        if item.frame is None and self._needs_pixels(cam):
            cam.unusable += 1  # grabbed without pixels just before the schedule asked for them: rare
            cam.source.want_pixels(True)
            return
        for s in cam.streams:
            crop = None if item.frame is None else s.zone.crop(item.frame)
            try:
                self.recognizer.push(crop, stream=s.index, timestamp=item.timestamp)
            except FrameError as exc:  # one bad frame from a camera must not stop the monitor
                log.warning("%s: frame skipped: %s", s.name, exc)
                return
            if s.snapshots is not None and item.frame is not None:
                s.snapshots.add_frame(item.timestamp, item.frame)
        cam.frames += 1
        cam.source.want_pixels(self._needs_pixels(cam))
        if item.frame is not None:
            cam.frame = item.frame
        if self.clips is not None:
            self.clips.add(cam.name, item.frame, item.timestamp, cam.source.stats.fps)

    def _needs_pixels(self, cam: _Camera) -> bool:
        """Whether the camera's next frame must be converted to pixels: the schedule encodes it, or
        clips record every frame. The others are only grabbed (see LiveSource.want_pixels)."""
        return self.clips is not None or any(self.recognizer.needs_pixels(s.index) for s in cam.streams)

    def _sync_metrics(self) -> None:
        for cam in self.cameras:
            s = cam.source.stats
            self.metrics.sync_source(cam.name, cam.dropped, s.reconnects, s.connected)
            for st in cam.streams:
                self.metrics.set_fps(cam.name, st.zone.name, st.fps)
        if self.mqtt is not None:
            self.metrics.mqtt_connected.set(1 if self.mqtt.connected.is_set() else 0)

    def _status(self, cam: _Camera) -> str:
        s = cam.source.stats
        state = "up" if s.connected else ("ended" if s.finished else "DOWN")
        labels = " ".join(
            f"{'' if st.zone.name is None else st.zone.name + ':'}{st.label} ({st.score:.2f})" for st in cam.streams
        )
        fps = cam.streams[0].fps
        return f"{cam.name} {state} {fps:.1f} fps label={labels} dropped={cam.dropped} reconnects={s.reconnects}"

    def _summary(self, cam: _Camera, seconds: float) -> SourceSummary:
        stats = cam.source.stats
        latencies = [ms for s in cam.streams for ms in list(s.latencies_ms)]
        latency = tuple(float(x) for x in np.percentile(latencies, [50, 99])) if latencies else None
        return SourceSummary(cam.name, cam.frames, cam.frames / max(seconds, 1e-9), cam.dropped,
                             stats.reconnects, sum(s.events for s in cam.streams), len(cam.streams),
                             latency)  # fmt: skip

    # ------------------------------------------------------------------ the recognizer's ordering thread
    def _on_prediction(self, p: Prediction) -> None:
        st = self.streams[p.stream]
        st.frames += 1
        st.latencies_ms.append(p.latency_ms)
        st.label, st.score = p.label, p.score
        st.why = explain(p, st.policy, self._background, st.ignore)
        since, count = st.rate
        if p.timestamp - since >= 2.0:
            st.fps = count / (p.timestamp - since) if since else 0.0
            st.rate = (p.timestamp, 0)
        else:
            st.rate = (since, count + 1)
        if self.metrics is not None:
            self.metrics.observe(st.camera_name, st.zone.name, p)
        if st.snapshots is not None:
            st.snapshots.observe(p.timestamp, p.score)
        st.tracker.update(p)
        current = st.tracker.current
        if st.snapshots is not None and current is not None and current.label == p.label:
            st.snapshots.consider()

    def _emit(self, i: int, event: ActionEvent) -> None:
        if event.event == "start":
            self.streams[i].events += 1
        for sink in self.sinks:
            event = sink.handle(event)

    # ------------------------------------------------------------------ the preview's threads
    def views(self) -> list[SourceView]:
        views = []
        for cam in self.cameras:
            whole = cam.streams[0] if cam.streams[0].zone.name is None else None
            zones = tuple(
                ZoneView(s.zone.name, s.zone.box, s.label, s.score, s.why) for s in cam.streams if s is not whole
            )
            label, score, why = (whole.label, whole.score, whole.why) if whole is not None else (None, 0.0, "")
            stats = cam.source.stats
            state = "up" if stats.connected else ("ended" if stats.finished else "reconnecting")
            events = self.recent.newest_first(cam.name) if self.recent is not None else ()
            views.append(SourceView(cam.name, cam.frame, label, score, cam.streams[0].fps, stats.connected, zones,
                                    why, state, events))  # fmt: skip
        return views

    # ------------------------------------------------------------------ shutdown
    def _shutdown(self) -> int | None:
        for cam in self.cameras:
            cam.source.close(timeout=0)
        try:
            self.recognizer.flush(timeout=5)
        except VtnEdgeError as exc:
            log.warning("shutdown: %s", exc)
        for st in self.streams:
            st.tracker.close(SHUTDOWN)
        if self.clips is not None:
            self.clips.close()
        mqtt_left = self.mqtt.close(timeout=2) if self.mqtt is not None else None
        self._close_all()
        for cam in self.cameras:
            cam.source.close(timeout=0.5)
        return mqtt_left

    def _close_all(self) -> None:
        while self._closers:
            try:
                self._closers.pop()()
            except Exception:
                log.exception("shutdown step failed")
