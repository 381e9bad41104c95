"""The preview page a person at the box sees, in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from servers import free_port, need
from test_monitor import CLIP, OTHER_CLIP, Monitor

from vtn_edge.monitor.preview import explain
from vtn_edge.smoothing import LabelPolicy
from vtn_edge.types import Prediction


def _prediction(label, top, score, full=True) -> Prediction:
    return Prediction(0, 40, 1.6, label, score, ((top, score), ("other", 0.01)), full, 3.0)


def test_the_preview_says_why_there_is_no_label():
    policy = LabelPolicy(threshold=0.8, hold_seconds=0.5)
    assert explain(_prediction(None, "wave", 0.0, full=False), policy) == "starting: the first window is filling"
    assert explain(_prediction(None, "wave", 0.62), policy) == "below threshold: wave 0.62 < 0.80"
    assert explain(_prediction(None, "wave", 0.91), policy) == "wave 0.91 is waiting out the hold (0.5 s)"
    assert explain(_prediction("still", "still", 0.95), policy, {"still"}) == "no action (still)"
    unwatched = explain(_prediction("fill", "fill", 0.95), policy, {"still"}, {"still", "fill"})  # --actions open
    assert unwatched == "fill is not among the actions watched here"
    assert explain(_prediction("open", "close", 0.85), policy) == "close leads, waiting out the hold (0.5 s)"
    assert explain(_prediction("open", "open", 0.85), policy) == ""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(*args: str) -> subprocess.CompletedProcess:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
               "--virtual-time-budget=3000", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def test_the_preview_page_in_a_real_browser(tmp_path, shared_data):
    need(_chromium() is not None, "chromium is not installed")
    port, videos = free_port(), shared_data / "videos"
    site = tmp_path / "site.toml"
    site.write_text(
        f"""
        loop = true
        snapshots = "snaps"
        preview_port = {port}
        [[camera]]
        name = "door"
        source = "{videos / CLIP}"
        [[camera.zone]]
        name = "left"
        box = [0.0, 0.0, 0.5, 1.0]
        [[camera.zone]]
        name = "right"
        box = [0.5, 0.25, 0.5, 0.75]
        [[camera]]
        name = "till"
        source = "{videos / OTHER_CLIP}"
        """.replace("\n        ", "\n")
    )
    mon = Monitor(tmp_path, "--config", str(site))  # --threshold 0 --hold 0: events for certain
    try:
        cameras = lambda: {e["source"] for e in mon.events() if e["event"] == "end"}  # noqa: E731
        mon.wait_for(lambda: cameras() == {"door", "till"}, "an ended event on each camera")
        page = _browser("--dump-dom", f"http://127.0.0.1:{port}/")
        assert page.returncode == 0, page.stderr[-2000:]
        dom = page.stdout
        cards = re.findall(r'<section class="camera" id="cam(\d)">(.*?)</section>', dom, re.S)
        assert [c[0] for c in cards] == ["0", "1"], dom[:3000]
        (_, door), (_, till) = cards
        assert re.search(r'<h2>door <span class="state up">up, \d+ fps</span></h2>', door), door[:500]
        assert re.search(r'<h2>till <span class="state up">up, \d+ fps</span></h2>', till), till[:500]
        door_labels = re.findall(r"<li>(\w+): <b>", door.split('class="labels"')[1].split("</ul>")[0])
        assert door_labels == ["left", "right"]  # one line per zone, filled in by the page's script
        snapshots = re.findall(r'<img src="/snapshots/([\w.-]+\.jpg)" alt="snapshot">', door + till)
        till_events = re.findall(r"<li>.*?</li>", till.split('class="events"')[1])
        assert snapshots and till_events and all(re.search(r"\d\d:\d\d:\d\d <b>\w+</b>", x) for x in till_events)
        jpeg = _get(f"http://127.0.0.1:{port}/snapshots/{snapshots[0]}")
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)
        for bad in ("..%2Fsite.toml", ".write-test.jpg", "missing.jpg"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                _get(f"http://127.0.0.1:{port}/snapshots/{bad}")

        shots = []
        for k in range(2):
            shot = tmp_path / f"page{k}.png"
            out = _browser(f"--screenshot={shot}", f"http://127.0.0.1:{port}/")
            assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
            shots.append(cv2.imread(str(shot)))
            time.sleep(1.0)
        assert shots[0].shape == (1000, 1400, 3) and shots[0].std() > 20  # rendered, not a blank page
        status = json.loads(_get(f"http://127.0.0.1:{port}/status.json"))
        assert all(c["frames_streamed"] >= 2 for c in status), status  # the browser received live frames
        changed = np.abs(shots[0].astype(int) - shots[1].astype(int)).max(axis=2) > 30
        assert changed.sum() > 2000  # the live images moved between the screenshots
    finally:
        code, _ = mon.terminate()
    assert code == 0, mon.log()
    assert not list(Path(tmp_path / "snaps").glob(".*"))
