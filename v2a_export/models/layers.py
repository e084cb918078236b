"""Building blocks of the MMAudio flow network (spec/mmaudio.md §2.1; fixtures README "flow").

Attribute names equal the checkpoint keys. Sequences are channels-last, ``(B, N, H)``.
Everything that depends only on sizes (time frequencies, RoPE tables) is computed in float32
from those sizes when called, never stored as buffers, so a network built on the ``meta``
device and loaded with ``assign=True`` is complete, and an exported graph computes the tables
for any duration.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROPE_THETA = 10000.0
RMS_EPS = torch.finfo(torch.float32).eps  # nn.RMSNorm(eps=None) in fp32: 1.1920929e-07
LN_EPS = 1e-5
# 2π in two float32 parts for range reduction (Cody & Waite 1980): the high part has 12
# significant bits (3217/512), so k·TWO_PI_HI is exact for |k| < 4096 (angles up to 25,700
# rad); the low part is float32(2π − TWO_PI_HI).
TWO_PI_HI = 6.283203125
TWO_PI_LO = -1.781781975296326e-05


def swiglu_hidden(dim: int, mlp_ratio: float = 4.0, multiple_of: int = 256) -> int:
    """SwiGLU hidden width: ``int(2/3 · int(dim·mlp_ratio))`` rounded up to ``multiple_of``
    (256 for H = 64, 1280 for 448, 2560 for 896)."""
    hidden = int(2 * int(dim * mlp_ratio) / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


class ChannelLastConv1d(nn.Conv1d):
    """Conv1d on ``(B, N, Cin)`` sequences; output ``(B, N, Cout)``."""

    def forward(self, x: Tensor) -> Tensor:
        # contiguous: PyTorch 2.13's oneDNN conv1d on a transposed (strided) input is ~30x
        # slower on CPU than on a contiguous copy; the result is the same to fp32 rounding
        x = x.transpose(1, 2).contiguous()  # (B, Cin, N)
        x = super().forward(x)  # (B, Cout, N)
        return x.transpose(1, 2)  # (B, N, Cout)


class MLP(nn.Module):
    """SwiGLU without biases: ``w2(silu(w1 x) · w3 x)``."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = swiglu_hidden(dim, mlp_ratio)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class ConvMLP(nn.Module):
    """SwiGLU with channel-last convolutions of width ``kernel_size`` (no biases)."""

    def __init__(self, dim: int, kernel_size: int, padding: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = swiglu_hidden(dim, mlp_ratio)
        self.w1 = ChannelLastConv1d(dim, hidden, kernel_size, padding=padding, bias=False)
        self.w2 = ChannelLastConv1d(hidden, dim, kernel_size, padding=padding, bias=False)
        self.w3 = ChannelLastConv1d(dim, hidden, kernel_size, padding=padding, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class RMSNorm(nn.Module):
    """RMSNorm over the last dim with a learnable scale; eps = float32 machine epsilon."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, RMS_EPS)


# --- time embedding --------------------------------------------------------------------------


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of t ∈ [0, 1] (not scaled by 1000), then Linear → SiLU → Linear.

    v1: ``freq_dim`` 256, ``max_period`` 10000 (frequencies 1 … 1e-4). v2: ``freq_dim`` = H,
    ``max_period`` 1 (frequencies 1e4 … ~1). cos comes first.
    """

    def __init__(self, dim: int, freq_dim: int, max_period: float):
        super().__init__()
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        # A plain CPU constant, not a buffer: it exists even when the module is built on
        # ``meta``, survives ``load_state_dict(assign=True)``, and an exported graph carries
        # torch's exact values (another library's ``pow`` differs by an ulp in some entries).
        self._freqs = time_frequencies(freq_dim, max_period)

    def frequencies(self, device: torch.device | None = None) -> Tensor:
        """(freq_dim/2,) float32, exactly the reference buffer (:func:`time_frequencies`)."""
        return self._freqs.to(device)

    def sinusoid(self, t: Tensor) -> Tensor:
        """t (B,) → (B, freq_dim) = cat(cos(t·f), sin(t·f)), the argument a float32 product
        (up to 1e4 rad in v2 models), reduced to [−π, π] before cos/sin (:func:`reduce_angle`)."""
        args = t[:, None].float() * self.frequencies(t.device)[None]  # (B, F/2)
        args = reduce_angle(args)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, F)

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.sinusoid(t).to(t.dtype))  # (B, H)


# --- rotary position embedding ---------------------------------------------------------------


def time_frequencies(freq_dim: int, max_period: float) -> Tensor:
    """(freq_dim/2,) float32 time-embedding frequencies on the CPU, formed like the reference
    buffer: the torch float32 ``pow`` of ``10000 ** (arange(0, F, 2) / F)``, inverted, then
    scaled by ``1e4 / max_period`` (v2: up to 1e4, where one ulp of a frequency visibly moves
    the sinusoid)."""
    exponent = torch.arange(0, freq_dim, 2, dtype=torch.float32, device="cpu")
    freqs = 1.0 / (10000 ** (exponent / freq_dim))
    return (10000 / max_period) * freqs


