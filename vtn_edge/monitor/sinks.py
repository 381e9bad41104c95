"""Where events go: one small interface that the monitor loops over for every event.

A sink takes an event and returns it, with whatever it made added (the clip sink adds the clip's
path, the snapshot sink the snapshot's), so the sinks after it (the JSON-lines file, MQTT, the
preview) see the finished event. The monitor runs them in order: clips, snapshots, then the
ones that only report.
"""

from __future__ import annotations

import logging
from typing import Protocol

from vtn_edge.monitor.events import ActionEvent

log = logging.getLogger("vtn_edge.monitor")


class EventSink(Protocol):
    def handle(self, event: ActionEvent) -> ActionEvent:
        """Take one start or end event (the recognizer's ordering thread); return it for the next sink."""
        ...

    def close(self) -> None:
        """After the last event: finish what is pending (files, messages)."""
        ...


class LogSink:
    """One log line per event."""

    def handle(self, event: ActionEvent) -> ActionEvent:
        where = event.source if event.zone is None else f"{event.source}/{event.zone}"
        log.info("%s: %s %s (%.2f)", where, event.event, event.label, event.score)
        return event

    def close(self) -> None:
        pass
