"""`converter train`'s options, declared once: the dataclass is the command line (flags, types,
defaults, help, choices are read off its fields) and checks itself when made, before torch loads.

A field's metadata may carry `help`, `choices`, `metavar`, and `flag` (a spelling other than the
field's name) or `alias` (an old spelling kept working). A bool that defaults to True becomes a
`--no-...` flag; a tuple becomes a repeatable flag.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from converter.config import AFTER_ACTION, ARCHS, LEAVE_OUT, MODALITIES, SCHEDULES
from vtn_edge.errors import VtnEdgeError


class TrainError(VtnEdgeError):
    """Options that cannot train."""


def _opt(default: Any = None, help: str | None = None, **meta: Any) -> Any:  # noqa: A002 - argparse's word
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class TrainOptions:
    arch: str = _opt("", "encoder architecture", choices=ARCHS)
    data: str = _opt("", "folder per class, list file, ActivityNet-style JSON, or a folder of annotated streams")
    out: str = _opt("runs/vtn", "the run directory")
    validation: str | None = _opt(None, "validation data in the same layout", alias="--val")
    labels: str | None = _opt(None, "labels file for list-file datasets")
    modality: str = _opt("rgb", None, choices=MODALITIES)
    epochs: int = _opt(50)
    batch_size: int = _opt(8)
    lr: float = _opt(1e-4)
    weight_decay: float = _opt(1e-4)
    patience: int = _opt(3, "epochs without validation improvement before lr / 10")
    schedule: str = _opt(
        "plateau", "plateau: the paper's lr / 10 on a validation plateau; onecycle: 5%% warm-up, then cosine decay",
        choices=SCHEDULES,
    )  # fmt: skip
    backbone_weights: str | None = _opt(
        None, "ImageNet weights: torchvision-format .pth/.safetensors, or the MobileNetV2 .tflite"
    )
    init_checkpoint: str | None = _opt(None, "start from one of our checkpoints (new head)")
    freeze_encoder: bool = _opt(False, "cache embeddings, train the decoder alone")
    views: int = _opt(1, "with --freeze-encoder: views cached per video, the centre crop plus N-1 random crops")
    input_size: int = _opt(224)
    window: int = _opt(16)
    stride: int = _opt(2)
    flip: bool = _opt(True, "no horizontal flips (they swap left and right)")
    workers: int = _opt(2, "decoding processes")
    teachers: tuple[str, ...] = _opt(
        (),
        "distil from this checkpoint (twice: an RGB + RGB-diff two-stream teacher)",
        flag="--teacher",
        metavar="CHECKPOINT",
    )
    kd_temperature: float = _opt(4.0)
    kd_alpha: float = _opt(0.5)
    seed: int = _opt(0)
    bf16: bool = _opt(False, "bfloat16 autocast (~2x on CPUs with AMX/AVX512-BF16, and on GPUs)")
    max_steps: int | None = _opt(None, "cap steps per epoch (smoke tests)")
    cache_dir: str | None = _opt(None, "feature cache for --freeze-encoder (default: RUN/features)")
    subspace: int | None = _opt(
        None, "with --freeze-encoder: train the projection on the K whitened directions in which features change "
        "within a video (folded into the 1x1 projection when saved)", metavar="K",
    )  # fmt: skip
    tune_layers: int = _opt(
        0, "with --freeze-encoder: the backbone's last N feature modules train too (the cache holds the maps "
        "that the frozen rest hands them; MobileNetV2 2 = its last block and 1x1 convolution)", metavar="N",
    )  # fmt: skip
    centre_window: bool = _opt(
        False, "the decoder sees each window minus its mean embedding: only how the frames change"
    )
    reverse_pairs: str | None = _opt(
        None, "reversal augmentation: 'class partner' lines (a class alone: its own partner); half the clips of "
        "those classes play backwards as the partner. `dataset synth` writes pairs.txt", metavar="FILE",
    )  # fmt: skip
    clip_grad: float | None = _opt(None, "clip the gradient norm: keeps a high --lr from diverging", metavar="NORM")
    mix_clips: str | None = _opt(
        None, "with --data streams: trimmed clips trained in the same epochs, so they are not forgotten",
        metavar="DATASET",
    )  # fmt: skip
    mix_share: float = _opt(0.25, "the share of each epoch's windows that --mix-clips gives")
    after_action: str = _opt(
        LEAVE_OUT, "with --data streams: an idle window that still shows 4-7 of its 16 frames of the action that "
        "just ended is left out of training, or labelled with the background class", choices=AFTER_ACTION,
    )  # fmt: skip
    nuisance_weight: float = _opt(
        1.0, "with --data streams: idle windows that show a nuisance the annotation names (a distractor, an "
        "occlusion, camera shake) are drawn this many times as often as other idle windows", metavar="W",
    )  # fmt: skip
    feature_noise: float = _opt(
        0.0, "with --freeze-encoder: Gaussian noise added to the cached features in training, as a fraction of "
        "each frame's feature RMS (an INT8 encoder moves its features by about 0.1)", metavar="SCALE",
    )  # fmt: skip
    features_from: str | None = _opt(
        None, "with --freeze-encoder: cache the features that this built model's encoder IR computes (its INT8 "
        "trunk, in the precision the runtime runs it) instead of the float trunk's; build it from the checkpoint "
        "you train from", metavar="MODEL_DIR",
    )  # fmt: skip

    def __post_init__(self) -> None:
        object.__setattr__(self, "teachers", tuple(self.teachers))
        if not self.arch or not self.data:
            raise TrainError("train needs --arch and --data (or --resume RUN)")
        for f in fields(self):
            value, choices = getattr(self, f.name), f.metadata.get("choices")
            if choices and value not in choices:
                raise TrainError(f"--{_dashed(f.name)} must be one of {', '.join(choices)}, got {value!r}")
        for broken, message in self._rules():
            if broken:
                raise TrainError(message)

    def _rules(self) -> list[tuple[bool, str]]:
        """(broken?, why): what no data could make work, checked before anything loads."""
        cached = "add --freeze-encoder"
        return [
            (bool(self.teachers and self.freeze_encoder),
             "--teacher needs whole clips; it cannot be combined with --freeze-encoder"),
            (self.clip_grad is not None and self.clip_grad <= 0,
             f"--clip-grad must be a positive norm, got {self.clip_grad}"),
            (self.epochs < 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.views < 1, f"--views must be >= 1 (the centre crop plus views - 1 random crops), got {self.views}"),
            (self.subspace is not None and not self.freeze_encoder, f"--subspace works on cached features: {cached}"),
            (bool(self.tune_layers and not self.freeze_encoder),
             f"--tune-layers trains the end of a cached backbone: {cached}"),
            (bool(self.tune_layers and self.subspace is not None),
             "--subspace needs fixed pooled features; it cannot be combined with --tune-layers"),
            (bool(self.reverse_pairs and self.modality != "rgb"),
             f"--reverse-pairs needs --modality rgb (reversed {self.modality} inputs are not a clip)"),
            (self.feature_noise < 0, f"--feature-noise is a fraction >= 0, got {self.feature_noise}"),
            (bool(self.feature_noise and not self.freeze_encoder),
             f"--feature-noise works on cached features: {cached}"),
            (bool(self.features_from and not self.freeze_encoder),
             f"--features-from caches an IR's features: {cached}"),
            (bool(self.features_from and self.tune_layers),
             "--features-from gives pooled features; it cannot be combined with --tune-layers"),
            (not self.nuisance_weight > 0,
             f"--nuisance-weight must be > 0 (1: no preference), got {self.nuisance_weight}"),
            (not 0 < self.mix_share < 1, f"--mix-share is a fraction of each epoch in (0, 1), got {self.mix_share}"),
        ]  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> TrainOptions:
        """A run's options.json (older runs spell validation `val`)."""
        data = {("validation" if k == "val" else k): v for k, v in data.items()}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_flags(cls, args: argparse.Namespace, **overrides: Any) -> TrainOptions:
        values = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
        return cls(**{k: (str(v) if k in _PATH_FIELDS else v) for k, v in {**values, **overrides}.items()})


