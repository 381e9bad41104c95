"""The monitor's command line: flags, the site file under them, and the exit codes.

`examples/rtsp_monitor.py` and `python -m vtn_edge.monitor` run `main`. Flags override the site
file (`--config`); a bad flag or site file exits 2 before any camera opens.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from vtn_edge.compile_options import add_compile_flags, add_decode_every_flag, compile_options_from_flags
from vtn_edge.errors import VtnEdgeError, run_command
from vtn_edge.live import LiveOptions
from vtn_edge.monitor.app import Monitor, MonitorConfig
from vtn_edge.monitor.clips import ClipOptions
from vtn_edge.monitor.events import add_actions_flag, add_event_flags, rules_from_flags
from vtn_edge.monitor.homeassistant import DEFAULT_PREFIX
from vtn_edge.monitor.mqtt import TlsOptions
from vtn_edge.monitor.site import Camera, load_site
from vtn_edge.monitor.zones import Zone
from vtn_edge.smoothing import LabelPolicy, add_policy_flags, policy_from_flags

log = logging.getLogger("vtn_edge.monitor")


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
    lab = p.add_argument_group("labels and events")
    add_policy_flags(lab)
    add_event_flags(lab)
    add_actions_flag(lab)
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
    add_compile_flags(run)
    add_decode_every_flag(run)
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines (0: none)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def apply_site(args: argparse.Namespace, argv: list[str] | None) -> argparse.Namespace:
    """The site file's settings where no flag was given; its cameras (and zones) unless --source was."""
    args.camera_policies = None
    args.camera_actions = None
    args.zones = None
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
        args.camera_policies = [_policy(args, c.policy) for c in site.cameras]
        args.camera_actions = [c.actions for c in site.cameras]
        args.zones = [_zones(args, c) for c in site.cameras]
    return args


def _policy(args: argparse.Namespace, overrides: dict, base: dict | None = None) -> LabelPolicy:
    """A camera's (or zone's) label policy: its own keys, then its camera's, then the flags."""
    given = {**(base or {}), **overrides}
    return policy_from_flags(
        given.get("smoothing", args.smoothing), given.get("threshold", args.threshold), given.get("hold", args.hold)
    )


def _zones(args: argparse.Namespace, camera: Camera) -> list[Zone]:
    return [
        Zone(z.name, z.box, _policy(args, z.policy, camera.policy) if z.policy else None, z.actions)
        for z in camera.zones
    ]


def config_from_args(args: argparse.Namespace) -> MonitorConfig:
    if args.model is None:
        raise VtnEdgeError("give --model (or `model` in the site file): a directory from `converter build`")
    if not args.source:
        raise VtnEdgeError("give at least one --source (or [[camera]] tables in the site file)")
    zones = getattr(args, "zones", None)
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
        actions=args.actions,
        camera_actions=getattr(args, "camera_actions", None),
        event_rules=rules_from_flags(args),
        zones=zones,
        live=LiveOptions(
            open_timeout_s=args.open_timeout,
            read_timeout_s=args.read_timeout,
            backoff_max_s=args.max_backoff,
            loop=args.loop,
            pace=not args.no_pace,
            rtsp_transport=args.rtsp_transport,
        ),
        compile_options=compile_options_from_flags(args),
        decode_every=args.decode_every,
        duration_s=args.duration,
        status_every_s=args.status_every,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda parsed: _run(apply_site(parsed, argv)), args)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    summary = Monitor(config_from_args(args)).run(stop)
    print(summary.table(), file=sys.stderr)
    return 0
