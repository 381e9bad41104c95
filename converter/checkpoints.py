"""Checkpoint formats: ours (safetensors + config in its metadata) and the original authors'
(`{'epoch', 'state_dict', 'optimizer'}` from training_extensions' action_recognition).

Everything that reads a torch file goes through `_torch_load`, which never unpickles code.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from converter.config import FORMATS, VTNConfig
from converter.models.vtn import VTN, TwoStreamVTN, build_vtn
from vtn_edge.errors import VtnEdgeError

CONFIG_KEY = "vtn_config"


class CheckpointError(VtnEdgeError):
    """A checkpoint that cannot be read or does not fit the model."""


@dataclass(frozen=True)
class KeyReport:
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    shape_conflicts: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_conflicts)

    def describe(self, limit: int = 12) -> str:
        lines = []
        for title, items in (("missing keys", self.missing), ("unexpected keys", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")
                lines.append(f"  {title}: {shown}")
        for key, want, got in self.shape_conflicts[:limit]:
            lines.append(f"  shape conflict at {key}: model has {list(want)}, checkpoint has {list(got)}")
        return "\n".join(lines)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- our format
def save_checkpoint(
    model: VTN | TwoStreamVTN, path: str | Path, *, half: bool = False, extra: dict[str, str] | None = None
) -> Path:
    """Write weights as safetensors with the model's config in the file's metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else None
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
    }
    metadata = {CONFIG_KEY: model.config.to_json(), **(extra or {})}
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def read_config(path: str | Path) -> VTNConfig:
    """The config stored in one of our checkpoints."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except (SafetensorError, OSError, ValueError) as exc:
        if "not fully covered" in str(exc) or "incomplete" in str(exc):  # a good header, too few bytes after it
            raise CheckpointError(
                f"{path} is a damaged or truncated checkpoint ({exc}): copy it again, or train again"
            ) from None
        raise CheckpointError(
            f"{path} is not a vtn-edge checkpoint (safetensors): {exc}. For the original "
            "authors' .pth files use --checkpoint-format original"
        ) from None
    if CONFIG_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file without a '{CONFIG_KEY}' entry")
    return VTNConfig.from_dict(json.loads(metadata[CONFIG_KEY]))


def load_checkpoint(
    path: str | Path, *, labels: tuple[str, ...] | None = None, reinit_head: bool = False
) -> VTN | TwoStreamVTN:
    """Rebuild the model from one of our checkpoints (float32, eval mode)."""
    config = read_config(path)
    state = load_file(str(path))
    target_config = config.with_classes(labels) if labels is not None else config
    model = build_vtn(target_config)
    load_state(
        model,
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
        reinit_head=reinit_head,
        source=str(path),
    )
    return model.eval()


def load_state(model: nn.Module, state: dict[str, torch.Tensor], *, reinit_head: bool, source: str) -> KeyReport:
    """Load strictly; with `reinit_head`, classifier mismatches are allowed and left at init."""
    own = model.state_dict()
    report = compare_keys(own, state)
    if reinit_head:
        head = [k for k in own if k == "fc.weight" or k == "fc.bias" or k.endswith((".fc.weight", ".fc.bias"))]
        state = {k: v for k, v in state.items() if k not in head}
        report = compare_keys({k: v for k, v in own.items() if k not in head}, state)
    if not report.ok:
        head_conflict = any(k.endswith("fc.weight") for k, _, _ in report.shape_conflicts)
        hint = " (a different class count needs --reinit-head)" if head_conflict else ""
        raise CheckpointError(
            f"{source} does not fit a {model.config.arch} {model.config.modality} VTN{hint}:\n{report.describe()}"
        )
    model.load_state_dict(state, strict=not reinit_head)
    return report


def compare_keys(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> KeyReport:
    missing = tuple(k for k in own if k not in state)
    unexpected = tuple(k for k in state if k not in own)
    conflicts = tuple(
        (k, tuple(own[k].shape), tuple(state[k].shape)) for k in own if k in state and own[k].shape != state[k].shape
    )
    return KeyReport(missing, unexpected, conflicts)


# ---------------------------------------------------------------- the original format
def _torch_load(path: str | Path) -> object:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing {path}: it holds Python objects other than tensors, which would run code "
            f"when loaded ({str(exc).splitlines()[0]})"
        ) from None
    except Exception as exc:  # torch raises many types for damaged files; all mean "unreadable"
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (truncated or another format?): {str(exc).splitlines()[0]}"
        ) from None


def original_to_ours(state: dict[str, torch.Tensor], model: VTN) -> dict[str, torch.Tensor]:
    """Rename one single-stream original state dict (prefixes already stripped) to ours."""
    children = model.encoder.backbone.feature_children()
    out = {}
    for key, value in state.items():
        if key.startswith("resnet."):
            index, _, rest = key[len("resnet.") :].partition(".")
            if index.isdigit() and int(index) < len(children):
                key = f"encoder.backbone.{children[int(index)]}.{rest}"
        elif key.startswith("reduce_conv."):
            key = "encoder." + key
        elif key.startswith("self_attention_decoder."):
            key = "decoder." + key[len("self_attention_decoder.") :]
        out[key] = value
    return out


def ours_to_original(model: VTN) -> dict[str, torch.Tensor]:
    """The inverse renaming, used to write checkpoints in the authors' layout."""
    children = model.encoder.backbone.feature_children()
    index = {name: i for i, name in enumerate(children)}
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("encoder.backbone."):
            rest = key[len("encoder.backbone.") :]
            child = next(c for c in sorted(children, key=len, reverse=True) if rest.startswith(c + "."))
            key = f"resnet.{index[child]}.{rest[len(child) + 1 :]}"
        elif key.startswith("encoder.reduce_conv."):
            key = key[len("encoder.") :]
        elif key.startswith("decoder."):
            key = "self_attention_decoder." + key[len("decoder.") :]
        out[key] = value
    return out


