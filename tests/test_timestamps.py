"""Frame times come from the stream's own clock (RTP, container), and clips play at the real speed."""

from __future__ import annotations

import time
from dataclasses import replace

import cv2
import numpy as np
import pytest
from servers import RtspServer, have_rtsp_server, need

from vtn_edge.live import LiveOptions, LiveSource, StreamClock
from vtn_edge.monitor.clips import ClipOptions, ClipRecorder
from vtn_edge.monitor.events import ActionEvent

CLIP = "v_ApplyEyeMakeup_g01_c01.avi"  # 320x240, 25 fps, 164 frames
PERIOD = 0.04


# ---------------------------------------------------------------------- the clock, frame by frame
def test_a_live_clock_keeps_capture_times_through_a_stall_and_flags_the_backlog():
    clock = StreamClock(PERIOD, live=True)
    times = [clock.stamp(k * PERIOD, 1000.0 + k * PERIOD + 0.003 * (k % 3)) for k in range(10)]  # jitter
    assert [b for _, b in times] == [False] * 10
    assert np.allclose(np.diff([t for t, _ in times]), PERIOD, atol=1e-4)  # the stream's pace, not the jitter
    # a 1 s stall, then the 25 frames that waited arrive within a few milliseconds
    stalled = [clock.stamp(k * PERIOD, 1000.0 + 35 * PERIOD + 0.001 * (k - 10)) for k in range(10, 36)]
    assert np.allclose(np.diff([t for t, _ in stalled]), PERIOD, atol=1e-4) and stalled[0][0] == pytest.approx(
        1000.4, abs=2e-3
    )
    assert not any(b for _, b in stalled)  # they kept their capture times: nothing to catch up on


def test_a_burst_at_connection_is_a_backlog_and_the_clock_settles_on_it():
    clock = StreamClock(PERIOD, live=True)
    burst = [clock.stamp(k * PERIOD, 50.0 + 0.001 * k) for k in range(8)]  # a GOP buffered by the server
    assert [b for _, b in burst] == [False] + [True] * 7
    after = [clock.stamp(k * PERIOD, 50.007 + (k - 7) * PERIOD) for k in range(8, 12)]
    assert [b for _, b in after] == [False] * 4 and np.allclose(np.diff([t for t, _ in after]), PERIOD)


def test_a_clock_without_new_timestamps_goes_on_by_one_period_and_a_jump_starts_again():
    clock = StreamClock(PERIOD, live=True)
    t0, _ = clock.stamp(0.0, 10.0)
    t1, _ = clock.stamp(0.0, 10.05)  # the same stream time again (a source without timestamps)
    assert t1 == pytest.approx(t0 + PERIOD)
    t2, _ = clock.stamp(3600.0, 10.1)  # the camera restarted its clock an hour on
    assert t2 == pytest.approx(10.1)
    file_clock = StreamClock(PERIOD, live=False)
    stamps = [file_clock.stamp(k * PERIOD, 5.0 + 0.001 * k)[0] for k in range(5)]  # read 40x faster than real
    assert np.allclose(np.diff(stamps), PERIOD)
    assert file_clock.stamp(0.0, 5.01)[0] == pytest.approx(stamps[-1] + PERIOD)  # a loop continues the time


# ---------------------------------------------------------------------- real sources
def test_a_file_read_faster_than_real_time_keeps_its_own_timing(shared_data):
    with LiveSource(str(shared_data / "videos" / CLIP), LiveOptions(pace=False)) as source:
        taken, started = [], time.monotonic()
        while not source.stats.finished or (item := source.take()) is not None:
            item = source.take()
            if item is not None:
                taken.append(item)
        took = time.monotonic() - started
    span = taken[-1].timestamp - taken[0].timestamp
    steps = np.diff([t.timestamp for t in taken]) / PERIOD
    assert np.allclose(steps, np.round(steps), atol=0.01) and np.round(steps).min() >= 1  # whole file frames
    assert span > took  # 163 frames are 6.5 s of video, decoded here in far less


