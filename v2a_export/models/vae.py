"""The MMAudio mel VAE: 1-D conv autoencoder over time, channels = mel bins.

Make-An-Audio 2's layout rebuilt with EDM2 magnitude-preserving layers (Karras et al. 2024,
"Analyzing and Improving the Training Dynamics of Diffusion Models"): bias-free
weight-normalised convolutions (``MPConv1D``), ``mp_silu``, ``mp_sum`` residuals and pixel norm.
Mirrors ``mmaudio/ext/autoencoder/vae.py`` + ``vae_modules.py`` (spec/mmaudio.md §2.2); module
attribute names equal the official state-dict keys (fixtures/mmaudio/keys/vae_16k.json).

Checkpoints hold RAW weights. The forward pass normalises them on the fly (trainable);
:meth:`VAE.remove_weight_norm` folds the normalisation into the weights in place for inference,
as the reference's ``AutoEncoderModule`` does after loading.

Shapes: B batch, M mel frames, L = M/2 latent frames, n_mels = ``data_dim``, C = ``embed_dim``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from .configs import VAEConfig
from .vae_stats import DATA_MEAN_80D, DATA_MEAN_128D, DATA_STD_80D, DATA_STD_128D

# Fixed in the reference for both official VAEs (VAE.__init__): channel multipliers per level,
# residual blocks per encoder level (the decoder has one more), the levels that resample x2.
CH_MULT = (1, 2, 4)
NUM_RES_BLOCKS = 2
RESAMPLE_LEVELS = (0,)  # encoder level 0 downsamples; the decoder upsamples after level 1
CLIP_ACT = 256.0  # activations are clamped to ±CLIP_ACT after every block
MP_EPS = 1e-4
LOGVAR_RANGE = (-30.0, 20.0)

_DATA_STATS = {80: (DATA_MEAN_80D, DATA_STD_80D), 128: (DATA_MEAN_128D, DATA_STD_128D)}


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    """Magnitude-preserving SiLU (EDM2 eq. 81): unit variance in, unit variance out."""
    return F.silu(x) / 0.596


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.3) -> torch.Tensor:
    """Magnitude-preserving blend ``lerp(a, b, t)`` rescaled to unit variance (EDM2 eq. 88)."""
    return (a + t * (b - a)) / math.sqrt((1 - t) ** 2 + t**2)


def pixel_norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x / (eps + ‖x‖ / sqrt(n))`` over ``dim`` (size n): unit RMS along ``dim``."""
    n = x.shape[dim]
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    return x / (MP_EPS + norm * math.sqrt(1.0 / n))


class MPConv1D(nn.Module):
    """Bias-free conv with EDM2 weight normalisation, padding k//2 ("same").

    Unfolded (training) forward uses ``w[o] / (eps + ‖w[o]‖/sqrt(fan_in)) / sqrt(fan_in)``;
    after :meth:`remove_weight_norm` ``weight`` holds that value and is used as is. An optional
    scalar ``gain`` multiplies the weight at call time, exactly where the reference does.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size))
        self.folded = False

    def effective_weight(self) -> torch.Tensor:
        """The normalised weight (out, in, k), computed in float32."""
        if self.folded:
            return self.weight
        w = self.weight.float()
        fan_in = w.shape[1] * w.shape[2]
        norm = torch.linalg.vector_norm(w, dim=(1, 2), keepdim=True)  # (out, 1, 1)
        w = w / (MP_EPS + norm * math.sqrt(1.0 / fan_in)) / math.sqrt(fan_in)
        return w.to(self.weight.dtype)

    def forward(self, x: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
        w = self.effective_weight()
        if gain is not None:
            w = w * gain
        return F.conv1d(x, w, padding=w.shape[-1] // 2)  # (B, out, T)

    @torch.no_grad()
    def remove_weight_norm(self) -> None:
        """Fold the normalisation into ``weight`` (idempotent). The parameter is replaced, not
        written into, so weights assigned from a read-only or memory-mapped file stay intact."""
        if not self.folded:
            self.weight = nn.Parameter(self.effective_weight(), self.weight.requires_grad)
            self.folded = True


class ResnetBlock1D(nn.Module):
    """Pixel norm (also the skip) -> [mp_silu, conv k3] x 2 -> mp_sum with the skip."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv1 = MPConv1D(in_dim, out_dim, 3)
        self.conv2 = MPConv1D(out_dim, out_dim, 3)
        if in_dim != out_dim:
            self.nin_shortcut = MPConv1D(in_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(x, dim=1)  # (B, Cin, T)
        h = self.conv2(mp_silu(self.conv1(mp_silu(x))))  # (B, Cout, T)
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return mp_sum(x, h, 0.3)


class AttnBlock1D(nn.Module):
    """Single-head self-attention over time on pixel-normed q, k, v; mp_sum residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.qkv = MPConv1D(channels, 3 * channels, 1)
        self.proj_out = MPConv1D(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T = x.shape
        y = self.qkv(x).reshape(B, C, 3, T)  # qkv channel index is c*3 + j (interleaved)
        q, k, v = pixel_norm(y, dim=1).unbind(2)  # (B, C, T) each
        q = q.transpose(1, 2) * (1.0 / math.sqrt(C))  # (B, T, C)
        h = attention(q, k.transpose(1, 2), v.transpose(1, 2))  # (B, T, C)
        h = self.proj_out(h.transpose(1, 2))  # (B, C, T)
        return mp_sum(x, h, 0.3)


class Downsample1D(nn.Module):
    """conv k1 -> average pool x2 -> conv k1."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = MPConv1D(channels, channels, 1)
        self.conv2 = MPConv1D(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=2, stride=2))  # (B, C, T/2)


