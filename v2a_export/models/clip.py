"""CLIP (open_clip layout, QuickGELU): the image tower and MMAudio's per-token text tower.

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision";
the official weights are DFN5B ViT-H/14-378 (open_clip ``ViT-H-14-378-quickgelu``,
spec/mmaudio.md §1.3, §1.5, §2.5). Attribute names equal ``open_clip.model.CLIP`` state-dict
keys (fixtures/mmaudio/keys/clip_dfn5b_vit_h_14_378.json). open_clip's non-persistent
``attn_mask`` buffer is built per call instead (:meth:`CLIP.attn_mask`), so nothing is left on
``meta`` after an ``assign=True`` load.

- :meth:`CLIP.encode_image`: conv patchify (stride = patch, so a 384 px input to the 378 px
  model ignores the last 6 rows/columns, as upstream) -> CLS + positions -> ln_pre ->
  transformer -> ln_post on all tokens -> CLS @ proj -> optional L2 normalisation.
- :meth:`CLIP.encode_text`: MMAudio's patched ``encode_text``: all 77 token states after
  ``ln_final`` (causal mask), each L2-normalised; no ``text_projection``, no EOT pooling.

Shapes: N images, P = grid² patches, W width, E = ``embed_dim``, B prompts, T = 77 tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import PackedMultiheadAttention
from .configs import CLIPTextConfig, CLIPVisionConfig

# OpenAI CLIP pixel statistics (open_clip OPENAI_DATASET_MEAN/STD), applied to [0, 1] RGB.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
LN_EPS = 1e-5


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)
        self.act = QuickGELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """x += attn(ln_1 x); x += mlp(ln_2 x)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attn = PackedMultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)  # (B, L, W)
        return x


class VisionTransformer(nn.Module):
    """open_clip ``VisionTransformer`` with token pooling: pixels (N, 3, H, W) -> (N, E)."""

    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        if cfg.width % cfg.head_width:
            raise ValueError(f"width {cfg.width} not divisible by head_width {cfg.head_width}")
        W, p = cfg.width, cfg.patch_size
        self.grid = cfg.image_size // p
        scale = W**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(W))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid**2 + 1, W))
        self.proj = nn.Parameter(scale * torch.randn(W, cfg.embed_dim))
        self.conv1 = nn.Conv2d(3, W, kernel_size=p, stride=p, bias=False)
        self.ln_pre = nn.LayerNorm(W, eps=LN_EPS)
        self.transformer = Transformer(W, cfg.layers, W // cfg.head_width, cfg.mlp_ratio)
        self.ln_post = nn.LayerNorm(W, eps=LN_EPS)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv1(pixels)  # (N, W, g, g); trailing pixels beyond g·patch are unused
        N, W, gh, gw = x.shape
        if (gh, gw) != (self.grid, self.grid):
            raise ValueError(
                f"image of {tuple(pixels.shape[-2:])} px gives a {gh}x{gw} patch grid; "
                f"this model needs {self.grid}x{self.grid}"
            )
        x = x.reshape(N, W, gh * gw).transpose(1, 2)  # (N, P, W)
        cls = self.class_embedding.to(x.dtype).expand(N, 1, W)  # (N, 1, W)
        x = torch.cat((cls, x), dim=1) + self.positional_embedding  # (N, 1+P, W)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x)[:, 0] @ self.proj  # (N, E)


class CLIP(nn.Module):
    """open_clip ``CLIP`` (visual + text towers) with MMAudio's text output."""

    def __init__(
        self, vision: CLIPVisionConfig, text: CLIPTextConfig, nonscalar_logit_scale: bool = True
    ):
        super().__init__()
        W = text.width
        self.context_length = text.context_length
        self.positional_embedding = nn.Parameter(torch.empty(text.context_length, W))
        self.text_projection = nn.Parameter(torch.empty(W, vision.embed_dim))
        shape = [1] if nonscalar_logit_scale else []
        self.logit_scale = nn.Parameter(torch.full(shape, math.log(1 / 0.07)))
        self.visual = VisionTransformer(vision)
        self.transformer = Transformer(W, text.layers, text.heads, text.mlp_ratio)
        self.token_embedding = nn.Embedding(text.vocab_size, W)
        self.ln_final = nn.LayerNorm(W, eps=LN_EPS)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=W**-0.5)

    def attn_mask(self, device: torch.device) -> torch.Tensor:
        """The causal additive mask (T, T): −inf above the diagonal. Built per call (a constant
        in an exported graph) rather than held as a buffer, so a module built on ``meta`` and
        loaded with ``assign=True`` has no tensor left to materialise."""
        T = self.context_length
        return torch.full((T, T), float("-inf"), device=device).triu(1)

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Mean/std-normalised pixels (N, 3, H, W) -> pooled embeddings (N, E)."""
        x = self.visual(pixels)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Token ids (B, T) int64 -> per-token states (B, T, W) after ln_final (MMAudio patch)."""
        x = self.token_embedding(tokens) + self.positional_embedding  # (B, T, W)
        x = self.ln_final(self.transformer(x, self.attn_mask(x.device)))
        return F.normalize(x, dim=-1) if normalize else x

    def preprocess_u8(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames (N, H, W, 3) -> normalised pixels (N, 3, H, W), float32.

        ``(float32(u8)·float32(1/255) − mean) / std``, as MMAudio's ToDtype(scale=True) +
        ``Normalize(OpenAI mean, std)``.
        """
        # cast first: TensorRT lets only a Cast read a uint8 tensor (NVIDIA/TensorRT#3985)
        x = frames.float().permute(0, 3, 1, 2) * (1.0 / 255.0)  # (N, 3, H, W) in [0, 1]
        mean = torch.tensor(OPENAI_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_frames_u8(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (F, H, W, 3) -> L2-normalised clip features (F, E) (contract layout)."""
        return self.encode_image(self.preprocess_u8(frames), normalize=True)
