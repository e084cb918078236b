"""Stage ``encoders``: CLIP (visual + text) and Synchformer, pre-trained on targets the world
gives for free, then frozen for the flow stage.

Why auxiliary targets rather than end-to-end training with the flow: the encoders run once
per clip, the flow many times; training them through the flow would cost several times the
flow's own step, and the world states exactly what they should see. The video towers regress
their targets directly in feature space (so the flow reads them from fixed directions; linear
heads on top, as before, learned almost nothing in the budget: a linear probe found no contact
timing in those features, docs/default_model.md); the text tower keeps a linear head:

- clip visual, per frame, unit-norm features vs :func:`~v2a_export.train.data.clip_targets`:
  how close each material is to a sounding contact (``exp(-(dt / 25 ms)^2)``), the ambience the
  background shows, a constant;
- Synchformer, per token (its own two frames), vs
  :func:`~v2a_export.train.data.sync_targets`: which materials sound in it and where in its
  80 ms (squared error, tokens with a contact weighted ``sync_event_weight``); with the
  ``frames`` sync alignment this reaches each latent frame undisturbed — the timing the flow
  uses;
- text, mean of the 77 token features, linear head: which materials and which ambience a
  caption names (random captions, noun-only negative prompts and the empty string included).

Frames are rendered at the decoder's instants and perturbed like a decode
(:func:`v2a_export.train.data.augment_frames`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from v2a_runtime import world
from v2a_runtime.media import sync_segments
from v2a_runtime.tokenizer import Tokenizer
from v2a_runtime.world.spec import AMBIENCE_NAMES, MATERIAL_NAMES

from v2a_export.models.clip import CLIP
from v2a_export.models.configs import ModelConfig
from v2a_export.models.synchformer import Synchformer

from ..data import (
    ambience_index,
    augment_frames,
    clip_targets,
    material_hot,
    render_streams,
    sync_targets,
)
from ..recipe import EncoderRecipe
from ..state import optimizer_step, run_loop, set_lr, step_generators, warmup_cosine
from .data import load_data

N_MAT, N_AMB = len(MATERIAL_NAMES), len(AMBIENCE_NAMES)


def checkpoint_path(out: Path) -> Path:
    return Path(out) / "encoders.pt"


class Heads(nn.Module):
    """The text tower's auxiliary linear head (not part of the shipped model); the video
    towers regress their targets directly in feature space."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.text = nn.Linear(config.clip_text.width, N_MAT + N_AMB)


def random_caption(rng: np.random.Generator) -> tuple[str, np.ndarray, int]:
    """A caption in the world's grammar: materials (0-4, any order) and an ambience."""
    k = int(rng.integers(0, N_MAT + 1))
    mats = [MATERIAL_NAMES[i] for i in rng.permutation(N_MAT)[:k]]
    amb = AMBIENCE_NAMES[int(rng.integers(N_AMB))]
    return world.caption(mats, amb), material_hot(mats), ambience_index(amb)


