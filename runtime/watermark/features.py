"""STFT analysis/synthesis at 16 kHz and the whitened log-energy cell features.

Features: the log energy of each 2-bin cell minus its prediction from the 12 nearest cells
(a whitening filter fitted on the clip itself, so that it removes sustained tones as well as
smooth spectral envelopes; gain, polarity and smooth EQ do not matter), minus the frame median,
divided by the frame's median absolute deviation, and clipped to ±``CLIP``. The spec's
prototype used a fixed 4-neighbour Laplacian (spec/watermark.md §5.7); the fitted predictor
gives 1.1-4x its z on speech and tonal music at equal strength. Features depend only on the
audio, never on the key, which is what makes the detector's false-positive bound hold for every
file.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy.signal import resample_poly

from .layout import WatermarkConfig

CLIP = 2.0  # feature clip, in frame-MAD units
FLOOR_DB = -100.0  # cell energies below this (relative to full scale) count as silence
QUIET_DB = 45.0  # frames this far under the clip's loud frames carry (and count) no mark


@lru_cache(maxsize=4)
def window(n_fft: int) -> np.ndarray:
    """Periodic sqrt-Hann: w² sums to one at hop n_fft/2 (perfect reconstruction)."""
    w = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft))
    w.setflags(write=False)
    return w


def frame_count(n_samples: int, config: WatermarkConfig) -> int:
    """Frames at t·hop that fit in ``n_samples`` (the last one may be zero-padded)."""
    return max(0, -(-(n_samples - config.hop) // config.hop))


def stft(x: np.ndarray, config: WatermarkConfig) -> np.ndarray:
    """(W,) → (F, n_fft/2 + 1) complex spectrum of frames starting at t·hop."""
    n_frames = frame_count(len(x), config)
    need = (n_frames + 1) * config.hop
    padded = np.zeros(max(need, config.n_fft))
    padded[: len(x)] = x
    return stft_frames(padded, n_frames, config)


def stft_frames(x: np.ndarray, n_frames: int, config: WatermarkConfig) -> np.ndarray:
    """The first ``n_frames`` frames at t·hop of ``x`` (at least (n_frames + 1)·hop long)."""
    frames = np.lib.stride_tricks.sliding_window_view(x, config.n_fft)[::config.hop]
    frames = frames[:n_frames]  # (F, N)
    return np.fft.rfft(frames * window(config.n_fft), axis=1)


def stft_at(x: np.ndarray, starts: np.ndarray, config: WatermarkConfig) -> np.ndarray:
    """(W,) → (F, n_fft/2 + 1) spectrum of frames starting at the given sample indices
    (beyond the end counts as zeros)."""
    n_fft = config.n_fft
    padded = np.zeros(max(len(x), int(starts.max(initial=0)) + n_fft) + 1)
    padded[: len(x)] = x
    frames = padded[starts[:, None] + np.arange(n_fft)[None, :]]  # (F, N)
    return np.fft.rfft(frames * window(n_fft), axis=1)


def istft_add(spec: np.ndarray, n_samples: int, config: WatermarkConfig) -> np.ndarray:
    """Overlap-add synthesis of (F, n_fft/2 + 1) onto a zero signal of ``n_samples``."""
    n_fft, hop = config.n_fft, config.hop
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * window(n_fft)  # (F, N)
    n_frames = len(frames)
    out = np.zeros((n_frames + 1) * hop)
    halves = frames.reshape(n_frames, 2, hop)  # (F, 2, hop): first and second half
    out[: n_frames * hop] += halves[:, 0].reshape(-1)
    out[hop: (n_frames + 1) * hop] += halves[:, 1].reshape(-1)
    result = np.zeros(n_samples)
    m = min(n_samples, len(out))
    result[:m] = out[:m]
    return result


def cell_power(spec: np.ndarray, config: WatermarkConfig) -> np.ndarray:
    """(F, bins) spectrum → (F, C) energy of each cell."""
    band = spec[:, config.lo_bin: config.hi_bin]
    power = band.real ** 2 + band.imag ** 2  # (F, C·cell_bins)
    return power.reshape(len(spec), config.n_cells, config.cell_bins).sum(axis=2)  # (F, C)


def frame_levels_db(spec: np.ndarray, config: WatermarkConfig) -> np.ndarray:
    """(F, bins) → (F,) frame level in dB re a full-scale sine's frame energy."""
    power = (np.abs(spec) ** 2).sum(axis=1)
    full_scale = 0.25 * (window(config.n_fft) ** 2).sum() * config.n_fft  # sine of amplitude 1
    return 10 * np.log10(power / full_scale + 1e-30)


def active_frames(levels_db: np.ndarray) -> np.ndarray:
    """(F,) bool: frames loud enough to carry a mark, relative to the clip's loud frames."""
    if len(levels_db) == 0:
        return np.zeros(0, dtype=bool)
    loud = np.percentile(levels_db, 95)
    return (levels_db > loud - QUIET_DB) & (levels_db > FLOOR_DB + 20)


# Neighbours (frame offset, cell offset) of the per-clip linear predictor of the log energies.
NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1),
              (2, 0), (-2, 0), (0, 2), (0, -2))
