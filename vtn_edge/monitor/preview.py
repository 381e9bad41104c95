"""A live preview for someone standing at the box: one page, a card per camera.

Each card: the annotated live image (zones drawn), the connection state, the current label of the
camera or of each zone (or why there is none: the window is filling, the score is below the
threshold, a new label is waiting out the hold, only background), and the latest events with
their times and snapshots.

`/` the page; `/stream/N` multipart MJPEG of camera N; `/snapshot/N.jpg` one frame;
`/status.json` what the cards show (and how many frames each live image has streamed);
`/snapshots/NAME.jpg` an event's snapshot (with `--snapshots`). Frames are annotated and
JPEG-encoded only while somebody watches, at a capped rate, so the preview costs nothing when no
one looks.
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from vtn_edge.errors import port_error
from vtn_edge.monitor.events import ActionEvent
from vtn_edge.smoothing import LabelPolicy
from vtn_edge.types import Prediction

BOUNDARY = "vtnframe"


def explain(p: Prediction, policy: LabelPolicy, background: Collection[str] = (), ignore: Collection[str] = ()) -> str:
    """Why a stream shows no action right now ("" when it shows one). `ignore`: the labels that
    raise no event there (the background, and the actions it does not watch)."""
    if not p.window_full:
        return "starting: the first window is filling"
    top, top_score = p.top_k[0] if p.top_k else (None, p.score)
    if p.label is None:
        if top_score < policy.threshold:
            return f"below threshold: {top} {top_score:.2f} < {policy.threshold:.2f}"
        return f"{top} {top_score:.2f} is waiting out the hold ({policy.hold_seconds:g} s)"
    if p.label in background:
        return f"no action ({p.label})"
    if p.label in ignore:
        return f"{p.label} is not among the actions watched here"
    if top != p.label:
        return f"{top} leads, waiting out the hold ({policy.hold_seconds:g} s)"
    return ""


@dataclass(frozen=True)
class ZoneView:
    name: str
    box: tuple[float, float, float, float]  # x, y, width, height as fractions of the frame
    label: str | None
    score: float
    why: str = ""


@dataclass(frozen=True)
class EventView:
    id: str
    event: str  # "start" while it lasts, then "end"
    label: str
    zone: str | None
    score: float
    start_time: str | None  # ISO 8601
    duration_s: float | None
    snapshot: str | None  # file name under /snapshots/


@dataclass(frozen=True)
class SourceView:
    name: str
    frame: np.ndarray | None
    label: str | None  # the whole frame's label (a camera without zones)
    score: float
    fps: float
    connected: bool
    zones: tuple[ZoneView, ...] = ()
    why: str = ""  # for `label`
    state: str = "up"  # up, reconnecting, ended
    events: tuple[EventView, ...] = ()  # newest first

    def status(self) -> dict:
        """What /status.json says about this camera."""
        return {
            "name": self.name, "state": self.state, "connected": self.connected, "fps": round(self.fps, 1),
            "label": self.label, "score": round(self.score, 4), "why": self.why,
            "zones": [{k: v for k, v in asdict(z).items() if k != "box"} for z in self.zones],
            "events": [asdict(e) for e in self.events],
        }  # fmt: skip


_ZONE_COLOUR = (0, 200, 255)  # BGR amber


def annotate(view: SourceView) -> np.ndarray:
    """The frame with its label (or, for a camera with zones, each zone's box and label) drawn on."""
    frame = view.frame.copy()
    height, width = frame.shape[:2]
    for zone in view.zones:
        x, y, w, h = zone.box
        x0, y0 = int(x * width), int(y * height)
        x1, y1 = min(int((x + w) * width), width - 1), min(int((y + h) * height), height - 1)
        cv2.rectangle(frame, (x0, y0), (x1, y1), _ZONE_COLOUR, 2)
        text = f"{zone.name}: {zone.label or '-'} {zone.score:.2f}"
        cv2.rectangle(frame, (x0, y0 + 22), (x0 + 8 * len(text) + 8, y0 + 42), (0, 0, 0), -1)
        cv2.putText(frame, text, (x0 + 4, y0 + 37), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _ZONE_COLOUR, 1, cv2.LINE_AA)
    text = view.name if view.zones else f"{view.label or '-'} {view.score:.2f}"
    text += f"  {view.fps:.0f} fps" if view.fps else ""
    if not view.connected:
        text += "  (reconnecting)"
    cv2.rectangle(frame, (0, 0), (width, 22), (0, 0, 0), -1)
    cv2.putText(frame, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return frame


class RecentEvents:
    """As an event sink: each camera's latest events for the page (an end takes its start's place)."""

    def __init__(self, size: int = 8):
        self.size = size
        self._lock = threading.Lock()
        self._events: dict[str, deque[EventView]] = {}

    def handle(self, event: ActionEvent) -> ActionEvent:
        d = event.to_dict()
        snapshot = None if event.snapshot is None else Path(event.snapshot).name
        view = EventView(event.id, event.event, event.label, event.zone, d["score"], d["start_time"],
                         d["duration_s"], snapshot)  # fmt: skip
        with self._lock:
            events = self._events.setdefault(event.source, deque(maxlen=self.size))
            where = next((i for i, e in enumerate(events) if e.id == event.id), None)
            if where is None:
                events.append(view)
            else:
                events[where] = view
        return event

    def newest_first(self, camera: str) -> tuple[EventView, ...]:
        with self._lock:
            return tuple(reversed(self._events.get(camera, ())))

    def close(self) -> None:
        pass


_STYLE = (
    "body{font-family:sans-serif;background:#111;color:#eee;margin:1em}"
    "section{display:inline-block;vertical-align:top;margin:0 1em 1em 0;padding:.5em;background:#222;"
    "max-width:660px}img.live{width:640px;max-width:100%;display:block}.state{float:right}.up{color:#6c6}"
    ".reconnecting{color:#f66}.ended{color:#aaa}.why{color:#aaa}ol{padding-left:1.2em}"
    "ol li{margin:.3em 0}ol img{height:48px;vertical-align:middle;margin-right:.5em}"
)
_SCRIPT = """
const esc = t => String(t ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
const line = (name, v) => `${name ? esc(name) + ': ' : ''}<b>${esc(v.label ?? '-')}</b> ${v.score.toFixed(2)}`
  + (v.why ? ` <span class="why">(${esc(v.why)})</span>` : '');
async function refresh() {
  const cams = await (await fetch('/status.json')).json();
  cams.forEach((c, i) => {
    const card = document.getElementById('cam' + i);
    card.querySelector('.state').className = 'state ' + c.state;
    card.querySelector('.state').textContent = `${c.state}, ${c.fps.toFixed(0)} fps`;
    card.querySelector('.labels').innerHTML = c.zones.length
      ? c.zones.map(z => `<li>${line(z.name, z)}</li>`).join('') : `<li>${line('', c)}</li>`;
    card.querySelector('.events').innerHTML = c.events.map(e => '<li>'
      + (e.snapshot ? `<img src="/snapshots/${encodeURIComponent(e.snapshot)}" alt="snapshot">` : '')
      + `${esc((e.start_time || '').slice(11, 19))} ${e.zone ? esc(e.zone) + ': ' : ''}<b>${esc(e.label)}</b>`
      + ` ${e.score.toFixed(2)} ${e.duration_s == null ? '(ongoing)' : e.duration_s.toFixed(1) + ' s'}</li>`).join('')
      || '<li class="why">no events yet</li>';
  });
}
refresh(); setInterval(refresh, 500);
"""


def _page(views: list[SourceView]) -> bytes:
    cards = "".join(
        f'<section class="camera" id="cam{i}"><h2>{html.escape(v.name)} <span class="state"></span></h2>'
        f'<img class="live" src="/stream/{i}" alt="{html.escape(v.name)} live">'
        '<ul class="labels"></ul><h3>Latest events</h3><ol class="events"></ol></section>'
        for i, v in enumerate(views)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>vtn-edge monitor</title>"
        f"<style>{_STYLE}</style></head><body><h1>vtn-edge monitor</h1>{cards}<script>{_SCRIPT}</script>"
        "</body></html>"
    ).encode()


_SNAPSHOT_NAME = re.compile(r"[\w.-]+\.jpg")


class PreviewServer:
    def __init__(
        self,
        views: Callable[[], list[SourceView]],
        port: int,
        host: str = "127.0.0.1",
        max_fps: float = 10,
        snapshots: Path | None = None,
    ):
        self._views = views
        self._snapshots = snapshots
        self.streamed: dict[int, int] = {}  # camera -> MJPEG frames sent to viewers, for status.json
        self._period = 1.0 / max_fps
        self._stop = threading.Event()
        handler = self._handler_class()
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise port_error("preview", host, port, exc, "--preview-port") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="preview", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _snapshot_file(self, name: str) -> bytes | None:
        """An event snapshot by its file name: only plain names of files in the snapshot folder."""
        if self._snapshots is None or not _SNAPSHOT_NAME.fullmatch(name) or name.startswith("."):
            return None
        try:
            return (self._snapshots / name).read_bytes()
        except OSError:
            return None

    def _jpeg(self, index: int) -> bytes | None:
        views = self._views()
        if not 0 <= index < len(views) or views[index].frame is None:
            return None
        ok, data = cv2.imencode(".jpg", annotate(views[index]), [cv2.IMWRITE_JPEG_QUALITY, 80])
        return data.tobytes() if ok else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        preview = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # no per-request lines in the monitor's log
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", _page(preview._views()))
                elif path == "/status.json":
                    status = [{**v.status(), "frames_streamed": preview.streamed.get(i, 0)}
                              for i, v in enumerate(preview._views())]  # fmt: skip
                    self._send(200, "application/json", json.dumps(status).encode())
                elif path.startswith("/snapshots/"):
                    data = preview._snapshot_file(path[len("/snapshots/") :])
                    self._send(200, "image/jpeg", data) if data else self._send(404, "text/plain", b"no such snapshot")
                elif path.startswith("/snapshot/") and path.endswith(".jpg"):
                    data = preview._jpeg(_index(path[len("/snapshot/") : -4]))
                    self._send(200, "image/jpeg", data) if data else self._send(404, "text/plain", b"no frame yet")
                elif path.startswith("/stream/"):
                    self._stream(_index(path[len("/stream/") :]))
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, code: int, kind: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, index: int) -> None:
                if not 0 <= index < len(preview._views()):
                    self._send(404, "text/plain", b"no such source")
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                try:
                    while not preview._stop.is_set():
                        data = preview._jpeg(index)
                        if data is not None:
                            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                            self.wfile.write(head.encode() + data + b"\r\n")
                            self.wfile.flush()
                            preview.streamed[index] = preview.streamed.get(index, 0) + 1
                        time.sleep(preview._period)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the viewer left

        return Handler


def _index(text: str) -> int:
    return int(text) if text.isdigit() else -1
