"""Stage ``vocoder``: BigVGAN-tiny from log-mel to waveform, without a discriminator.

Regression losses only (a GAN does not fit the time budget): L1 between log10-mels of the
output and the target (the front-end of :mod:`v2a_export.models.mel`) and a multi-resolution
STFT loss (spectral convergence + L1 of log magnitudes at 4 resolutions, Yamamoto et al. 2020,
"Parallel WaveGAN", eq. 1-4). Crops of ``crop`` mel frames of the stored waveforms; the mel
crop is cut from the whole clip's mel, so its edges match what the VAE decoder gives.
Most crops start shortly before an impact (attacks are what the metrics listen to).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from v2a_export.models.bigvgan import BigVGAN, SnakeBeta
from v2a_export.models.configs import ModelConfig
from v2a_export.models.mel import LogMel

from ..recipe import VocoderRecipe
from ..state import optimizer_step, run_loop, set_lr, step_generators, warmup_cosine
from .data import load_data

MEL_WEIGHT = 2.0


def checkpoint_path(out: Path) -> Path:
    return Path(out) / "vocoder.pt"


def stft_loss(y: torch.Tensor, target: torch.Tensor, resolutions: tuple[int, ...],
              linear_weight: float = 0.0) -> torch.Tensor:
    """Mean over STFT sizes (hop n_fft / 4) of spectral convergence + log-magnitude L1
    (+ ``linear_weight`` × relative L1 of the linear magnitudes, which weighs loud partials);
    y, target (B, W)."""
    total = y.new_zeros(())
    for n_fft in resolutions:
        hop = n_fft // 4
        win = torch.hann_window(n_fft)
        a = torch.stft(y, n_fft, hop, window=win, return_complex=True).abs() + 1e-6
        b = torch.stft(target, n_fft, hop, window=win, return_complex=True).abs() + 1e-6
        sc = torch.linalg.vector_norm(b - a) / torch.linalg.vector_norm(b)
        total = total + sc + (a.log() - b.log()).abs().mean()
        if linear_weight:
            total = total + linear_weight * (a - b).abs().mean() / b.mean()
    return total / len(resolutions)


@torch.no_grad()
def init_vocoder(voc: BigVGAN, seed: int, snake: tuple[float, float]) -> BigVGAN:
    """BigVGAN's own start (weight-norm directions of std 0.01), except SnakeBeta's
    frequencies: ``alpha = beta`` log-uniform in ``snake`` per channel (BigVGAN: 1). Its
    activations start small, where ``x + sin²(x)`` is nearly linear and the upsamplers can only
    make clicks at the frame rate; ``x + sin²(αx)/α`` with α up to 30 is periodic at that scale
    (measured: a little faster to fit)."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = np.log(snake[0]), np.log(snake[1])
    for m in voc.modules():
        if isinstance(m, SnakeBeta):
            a = torch.rand(m.alpha.shape, generator=gen) * (hi - lo) + lo
            m.alpha.copy_(a)
            m.beta.copy_(a)
    return voc


def crop_batch(records, mels, audio, rng: np.random.Generator, batch: int, crop: int,
               event_share: float, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mel (B, n_mels, crop) float32 and waveform (B, crop·hop) float32."""
    pool, frames = audio.shape[0], mels.shape[-1]
    mel_rows, wave_rows = [], []
    for _ in range(batch):
        i, v = int(rng.integers(pool)), int(rng.integers(2))
        times = records[i].event_times
        if times and rng.random() < event_share:
            t = float(times[rng.integers(len(times))]) - float(rng.uniform(0.03, 0.3))
            start = int(round(t * 16000 / hop))
        else:
            start = int(rng.integers(frames - crop + 1))
        start = int(np.clip(start, 0, frames - crop))
        mel_rows.append(np.asarray(mels[i, v, :, start: start + crop], dtype=np.float32))
        wave_rows.append(audio[i, v, start * hop: (start + crop) * hop].astype(np.float32)
                         / 32767.0)
    return torch.from_numpy(np.stack(mel_rows)), torch.from_numpy(np.stack(wave_rows))


def run_vocoder(out: Path, recipe: VocoderRecipe, config: ModelConfig, seed: int, *,
                checkpoint_seconds: float, on_step: Callable | None = None) -> BigVGAN:
    records, mels, audio, _ = load_data(out)
    torch.manual_seed(seed + 1)
    voc = init_vocoder(BigVGAN(config.vocoder), seed + 1, recipe.snake_init).train()
    mel_fn = LogMel(config.mel)
    opt = torch.optim.Adam(voc.parameters(), lr=recipe.lr, betas=(0.8, 0.99))
    hop = config.mel.hop_length

    def step(i: int) -> dict:
        rng, _ = step_generators(seed, "vocoder", i)
        mel, wave = crop_batch(records, mels, audio, rng, recipe.batch, recipe.crop,
                               recipe.event_crops, hop)
        set_lr(opt, warmup_cosine(i, recipe.steps, recipe.lr, 50, 0.5))
        y = voc(mel)[:, 0]  # (B, W)
        mel_l1 = (mel_fn(y) - mel_fn(wave)).abs().mean()
        spec = stft_loss(y, wave, recipe.resolutions, recipe.linear_weight)
        loss = MEL_WEIGHT * mel_l1 + spec
        optimizer_step(opt, loss, voc.parameters(), 10.0)
        return {"mel_l1": float(mel_l1.detach()), "stft": float(spec.detach())}

    run_loop("vocoder", checkpoint_path(out), recipe.steps, {"vocoder": voc, "opt": opt}, step,
             checkpoint_seconds=checkpoint_seconds, on_step=on_step)
    return voc.eval()


def load_trained_vocoder(out: Path, config: ModelConfig) -> BigVGAN:
    voc = BigVGAN(config.vocoder)
    voc.load_state_dict(torch.load(checkpoint_path(out), weights_only=False)["vocoder"])
    return voc.eval()
