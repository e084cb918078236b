"""Stage ``flow``: the MMAudio flow network on precomputed features and VAE latents.

Conditional flow matching as MMAudio (spec/mmaudio.md §1.7-1.8): t ~ logit-normal(0, 1),
``x_t = (1 − t)·x0 + t·x1`` with x0 ~ N(0, I) and x1 the normalised posterior mean, target
``x1 − x0``, MSE. Conditioning per example:

- caption dropout (``text_drop``): the text becomes ``empty_string_feat`` (the frozen text
  tower's encoding of ""), the target keeps the picture's ambience;
- ambience swap (``swap``): the caption names the clip's ``alt_ambience`` and the target is the
  soundtrack over that ambience, so a non-empty prompt decides the ambience over the picture;
  a caption that names no ambience means none. With that, the unconditional branch's negative
  prompt ("rain") and a conditional prompt without it pull the sample apart under CFG;
- noun-only captions (``noun_only``): just the ambience noun, the shape of a negative prompt;
- video dropout: clip and sync features replaced by the learned nulls, independently (v2).

The per-frame MSE is weighted ``event_weight`` around true events (1 elsewhere): the minimiser
is the same velocity field, but the small network spends more of itself on the attacks.

Initialisation as upstream ``MMAudio.initialize_weights``: Xavier-uniform linears with zero
bias, zero adaLN modulation and output layer, zero null features and sync position embedding.
Windows: each step trains on crops of the stored 8 s clips, ``recipe.crops`` sync segments long
(drawn per step; every crop starts on a segment boundary, so its latents and features are
slices, :class:`Crop`): shorter sequences make a step about half as expensive at 4 s, and the
relative positions (RoPE) and the sync alignment carry over to the full window.

EMA weights are the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from v2a_runtime import world
from v2a_runtime.sequence import SEGMENT_FRAMES, SEGMENT_STRIDE
from v2a_runtime.tokenizer import Tokenizer
from v2a_runtime.world.spec import AMBIENCES

from v2a_export.models.clip import CLIP
from v2a_export.models.configs import ModelConfig
from v2a_export.models.flow import MMAudio

from ..data import ClipRecord
from ..recipe import FlowRecipe
from ..state import EMA, optimizer_step, run_loop, set_lr, step_generators, warmup_cosine
from .data import load_data
from .features import lengths, load_features


def checkpoint_path(out: Path) -> Path:
    return Path(out) / "flow.pt"


@torch.no_grad()
def init_flow(flow: MMAudio) -> MMAudio:
    """Upstream's initialisation (``networks.py: initialize_weights``)."""
    for m in flow.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    blocks = [b for jb in flow.joint_blocks for b in (jb.latent_block, jb.clip_block,
                                                        jb.text_block)]
    for b in [*blocks, *flow.fused_blocks, flow.final_layer]:
        nn.init.zeros_(b.adaLN_modulation[-1].weight)
        nn.init.zeros_(b.adaLN_modulation[-1].bias)
    nn.init.zeros_(flow.final_layer.conv.weight)
    nn.init.zeros_(flow.final_layer.conv.bias)
    for p in (flow.sync_pos_emb, flow.empty_clip_feat, flow.empty_sync_feat):
        nn.init.zeros_(p)
    return flow


class TextCache:
    """Frozen text features (77, Dt) per caption, computed once each."""

    def __init__(self, clip: CLIP, tokenizer: Tokenizer):
        self.clip, self.tokenizer, self.cache = clip, tokenizer, {}

    @torch.no_grad()
    def __call__(self, caption: str) -> torch.Tensor:
        if caption not in self.cache:
            ids = torch.from_numpy(self.tokenizer([caption]))
            self.cache[caption] = self.clip.encode_text(ids)[0]  # (77, Dt)
        return self.cache[caption]


def choose_condition(rec: ClipRecord, recipe: FlowRecipe, rng: np.random.Generator
                     ) -> tuple[str, int]:
    """(caption, soundtrack index: 0 own ambience, 1 alt_ambience) for one example."""
    u = rng.random()
    if u < recipe.text_drop:
        return "", 0
    u -= recipe.text_drop
    if u < recipe.noun_only:
        v = int(rng.integers(2))
        amb = rec.alt_ambience if v else rec.ambience
        return AMBIENCES[amb].noun or "", v
    u -= recipe.noun_only
    if u < recipe.swap:
        return world.caption(rec.materials, rec.alt_ambience), 1
    return world.caption(rec.materials, rec.ambience), 0


EVENT_SPAN = (0.05, 0.10)  # s before / after a true event whose latent frames get event_weight


