"""The model manifest (`model.json`): everything the runtime needs to know about a model.

The converter writes it beside the IR and into the IRs' rt_info; the runtime reads it back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vtn_edge.errors import ModelError

SCHEMA_VERSION = 1
MANIFEST_NAME = "model.json"
ENCODER_XML = "encoder.xml"
DECODER_XML = "decoder.xml"
LABELS_NAME = "labels.txt"
RT_INFO_KEY = "vtn_edge"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded BGR frame becomes model input.

    Frames are resized so the short side is `resize_short`, centre-cropped to `input_size`,
    converted to `color_order`, divided by 255 and normalised with mean/std (in that order's
    channel order).
    """

    input_size: int = 224
    resize_short: int = 224
    color_order: str = "RGB"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.color_order not in ("RGB", "BGR"):
            raise ModelError(f"color_order must be 'RGB' or 'BGR', got {self.color_order!r}")
        if self.resize_short < self.input_size:
            raise ModelError(f"resize_short ({self.resize_short}) must be >= input_size ({self.input_size})")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


MODALITIES = ("rgb", "rgbdiff", "stacked")
PAIR_MODALITIES = ("rgbdiff", "stacked")  # the encoder sees a frame and the sampled frame before it


def uses_frame_pairs(modality: str) -> bool:
    """Whether the encoder of this modality sees (frame, previous sampled frame) pairs."""
    return modality in PAIR_MODALITIES


def decoder_length(modality: str, window: int) -> int:
    """Embeddings per decoder window: a window of N frames has N - 1 pairs."""
    return window - 1 if uses_frame_pairs(modality) else window


# classes that mean "no action": the monitor never starts an event for them
BACKGROUND_LABELS = ("none", "still")


@dataclass(frozen=True)
class Manifest:
    """What `converter build` records about a model directory."""

    arch: str
    modality: str
    interface: str  # "native" (uint8 BGR NHWC frames in) or "omz" (float BGR NCHW)
    precision: str
    labels: tuple[str, ...]
    window: int = 16
    stride: int = 2
    embed_dim: int = 512
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    trained: bool = True
    checkpoint_sha256: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    # the execution precision the runtime uses unless told otherwise: "f32" where the build measured
    # the CPU's default (bf16) agreeing with torch less often; None: the plugin's default
    precision_hint: str | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def uses_frame_pairs(self) -> bool:
        return uses_frame_pairs(self.modality)

    @property
    def seq_len(self) -> int:
        """Embeddings per decoder window (see `decoder_length`)."""
        return decoder_length(self.modality, self.window)

    @property
    def background(self) -> tuple[str, ...]:
        """The model's classes that stand for no action (`none`, `still`): they never raise events."""
        return tuple(label for label in self.labels if label in BACKGROUND_LABELS)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        version = data.get("schema_version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise ModelError(
                f"manifest schema_version {version} is newer than this runtime understands "
                f"({SCHEMA_VERSION}); upgrade vtn-edge"
            )
        missing = [k for k in ("arch", "modality", "interface", "precision", "labels") if k not in data]
        if missing:
            raise ModelError(f"manifest lacks required keys: {', '.join(missing)}")
        if data["modality"] not in MODALITIES:
            raise ModelError(f"manifest modality {data['modality']!r} is not one of {MODALITIES}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["labels"] = tuple(values["labels"])
        values["preprocessing"] = Preprocessing.from_dict(values.get("preprocessing", {}))
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelError(f"no manifest at {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"manifest {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Labels, one per line (blank lines ignored); a JSON list or {index: name} map also works."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"labels file {path} does not exist") from None
    if path.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            return tuple(str(data[k]) for k in sorted(data, key=lambda k: int(k)))
        return tuple(str(x) for x in data)
    return tuple(line.strip() for line in text.splitlines() if line.strip())
