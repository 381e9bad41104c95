"""Action events: a start when a stable label appears, an end when it goes; JSON lines on disk.

Labels come from StreamingRecognizer with the monitor's LabelPolicy (threshold and hysteresis),
so an event is a run of frames with the same non-None label, bridged over short gaps (EventRules).
Each event is published twice: `"event": "start"` (end fields null) as soon as it begins and
`"event": "end"` with the same id when it is over.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import threading
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from vtn_edge.errors import VtnEdgeError
from vtn_edge.types import CLOCK_TOLERANCE_S, Prediction

log = logging.getLogger("vtn_edge.monitor")

# why an event ended
LABEL_CHANGED = "label_changed"
SOURCE_LOST = "source_lost"
SOURCE_ENDED = "source_ended"
SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class EventRules:
    """How a run of labels becomes an event.

    merge_gap: seconds an event stays open after its label goes; if the same label comes back
    within them, the event goes on (a window that wavers for a moment does not split one action
    into two events). The end is published once the gap has passed, with the time the label went.
    If the source goes (or the monitor stops) during the gap, the event ends then, with that
    reason: the monitor cannot know whether the label would have come back.
    end_offset: seconds taken off that end time. The causal window still holds an action for a
    while after it ends, so the label goes late; the end time is the estimate of when it ended
    (never before the start: an event shorter than the offset ends where it starts).
    start_offset: seconds the start time is dated back from the frame where the label appeared.
    The window needs part of an action before it names it, so the label appears late too; the
    start time is the estimate of when the action began (never before the stream's first frame
    since it (re)started, nor before the end of the previous event). The start is still
    published when the label appears; `ActionEvent.detected_time` says when that was.
    """

    merge_gap: float = 0.0
    end_offset: float = 0.0
    start_offset: float = 0.0

    def __post_init__(self) -> None:
        for rule in fields(self):
            value = getattr(self, rule.name)
            if not value >= 0:  # also refuses NaN
                raise VtnEdgeError(f"event rules: {rule.name} must be >= 0 seconds, got {value}")


PLAIN_EVENTS = EventRules()  # an event is exactly a run of one label
# What the monitor (and `vtn_edge evaluate --online`) uses unless told otherwise: chosen with the
# label policy by `benchmarks/online_sweep.py` on the stream benchmark's validation seed.
MONITOR_EVENT_RULES = EventRules(merge_gap=1.0, end_offset=0.2, start_offset=0.7)


def add_event_flags(group) -> None:
    """The event-rule flags with the monitor's defaults (also used by `vtn_edge evaluate --online`)."""
    default = MONITOR_EVENT_RULES
    group.add_argument(
        "--merge-gap", type=float, default=default.merge_gap,
        help=f"seconds an event waits for its label to come back before it ends (default {default.merge_gap})",
    )  # fmt: skip
    group.add_argument(
        "--end-offset", type=float, default=default.end_offset,
        help=f"seconds taken off an event's end time for the window's lag (default {default.end_offset})",
    )  # fmt: skip
    group.add_argument(
        "--start-offset", type=float, default=default.start_offset,
        help="seconds an event's start time is dated back from the frame where its label appeared, for "
        f"the window's lag; the start is still published at that frame (default {default.start_offset})",
    )  # fmt: skip


def _action_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected class names separated by commas, got {text!r}")
    return names


def add_actions_flag(group) -> None:
    """`--actions a,b`: the actions that raise events (the site file's `actions` key)."""
    group.add_argument(
        "--actions", type=_action_list, metavar="A,B",
        help="only these actions raise events (the model's class names, separated by commas); the others "
        "read as no action (default: every action)",
    )  # fmt: skip


