"""Real servers for tests, started and stopped by the tests themselves on 127.0.0.1.

GStreamer's RTSP server (Debian's python3-gi, run with the system Python) and mosquitto are
installed by .ci/run. Locally a test skips when they are missing; under CI it fails.
"""

from __future__ import annotations

import getpass
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).with_name("rtsp_server.py")


def need(ok: bool, why: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (.ci/run installs it)")
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def have_rtsp_server() -> bool:
    if not Path(SYSTEM_PYTHON).is_file():
        return False
    probe = "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0')"
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).is_file()), None
    )


class RtspServer:
    """Serves one video in a loop at rtsp://127.0.0.1:PORT/stream."""

    def __init__(self, video: Path, port: int | None = None, fps: int = 25):
        self.video, self.port, self.fps = Path(video), port or free_port(), fps
        self.url = f"rtsp://127.0.0.1:{self.port}/stream"
        self.proc: subprocess.Popen | None = None

    def start(self, video: Path | None = None, timeout: float = 20.0) -> RtspServer:
        self.video = Path(video or self.video)
        cmd = [SYSTEM_PYTHON, str(RTSP_SCRIPT), str(self.video), str(self.port), "--fps", str(self.fps)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stdout], daemon=True).start()
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            if line.startswith("READY"):
                return self
        self.stop()
        raise RuntimeError(f"RTSP server did not start: {''.join(seen)}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Broker:
    """A mosquitto broker on 127.0.0.1 with its own config (no persistence); optional password file."""

    def __init__(
        self, folder: Path, port: int | None = None, users: dict[str, str] | None = None, tls: dict | None = None
    ):
        self.folder, self.port, self.users = Path(folder), port or free_port(), users or {}
        self.tls = tls  # {"ca": ..., "cert": ..., "key": ...} from make_certificates()
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        # as root, mosquitto would switch to user "mosquitto", who cannot read pytest's private folders
        conf = [f"listener {self.port} 127.0.0.1", "persistence false", f"user {getpass.getuser()}"]
        if self.users:
            passwd = self.folder / "passwd"
            for i, (user, password) in enumerate(self.users.items()):
                flags = ["-c"] if i == 0 else []
                subprocess.run(["mosquitto_passwd", *flags, "-b", str(passwd), user, password], check=True)
            conf += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            conf.append("allow_anonymous true")
        if self.tls:
            conf += [f"cafile {self.tls['ca']}", f"certfile {self.tls['cert']}", f"keyfile {self.tls['key']}"]
        path = self.folder / f"mosquitto-{self.port}.conf"
        path.write_text("\n".join(conf) + "\n")
        self.log = open(self.folder / f"mosquitto-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(path)], stdout=self.log, stderr=self.log)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            log = (self.folder / f"mosquitto-{self.port}.log").read_text()
            raise RuntimeError(f"mosquitto did not start: {log}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        if self.proc is not None:
            self.log.close()
        self.proc = None


def make_certificates(folder: Path) -> dict[str, str]:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl)."""
    folder = Path(folder)
    ca_key, ca, key, csr, cert = (
        str(folder / n) for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        ca_key,
        "-out",
        ca,
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "1",
        "-extfile", str(ext))  # fmt: skip
    return {"ca": ca, "cert": cert, "key": key}


class Subscriber:
    """Collects every message on a topic (resubscribing after reconnects)."""

    def __init__(
        self, port: int, topic: str, user: str | None = None, password: str | None = None, ca: str | None = None
    ):
        import paho.mqtt.client as mqtt

        self.messages: list[bytes] = []
        self.received: list[tuple[str, bytes, bool]] = []  # (topic, payload, retained) of every message
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        if user:
            self.client.username_pw_set(user, password)
        if ca:
            self.client.tls_set(ca_certs=ca)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self._on_message(m)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError("test subscriber could not subscribe")

    def _on_message(self, message) -> None:
        self.messages.append(message.payload)
        self.received.append((message.topic, message.payload, bool(message.retain)))

    def on(self, topic: str) -> list[tuple[bytes, bool]]:
        """Payloads on `topic` in arrival order, each with whether it came as a retained message
        (only what the broker held when we subscribed does; later ones arrive live)."""
        return [(payload, retained) for t, payload, retained in self.received if t == topic]

    def latest(self, topic: str) -> tuple[bytes, bool] | None:
        found = self.on(topic)
        return found[-1] if found else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
