"""Build the five networks of a variant, optionally with seeded fixture-style random weights.

``build_networks(config, device, seed)`` returns :class:`Networks` (clip visual+text,
synchformer, flow, vae, vocoder). With ``device="meta"`` nothing is allocated (key checks,
or the skeleton that :func:`v2a_export.checkpoints.load_networks` assigns file tensors to).

Random weights follow fixtures README §2.2 so that no zero-initialised path is dead: every
parameter is overwritten, in ``named_parameters()`` order, from one generator seeded with
``seed`` — U(±sqrt(3/fan_in)) for ndim ≥ 2, 1 + 0.1·N for 1-D ``*weight``, 0.05·N for other
1-D tensors, 0.1·N for 0-D — with the per-network overrides of the fixtures' ``weight_init``
(flow latent statistics and null features, VAE raw MPConv scales, BigVGAN weight-norm
gains, embeddings). With a fixture's weight seed the draw reproduces its weights exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from v2a_runtime.config import NETWORKS

from v2a_export.models.bigvgan import BigVGAN
from v2a_export.models.clip import CLIP
from v2a_export.models.configs import ModelConfig
from v2a_export.models.flow import MMAudio
from v2a_export.models.synchformer import Synchformer
from v2a_export.models.vae import VAE


@dataclass(frozen=True)
class Networks:
    """The networks of one model; the reference pipeline and the exporters take this."""

    config: ModelConfig
    clip: CLIP  # visual + text towers
    synchformer: Synchformer
    flow: MMAudio
    vae: VAE
    vocoder: BigVGAN

    def modules(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in NETWORKS}


def build_module(config: ModelConfig, name: str) -> nn.Module:
    """One network of ``config`` on the current default device (use ``with torch.device``)."""
    if name == "clip":
        return CLIP(config.clip_vision, config.clip_text)
    if name == "synchformer":
        return Synchformer(config.synchformer)
    if name == "flow":
        return MMAudio.from_config(config.flow, config.rates)
    if name == "vae":
        return VAE(config.vae)
    if name == "vocoder":
        return BigVGAN(config.vocoder)
    raise ValueError(f"unknown network {name!r}; known: {', '.join(NETWORKS)}")


def build_networks(
    config: ModelConfig,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    *,
    fold: bool = True,
) -> Networks:
    """All five networks in eval mode.

    ``seed`` overwrites every parameter with the fixture-style random draw (per network, from
    ``seed + k`` for the k-th of :data:`NETWORKS`); without it, the modules keep their
    constructors' initialisation. ``fold`` folds VAE and BigVGAN weight normalisation for
    inference (ignored on ``meta``).
    """
    device = torch.device(device)
    modules = {}
    for k, name in enumerate(NETWORKS):
        with torch.device(device):
            module = build_module(config, name)
        if device.type != "meta":
            if seed is not None:
                randomize_network(module, name, seed + k)
            if fold and name in ("vae", "vocoder"):
                module.remove_weight_norm()
        modules[name] = module.eval()
    return Networks(config=config, **modules)


# --- fixture-style random weights ------------------------------------------------------------

Draw = Callable[[str, torch.Tensor, torch.Generator], torch.Tensor | None]


def default_draw(name: str, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """fixtures README §2.2 rule for one parameter (drawn on the CPU)."""
    shape = tuple(p.shape)
    if p.ndim >= 2:
        a = math.sqrt(3.0 / math.prod(shape[1:]))
        return (torch.rand(shape, generator=gen) * 2 - 1) * a
    if p.ndim == 1 and name.endswith("weight"):
        return 1 + 0.1 * torch.randn(shape, generator=gen)
    if p.ndim == 1:
        return 0.05 * torch.randn(shape, generator=gen)
    return 0.1 * torch.randn(shape, generator=gen)


@torch.no_grad()
def randomize_(module: nn.Module, seed: int, overrides: Draw | None = None) -> nn.Module:
    """Overwrite every parameter in ``named_parameters()`` order from one seeded generator.
    ``overrides`` may return a replacement draw for a parameter (or None for the default)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        value = overrides(name, p, gen) if overrides is not None else None
        if value is None:
            value = default_draw(name, p, gen)
        p.copy_(value)
    return module


def _flow_overrides(name: str, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
    shape = tuple(p.shape)
    if name == "latent_mean":
        return 0.5 * torch.randn(shape, generator=gen)
    if name == "latent_std":
        return 0.5 + torch.rand(shape, generator=gen)
    if name in ("empty_string_feat", "empty_clip_feat", "empty_sync_feat"):
        return torch.randn(shape, generator=gen)
    if name == "sync_pos_emb":
        return 0.5 * torch.randn(shape, generator=gen)
    return None


def _vocoder_overrides(name: str, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
    shape = tuple(p.shape)
    if name.endswith("weight_g"):
        lo, hi = (0.1, 0.4) if name.startswith("resblocks.") else (0.5, 1.5)
        return lo + (hi - lo) * torch.rand(shape, generator=gen)
    if name.endswith("weight_v"):
        return torch.randn(shape, generator=gen)
    if name.endswith((".alpha", ".beta")):  # log-scale snake parameters
        return 0.3 * torch.randn(shape, generator=gen)
    return None


def _vae_overrides(name: str, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
    if name.endswith("learnable_gain"):
        return 0.5 * torch.randn((), generator=gen)
    if p.ndim == 3:  # raw MPConv1D weight (out, in, k): N(0, 1) times a per-channel U(0.2, 2.2)
        factor = 0.2 + 2.0 * torch.rand(p.shape[0], generator=gen)
        return torch.randn(tuple(p.shape), generator=gen) * factor.view(-1, 1, 1)
    return None


def _synchformer_overrides(name: str, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
    if name.endswith(("cls_token", "pos_embed", "temp_embed")):
        return 0.5 * torch.randn(tuple(p.shape), generator=gen)
    return None


def _clip_overrides(name: str, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
    shape = tuple(p.shape)
    embeddings = (
        "token_embedding.weight",
        "positional_embedding",
        "visual.class_embedding",
        "visual.positional_embedding",
    )
    if name in embeddings:
        return 0.5 * torch.randn(shape, generator=gen)
    if name in ("visual.proj", "text_projection"):  # (in, out): fan-in is the row count
        return (torch.rand(shape, generator=gen) * 2 - 1) * math.sqrt(3.0 / shape[0])
    return None


OVERRIDES: dict[str, Draw] = {
    "clip": _clip_overrides,
    "synchformer": _synchformer_overrides,
    "flow": _flow_overrides,
    "vae": _vae_overrides,
    "vocoder": _vocoder_overrides,
}


def randomize_network(module: nn.Module, name: str, seed: int) -> nn.Module:
    """The fixture recipe for network ``name`` (one of :data:`NETWORKS`). With a fixture's
    ``seeds.weights`` this reproduces its safetensors bit for bit (BigVGAN: except the
    data-dependent rescale of ``conv_post.weight_g``)."""
    return randomize_(module, seed, overrides=OVERRIDES[name])


__all__ = [
    "OVERRIDES",
    "Networks",
    "build_module",
    "build_networks",
    "default_draw",
    "randomize_",
    "randomize_network",
]