def ignored_labels(
    labels: Sequence[str], background: Collection[str], actions: Collection[str] | None, where: str
) -> frozenset[str]:
    """The labels that never raise an event for a stream that watches `actions` (None: every action).

    Checks `actions` against the model's classes; `where` names the setting in the error.
    """
    if actions is None:
        return frozenset(background)
    unknown = [a for a in actions if a not in labels]
    if unknown:
        choices = ", ".join(label for label in labels if label not in background)
        raise VtnEdgeError(
            f"{where}: {', '.join(map(repr, unknown))} is not an action of this model; its actions: {choices}"
        )
    idle = [a for a in actions if a in background]
    if idle:
        raise VtnEdgeError(
            f"{where}: {', '.join(map(repr, idle))} is this model's background class, which never raises an event"
        )
    return frozenset(labels) - frozenset(actions)


def rules_from_flags(args) -> EventRules:
    """The rules that `add_event_flags` flags (or their site-file keys) ask for."""
    return EventRules(merge_gap=args.merge_gap, end_offset=args.end_offset, start_offset=args.start_offset)


def iso_time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ActionEvent:
    event: str  # "start" or "end"
    id: str
    source: str
    label: str
    score: float  # mean score of the label over the event's frames so far
    max_score: float
    start_time: float  # wall-clock seconds: the estimated start (EventRules.start_offset)
    end_time: float | None
    start_frame: int  # frame indices count the frames the monitor processed for this source
    end_frame: int | None
    detected_time: float  # when the label appeared and the start was published
    reason: str | None = None  # for "end": label_changed, source_lost, source_ended, shutdown
    host: str = ""
    clip: str | None = None
    snapshot: str | None = None  # JPEG of the event's best-scoring frame (--snapshots)
    zone: str | None = None  # the camera's zone; None: its whole frame

    def to_dict(self) -> dict:
        d = asdict(self)
        d = {"source": d.pop("source"), "zone": d.pop("zone"), **d}  # who first, then what and when
        d = {"event": d.pop("event"), "id": d.pop("id"), **d}
        d["start_time"], d["end_time"] = iso_time(self.start_time), iso_time(self.end_time)
        d["detected_time"] = iso_time(self.detected_time)
        d["duration_s"] = None if self.end_time is None else round(self.end_time - self.start_time, 3)
        d["score"], d["max_score"] = round(self.score, 4), round(self.max_score, 4)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @property
    def file_stem(self) -> str:
        """The name its clip and snapshot files share: id and label, safe as a file name."""
        return re.sub(r"[^\w.-]+", "_", f"{self.id}-{self.label}")