def rope_frequencies(head_dim: int) -> Tensor:
    """(head_dim/2,) float32 ``1 / 10000 ** (arange(0, hd, 2) / hd)`` on the CPU."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float32, device="cpu")
    return 1.0 / (ROPE_THETA ** (exponent / head_dim))


def rope_table(length: int, freqs: Tensor, scale: float | Tensor = 1.0) -> Tensor:
    """(length, hd/2, 2) float32 table of (cos, sin)(n · (f_i · scale)) for the base
    frequencies ``freqs`` (hd/2,) (:func:`rope_frequencies`).

    The frequencies are scaled first (float32), then multiplied by the position, as in the
    reference; the angle is then reduced to [−π, π] (:func:`reduce_angle`), so the table is
    the reference's to 1.4e-7 rather than bit for bit. ``scale`` is 1 for the latent stream and
    L/Lc for the clip stream ("aligned RoPE"); it may be a 0-d float32 tensor so an exported
    graph computes it from sizes.
    """
    freqs = freqs * scale  # (hd/2,)
    pos = torch.arange(length, dtype=torch.float32, device=freqs.device)  # (N,)
    angle = reduce_angle(pos[:, None] * freqs[None, :])  # (N, hd/2); up to N rad before
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)  # (N, hd/2, 2)


def reduce_angle(x: Tensor) -> Tensor:
    """The float32 angles ``x`` moved by whole turns to about [−π, π]: ``x − k·2π`` with
    k = round(x/2π) (Cody–Waite, 2π in two parts: ``x − k·TWO_PI_HI`` is exact and
    ``k·TWO_PI_LO`` rounds by ~1e-9 for |x| < 25,700 rad).

    cos/sin of the result are within 1.4e-7 of cos/sin of ``x`` (the rounding of the reduced
    angle itself; 2e5 random angles below 25,000 rad against float64, where torch's cos/sin of
    ``x`` are within 3.6e-8), and no cos/sin kernel sees an argument beyond π. That matters on
    GPUs: fast-math sin/cos are accurate on [−π, π] only (CUDA's ``__sinf``: absolute error
    2^−21.41 there, "larger otherwise"), and the time embedding of v2 models reaches 1e4 rad,
    a RoPE table L rad.
    """
    k = torch.round(x * (1.0 / (2.0 * math.pi)))
    return (x - k * TWO_PI_HI) - k * TWO_PI_LO


def apply_rope(x: Tensor, rope: Tensor) -> Tensor:
    """Rotate adjacent pairs (2i, 2i+1) of x (B, heads, N, hd) by the table (N, hd/2, 2):
    ``y[2i] = cos·x[2i] − sin·x[2i+1]``, ``y[2i+1] = sin·x[2i] + cos·x[2i+1]`` (float32)."""
    xf = x.float()
    pairs = xf.unflatten(-1, (-1, 2))  # (B, heads, N, hd/2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]  # (B, heads, N, hd/2)
    cos, sin = rope[..., 0], rope[..., 1]  # (N, hd/2)
    out = torch.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], dim=-1)  # (B, h, N, hd/2, 2)
    return out.flatten(-2).to(x.dtype)  # (B, heads, N, hd)


def rope_as_rotation_matrices(rope: Tensor) -> Tensor:
    """(N, hd/2, 2) table → the reference's (1, N, hd/2, 2, 2) ``[[cos, −sin], [sin, cos]]``."""
    cos, sin = rope[..., 0], rope[..., 1]
    rows = [torch.stack([cos, -sin], dim=-1), torch.stack([sin, cos], dim=-1)]
    return torch.stack(rows, dim=-2)[None]  # (1, N, hd/2, 2, 2)


