"""Embedding: a keyed multiplicative gain field on the 16 kHz STFT, closed-loop corrected.

Every cell's magnitude is scaled by 10**(g/20) with |g| from the perceptual limits of
shaping.py and the sign of the cell (pilot: its chip; data: its chip times its code bit's
sign), then corrected in closed loop: the marked signal is re-analysed exactly as the detector
will see it and every direction (the pilot and each of the 162 code bits) gets a uniform scale
so that its mean response reaches the same margin, which cancels most of the host's own
projection (improved spread spectrum, Malvar & Florêncio 2003). The change is rendered as
``delta = ISTFT(X·(G − 1))`` at 16 kHz, resampled to the host rate and added, so nothing above
8 kHz is touched; a 4 ms envelope gate keeps it 10 dB under the host everywhere, and the whole
change is held to ``target_snr_db``.

This module holds the per-frame and per-sample steps; :mod:`.stream` runs them over a signal in
blocks (the statistics of the whole clip gathered in passes) and is where ``embed`` lives.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from .features import istft_add
from .layout import Layout, WatermarkConfig

SCALE_RANGE = (0.3, 3.0)  # closed-loop scale of a direction, relative to the base strength


def as_channels(audio: np.ndarray) -> np.ndarray:
    """(W,) or (channels, W) → (channels, W) float64 copy; rejects other shapes."""
    a = np.asarray(audio)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[0] > 16 or a.shape[1] == 0:
        raise ValueError(f"audio must have shape (W,) or (channels, W) with 1-16 channels, "
                         f"got {np.shape(audio)}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"audio must be floating point in [-1, 1], got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError("audio contains NaN or infinite samples")
    return a.astype(np.float64)


def cell_signs(layout: Layout, coded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per block cell: the embedding sign (±1) and the direction index (0 = pilot, 1 + k =
    code bit k). Both (T, C)."""
    bit_sign = np.where(layout.bit >= 0, 1 - 2 * coded[np.maximum(layout.bit, 0)].astype(
        np.float32), 1.0)
    direction = np.where(layout.pilot, 0, layout.bit.astype(np.int64) + 1)
    return layout.chips * bit_sign, direction


def render(spec: np.ndarray, gain_db: np.ndarray, n_samples: int,
           config: WatermarkConfig) -> np.ndarray:
    """The additive change ISTFT(X·(G − 1)) of a (F, C) gain field, as (n_samples,)."""
    factor = np.repeat(10 ** (gain_db / 20) - 1, config.cell_bins, axis=1)  # (F, C·cell_bins)
    delta = np.zeros_like(spec)
    delta[:, config.lo_bin: config.hi_bin] = spec[:, config.lo_bin: config.hi_bin] * factor
    return istft_add(delta, n_samples, config)


GATE_MARGIN_DB = 10.0  # the mark stays this far under the host's short-time envelope
GATE_SAMPLES = 64  # 4 ms at 16 kHz


def envelope(x: np.ndarray) -> np.ndarray:
    """(..., W) → (..., W) RMS over a centred 4 ms window."""
    kernel = np.ones(GATE_SAMPLES) / GATE_SAMPLES
    power = np.apply_along_axis(lambda v: np.convolve(v, kernel, "same"), -1, x * x)
    return np.sqrt(np.maximum(power, 0.0))


def gate(delta: np.ndarray, host: np.ndarray) -> np.ndarray:
    """Limit the mark to ``GATE_MARGIN_DB`` under the host's envelope, sample by sample, so
    that the overlap-add cannot smear it into silence before onsets (pre-echo) or into
    digital silence between words."""
    allowed = envelope(host) * 10 ** (-GATE_MARGIN_DB / 20)
    factor = np.minimum(1.0, allowed / np.maximum(envelope(delta), 1e-12))
    # smooth the gain so that the gate itself adds no clicks: a moving minimum then mean
    factor = uniform_filter1d(minimum_filter1d(factor, GATE_SAMPLES, axis=-1), GATE_SAMPLES,
                              axis=-1)
    return delta * factor