def _dashed(name: str) -> str:
    return name.replace("_", "-")


_PATH_FIELDS = {"data", "out", "validation", "labels", "backbone_weights", "init_checkpoint", "cache_dir",
                "reverse_pairs", "mix_clips", "features_from"}  # fmt: skip


def add_option_flags(parser: argparse.ArgumentParser, cls: type = TrainOptions) -> None:
    """One flag per field of `cls`, its default None so that what was not given keeps the dataclass's."""
    for f in fields(cls):
        meta = f.metadata
        default = f.default if f.default is not MISSING else None
        kind = str(f.type)
        help_text = meta.get("help") or ""
        if default not in (None, "", ()) and kind != "bool":
            help_text = f"{help_text} (default {default})".strip()
        names = [meta.get("flag") or f"--{_dashed(f.name)}"]
        if "alias" in meta:  # an old spelling that keeps working
            names.append(meta["alias"])
            help_text += f" ({meta['alias']}: the old spelling)"
        if kind == "bool" and default is True:
            parser.add_argument(f"--no-{_dashed(f.name)}", dest=f.name, action="store_false", default=None,
                                help=help_text)  # fmt: skip
        elif kind == "bool":
            parser.add_argument(*names, dest=f.name, action="store_true", default=None, help=help_text)
        elif kind.startswith("tuple"):
            parser.add_argument(*names, dest=f.name, action="append", default=None, metavar=meta.get("metavar"),
                                help=help_text)  # fmt: skip
        else:
            convert = {"int": int, "float": float}.get(kind.split(" |")[0], str)
            parser.add_argument(*names, dest=f.name, type=convert, choices=meta.get("choices"),
                                metavar=meta.get("metavar"), help=help_text)  # fmt: skip
