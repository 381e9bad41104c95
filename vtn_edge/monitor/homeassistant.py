"""Home Assistant MQTT discovery: each camera (and each zone) appears as a sensor of its current action.

One retained config message per camera or zone on `<prefix>/sensor/<node_id>/<object_id>/config`
(REFERENCE.md section 8): the sensor reads the camera's retained state topic, is available while
the box's status topic says `online`, and belongs to one device per box. Republished on every
connection, so a broker that lost its retained messages gets them back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

DEFAULT_PREFIX = "homeassistant"


def object_id(text: str) -> str:
    """Home Assistant's id alphabet: letters, digits, '_' and '-'."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text)


def _stream_id(camera: str, zone: str | None) -> str:
    return object_id(camera if zone is None else f"{camera}_{zone}")


@dataclass(frozen=True)
class Discovery:
    prefix: str
    host: str  # the box: one Home Assistant device
    model: str  # what the device block calls its model
    version: str

    @property
    def node_id(self) -> str:
        return object_id(f"vtn_edge_{self.host}")

    def config_topic(self, camera: str, zone: str | None = None) -> str:
        return f"{self.prefix}/sensor/{self.node_id}/{_stream_id(camera, zone)}/config"

    def config(self, camera: str, zone: str | None, state_topic: str, status_topic: str) -> str:
        payload = {
            "name": f"{camera} action" if zone is None else f"{camera} {zone} action",
            "unique_id": f"{self.node_id}_{_stream_id(camera, zone)}",
            "state_topic": state_topic,
            "value_template": "{{ value_json.label if value_json.label else 'none' }}",
            "json_attributes_topic": state_topic,
            "availability_topic": status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "icon": "mdi:motion-sensor",
            "device": {
                "identifiers": [self.node_id],
                "name": f"vtn-edge {self.host}",
                "model": self.model,
                "manufacturer": "vtn-edge",
                "sw_version": self.version,
            },
        }
        return json.dumps(payload, separators=(",", ":"))