def test_rtsp_frames_carry_the_streams_timestamps_not_their_arrival(shared_data):
    need(have_rtsp_server(), "GStreamer's RTSP server for the system Python (python3-gi) is not installed")
    server = RtspServer(shared_data / "videos" / CLIP, fps=25).start()
    try:
        with LiveSource(server.url, LiveOptions()) as source:
            taken, arrivals = [], []
            deadline = time.monotonic() + 20
            while len(taken) < 60 and time.monotonic() < deadline:
                item = source.take()
                if item is None:
                    time.sleep(0.002)
                    continue
                taken.append(item)
                arrivals.append(time.monotonic())
                if len(taken) == 40:
                    time.sleep(0.5)  # the consumer stalls: frames in between are dropped, times stay true
    finally:
        server.stop()
    settled = [t for t, a in zip(taken, arrivals) if a > arrivals[0] + 1.0]  # after the connection's burst
    times = np.array([t.timestamp for t in settled])
    steps = np.diff(times) / PERIOD
    assert np.allclose(steps, np.round(steps), atol=0.05) and np.round(steps).min() >= 1, np.diff(times)
    assert abs(time.time() - times[-1]) < 2  # on the wall clock
    assert np.round(steps).max() >= 10  # the stall shows as skipped frame times
    assert source.stats.frames_dropped >= 9


# ---------------------------------------------------------------------- clips at the real speed
def _event(kind: str, start: float, end: float | None) -> ActionEvent:
    return ActionEvent(kind, "cam-1-1", "cam", "wave", 0.9, 0.9, start, end, 1, None if end is None else 2, start)


def test_a_clip_lasts_as_long_as_its_event_even_when_frames_were_dropped(tmp_path):
    recorder = ClipRecorder("cam", ClipOptions(tmp_path, before_s=0.2, after_s=0.4), fps=25.0)
    frames = [np.full((48, 64, 3), 40 + k, np.uint8) for k in range(100)]
    start = 100.0
    event = _event("start", start + 10 * PERIOD, None)
    for k in range(100):
        if k % 3 == 1:
            continue  # every third frame dropped to stay live
        recorder.add(frames[k], start + k * PERIOD)
        if k == 12:  # the label comes a few frames after the event's first frame
            path = recorder.start(event)
        if k == 72:  # the end is known a frame after the label changed at frame 70
            recorder.end(replace(event, event="end", end_time=start + 70 * PERIOD, end_frame=70))
    recorder.close()
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    duration = 0.2 + 60 * PERIOD + 0.4  # before, the event (frames 10 .. 70), after
    assert fps == pytest.approx(25.0)
    assert abs(count / fps - duration) <= 2 * PERIOD + 1e-9, (count, duration)  # within a frame or two


def _first_clip_frame(folder, start_offset_s: float) -> tuple[int, float]:
    """A clip of an event whose label appeared 2.48 s after its dated-back start (frame 20): the
    first frame's grey level (40 + its index) and the clip's length."""
    options = ClipOptions(folder, before_s=0.2, after_s=0.4, start_offset_s=start_offset_s)
    recorder = ClipRecorder("cam", options, fps=25.0)
    start = 100.0
    event = replace(_event("start", start + 20 * PERIOD, None), detected_time=start + 82 * PERIOD)
    for k in range(100):
        recorder.add(np.full((48, 64, 3), 40 + k, np.uint8), start + k * PERIOD)
        if k == 82:
            path = recorder.start(event)
        if k == 92:
            recorder.end(replace(event, event="end", end_time=start + 90 * PERIOD, end_frame=90))
    recorder.close()
    capture = cv2.VideoCapture(str(path))
    ok, first = capture.read()
    seconds = capture.get(cv2.CAP_PROP_FRAME_COUNT) / capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    assert ok
    return int(first.mean().round()), seconds


def test_a_clip_keeps_its_before_part_when_the_start_was_dated_back(tmp_path):
    level, seconds = _first_clip_frame(tmp_path / "kept", start_offset_s=2.5)
    assert abs(level - (40 + 15)) <= 4  # frame 15, 0.2 s before the dated-back start (mp4v is lossy)
    assert abs(seconds - (0.2 + 70 * PERIOD + 0.4)) <= 2 * PERIOD + 1e-9
    # a recorder that does not know starts are dated back keeps too little: the before part is cut
    level, seconds = _first_clip_frame(tmp_path / "cut", start_offset_s=0.0)
    assert level >= 40 + 20 and seconds < 0.2 + 70 * PERIOD + 0.4 - 5 * PERIOD