def event_weights(rec: ClipRecord, latent: int, weight: float, latent_rate: float
                  ) -> np.ndarray:
    """float32 (L,): ``weight`` for latent frames (centres) near a true event, 1 elsewhere."""
    centres = (np.arange(latent) + 0.5) / latent_rate
    near = np.zeros(latent, dtype=bool)
    for t in rec.event_times:
        near |= (centres > t - EVENT_SPAN[0]) & (centres < t + EVENT_SPAN[1])
    return np.where(near, weight, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Crop:
    """A training window of ``segments`` sync segments inside the stored clips: it starts on a
    segment boundary (stride 0.32 s), where the latent, clip and sync grids all start a whole
    step, so its features and latents are slices of the stored ones."""

    segments: int
    latent: int  # L of the window
    clip: int  # Lc
    sync: int  # Ls
    latent_step: int  # latent frames per segment stride (10 for tiny)
    clip_step: int  # clip frames per segment stride (8 at 25 fps)

    @classmethod
    def of(cls, config: ModelConfig, segments: int) -> Crop:
        r = config.rates
        stride = SEGMENT_STRIDE / r.sync_fps  # s between segment starts
        latent_step, clip_step = stride * r.latent_rate, stride * r.clip_fps
        if latent_step % 1 or clip_step % 1:
            raise ValueError(f"{config.name}: a segment stride ({stride} s) is not a whole number"
                             f" of latent ({latent_step}) and clip ({clip_step}) frames; train "
                             "without crops")
        n = r.lengths((SEGMENT_FRAMES + SEGMENT_STRIDE * (segments - 1)) / r.sync_fps)
        return cls(segments, n.latent, n.clip_frames, n.sync_tokens, int(latent_step),
                   int(clip_step))


def new_flow(config: ModelConfig, stats: dict, empty_text: torch.Tensor, seed: int) -> MMAudio:
    torch.manual_seed(seed + 3)
    flow = init_flow(MMAudio.from_config(config.flow, config.rates))
    with torch.no_grad():
        flow.latent_mean.copy_(torch.tensor(stats["mean"]).view(1, 1, -1))
        flow.latent_std.copy_(torch.tensor(stats["std"]).view(1, 1, -1))
        flow.empty_string_feat.copy_(empty_text)
    return flow


def run_flow(out: Path, recipe: FlowRecipe, config: ModelConfig, seed: int, duration: float,
             clip: CLIP, *, checkpoint_seconds: float, on_step: Callable | None = None
             ) -> MMAudio:
    records, _, _, _ = load_data(out)
    clip_f, sync_f, latents, stats = load_features(out)
    texts = TextCache(clip.eval(), Tokenizer.load())
    flow = new_flow(config, stats, texts(""), seed).train()
    ema = EMA(flow, recipe.ema)
    trainable = [p for p in flow.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=recipe.lr, betas=(0.9, 0.99), weight_decay=0.0)
    seq = lengths(config, duration)
    full = seq.sync_segments
    crops = {n: Crop.of(config, n) for n in (recipe.crops or (full,))}
    if max(crops) > full:
        raise ValueError(f"flow crops {sorted(crops)} segments exceed the clips' {full}")
    indices = {n: flow.sync_index(c.sync, c.latent) for n, c in crops.items()}
    mean, std = flow.latent_mean.detach(), flow.latent_std.detach()
    weights = [event_weights(r, seq.latent, recipe.event_weight, config.latent_rate)
               for r in records]  # (L,) each

    def step(i: int) -> dict:
        rng, gen = step_generators(seed, "flow", i)
        set_lr(opt, warmup_cosine(i, recipe.steps, recipe.lr, recipe.warmup, recipe.decay_from))
        idx = rng.choice(len(records), size=recipe.batch, replace=False)
        conds = [choose_condition(records[j], recipe, rng) for j in idx]
        crop = crops[int(rng.choice(sorted(crops)))]
        first = rng.integers(0, full - crop.segments + 1, size=recipe.batch)  # segment
        la = [slice(m * crop.latent_step, m * crop.latent_step + crop.latent) for m in first]
        ca = [slice(m * crop.clip_step, m * crop.clip_step + crop.clip) for m in first]
        sa = [slice(8 * m, 8 * m + crop.sync) for m in first]
        x1 = torch.from_numpy(np.stack([latents[j, v, a] for j, (_, v), a in
                                        zip(idx, conds, la, strict=True)]))  # (B, L, C)
        x1 = (x1 - mean) / std  # (B, L, C)
        text = torch.stack([texts(c) for c, _ in conds])  # (B, 77, Dt)
        cf = torch.from_numpy(np.stack([clip_f[j, a] for j, a in zip(idx, ca, strict=True)]
                                       ).astype(np.float32))  # (B, Lc, Dc)
        sf = torch.from_numpy(np.stack([sync_f[j, a] for j, a in zip(idx, sa, strict=True)]
                                       ).astype(np.float32))  # (B, Ls, Ds)
        drop_c = torch.from_numpy(rng.random(recipe.batch) < recipe.clip_drop)[:, None, None]
        drop_s = torch.from_numpy(rng.random(recipe.batch) < recipe.sync_drop)[:, None, None]
        cf = torch.where(drop_c, flow.empty_clip_feat[None].expand_as(cf), cf)  # (B, Lc, Dc)
        sf = torch.where(drop_s, flow.empty_sync_feat[None].expand_as(sf), sf)  # (B, Ls, Ds)
        t = torch.sigmoid(torch.randn(recipe.batch, generator=gen))  # logit-normal (B,)
        x0 = torch.randn(x1.shape, generator=gen)
        tt = t[:, None, None]
        xt = (1 - tt) * x0 + tt * x1
        cond = flow.project_conditions(cf, sf, text, indices[crop.segments])
        v = flow.predict_flow(xt, t, cond)
        w = torch.from_numpy(np.stack([weights[j][a] for j, a in zip(idx, la, strict=True)]))
        loss = ((v - (x1 - x0)).square().mean(dim=2) * w).sum() / w.sum()
        optimizer_step(opt, loss, trainable, 1.0)
        ema.update(flow)
        return {"loss": float(loss.detach())}

    run_loop("flow", checkpoint_path(out), recipe.steps, {"flow": flow, "opt": opt, "ema": ema},
             step, checkpoint_seconds=checkpoint_seconds, on_step=on_step)
    return ema.copy_to(flow).eval()


def load_trained_flow(out: Path, config: ModelConfig) -> MMAudio:
    saved = torch.load(checkpoint_path(out), weights_only=False)
    flow = MMAudio.from_config(config.flow, config.rates)
    flow.load_state_dict(saved["flow"])
    ema = EMA(flow, 0.0)
    ema.load_state_dict(saved["ema"])
    return ema.copy_to(flow).eval()
