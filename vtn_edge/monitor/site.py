"""The site file: `--config site.toml` says what the monitor's flags say, for a whole site.

Every flag has a key (the flag's name with '_' for '-', grouped as below); cameras are
`[[camera]]` tables with a name, a source and, where it makes sense per camera, their own label
policy. Flags given on the command line override the file; `--source` replaces its cameras.
Credentials never go in the file: they stay in the environment (VTN_MQTT_USERNAME/PASSWORD).

    model = "ir_models/mobilenetv2-rgb-int8"
    events = "/var/lib/vtn/events.jsonl"
    snapshots = "/var/lib/vtn/snapshots"
    threshold = 0.94                     # the default label policy (smoothing, threshold, hold)
    [mqtt]
    url = "mqtt://broker.lan:1883/site1/vtn"
    ha_discovery = true                  # or a prefix: "homeassistant"
    [clips]
    folder = "/var/lib/vtn/clips"
    [[camera]]
    name = "door"
    source = "rtsp://10.0.0.21:554/stream1"
    threshold = 0.6
    hold = 0.5
    actions = ["open", "close"]          # only these raise events here (default: every action)
    [[camera.zone]]                      # optional: rectangles watched as streams of their own
    name = "till"
    box = [0.5, 0.0, 0.5, 1.0]           # x, y, width, height as fractions of the frame
    threshold = 0.7                      # a zone may have its own policy and actions too
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from vtn_edge.compile_options import MATMUL_AS_CONV_CHOICES
from vtn_edge.errors import VtnEdgeError
from vtn_edge.monitor.zones import box_problem
from vtn_edge.smoothing import SMOOTHING_CHOICES

_NUMBER = (int, float)
# key -> (types, the argparse destination it sets); values are checked before anything opens
TOP: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "model"),
    "labels": ((str,), "labels"),
    "events": ((str,), "events"),
    "stdout": ((bool,), "stdout"),
    "snapshots": ((str,), "snapshots"),
    "metrics_port": ((int,), "metrics_port"),
    "preview_port": ((int,), "preview_port"),
    "bind": ((str,), "bind"),
    "smoothing": ((str,), "smoothing"),
    "threshold": (_NUMBER, "threshold"),
    "hold": (_NUMBER, "hold"),
    "actions": ((list,), "actions"),
    "merge_gap": (_NUMBER, "merge_gap"),
    "end_offset": (_NUMBER, "end_offset"),
    "start_offset": (_NUMBER, "start_offset"),
    "loop": ((bool,), "loop"),
    "pace": ((bool,), "no_pace"),  # inverted below
    "open_timeout": (_NUMBER, "open_timeout"),
    "read_timeout": (_NUMBER, "read_timeout"),
    "max_backoff": (_NUMBER, "max_backoff"),
    "rtsp_transport": ((str,), "rtsp_transport"),
    "device": ((str,), "device"),
    "mode": ((str,), "mode"),
    "threads": ((int,), "threads"),
    "ov_streams": ((int,), "ov_streams"),
    "precision_hint": ((str,), "precision_hint"),
    "cache_dir": ((str,), "cache_dir"),
    "matmul_as_conv": ((str,), "matmul_as_conv"),
    "decode_every": ((int,), "decode_every"),
    "duration": (_NUMBER, "duration"),
    "status_every": (_NUMBER, "status_every"),
    "log_level": ((str,), "log_level"),
}
TABLES: dict[str, dict[str, tuple[tuple[type, ...], str]]] = {
    "mqtt": {
        "url": ((str,), "mqtt"),
        "ca": ((str,), "mqtt_ca"),
        "cert": ((str,), "mqtt_cert"),
        "key": ((str,), "mqtt_key"),
        "insecure": ((bool,), "mqtt_insecure"),
        "ha_discovery": ((bool, str), "ha_discovery"),
    },
    "clips": {
        "folder": ((str,), "save_clips"),
        "before": (_NUMBER, "clip_before"),
        "after": (_NUMBER, "clip_after"),
    },
}
POLICY_KEYS = ("smoothing", "threshold", "hold")
CAMERA: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "source": (str,),
    "smoothing": (str,),
    "threshold": _NUMBER,
    "hold": _NUMBER,
    "actions": (list,),
    "zone": (list,),
}
ZONE: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "box": (list,),
    "smoothing": (str,),
    "threshold": _NUMBER,
    "hold": _NUMBER,
    "actions": (list,),
}
CHOICES = {"smoothing": SMOOTHING_CHOICES, "rtsp_transport": ("tcp", "udp"), "mode": ("latency", "throughput"),
           "log_level": ("DEBUG", "INFO", "WARNING", "ERROR"), "matmul_as_conv": MATMUL_AS_CONV_CHOICES}  # fmt: skip
_PATHS = {"model", "labels", "events", "snapshots", "save_clips", "mqtt_ca", "mqtt_cert", "mqtt_key", "cache_dir"}


class SiteError(VtnEdgeError):
    """A site file that cannot describe a monitor: the message names the file, key and line."""


@dataclass(frozen=True)
class SiteZone:
    name: str
    box: tuple[float, float, float, float]
    policy: dict[str, Any] = field(default_factory=dict)  # overrides the camera's
    actions: tuple[str, ...] | None = None  # the actions that raise events; None: the camera's


@dataclass(frozen=True)
class Camera:
    name: str
    source: str
    policy: dict[str, Any] = field(default_factory=dict)  # smoothing / threshold / hold overrides
    zones: list[SiteZone] = field(default_factory=list)
    actions: tuple[str, ...] | None = None  # the actions that raise events; None: the site's


@dataclass(frozen=True)
class Site:
    path: Path
    settings: dict[str, Any]  # argparse destination -> value
    cameras: list[Camera]


def load_site(path: str | Path) -> Site:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SiteError(f"{path}: not valid TOML: {exc}") from None
    where = _Locator(path, text)
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key == "camera":
            continue
        if key in TABLES:
            if not isinstance(value, dict):
                raise SiteError(where(key, f"'{key}' must be a table ([{key}])"))
            for sub, sub_value in value.items():
                _set(settings, TABLES[key], sub, sub_value, where, f"[{key}]")
        else:
            _set(settings, TOP, key, value, where, "the top level")
    for dest in _PATHS & settings.keys():  # relative paths are relative to the site file
        settings[dest] = str(path.parent / settings[dest])
    return Site(path, settings, _cameras(data.get("camera", []), where))


def _set(settings: dict, schema: dict, key: str, value: Any, where: _Locator, place: str) -> None:
    if key not in schema:
        raise SiteError(where(key, f"unknown key '{key}' in {place} (known: {', '.join(schema)})"))
    types, dest = schema[key]
    _check(key, value, types, where)
    if key == "pace":
        value = not value
    elif key == "ha_discovery":
        value = ("homeassistant" if value else None) if isinstance(value, bool) else value
    settings[dest] = tuple(value) if key == "actions" else value


def _check(key: str, value: Any, types: tuple[type, ...], where: _Locator) -> None:
    wrong_type = isinstance(value, bool) and bool not in types or not isinstance(value, types)
    if wrong_type:
        kind = {int: "a whole number", float: "a number", bool: "true/false", str: "a string", list: "a list"}
        names = {("a number" if types == _NUMBER else kind[t]): None for t in types}
        kinds = " or ".join(names)
        raise SiteError(where(key, f"'{key}' must be {kinds}, got {value!r}"))
    if key in CHOICES and value not in CHOICES[key]:
        raise SiteError(where(key, f"'{key}' is {value!r}; choose one of: {', '.join(CHOICES[key])}"))
    if isinstance(value, _NUMBER) and not isinstance(value, bool) and value < 0:
        raise SiteError(where(key, f"'{key}' must not be negative, got {value}"))
    if key == "threshold" and not 0 <= value <= 1:
        raise SiteError(where(key, f"'threshold' is a score between 0 and 1, got {value}"))
    if key == "decode_every" and value < 1:
        raise SiteError(where(key, f"'decode_every' is 1 (every window) or more, got {value}"))
    if key == "actions" and (not value or not all(isinstance(v, str) and v for v in value)):
        raise SiteError(
            where(key, f'\'actions\' is a list of the model\'s class names, e.g. ["open", "close"], got {value!r}')
        )


def _cameras(tables: Any, where: _Locator) -> list[Camera]:
    if not isinstance(tables, list):
        raise SiteError(where("camera", "cameras are [[camera]] tables, one per camera"))
    cameras, seen = [], set()
    zones_so_far = 0  # which `box =` line a zone's error points at
    for number, table in enumerate(tables, start=1):
        for key, value in table.items():
            if key not in CAMERA:
                raise SiteError(where(key, f"unknown key '{key}' in camera {number} (known: {', '.join(CAMERA)})"))
            if key != "zone":
                _check(key, value, CAMERA[key], where)
        for key in ("name", "source"):
            if key not in table:
                raise SiteError(where("camera", f"camera {number} has no '{key}'", occurrence=number))
        if table["name"] in seen:
            raise SiteError(
                where("name", f"two cameras are named {table['name']!r}", value=table["name"], occurrence=2)
            )
        seen.add(table["name"])
        zones = _zones(table["name"], table.get("zone", []), where, zones_so_far)
        zones_so_far += len(zones)
        policy = {k: table[k] for k in POLICY_KEYS if k in table}
        cameras.append(Camera(table["name"], table["source"], policy, zones, _actions(table)))
    return cameras


def _zones(camera: str, tables: Any, where: _Locator, before: int) -> list[SiteZone]:
    if not isinstance(tables, list):
        raise SiteError(where("zone", f"camera {camera!r}: zones are [[camera.zone]] tables, one per zone"))
    zones, seen = [], set()
    for number, table in enumerate(tables, start=1):
        place = f"zone {number} of camera {camera!r}"
        for key, value in table.items():
            if key not in ZONE:
                raise SiteError(where(key, f"unknown key '{key}' in {place} (known: {', '.join(ZONE)})"))
            if key != "box":
                _check(key, value, ZONE[key], where)
        for key in ("name", "box"):
            if key not in table:
                raise SiteError(where("camera.zone", f"{place} has no '{key}'", occurrence=before + number))
        problem = box_problem(table["box"])
        if problem is not None:
            raise SiteError(where("box", f"'box' of {place} {problem}", occurrence=before + number))
        if table["name"] in seen:
            raise SiteError(where("name", f"camera {camera!r} has two zones named {table['name']!r}",
                                  value=table["name"], occurrence=2))  # fmt: skip
        seen.add(table["name"])
        policy = {k: table[k] for k in POLICY_KEYS if k in table}
        zones.append(SiteZone(table["name"], tuple(float(v) for v in table["box"]), policy, _actions(table)))
    return zones


def _actions(table: dict) -> tuple[str, ...] | None:
    return tuple(table["actions"]) if "actions" in table else None


class _Locator:
    """'file, line N: message' for a key (tomllib reports lines for syntax errors only)."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()

    def __call__(self, key: str, message: str, *, value: Any = None, occurrence: int = 1) -> str:
        pattern = re.compile(rf"^\s*(\[\[?\s*{re.escape(key)}\s*\]\]?|{re.escape(key)}\s*=)")
        hits = [
            i for i, line in enumerate(self.lines, start=1)
            if pattern.match(line) and (value is None or repr(value)[1:-1] in line)
        ]  # fmt: skip
        line = hits[min(occurrence, len(hits)) - 1] if hits else None
        return f"{self.path}" + (f", line {line}" if line else "") + f": {message}"
