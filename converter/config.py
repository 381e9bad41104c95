"""The configuration that rebuilds a VTN model; stored with every checkpoint we write.

Torch-free, so the CLI can validate choices before importing torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from vtn_edge.errors import VtnEdgeError
from vtn_edge.metadata import Preprocessing, decoder_length, uses_frame_pairs

ARCHS = ("mobilenetv2", "resnet18", "resnet34", "resnet50", "se_resnext101_32x4d")
MODALITIES = ("rgb", "rgbdiff", "stacked", "two_stream")
SCHEDULES = ("plateau", "onecycle")
LEAVE_OUT = "leave-out"
AFTER_ACTION = (LEAVE_OUT, "background")  # stream windows an action fades out of: left out, or the background
PRECISIONS = ("int8", "fp16", "fp32")  # what `converter build` writes
INTERFACES = ("native", "omz")  # native: uint8 BGR NHWC frames in; omz: the Open Model Zoo reference interface
FORMATS = ("ours", "original")  # checkpoint layouts
BUILD_MODALITIES = ("rgb", "rgbdiff", "stacked")  # one encoder each (two_stream builds as two models)
EMBED_DIM = 512


class ConfigError(VtnEdgeError):
    """An architecture, modality or size that the model family does not have."""


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")


@dataclass(frozen=True)
class VTNConfig:
    arch: str
    modality: str = "rgb"
    num_classes: int = 400
    labels: tuple[str, ...] = ()
    window: int = 16
    stride: int = 2
    layer_norm: bool = False
    # The original VTN code's MobileNetV2 uses ReLU; torchvision and TFLite weights use ReLU6.
    relu6: bool = True
    # Apply the 1x1 projection to 512 on the feature maps and pool after it, as the Open Model Zoo
    # IRs do; the same embedding as pooling first (both are linear), at 49x the projection's cost.
    # Set by `converter import` so an imported model exports with the original's graph.
    project_before_pool: bool = False
    # Subtract the window's mean embedding before the decoder, so that it sees only how the frames
    # differ from each other (ours; the original VTN has no such step).
    centre_window: bool = False
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, ARCHS)
        check_choice("modality", self.modality, MODALITIES)
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {self.num_classes}")
        if not 2 <= self.window <= 16:
            raise ConfigError(f"window must be 2..16 (the position table has 16 rows), got {self.window}")
        if self.stride < 1:
            raise ConfigError(f"stride must be >= 1, got {self.stride}")
        if not self.labels:
            object.__setattr__(self, "labels", tuple(f"class_{i}" for i in range(self.num_classes)))
        elif len(self.labels) != self.num_classes:
            raise ConfigError(f"{len(self.labels)} labels given for a model with {self.num_classes} classes")
        object.__setattr__(self, "labels", tuple(self.labels))

    @property
    def uses_difference(self) -> bool:
        return uses_frame_pairs(self.modality)

    @property
    def seq_len(self) -> int:
        """Embeddings the decoder sees per window (the runtime's rule, `decoder_length`)."""
        return decoder_length(self.modality, self.window)

    @property
    def in_chans(self) -> int:
        return 6 if self.modality == "stacked" else 3

    def with_classes(self, labels: tuple[str, ...]) -> VTNConfig:
        return replace(self, labels=tuple(labels), num_classes=len(labels))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VTNConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["labels"] = tuple(values.get("labels", ()))
        values["preprocessing"] = Preprocessing.from_dict(values.get("preprocessing", {}))
        return cls(**values)
