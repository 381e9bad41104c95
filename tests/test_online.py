"""Online evaluation: the event matcher, the stream synthesiser's annotations, and the shipped
model's events on real streams (real decoding, real OpenVINO)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHIPPED_INT8

from vtn_edge.errors import DataError
from vtn_edge.monitor.events import MONITOR_EVENT_RULES, ActionEvent
from vtn_edge.online import (
    AnnotatedStream,
    Replay,
    Span,
    StreamCounts,
    f1_interval,
    load_streams,
    match,
    online_table,
    score,
)
from vtn_edge.smoothing import MONITOR_POLICY


# ---------------------------------------------------------------------- the matcher
def _stream(truth: list[Span], seconds: float = 60.0, fps: float = 25.0) -> AnnotatedStream:
    return AnnotatedStream("s", Path("s.mp4"), fps, int(seconds * fps), tuple(truth))


def _replay(stream: AnnotatedStream, predicted: list[Span]) -> Replay:
    labels: list[str | None] = [None] * stream.frames
    for p in predicted:
        for i in range(round(p.start * stream.fps), round(p.end * stream.fps)):
            labels[i] = p.label
    events = [
        ActionEvent("end", f"e{k}", "s", p.label, 0.9, 0.9, p.start, p.end, 0, 0, p.published, "label_changed")
        for k, p in enumerate(predicted)
    ]
    return Replay(labels, events)


def test_exact_hit_scores_perfectly():
    truth = [Span("open", 10.0, 12.0), Span("close", 30.0, 31.5)]
    stream = _stream(truth)
    result = score([(stream, _replay(stream, truth))])
    assert result["event_precision"] == result["event_recall"] == result["event_f1"] == 1.0
    assert result["event_f1_iou50"] == 1.0
    assert result["delay_p50_s"] == 0.0 and result["end_lag_p50_s"] == 0.0
    assert result["false_per_hour"] == 0.0
    assert result["frame_acc"] == 1.0 and result["flicker_per_min"] == 0.0
    assert result["per_class"]["open"]["event_recall"] == 1.0


def test_start_delay_counts_from_when_the_start_was_published():
    stream = _stream([Span("open", 10.0, 12.0)])
    dated_back = Span("open", 10.1, 12.2, detected=10.6)  # found at 10.6 s, start estimated at 10.1 s
    result = score([(stream, _replay(stream, [dated_back]))])
    assert result["event_f1"] == 1.0  # matched by its estimated times
    assert result["delay_p50_s"] == pytest.approx(0.6)  # what a user waited for the start
    assert result["start_lag_p50_s"] == pytest.approx(0.1) and result["end_lag_p50_s"] == pytest.approx(0.2)
    late = score([(stream, _replay(stream, [Span("open", 10.6, 12.2)]))])  # not dated back: starts when found
    assert late["delay_p50_s"] == late["start_lag_p50_s"] == pytest.approx(0.6)


def test_iou_just_below_the_threshold_is_a_miss_and_a_false_event():
    truth = Span("open", 10.0, 12.0)
    # overlap 0.62 s of a 2.0 s union: IoU 0.31, a hit; 0.58 s of 2.02 s: IoU 0.287, a miss
    assert match([truth], [Span("open", 11.38, 12.0)]) == [(0, 0)]
    assert match([truth], [Span("open", 11.42, 12.02)]) == []
    stream = _stream([truth])
    result = score([(stream, _replay(stream, [Span("open", 11.42, 12.02)]))])
    assert result["event_recall"] == 0.0 and result["event_precision"] == 0.0
    assert result["false_per_hour"] == pytest.approx(1 / ((60 - 2) / 3600))


def test_wrong_label_never_matches():
    assert match([Span("open", 10, 12)], [Span("close", 10, 12)]) == []


def test_one_event_split_into_two_predictions_matches_once():
    truth = [Span("fill", 10.0, 13.0)]
    predicted = [Span("fill", 10.3, 11.8), Span("fill", 11.9, 13.2)]
    stream = _stream(truth)
    result = score([(stream, _replay(stream, predicted))])
    assert result["event_recall"] == 1.0
    assert result["event_precision"] == 0.5
    assert result["delay_p50_s"] == pytest.approx(0.3) or result["delay_p50_s"] == pytest.approx(1.9)
    assert result["flicker_per_min"] > 0  # the split adds label changes the annotation does not have


def test_two_predictions_for_one_event_take_the_better_one():
    truth = [Span("fill", 10.0, 13.0)]
    predicted = [Span("fill", 9.0, 10.5), Span("fill", 10.2, 13.1)]
    pairs = match(truth, predicted)
    assert pairs == [(0, 1)]  # greedy by IoU: 0.9 beats 0.125


def test_no_predictions_and_predictions_in_an_empty_stream():
    stream = _stream([Span("open", 10, 12)])
    result = score([(stream, _replay(stream, []))])
    assert result["event_recall"] == 0.0 and result["event_precision"] is None and result["event_f1"] == 0.0
    assert result["delay_p50_s"] is None and result["false_per_hour"] == 0.0

    empty = _stream([], seconds=3600)
    result = score([(empty, _replay(empty, [Span("open", 100, 101), Span("zoom_in", 200, 202)]))])
    assert result["events"] == 0 and result["event_recall"] is None
    assert result["false_per_hour"] == pytest.approx(2.0)
    assert result["frame_acc"] == pytest.approx(1 - 3 / 3600)


def test_false_events_at_annotated_nuisances_are_counted_apart():
    stream = replace(_stream([Span("open", 10, 12)]), nuisances=(Span("drift_by", 30, 33), Span("shake", 50, 51)))
    predicted = [
        Span("open", 10.1, 12.2),  # matched: never a false event, nuisance or not
        Span("fade_out", 33.5, 34.5),  # after the distractor left, while it is still in the window
        Span("close", 40, 41),  # far from any nuisance
        Span("zoom_in", 49, 50.2),  # during the shake
        Span("empty", 52.2, 53),  # more than a window after the shake ended
    ]
    result = score([(stream, _replay(stream, predicted))])
    assert result["false_events"] == 4 and result["false_at_nuisances"] == 2
    assert "was in view: 2 of 4" in online_table(result)
    plain = _stream([Span("open", 10, 12)])  # no nuisances annotated: nothing to count them against
    result = score([(plain, _replay(plain, predicted))])
    assert result["false_at_nuisances"] is None and "was in view" not in online_table(result)


def test_false_events_are_sorted_by_where_they_lie():
    stream = _stream([Span("open", 10, 12), Span("close", 30, 31.5)])
    predicted = [
        Span("open", 10.0, 12.1),  # matched: never a false event
        Span("close", 29.8, 30.2),  # too early and too short for IoU 0.3, but the right action
        Span("close", 30.3, 30.6),  # ... and a second, split-off piece of it
        Span("fill", 10.5, 11.0),  # during an open
        Span("fade_in", 32.5, 33.0),  # 1 s after the close ended
        Span("rotate_cw", 33.2, 33.6),  # 1.7 s after: idle time
        Span("zoom_in", 50, 51),  # far from any action
    ]
    result = score([(stream, _replay(stream, predicted))])
    assert result["false_events"] == 6
    assert result["false_by_kind"] == {"late_or_split": 2, "other_action": 1, "after_action": 1, "idle": 2}
    assert (
        "False events: 6 (2 the right action, with too little overlap (late, too long or split); 1 during an "
        "action of another label; 1 within 1.5 s after an action ended; 2 in idle time)"
    ) in online_table(result)
    only_idle = score([(stream, _replay(stream, predicted[:1] + predicted[-1:]))])
    assert "False events: 1 (1 in idle time)" in online_table(only_idle)
    found = score([(stream, _replay(stream, predicted[:1]))])
    assert found["false_by_kind"] == dict.fromkeys(found["false_by_kind"], 0) and "False events" not in online_table(
        found
    )


def test_f1_interval_resamples_streams_and_pairs_two_runs():
    # one stream: nothing to resample
    assert f1_interval([StreamCounts("a", 10, 10, 8)]) is None
    # streams that all score the same give a point interval at that F1
    same = [StreamCounts(f"s{k}", 10, 10, 8) for k in range(5)]
    assert f1_interval(same) == pytest.approx((0.8, 0.8))
    # streams that differ: the pooled F1 (2 x 60 / 200 = 0.6) lies inside a proper interval
    mixed = [StreamCounts(f"s{k}", 10, 10, m) for k, m in enumerate([2, 4, 6, 8, 10, 6, 4, 8, 6, 6])]
    low, high = f1_interval(mixed)
    assert low < 0.6 < high and high - low > 0.05
    assert f1_interval(mixed) == (low, high)  # deterministic
    # paired: a run against itself differs by exactly 0; one more match on every stream by a fixed step
    assert f1_interval(mixed, baseline=mixed) == pytest.approx((0.0, 0.0))
    better = [replace(c, matched=c.matched + 1) for c in mixed]
    assert f1_interval(better, baseline=mixed) == pytest.approx((0.1, 0.1))
    # pairing needs the same streams in the same order
    with pytest.raises(DataError, match="same streams in the same order"):
        f1_interval(mixed, baseline=list(reversed(mixed)))


def test_score_reports_each_streams_counts_and_an_interval():
    truth = [Span("open", 10.0, 12.0), Span("close", 30.0, 31.5)]
    hit, miss = _stream(truth), replace(_stream(truth), name="t")
    result = score([(hit, _replay(hit, truth)), (miss, _replay(miss, [Span("open", 40.0, 41.0)]))])
    assert result["per_stream"] == [
        {"name": "s", "events": 2, "predicted": 2, "matched": 2},
        {"name": "t", "events": 2, "predicted": 1, "matched": 0},
    ]
    assert result["event_f1"] == pytest.approx(2 * 2 / (4 + 3))
    low, high = result["event_f1_ci95"]
    assert low == pytest.approx(0.0) and high == pytest.approx(1.0)  # either stream twice, or one of each
    one = score([(hit, _replay(hit, truth))])
    assert one["event_f1_ci95"] is None and "| 100.0 (no CI: one stream) |" in online_table(one)
    assert "| 57.1 (0.0 to 100.0) |" in online_table(result)


def test_compare_online_pairs_two_runs_and_refuses_what_it_cannot_pair(tmp_path):
    compare = [sys.executable, str(ROOT / "benchmarks" / "compare_online.py")]
    truth = [Span("open", 10.0, 12.0), Span("close", 30.0, 31.5)]
    streams = [replace(_stream(truth), name=f"s{k}") for k in range(4)]
    found = score([(s, _replay(s, truth)) for s in streams])  # every action found
    half = score([(s, _replay(s, truth[: k % 2 + 1])) for k, s in enumerate(streams)])  # 6 of 8
    for name, result in (("found", found), ("half", half)):
        (tmp_path / f"{name}.json").write_text(json.dumps(result))
    out = subprocess.run(
        [*compare, "--a", str(tmp_path / "found.json"), "--b", str(tmp_path / "half.json"), "--names", "all", "most"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    table = [line for line in out.stdout.splitlines()[2:] if line.startswith("|")]
    rows = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in table}
    assert rows["all"] == "100.0 (100.0 to 100.0)" and rows["most"].startswith("85.7 (")  # 2 x 6 / (8 + 6)
    assert rows["all - most (paired)"].startswith("+14.3 (")
    # 4 streams, half of them as good for both: the bootstrap's low end is a tie, so no verdict
    assert "No difference shown" in out.stdout

    many = [replace(_stream(truth), name=f"m{k}") for k in range(12)]
    (tmp_path / "many-all.json").write_text(json.dumps(score([(s, _replay(s, truth)) for s in many])))
    (tmp_path / "many-one.json").write_text(json.dumps(score([(s, _replay(s, truth[:1])) for s in many])))
    for a, b, said in (
        ("all", "one", "all is better than one on these streams"),
        ("one", "all", "all is better than one on these streams"),
        ("one", "one", "No difference shown"),
    ):
        out = subprocess.run(
            [*compare, "--a", str(tmp_path / f"many-{a}.json"), "--b", str(tmp_path / f"many-{b}.json"),
             "--names", a, b],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0 and said in out.stdout.splitlines()[-1], out.stdout
    one = [replace(_stream(truth), name="only")]
    (tmp_path / "one.json").write_text(json.dumps(score([(s, _replay(s, truth)) for s in one])))
    out = subprocess.run([*compare, "--a", str(tmp_path / "one.json"), "--b", str(tmp_path / "one.json")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0 and "One stream only" in out.stdout, out.stdout

    (tmp_path / "trimmed.json").write_text(json.dumps({"video@1": 0.9}))
    (tmp_path / "fewer.json").write_text(json.dumps(score([(s, _replay(s, truth)) for s in streams[:3]])))
    door = [replace(_stream(truth[:1]), name=f"s{k}") for k in range(4)]  # as `evaluate --actions open` scores them
    (tmp_path / "door.json").write_text(json.dumps(score([(s, _replay(s, truth[:1])) for s in door])))
    quiet = [replace(_stream([]), name=f"q{k}") for k in range(2)]
    (tmp_path / "quiet.json").write_text(json.dumps(score([(s, _replay(s, [])) for s in quiet])))
    for args, message in (
        (["--a", str(tmp_path / "found.json"), "--b", str(tmp_path / "fewer.json")], "same streams in the same order"),
        (["--a", str(tmp_path / "found.json"), "--b", str(tmp_path / "half.json"), str(tmp_path / "half.json")],
         "1 files for A but 2 for B"),
        (["--a", str(tmp_path / "trimmed.json"), "--b", str(tmp_path / "half.json")], "no 'per_stream' counts"),
        (["--a", str(tmp_path / "missing.json"), "--b", str(tmp_path / "half.json")], "cannot read it"),
        (["--a", str(tmp_path / "quiet.json"), "--b", str(tmp_path / "quiet.json")], "nothing to compare"),
        (["--a", str(tmp_path / "door.json"), "--b", str(tmp_path / "half.json")],
         "stream 0/s0: A was scored against 1 annotated actions, B against 2"),
    ):  # fmt: skip
        out = subprocess.run([*compare, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


# ---------------------------------------------------------------------- the synthesiser
synth_streams = pytest.importorskip("converter.data.streams", reason="the synthesiser is part of the converter")


def _clean(plan):
    """The same stream without noise, shake, lighting drift or idle-time nuisances."""
    return replace(plan, scene=replace(plan.scene, noise=0.0, shake=0.0), nuisances=(), drift=(0.0, 30.0, 0.0))


def test_annotated_actions_are_the_only_changes_and_fall_on_their_frames():
    plan = _clean(synth_streams.plan_stream(seed=4, index=1, seconds=40))
    assert 25 <= plan.fps <= 30 and len(plan.segments) >= 2
    frames = list(synth_streams.render_stream(plan))
    assert len(frames) == plan.frames
    changed = [bool(np.any(a != b)) for a, b in zip(frames, frames[1:])]  # changed[i]: frame i -> i + 1
    inside = np.zeros(plan.frames, bool)
    for s in plan.segments:
        inside[s.start : s.end] = True
        # the scene before the action is not the scene after it, and the change is within [start, end)
        assert np.any(frames[s.start - 1] != frames[s.end]), s.label
        assert np.any(frames[s.start + 2] != frames[s.start - 1]) or s.label in ("disappear", "appear"), s.label
        if s.label in ("appear", "disappear"):  # a step at the action's first frame
            assert changed[s.start - 1] and not any(changed[s.start : s.end - 1])
    # idle frames never change: no unannotated jump (the static object and the prop stay put)
    assert not any(c for i, c in enumerate(changed) if not inside[i] and not inside[i + 1])


def test_streams_and_annotations_are_deterministic_and_follow_the_layout(tmp_path):
    one = synth_streams.write_streams(tmp_path / "one", streams=1, seconds=10, seed=9, progress=False)
    two = synth_streams.write_streams(tmp_path / "two", streams=2, seconds=10, seed=9, progress=False)
    assert (tmp_path / "one" / "stream_0000.mp4").read_bytes() == (tmp_path / "two" / "stream_0000.mp4").read_bytes()
    db1, db2 = json.loads(one.read_text())["database"], json.loads(two.read_text())["database"]
    assert db1["stream_0000"] == db2["stream_0000"] and len(db2) == 2
    entry = db2["stream_0001"]
    assert set(entry) >= {"duration", "fps", "frames", "subset", "annotations"}
    assert entry["frames"] == round(10 * entry["fps"]) and entry["subset"] == "validation"
    for a in entry["annotations"]:
        assert a["label"] in synth_streams.ACTIONS and 1.2 - 1e-3 <= a["segment"][1] - a["segment"][0] <= 3.0 + 1e-3
    streams = load_streams(tmp_path / "two", synth_streams.CORE_CLASSES)  # the evaluator reads it back
    assert [s.frames for s in streams] == [db2[n]["frames"] for n in sorted(db2)]


def test_nuisances_are_annotated_in_idle_time_and_read_back(tmp_path):
    plan = synth_streams.plan_stream(seed=21, index=0, seconds=10)
    assert plan.nuisances  # this stream has an occlusion and a shake
    entry = plan.annotation("validation")
    assert [n["kind"] for n in entry["nuisances"]] == [n.kind for n in plan.nuisances]
    for n in entry["nuisances"]:  # never during an action: a nuisance is what idle time looks like
        (start, end) = n["segment"]
        assert all(end <= a["segment"][0] or start >= a["segment"][1] for a in entry["annotations"])
    path = synth_streams.write_streams(tmp_path, streams=1, seconds=10, seed=21, progress=False)
    (stream,) = load_streams(tmp_path, synth_streams.CORE_CLASSES)
    assert [(s.label, s.start, s.end) for s in stream.nuisances] == [
        (n["kind"], *n["segment"]) for n in json.loads(path.read_text())["database"]["stream_0000"]["nuisances"]
    ]


def test_synth_streams_bad_options_are_clear_errors(tmp_path):
    for args, message in (
        (["--streams", "0"], "--streams must be >= 1"),
        (["--streams", "2", "--stream-seconds", "3"], "--stream-seconds must be >= 10"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "converter", "dataset", "synth", "--out", str(tmp_path / "x"), *args],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 2 and message in out.stderr


# ---------------------------------------------------------------------- bad input
def _write_annotations(root: Path, database: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations.json").write_text(json.dumps({"labels": ["open", "still"], "database": database}))


@pytest.fixture(scope="module")
def tiny_stream(tmp_path_factory) -> Path:
    """One real 10-second stream and its annotation."""
    root = tmp_path_factory.mktemp("tiny_stream")
    synth_streams.write_streams(root, streams=1, seconds=10, seed=21, progress=False)
    return root


def test_bad_stream_folders_name_the_file_and_what_was_expected(tmp_path, tiny_stream):
    labels = synth_streams.CORE_CLASSES
    with pytest.raises(DataError, match="is not a folder"):
        load_streams(tmp_path / "missing", labels)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no annotations.json"):
        load_streams(tmp_path / "empty", labels)
    _write_annotations(tmp_path / "none", {})
    with pytest.raises(DataError, match="lists no videos"):
        load_streams(tmp_path / "none", labels)
    entry = json.loads((tiny_stream / "annotations.json").read_text())["database"]["stream_0000"]
    video = (tiny_stream / "stream_0000.mp4").read_bytes()
    cases = {
        "unknown": ({**entry, "annotations": [{"label": "juggle", "segment": [1, 2]}]}, "juggle, which the model"),
        "frames": ({**entry, "frames": entry["frames"] + 5}, f"has {entry['frames']} frames"),
        "fps": ({**entry, "fps": 12}, "but .*annotations.json says"),
        "layout": ({"fps": 25}, "needs 'fps', 'frames' and 'annotations'"),
        "nuisances": ({**entry, "nuisances": [{"segment": [1, 2]}]}, "'nuisances' must be"),
    }
    for name, (bad, message) in cases.items():
        _write_annotations(tmp_path / name, {"stream_0000": bad})
        (tmp_path / name / "stream_0000.mp4").write_bytes(video)
        with pytest.raises(DataError, match=message):
            load_streams(tmp_path / name, labels)
    _write_annotations(tmp_path / "novideo", {"stream_0000": entry})
    with pytest.raises(DataError, match="has no stream_0000.mp4"):
        load_streams(tmp_path / "novideo", labels)


# ---------------------------------------------------------------------- training windows
def test_window_labels_follow_the_newest_frame_with_enough_of_the_action():
    pytest.importorskip("torch")
    from converter.data.stream_windows import END_HOLD_FRAMES, MIN_ACTION_FRAMES, label_windows, window_label

    ids = np.full(200, -1)
    ids[100:150] = 0  # one action, frames 100..149
    actions, background = [7], 14
    window = lambda newest: np.arange(newest - 30, newest + 1, 2)  # noqa: E731 - 16 frames at stride 2
    assert window_label(ids, window(90), actions, background) == background  # all idle
    assert window_label(ids, window(100 + 2 * (MIN_ACTION_FRAMES - 2)), actions, background) is None  # barely begun
    assert window_label(ids, window(100 + 2 * (MIN_ACTION_FRAMES - 1)), actions, background) == 7
    assert window_label(ids, window(149), actions, background) == 7
    # after the end: the action while it fills half the window, then left out, then the background
    assert window_label(ids, window(149 + 2 * (16 - END_HOLD_FRAMES)), actions, background) == 7
    assert window_label(ids, window(149 + 2 * (16 - END_HOLD_FRAMES + 1)), actions, background) is None
    assert window_label(ids, window(149 + 2 * (16 - MIN_ACTION_FRAMES)), actions, background) is None
    assert window_label(ids, window(149 + 2 * (16 - MIN_ACTION_FRAMES + 1)), actions, background) == background
    # --after-action background: the windows the action is fading out of say "nothing" instead
    for newest in (149 + 2 * (16 - END_HOLD_FRAMES + 1), 149 + 2 * (16 - MIN_ACTION_FRAMES)):
        assert window_label(ids, window(newest), actions, background, "background") == background
    assert window_label(ids, window(149 + 2 * (16 - END_HOLD_FRAMES)), actions, background, "background") == 7
    assert window_label(ids, window(100 + 2 * (MIN_ACTION_FRAMES - 2)), actions, background, "background") is None
    ids[150:170] = 1  # a second action straight after the first: the window is the new one's once it shows
    assert window_label(ids, window(152), [7, 3], background) is None
    assert window_label(ids, window(156), [7, 3], background) == 3

    stream = AnnotatedStream("s", Path("s.mp4"), 25.0, 200, (Span("open", 4.0, 6.0),), (Span("shake", 1.0, 1.4),))
    windows = label_windows([stream], ("open", "still"), "still", window=16, stride=2, step=1)
    assert {w.label for w in windows} == {0, 1} and all(w.start + 30 < 200 for w in windows)
    # idle windows that show part of the shake (frames 25..34) are the hard ones; no action window is
    hard = {w.start for w in windows if w.nuisance}
    assert hard == {w.start for w in windows if w.label == 1 and w.start <= 34 and w.start + 30 >= 25}
    with pytest.raises(DataError, match="background class 'none'"):
        label_windows([stream], ("open", "still"), "none", window=16, stride=2, step=1)


def test_idle_windows_showing_a_nuisance_are_drawn_as_often_as_asked():
    pytest.importorskip("torch")
    from converter.data.stream_windows import LabelledWindow, StreamWindows

    # 300 action windows, 900 plain idle ones and 100 idle ones that show a nuisance
    windows = [LabelledWindow(0, i, 0) for i in range(300)] + [
        LabelledWindow(0, i, 1, nuisance=i >= 900) for i in range(1000)
    ]  # fmt: skip
    features = [np.zeros((1, 1100 + 32, 4), np.float32)]

    def hard_share(weight: float) -> float:
        data = StreamWindows(features, windows, 1, window=16, stride=2, difference=False, train=True,
                             per_epoch=400, nuisance_weight=weight)  # fmt: skip
        idle = [w for w in data.chosen if w.label == 1]
        assert len(idle) == 200  # half of the epoch, whatever the weight
        return sum(w.nuisance for w in idle) / len(idle)

    assert 0.05 < hard_share(1.0) < 0.16  # as many as there are: 10%
    assert 0.3 < hard_share(9.0) < 0.5  # 9 x 100 against 900, drawn without replacement: below half


# ---------------------------------------------------------------------- the shipped model on streams
def test_replayed_policy_gives_the_labels_the_recognizer_gives_with_that_policy(tiny_stream):
    from vtn_edge.online import record, replay
    from vtn_edge.recognizer import StreamingRecognizer
    from vtn_edge.smoothing import LabelPolicy

    stream = load_streams(tiny_stream, synth_streams.CORE_CLASSES)[0]
    policy = LabelPolicy(smoothing="ema", threshold=0.6, hold_seconds=0.2)
    with StreamingRecognizer(SHIPPED_INT8, policy=LabelPolicy(), top_k=15) as rec:
        background = rec.manifest.background
        replayed = replay(record(rec, stream), policy, background)
    with StreamingRecognizer(SHIPPED_INT8, policy=policy) as rec:
        live = []
        for p in rec.run(stream.path):
            live.append(p.label if p.window_full and p.label not in background else None)
    assert live == replayed.frame_labels
    assert background == ("still",)


def test_one_recognizer_records_stream_after_stream_as_if_each_were_the_first(tiny_stream):
    from vtn_edge.online import record
    from vtn_edge.recognizer import StreamingRecognizer
    from vtn_edge.smoothing import LabelPolicy

    stream = load_streams(tiny_stream, synth_streams.CORE_CLASSES)[0]
    with StreamingRecognizer(SHIPPED_INT8, policy=LabelPolicy(), top_k=15) as rec:
        first, again = record(rec, stream), record(rec, stream)  # frame indices go on across streams
    assert first.window_full.sum() == stream.frames - 30 and (first.probs.sum(1)[first.window_full] > 0.99).all()
    np.testing.assert_allclose(again.probs, first.probs, atol=1e-6)
    assert (again.window_full == first.window_full).all()


def test_policy_sweep_replays_label_policies_and_event_rules(tiny_stream, tmp_path):
    sweep = [sys.executable, str(ROOT / "benchmarks" / "online_sweep.py"), str(SHIPPED_INT8), str(tiny_stream)]
    out = subprocess.run(
        [*sweep, "--policy", "none,0.5,0", "--policy", "none,0.5,0,1.5,0.3", "--policy", "none,0.5,0,1.5,0.3,0.2",
         "--json", str(tmp_path / "sweep.json"),
         "--png", str(tmp_path / "sweep.png")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "sweep.json").read_text())
    rows = {(r["merge_gap"], r["end_offset"], r["start_offset"]): r for r in results}
    assert set(rows) == {(0.0, 0.0, 0.0), (1.5, 0.3, 0.0), (1.5, 0.3, 0.2)}
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    plain, merged, dated = rows[(0.0, 0.0, 0.0)], rows[(1.5, 0.3, 0.0)], rows[(1.5, 0.3, 0.2)]
    assert plain["predicted"] == merged["predicted"] == dated["predicted"] == plain["events"] == 1  # one action, found
    assert merged["end_lag_p50_s"] == pytest.approx(plain["end_lag_p50_s"] - 0.3, abs=1 / 25)  # one frame
    assert dated["start_lag_p50_s"] == pytest.approx(merged["start_lag_p50_s"] - 0.2, abs=1 / 25)
    assert dated["delay_p50_s"] == merged["delay_p50_s"]  # published at the same frame
    # a camera that watches only the stream's action sees the same; one that watches another sees nothing
    (action,) = {a["label"] for a in json.loads((tiny_stream / "annotations.json").read_text())["database"]
                 ["stream_0000"]["annotations"]}  # fmt: skip
    other = "zoom_in" if action != "zoom_in" else "open"
    for actions, expected in ((action, (1, 1, plain["event_f1"])), (other, (0, 0, None))):
        watched = ["--policy", "none,0.5,0", "--actions", actions, "--json", str(tmp_path / "a.json")]
        out = subprocess.run([*sweep, *watched], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        (row,) = json.loads((tmp_path / "a.json").read_text())
        assert (row["events"], row["predicted"], row["event_f1"]) == expected, (actions, row)
    for wrong, message in (("none,0.9,0.2,-1,0", "merge_gap must be >= 0"), ("none,0.9,0.2,1", "3 numbers")):
        bad = subprocess.run([*sweep, "--policy", wrong], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    bad = subprocess.run([*sweep, "--actions", "apear"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--actions: 'apear' is not an action" in bad.stderr and "Traceback" not in bad.stderr
    full = subprocess.run([*sweep, "--json", str(tmp_path / "all.json")], capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    grid = json.loads((tmp_path / "all.json").read_text())
    rules = MONITOR_EVENT_RULES
    defaults = [r for r in grid if (r["smoothing"], r["threshold"], r["hold"], r["merge_gap"], r["end_offset"],
                                    r["start_offset"])
                == ("none", MONITOR_POLICY.threshold, MONITOR_POLICY.hold_seconds, rules.merge_gap, rules.end_offset,
                    rules.start_offset)]  # fmt: skip
    assert len(defaults) == 1  # the monitor's defaults wherever they rank
    spec = importlib.util.spec_from_file_location("online_sweep", ROOT / "benchmarks" / "online_sweep.py")
    online_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(online_sweep)
    # the whole grid: every label policy with plain events, and every other rule set for each of the best few
    label_policies = len(online_sweep.SMOOTHINGS) * len(online_sweep.THRESHOLDS) * len(online_sweep.HOLDS)
    rule_sets = len(online_sweep.MERGE_GAPS) * len(online_sweep.END_OFFSETS) * len(online_sweep.START_OFFSETS)
    expected = label_policies + online_sweep.RULES_FOR_BEST * (rule_sets - 1)
    assert len(grid) - expected in (0, 1), (len(grid), expected)  # + 1: the defaults, when not among them


def test_evaluate_online_bad_folder_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "vtn_edge", "evaluate", str(SHIPPED_INT8), "--online", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "has no annotations.json" in out.stderr and "Traceback" not in out.stderr


def test_evaluate_online_with_actions_scores_a_camera_that_watches_only_those(tmp_path):
    """`--actions`: the other actions leave the truth (their time is idle for such a camera) and raise
    no event; what is left scores as it does among all actions."""
    streams = tmp_path / "streams"
    synth_streams.write_streams(streams, streams=1, seconds=16, seed=51, progress=False)  # 3 actions
    truth = [
        a["label"]
        for a in json.loads((streams / "annotations.json").read_text())["database"]["stream_0000"]["annotations"]
    ]
    assert sorted(truth) == ["appear", "blue_to_red", "disappear"]

    def evaluate(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "vtn_edge", "evaluate", str(SHIPPED_INT8), "--online", str(streams), "--json",
             *flags], capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    every, shelf = evaluate(), evaluate("--actions", "appear,disappear")
    assert every.returncode == 0 and shelf.returncode == 0, every.stderr + shelf.stderr
    every, shelf = json.loads(every.stdout), json.loads(shelf.stdout)
    assert (every["events"], shelf["events"]) == (3, 2) and shelf["actions"] == ["appear", "disappear"]
    assert set(shelf["per_class"]) <= {"appear", "disappear"}
    for label in ("appear", "disappear"):  # found and published as before; a start is dated back further
        # where an unwatched action no longer ends an event just before it (never before the previous event)
        kept = ("events", "predicted", "delay_p50_s")
        assert [shelf["per_class"][label][k] for k in kept] == [every["per_class"][label][k] for k in kept]
    assert shelf["predicted"] == sum(every["per_class"][label]["predicted"] for label in ("appear", "disappear"))
    assert shelf["predicted"] >= 1 and "actions" not in every
    wrong = evaluate("--actions", "apear")
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "--actions: 'apear' is not an action of this model; its actions: open, close," in wrong.stderr


def test_training_on_annotated_streams_fine_tunes_the_shipped_checkpoint(tiny_stream, tiny_dataset, tmp_path, caplog):
    pytest.importorskip("torch")
    import shutil

    from converter.checkpoints import read_config
    from converter.train import STREAM_WINDOWS_PER_EPOCH, TrainError, TrainOptions, _mix_items, train

    shipped = ROOT / "ir_models" / "default" / "mobilenetv2-vtn-synth.safetensors"
    opts = TrainOptions(
        arch="mobilenetv2", data=str(tiny_stream), validation=str(tiny_stream), out=str(tmp_path / "run"),
        freeze_encoder=True, init_checkpoint=str(shipped), epochs=1, batch_size=8, max_steps=3, workers=0,
    )  # fmt: skip
    with pytest.raises(TrainError, match="add --freeze-encoder"):
        train(replace(opts, freeze_encoder=False))
    with pytest.raises(TrainError, match="--validation must too"):
        train(replace(opts, validation=str(tmp_path)))
    # trimmed clips trained beside the streams keep their class names, renumbered to the streams' classes
    clips = tiny_dataset / "train" / "core"
    mix = _mix_items(replace(opts, mix_clips=str(clips)), synth_streams.CORE_CLASSES)
    names = (clips / "labels.txt").read_text().split()
    assert len(mix) == 40 and {synth_streams.CORE_CLASSES[item.label] for item, _ in mix} == set(names)
    assert all(synth_streams.CORE_CLASSES[item.label] == item.path.parent.name for item, _ in mix)
    foreign = tmp_path / "foreign"
    shutil.copytree(clips, foreign)
    (foreign / "fill").rename(foreign / "juggle")
    (foreign / "labels.txt").write_text("juggle\nempty\nzoom_in\nzoom_out\n")
    with pytest.raises(TrainError, match="classes the streams lack: juggle"):
        train(replace(opts, mix_clips=str(foreign)))
    with pytest.raises(TrainError, match="--data must be a stream folder"):
        train(replace(opts, data=str(clips), mix_clips=str(clips)))
    with pytest.raises(TrainError, match="--mix-share is a fraction"):
        train(replace(opts, mix_clips=str(clips), mix_share=1.0))
    with pytest.raises(TrainError, match="reverses the --mix-clips clips only: add --mix-clips"):
        train(replace(opts, reverse_pairs=str(clips / "pairs.txt")))
    with pytest.raises(TrainError, match="--nuisance-weight must be > 0"):
        replace(opts, nuisance_weight=0.0)
    with pytest.raises(TrainError, match="--after-action must be one of leave-out, background"):
        replace(opts, after_action="drop")
    plain = tmp_path / "plain"  # the same stream, its annotation without nuisances
    shutil.copytree(tiny_stream, plain)
    data = json.loads((plain / "annotations.json").read_text())
    data["database"]["stream_0000"].pop("nuisances")
    (plain / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(TrainError, match="name no nuisances in their annotation"):
        train(replace(opts, data=str(plain), nuisance_weight=3.0))
    caplog.set_level("INFO", logger="converter.train")
    run = train(replace(opts, mix_clips=str(clips), mix_share=0.5, reverse_pairs=str(clips / "pairs.txt"),
                        feature_noise=0.1, nuisance_weight=3.0, after_action="background"))  # fmt: skip
    repeats = round(STREAM_WINDOWS_PER_EPOCH / 40)  # half of each epoch: as many clips as stream windows
    assert f"trimmed clips: 40, each seen {repeats} times an epoch" in caplog.text
    assert re.search(r"idle windows showing a nuisance: [1-9]\d*, drawn 3 times as often", caplog.text)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # the classifier carried over (same classes): the first epoch already labels most windows right
    assert metrics[0]["val_acc"] > 0.5
    assert read_config(run / "best.safetensors").labels == synth_streams.CORE_CLASSES


def test_the_shipped_model_on_fresh_streams_end_to_end(tmp_path):
    """`vtn_edge evaluate --online` as a user runs it: the shipped INT8 IR, the monitor's default
    policy, real decoding and OpenVINO, on streams of a seed no training or tuning used. The bounds
    hold the held-out figures in the README (seeds 105-112: F1 76-85%, start delay p50
    0.44-0.54 s, 64-112 false events per idle hour, frame accuracy 89-90%) with room for six
    one-minute streams (27 actions);
    the previous default fails them there (F1 44%, 303 false events per idle hour). The issue's
    targets are not met yet."""
    streams = tmp_path / "streams"
    synth_streams.write_streams(streams, streams=6, seconds=60, seed=9090, progress=False)
    out = subprocess.run(
        [sys.executable, "-m", "vtn_edge", "evaluate", str(SHIPPED_INT8), "--online", str(streams), "--json",
         "--timeline-png", str(tmp_path / "timelines")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["streams"] == 6 and result["events"] >= 20 and abs(result["hours"] - 6 * 60 / 3600) < 1e-6
    assert result["event_f1"] >= 0.55 and result["delay_p50_s"] <= 0.8, result
    assert result["frame_acc"] >= 0.8 and result["false_per_hour"] <= 250, result
    low, high = result["event_f1_ci95"]
    assert low <= result["event_f1"] <= high and [s["name"] for s in result["per_stream"]] == [
        f"stream_000{k}" for k in range(6)
    ]
    assert sorted(p.name for p in (tmp_path / "timelines").iterdir()) == [f"stream_000{k}.png" for k in range(6)]
