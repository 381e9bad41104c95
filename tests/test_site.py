"""The monitor's site file (`--config site.toml`): what it sets, what flags override, what it refuses."""

from __future__ import annotations

import textwrap

import pytest

from vtn_edge.monitor.cli import apply_site, build_parser
from vtn_edge.monitor.site import SiteError, load_site

SITE = """\
model = "models/int8"
events = "events.jsonl"
threshold = 0.7
merge_gap = 0.5
start_offset = 0.4
pace = false
decode_every = 2
actions = ["appear", "disappear"]
matmul_as_conv = "off"
[mqtt]
url = "mqtt://broker.lan:1883/site1/vtn"
ha_discovery = true
[clips]
folder = "clips"
before = 2
[[camera]]
name = "door"
source = "rtsp://10.0.0.21:554/stream1"
threshold = 0.6
hold = 0.5
actions = ["open", "close"]
[[camera]]
name = "till"
source = "rtsp://10.0.0.22:554/stream1"
[[camera.zone]]
name = "counter"
box = [0.0, 0.0, 0.5, 1.0]
[[camera.zone]]
name = "drawer"
box = [0.5, 0.5, 0.5, 0.5]
hold = 1.5
actions = ["fill", "empty"]
"""


ZONE = '[[camera]]\nname = "a"\nsource = "0"\n[[camera.zone]]\nname = "z"\n'  # lines 1-5


def _write(tmp_path, text: str):
    path = tmp_path / "site.toml"
    path.write_text(textwrap.dedent(text))
    return path


def _args(argv: list[str]):
    return apply_site(build_parser().parse_args(argv), argv)


def test_a_site_file_sets_what_the_flags_would(tmp_path):
    path = _write(tmp_path, SITE)
    args = _args(["--config", str(path)])
    assert args.model == tmp_path / "models/int8" and args.events == tmp_path / "events.jsonl"
    assert (args.mqtt, args.ha_discovery) == ("mqtt://broker.lan:1883/site1/vtn", "homeassistant")
    assert (args.save_clips, args.clip_before, args.clip_after) == (tmp_path / "clips", 2, 3.0)
    assert args.no_pace is True and args.threshold == 0.7 and (args.merge_gap, args.end_offset) == (0.5, 0.2)
    assert args.start_offset == 0.4
    assert args.decode_every == 2 and args.matmul_as_conv == "off"
    assert args.source == ["rtsp://10.0.0.21:554/stream1", "rtsp://10.0.0.22:554/stream1"]
    assert args.name == ["door", "till"]
    door, till = args.camera_policies
    assert (door.threshold, door.hold_seconds) == (0.6, 0.5)
    assert (till.threshold, till.hold_seconds) == (0.7, args.hold)  # the site's default, then the flag default
    assert args.zones[0] == []  # door: the whole frame
    counter, drawer = args.zones[1]
    assert (counter.name, counter.box, counter.policy) == ("counter", (0.0, 0.0, 0.5, 1.0), None)  # till's policy
    assert drawer.box == (0.5, 0.5, 0.5, 0.5) and (drawer.policy.threshold, drawer.policy.hold_seconds) == (0.7, 1.5)
    # the actions that raise events: the zone's, else its camera's, else the site's (None: every action)
    assert args.actions == ("appear", "disappear") and args.camera_actions == [("open", "close"), None]
    assert (counter.actions, drawer.actions) == (None, ("fill", "empty"))


def test_flags_override_the_file(tmp_path):
    path = _write(tmp_path, SITE)
    args = _args(["--config", str(path), "--threshold", "0.9", "--model", "other", "--source", "clip.mp4"]
                 + ["--decode-every", "3", "--matmul-as-conv", "on"])  # fmt: skip
    assert args.threshold == 0.9 and str(args.model) == "other" and args.decode_every == 3
    assert args.matmul_as_conv == "on"
    assert args.source == ["clip.mp4"] and args.name == [] and args.camera_policies is None and args.zones is None
    assert args.camera_actions is None and args.actions == ("appear", "disappear")  # the site's, for --source
    assert _args(["--config", str(path), "--actions", "open, close"]).actions == ("open", "close")


