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
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from .coding import CODED_BITS, encode_payload
from .features import (
    active_frames,
    cell_power,
    features,
    frame_levels_db,
    istft_add,
    resample,
    stft,
)
from .keys import WatermarkKey
from .layout import DEFAULT_CONFIG, Layout, WatermarkConfig, make_layout
from .shaping import gain_limits, snr_capped

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


def _tile(block: np.ndarray, n_frames: int) -> np.ndarray:
    """(T, C) → (F, C): frame t takes block row t mod T."""
    return block[np.arange(n_frames) % len(block)]


def gain_field(x16: np.ndarray, layout: Layout, coded: np.ndarray,
               config: WatermarkConfig) -> tuple[np.ndarray, np.ndarray]:
    """Closed-loop gains for a 16 kHz mono signal: returns ``(spec, gain_db)``, (F, bins) and
    (F, C)."""
    spec = stft(x16, config)
    power = cell_power(spec, config)
    active = active_frames(frame_levels_db(spec, config))
    n_frames = len(spec)
    sign_block, dir_block = cell_signs(layout, coded)
    sign, direction = _tile(sign_block, n_frames), _tile(dir_block, n_frames)  # (F, C)
    limits = snr_capped(gain_limits(power, active, config), power, float(np.sum(x16 ** 2)),
                        config)
    base = limits * sign  # (F, C) dB
    n_dir = CODED_BITS + 1
    scale = np.ones(n_dir)
    weight = np.bincount(direction.ravel(), weights=np.abs(base).ravel(), minlength=n_dir)
    per_db = None  # mean feature response per dB of gain, from the first pass
    for _ in range(config.closed_loop_iters):
        gain = np.clip(base * scale[direction], -config.max_cell_db, config.max_cell_db)
        y = x16 + render(spec, gain, len(x16), config)
        feats = features(cell_power(stft(y, config), config), active)  # (F, C)
        resp = np.bincount(direction.ravel(), weights=(feats * sign).ravel(), minlength=n_dir)
        if per_db is None:
            per_db = resp[1:].sum() / max(weight[1:].sum(), 1e-9)
            if per_db <= 0:
                break
        host = resp - per_db * weight * scale  # each direction's host projection, estimated
        scale = np.clip((per_db * weight - host) / np.maximum(per_db * weight, 1e-9),
                        *SCALE_RANGE)
        scale[0] = max(scale[0], 1.0)
    gain = np.clip(base * scale[direction], -config.max_cell_db, config.max_cell_db)
    return spec, gain


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


def embed(audio: np.ndarray, sample_rate: int, key: WatermarkKey, payload: int, *,
          config: WatermarkConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Watermark ``audio`` ((W,) mono or (channels, W), float in [-1, 1]) with ``payload``.

    Returns a new array of the same shape and dtype, clipped to [-1, 1]; the input is untouched.
    """
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz, got {sample_rate}")
    x = as_channels(audio)  # (channels, W)
    layout = make_layout(key.secret, config)
    coded = encode_payload(payload)
    sr16 = config.sample_rate
    x16 = resample(x, sample_rate, sr16)  # (channels, W16)
    spec, gain = gain_field(x16.mean(axis=0), layout, coded, config)
    if len(x16) == 1:
        deltas = render(spec, gain, x16.shape[1], config)[None]
    else:  # the same gain field on every channel: any downmix carries the mark
        deltas = np.stack([render(stft(ch, config), gain, x16.shape[1], config) for ch in x16])
    deltas = gate(deltas, x16)
    # the closed loop may have raised some directions: hold the SNR target exactly
    allowed = np.sum(x16 ** 2) * 10 ** (-config.target_snr_db / 10)
    energy = np.sum(deltas ** 2)
    if energy > allowed:
        deltas *= np.sqrt(allowed / energy)
    delta = resample(deltas, sr16, sample_rate)[:, : x.shape[1]]  # (channels, W)
    out = np.clip(x + np.pad(delta, ((0, 0), (0, x.shape[1] - delta.shape[1]))), -1.0, 1.0)
    return out.reshape(np.shape(audio)).astype(np.asarray(audio).dtype)
