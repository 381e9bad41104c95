"""The VTN self-attention decoder, with the original code's names and maths.

Faithful to openvinotoolkit/training_extensions (action_recognition): per-head [H, d, d_k]
projections without biases and without an output projection, scores scaled by sqrt(d_model)
rather than sqrt(d_k), kernel-1 convolutions as the feed-forward, a trainable sinusoid position
table, and an optional post-residual layer norm of its own kind.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """Even dims sin, odd dims cos of pos / 10000^(2*(j//2)/dim); row 0 zero (padding row)."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angles = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.zeros(positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    table[0] = 0.0
    return table.float()


class PositionEncoding(nn.Module):
    def __init__(self, positions: int, dim: int):
        super().__init__()
        self.enc = nn.Embedding(positions, dim)
        with torch.no_grad():
            self.enc.weight.copy_(sinusoid_table(positions, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.enc.weight[: x.shape[1]]


class LayerNormalization(nn.Module):
    """The original's layer norm: unbiased std, eps added to the std, identity for length 1."""

    def __init__(self, dim: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.a_2 = nn.Parameter(torch.ones(dim))
        self.b_2 = nn.Parameter(torch.zeros(dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[1] == 1:
            return z
        mu = z.mean(dim=-1, keepdim=True)
        sigma = z.std(dim=-1, keepdim=True)
        return (z - mu) / (sigma + self.eps) * self.a_2 + self.b_2


class MultiHeadAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, layer_norm: bool):
        super().__init__()
        d_k = dim // heads
        self.scale = 1.0 / math.sqrt(dim)
        self.w_qs = nn.Parameter(torch.empty(heads, dim, d_k))
        self.w_ks = nn.Parameter(torch.empty(heads, dim, d_k))
        self.w_vs = nn.Parameter(torch.empty(heads, dim, d_k))
        for w in (self.w_qs, self.w_ks, self.w_vs):
            nn.init.xavier_normal_(w)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = LayerNormalization(dim) if layer_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (self._project(x, w) for w in (self.w_qs, self.w_ks, self.w_vs))
        attn = self.dropout(torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1))
        heads = (attn @ v).permute(0, 2, 1, 3).reshape(b, t, -1)  # head-major concat
        return self.layer_norm(heads + x)

    @staticmethod
    def _project(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """[B, T, d] x [H, d, d_k] -> [B, H, T, d_k] as one matmul with a constant [d, H*d_k]
        weight, which exporters keep as a plain MatMul that INT8 quantisation can reach."""
        heads, d, d_k = w.shape
        out = x @ w.permute(1, 0, 2).reshape(d, heads * d_k)
        return out.view(x.shape[0], x.shape[1], heads, d_k).transpose(1, 2)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float, layer_norm: bool):
        super().__init__()
        self.w_1 = nn.Conv1d(dim, hidden, 1)
        self.w_2 = nn.Conv1d(hidden, dim, 1)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = LayerNormalization(dim) if layer_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.w_2(self.relu(self.w_1(x.transpose(1, 2)))).transpose(1, 2)
        return self.layer_norm(self.dropout(out) + x)


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, dropout: float, layer_norm: bool):
        super().__init__()
        self.slf_attn = MultiHeadAttention(dim, heads, dropout, layer_norm)
        self.pos_ffn = PositionwiseFeedForward(dim, hidden, dropout, layer_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos_ffn(self.slf_attn(x))


class SelfAttentionDecoder(nn.Module):
    """[B, T, 512] frame embeddings -> [B, T, 512] context-aware embeddings."""

    def __init__(
        self,
        dim: int = 512,
        positions: int = 16,
        blocks: int = 4,
        heads: int = 8,
        hidden: int = 1024,
        dropout: float = 0.1,
        layer_norm: bool = False,
        centre: bool = False,
    ):
        super().__init__()
        self.centre = centre
        self.position_encoding = PositionEncoding(positions, dim)
        self.layers = nn.ModuleList(DecoderBlock(dim, heads, hidden, dropout, layer_norm) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.centre:
            # What the frames share (background, object, colour) dwarfs how they change; without
            # it, what is left is the motion, and a decoder can no longer memorise the videos.
            x = x - x.mean(dim=1, keepdim=True)
        x = self.position_encoding(x)
        for layer in self.layers:
            x = layer(x)
        return x
