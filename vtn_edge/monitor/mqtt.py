"""Events to an MQTT broker (paho-mqtt): QoS 1, queued while the broker is away, resent on reconnect.

`--mqtt mqtt://host:port/topic` (or `mqtts://` for TLS). The user name and password come from the
environment (VTN_MQTT_USERNAME, VTN_MQTT_PASSWORD), never from the command line or the logs.

Besides the events on `topic`, for consumers that connect later (REFERENCE.md section 8):
- `topic/<camera>/state` (`topic/<camera>/<zone>/state` for a zone), retained: the current action
  or none, its score and since when, published at start-up and with every event;
- `topic/status`, retained: `online` on every connection, `offline` at shutdown and, as the MQTT
  last will, when the box disappears without one;
- with `--snapshots`, each event's JPEG on `topic/<camera>[/<zone>]/snapshot`, retained;
- with `--ha-discovery`, Home Assistant discovery configs (see `homeassistant.py`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vtn_edge.errors import VtnEdgeError
from vtn_edge.monitor.events import ActionEvent, iso_time
from vtn_edge.monitor.homeassistant import Discovery

log = logging.getLogger(__name__)

USERNAME_ENV = "VTN_MQTT_USERNAME"
PASSWORD_ENV = "VTN_MQTT_PASSWORD"
ONLINE, OFFLINE = "online", "offline"
_EVENT, _OTHER = "event", "other"  # what an unacknowledged message id was


def topic_part(name: str) -> str:
    """A camera name as one topic level: MQTT's separators and wildcards become '_'."""
    return "".join("_" if c in "/+#" else c for c in name) or "_"


class MqttError(VtnEdgeError):
    """An MQTT URL or TLS setting that cannot work."""


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    topic: str
    tls: bool

    @property
    def display(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}/{self.topic}"


@dataclass(frozen=True)
class TlsOptions:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False  # do not check the broker's host name (self-signed test brokers)

    @property
    def wanted(self) -> bool:
        return bool(self.ca_file or self.cert_file or self.insecure)


def parse_mqtt_url(url: str) -> MqttTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise MqttError(f"--mqtt must look like mqtt://host:port/topic or mqtts://host:port/topic, got {url!r}")
    if parts.username or parts.password:
        raise MqttError(f"put the MQTT user name and password in ${USERNAME_ENV} / ${PASSWORD_ENV}, not in the URL")
    topic = parts.path.lstrip("/")
    if not parts.hostname or not topic or "#" in url or "+" in topic:
        raise MqttError(f"--mqtt needs a host and a topic without wildcards (mqtt://host:port/topic), got {url!r}")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise MqttError(f"--mqtt has an invalid port: {url!r}") from None
    return MqttTarget(parts.hostname, port, topic, parts.scheme == "mqtts")


