"""What OpenCV gives as frame times on a real RTSP stream: arrival times against the stream's own.

Serves a clip with the tests' GStreamer RTSP server at 25 fps, reads 300 frames with OpenCV's
FFmpeg backend (stalling the reader for 0.5 s once, as a busy box would), and reports the spacing
of arrival times and of CAP_PROP_POS_MSEC, the burst at connection, and what the live reader
(`LiveSource`, through `StreamClock`) hands out.

    python benchmarks/stream_timestamps.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from servers import RtspServer  # noqa: E402

from vtn_edge.live import LiveOptions, LiveSource  # noqa: E402
from vtn_edge.report import format_table  # noqa: E402

FRAMES = 300


def _row(name: str, times: np.ndarray) -> tuple:
    steps = np.diff(times) * 1000
    return name, f"{steps.mean():.1f}", f"{steps.std():.1f}", f"{steps.min():.1f}", f"{steps.max():.1f}"


def main() -> None:
    clip = ROOT.parent / "shared/data/videos/v_ApplyEyeMakeup_g01_c01.avi"
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    server = RtspServer(clip, fps=25).start()
    try:
        capture = cv2.VideoCapture(server.url, cv2.CAP_FFMPEG)
        arrival, stream = [], []
        while len(arrival) < FRAMES:
            ok, _ = capture.read()
            if not ok:
                break
            arrival.append(time.time())
            stream.append(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000)
            if len(arrival) == FRAMES // 2:
                time.sleep(0.5)  # frames queue up in FFmpeg's buffer meanwhile
        capture.release()
        with LiveSource(server.url, LiveOptions()) as source:
            live = []
            while len(live) < FRAMES:
                item = source.take()
                if item is None:
                    time.sleep(0.001)
                else:
                    live.append(item.timestamp)
            stats = source.stats
    finally:
        server.stop()
    arrival_s, stream_s = np.array(arrival), np.array(stream)
    burst = int(np.argmax(np.diff(arrival_s) > 0.02)) + 1
    print(f"OpenCV {cv2.__version__}, {FRAMES} frames of a 25 fps RTSP stream (a 0.5 s stall halfway)")
    print(format_table(
        ["frame times", "mean step ms", "std ms", "min ms", "max ms"],
        [_row("arrival (time.time())", arrival_s), _row("CAP_PROP_POS_MSEC", stream_s),
         _row("LiveSource (StreamClock)", np.array(live))],
    ))  # fmt: skip
    within = 1000 * (arrival_s[burst - 1] - arrival_s[0])
    print(f"connection burst: the first {burst} frames arrived within {within:.0f} ms")
    print(f"LiveSource: {stats.frames_read} read, {stats.frames_backlog} backlog, {stats.frames_dropped} dropped")


if __name__ == "__main__":
    main()
