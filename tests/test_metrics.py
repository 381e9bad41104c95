"""Metric definitions on hand-made predictions."""

import numpy as np
import pytest

from vtn_edge.metrics import compute_metrics, segment_starts
from vtn_edge.smoothing import LabelPolicy, LabelStabilizer


def test_clip_video_top5_and_mean_class_accuracy():
    # three classes; video 0 (class 0): two segments, one right one wrong, average right
    probs = [
        np.array([[0.6, 0.3, 0.1], [0.3, 0.4, 0.3]]),  # mean [0.45, 0.35, 0.2] -> 0 (right)
        np.array([[0.1, 0.8, 0.1]]),  # class 1, right
        np.array([[0.5, 0.1, 0.4]]),  # class 2, predicted 0 (wrong)
        np.array([[0.2, 0.2, 0.6]]),  # class 2, right
    ]
    r = compute_metrics([0, 1, 2, 2], probs, num_classes=3)
    assert r.clip_top1 == pytest.approx(3 / 5)
    assert r.video_top1 == pytest.approx(3 / 4)
    assert r.video_top5 == 1.0
    assert r.mean_class_accuracy == pytest.approx((1 + 1 + 0.5) / 3)
    assert r.confusion.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert r.per_class_accuracy == (1.0, 1.0, 0.5)


def test_segments_are_non_overlapping_32_frame_windows():
    assert segment_starts(280, window=16, stride=2) == [0, 32, 64, 96, 128, 160, 192, 224]
    assert segment_starts(20, window=16, stride=2) == [0]  # shorter: one looped segment


def test_hysteresis_needs_the_label_to_hold():
    stab = LabelStabilizer(LabelPolicy(hold_seconds=1.0))
    a, b = np.array([0.9, 0.1]), np.array([0.1, 0.9])
    assert stab.update(a, 0.0)[0] is None  # even the first label must hold
    assert stab.update(a, 1.0)[0] == 0
    assert stab.update(b, 1.5)[0] == 0  # b leads, but not for long enough
    assert stab.update(a, 1.6)[0] == 0
    assert stab.update(b, 2.0)[0] == 0
    assert stab.update(b, 3.1)[0] == 1


def test_no_label_must_hold_too():
    """Below the threshold, "no label" is a candidate like any class: it replaces a label only after
    leading for the hold, not at once (a stale start time once ended events after one decode)."""
    stab = LabelStabilizer(LabelPolicy(threshold=0.8, hold_seconds=0.4))
    sure, unsure = np.array([0.9, 0.1]), np.array([0.6, 0.4])
    assert stab.update(sure, 0.0)[0] is None
    assert stab.update(sure, 0.5)[0] == 0  # led for 0.5 s
    assert stab.update(unsure, 0.6)[0] == 0  # below the threshold for the first time: held
    assert stab.update(unsure, 0.9)[0] == 0
    assert stab.update(unsure, 1.0)[0] is None  # "no label" has led for 0.4 s


@pytest.mark.parametrize("clock", ["frame index / fps", "milliseconds on the wall clock"])
def test_a_hold_that_ends_on_a_result_ends_there_whatever_the_clock(clock):
    """At 30 fps and stride 2, a 0.2 s hold ends exactly on the 3rd result after a label first
    leads. Offline (index / fps) and live (wall clock + millisecond timestamps) must agree, and
    neither may depend on float rounding (576/30 - 570/30 is 0.19999999999999929)."""

    def stamp(i: int) -> float:
        return i / 30 if clock == "frame index / fps" else 1.7965378e9 + round(i * 1000 / 30) / 1000

    for first in range(500, 600, 2):  # where the label first leads: every rounding case
        stab = LabelStabilizer(LabelPolicy(hold_seconds=0.2))
        b = np.array([0.1, 0.9])
        assert stab.update(b, stamp(first))[0] is None
        assert stab.update(b, stamp(first + 2))[0] is None
        assert stab.update(b, stamp(first + 4))[0] is None  # led for 0.133 s
        assert stab.update(b, stamp(first + 6))[0] == 1, first  # led for 0.2 s: at the hold


def test_smoothing_and_threshold():
    ema = LabelStabilizer(LabelPolicy(smoothing="ema", alpha=0.5))
    ema.update(np.array([1.0, 0.0]), 0)
    label, score, smoothed = ema.update(np.array([0.0, 1.0]), 1)
    assert smoothed.tolist() == [0.5, 0.5] and label == 0
    mean = LabelStabilizer(LabelPolicy(smoothing="mean", window=2, threshold=0.7))
    mean.update(np.array([1.0, 0.0]), 0)
    mean.update(np.array([0.2, 0.8]), 1)
    label, score, _ = mean.update(np.array([0.2, 0.8]), 2)
    assert label == 1 and score == pytest.approx(0.8)
    label, _, _ = mean.update(np.array([0.6, 0.4]), 3)
    assert label is None  # top score 0.6 < threshold