SUB_BANDS = 4  # the predictor is fitted separately in this many frequency ranges
PAD = 2


def features(power: np.ndarray, active: np.ndarray) -> np.ndarray:
    """(F, C) cell energies → (F, C) whitened features; inactive frames are zero.

    The host's log spectrum is predicted from each cell's 12 neighbours by least squares fitted
    on this very clip (per sub-band), so sustained tones (time neighbours), formants and noise
    (frequency neighbours) are all removed as far as they are predictable; the residual is
    normalised per frame (median, MAD) and clipped. The two statistics of the whole clip (the
    per-cell level and the predictor) are sums over frames, so a long file can be processed in
    blocks of frames (``watermark.stream``): see :func:`log_energy`, :func:`predictor_sums`,
    :func:`solve_predictor` and :func:`whitened`.
    """
    if active.sum() < 3:
        return np.zeros(power.shape)
    log_e = log_energy(power)
    log_e = log_e - log_e[active].mean(axis=0, keepdims=True)  # level per cell (EQ)
    shifted = neighbours(log_e)
    coef = solve_predictor(predictor_sums(log_e, shifted, active))
    return whitened(log_e, shifted, coef, active)


def log_energy(power: np.ndarray) -> np.ndarray:
    """(F, C) → (F, C) log energies minus each frame's mean (gain, compressors); per frame."""
    log_e = 10 * np.log10(power + 10 ** (FLOOR_DB / 10))
    return log_e - log_e.mean(axis=1, keepdims=True)


def neighbours(log_e: np.ndarray) -> np.ndarray:
    """(F, C) → (F, C, J): each cell's 12 neighbours (edge-padded at the ends)."""
    n_frames, n_cells = log_e.shape
    padded = np.pad(log_e, PAD, mode="edge")  # (F + 4, C + 4)
    return np.stack([padded[PAD + dt: PAD + dt + n_frames, PAD + dc: PAD + dc + n_cells]
                     for dt, dc in NEIGHBOURS], axis=-1)  # (F, C, J)


def _bands(n_cells: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n_cells, SUB_BANDS + 1).astype(int)
    return list(zip(edges[:-1], edges[1:], strict=True))


def predictor_sums(log_e: np.ndarray, shifted: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Normal equations of the predictor over the active frames, per sub-band:
    (SUB_BANDS, J, J + 1) = [design.T @ design | design.T @ target]; sums over frames."""
    out = np.empty((SUB_BANDS, len(NEIGHBOURS), len(NEIGHBOURS) + 1))
    for b, (lo, hi) in enumerate(_bands(log_e.shape[1])):
        design = shifted[active, lo:hi].reshape(-1, len(NEIGHBOURS))  # (n, J)
        target = log_e[active, lo:hi].reshape(-1)  # (n,)
        out[b, :, :-1] = design.T @ design  # far cheaper than an SVD here
        out[b, :, -1] = design.T @ target
    return out


def solve_predictor(sums: np.ndarray) -> np.ndarray:
    """(SUB_BANDS, J, J + 1) normal equations → (SUB_BANDS, J) coefficients (ridge 1e-6)."""
    coefs = []
    for normal in sums:
        gram, rhs = normal[:, :-1], normal[:, -1]
        coefs.append(np.linalg.solve(gram + 1e-6 * np.trace(gram) * np.eye(len(gram)), rhs))
    return np.stack(coefs)


def whitened(log_e: np.ndarray, shifted: np.ndarray, coef: np.ndarray,
             active: np.ndarray) -> np.ndarray:
    """The residual of the predictor ``coef``, normalised per frame and clipped; per frame."""
    residual = np.empty_like(log_e)
    for b, (lo, hi) in enumerate(_bands(log_e.shape[1])):
        residual[:, lo:hi] = log_e[:, lo:hi] - shifted[:, lo:hi] @ coef[b]
    residual -= np.median(residual, axis=1, keepdims=True)
    mad = np.median(np.abs(residual), axis=1, keepdims=True)
    feats = np.clip(residual / np.maximum(mad, 1e-3), -CLIP, CLIP)
    feats[~active] = 0.0
    return feats


def fold(feats: np.ndarray, block_frames: int) -> np.ndarray:
    """(F, C) → (T, C): sum of the features that share a block position (frame t → t mod T)."""
    n_frames, n_cells = feats.shape
    n_blocks = -(-n_frames // block_frames)
    padded = np.zeros((n_blocks * block_frames, n_cells))
    padded[:n_frames] = feats
    return padded.reshape(n_blocks, block_frames, n_cells).sum(axis=0)  # (T, C)


def _ratio(sr_from: int, sr_to: int) -> tuple[int, int]:
    r = Fraction(sr_to, sr_from).limit_denominator(1024)
    return r.numerator, r.denominator


def resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Polyphase resampling along the last axis (identity when the rates are equal)."""
    if sr_from == sr_to:
        return np.asarray(x, dtype=np.float64)
    up, down = _ratio(sr_from, sr_to)
    return resample_poly(np.asarray(x, dtype=np.float64), up, down, axis=-1)
