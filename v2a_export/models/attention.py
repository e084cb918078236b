"""Plain attention for the encoder networks (CLIP, Synchformer, VAE mid-block).

Written out as ``softmax(q kᵀ) v`` with explicit MatMul/Softmax so the ONNX graph is the
textbook pattern that TensorRT fuses into its attention kernels; no fused PyTorch fast paths,
no data-dependent control flow. ``PackedMultiheadAttention`` has the parameter names of
``nn.MultiheadAttention`` (``in_proj_weight`` [q; k; v], ``in_proj_bias``, ``out_proj``), so
open_clip and ``nn.TransformerEncoderLayer`` checkpoints load into it unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``softmax(q kᵀ + mask) v`` over the last two dims; q must already carry its scale.

    q: (..., Lq, d), k and v: (..., Lk, d), mask: additive, broadcastable to (..., Lq, Lk).
    """
    scores = q @ k.transpose(-2, -1)  # (..., Lq, Lk)
    if mask is not None:
        scores = scores + mask
    return scores.softmax(dim=-1) @ v  # (..., Lq, d)


class PackedMultiheadAttention(nn.Module):
    """Self-attention with ``nn.MultiheadAttention``'s packed parameters (batch first)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.reshape(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, L, hd)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        query_len: int | None = None,
    ) -> torch.Tensor:
        """x: (B, L, D) -> (B, Lq, D). ``query_len`` keeps only the first Lq queries (the
        keys and values still span all L tokens), e.g. 1 when only a CLS output is needed."""
        B, L, D = x.shape
        q_src = x if query_len is None else x[:, :query_len]  # (B, Lq, D)
        w_q, w_kv = self.in_proj_weight.split((D, 2 * D))
        b_q, b_kv = self.in_proj_bias.split((D, 2 * D))
        q = F.linear(q_src, w_q, b_q)  # (B, Lq, D)
        k, v = F.linear(x, w_kv, b_kv).chunk(2, dim=-1)  # (B, L, D) each
        q = self._heads(q) * (1.0 / math.sqrt(self.head_dim))  # (B, h, Lq, hd)
        out = attention(q, self._heads(k), self._heads(v), mask)  # (B, h, Lq, hd)
        out = out.transpose(1, 2).reshape(B, q_src.shape[1], D)  # (B, Lq, D)
        return self.out_proj(out)