class MqttPublisher:
    """Publishes events as JSON. Never blocks the caller; reconnects by itself (1 s .. 30 s)."""

    def __init__(
        self,
        target: MqttTarget,
        tls: TlsOptions | None = None,
        client_id: str | None = None,
        *,
        streams: tuple[tuple[str, str | None], ...] = (),  # (camera, zone or None)
        discovery: Discovery | None = None,
    ):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise MqttError("--mqtt needs paho-mqtt: pip install 'vtn-edge[monitor]'") from None

        self.target = target
        self.status_topic = f"{target.topic}/status"
        self.streams = streams
        self.discovery = discovery
        self.connected = threading.Event()
        self.published = 0  # events acknowledged by the broker
        self._pending: dict[int, str] = {}  # message ids sent and not yet acknowledged -> _EVENT / _OTHER
        self._early: set[int] = set()  # acknowledged before _track() recorded them
        self._lock = threading.Lock()
        self._warned = False
        self._closing = False
        client_id = client_id or f"vtn-edge-{socket.gethostname()}-{os.getpid()}"
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self._client.max_queued_messages_set(0)  # unbounded: events are small and rare
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        user = os.environ.get(USERNAME_ENV)
        if user:
            self._client.username_pw_set(user, os.environ.get(PASSWORD_ENV))
        tls = tls or TlsOptions()
        if target.tls or tls.wanted:
            try:
                self._client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise MqttError(f"MQTT TLS settings do not work: {exc}") from None
            self._client.tls_insecure_set(tls.insecure)
        self._client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_publish = self._on_publish
        self._client.connect_async(target.host, target.port, keepalive=30)
        self._client.loop_start()

    def stream_topic(self, camera: str, zone: str | None, leaf: str) -> str:
        """`topic/<camera>/<leaf>`, or `topic/<camera>/<zone>/<leaf>` for a zone."""
        zone_part = "" if zone is None else f"/{topic_part(zone)}"
        return f"{self.target.topic}/{topic_part(camera)}{zone_part}/{leaf}"

    def state_topic(self, camera: str, zone: str | None = None) -> str:
        return self.stream_topic(camera, zone, "state")

    def handle(self, event: ActionEvent) -> ActionEvent:
        """As an event sink: the event, its state and, with a snapshot, the snapshot's JPEG."""
        self.publish(event)
        if event.snapshot is not None:
            try:
                self.publish_snapshot(event.source, event.zone, Path(event.snapshot).read_bytes())
            except OSError as exc:
                log.warning("MQTT: cannot read snapshot %s: %s", event.snapshot, exc)
        return event

    def publish(self, event: ActionEvent) -> None:
        """The event, then the camera's (or zone's) retained state that follows from it."""
        self._send(self.target.topic, event.to_json(), _EVENT)
        if event.event == "start":
            self.publish_state(event.source, event.zone, event.label, event.score, event.start_time)
        else:
            self.publish_state(event.source, event.zone, None, None, event.end_time or event.start_time)

    def publish_state(
        self, camera: str, zone: str | None, label: str | None, score: float | None, since: float
    ) -> None:
        state = {"camera": camera, "zone": zone, "label": label,
                 "score": None if score is None else round(score, 4), "since": iso_time(since)}  # fmt: skip
        self._send(self.state_topic(camera, zone), json.dumps(state, separators=(",", ":")), _OTHER, retain=True)

    def publish_snapshot(self, camera: str, zone: str | None, jpeg: bytes) -> None:
        """The newest event snapshot's JPEG bytes, retained, on `topic/<camera>[/<zone>]/snapshot`."""
        self._send(self.stream_topic(camera, zone, "snapshot"), jpeg, _OTHER, retain=True)

    def _send(self, topic: str, payload: str | bytes, kind: str, retain: bool = False) -> None:
        mid = self._client.publish(topic, payload, qos=1, retain=retain).mid
        with self._lock:
            if mid in self._early:
                self._early.discard(mid)
                self.published += kind == _EVENT
            else:
                self._pending[mid] = kind

    def unacknowledged(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self, timeout: float = 2.0) -> int:
        """Wait up to `timeout` for queued events to be acknowledged; return how many were not.
        Closing again does nothing."""
        if self._closing:
            return self.unacknowledged()
        self._send(self.status_topic, OFFLINE, _OTHER, retain=True)  # a clean exit sends no last will
        deadline = time.monotonic() + timeout
        while self.unacknowledged() and time.monotonic() < deadline:
            time.sleep(0.02)
        left = self.unacknowledged()
        if left:
            log.warning("MQTT: %d message(s) not acknowledged by %s at shutdown", left, self.target.display)
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        return left

    # paho's network thread
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._warn(f"broker refused the connection: {reason_code}")
            return
        self._warned = False
        self.connected.set()
        self._send(self.status_topic, ONLINE, _OTHER, retain=True)
        if self.discovery is not None:
            for camera, zone in self.streams:
                config = self.discovery.config(camera, zone, self.state_topic(camera, zone), self.status_topic)
                self._send(self.discovery.config_topic(camera, zone), config, _OTHER, retain=True)
        log.info("MQTT: connected to %s", self.target.display)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set() and not self._closing:
            log.warning("MQTT: lost %s (%s); reconnecting", self.target.display, reason_code)
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            kind = self._pending.pop(mid, None)
            if kind is None:
                self._early.add(mid)
            else:
                self.published += kind == _EVENT

    def _on_connect_fail(self, client, userdata) -> None:
        self._warn("cannot connect")

    def _warn(self, why: str) -> None:
        if not self._warned:  # once per outage, not once per retry
            log.warning("MQTT: %s to %s; events are queued and retried", why, self.target.display)
            self._warned = True