@pytest.mark.parametrize(
    "text, message",
    [
        ("model = \"m\"\nthreshold = = 1\n", r"site.toml: not valid TOML: .*line 2"),
        ("model = \"m\"\n\nthresold = 0.5\n", r"site.toml, line 3: unknown key 'thresold' in the top level"),
        ("[mqtt]\nurl = \"mqtt://h/t\"\npassword = \"x\"\n", r"line 3: unknown key 'password' in \[mqtt\]"),
        ("threshold = \"high\"\n", r"line 1: 'threshold' must be a number, got 'high'"),
        ("loop = 1\n", r"line 1: 'loop' must be true/false, got 1"),
        ("smoothing = \"median\"\n", r"line 1: 'smoothing' is 'median'; choose one of: mean, ema, none"),
        ("hold = -1\n", r"line 1: 'hold' must not be negative"),
        ("merge_gap = -0.5\n", r"line 1: 'merge_gap' must not be negative"),
        ("start_offset = -0.1\n", r"line 1: 'start_offset' must not be negative"),
        ("model = \"m\"\ndecode_every = 0\n", r"line 2: 'decode_every' is 1 \(every window\) or more, got 0"),
        ("decode_every = 1.5\n", r"line 1: 'decode_every' must be a whole number, got 1.5"),
        ("matmul_as_conv = \"yes\"\n", r"line 1: 'matmul_as_conv' is 'yes'; choose one of: auto, on, off"),
        ("actions = \"open\"\n", r"line 1: 'actions' must be a list, got 'open'"),
        ("model = \"m\"\nactions = []\n", r"line 2: 'actions' is a list of the model's class names"),
        ("[[camera]]\nname = \"a\"\nsource = \"0\"\nactions = [1]\n", r"line 4: 'actions' is a list of the model"),
        (ZONE + "box = [0, 0, 1, 1]\nactions = [\"\"]\n", r"line 7: 'actions' is a list of the model's class names"),
        ("[[camera]]\nname = \"a\"\nsource = \"0\"\nthreshold = 1.5\n", r"line 4: 'threshold' is a score between 0"),
        ("mqtt = \"mqtt://h/t\"\n", r"line 1: 'mqtt' must be a table"),
        ("[[camera]]\nname = \"a\"\n", r"line 1: camera 1 has no 'source'"),
        ("[[camera]]\nname = \"a\"\nsource = \"0\"\nzoom = 2\n", r"line 4: unknown key 'zoom' in camera 1"),
        ("[[camera]]\nname = \"a\"\nsource = \"0\"\n[[camera]]\nname = \"a\"\nsource = \"1\"\n",
         r"line 5: two cameras are named 'a'"),
        (ZONE + "box = [0.5, 0.0, 0.6, 1.0]\n", r"line 6: 'box' of zone 1 of camera 'a' reaches outside the frame"),
        (ZONE + "box = [0.0, 0.0, 0.0, 1.0]\n", r"line 6: 'box' of zone 1 of camera 'a' has no area"),
        (ZONE + "box = [0.0, 0.0, 1.0]\n", r"line 6: 'box' of zone 1 of camera 'a' must be \[x, y, width, height\]"),
        (ZONE + "box = [0, 0, \"half\", 1]\n", r"line 6: 'box' of zone 1 of camera 'a' must hold four numbers"),
        (ZONE + "\n", r"line 4: zone 1 of camera 'a' has no 'box'"),
        (ZONE + "box = [0, 0, 1, 1]\nzoom = 2\n", r"line 7: unknown key 'zoom' in zone 1 of camera 'a'"),
        (ZONE + "box = [0, 0, 1, 1]\n[[camera.zone]]\nname = \"z\"\nbox = [0, 0, 1, 1]\n",
         r"line 8: camera 'a' has two zones named 'z'"),
    ],
)  # fmt: skip
def test_a_bad_site_file_names_the_key_and_line(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(SiteError, match=message):
        load_site(path)


def test_a_missing_site_file(tmp_path):
    with pytest.raises(SiteError, match="--config .*missing.toml: cannot read it"):
        load_site(tmp_path / "missing.toml")


def test_the_example_site_file_loads():
    from pathlib import Path

    site = load_site(Path(__file__).resolve().parents[1] / "examples" / "site.toml")
    assert [c.name for c in site.cameras] == ["door", "till"] and site.settings["ha_discovery"] == "homeassistant"
    assert [z.name for z in site.cameras[1].zones] == ["counter", "drawer"]


def test_zone_names_that_collide_with_a_camera_as_mqtt_ids_stop_the_monitor(tmp_path, capsys):
    from vtn_edge.monitor.cli import main

    path = _write(
        tmp_path,
        """\
        model = "m"
        [mqtt]
        url = "mqtt://127.0.0.1:1883/site"
        [[camera]]
        name = "door_left"
        source = "0"
        [[camera]]
        name = "door"
        source = "1"
        [[camera.zone]]
        name = "left"
        box = [0.0, 0.0, 0.5, 1.0]
        """,
    )
    assert main(["--config", str(path)]) == 2
    assert "collide as MQTT topics and ids" in capsys.readouterr().err
