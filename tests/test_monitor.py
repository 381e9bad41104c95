"""examples/rtsp_monitor.py against a real RTSP server and a real mosquitto broker.

The monitor runs as a user runs it (a subprocess), on the shipped default INT8 model. With
`--threshold 0 --hold 0` every full window has a label, so events are certain whatever the
footage shows (except background labels, which never raise one).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, SHIPPED_INT8
from servers import (
    Broker,
    RtspServer,
    Subscriber,
    free_port,
    have_rtsp_server,
    make_certificates,
    mosquitto_binary,
    need,
)

from vtn_edge.errors import VtnEdgeError
from vtn_edge.live import LiveOptions, LiveSource, describe, parse_source
from vtn_edge.monitor.events import ActionEvent, EventRules, EventTracker, JsonLinesWriter
from vtn_edge.monitor.mqtt import MqttError, parse_mqtt_url
from vtn_edge.types import Prediction

MODEL = SHIPPED_INT8
CLIP = "v_ApplyEyeMakeup_g01_c01.avi"  # 320x240
OTHER_CLIP = "carving_ice.mp4"  # 360x360


# ---------------------------------------------------------------------- helpers
class Monitor:
    def __init__(self, tmp_path: Path, *args: str, env: dict | None = None):
        self.events_path = tmp_path / "events.jsonl"
        self.stderr_path = tmp_path / "monitor.log"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115
        cmd = [sys.executable, str(ROOT / "examples" / "rtsp_monitor.py"), "--model", str(MODEL)]
        cmd += ["--events", str(self.events_path), "--threshold", "0", "--hold", "0", "--status-every", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env)

    def events(self) -> list[dict]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines()]

    def log(self) -> str:
        return self.stderr_path.read_text()

    def wait_for(self, condition, what: str, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"monitor exited ({self.proc.returncode}) waiting for {what}:\n{self.log()}")
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log()[-3000:]}")

    def terminate(self) -> tuple[int, float]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._stderr.close()
        return code, time.monotonic() - t0


def assert_complete(events: list[dict]) -> None:
    """Every start has exactly one end, with the same id, after it."""
    starts = {e["id"]: e for e in events if e["event"] == "start"}
    ends = {e["id"]: e for e in events if e["event"] == "end"}
    assert starts and starts.keys() == ends.keys()
    for event_id, end in ends.items():
        assert end["start_frame"] == starts[event_id]["start_frame"] and end["end_frame"] >= end["start_frame"]
        assert end["duration_s"] >= 0 and end["reason"]


def get(url: str, limit: int | None = None) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.headers["Content-Type"], r.read(limit) if limit else r.read()


@pytest.fixture
def rtsp(shared_data):
    need(have_rtsp_server(), "GStreamer's RTSP server for the system Python (python3-gi) is not installed")
    server = RtspServer(shared_data / "videos" / CLIP).start()
    yield server
    server.stop()


@pytest.fixture
def mosquitto_ok():
    need(mosquitto_binary() is not None, "mosquitto is not installed")


# ---------------------------------------------------------------------- the monitor, end to end
def test_rtsp_to_events_file_mqtt_metrics_preview_and_clips(tmp_path, rtsp, mosquitto_ok):
    broker = Broker(tmp_path, users={"edge": "s3cret-pw"}).start()
    subscriber = Subscriber(broker.port, "site/events", "edge", "s3cret-pw")
    metrics_port, preview_port = free_port(), free_port()
    env = {**os.environ, "VTN_MQTT_USERNAME": "edge", "VTN_MQTT_PASSWORD": "s3cret-pw"}
    mon = Monitor(
        tmp_path,
        "--source", rtsp.url,
        "--mqtt", f"mqtt://127.0.0.1:{broker.port}/site/events",
        "--metrics-port", str(metrics_port),
        "--preview-port", str(preview_port),
        "--save-clips", str(tmp_path / "clips"),
        "--clip-before", "1", "--clip-after", "0.5",
        "--merge-gap", "0", "--end-offset", "0",  # plain events: an end is known when it happens
        env=env,
    )  # fmt: skip
    try:
        mon.wait_for(lambda: len(mon.events()) >= 1, "a first event in the JSON-lines file")
        mon.wait_for(lambda: len(subscriber.messages) >= 1, "a first event at the MQTT subscriber")

        kind, body = get(f"http://127.0.0.1:{metrics_port}/metrics")
        text = body.decode()
        frames = [line for line in text.splitlines() if line.startswith('vtn_frames_total{source="cam0",zone=""}')]
        assert frames and float(frames[0].split()[-1]) > 0
        for name in (
            "vtn_frames_per_second",
            "vtn_inference_latency_seconds_bucket",
            "vtn_dropped_frames_total",
            "vtn_reconnects_total",
            "vtn_current_label",
            "vtn_source_up",
        ):
            assert any(line.startswith(name + "{") and 'source="cam0"' in line for line in text.splitlines()), name

        kind, page = get(f"http://127.0.0.1:{preview_port}/")
        assert kind.startswith("text/html") and b"/stream/0" in page
        kind, jpeg = get(f"http://127.0.0.1:{preview_port}/snapshot/0.jpg")
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert kind == "image/jpeg" and image.shape == (240, 320, 3)
        kind, stream = get(f"http://127.0.0.1:{preview_port}/stream/0", limit=20000)
        assert kind.startswith("multipart/x-mixed-replace") and stream.count(b"\xff\xd8") >= 1
        status = json.loads(get(f"http://127.0.0.1:{preview_port}/status.json")[1])
        assert status[0]["name"] == "cam0" and status[0]["connected"]

        time.sleep(2)  # let a clip's "after" part pass for the first event, if it ended
    finally:
        code, seconds = mon.terminate()
    assert code == 0 and seconds < 5, mon.log()
    events = mon.events()  # SIGTERM closed any open event: the file is complete and valid
    assert_complete(events)
    # the last event ends at shutdown, or earlier where the footage had turned to background by then
    assert events[-1]["event"] == "end" and events[-1]["reason"] in ("shutdown", "label_changed")
    assert not {e["label"] for e in events} & {"still", "none"}  # background never raises an event
    assert {e["source"] for e in events} == {"cam0"} and all(e["host"] for e in events)

    deadline = time.monotonic() + 5
    while len(subscriber.messages) < len(events) and time.monotonic() < deadline:
        time.sleep(0.1)
    published = [json.loads(m) for m in subscriber.messages]
    assert [(e["id"], e["event"]) for e in published] == [(e["id"], e["event"]) for e in events]
    assert "s3cret-pw" not in mon.log()
    subscriber.close()
    broker.stop()

    clips = sorted((tmp_path / "clips").iterdir())
    assert clips and all(not c.name.startswith(".") for c in clips), clips  # no half-written clip left
    assert {str(c) for c in clips} == {e["clip"] for e in events}
    capture = cv2.VideoCapture(str(clips[0]))
    ok, frame = capture.read()
    assert ok and frame.shape == (240, 320, 3) and capture.get(cv2.CAP_PROP_FRAME_COUNT) >= 10
    capture.release()
    # a clip whose "after" part passed before shutdown spans 1 s before the event to 0.5 s after it
    whole = [e for e in events if e["event"] == "end" and e["reason"] == "label_changed"]
    whole = [e for e in whole if _seconds(e["end_time"]) + 0.6 < _seconds(events[-1]["end_time"])]
    for event in whole:
        capture = cv2.VideoCapture(event["clip"])
        clip_s = capture.get(cv2.CAP_PROP_FRAME_COUNT) / capture.get(cv2.CAP_PROP_FPS)
        capture.release()
        assert abs(clip_s - (1.0 + event["duration_s"] + 0.5)) <= 3 / 25, (clip_s, event)  # a frame or two


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_event_times_follow_the_files_clock_when_it_is_read_faster_than_real_time(tmp_path, shared_data):
    mon = Monitor(tmp_path, "--source", str(shared_data / "videos" / CLIP), "--no-pace", "--loop", "--duration", "4")
    assert mon.proc.wait(60) == 0, mon.log()
    exited = time.time()
    events = mon.events()
    assert_complete(events)
    starts = [_seconds(e["start_time"]) for e in events if e["event"] == "start"]
    ends = [_seconds(e["end_time"]) for e in events if e["event"] == "end"]
    # 4 s of reading as fast as the file decodes are many more seconds of the file's own time: on
    # the file's clock the last event ends later than the wall clock had come when the monitor
    # exited (on the wall clock it could not). How many events there are depends on the CPU's speed.
    assert max(ends) > exited + 4, (max(ends) - exited, mon.log())
    assert all(b - a > -1e-3 for a, b in zip(starts, starts[1:]))  # in order: a loop continues the clock


def test_reconnects_when_the_camera_dies_and_comes_back_at_another_size(tmp_path, rtsp, shared_data):
    metrics_port = free_port()
    mon = Monitor(tmp_path, "--source", rtsp.url, "--read-timeout", "2", "--metrics-port", str(metrics_port))
    try:
        mon.wait_for(lambda: any(e["event"] == "start" for e in mon.events()), "a first event")
        rtsp.stop(signal.SIGKILL)  # a dead camera
        mon.wait_for(
            lambda: any(e.get("reason") == "source_lost" for e in mon.events()), "the open event closed as lost"
        )
        lost_at = len(mon.events())
        rtsp.start(shared_data / "videos" / OTHER_CLIP)  # same URL, now 360x360
        mon.wait_for(
            lambda: any(e["event"] == "start" for e in mon.events()[lost_at:]), "a new event after the reconnect"
        )
        text = get(f"http://127.0.0.1:{metrics_port}/metrics")[1].decode()
        assert 'vtn_reconnects_total{source="cam0"} 1.0' in text
        assert 'vtn_source_up{source="cam0"} 1.0' in text
    finally:
        code, _ = mon.terminate()
    assert code == 0, mon.log()
    assert "reconnected" in mon.log()
    assert_complete(mon.events())


def test_two_sources_and_an_unreachable_one(tmp_path, rtsp, shared_data):
    dead = f"rtsp://127.0.0.1:{free_port()}/nothing"
    mon = Monitor(
        tmp_path,
        "--source", rtsp.url, "--name", "door",
        "--source", str(shared_data / "videos" / OTHER_CLIP), "--name", "yard",
        "--source", dead, "--name", "gate",
        "--loop", "--open-timeout", "1",
    )  # fmt: skip
    try:
        mon.wait_for(lambda: {e["source"] for e in mon.events()} >= {"door", "yard"}, "events from both live sources")
    finally:
        code, _ = mon.terminate()
    assert code == 0, mon.log()
    events = mon.events()
    assert_complete(events)
    assert {e["source"] for e in events} == {"door", "yard"}
    assert "gate: cannot open" in mon.log() and "Traceback" not in mon.log()


def test_events_wait_for_a_broker_that_is_down_and_arrive_when_it_is_up(tmp_path, shared_data, mosquitto_ok):
    port = free_port()
    mon = Monitor(
        tmp_path, "--source", str(shared_data / "videos" / CLIP), "--loop", "--mqtt", f"mqtt://127.0.0.1:{port}/ev"
    )
    try:
        mon.wait_for(lambda: len(mon.events()) >= 1, "an event while the broker is down")
        assert "MQTT: cannot connect" in mon.log()
        broker = Broker(tmp_path, port=port).start()
        subscriber = Subscriber(port, "ev")
        first = mon.events()[0]["id"]
        mon.wait_for(lambda: any(json.loads(m)["id"] == first for m in subscriber.messages), "the queued event")
    finally:
        code, _ = mon.terminate()
    assert code == 0, mon.log()
    subscriber.close()
    broker.stop()


def _check_home_assistant_discovery(port: int, status_topic: str, cameras: dict[str, str]) -> None:
    """Retained sensor configs as Home Assistant's MQTT discovery reads them (REFERENCE.md section 8)."""
    reader = Subscriber(port, "homeassistant/#")
    deadline = time.monotonic() + 10
    while len(reader.received) < len(cameras) and time.monotonic() < deadline:
        time.sleep(0.1)
    reader.close()
    configs = {}
    for topic, payload, retained in reader.received:
        prefix, component, node_id, object_id, last = topic.split("/")
        assert (prefix, component, last, retained) == ("homeassistant", "sensor", "config", True)
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", node_id) and re.fullmatch(r"[a-zA-Z0-9_-]+", object_id)
        configs[object_id] = json.loads(payload)
    assert len(configs) == len(cameras)
    assert len({c["unique_id"] for c in configs.values()}) == len(cameras)
    for camera, state_topic in cameras.items():
        (config,) = [c for c in configs.values() if c["name"] == f"{camera} action"]
        assert config["state_topic"] == config["json_attributes_topic"] == state_topic
        assert "value_json.label" in config["value_template"]
        availability = (config["availability_topic"], config["payload_available"], config["payload_not_available"])
        assert availability == (status_topic, "online", "offline")
        device = config["device"]
        assert device["identifiers"] and device["manufacturer"] == "vtn-edge" and device["name"].startswith("vtn-edge ")
        assert {"model", "sw_version"} <= device.keys()