# --- attention blocks ------------------------------------------------------------------------


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Unmasked softmax attention; (B, heads, N, hd) → (B, N, heads·hd)."""
    out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, hd)
    return out.transpose(1, 2).flatten(2)  # (B, N, H)


class SelfAttention(nn.Module):
    """The q/k/v projection of one stream; qkv output channels are interleaved per
    (head, dim): channel ``(h·hd + d)·3 + j`` is q, k, v for j = 0, 1, 2."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.q_norm = RMSNorm(dim // num_heads)
        self.k_norm = RMSNorm(dim // num_heads)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, N, H) → q, k, v each (B, heads, N, hd); q and k RMS-normalised."""
        qkv = self.qkv(x).unflatten(-1, (self.num_heads, -1, 3))  # (B, N, heads, hd, 3)
        qkv = qkv.permute(4, 0, 2, 1, 3)  # (3, B, heads, N, hd)
        q, k, v = qkv.unbind(0)
        return self.q_norm(q), self.k_norm(k), v


class MMDitSingleBlock(nn.Module):
    """adaLN-modulated attention + SwiGLU block of one stream.

    ``c`` is (B, 1, H) (global condition) or (B, N, H) (per-token, latent stream). A
    ``pre_only`` block only produces q/k/v (its adaLN is H → 2H) and returns its input.
    ``kernel_size`` 1 makes ``linear1``/``ffn`` Linear/MLP, otherwise Conv1d/ConvMLP.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        pre_only: bool = False,
        kernel_size: int = 3,
        padding: int = 1,
    ):
        super().__init__()
        self.pre_only = pre_only
        self.attn = SelfAttention(dim, num_heads)
        if not pre_only:
            if kernel_size == 1:
                self.linear1 = nn.Linear(dim, dim)
                self.ffn = MLP(dim, mlp_ratio)
            else:
                self.linear1 = ChannelLastConv1d(dim, dim, kernel_size, padding=padding)
                self.ffn = ConvMLP(dim, kernel_size, padding, mlp_ratio)
        n_mod = 2 if pre_only else 6
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, n_mod * dim))

    def pre_attention(
        self, x: Tensor, c: Tensor, rope: Tensor | None
    ) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, ...]]:
        """→ (q, k, v) and the post-attention modulation (gate_msa, shift/scale/gate_mlp)."""
        mod = self.adaLN_modulation(c).chunk(2 if self.pre_only else 6, dim=-1)
        shift_msa, scale_msa = mod[0], mod[1]  # (B, 1 or N, H)
        h = modulate(F.layer_norm(x, (x.shape[-1],), eps=LN_EPS), shift_msa, scale_msa)
        q, k, v = self.attn(h)  # (B, heads, N, hd)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return (q, k, v), tuple(mod[2:])

    def post_attention(self, x: Tensor, attn_out: Tensor, mod: tuple[Tensor, ...]) -> Tensor:
        if self.pre_only:
            return x
        gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        x = x + self.linear1(attn_out) * gate_msa  # (B, N, H)
        h = modulate(F.layer_norm(x, (x.shape[-1],), eps=LN_EPS), shift_mlp, scale_mlp)
        return x + self.ffn(h) * gate_mlp  # (B, N, H)

    def forward(self, x: Tensor, c: Tensor, rope: Tensor | None) -> Tensor:
        qkv, mod = self.pre_attention(x, c, rope)
        return self.post_attention(x, attention(*qkv), mod)


class JointBlock(nn.Module):
    """Joint attention over [latent (N) ; clip (Nc) ; text (T)] with one block per stream.
    The latent stream is conditioned per token (extended_c), clip and text on global_c."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, pre_only: bool = False):
        super().__init__()
        self.pre_only = pre_only
        self.latent_block = MMDitSingleBlock(dim, num_heads, mlp_ratio, False, 3, 1)
        self.clip_block = MMDitSingleBlock(dim, num_heads, mlp_ratio, pre_only, 3, 1)
        self.text_block = MMDitSingleBlock(dim, num_heads, mlp_ratio, pre_only, 1, 0)

    def forward(
        self,
        latent: Tensor,  # (B, N, H)
        clip: Tensor,  # (B, Nc, H)
        text: Tensor,  # (B, T, H)
        global_c: Tensor,  # (B, 1, H)
        extended_c: Tensor,  # (B, N, H)
        latent_rope: Tensor,  # (N, hd/2, 2)
        clip_rope: Tensor,  # (Nc, hd/2, 2)
    ) -> tuple[Tensor, Tensor, Tensor]:
        x_qkv, x_mod = self.latent_block.pre_attention(latent, extended_c, latent_rope)
        c_qkv, c_mod = self.clip_block.pre_attention(clip, global_c, clip_rope)
        t_qkv, t_mod = self.text_block.pre_attention(text, global_c, None)
        joint = [torch.cat([x_qkv[i], c_qkv[i], t_qkv[i]], dim=2) for i in range(3)]
        out = attention(*joint)  # (B, N + Nc + T, H)
        n, nc = latent.shape[1], clip.shape[1]
        latent = self.latent_block.post_attention(latent, out[:, :n], x_mod)
        if not self.pre_only:
            clip = self.clip_block.post_attention(clip, out[:, n : n + nc], c_mod)
            text = self.text_block.post_attention(text, out[:, n + nc :], t_mod)
        return latent, clip, text


class FinalLayer(nn.Module):
    """adaLN (shift, scale) from the global condition, LayerNorm, Conv1d k7 H → C."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.conv = ChannelLastConv1d(dim, out_dim, 7, padding=3)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)  # (B, 1, H) each
        x = modulate(F.layer_norm(x, (x.shape[-1],), eps=LN_EPS), shift, scale)
        return self.conv(x)  # (B, N, C)