def _pick_frames(targets: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Half of the frames near events, half uniform."""
    near = np.flatnonzero(targets.max(axis=1) > 0.05)
    k = min(n // 2, len(near))
    picked = list(rng.choice(near, size=k, replace=False)) if k else []
    rest = rng.choice(len(targets), size=n - k, replace=False)
    return np.asarray(picked + list(rest))


def _pick_segments(targets: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Half of the segments with a contact (when there are), half uniform; (S, 8, 5) targets."""
    has = np.flatnonzero(targets[..., :N_MAT].max(axis=(1, 2)) > 0)
    k = min(n // 2, len(has))
    picked = list(rng.choice(has, size=k, replace=False)) if k else []
    rest = rng.choice(len(targets), size=min(n - k, len(targets)), replace=False)
    return np.asarray(picked + list(rest))


def run_encoders(out: Path, recipe: EncoderRecipe, config: ModelConfig, seed: int,
                 duration: float, *, checkpoint_seconds: float, on_step: Callable | None = None
                 ) -> tuple[CLIP, Synchformer]:
    records, _, _, _ = load_data(out)
    torch.manual_seed(seed + 2)
    clip, sync, heads = CLIP(config.clip_vision, config.clip_text), Synchformer(
        config.synchformer), Heads(config)
    tok = Tokenizer.load()
    towers = [list(clip.visual.parameters()), list(sync.parameters()),
              [p for n, p in clip.named_parameters() if not n.startswith("visual.")]
              + list(heads.parameters())]  # clip visual, Synchformer, text tower + its head
    params = [p for t in towers for p in t]
    opt = torch.optim.Adam(params, lr=recipe.lr, betas=(0.9, 0.99))
    width_c, width_s = config.clip_vision.embed_dim, config.synchformer.embed_dim

    def step(i: int) -> dict:
        rng, _ = step_generators(seed, "encoders", i)
        set_lr(opt, warmup_cosine(i, recipe.steps, recipe.lr, min(100, recipe.steps // 8 + 1), 0.6))
        frames, f_tgt, segs, s_tgt = [], [], [], []
        for j in rng.choice(len(records), size=recipe.clips, replace=False):
            rec = records[j]
            st = render_streams(world.make_scene(rec.seed, duration), config)
            tg = clip_targets(rec, st.clip_times, width_c)  # (F, Dc)
            pick = _pick_frames(tg[:, :N_MAT], recipe.frames, rng)
            frames.append(augment_frames(st.clip[pick], rng))
            f_tgt.append(tg[pick])
            seg = sync_segments(augment_frames(st.sync, rng))  # (S, 16, H, W, 3)
            tt = sync_targets(rec, st.sync_times, seg.shape[0], width_s)  # (S, 8, Ds)
            sel = _pick_segments(tt, recipe.segments, rng)
            segs.append(seg[sel])
            s_tgt.append(tt[sel])
        # clip tower: its unit-norm features regress the unit-norm targets
        cf = clip.encode_frames_u8(torch.from_numpy(np.concatenate(frames)))  # (n, Dc)
        loss_c = (cf - torch.from_numpy(np.concatenate(f_tgt))).square().sum(1).mean()
        # sync tower: its features regress the per-token targets, tokens with a contact weighted
        sf = sync.encode_segments_u8(torch.from_numpy(np.concatenate(segs)))  # (n, 8, Ds)
        s_t = torch.from_numpy(np.concatenate(s_tgt))  # (n, 8, Ds)
        w = 1 + (recipe.sync_event_weight - 1) * (s_t[..., :N_MAT].amax(-1) > 0).float()
        loss_s = ((sf - s_t).square().sum(-1) * w).mean()
        caps = [random_caption(rng) for _ in range(recipe.captions)]
        caps[0] = ("", np.zeros(N_MAT, dtype=np.float32), ambience_index("none"))
        ids = torch.from_numpy(tok([c for c, _, _ in caps]))
        tf = clip.encode_text(ids).mean(dim=1)  # (n, Dt)
        out_t = heads.text(tf)
        loss_t = F.binary_cross_entropy_with_logits(
            out_t[:, :N_MAT], torch.from_numpy(np.stack([m for _, m, _ in caps]))
        ) + F.cross_entropy(out_t[:, N_MAT:], torch.tensor([a for _, _, a in caps]))
        loss = loss_c + loss_s + loss_t
        optimizer_step(opt, loss, params, 1.0, groups=towers)
        return {"clip": float(loss_c.detach()), "sync": float(loss_s.detach()),
                "text": float(loss_t.detach())}

    run_loop("encoders", checkpoint_path(out), recipe.steps,
             {"clip": clip, "synchformer": sync, "heads": heads, "opt": opt}, step,
             checkpoint_seconds=checkpoint_seconds, on_step=on_step)
    return clip.eval(), sync.eval()


def load_trained_encoders(out: Path, config: ModelConfig) -> tuple[CLIP, Synchformer]:
    saved = torch.load(checkpoint_path(out), weights_only=False)
    clip, sync = CLIP(config.clip_vision, config.clip_text), Synchformer(config.synchformer)
    clip.load_state_dict(saved["clip"])
    sync.load_state_dict(saved["synchformer"])
    return clip.eval(), sync.eval()
