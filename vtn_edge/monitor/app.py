"""The monitor: N live sources share one compiled model; labels become events, metrics, clips, preview.

Threads: one reader per source (newest frame only); this module's loop takes the newest frame of
each source and pushes it to the recognizer's stream for that source; the recognizer's ordering
thread calls back with predictions in frame order, which feed the event trackers, metrics and
preview. A source whose camera drops keeps reconnecting while the others go on; after a
reconnect its window starts afresh. SIGINT/SIGTERM end open events, flush every sink and exit 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vtn_edge import __version__
from vtn_edge.errors import FrameError, VtnEdgeError
from vtn_edge.live import LiveOptions, LiveSource, describe, parse_source
from vtn_edge.model import CompileOptions, load_model
from vtn_edge.monitor.clips import ClipOptions, ClipRecorder
from vtn_edge.monitor.events import SHUTDOWN, SOURCE_ENDED, SOURCE_LOST, ActionEvent, EventTracker, JsonLinesWriter
from vtn_edge.monitor.homeassistant import DEFAULT_PREFIX, Discovery, object_id
from vtn_edge.monitor.mqtt import MqttPublisher, TlsOptions, parse_mqtt_url
from vtn_edge.monitor.preview import PreviewServer, SourceView
from vtn_edge.monitor.site import load_site
from vtn_edge.monitor.snapshots import SnapshotKeeper, check_folder
from vtn_edge.recognizer import StreamingRecognizer
from vtn_edge.report import format_table
from vtn_edge.smoothing import MONITOR_POLICY, LabelPolicy, add_policy_flags, policy_from_flags
from vtn_edge.types import Prediction

log = logging.getLogger("vtn_edge.monitor")


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
    live: LiveOptions = LiveOptions()
    compile_options: CompileOptions | None = None
    duration_s: float | None = None
    status_every_s: float = 10.0


@dataclass
class _SourceState:
    name: str
    source: LiveSource
    tracker: EventTracker
    clips: ClipRecorder | None = None
    snapshots: SnapshotKeeper | None = None
    connection: int = 0
    frame: np.ndarray | None = None  # newest processed frame, for the preview
    label: str | None = None
    score: float = 0.0
    frames: int = 0
    events: int = 0
    rate: tuple[float, int] = (0.0, 0)  # (since, frames) for the frames/s estimate
    fps: float = 0.0


@dataclass(frozen=True)
class SourceSummary:
    name: str
    frames: int
    fps: float
    dropped: int
    reconnects: int
    events: int


@dataclass(frozen=True)
class MonitorSummary:
    seconds: float
    sources: list[SourceSummary]
    rss_mb_start: float
    rss_mb_end: float
    mqtt_unacknowledged: int | None

    def table(self) -> str:
        rows = [
            (s.name, s.frames, f"{s.fps:.1f}", s.dropped, s.reconnects, s.events) for s in self.sources
        ]  # fmt: skip
        text = format_table(["source", "frames", "frames/s", "dropped", "reconnects", "events"], rows)
        return (
            f"ran {self.seconds:.0f} s; resident memory {self.rss_mb_start:.1f} MB at start, "
            f"{self.rss_mb_end:.1f} MB at end\n{text}"
        )


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
        # a bad URL is a startup error, an absent broker is not
        self._mqtt_target = parse_mqtt_url(config.mqtt) if config.mqtt else None
        if config.ha_discovery is not None and self._mqtt_target is None:
            raise VtnEdgeError("--ha-discovery announces cameras over MQTT: add --mqtt mqtt://host:port/topic")
        if self._mqtt_target is not None and len({object_id(n) for n in names}) != len(names):
            raise VtnEdgeError(
                f"source names {names} collide as MQTT topics and ids: make them differ in letters or digits"
            )
        if config.snapshots is not None:
            check_folder(config.snapshots)
        model = load_model(config.model, labels=config.labels)
        self._closers: list = []
        try:
            self._open(config, model, parsed, names)
        except BaseException:
            self._close_all()
            raise

    def _open(self, config: MonitorConfig, model, parsed: list, names: list[str]) -> None:
        self.metrics = None
        if config.metrics_port is not None:
            from vtn_edge.monitor.metrics import MonitorMetrics

            self.metrics = MonitorMetrics(names)
            self.metrics.serve(config.metrics_port, config.bind)
            self._closers.append(self.metrics.close)
        self.preview = None
        if config.preview_port is not None:
            self.preview = PreviewServer(self.views, config.preview_port, config.bind)
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
            self.mqtt = MqttPublisher(self._mqtt_target, config.mqtt_tls, cameras=tuple(names), discovery=discovery)
            self._closers.append(self.mqtt.close)
            for name in names:  # a consumer that connects later sees every camera, idle ones too
                self.mqtt.publish_state(name, None, None, time.time())
        options = config.compile_options or CompileOptions(mode="throughput" if len(parsed) > 1 else "latency")
        policy = config.camera_policies or config.policy
        self.recognizer = StreamingRecognizer(model, streams=len(parsed), options=options, policy=policy)
        self._closers.append(self.recognizer.close)
        self.recognizer.on_prediction(self._on_prediction)
        self._wake = threading.Event()
        self._clip_paths: dict[str, str] = {}
        self.states: list[_SourceState] = []
        for i, (source, name) in enumerate(zip(parsed, names)):
            live = LiveSource(source, config.live, name=name, wake=self._wake)
            tracker = EventTracker(name, lambda e, i=i: self._emit(i, e), ignore=model.manifest.background)
            snapshots = SnapshotKeeper(config.snapshots, name) if config.snapshots is not None else None
            self.states.append(_SourceState(name, live, tracker, snapshots=snapshots))

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event) -> MonitorSummary:
        started, rss_start = time.monotonic(), resident_mb()
        for st in self.states:
            st.source.start()
            log.info("%s: watching %s", st.name, describe(st.source.source))
        last_status = last_sync = started
        try:
            while not stop.is_set():
                if self.config.duration_s is not None and time.monotonic() - started >= self.config.duration_s:
                    break
                self._wake.wait(0.2)
                self._wake.clear()
                for i, st in enumerate(self.states):
                    self._step(i, st)
                if all(st.source.stats.finished and st.tracker.current is None for st in self.states):
                    log.info("every source has ended")
                    break
                now = time.monotonic()
                if self.metrics is not None and now - last_sync >= 0.5:
                    last_sync = now
                    for st in self.states:
                        s = st.source.stats
                        self.metrics.sync_source(st.name, s.frames_dropped, s.reconnects, s.connected, st.fps)
                if self.config.status_every_s and now - last_status >= self.config.status_every_s:
                    last_status = now
                    statuses = "; ".join(self._status(st) for st in self.states)
                    log.info("status: %s; resident memory %.1f MB", statuses, resident_mb())
        finally:
            mqtt_left = self._shutdown()
        return MonitorSummary(
            time.monotonic() - started,
            [
                SourceSummary(
                    st.name,
                    st.frames,
                    st.frames / max(time.monotonic() - started, 1e-9),
                    st.source.stats.frames_dropped,
                    st.source.stats.reconnects,
                    st.events,
                )
                for st in self.states
            ],
            rss_start,
            resident_mb(),
            mqtt_left,
        )

    def _step(self, i: int, st: _SourceState) -> None:
        item = st.source.take()
        if item is None:
            stats = st.source.stats
            if not stats.connected and st.tracker.current is not None:
                self.recognizer.flush(i)  # label what was in flight before closing the event
                st.tracker.close(SOURCE_ENDED if stats.finished else SOURCE_LOST)
                st.label, st.score = None, 0.0
            return
        if item.connection != st.connection:
            if st.connection:  # a reconnected camera: do not mix old and new frames in one window
                self.recognizer.flush(i)
                st.tracker.close(SOURCE_LOST)
                self.recognizer.reset(i)
            st.connection = item.connection
        try:
            self.recognizer.push(item.frame, stream=i, timestamp=item.timestamp)
        except FrameError as exc:  # one bad frame from a camera must not stop the monitor
            log.warning("%s: frame skipped: %s", st.name, exc)
            return
        st.frame = item.frame
        if st.snapshots is not None:
            st.snapshots.add_frame(item.timestamp, item.frame)
        if st.clips is None and self.config.clips is not None:
            st.clips = ClipRecorder(st.name, self.config.clips, st.source.stats.fps)
        if st.clips is not None:
            st.clips.add(item.frame, item.timestamp)

    def _status(self, st: _SourceState) -> str:
        s = st.source.stats
        state = "up" if s.connected else ("ended" if s.finished else "DOWN")
        return (
            f"{st.name} {state} {st.fps:.1f} fps label={st.label} ({st.score:.2f}) "
            f"dropped={s.frames_dropped} reconnects={s.reconnects}"
        )

    # ------------------------------------------------------------------ the recognizer's ordering thread
    def _on_prediction(self, p: Prediction) -> None:
        st = self.states[p.stream]
        st.frames += 1
        st.label, st.score = p.label, p.score
        since, count = st.rate
        if p.timestamp - since >= 2.0:
            st.fps = count / (p.timestamp - since) if since else 0.0
            st.rate = (p.timestamp, 0)
        else:
            st.rate = (since, count + 1)
        if self.metrics is not None:
            self.metrics.observe(st.name, p)
        if st.snapshots is None:
            st.tracker.update(p)
            return
        st.snapshots.observe(p.timestamp, p.score)
        st.tracker.update(p)
        if st.tracker.current is not None and st.tracker.current.label == p.label:
            st.snapshots.consider()

    def _emit(self, i: int, event: ActionEvent) -> None:
        st = self.states[i]
        if st.clips is not None:
            if event.event == "start":
                self._clip_paths[event.id] = str(st.clips.start(event))
            else:
                st.clips.end(event)
            event = replace(event, clip=self._clip_paths.get(event.id))
            if event.event == "end":
                self._clip_paths.pop(event.id, None)
        if st.snapshots is not None:
            written = st.snapshots.write(event)
            if written is not None:
                event = replace(event, snapshot=str(written[0]))
                if self.mqtt is not None:
                    self.mqtt.publish_snapshot(st.name, written[1])
        if event.event == "start":
            st.events += 1
            if self.metrics is not None:
                self.metrics.events.labels(st.name, event.label).inc()
        log.info("%s: %s %s (%.2f)", st.name, event.event, event.label, event.score)
        if self.writer is not None:
            try:
                self.writer.write(event)
            except OSError as exc:  # e.g. a full disk: say so loudly, keep publishing to MQTT
                log.error("%s: could not write event %s to %s: %s", st.name, event.id, self.config.events_file, exc)
        if self.mqtt is not None:
            self.mqtt.publish(event)
            if self.metrics is not None:
                self.metrics.mqtt_connected.set(1 if self.mqtt.connected.is_set() else 0)

    # ------------------------------------------------------------------ the preview's threads
    def views(self) -> list[SourceView]:
        return [
            SourceView(st.name, st.frame, st.label, st.score, st.fps, st.source.stats.connected) for st in self.states
        ]

    # ------------------------------------------------------------------ shutdown
    def _shutdown(self) -> int | None:
        for st in self.states:
            st.source.close(timeout=0)
        try:
            self.recognizer.flush(timeout=5)
        except VtnEdgeError as exc:
            log.warning("shutdown: %s", exc)
        for st in self.states:
            st.tracker.close(SHUTDOWN)
        for st in self.states:
            if st.clips is not None:
                st.clips.close()
        mqtt_left = self.mqtt.close(timeout=2) if self.mqtt is not None else None
        self._close_all()
        for st in self.states:
            st.source.close(timeout=0.5)
        return mqtt_left

    def _close_all(self) -> None:
        while self._closers:
            try:
                self._closers.pop()()
            except Exception:
                log.exception("shutdown step failed")


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtsp_monitor.py",
        description="Watch cameras, label every frame, publish action events (JSON lines, MQTT).",
    )
    p.add_argument("--config", type=Path, help="a site file (TOML) with the settings and cameras; flags override it")
    p.add_argument("--model", type=Path, help="model directory from `converter build`")
    p.add_argument("--source", action="append", help="RTSP/HTTP URL, video file or camera index")
    p.add_argument("--name", action="append", default=[], help="a name per --source (default cam0, cam1, ...)")
    p.add_argument("--labels", type=Path, help="labels file, for Open Model Zoo IR pairs")
    out = p.add_argument_group("events")
    out.add_argument("--events", type=Path, help="append events as JSON lines to this file (fsynced per event)")
    out.add_argument("--stdout", action="store_true", help="print events as JSON lines (default without --events)")
    out.add_argument("--mqtt", help="publish events to mqtt[s]://host:port/topic (QoS 1); credentials from "
                     "$VTN_MQTT_USERNAME / $VTN_MQTT_PASSWORD")  # fmt: skip
    out.add_argument("--mqtt-ca", help="CA file for the broker's certificate")
    out.add_argument("--mqtt-cert", help="client certificate")
    out.add_argument("--mqtt-key", help="client key")
    out.add_argument("--mqtt-insecure", action="store_true", help="do not check the broker's host name")
    out.add_argument("--ha-discovery", nargs="?", const=DEFAULT_PREFIX, metavar="PREFIX",
                     help=f"announce each camera to Home Assistant over --mqtt (prefix {DEFAULT_PREFIX})")  # fmt: skip
    lab = p.add_argument_group("labels")
    add_policy_flags(lab)
    srv = p.add_argument_group("metrics, preview, clips")
    srv.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    srv.add_argument("--preview-port", type=int, help="serve a live preview page on this port")
    srv.add_argument("--bind", default="127.0.0.1", help="address for metrics and preview (default 127.0.0.1)")
    srv.add_argument("--save-clips", type=Path, help="write an MP4 around each event into this folder")
    srv.add_argument("--snapshots", type=Path, help="write a JPEG of each event's best frame into this folder")
    srv.add_argument("--clip-before", type=float, default=3.0)
    srv.add_argument("--clip-after", type=float, default=3.0)
    src = p.add_argument_group("sources")
    src.add_argument("--loop", action="store_true", help="play video files in a loop")
    src.add_argument("--no-pace", action="store_true", help="read files as fast as possible, not at their rate")
    src.add_argument("--open-timeout", type=float, default=5.0, help="seconds")
    src.add_argument("--read-timeout", type=float, default=5.0, help="seconds without a frame = camera lost")
    src.add_argument("--max-backoff", type=float, default=30.0, help="longest wait between reconnects, seconds")
    src.add_argument("--rtsp-transport", choices=["tcp", "udp"], default="tcp")
    run = p.add_argument_group("run")
    run.add_argument("--device", default="CPU")
    run.add_argument("--threads", type=int, help="inference threads")
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines (0: none)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def apply_site(args: argparse.Namespace, argv: list[str] | None) -> argparse.Namespace:
    """The site file's settings where no flag was given; its cameras unless --source was."""
    args.camera_policies = None
    if args.config is None:
        return args
    site = load_site(args.config)
    quiet = build_parser()
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    explicit = vars(quiet.parse_known_args(argv)[0]).keys()
    types = {action.dest: action.type for action in quiet._actions}
    for dest, value in site.settings.items():
        if dest not in explicit:
            convert = types.get(dest)
            setattr(args, dest, convert(value) if convert is not None and isinstance(value, str) else value)
    if "source" not in explicit and site.cameras:
        args.source = [c.source for c in site.cameras]
        args.name = [c.name for c in site.cameras]
        args.camera_policies = [
            policy_from_flags(
                c.policy.get("smoothing", args.smoothing),
                c.policy.get("threshold", args.threshold),
                c.policy.get("hold", args.hold),
            )
            for c in site.cameras
        ]
    return args


