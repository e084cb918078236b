"""The 16 kHz log-mel front-end of the tiny model's VAE and vocoder (spec/mmaudio.md §2.2).

MMAudio's ``mel_converter.py`` as a torch module: clamp the waveform to [-1, 1], reflect-pad
``(n_fft - hop) / 2`` on each side, ``stft(center=False)`` with a Hann window, magnitude
``sqrt(re² + im² + 1e-9)``, a Slaney mel filterbank (librosa's default: Slaney mel scale,
area-normalised triangles), ``clamp(min=1e-5)``, then log10. W samples give
``(W + n_fft - hop - n_fft) // hop + 1`` frames: 128 000 samples (8 s) -> 500 frames.

Used by the trainer and by the precision gate's log-mel error (:func:`mel_filterbank`);
inference never computes a mel (the VAE decoder produces one).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from v2a_export.models.configs import MelConfig

LOG_FLOOR = 1e-5
MAG_EPS = 1e-9


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    lin = f / f_sp
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz)
                    / logstep, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=4)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
                   ) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32 Slaney filterbank (librosa ``filters.mel`` default)."""
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_hz)  # (n_mels + 1,)
    ramps = mel_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, n_freq)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (n_mels, n_freq)
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]  # Slaney area normalisation
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


class LogMel(nn.Module):
    """waveform (B, W) float32 -> log10 mel (B, n_mels, M)."""

    def __init__(self, cfg: MelConfig):
        super().__init__()
        if cfg.log != "log10":
            raise ValueError(f"only the log10 (16 kHz) front-end is implemented, got {cfg.log!r}")
        self.n_fft, self.hop, self.win = cfg.n_fft, cfg.hop_length, cfg.win_length
        fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        self.register_buffer("filterbank", torch.from_numpy(fb.copy()), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)

    def magnitude(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, W) -> linear STFT magnitude (B, n_fft/2 + 1, M)."""
        pad = (self.n_fft - self.hop) // 2
        x = torch.nn.functional.pad(wave.clamp(-1, 1)[:, None], (pad, pad), mode="reflect")
        spec = torch.stft(x[:, 0], self.n_fft, self.hop, self.win, self.window, center=False,
                          return_complex=True)  # (B, F, M)
        return torch.sqrt(spec.real.square() + spec.imag.square() + MAG_EPS)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.filterbank, self.magnitude(wave))  # (B, n_mels, M)
        return torch.log10(mel.clamp(min=LOG_FLOOR))
