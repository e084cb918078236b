"""Stage ``encoders``: CLIP (visual + text) and Synchformer, pre-trained on targets the world
gives for free, then frozen for the flow stage.

Why auxiliary targets rather than end-to-end training with the flow: the encoders run once
per clip, the flow many times; training them through the flow would cost several times the
flow's own step, and the world states exactly what they should see. Targets (linear heads on
the contract outputs; the heads are dropped afterwards):

- clip visual, per frame: how close each material is to a sounding contact,
  ``exp(-(dt / 25 ms)^2)`` (binary cross-entropy), and the ambience its background shows;
- Synchformer, per token (its own two frames): which materials sound in it and where;
- text, mean of the 77 token features: which materials and which ambience a caption names
  (random captions, noun-only negative prompts and the empty string included).

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
    frame_targets,
    material_hot,
    render_streams,
    token_targets,
)
from ..recipe import EncoderRecipe
from ..state import optimizer_step, run_loop, set_lr, step_generators, warmup_cosine
from .data import load_data

N_MAT, N_AMB = len(MATERIAL_NAMES), len(AMBIENCE_NAMES)


def checkpoint_path(out: Path) -> Path:
    return Path(out) / "encoders.pt"


class Heads(nn.Module):
    """The auxiliary linear heads (not part of the shipped model)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.clip = nn.Linear(config.clip_vision.embed_dim, N_MAT + N_AMB)
        self.sync = nn.Linear(config.synchformer.embed_dim, N_MAT + 1)
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


def run_encoders(out: Path, recipe: EncoderRecipe, config: ModelConfig, seed: int,
                 duration: float, *, checkpoint_seconds: float, on_step: Callable | None = None
                 ) -> tuple[CLIP, Synchformer]:
    records, _, _, _ = load_data(out)
    torch.manual_seed(seed + 2)
    clip, sync, heads = CLIP(config.clip_vision, config.clip_text), Synchformer(
        config.synchformer), Heads(config)
    tok = Tokenizer.load()
    params = [*clip.parameters(), *sync.parameters(), *heads.parameters()]
    opt = torch.optim.Adam(params, lr=recipe.lr, betas=(0.9, 0.99))

    def step(i: int) -> dict:
        rng, _ = step_generators(seed, "encoders", i)
        set_lr(opt, warmup_cosine(i, recipe.steps, recipe.lr, 50, 0.6))
        frames, f_tgt, amb, segs, s_tgt = [], [], [], [], []
        for j in rng.choice(len(records), size=recipe.clips, replace=False):
            rec = records[j]
            scene = world.make_scene(rec.seed, duration)
            st = render_streams(scene, config)
            tg = frame_targets(rec, st.clip_times)
            pick = _pick_frames(tg, recipe.frames, rng)
            frames.append(augment_frames(st.clip[pick], rng))
            f_tgt.append(tg[pick])
            amb += [ambience_index(rec.ambience)] * len(pick)
            seg = sync_segments(augment_frames(st.sync, rng))  # (S, 16, H, W, 3)
            tt = token_targets(rec, st.sync_times, seg.shape[0])  # (S, 8, 5)
            sel = rng.choice(seg.shape[0], size=min(recipe.segments, seg.shape[0]),
                             replace=False)
            segs.append(seg[sel])
            s_tgt.append(tt[sel])
        cf = clip.encode_frames_u8(torch.from_numpy(np.concatenate(frames)))  # (n, Dc)
        out_c = heads.clip(cf)
        f_t = torch.from_numpy(np.concatenate(f_tgt))
        loss_c = F.binary_cross_entropy_with_logits(out_c[:, :N_MAT], f_t, pos_weight=torch.full(
            (N_MAT,), 4.0)) + F.cross_entropy(out_c[:, N_MAT:], torch.tensor(amb))
        sf = sync.encode_segments_u8(torch.from_numpy(np.concatenate(segs)))  # (n, 8, Ds)
        out_s = heads.sync(sf)
        s_t = torch.from_numpy(np.concatenate(s_tgt))
        has = s_t[..., :N_MAT].amax(-1)
        loss_s = F.binary_cross_entropy_with_logits(out_s[..., :N_MAT], s_t[..., :N_MAT],
                                                    pos_weight=torch.full((N_MAT,), 4.0))
        loss_s = loss_s + (has * (torch.sigmoid(out_s[..., -1]) - s_t[..., -1]).square()).sum() \
            / has.sum().clamp(min=1)
        caps = [random_caption(rng) for _ in range(recipe.captions)]
        caps[0] = ("", np.zeros(N_MAT, dtype=np.float32), ambience_index("none"))
        ids = torch.from_numpy(tok([c for c, _, _ in caps]))
        tf = clip.encode_text(ids).mean(dim=1)  # (n, Dt)
        out_t = heads.text(tf)
        loss_t = F.binary_cross_entropy_with_logits(
            out_t[:, :N_MAT], torch.from_numpy(np.stack([m for _, m, _ in caps]))
        ) + F.cross_entropy(out_t[:, N_MAT:], torch.tensor([a for _, _, a in caps]))
        loss = loss_c + loss_s + loss_t
        optimizer_step(opt, loss, params, 1.0)
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