class Upsample1D(nn.Module):
    """Nearest x2 (each frame repeated; = PyTorch 'nearest-exact' at factor 2) -> conv k3."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = MPConv1D(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T = x.shape
        x = torch.stack((x, x), dim=-1).reshape(B, C, 2 * T)  # (B, C, 2T)
        return self.conv(x)


class _Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlock1Ds), optionally ``downsample``/``upsample``."""

    def __init__(self, channels: list[tuple[int, int]]):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock1D(i, o) for i, o in channels)


class _Mid(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock1D(channels, channels)
        self.attn_1 = AttnBlock1D(channels)
        self.block_2 = ResnetBlock1D(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block_2(self.attn_1(self.block_1(x)))
        return x.clamp(-CLIP_ACT, CLIP_ACT)


class Encoder1D(nn.Module):
    """mel (B, n_mels, M) -> moments (B, 2C, M/2): [mean; logvar]."""

    def __init__(self, in_dim: int, embed_dim: int, dim: int):
        super().__init__()
        self.learnable_gain = nn.Parameter(torch.zeros([]))
        self.conv_in = MPConv1D(in_dim, dim, 3)
        self.down = nn.ModuleList()
        block_in = dim
        for level, mult in enumerate(CH_MULT):
            block_out = dim * mult
            chans = [(block_in, block_out)] + [(block_out, block_out)] * (NUM_RES_BLOCKS - 1)
            down = _Level(chans)
            if level in RESAMPLE_LEVELS:
                down.downsample = Downsample1D(block_out)
            self.down.append(down)
            block_in = block_out
        self.mid = _Mid(block_in)
        self.conv_out = MPConv1D(block_in, 2 * embed_dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (B, dim, M)
        for down in self.down:
            for block in down.block:
                h = block(h).clamp(-CLIP_ACT, CLIP_ACT)
            if hasattr(down, "downsample"):
                h = down.downsample(h)  # (B, ch, M/2)
        h = self.mid(h)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)  # (B, 2C, M/2)


class Decoder1D(nn.Module):
    """latent (B, C, L) -> normalised log-mel (B, n_mels, 2L)."""

    def __init__(self, out_dim: int, embed_dim: int, dim: int):
        super().__init__()
        self.learnable_gain = nn.Parameter(torch.zeros([]))
        block_in = dim * CH_MULT[-1]
        self.conv_in = MPConv1D(embed_dim, block_in, 3)
        self.mid = _Mid(block_in)
        levels: dict[int, _Level] = {}
        for level in reversed(range(len(CH_MULT))):  # built deepest first, like the reference
            block_out = dim * CH_MULT[level]
            chans = [(block_in, block_out)] + [(block_out, block_out)] * NUM_RES_BLOCKS
            up = _Level(chans)
            if level - 1 in RESAMPLE_LEVELS:
                up.upsample = Upsample1D(block_out)
            levels[level] = up
            block_in = block_out
        self.up = nn.ModuleList(levels[i] for i in range(len(CH_MULT)))  # up.0 = full resolution
        self.conv_out = MPConv1D(block_in, out_dim, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))  # (B, 4*dim, L)
        for up in reversed(self.up):
            for block in up.block:
                h = block(h).clamp(-CLIP_ACT, CLIP_ACT)
            if hasattr(up, "upsample"):
                h = up.upsample(h)  # (B, ch, 2L)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)  # (B, n_mels, 2L)


@dataclass(frozen=True)
class DiagonalGaussian:
    """The encoder posterior N(mean, exp(logvar)); tensors (B, C, L), logvar clamped."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> DiagonalGaussian:
        mean, logvar = moments.chunk(2, dim=1)  # (B, C, L) each
        return cls(mean, logvar.clamp(*LOGVAR_RANGE))

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q ‖ N(0, I)), averaged over channels and time: (B,)."""
        return 0.5 * torch.mean(self.mean**2 + self.logvar.exp() - 1.0 - self.logvar, dim=(1, 2))


class VAE(nn.Module):
    """Encoder + decoder + the per-bin log-mel statistics (``data_mean``/``data_std``).

    ``data_dim`` 80 and 128 get the official statistics; any other width starts at mean 0 /
    std 1 (a custom model's own values then come from its checkpoint).
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        mean, std = _DATA_STATS.get(cfg.data_dim, ((0.0,) * cfg.data_dim, (1.0,) * cfg.data_dim))
        self.register_buffer("data_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1))
        self.register_buffer("data_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1))
        self.encoder = Encoder1D(cfg.data_dim, cfg.embed_dim, cfg.hidden_dim)
        self.decoder = Decoder1D(cfg.data_dim, cfg.embed_dim, cfg.hidden_dim)

    @property
    def folded(self) -> bool:
        return all(m.folded for m in self.modules() if isinstance(m, MPConv1D))

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        return (mel - self.data_mean) / self.data_std

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.data_std + self.data_mean

    def encode(self, mel: torch.Tensor) -> DiagonalGaussian:
        """log-mel (B, n_mels, M), M even -> posterior over latents (B, C, M/2)."""
        if mel.shape[-1] % 2:
            raise ValueError(f"mel length must be even (one latent per 2 frames), got {mel.shape}")
        return DiagonalGaussian.from_moments(self.encoder(self.normalize(mel)))

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, C, L) -> decoder output (B, n_mels, 2L), still normalised (``dec_raw``)."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, C, L) -> log-mel (B, n_mels, 2L) (``·data_std + data_mean`` applied)."""
        return self.unnormalize(self.decoder(z))

    @torch.no_grad()
    def remove_weight_norm(self) -> VAE:
        """Fold every MPConv1D weight in place for inference; returns self."""
        for m in self.modules():
            if isinstance(m, MPConv1D):
                m.remove_weight_norm()
        return self
