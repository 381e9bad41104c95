"""The Video Transformer Network: a per-frame encoder, the self-attention decoder, a per-frame
classifier whose logits are averaged over time; and its split into the two deployable halves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from converter.config import EMBED_DIM, ConfigError, VTNConfig
from converter.models.decoder import SelfAttentionDecoder
from converter.models.encoders import BACKBONES, init_weights


class InputShapeError(ConfigError):
    """A tensor whose shape does not fit the model's modality or window."""


class FrameEncoder(nn.Module):
    """One (normalised, RGB) frame -> one 512-d embedding.

    Difference modalities also take the previous sampled frame: `rgbdiff` encodes
    current - previous, `stacked` encodes [current, current - previous] as 6 channels.
    Global pooling comes before the 512 projection: a 1x1 convolution commutes with average
    pooling, so this equals the original's reduce-then-pool at 1/49 of the cost. With
    `project_before_pool` (imported Open Model Zoo encoders) the graph keeps the original's order.
    """

    def __init__(self, config: VTNConfig):
        super().__init__()
        self.modality = config.modality
        self.project_before_pool = config.project_before_pool
        self.backbone = BACKBONES[config.arch](config.in_chans, config.relu6)
        init_weights(self.backbone)
        channels = self.backbone.out_channels
        self.reduce_conv = nn.Conv2d(channels, EMBED_DIM, 1) if channels != EMBED_DIM else None

    def forward(self, current: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        if self.project_before_pool and self.reduce_conv is not None:
            maps = self.reduce_conv(self.backbone(self.backbone_input(current, previous)))
            return maps.mean(dim=(2, 3)).flatten(1)
        pooled = self.pool(current, previous)
        if self.reduce_conv is not None:
            pooled = self.reduce_conv(pooled)
        return pooled.flatten(1)

    def pool(self, current: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """Globally pooled backbone features [B, C, 1, 1], before the projection to 512."""
        return self.backbone(self.backbone_input(current, previous)).mean(dim=(2, 3), keepdim=True)

    def backbone_input(self, current: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """What the backbone sees for the modality: the frame, the difference, or both stacked."""
        _check_frames(current, "current")
        if self.modality == "rgb":
            return current
        if previous is None:
            raise InputShapeError(f"modality {self.modality!r} needs the previous frame too")
        _check_frames(previous, "previous")
        diff = current - previous
        return diff if self.modality == "rgbdiff" else torch.cat((current, diff), dim=1)

    def split_backbone(self, tuned: int) -> tuple[nn.Sequential, nn.Sequential]:
        """(trunk, tail): the backbone's feature modules before and after its last `tuned` ones.

        The same modules as the backbone's (shared parameters), so training the tail trains the
        model. `tuned` = 0 gives an empty tail.
        """
        names = self.backbone.feature_children()
        if not 0 <= tuned < len(names):
            raise ConfigError(
                f"can tune 0..{len(names) - 1} of the backbone's {len(names)} feature modules, not {tuned}"
            )
        modules = [self.backbone.get_submodule(name) for name in names]
        cut = len(modules) - tuned
        return nn.Sequential(*modules[:cut]), nn.Sequential(*modules[cut:])


def _project(reduce_conv: nn.Conv2d | None, pooled: torch.Tensor) -> torch.Tensor:
    """Pooled features [..., C] -> embeddings [..., 512]: the 1x1 projection as a linear map."""
    if reduce_conv is None:
        return pooled
    return F.linear(pooled, reduce_conv.weight.flatten(1), reduce_conv.bias)


def _check_frames(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputShapeError(f"{name} frames must be [B, 3, H, W] (normalised RGB), got {list(x.shape)}")


class ClipDecoder(nn.Module):
    """[B, T, 512] embeddings -> [B, classes] logits (per-frame classifier, averaged over time)."""

    def __init__(self, decoder: SelfAttentionDecoder, fc: nn.Linear):
        super().__init__()
        self.decoder = decoder
        self.fc = fc

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        positions = self.decoder.position_encoding.enc.num_embeddings
        if embeddings.dim() != 3 or embeddings.shape[2] != EMBED_DIM or not (1 <= embeddings.shape[1] <= positions):
            raise InputShapeError(f"embeddings must be [B, T<={positions}, {EMBED_DIM}], got {list(embeddings.shape)}")
        return self.fc(self.decoder(embeddings)).mean(dim=1)


class FeatureHead(nn.Module):
    """Cached backbone features -> logits: the part of a VTN that trains when the backbone is
    frozen (the projection to 512, the decoder, the classifier).

    Features are pooled [B, T, C]; with a `tail` (the backbone's last modules, see
    `FrameEncoder.split_backbone`) they are the trunk's maps [B, T, C', H, W], which the tail
    turns into pooled features and trains on. The tail's batch norms keep their statistics
    (eval mode even in training): windows of one video are no sample of ImageNet's.

    With a `subspace` (mean [C], basis [C, K]) the projection trains as a K -> 512 map on
    (features - mean) @ basis instead; `fold()` writes the equivalent C -> 512 map back into the
    encoder's projection, so the saved model is a plain VTN.
    """

    def __init__(
        self,
        encoder: FrameEncoder,
        decoder: ClipDecoder,
        subspace: tuple[torch.Tensor, torch.Tensor] | None = None,
        tail: nn.Module | None = None,
    ):
        super().__init__()
        self.reduce_conv = encoder.reduce_conv
        self.clip_decoder = decoder
        self.tail = tail
        self.subspace_projection: nn.Linear | None = None
        if subspace is not None and tail is not None:
            raise ConfigError("a feature subspace is fitted to fixed pooled features; it cannot follow a trained tail")
        if subspace is not None:
            if self.reduce_conv is None:
                raise ConfigError("a feature subspace needs an encoder with a projection to 512 (not ResNet-18/34)")
            mean, basis = subspace
            self.register_buffer("subspace_mean", mean.float())
            self.register_buffer("subspace_basis", basis.float())
            self.subspace_projection = nn.Linear(basis.shape[1], EMBED_DIM)
            for p in self.reduce_conv.parameters():
                p.requires_grad_(False)  # fold() overwrites it

    def train(self, mode: bool = True) -> FeatureHead:
        super().train(mode)
        if self.tail is not None:
            for m in self.tail.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.tail is not None:
            b, t = features.shape[:2]
            features = self.tail(features.flatten(0, 1)).mean(dim=(2, 3)).view(b, t, -1)
        if self.subspace_projection is None:
            return self.clip_decoder(_project(self.reduce_conv, features))
        return self.clip_decoder(self.subspace_projection((features - self.subspace_mean) @ self.subspace_basis))

    @torch.no_grad()
    def fold(self) -> None:
        """Write the subspace projection into the encoder's 1x1 projection (no-op without one)."""
        if self.subspace_projection is None:
            return
        weight = self.subspace_projection.weight @ self.subspace_basis.T  # [512, C]
        self.reduce_conv.weight.copy_(weight.view_as(self.reduce_conv.weight))
        self.reduce_conv.bias.copy_(self.subspace_projection.bias - weight @ self.subspace_mean)


class VTN(nn.Module):
    """Clip [B, T, 3, H, W] of normalised RGB frames -> logits [B, classes]."""

    def __init__(self, config: VTNConfig):
        super().__init__()
        if config.modality == "two_stream":
            raise ConfigError("use TwoStreamVTN (build_vtn) for the two_stream modality")
        self.config = config
        self.encoder = FrameEncoder(config)
        self.decoder = SelfAttentionDecoder(layer_norm=config.layer_norm, centre=config.centre_window)
        self.fc = nn.Linear(EMBED_DIM, config.num_classes)

    def embed(self, clip: torch.Tensor) -> torch.Tensor:
        """Frame embeddings [B, T', 512]; T' = T - 1 for the difference modalities."""
        min_frames = 2 if self.config.uses_difference else 1
        if clip.dim() != 5 or clip.shape[2] != 3 or not min_frames <= clip.shape[1] <= 16 + (min_frames - 1):
            raise InputShapeError(
                f"a {self.config.modality} clip must be [B, T, 3, H, W] with {min_frames}..."
                f"{15 + min_frames} frames (normally {self.config.window}), got {list(clip.shape)}"
            )
        b = clip.shape[0]
        if self.config.uses_difference:
            current, previous = clip[:, 1:].flatten(0, 1), clip[:, :-1].flatten(0, 1)
        else:
            current, previous = clip.flatten(0, 1), None
        return self.encoder(current, previous).view(b, -1, EMBED_DIM)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.fc(self.decoder(self.embed(clip))).mean(dim=1)

    def split(self) -> tuple[FrameEncoder, ClipDecoder]:
        """The two deployable halves; they share this model's parameters and its train/eval mode."""
        return self.encoder, ClipDecoder(self.decoder, self.fc).train(self.training)

    def feature_head(self, subspace: tuple[torch.Tensor, torch.Tensor] | None = None, tuned: int = 0) -> FeatureHead:
        """The trainable part on cached features; `tuned` > 0 adds the backbone's last modules."""
        encoder, decoder = self.split()
        tail = encoder.split_backbone(tuned)[1] if tuned else None
        return FeatureHead(encoder, decoder, subspace, tail)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(EMBED_DIM, num_classes)


class TwoStreamVTN(nn.Module):
    """Late fusion of an RGB and an RGB-difference VTN: logits averaged 0.5 / 0.5."""

    def __init__(self, config: VTNConfig):
        super().__init__()
        self.config = config
        self.rgb = VTN(VTNConfig.from_dict({**config.to_dict(), "modality": "rgb"}))
        self.motion = VTN(VTNConfig.from_dict({**config.to_dict(), "modality": "rgbdiff"}))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.rgb(clip) + self.motion(clip))

    def reset_classifier(self, num_classes: int) -> None:
        self.rgb.reset_classifier(num_classes)
        self.motion.reset_classifier(num_classes)


def build_vtn(config: VTNConfig) -> VTN | TwoStreamVTN:
    return TwoStreamVTN(config) if config.modality == "two_stream" else VTN(config)
