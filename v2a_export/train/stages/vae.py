"""Stage ``vae``: the mel VAE on the training set's log-mels.

Loss: L1 between the decoder output and the normalised log-mel (``(mel - data_mean) /
data_std``, the statistics of this training set, stored in the VAE's own buffers), on a latent
sampled from the posterior (so the decoder tolerates small latent errors), plus a small KL to
N(0, I). Random crops of ``crop`` mel frames from either soundtrack of random clips.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from v2a_export.models.configs import ModelConfig
from v2a_export.models.vae import VAE

from ..recipe import VAERecipe
from ..state import optimizer_step, run_loop, set_lr, step_generators, warmup_cosine
from .data import load_data


def checkpoint_path(out: Path) -> Path:
    return Path(out) / "vae.pt"


def new_vae(config: ModelConfig, stats: dict) -> VAE:
    vae = VAE(config.vae)
    with torch.no_grad():
        vae.data_mean.copy_(torch.tensor(stats["mean"], dtype=torch.float32).view(1, -1, 1))
        vae.data_std.copy_(torch.tensor(stats["std"], dtype=torch.float32).view(1, -1, 1))
    return vae


def mel_batch(mels: np.ndarray, rng: np.random.Generator, batch: int, crop: int) -> torch.Tensor:
    """float32 (B, n_mels, crop): random crops (even start) of random soundtracks."""
    n, _, _, frames = mels.shape
    idx = rng.integers(n, size=batch)
    var = rng.integers(2, size=batch)
    starts = 2 * rng.integers((frames - crop) // 2 + 1, size=batch)
    rows = [np.asarray(mels[i, v, :, s: s + crop], dtype=np.float32)
            for i, v, s in zip(idx, var, starts, strict=True)]
    return torch.from_numpy(np.stack(rows))  # (B, n_mels, crop)


def run_vae(out: Path, recipe: VAERecipe, config: ModelConfig, seed: int, *,
            checkpoint_seconds: float, on_step: Callable | None = None) -> VAE:
    _, mels, _, stats = load_data(out)
    torch.manual_seed(seed)  # the constructor's initial weights
    vae = new_vae(config, stats).train()
    opt = torch.optim.Adam(vae.parameters(), lr=recipe.lr, betas=(0.9, 0.99))

    def step(i: int) -> dict:
        rng, gen = step_generators(seed, "vae", i)
        mel = mel_batch(mels, rng, recipe.batch, recipe.crop)
        set_lr(opt, warmup_cosine(i, recipe.steps, recipe.lr, 100, 0.5))
        post = vae.encode(mel)
        rec = vae.decode_raw(post.sample(gen))  # (B, n_mels, crop), normalised
        l1 = (rec - vae.normalize(mel)).abs().mean()
        kl = post.kl().mean()
        loss = l1 + recipe.kl_weight * kl
        optimizer_step(opt, loss, vae.parameters(), 1.0)
        return {"l1": float(l1.detach()), "kl": float(kl.detach())}

    run_loop("vae", checkpoint_path(out), recipe.steps, {"vae": vae, "opt": opt}, step,
             checkpoint_seconds=checkpoint_seconds, on_step=on_step)
    return vae.eval()


def load_trained_vae(out: Path, config: ModelConfig) -> VAE:
    _, _, _, stats = load_data(out)
    vae = new_vae(config, stats)
    vae.load_state_dict(torch.load(checkpoint_path(out), weights_only=False)["vae"])
    return vae.eval()