def test_a_late_subscriber_sees_retained_state_and_availability_and_the_last_will(tmp_path, shared_data, mosquitto_ok):
    broker = Broker(tmp_path).start()
    videos = shared_data / "videos"
    mon = Monitor(
        tmp_path,
        "--source", str(videos / CLIP), "--name", "door",
        "--source", str(videos / OTHER_CLIP), "--name", "yard/back",
        "--loop", "--mqtt", f"mqtt://127.0.0.1:{broker.port}/site/vtn", "--ha-discovery",
    )  # fmt: skip
    try:
        mon.wait_for(lambda: any(e["event"] == "end" and e["source"] == "door" for e in mon.events()), "an end")
        _check_home_assistant_discovery(
            broker.port, "site/vtn/status", {"door": "site/vtn/door/state", "yard/back": "site/vtn/yard_back/state"}
        )
        late = Subscriber(broker.port, "site/vtn/#")  # connects after the fact: retained messages only
        deadline = time.monotonic() + 10
        while (
            not {"site/vtn/status", "site/vtn/door/state", "site/vtn/yard_back/state"}
            <= {t for t, _, _ in late.received}
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert late.on("site/vtn/status")[0] == (b"online", True)
        for topic, camera in (("site/vtn/door/state", "door"), ("site/vtn/yard_back/state", "yard/back")):
            payload, retained = late.on(topic)[0]
            state = json.loads(payload)
            assert retained and state["camera"] == camera and state["zone"] is None
            assert set(state) == {"camera", "zone", "label", "score", "since"}
            assert state["label"] is None or state["label"] in {e["label"] for e in mon.events()}
        late.close()
        watcher = Subscriber(broker.port, "site/vtn/status")
        mon.proc.kill()  # no clean disconnect: the broker publishes the last will
        mon.proc.wait(10)
        deadline = time.monotonic() + 60
        while watcher.latest("site/vtn/status") != (b"offline", False) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert watcher.latest("site/vtn/status") == (b"offline", False)  # live, not retained, as it happens
        watcher.close()
        after = Subscriber(broker.port, "site/vtn/status")
        time.sleep(0.5)
        assert after.on("site/vtn/status") == [(b"offline", True)]  # and kept for whoever comes next
        after.close()
    finally:
        if mon.proc.poll() is None:
            mon.terminate()
        broker.stop()


def test_a_clean_shutdown_says_offline_and_leaves_the_state(tmp_path, shared_data, mosquitto_ok):
    broker = Broker(tmp_path).start()
    mon = Monitor(
        tmp_path,
        "--source",
        str(shared_data / "videos" / CLIP),
        "--loop",
        "--mqtt",
        f"mqtt://127.0.0.1:{broker.port}/ev",
    )
    try:
        mon.wait_for(lambda: len(mon.events()) >= 1, "an event")
    finally:
        code, _ = mon.terminate()
    assert code == 0, mon.log()
    late = Subscriber(broker.port, "ev/#")
    time.sleep(0.5)
    assert late.on("ev/status") == [(b"offline", True)]
    payload, retained = late.on("ev/cam0/state")[0]
    assert retained and json.loads(payload)["label"] is None  # the shutdown ended the event
    late.close()
    broker.stop()


def test_each_event_gets_a_snapshot_on_disk_and_over_mqtt(tmp_path, shared_data, mosquitto_ok):
    import cv2

    broker = Broker(tmp_path).start()
    snapshots = Subscriber(broker.port, "ev/cam0/snapshot")
    mon = Monitor(
        tmp_path,
        "--source", str(shared_data / "videos" / CLIP), "--loop",
        "--mqtt", f"mqtt://127.0.0.1:{broker.port}/ev", "--snapshots", str(tmp_path / "snaps"),
    )  # fmt: skip
    try:
        mon.wait_for(lambda: any(e["event"] == "end" for e in mon.events()), "an event that ended")
    finally:
        code, _ = mon.terminate()
    assert code == 0, mon.log()
    events = mon.events()
    assert_complete(events)
    for event in events:
        path = Path(event["snapshot"])
        assert path.parent == tmp_path / "snaps" and path.name == f"{event['id']}-{event['label']}.jpg"
        image = cv2.imread(str(path))
        assert image is not None and image.shape[:2] == (240, 320)  # the camera's frame, annotated
    assert not list((tmp_path / "snaps").glob(".*"))  # no partial or test files left
    deadline = time.monotonic() + 5
    while len(snapshots.messages) < len(events) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(snapshots.messages) == len(events)
    decoded = cv2.imdecode(np.frombuffer(snapshots.messages[-1], np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape[:2] == (240, 320)
    snapshots.close()
    broker.stop()


def test_a_site_file_runs_two_cameras_one_with_two_zones(tmp_path, rtsp, shared_data, mosquitto_ok):
    broker = Broker(tmp_path).start()
    site = tmp_path / "site.toml"
    site.write_text(
        f"""
        model = "{MODEL}"
        loop = true
        snapshots = "snaps"
        threshold = 0.0
        hold = 0.0
        [mqtt]
        url = "mqtt://127.0.0.1:{broker.port}/site1/vtn"
        ha_discovery = true
        [[camera]]
        name = "door"
        source = "{rtsp.url}"
        [[camera.zone]]
        name = "left"
        box = [0.0, 0.0, 0.5, 1.0]
        [[camera.zone]]
        name = "right"
        box = [0.5, 0.25, 0.5, 0.75]
        [[camera]]
        name = "till"
        source = "{shared_data / "videos" / OTHER_CLIP}"
        hold = 600.0
        """.replace("\n        ", "\n")
    )
    mon = Monitor(tmp_path, "--config", str(site))  # the helper's --events, --threshold 0, --hold 0: flags win
    try:
        ended = lambda zone: any(e["event"] == "end" and e["zone"] == zone for e in mon.events())  # noqa: E731
        mon.wait_for(lambda: ended("left") and ended("right"), "an ended event in each of door's zones")
        _check_home_assistant_discovery(broker.port, "site1/vtn/status", {
            "door left": "site1/vtn/door/left/state", "door right": "site1/vtn/door/right/state",
            "till": "site1/vtn/till/state",
        })  # fmt: skip
        late = Subscriber(broker.port, "site1/vtn/#")  # connected after the monitor: retained messages only
        topics = {"site1/vtn/door/left/state", "site1/vtn/door/right/state", "site1/vtn/till/state"}
        deadline = time.monotonic() + 5
        while not topics <= {t for t, _, _ in late.received} and time.monotonic() < deadline:
            time.sleep(0.1)
        states = {t: json.loads(p) for t, p, retained in late.received if t.endswith("/state") and retained}
        assert set(states) == topics  # no state for door's whole frame: it has zones
        assert [states[t]["zone"] for t in sorted(topics)] == ["left", "right", None]
        assert {t for t, _, r in late.received if t.endswith("/snapshot") and r} <= {
            "site1/vtn/door/left/snapshot", "site1/vtn/door/right/snapshot"
        }  # fmt: skip
        late.close()
    finally:
        code, _ = mon.terminate()
    assert code == 0, mon.log()
    events = mon.events()
    assert_complete(events)
    assert {(e["source"], e["zone"]) for e in events} == {("door", "left"), ("door", "right")}  # till: hold 600 s
    for event in events:
        assert event["id"].startswith(f"door-{event['zone']}-")
        image = cv2.imread(event["snapshot"])  # the whole frame, the zone drawn on it
        assert Path(event["snapshot"]).parent == tmp_path / "snaps" and image.shape[:2] == (240, 320)
    broker.stop()


def test_a_bad_site_file_stops_the_monitor_before_any_camera(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(f'model = "{MODEL}"\n[[camera]]\nname = "door"\nsource = "0"\ntreshold = 0.5\n')
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "rtsp_monitor.py"), "--config", str(site)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert f"{site}, line 5: unknown key 'treshold' in camera 1" in out.stderr and "Traceback" not in out.stderr


def test_a_camera_raises_events_only_for_the_actions_it_watches(tmp_path):
    """Two cameras on one stream in which blue_to_red, disappear and appear happen: one watches every
    action, the other (`actions` in the site file) only appear and disappear. With threshold 0
    every full window has a label, so the first camera has events of other labels as well."""
    from converter.data import streams as synth_streams

    synth_streams.write_streams(tmp_path / "stream", streams=1, seconds=16, seed=51, progress=False)
    video = tmp_path / "stream" / "stream_0000.mp4"
    site = tmp_path / "site.toml"
    cameras = f'[[camera]]\nname = "all"\nsource = "{video}"\n[[camera]]\nname = "shelf"\nsource = "{video}"\n'
    site.write_text(cameras + 'actions = ["appear", "disappear"]\n')
    mon = Monitor(tmp_path, "--config", str(site), "--no-pace")
    assert mon.proc.wait(120) == 0, mon.log()
    events = mon.events()
    assert_complete(events)
    labels = {name: {e["label"] for e in events if e["source"] == name} for name in ("all", "shelf")}
    assert labels["shelf"] and labels["shelf"] <= {"appear", "disappear"}, labels
    assert labels["all"] - {"appear", "disappear"}, labels

    site.write_text(cameras + 'actions = ["appear", "disapear"]\n')
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "rtsp_monitor.py"), "--config", str(site), "--model", str(MODEL),
         "--events", str(tmp_path / "none.jsonl")], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "actions of camera 'shelf': 'disapear' is not an action of this model" in out.stderr
    assert not (tmp_path / "none.jsonl").exists()


def test_events_over_tls_to_a_broker_with_its_own_ca(tmp_path, shared_data, mosquitto_ok):
    need(shutil.which("openssl") is not None, "openssl is not installed")
    certs = make_certificates(tmp_path)
    broker = Broker(tmp_path, tls=certs).start()
    subscriber = Subscriber(broker.port, "secure", ca=certs["ca"])
    mon = Monitor(
        tmp_path,
        "--source", str(shared_data / "videos" / CLIP),
        "--mqtt", f"mqtts://127.0.0.1:{broker.port}/secure", "--mqtt-ca", certs["ca"],
    )  # fmt: skip
    try:
        mon.wait_for(lambda: len(subscriber.messages) >= 1, "an event over TLS")
    finally:
        code, _ = mon.terminate()
        subscriber.close()
        broker.stop()
    assert code == 0, mon.log()
    assert json.loads(subscriber.messages[0])["event"] == "start"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "ftp://camera/stream"], "unsupported source scheme 'ftp'"),
        (["--source", "missing.mp4"], "video file missing.mp4 does not exist"),
        (["--source", "0", "--mqtt", "http://broker/topic"], "--mqtt must look like mqtt://host:port/topic"),
        (["--source", "0", "--mqtt", "mqtt://u:pw@broker/t"], "not in the URL"),
        (["--source", "0", "--ha-discovery"], "--ha-discovery announces cameras over MQTT: add --mqtt"),
        (["--source", "0", "--snapshots", "/proc/no/such"], "--snapshots /proc/no/such: cannot write there"),
        (["--source", "0", "--end-offset", "-0.5"], "event rules: end_offset must be >= 0 seconds, got -0.5"),
        (["--source", "0", "--start-offset", "-1"], "event rules: start_offset must be >= 0 seconds, got -1.0"),
        (["--source", "0", "--decode-every", "0"], "--decode-every: expected a whole number >= 1 (1: every window)"),
        (["--source", "0", "--name", "a/b", "--source", "1", "--name", "a_b", "--mqtt", "mqtt://h/t"], "collide"),
    ],
)
def test_bad_arguments_get_a_clear_message(tmp_path, args, message):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "rtsp_monitor.py"), "--model", str(MODEL), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_not_a_model_directory_and_a_port_in_use(tmp_path, shared_data):
    clip = str(shared_data / "videos" / CLIP)
    script = str(ROOT / "examples" / "rtsp_monitor.py")
    out = subprocess.run(
        [sys.executable, script, "--model", str(tmp_path), "--source", clip], capture_output=True, text=True
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr and str(tmp_path) in out.stderr, out.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flag in ("--metrics-port", "--preview-port"):
            out = subprocess.run(
                [sys.executable, script, "--model", str(MODEL), "--source", clip, flag, str(port)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 2 and f"port 127.0.0.1:{port} is already in use" in out.stderr, out.stderr


# ---------------------------------------------------------------------- the parts
def _prediction(i: int, label: str | None, score: float = 0.9, full: bool = True) -> Prediction:
    return Prediction(0, i, 1000.0 + i / 25, label, score, (), full, 1.0)


def test_event_tracker_turns_labels_into_start_and_end_events(tmp_path):
    got: list[ActionEvent] = []
    tracker = EventTracker("cam", got.append, host="box")
    labels = [None] * 3 + ["wave"] * 5 + [None] * 2 + ["clap"] * 4
    for i, label in enumerate(labels):
        tracker.update(_prediction(i, label, full=i >= 2))
    tracker.close("shutdown")
    kinds = [(e.event, e.label, e.start_frame, e.end_frame, e.reason) for e in got]
    assert kinds == [
        ("start", "wave", 3, None, None),
        ("end", "wave", 3, 7, "label_changed"),
        ("start", "clap", 10, None, None),
        ("end", "clap", 10, 13, "shutdown"),
    ]
    writer = JsonLinesWriter(tmp_path / "e.jsonl")
    for e in got:
        writer.write(e)
    writer.close()
    rows = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert rows[1]["duration_s"] == pytest.approx(5 / 25, abs=1e-3)  # 5 frames
    assert rows[1]["start_time"].endswith("Z") and rows[1]["end_time"].endswith("Z")  # UTC, ISO 8601
    start = datetime.fromisoformat(rows[1]["start_time"].replace("Z", "+00:00"))
    assert start.utcoffset().total_seconds() == 0 and abs(start.timestamp() - got[1].start_time) < 1e-3


def test_event_rules_bridge_a_short_gap_and_take_the_window_lag_off_the_end():
    got: list[ActionEvent] = []
    tracker = EventTracker("cam", got.append, host="box", rules=EventRules(merge_gap=0.22, end_offset=0.1))
    # frames are 1/25 s apart: a 3-frame gap (0.12 s) is bridged, an 8-frame gap is not
    labels = ["wave"] * 5 + [None] * 3 + ["wave"] * 4 + [None] * 8 + ["wave"] * 3 + [None] * 2 + ["clap"] * 2
    for i, label in enumerate(labels):
        tracker.update(_prediction(i, label))
        if i == 14:  # the gap of the first event: still open while it waits the gap out
            assert tracker.current is not None and tracker.current.label == "wave" and tracker.label is None
        if i == 18:  # 0.24 s after the label went: ended
            assert tracker.current is None
    tracker.close("shutdown")
    ends = [(e.label, e.start_frame, e.end_frame, e.reason) for e in got if e.event == "end"]
    assert ends == [
        ("wave", 0, 9, "label_changed"),  # the label went at frame 12; less 0.1 s: frame 9.5
        ("wave", 20, 20, "label_changed"),  # another label came within the gap: ended at once, not before its start
        ("clap", 25, 26, "shutdown"),  # still labelled when the source went: nothing taken off
    ]
    first = next(e for e in got if e.event == "end")
    assert first.end_time == pytest.approx(1000.0 + 12 / 25 - 0.1)
    assert [e.event for e in got] == ["start", "end", "start", "end", "start", "end"]  # no start inside the gap

    got.clear()  # the source goes while an event waits out its gap: it ends when its label went,
    # and says the source went (whether the label would have come back is unknown)
    tracker = EventTracker("cam", got.append, host="box", rules=EventRules(merge_gap=1.0))
    for i, label in enumerate(["wave"] * 4 + [None] * 3):
        tracker.update(_prediction(i, label))
    tracker.close("source_lost")
    assert (got[-1].end_frame, got[-1].reason) == (3, "source_lost")
    with pytest.raises(VtnEdgeError, match="merge_gap must be >= 0"):
        EventRules(merge_gap=-1)

    # a gap that ends exactly on a frame ends there, whatever float rounding says (30 fps, 0.2 s)
    for start in range(570, 600):
        tracker = EventTracker("cam", got.append, host="box", rules=EventRules(merge_gap=0.2))
        for i, label in enumerate(["wave"] * 3 + [None] * 7):
            tracker.update(dataclasses.replace(_prediction(start + i, label), timestamp=(start + i) / 30))
            assert (tracker.current is None) == (i >= 9), (start, i)  # the label went at i = 3; 6 frames on


def test_event_rules_date_the_start_back_by_the_window_lag():
    got: list[ActionEvent] = []
    tracker = EventTracker("cam", got.append, host="box", rules=EventRules(merge_gap=0.0, start_offset=0.2))
    # frames 1/25 s apart: the first label comes at frame 3 (only 0.12 s into the stream), the second
    # right after the first ends, the third long after
    labels = [None] * 3 + ["wave"] * 5 + ["clap"] * 4 + [None] * 20 + ["wave"] * 3
    for i, label in enumerate(labels):
        tracker.update(_prediction(i, label))
        if i in (3, 8, 32):  # each start is published at the frame where its label appeared
            assert got[-1].event == "start" and got[-1].detected_time == pytest.approx(1000.0 + i / 25)
    tracker.close("shutdown")
    starts = [(e.label, e.start_frame, e.id) for e in got if e.event == "start"]
    assert starts == [
        ("wave", 0, "cam-3-1000120"),  # 0.2 s back would be before the stream's first frame: frame 0
        ("clap", 8, "cam-8-1000320"),  # not before the previous event's end (frame 8)
        ("wave", 27, "cam-32-1001280"),  # 0.2 s = 5 frames back; the id keeps frame 32
    ]
    start, end = got[-2:]
    assert start.start_time == end.start_time == pytest.approx(1000.0 + 27 / 25)
    assert end.detected_time == start.detected_time  # the end repeats when the start was published
    assert json.loads(got[-1].to_json())["detected_time"].startswith("1970-01-01T00:16:41.280")
    with pytest.raises(VtnEdgeError, match="event rules: start_offset must be >= 0 seconds, got -0.1"):
        EventRules(start_offset=-0.1)
    with pytest.raises(VtnEdgeError, match="event rules: end_offset must be >= 0 seconds, got nan"):
        EventRules(end_offset=float("nan"))

    # a start is never dated back across an outage: the camera went (no event open) and came back
    for outage in (True, False):
        got.clear()
        tracker = EventTracker("cam", got.append, host="box", rules=EventRules(start_offset=2.0))
        for i in range(40):
            tracker.update(_prediction(i, None))
        if outage:
            tracker.close("source_lost")
        for i in range(40, 44):
            tracker.update(_prediction(i, "wave" if i == 43 else None))
        # without the outage, 2 s (50 frames) back from frame 43 is clamped at the first frame seen
        assert got[0].start_frame == (40 if outage else 0)


def test_live_source_drops_frames_a_slow_consumer_cannot_take(shared_data):
    options = LiveOptions(pace=False)
    with LiveSource(str(shared_data / "videos" / CLIP), options) as source:
        taken = []
        while True:
            item = source.take()
            if item is not None:
                taken.append(item)
            elif source.stats.finished:
                break
            time.sleep(0.02)  # slower than the file decodes
        stats = source.stats
    assert stats.frames_read == 164 and stats.finished
    assert len(taken) + stats.frames_dropped == 164 and stats.frames_dropped > 0
    assert all(t.connection == 1 for t in taken) and taken[0].frame.shape == (240, 320, 3)


def test_live_source_converts_to_pixels_only_what_its_consumer_wants(shared_data):
    with LiveSource(str(shared_data / "videos" / CLIP), LiveOptions(pace=False)) as source:
        source.want_pixels(False)  # before the first read: every frame is only grabbed
        taken = []
        while True:
            item = source.take()
            if item is not None:
                taken.append(item)
            elif source.stats.finished:
                break
            time.sleep(0.001)
    stats = source.stats
    assert stats.frames_read == 164 and stats.frames_converted == 0 and stats.size is None
    assert taken and all(t.frame is None for t in taken)
    stamps = [t.timestamp for t in taken]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))  # timestamps go on without pixels


def test_the_monitor_converts_only_the_frames_its_schedule_encodes(shared_data):
    """The schedule encodes every second frame; the frames in between are only grabbed. A frame
    that comes without pixels where the schedule needs them is skipped and counted as dropped."""
    from vtn_edge.monitor.app import Monitor as InProcessMonitor
    from vtn_edge.monitor.app import MonitorConfig

    config = MonitorConfig(model=MODEL, sources=[str(shared_data / "videos" / CLIP)], status_every_s=0)
    monitor = InProcessMonitor(config)
    camera = monitor.cameras[0]
    camera.source.want_pixels(False)  # the first frame comes without the pixels frame 0 needs
    summary = monitor.run(threading.Event())
    stats, source = camera.source.stats, summary.sources[0]
    assert stats.frames_read == 164 and camera.unusable >= 1
    assert source.dropped == stats.frames_dropped + camera.unusable
    assert source.frames + source.dropped == 164 and source.frames >= 150  # labelled, or counted as dropped
    assert stats.frames_converted <= 0.55 * stats.frames_read, stats  # about half: the encoded ones
    p50, p99 = source.latency_ms  # push -> label, over every labelled frame
    assert 0 < p50 <= p99 < 1000, source.latency_ms  # one paced camera: the box keeps up
    assert f"{p50:.0f} / {p99:.0f}" in summary.table()


def test_the_summary_of_a_camera_that_labelled_nothing():
    from vtn_edge.monitor.app import MonitorSummary, SourceSummary

    silent = SourceSummary("door", frames=0, fps=0.0, dropped=0, reconnects=3, events=0)
    table = MonitorSummary(5.0, [silent], 200.0, 201.0, None).table()
    assert "latency p50 / p99 ms" in table and table.splitlines()[-1].rstrip().endswith("| -                    |")


def test_decode_every_reaches_the_recognizer(shared_data):
    """`--decode-every 2`: the monitor's recognizer decodes every second window, and every frame is still labelled."""
    from vtn_edge.monitor.app import Monitor as InProcessMonitor
    from vtn_edge.monitor.cli import build_parser, config_from_args

    args = build_parser().parse_args(
        ["--model", str(MODEL), "--source", str(shared_data / "videos" / CLIP), "--decode-every", "2"]
    )
    monitor = InProcessMonitor(config_from_args(args))
    assert monitor.recognizer.decode_every == 2
    summary = monitor.run(threading.Event())
    source = summary.sources[0]
    assert source.frames + source.dropped == 164 and source.frames >= 150  # played at its rate: few or none dropped


def test_source_and_url_checks():
    assert parse_source("3") == 3 and parse_source("rtsp://h/s") == "rtsp://h/s"
    assert describe("rtsp://admin:pw@10.0.0.2:554/s") == "rtsp://***@10.0.0.2:554/s"
    assert parse_mqtt_url("mqtts://broker/site/a").port == 8883
    with pytest.raises(MqttError, match="wildcards"):
        parse_mqtt_url("mqtt://broker/site/#")


def test_a_hung_camera_times_out_and_is_reconnected(shared_data):
    """The server stops sending (SIGSTOP) with the connection open: the read timeout fires, opening
    again times out while it hangs, and the stream comes back once it resumes."""
    need(have_rtsp_server(), "GStreamer's RTSP server for the system Python (python3-gi) is not installed")
    server = RtspServer(shared_data / "videos" / CLIP).start()
    options = LiveOptions(open_timeout_s=1.5, read_timeout_s=1.5, backoff_initial_s=0.2, backoff_max_s=0.5)
    try:
        with LiveSource(server.url, options) as source:

            def wait(condition, what: str, timeout: float = 40) -> None:
                deadline = time.monotonic() + timeout
                while not condition():
                    assert time.monotonic() < deadline, f"{what}: {source.stats}"
                    source.take()
                    time.sleep(0.05)

            wait(lambda: source.stats.frames_read > 10, "frames")
            server.proc.send_signal(signal.SIGSTOP)  # hangs: accepts nothing new, sends nothing
            wait(lambda: not source.stats.connected, "the read timeout")
            assert source.stats.last_error == "read failed or timed out"
            wait(lambda: source.stats.failed_attempts >= 1, "an open that times out on the hung server")
            server.proc.send_signal(signal.SIGCONT)
            read_before = source.stats.frames_read
            wait(lambda: source.stats.reconnects >= 1 and source.stats.frames_read > read_before + 10, "the return")
    finally:
        server.proc.send_signal(signal.SIGCONT)
        server.stop()


def test_a_server_that_accepts_and_says_nothing_is_an_open_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"rtsp://127.0.0.1:{listener.getsockname()[1]}/stream"
        options = LiveOptions(open_timeout_s=1.0, read_timeout_s=1.0, backoff_initial_s=0.2, backoff_max_s=0.2)
        with LiveSource(url, options) as source:
            deadline = time.monotonic() + 20
            while source.stats.failed_attempts < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            stats = source.stats
        assert stats.failed_attempts >= 2 and not stats.connected and stats.frames_read == 0
        assert stats.last_error == "unreachable, refused or not a video stream"


def test_a_threshold_and_a_hold_shape_the_events(tmp_path, shared_data):
    """The monitor's own policy flags (after the helper's 0 and 0): no event below the threshold, and
    no label replaced before another has led for the hold (stream time: --no-pace reads fast).
    Plain events: the end offset would take up to 0.3 s off a held event's duration."""
    mon = Monitor(tmp_path, "--source", str(shared_data / "videos" / OTHER_CLIP), "--no-pace", "--loop",
                  "--duration", "4", "--threshold", "0.8", "--hold", "0.4",
                  "--merge-gap", "0", "--end-offset", "0")  # fmt: skip
    assert mon.proc.wait(60) == 0, mon.log()
    events = mon.events()
    assert_complete(events)
    ends = [e for e in events if e["event"] == "end"]
    starts = [e for e in events if e["event"] == "start"]
    # a label starts above the threshold; while it is held, its score may dip below (the mean too)
    assert all(e["score"] >= 0.8 for e in starts) and all(e["max_score"] >= 0.8 for e in ends), events
    changed = [e for e in ends if e["reason"] == "label_changed"]
    assert changed and all(e["duration_s"] >= 0.4 - 0.05 for e in changed), changed
