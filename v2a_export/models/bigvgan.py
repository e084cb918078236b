"""BigVGAN vocoders: log-mel (B, n_mels, M) -> waveform (B, 1, M·hop).

One network for both official vocoders (spec/mmaudio.md §2.3), selected by
:class:`~v2a_export.models.configs.BigVGANConfig`:
- 16 kHz: Make-An-Audio 2's BigVGAN (``mmaudio/ext/bigvgan``), conv_post with bias, tanh;
- 44.1 kHz: NVIDIA BigVGAN-v2 (``mmaudio/ext/bigvgan_v2``), conv_post without bias, clamp(-1, 1).

Lee et al. 2023, "BigVGAN: A Universal Neural Vocoder with Large-Scale Training": transposed-conv
upsamplers, each followed by AMP residual blocks whose SnakeBeta activations run at twice the
sample rate between Kaiser-sinc anti-aliasing filters.

Weights use the legacy ``torch.nn.utils.weight_norm`` layout (``<conv>.weight_g``,
``<conv>.weight_v``, ``<conv>.bias``), exactly as fixtures/mmaudio/keys/bigvgan_*.json; files in
the newer ``parametrizations.weight.original0/1`` naming load too (renamed on load). The
forward pass computes each weight from (g, v) so the network trains;
:meth:`BigVGAN.remove_weight_norm` folds them into plain ``weight`` tensors for inference.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .configs import BigVGANConfig

FILTER_TAPS = 12  # anti-alias filter length (Activation1d defaults: ratio 2, kernel 12)
FILTER_CUTOFF = 0.25  # 0.5 / ratio, in cycles per (upsampled) sample
FILTER_HALF_WIDTH = 0.3  # 0.6 / ratio
SNAKE_EPS = 1e-9

_PARAM_NAMES = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}


@functools.lru_cache(maxsize=None)
def kaiser_sinc_filter(
    cutoff: float = FILTER_CUTOFF, half_width: float = FILTER_HALF_WIDTH, taps: int = FILTER_TAPS
) -> tuple[float, ...]:
    """Windowed-sinc low-pass with a Kaiser window, normalised to unit DC gain (even ``taps``).

    The Kaiser beta follows Kaiser's empirical rule for the stop-band attenuation
    A = 2.285·(taps/2 − 1)·π·4·half_width + 7.95 dB (Oppenheim & Schafer, eq. 7.62/7.63), as in
    BigVGAN's ``kaiser_sinc_filter1d``. Returns float64 taps; the buffer is their float32.
    """
    if taps % 2:
        raise ValueError(f"taps must be even, got {taps}")
    half = taps // 2
    atten = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    if atten > 50.0:
        beta = 0.1102 * (atten - 8.7)
    elif atten >= 21.0:
        beta = 0.5842 * (atten - 21.0) ** 0.4 + 0.07886 * (atten - 21.0)
    else:
        beta = 0.0
    n = np.arange(taps, dtype=np.float64)
    ratio = (n - (taps - 1) / 2) / ((taps - 1) / 2)
    window = np.i0(beta * np.sqrt(1.0 - ratio**2)) / np.i0(beta)  # symmetric Kaiser window
    time = np.arange(-half, half, dtype=np.float64) + 0.5  # taps sit between samples
    filt = 2 * cutoff * window * np.sinc(2 * cutoff * time)
    return tuple(float(v) for v in filt / filt.sum())


def _filter_buffer() -> torch.Tensor:
    return torch.tensor(kaiser_sinc_filter(), dtype=torch.float32).view(1, 1, FILTER_TAPS)


def rename_parametrized_weight_norm(state_dict: dict) -> dict:
    """Rename ``<p>.parametrizations.weight.original0/1`` to ``<p>.weight_g/weight_v``."""
    out = {}
    for key, value in state_dict.items():
        for old, new in _PARAM_NAMES.items():
            if key.endswith("." + old):
                key = key[: -len(old)] + new
                break
        out[key] = value
    return out


class WNConv1d(nn.Module):
    """Conv1d / ConvTranspose1d with weight norm: ``weight = g · v / ‖v‖`` (norm over all dims
    but 0). For a transposed conv dim 0 of the weight (in, out, k) is the INPUT channel.

    Parameters register in the order the legacy ``weight_norm`` leaves them: bias, weight_g,
    weight_v. After :meth:`remove_weight_norm` the module holds ``bias`` and ``weight``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        padding: int = 0,
        bias: bool = True,
        transposed: bool = False,
    ):
        super().__init__()
        self.stride, self.dilation, self.padding = stride, dilation, padding
        self.transposed = transposed
        shape = (in_ch, out_ch, kernel_size) if transposed else (out_ch, in_ch, kernel_size)
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        v = torch.empty(shape)
        nn.init.normal_(v, 0.0, 0.01)  # BigVGAN's init_weights
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True))
        self.weight_v = nn.Parameter(v)
        self.register_load_state_dict_pre_hook(_accept_parametrized_names)

    @property
    def folded(self) -> bool:
        return "weight" in self._parameters

    def current_weight(self) -> torch.Tensor:
        if self.folded:
            return self.weight
        norm = torch.linalg.vector_norm(self.weight_v, dim=(1, 2), keepdim=True)
        return self.weight_v * (self.weight_g / norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.current_weight()
        if self.transposed:
            return F.conv_transpose1d(x, w, self.bias, self.stride, self.padding)
        return F.conv1d(x, w, self.bias, self.stride, self.padding, self.dilation)

    @torch.no_grad()
    def remove_weight_norm(self) -> None:
        """Replace (weight_g, weight_v) by the plain ``weight`` in place (idempotent)."""
        if self.folded:
            return
        weight = self.current_weight().detach().clone()
        del self.weight_g, self.weight_v
        self.weight = nn.Parameter(weight)


def _accept_parametrized_names(module: WNConv1d, state_dict: dict, prefix: str, *_args) -> None:
    """Load-time hook: rename a parametrized-weight-norm file's keys to weight_g/weight_v."""
    if module.folded:
        return
    for old, new in _PARAM_NAMES.items():
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)