class EventTracker:
    """Turns one stream's predictions (a camera, or a zone of one; in frame order) into start/end
    events under `rules`. Thread-safe.

    Labels in `ignore` (the model's background classes, see `Manifest.background`) are no action:
    they end an event like no label does and never start one.
    """

    def __init__(
        self,
        source: str,
        emit: Callable[[ActionEvent], None],
        host: str | None = None,
        ignore: Collection[str] = (),
        zone: str | None = None,
        rules: EventRules = PLAIN_EVENTS,
    ):
        self.source = source
        self.zone = zone
        self.rules = rules
        self._prefix = source if zone is None else f"{source}-{zone}"
        self._emit = emit
        self._host = socket.gethostname() if host is None else host
        self._ignore = frozenset(ignore)
        self._lock = threading.Lock()
        self._open: ActionEvent | None = None
        self._score_sum = 0.0
        self._frames = 0
        self._label: str | None = None
        self._gone: tuple[int, float] | None = None  # (last labelled frame, time) once the open event's label went
        self._recent: deque[tuple[int, float]] = deque(maxlen=512)  # (frame index, time) of recent predictions
        self._last_end: tuple[int, float] | None = None  # (frame, time) where the previous event ended

    @property
    def current(self) -> ActionEvent | None:
        """The open event (also while it waits out the merge gap)."""
        return self._open

    @property
    def label(self) -> str | None:
        """The action label of the newest prediction (None: no label, or a background class)."""
        return self._label

    def update(self, p: Prediction) -> None:
        with self._lock:
            label = p.label if p.window_full and p.label not in self._ignore else None
            self._label = label
            self._recent.append((p.frame_index, p.timestamp))
            if self._open is not None:
                self._follow(label, p)
            if label is not None and self._open is None:
                event_id = f"{self._prefix}-{p.frame_index}-{int(p.timestamp * 1000)}"
                start_frame, start_time = self._earliest(p.timestamp - self.rules.start_offset)
                self._open = ActionEvent(
                    "start", event_id, self.source, label, p.score, p.score, start_time, None, start_frame, None,
                    p.timestamp, host=self._host, zone=self.zone,
                )  # fmt: skip
                self._score_sum, self._frames = p.score, 1
                self._emit(self._open)

    def _earliest(self, wanted: float) -> tuple[int, float]:
        """(frame, time) of the first recent frame at or after `wanted`, but not before the end of
        the previous event (events of one stream never overlap) nor before the first frame seen
        since the stream (re)started."""
        floor = self._last_end
        for frame, when in self._recent:
            if when >= wanted - CLOCK_TOLERANCE_S and (floor is None or (frame, when) >= floor):
                return frame, when
        return self._recent[-1]

    def _follow(self, label: str | None, p: Prediction) -> None:
        """The open event meets the newest label: it goes on, waits out the gap, or ends."""
        if label == self._open.label:
            self._gone = None
            self._score_sum += p.score
            self._frames += 1
            if p.score > self._open.max_score:
                self._open = replace(self._open, max_score=p.score)
            return
        if self._gone is None:
            self._gone = (p.frame_index - 1, p.timestamp)
        if label is not None or p.timestamp - self._gone[1] >= self.rules.merge_gap - CLOCK_TOLERANCE_S:
            self._close(LABEL_CHANGED)

    def close(self, reason: str, when: float | None = None) -> None:
        """End the open event, if any (the camera went away, the file ended, the monitor stops;
        the monitor calls it on every reconnect too)."""
        with self._lock:
            if self._open is not None and self._gone is not None:
                self._close(reason)  # waiting out the gap: it ends when its label went, for `reason`
            elif self._open is not None:
                frame, last_time = self._recent[-1]
                self._gone = (frame, when if when is not None else last_time)
                self._close(reason, lagging=False)  # still labelled when the source went: no lag to take off
            # the stream's history ends here: a later event's start is never dated back across an outage
            self._recent.clear()
            self._last_end = None

    def _close(self, reason: str, lagging: bool = True) -> None:
        end_frame, end_time = self._gone
        if lagging and self.rules.end_offset > 0:
            end_time -= self.rules.end_offset
            end_frame = next((f for f, t in reversed(self._recent) if t <= end_time), end_frame)
        event = replace(
            self._open,
            event="end",
            score=self._score_sum / self._frames,
            end_time=max(end_time, self._open.start_time),
            end_frame=max(end_frame, self._open.start_frame),
            reason=reason,
        )
        self._open, self._gone = None, None
        self._last_end = (event.end_frame, event.end_time)
        self._emit(event)


class JsonLinesWriter:
    """Appends one JSON object per line, flushed and fsynced per event: a killed process loses none.
    An event sink (`sinks.EventSink`)."""

    def __init__(self, path: Path | None = None, stream: IO[str] | None = None):
        self.path = path
        self._lock = threading.Lock()
        self._stream = stream
        self._file = None
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def handle(self, event: ActionEvent) -> ActionEvent:
        try:
            self.write(event)
        except OSError as exc:  # e.g. a full disk: say so loudly, and the other sinks still get it
            log.error("could not write event %s to %s: %s", event.id, self.path, exc)
        return event

    def write(self, event: ActionEvent) -> None:
        line = event.to_json() + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(line)
                self._file.flush()
                os.fsync(self._file.fileno())
            if self._stream is not None:
                self._stream.write(line)
                self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