def load_original(
    path: str | Path, config: VTNConfig, *, labels: tuple[str, ...] | None = None, reinit_head: bool = False
) -> VTN | TwoStreamVTN:
    """Load an original-format checkpoint into a model built from `config` (arch/modality).

    The class count comes from the checkpoint unless `labels` say otherwise.
    """
    if config.arch == "mobilenetv2":
        config = replace(config, relu6=False)  # the original MobileNetV2 uses plain ReLU
    blob = _torch_load(path)
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path} holds a {type(blob).__name__}, not a checkpoint dict")
    state = blob.get("state_dict", blob)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} has no 'state_dict' of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if labels is None:
        classes = _original_classes(state, config.num_classes)
        labels = config.labels if classes == config.num_classes else tuple(f"class_{i}" for i in range(classes))
    config = config.with_classes(labels)
    model = build_vtn(config)
    if isinstance(model, TwoStreamVTN):
        ours = {}
        for prefix, sub, attr in (("rgb_recoder.", model.rgb, "rgb"), ("motion_decoder.", model.motion, "motion")):
            part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            ours.update({f"{attr}.{k}": v for k, v in original_to_ours(part, sub).items()})
        ours.update({k: v for k, v in state.items() if not k.startswith(("rgb_recoder.", "motion_decoder."))})
    else:
        if config.modality == "rgbdiff":
            state = {k.removeprefix("motion_decoder."): v for k, v in state.items()}
        ours = original_to_ours(state, model)
    load_state(model, ours, reinit_head=reinit_head, source=str(path))
    return model.eval()


def _original_classes(state: dict[str, torch.Tensor], default: int) -> int:
    for key, value in state.items():
        if key.endswith("fc.weight") and value.dim() == 2:
            return int(value.shape[0])
    return default


def load_any(
    path: str | Path,
    *,
    fmt: str = "ours",
    config: VTNConfig | None = None,
    labels: tuple[str, ...] | None = None,
    reinit_head: bool = False,
) -> VTN | TwoStreamVTN:
    """One entry point for the CLI: our format, or the original one given arch/modality."""
    if fmt == "ours":
        return load_checkpoint(path, labels=labels, reinit_head=reinit_head)
    if fmt == "original":
        if config is None:
            raise CheckpointError("original-format checkpoints carry no architecture: pass --arch")
        return load_original(path, config, labels=labels, reinit_head=reinit_head)
    raise CheckpointError(f"unknown checkpoint format {fmt!r}; choose one of: {', '.join(FORMATS)}")


# ---------------------------------------------------------------- ImageNet backbone weights
def load_backbone_weights(model: VTN, path: str | Path) -> KeyReport:
    """Initialise the encoder's backbone from an ImageNet file in torchvision's (SE-ResNeXt:
    pretrainedmodels') format, .pth or .safetensors. The ImageNet classifier is ignored.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read backbone weights {path}: {exc}") from None
    else:
        blob = _torch_load(path)
        state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} holds no state dict of backbone weights")
    state = {
        k.removeprefix("module."): v
        for k, v in state.items()
        if not k.removeprefix("module.").startswith(("fc.", "classifier.", "last_linear."))
    }
    backbone = model.encoder.backbone
    own = backbone.state_dict()
    conv_in = next(k for k in own if k.endswith("weight") and own[k].dim() == 4)
    if conv_in in state and model.config.in_chans == 6 and state[conv_in].shape[1] == 3:
        # stacked input: the RGB half gets the ImageNet filters, the difference half a copy
        state[conv_in] = torch.cat((state[conv_in], state[conv_in]), dim=1) / 2
    report = compare_keys(own, state)
    if not report.ok:
        raise CheckpointError(f"{path} does not fit the {model.config.arch} backbone:\n{report.describe()}")
    backbone.load_state_dict(state)
    return report