def config_from_args(args: argparse.Namespace) -> MonitorConfig:
    if args.model is None:
        raise VtnEdgeError("give --model (or `model` in the site file): a directory from `converter build`")
    if not args.source:
        raise VtnEdgeError("give at least one --source (or [[camera]] tables in the site file)")
    streams = len(args.source)
    return MonitorConfig(
        model=args.model,
        sources=args.source,
        names=args.name,
        labels=args.labels,
        events_file=args.events,
        events_stdout=args.stdout or (args.events is None and args.mqtt is None),
        mqtt=args.mqtt,
        mqtt_tls=TlsOptions(args.mqtt_ca, args.mqtt_cert, args.mqtt_key, args.mqtt_insecure),
        ha_discovery=args.ha_discovery,
        metrics_port=args.metrics_port,
        preview_port=args.preview_port,
        bind=args.bind,
        clips=ClipOptions(args.save_clips, args.clip_before, args.clip_after) if args.save_clips else None,
        snapshots=args.snapshots,
        policy=policy_from_flags(args.smoothing, args.threshold, args.hold),
        camera_policies=getattr(args, "camera_policies", None),
        live=LiveOptions(
            open_timeout_s=args.open_timeout,
            read_timeout_s=args.read_timeout,
            backoff_max_s=args.max_backoff,
            loop=args.loop,
            pace=not args.no_pace,
            rtsp_transport=args.rtsp_transport,
        ),
        compile_options=CompileOptions(
            device=args.device, mode="throughput" if streams > 1 else "latency", threads=args.threads
        ),
        duration_s=args.duration,
        status_every_s=args.status_every,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args = apply_site(args, argv)
    except VtnEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        monitor = Monitor(config_from_args(args))
        summary = monitor.run(stop)
    except VtnEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.table(), file=sys.stderr)
    return 0
