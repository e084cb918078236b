"""Explicit export wrappers: one ``nn.Module`` per component whose ``forward`` parameter names
are the graph's input names (docs/contract.md). Each wraps a network of
:class:`v2a_export.models.build.Networks` without copying it, and calls the network's own entry
point, so the exported graph is the network's code path:

- ``clip_visual`` / ``sync_visual``: uint8 pixels in, scaling and mean/std normalisation inside
  the graph (``CLIP.encode_frames_u8``, ``Synchformer.encode_segments_u8``);
- ``text``: ``CLIP.encode_text`` (all 77 per-token states, L2-normalised);
- ``conditioner`` / ``denoiser``: ``MMAudio.conditioner`` / ``MMAudio.denoiser``. RoPE tables
  come from the dynamic sizes (never baked for the export duration); the sync→latent map is
  the ``sync_index`` input;
- ``vae_decoder``: ``VAE.decode`` on the un-normalised latent; ``vocoder``: BigVGAN.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from v2a_export.models.bigvgan import BigVGAN
from v2a_export.models.build import Networks
from v2a_export.models.clip import CLIP
from v2a_export.models.flow import MMAudio
from v2a_export.models.layers import rope_frequencies
from v2a_export.models.synchformer import Synchformer
from v2a_export.models.vae import VAE


class ClipVisualGraph(nn.Module):
    def __init__(self, clip: CLIP):
        super().__init__()
        self.clip = clip

    def forward(self, frames: Tensor) -> Tensor:
        """uint8 (F, Hc, Hc, 3) → clip_features (F, Dc), L2-normalised."""
        return self.clip.encode_frames_u8(frames)


class SyncVisualGraph(nn.Module):
    def __init__(self, synchformer: Synchformer):
        super().__init__()
        self.synchformer = synchformer

    def forward(self, segments: Tensor) -> Tensor:
        """uint8 (S, 16, Hs, Hs, 3) → sync_features (S, 8, Ds)."""
        return self.synchformer.encode_segments_u8(segments)


class TextGraph(nn.Module):
    def __init__(self, clip: CLIP):
        super().__init__()
        self.clip = clip

    def forward(self, token_ids: Tensor) -> Tensor:
        """int64 (B, 77) → text_features (B, 77, Dt), per-token L2-normalised."""
        return self.clip.encode_text(token_ids)


class ConditionerGraph(nn.Module):
    def __init__(self, flow: MMAudio):
        super().__init__()
        self.flow = flow

    def forward(
        self,
        clip_features: Tensor,  # (B, Lc, Dc)
        sync_features: Tensor,  # (B, Ls, Ds)
        text_features: Tensor,  # (B, 77, Dt)
        negative_text_features: Tensor,  # (B, 77, Dt)
        sync_index: Tensor,  # (L,) int64
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """→ clip_tokens (2B, Lc, H), text_tokens (2B, 77, H), global_cond (2B, H),
        sync_cond (2B, L, H), latent_rope (L, hd/2, 2), clip_rope (Lc, hd/2, 2)."""
        return self.flow.conditioner(
            clip_features, sync_features, text_features, negative_text_features, sync_index
        )


class DenoiserGraph(nn.Module):
    def __init__(self, flow: MMAudio):
        super().__init__()
        self.flow = flow

    def forward(
        self,
        x: Tensor,  # (B, L, C)
        t: Tensor,  # (B,)
        clip_tokens: Tensor,  # (B, Lc, H)
        text_tokens: Tensor,  # (B, 77, H)
        global_cond: Tensor,  # (B, H)
        sync_cond: Tensor,  # (B, L, H)
        latent_rope: Tensor,  # (L, hd/2, 2)
        clip_rope: Tensor,  # (Lc, hd/2, 2)
    ) -> Tensor:
        """→ velocity (B, L, C)."""
        return self.flow.denoiser(
            x, t, clip_tokens, text_tokens, global_cond, sync_cond, latent_rope, clip_rope
        )


class VaeDecoderGraph(nn.Module):
    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, latent: Tensor) -> Tensor:
        """Un-normalised latent (B, C, L) → log-mel (B, n_mels, 2L)."""
        return self.vae.decode(latent)


class VocoderGraph(nn.Module):
    def __init__(self, vocoder: BigVGAN):
        super().__init__()
        self.vocoder = vocoder

    def forward(self, mel: Tensor) -> Tensor:
        """log-mel (B, n_mels, M) → waveform (B, 1, M·hop)."""
        return self.vocoder(mel)


def wrap(nets: Networks, component: str) -> nn.Module:
    """The export wrapper of ``component`` around ``nets`` (eval mode, no copy)."""
    if component == "clip_visual":
        module = ClipVisualGraph(nets.clip)
    elif component == "sync_visual":
        module = SyncVisualGraph(nets.synchformer)
    elif component == "text":
        module = TextGraph(nets.clip)
    elif component == "conditioner":
        module = ConditionerGraph(nets.flow)
    elif component == "denoiser":
        module = DenoiserGraph(nets.flow)
    elif component == "vae_decoder":
        module = VaeDecoderGraph(nets.vae)
    elif component == "vocoder":
        module = VocoderGraph(nets.vocoder)
    else:
        raise ValueError(
            f"unknown component {component!r}; known: clip_visual, sync_visual, text, "
            "conditioner, denoiser, vae_decoder, vocoder"
        )
    return module.eval()


@torch.no_grad()
def pinned_tables(nets: Networks, component: str) -> dict[str, np.ndarray]:
    """Tables the network computes from constants alone, as PyTorch computes them; the exporter
    writes these exact values into the graph (see onnx_export.pin_constants)."""
    flow = nets.flow
    if component == "denoiser":
        return {"time frequencies": flow.t_embed.frequencies().cpu().numpy()}
    if component == "conditioner":
        return {"rope frequencies": rope_frequencies(flow.head_dim).cpu().numpy()}
    return {}


__all__ = [
    "ClipVisualGraph",
    "ConditionerGraph",
    "DenoiserGraph",
    "SyncVisualGraph",
    "TextGraph",
    "VaeDecoderGraph",
    "VocoderGraph",
    "pinned_tables",
    "wrap",
]
