"""The MMAudio flow network (``mmaudio/model/networks.py:MMAudio``), v1 and v2.

Attribute names equal the official checkpoint keys (fixtures/mmaudio/keys/mmaudio_*.json).
The network is stateless with respect to duration: sequence lengths come from the inputs, and
the RoPE tables and the time sinusoid are computed in float32 from sizes when needed.

Two entry points map one to one onto the exported graphs of docs/contract.md:

- :meth:`MMAudio.conditioner`: everything independent of t and x, for [cond; uncond];
- :meth:`MMAudio.denoiser`: one velocity evaluation from precomputed conditions.

The reference-style methods (:meth:`preprocess_conditions`, :meth:`get_empty_conditions`,
:meth:`predict_flow`, :meth:`ode_wrapper`, :meth:`unnormalize`) are thin layers over those two.

Sync → latent alignment: upstream resizes the projected sync tokens with
``F.interpolate(mode='nearest-exact')``. Here it is a gather with the index from
:func:`v2a_runtime.sequence.sync_index` (see there for the exact float32 formula).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from v2a_runtime.sequence import TOKENS_PER_SEGMENT, Rates, sync_index

from v2a_export.models.configs import FlowConfig
from v2a_export.models.layers import (
    MLP,
    ChannelLastConv1d,
    ConvMLP,
    FinalLayer,
    JointBlock,
    MMDitSingleBlock,
    TimestepEmbedder,
    rope_frequencies,
    rope_table,
)


@dataclass(frozen=True)
class Conditions:
    """Projected conditions of one CFG branch (upstream ``PreprocessedConditions``)."""

    clip_f: Tensor  # (B, Lc, H)
    sync_f: Tensor  # (B, L, H), already gathered to latent length
    text_f: Tensor  # (B, T, H)
    clip_f_c: Tensor  # (B, H)
    text_f_c: Tensor  # (B, H)

    def expand(self, batch: int) -> Conditions:
        """Broadcast a batch-1 condition set to ``batch`` rows (views, no copies)."""
        return Conditions(
            self.clip_f.expand(batch, -1, -1),
            self.sync_f.expand(batch, -1, -1),
            self.text_f.expand(batch, -1, -1),
            self.clip_f_c.expand(batch, -1),
            self.text_f_c.expand(batch, -1),
        )


class MMAudio(nn.Module):
    """The flow (velocity) network. Takes explicit widths; see :meth:`from_config`."""

    def __init__(
        self,
        *,
        latent_dim: int,
        clip_dim: int,
        sync_dim: int,
        text_dim: int,
        hidden_dim: int,
        depth: int,
        fused_depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        text_seq_len: int = 77,
        v2: bool = False,
    ):
        super().__init__()
        if hidden_dim % num_heads or (hidden_dim // num_heads) % 2:
            raise ValueError(
                f"hidden_dim {hidden_dim} must split into {num_heads} heads of even width"
            )
        if not 0 < depth - fused_depth:
            raise ValueError(f"depth {depth} must exceed fused_depth {fused_depth} (>= 1 joint)")
        self.latent_dim, self.hidden_dim, self.num_heads = latent_dim, hidden_dim, num_heads
        self.head_dim = hidden_dim // num_heads
        self.text_seq_len, self.v2 = text_seq_len, v2
        self.rates: Rates | None = None  # set by from_config; not a checkpoint key
        self._rope_freqs = rope_frequencies(self.head_dim)  # CPU constant, see TimestepEmbedder
        act = nn.SiLU if v2 else nn.SELU
        H = hidden_dim

        # own parameters, registered in the checkpoint's order
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, TOKENS_PER_SEGMENT, sync_dim))
        self.latent_mean = nn.Parameter(torch.zeros(1, 1, latent_dim), requires_grad=False)
        self.latent_std = nn.Parameter(torch.ones(1, 1, latent_dim), requires_grad=False)
        self.empty_string_feat = nn.Parameter(
            torch.zeros(text_seq_len, text_dim), requires_grad=False
        )
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, clip_dim))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, sync_dim))

        self.audio_input_proj = nn.Sequential(
            ChannelLastConv1d(latent_dim, H, 7, padding=3), act(), ConvMLP(H, 7, 3, mlp_ratio)
        )
        # v2 adds an SiLU after the clip/text Linear, which moves their MLP to index 2
        self.clip_input_proj = nn.Sequential(
            nn.Linear(clip_dim, H), *([nn.SiLU()] if v2 else []), ConvMLP(H, 3, 1, mlp_ratio)
        )
        self.sync_input_proj = nn.Sequential(
            ChannelLastConv1d(sync_dim, H, 7, padding=3), act(), ConvMLP(H, 3, 1, mlp_ratio)
        )
        self.text_input_proj = nn.Sequential(
            nn.Linear(text_dim, H), *([nn.SiLU()] if v2 else []), MLP(H, mlp_ratio)
        )
        self.clip_cond_proj = nn.Linear(H, H)
        self.text_cond_proj = nn.Linear(H, H)
        self.global_cond_mlp = MLP(H, mlp_ratio)
        self.final_layer = FinalLayer(H, latent_dim)
        self.t_embed = TimestepEmbedder(H, H if v2 else 256, 1 if v2 else 10000)
        joint = depth - fused_depth
        self.joint_blocks = nn.ModuleList(
            JointBlock(H, num_heads, mlp_ratio, pre_only=(i == joint - 1)) for i in range(joint)
        )
        self.fused_blocks = nn.ModuleList(
            MMDitSingleBlock(H, num_heads, mlp_ratio, kernel_size=3, padding=1)
            for _ in range(fused_depth)
        )

    @classmethod
    def from_config(cls, cfg: FlowConfig, rates: Rates | None = None) -> MMAudio:
        """The network of ``cfg``; ``rates`` (the variant's, :attr:`ModelConfig.rates`) decide
        which sync token each latent frame reads (MMAudio's resize when None)."""
        net = cls(
            latent_dim=cfg.latent_dim,
            clip_dim=cfg.clip_dim,
            sync_dim=cfg.sync_dim,
            text_dim=cfg.text_dim,
            hidden_dim=cfg.hidden_dim,
            depth=cfg.depth,
            fused_depth=cfg.fused_depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            text_seq_len=cfg.text_seq_len,
            v2=cfg.v2,
        )
        net.rates = rates
        return net

    # --- size-derived tables -----------------------------------------------------------------

    def rope_tables(self, latent_len: int, clip_len: int) -> tuple[Tensor, Tensor]:
        """latent_rope (L, hd/2, 2) and clip_rope (Lc, hd/2, 2), float32. The clip positions
        are scaled by L/Lc (float32(L)/float32(Lc)) to lie on the latent time axis."""
        device = self.latent_mean.device
        freqs = self._rope_freqs.to(device)
        scale = torch.scalar_tensor(latent_len, dtype=torch.float32, device=device) / clip_len
        latent_rope = rope_table(latent_len, freqs)
        clip_rope = rope_table(clip_len, freqs, scale)
        return latent_rope, clip_rope

    def sync_index(self, sync_len: int, latent_len: int) -> Tensor:
        """(L,) int64 source sync token for each latent frame: under :attr:`rates`' sync
        alignment, MMAudio's nearest-exact resize without rates."""
        if self.rates is None:
            idx = sync_index(sync_len, latent_len)
        else:
            idx = self.rates.sync_index(sync_len, latent_len)
        return torch.from_numpy(idx).to(self.latent_mean.device)

    # --- conditioning (independent of t and x) -----------------------------------------------

    def project_conditions(
        self, clip_f: Tensor, sync_f: Tensor, text_f: Tensor, sync_idx: Tensor
    ) -> Conditions:
        """Raw features → projected conditions of one branch.

        clip_f (B, Lc, Dc), sync_f (B, Ls, Ds) with Ls a multiple of 8, text_f (B, T, Dt),
        sync_idx (L,) int64. The batch sizes may differ (a batch-1 null set is broadcast later).
        """
        b_sync, ls, ds = sync_f.shape
        sync = sync_f.unflatten(1, (-1, TOKENS_PER_SEGMENT)) + self.sync_pos_emb  # (B,S,8,Ds)
        sync = sync.flatten(1, 2)  # (B, Ls, Ds)
        clip = self.clip_input_proj(clip_f)  # (B, Lc, H)
        sync = self.sync_input_proj(sync)  # (B, Ls, H)
        text = self.text_input_proj(text_f)  # (B, T, H)
        sync = sync.index_select(1, sync_idx)  # (B, L, H)
        clip_c = self.clip_cond_proj(clip.mean(dim=1))  # (B, H)
        text_c = self.text_cond_proj(text.mean(dim=1))  # (B, H)
        return Conditions(clip, sync, text, clip_c, text_c)

    def null_features(self, clip_len: int, sync_len: int) -> tuple[Tensor, Tensor]:
        """The learned null video features: clip (1, Lc, Dc) and sync (1, Ls, Ds)."""
        clip = self.empty_clip_feat[None].expand(1, clip_len, -1)  # (1, Lc, Dc)
        sync = self.empty_sync_feat[None].expand(1, sync_len, -1)  # (1, Ls, Ds)
        return clip, sync

    def preprocess_conditions(
        self, clip_f: Tensor, sync_f: Tensor, text_f: Tensor, latent_len: int
    ) -> Conditions:
        """The conditional branch for latent length ``latent_len`` (upstream signature plus
        the length that upstream keeps as state)."""
        return self.project_conditions(
            clip_f, sync_f, text_f, self.sync_index(sync_f.shape[1], latent_len)
        )

    def get_empty_conditions(
        self,
        batch: int,
        *,
        clip_len: int,
        sync_len: int,
        latent_len: int,
        negative_text_features: Tensor | None = None,
    ) -> Conditions:
        """The unconditional branch: learned null clip/sync features with the negative prompt's
        text features (B, T, Dt), or the stored ``empty_string_feat`` when none is given."""
        clip, sync = self.null_features(clip_len, sync_len)
        text = (
            self.empty_string_feat[None]
            if negative_text_features is None
            else (negative_text_features)
        )
        c = self.project_conditions(clip, sync, text, self.sync_index(sync_len, latent_len))
        if negative_text_features is None:
            return c.expand(batch)
        return Conditions(
            c.clip_f.expand(batch, -1, -1),
            c.sync_f.expand(batch, -1, -1),
            c.text_f,
            c.clip_f_c.expand(batch, -1),
            c.text_f_c,
        )

    def global_condition(self, cond: Conditions) -> Tensor:
        """(B, H): the t-independent part of global_c."""
        return self.global_cond_mlp(cond.clip_f_c + cond.text_f_c)

    def conditioner(
        self,
        clip_features: Tensor,  # (B, Lc, Dc)
        sync_features: Tensor,  # (B, Ls, Ds)
        text_features: Tensor,  # (B, T, Dt)
        negative_text_features: Tensor,  # (B, T, Dt)
        sync_idx: Tensor,  # (L,) int64
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The ``conditioner`` graph of docs/contract.md: rows [0, B) conditional, [B, 2B)
        unconditional (null video features + negative text).

        Returns clip_tokens (2B, Lc, H), text_tokens (2B, T, H), global_cond (2B, H),
        sync_cond (2B, L, H), latent_rope (L, hd/2, 2), clip_rope (Lc, hd/2, 2).
        """
        batch, clip_len, sync_len = (
            clip_features.shape[0],
            clip_features.shape[1],
            sync_features.shape[1],
        )
        cond = self.project_conditions(clip_features, sync_features, text_features, sync_idx)
        null_clip, null_sync = self.null_features(clip_len, sync_len)
        unc = self.project_conditions(null_clip, null_sync, negative_text_features, sync_idx)
        clip_tokens = torch.cat([cond.clip_f, unc.clip_f.expand(batch, -1, -1)])  # (2B, Lc, H)
        text_tokens = torch.cat([cond.text_f, unc.text_f])  # (2B, T, H)
        sync_cond = torch.cat([cond.sync_f, unc.sync_f.expand(batch, -1, -1)])  # (2B, L, H)
        unc = Conditions(
            unc.clip_f, unc.sync_f, unc.text_f, unc.clip_f_c.expand(batch, -1), unc.text_f_c
        )
        global_cond = torch.cat([self.global_condition(cond), self.global_condition(unc)])
        latent_rope, clip_rope = self.rope_tables(sync_idx.shape[0], clip_len)
        return clip_tokens, text_tokens, global_cond, sync_cond, latent_rope, clip_rope

    # --- one velocity evaluation -------------------------------------------------------------

    def denoiser(
        self,
        x: Tensor,  # (B, L, C)
        t: Tensor,  # (B,)
        clip_tokens: Tensor,  # (B, Lc, H)
        text_tokens: Tensor,  # (B, T, H)
        global_cond: Tensor,  # (B, H)
        sync_cond: Tensor,  # (B, L, H)
        latent_rope: Tensor,  # (L, hd/2, 2)
        clip_rope: Tensor,  # (Lc, hd/2, 2)
    ) -> Tensor:
        """The ``denoiser`` graph of docs/contract.md: velocity (B, L, C) at time t."""
        latent = self.audio_input_proj(x)  # (B, L, H)
        global_c = (self.t_embed(t) + global_cond)[:, None]  # (B, 1, H)
        extended_c = global_c + sync_cond  # (B, L, H)
        clip, text = clip_tokens, text_tokens
        for block in self.joint_blocks:
            latent, clip, text = block(
                latent, clip, text, global_c, extended_c, latent_rope, clip_rope
            )
        for block in self.fused_blocks:
            latent = block(latent, extended_c, latent_rope)
        # upstream conditions the final layer on global_c, not extended_c (its issue #55)
        return self.final_layer(latent, global_c)  # (B, L, C)

    def predict_flow(self, x: Tensor, t: Tensor, cond: Conditions) -> Tensor:
        """Velocity (B, L, C) of x (B, L, C) at t (B,) under one branch's conditions."""
        latent_rope, clip_rope = self.rope_tables(x.shape[1], cond.clip_f.shape[1])
        return self.denoiser(
            x,
            t,
            cond.clip_f,
            cond.text_f,
            self.global_condition(cond),
            cond.sync_f,
            latent_rope,
            clip_rope,
        )

    def ode_wrapper(
        self, t: Tensor, x: Tensor, cond: Conditions, uncond: Conditions, cfg_strength: float
    ) -> Tensor:
        """Classifier-free guided velocity ``w·v_cond + (1−w)·v_uncond`` at scalar time t
        (only the conditional branch when w < 1), as upstream (two passes, not one batch)."""
        t = t * torch.ones(len(x), device=x.device, dtype=x.dtype)  # (B,)
        if cfg_strength < 1.0:
            return self.predict_flow(x, t, cond)
        v_cond = self.predict_flow(x, t, cond)
        return cfg_strength * v_cond + (1 - cfg_strength) * self.predict_flow(x, t, uncond)

    # --- latent statistics -------------------------------------------------------------------

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.latent_mean) / self.latent_std

    def unnormalize(self, x: Tensor) -> Tensor:
        """Model latent (B, L, C) → VAE latent: ``x·latent_std + latent_mean``."""
        return x * self.latent_std + self.latent_mean
