"""A live preview for someone standing at the box: one page, each source's annotated MJPEG stream.

`/` the page; `/stream/N` multipart MJPEG of source N; `/snapshot/N.jpg` one frame;
`/status.json` labels, scores and frames/s. Frames are annotated and JPEG-encoded only while
somebody watches, at a capped rate, so the preview costs nothing when no one looks.
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from vtn_edge.errors import port_error

BOUNDARY = "vtnframe"


@dataclass(frozen=True)
class SourceView:
    name: str
    frame: np.ndarray | None
    label: str | None
    score: float
    fps: float
    connected: bool


def annotate(view: SourceView) -> np.ndarray:
    frame = view.frame.copy()
    text = f"{view.label or '-'} {view.score:.2f}" + (f"  {view.fps:.0f} fps" if view.fps else "")
    if not view.connected:
        text += "  (reconnecting)"
    cv2.rectangle(frame, (0, 0), (frame.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(frame, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return frame


def _page(views: list[SourceView]) -> bytes:
    cells = "".join(
        f'<figure><img src="/stream/{i}" alt="{html.escape(v.name)}"><figcaption id="s{i}">'
        f"{html.escape(v.name)}</figcaption></figure>"
        for i, v in enumerate(views)
    )
    script = (
        "setInterval(async()=>{const s=await (await fetch('/status.json')).json();"
        "s.forEach((v,i)=>{document.getElementById('s'+i).textContent="
        "`${v.name}: ${v.label??'-'} ${v.score.toFixed(2)} (${v.fps.toFixed(0)} fps)`;});},500);"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>vtn-edge monitor</title>"
        "<style>body{font-family:sans-serif;background:#111;color:#eee}figure{display:inline-block}</style>"
        f"</head><body><h1>vtn-edge monitor</h1>{cells}<script>{script}</script></body></html>"
    ).encode()


class PreviewServer:
    def __init__(self, views: Callable[[], list[SourceView]], port: int, host: str = "127.0.0.1", max_fps: float = 10):
        self._views = views
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
                    status = [
                        {"name": v.name, "label": v.label, "score": v.score, "fps": v.fps, "connected": v.connected}
                        for v in preview._views()
                    ]
                    self._send(200, "application/json", json.dumps(status).encode())
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
                        time.sleep(preview._period)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the viewer left

        return Handler


def _index(text: str) -> int:
    return int(text) if text.isdigit() else -1