class SnakeBeta(nn.Module):
    """``x + 1/(exp(β)+1e-9) · sin²(exp(α)·x)`` with per-channel log-scale α, β."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.exp()[None, :, None]  # (1, C, 1)
        beta = self.beta.exp()[None, :, None]
        return x + (1.0 / (beta + SNAKE_EPS)) * torch.sin(x * alpha).pow(2)


class UpSample1d(nn.Module):
    """x2 upsampling: replicate-pad 5, zero-stuff + low-pass (transposed conv), crop 15."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.register_buffer("filter", _filter_buffer())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = FILTER_TAPS // 2 - 1  # 5
        crop = pad * 2 + (FILTER_TAPS - 2) // 2  # 15
        x = F.pad(x, (pad, pad), mode="replicate")  # (B, C, T+10)
        w = self.filter.expand(self.channels, 1, FILTER_TAPS)
        x = 2.0 * F.conv_transpose1d(x, w, stride=2, groups=self.channels)  # (B, C, 2T+30)
        return x[..., crop:-crop]  # (B, C, 2T)


class LowPassFilter1d(nn.Module):
    """Replicate-pad (5, 6), then the low-pass with stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.register_buffer("filter", _filter_buffer())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (FILTER_TAPS // 2 - 1, FILTER_TAPS // 2), mode="replicate")  # (B, C, 2T+11)
        w = self.filter.expand(self.channels, 1, FILTER_TAPS)
        return F.conv1d(x, w, stride=2, groups=self.channels)  # (B, C, T)


class DownSample1d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.lowpass = LowPassFilter1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class Activation1d(nn.Module):
    """Anti-aliased SnakeBeta: up x2 -> act -> down x2 (shape preserved)."""

    def __init__(self, channels: int):
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = UpSample1d(channels)
        self.downsample = DownSample1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


class AMPBlock1(nn.Module):
    """For each dilation d: ``x += c2(a2(c1(a1(x))))``; c1 dilated by d, c2 undilated."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.convs1 = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, dilation=d, padding=d * pad)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, padding=pad) for _ in dilations
        )
        self.activations = nn.ModuleList(Activation1d(channels) for _ in range(2 * len(dilations)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2, strict=True)):
            a1, a2 = self.activations[2 * i], self.activations[2 * i + 1]
            x = x + c2(a2(c1(a1(x))))  # (B, C, T)
        return x


class BigVGAN(nn.Module):
    """The generator: conv_pre -> [ups.i, mean of AMP blocks] x stages -> act -> conv_post."""

    def __init__(self, cfg: BigVGANConfig):
        super().__init__()
        if len(cfg.upsample_rates) != len(cfg.upsample_kernel_sizes):
            raise ValueError(
                f"upsample_rates {cfg.upsample_rates} and upsample_kernel_sizes "
                f"{cfg.upsample_kernel_sizes} must have the same length"
            )
        ch0 = cfg.upsample_initial_channel
        if ch0 // 2 ** len(cfg.upsample_rates) < 1:
            raise ValueError(
                f"upsample_initial_channel {ch0} is too small for {len(cfg.upsample_rates)} "
                "stages (channels halve per stage)"
            )
        self.cfg = cfg
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.conv_pre = WNConv1d(cfg.num_mels, ch0, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)):
            ch_in, ch = ch0 // 2**i, ch0 // 2 ** (i + 1)
            up = WNConv1d(ch_in, ch, k, stride=u, padding=(k - u) // 2, transposed=True)
            self.ups.append(nn.ModuleList([up]))
        for i in range(len(cfg.upsample_rates)):
            ch = ch0 // 2 ** (i + 1)
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True):
                self.resblocks.append(AMPBlock1(ch, k, tuple(d)))
        ch = ch0 // 2 ** len(cfg.upsample_rates)
        self.activation_post = Activation1d(ch)
        self.conv_post = WNConv1d(ch, 1, 7, padding=3, bias=cfg.use_bias_at_final)

    @property
    def folded(self) -> bool:
        return all(m.folded for m in self.modules() if isinstance(m, WNConv1d))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, n_mels, M) -> waveform (B, 1, M·hop) in [-1, 1]."""
        x = self.conv_pre(mel)  # (B, ch0, M)
        for i, up in enumerate(self.ups):
            x = up[0](x)  # (B, ch0/2^(i+1), T·u_i)
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / self.num_kernels
        x = self.conv_post(self.activation_post(x))  # (B, 1, W)
        if self.cfg.use_tanh_at_final:
            return torch.tanh(x)
        return x.clamp(-1.0, 1.0)

    @torch.no_grad()
    def remove_weight_norm(self) -> BigVGAN:
        """Fold every weight-normed conv into a plain weight in place; returns self."""
        for m in self.modules():
            if isinstance(m, WNConv1d):
                m.remove_weight_norm()
        return self
