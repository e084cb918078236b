"""The Synchformer visual encoder: 16-frame segments -> 8 sync tokens per segment.

Iashin et al. 2024, "Synchformer: Efficient Synchronization from Sparse Cues": a MotionFormer
video ViT (divided space-time attention, Bertasius et al. 2021 "Is Space-Time Attention All You
Need?") whose patch tokens are pooled per frame by a one-layer transformer with its own CLS
token. Mirrors ``mmaudio/ext/synchformer/{synchformer,motionformer,vit_helper}.py``
(spec/mmaudio.md §2.4); the module lives under ``vfeat_extractor`` so the state-dict keys equal
fixtures/mmaudio/keys/synchformer_visual.json. Attention is written out (models/attention.py),
not ``nn.TransformerEncoderLayer``, so it exports to plain ONNX.

Shapes: B batch, S segments, T = 16 frames per segment, t = T/2 temporal tokens (8),
h = w = img/patch spatial grid (14 official, 4 tiny), N = h·w, D width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import PackedMultiheadAttention, attention
from .configs import SynchformerConfig

LN_EPS = 1e-6


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LN_EPS)


class _PatchEmbed(nn.Module):
    """Holds ``proj``: the 2-D (Conv2d) or 3-D (Conv3d, t-major flatten) patch embedding."""

    def __init__(self, proj: nn.Module):
        super().__init__()
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, t, h, w)
        return x.flatten(2).transpose(1, 2)  # (B, t·h·w, D), t-major


class DividedAttention(nn.Module):
    """Attention over one axis (time or space) of the (t, N) token grid, plus CLS.

    qkv is the [q; k; v] block layout, q is pre-scaled by hd^-0.5. The CLS query attends to
    every token; each grid token attends to the CLS key/value and to its own group.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, t: int, n: int, over_time: bool) -> torch.Tensor:
        """x (B, 1 + t·n, D) -> (B, 1 + t·n, D); groups are frames (space) or positions (time)."""
        B, L, D = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, self.head_dim)  # (B, L, 3, h, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, L, hd) each
        q = q * (self.head_dim**-0.5)
        cls_out = attention(q[:, :, :1], k, v)  # (B, h, 1, hd)

        def grid(z: torch.Tensor) -> torch.Tensor:
            z = z[:, :, 1:].reshape(B, self.num_heads, t, n, self.head_dim)  # (B, h, t, n, hd)
            return z.transpose(2, 3) if over_time else z  # (B, h, G, Lg, hd)

        q_, k_, v_ = grid(q), grid(k), grid(v)
        G = q_.shape[2]
        cls_k = k[:, :, None, :1].expand(B, self.num_heads, G, 1, self.head_dim)  # (B, h, G, 1, hd)
        cls_v = v[:, :, None, :1].expand(B, self.num_heads, G, 1, self.head_dim)
        out = attention(q_, torch.cat((cls_k, k_), 3), torch.cat((cls_v, v_), 3))  # (B,h,G,Lg,hd)
        if over_time:
            out = out.transpose(2, 3)  # (B, h, t, n, hd)
        out = out.reshape(B, self.num_heads, t * n, self.head_dim)  # (B, h, t·n, hd)
        out = torch.cat((cls_out, out), dim=2).transpose(1, 2)  # (B, L, h, hd)
        return self.proj(out.reshape(B, L, D))  # (B, L, D)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class DividedSpaceTimeBlock(nn.Module):
    """x += timeattn(norm3 x); x += attn(norm1 x); x += mlp(norm2 x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = _layer_norm(dim)
        self.attn = DividedAttention(dim, num_heads)
        self.timeattn = DividedAttention(dim, num_heads)
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm3 = _layer_norm(dim)

    def forward(self, x: torch.Tensor, t: int, n: int) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x), t, n, over_time=True)
        x = x + self.attn(self.norm1(x), t, n, over_time=False)
        return x + self.mlp(self.norm2(x))


class SpatialAggregator(nn.Module):
    """Pre-norm transformer layer over [cls_token; N patches] of one frame; returns the CLS row.

    Equals ``nn.TransformerEncoderLayer(norm_first=True, activation=GELU, eps=1e-6)`` restricted
    to output row 0: only the CLS query is computed (keys/values still span all tokens).
    """

    def __init__(self, dim: int, num_heads: int, ff_dim: int):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.self_attn = PackedMultiheadAttention(dim, num_heads)
        self.linear1 = nn.Linear(dim, ff_dim)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.norm1 = _layer_norm(dim)
        self.norm2 = _layer_norm(dim)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (F, N, D) -> (F, D)."""
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)  # (F, 1+N, D)
        c = x[:, 0] + self.self_attn(self.norm1(x), query_len=1)[:, 0]  # (F, D)
        return c + self.linear2(F.gelu(self.linear1(self.norm2(c))))


