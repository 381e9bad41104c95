"""Live sources: a reader thread per camera that keeps only the newest frame and never gives up.

OpenCV's FFmpeg backend ignores CAP_PROP_BUFFERSIZE, so a consumer slower than the camera would
fall further and further behind. Here a thread reads as fast as the source delivers and keeps
one slot: a frame that is replaced before the consumer took it is dropped and counted. A read
that fails or times out (dead or hung camera) closes the capture and reopens it with capped
exponential backoff; the camera may come back at another frame size. Files play at their own
frame rate (like a camera) and can loop.

A consumer whose schedule encodes only some frames says after each frame whether the next one
needs pixels (`want_pixels`); frames that do not are only grabbed (decoded, not converted to
BGR) and handed out with `frame=None`, which saves the colour conversion (about 1.3 ms of CPU per
1080p frame, measured on a 2-core AMD EPYC Zen 2).

Timestamps are the stream's own (RTP timestamps for RTSP, the container's for files, as OpenCV's
CAP_PROP_POS_MSEC reports them), placed on the wall clock by `StreamClock`: a frame that waited in
a buffer keeps the time it was captured, not the time it was read. The burst of buffered frames a
fresh RTSP connection (or a stall) delivers is recognised as a backlog: those frames are counted
as `frames_backlog`, not as dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from vtn_edge.errors import SourceError
from vtn_edge.sources import LIVE_PREFIXES, is_live, nominal_fps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveOptions:
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    loop: bool = False  # files: start again at the end
    pace: bool = True  # files: deliver at the file's frame rate, as a camera would
    rtsp_transport: str = "tcp"


@dataclass(frozen=True)
class LiveFrame:
    frame: np.ndarray | None  # BGR uint8, owned by the consumer once taken; None: not wanted (see want_pixels)
    timestamp: float  # wall-clock seconds (time.time() scale) of the frame by the stream's own clock
    connection: int  # increases on every (re)connection: a new value means the stream restarted
    backlog: bool = False  # read from a buffer faster than real time (replacing it is no drop)


class StreamClock:
    """Puts a stream's own timestamps on the wall clock, one connection at a time.

    Files: the first frame's read time plus the file's timestamps, so a file read faster or slower
    than real time keeps its own timing. Live sources: the stream's timestamps plus the smallest
    delay (read time minus stream time) seen so far, so buffered frames keep their capture times;
    the delay estimate may grow by `relax` seconds per second (camera clocks drift) and is reset
    when the stream's clock jumps by more than `jump_s`. A timestamp that does not increase (no
    timestamps, a loop, a wrap) continues one frame period after the previous frame.
    """

    def __init__(self, period_s: float, live: bool, relax: float = 1e-3, jump_s: float = 5.0):
        self.period = period_s
        self.live = live
        self.relax = relax
        self.jump_s = jump_s
        self._offset: float | None = None  # wall clock minus stream clock
        self._last: tuple[float, float, float] | None = None  # (stream time, timestamp, read time)

    def stamp(self, stream_s: float, read_at: float) -> tuple[float, bool]:
        """(timestamp, backlog): backlog when this frame came sooner than the stream's pace allows,
        i.e. the frame(s) just before it had waited in a buffer."""
        backlog = False
        if self._last is None:
            self._offset = read_at - stream_s
        elif stream_s <= self._last[0]:  # no (new) timestamp: one period on
            self._offset = self._last[1] + self.period - stream_s
        elif self.live:
            delay = read_at - stream_s
            relaxed = self._offset + self.relax * max(read_at - self._last[2], 0.0)
            if abs(delay - relaxed) > self.jump_s:
                self._offset = delay  # the stream's clock jumped: start again from now
            else:
                backlog = delay < self._offset - self.period / 2
                self._offset = min(relaxed, delay)
        timestamp = stream_s + self._offset
        self._last = (stream_s, timestamp, read_at)
        return timestamp, backlog


@dataclass
class SourceStats:
    frames_read: int = 0
    frames_converted: int = 0  # of those, converted to BGR pixels (the others were not wanted)
    frames_dropped: int = 0  # read, then replaced by a newer frame before anyone took it
    frames_backlog: int = 0  # replaced while a burst of buffered frames came in (not dropped)
    reconnects: int = 0
    failed_attempts: int = 0
    connected: bool = False
    finished: bool = False  # a file that ended (not looping)
    size: tuple[int, int] | None = None  # (width, height) of the newest frame
    fps: float = 0.0  # the source's nominal frame rate
    last_error: str | None = None


def describe(source: str | int) -> str:
    """The source as it may appear in logs: no user name or password."""
    text = str(source)
    parts = urlsplit(text)
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return parts._replace(netloc=f"***@{host}{port}").geturl()
    return text


def parse_source(source: str | int) -> str | int:
    """Check a --source value: a stream URL, an existing video file or a camera index."""
    if isinstance(source, int) or str(source).isdigit():
        return int(source)
    text = str(source)
    if is_live(text):
        return text
    if "://" in text:
        raise SourceError(
            f"unsupported source scheme {urlsplit(text).scheme!r} in {describe(text)}: expected one of "
            f"{', '.join(LIVE_PREFIXES)}, a video file or a camera index"
        )
    if not Path(text).is_file():
        raise SourceError(f"video file {text} does not exist (expected a stream URL, a video file or a camera index)")
    return text


class LiveSource:
    """Reads one source on its own thread; `take()` hands out the newest frame not yet taken."""

    def __init__(
        self,
        source: str | int,
        options: LiveOptions | None = None,
        *,
        name: str | None = None,
        wake: threading.Event | None = None,
    ):
        self.source = parse_source(source)
        self.name = name or describe(self.source)
        self.options = options or LiveOptions()
        self.is_file = not is_live(self.source)
        self.stats = SourceStats()
        self._wake = wake or threading.Event()
        self._lock = threading.Lock()
        self._newest: LiveFrame | None = None
        self._pixels = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reader-{self.name}", daemon=True)

    def start(self) -> LiveSource:
        self._thread.start()
        return self

    def take(self) -> LiveFrame | None:
        with self._lock:
            frame, self._newest = self._newest, None
        return frame

    def want_pixels(self, wanted: bool) -> None:
        """Whether frames read from now on are converted to BGR (the default) or only grabbed. A
        frame read just before the call may still come either way: check `frame is None`."""
        self._pixels = wanted

    def close(self, timeout: float = 1.0) -> None:
        """Stop reading. A read blocked on a hung camera is left to its daemon thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> LiveSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the reader thread
    def _run(self) -> None:
        backoff = self.options.backoff_initial_s
        connections = 0
        while not self._stop.is_set():
            capture = self._open()
            if capture is None:
                self.stats.failed_attempts += 1
                if self.stats.finished:
                    log.error("%s: cannot decode this video file", self.name)
                    return
                log.warning("%s: cannot open (%s); retrying in %.1f s", self.name, self.stats.last_error, backoff)
                self._stop.wait(backoff)
                backoff = min(2 * backoff, self.options.backoff_max_s)
                continue
            connections += 1
            if connections > 1:
                self.stats.reconnects += 1
                log.warning("%s: reconnected (reconnect %d)", self.name, self.stats.reconnects)
            self.stats.connected, self.stats.last_error = True, None
            got_frames = self._read_until_failure(capture, connections)
            capture.release()
            self.stats.connected = False
            self._wake.set()
            if self.stats.finished or self._stop.is_set():
                return
            if got_frames:
                backoff = self.options.backoff_initial_s
            log.warning("%s: stream lost (%s); reconnecting in %.1f s", self.name, self.stats.last_error, backoff)
            self._stop.wait(backoff)
            backoff = min(2 * backoff, self.options.backoff_max_s)

    def _open(self) -> cv2.VideoCapture | None:
        if self.is_file or isinstance(self.source, int):
            capture = cv2.VideoCapture(self.source)
        else:
            if self.source.lower().startswith(("rtsp://", "rtsps://")):
                # read by FFmpeg at open time; the user's own setting wins
                os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", f"rtsp_transport;{self.options.rtsp_transport}")
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                int(1000 * self.options.open_timeout_s),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(1000 * self.options.read_timeout_s),
            ]
            capture = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            capture.release()
            self.stats.last_error = "unreachable, refused or not a video stream"
            if self.is_file:
                self.stats.finished = True  # a file that cannot be decoded will not get better
            return None
        self.stats.fps = nominal_fps(capture)
        return capture

    def _read_until_failure(self, capture: cv2.VideoCapture, connection: int) -> bool:
        period = 1.0 / self.stats.fps
        clock = StreamClock(period, live=not self.is_file)
        next_due = time.monotonic()
        read_any = False
        while not self._stop.is_set():
            ok, frame = capture.grab(), None
            if ok and self._pixels:
                ok, frame = capture.retrieve()
            if not ok:
                if self.is_file and self.options.loop and read_any:
                    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                if self.is_file:
                    self.stats.finished = True
                self.stats.last_error = "end of file" if self.is_file else "read failed or timed out"
                return read_any
            read_any = True
            timestamp, backlog = clock.stamp(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000, time.time())
            self._publish(LiveFrame(frame, timestamp, connection, backlog))
            if self.is_file and self.options.pace:
                next_due += period
                delay = next_due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_due = time.monotonic()  # behind: do not try to catch up in a burst
        return read_any

    def _publish(self, item: LiveFrame) -> None:
        stats = self.stats
        stats.frames_read += 1
        if item.frame is not None:
            stats.frames_converted += 1
            stats.size = (item.frame.shape[1], item.frame.shape[0])
        with self._lock:
            if self._newest is not None:
                if item.backlog:
                    stats.frames_backlog += 1
                else:
                    stats.frames_dropped += 1
            self._newest = item
        self._wake.set()