class MotionFormer(nn.Module):
    """Divided space-time ViT over (B·S, 3, T, H, W) + per-frame aggregation -> (B·S, t, D)."""

    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        if cfg.img_size % cfg.patch_size or cfg.num_frames % cfg.temporal_patch:
            raise ValueError(
                f"img_size {cfg.img_size} must be a multiple of patch_size {cfg.patch_size} and "
                f"num_frames {cfg.num_frames} of temporal_patch {cfg.temporal_patch}"
            )
        if cfg.embed_dim % cfg.num_heads:
            raise ValueError(
                f"embed_dim {cfg.embed_dim} is not divisible by num_heads {cfg.num_heads}"
            )
        D, p = cfg.embed_dim, cfg.patch_size
        self.cfg = cfg
        self.grid = cfg.img_size // p
        self.t = cfg.num_frames // cfg.temporal_patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, D))
        self.temp_embed = nn.Parameter(torch.zeros(1, self.t, D))
        # The 2-D embedding is in the checkpoint but unused (only patch_embed_3d runs).
        self.patch_embed = _PatchEmbed(nn.Conv2d(3, D, p, stride=p))
        kernel = (cfg.temporal_patch, p, p)
        self.patch_embed_3d = _PatchEmbed(nn.Conv3d(3, D, kernel, stride=kernel))
        self.blocks = nn.ModuleList(
            DividedSpaceTimeBlock(D, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.norm = _layer_norm(D)
        self.spatial_attn_agg = SpatialAggregator(D, cfg.num_heads, int(cfg.mlp_ratio * D))
        for param in (self.cls_token, self.pos_embed, self.temp_embed):
            nn.init.trunc_normal_(param, std=0.02)

    def positions(self) -> torch.Tensor:
        """Separate space + time embeddings: (1, 1 + t·N, D); CLS gets pos_embed[0] only."""
        n = self.grid**2
        space = self.pos_embed[:, 1:].repeat(1, self.t, 1)  # (1, t·N, D), tiled over time
        time = self.temp_embed.repeat_interleave(n, dim=1)  # (1, t·N, D), repeated per patch
        return torch.cat((self.pos_embed[:, :1], space + time), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B·S, 3, T, H, W) in [-1, 1] -> (B·S, t, D)."""
        BS, _, T, H, W = x.shape
        if (T, H, W) != (self.cfg.num_frames, self.cfg.img_size, self.cfg.img_size):
            raise ValueError(
                f"expected segments of {self.cfg.num_frames} frames of {self.cfg.img_size}px, "
                f"got (T, H, W) = {(T, H, W)}"
            )
        n = self.grid**2
        x = self.patch_embed_3d(x)  # (BS, t·N, D)
        x = torch.cat((self.cls_token.expand(BS, -1, -1), x), dim=1) + self.positions()
        for block in self.blocks:
            x = block(x, self.t, n)  # (BS, 1 + t·N, D)
        x = self.norm(x[:, 1:])  # (BS, t·N, D), CLS dropped
        x = x.reshape(BS * self.t, n, -1)  # (BS·t, N, D): one row per frame
        return self.spatial_attn_agg(x).reshape(BS, self.t, -1)  # (BS, t, D)


class Synchformer(nn.Module):
    """The visual branch of Synchformer: (B, S, T, 3, H, W) in [-1, 1] -> (B, S, t, D)."""

    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        self.vfeat_extractor = MotionFormer(cfg)

    def forward(self, vis: torch.Tensor) -> torch.Tensor:
        B, S, T, C, H, W = vis.shape
        x = vis.permute(0, 1, 3, 2, 4, 5).reshape(B * S, C, T, H, W)  # (B·S, 3, T, H, W)
        return self.vfeat_extractor(x).reshape(B, S, self.vfeat_extractor.t, -1)  # (B, S, t, D)

    def encode_segments_u8(self, segments: torch.Tensor) -> torch.Tensor:
        """uint8 segments (S, T, H, W, 3) RGB -> sync features (S, t, D) (contract layout)."""
        # cast first: TensorRT lets only a Cast read a uint8 tensor (NVIDIA/TensorRT#3985)
        x = segments.float().permute(0, 4, 1, 2, 3)  # (S, 3, T, H, W)
        return self.vfeat_extractor(normalize_u8(x))


def normalize_u8(x: torch.Tensor) -> torch.Tensor:
    """uint8 values (as float) -> [-1, 1]: ``(x·float32(1/255) − 0.5) / 0.5``, as torchvision's
    ``ToDtype(scale=True)`` + ``Normalize(0.5, 0.5)``."""
    return (x * (1.0 / 255.0) - 0.5) / 0.5
