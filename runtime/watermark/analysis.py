"""Analysis of a 16 kHz signal under one time-scale hypothesis: features, the best block
alignment by the pilot, the channel estimate and soft code bits, and the per-second z track.

An analysis frame grid is ``offset + round(t · hop · tempo)`` samples of the (speed-corrected)
signal; the block position of frame t is ``(t + phase) mod T``. The pilot z of a grid and phase
is ``Σ cᵢAᵢ / sqrt(Σ Aᵢ²)`` over the folded pilot cells A (see detect.py for the bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .coding import CODED_BITS, decode_soft
from .features import active_frames, cell_power, features, fold, frame_levels_db, stft_at
from .layout import Layout, WatermarkConfig

LEVEL_KNEE_DB, LEVEL_SPAN_DB, LEVEL_FLOOR = 35.0, 15.0, 0.2  # see level_weights
SUB_HOP_STEPS = 8  # sub-hop offsets tried (64 samples apart at 16 kHz)
LEVEL_EDGES_DB = (-20.0, -40.0)  # cell level classes of the channel estimate
CHANNEL_BANDS = 6  # frequency ranges of the channel estimate


@dataclass(frozen=True)
class Grid:
    """A frame grid: where analysis frames start in the analysed signal (16 kHz samples)."""

    offset: int
    tempo: float = 1.0  # hop scale (pitch-preserving time stretch)

    def starts(self, n_samples: int, config: WatermarkConfig) -> np.ndarray:
        step = config.hop * self.tempo
        n = max(0, int((n_samples - self.offset - config.hop) // step) + 1)
        return self.offset + np.round(np.arange(n) * step).astype(np.int64)


@dataclass(frozen=True)
class Analysis:
    """Features of one grid and its best phase."""

    z: float
    grid: Grid
    phase: int  # block position of frame 0
    starts: np.ndarray  # (F,) frame starts in the analysed signal
    feats: np.ndarray  # (F, C) whitened features
    power: np.ndarray  # (F, C) cell energies
    folded: np.ndarray  # (T, C) folded features, row = block position


@dataclass(frozen=True)
class Alignment:
    """What detection reports of a winning grid and phase: from an :class:`Analysis`
    (:meth:`of`) or from the block-wise offset stage (``watermark.scan``)."""

    z: float
    phase: int  # block position of frame 0
    starts: np.ndarray  # (F,) frame starts in the analysed signal
    soft: np.ndarray  # (162,) channel-weighted soft code bits (see soft_bits)
    pilot_num: np.ndarray  # (F,) per-frame pilot sums (see frame_pilot)
    pilot_den: np.ndarray  # (F,)

    @classmethod
    def of(cls, a: Analysis, layout: Layout, config: WatermarkConfig) -> Alignment:
        num, den = frame_pilot(a.feats, np.arange(len(a.feats)) + a.phase, layout, config)
        return cls(a.z, a.phase, a.starts, soft_bits(a, layout, config), num, den)


def grid_features(x16: np.ndarray, grid: Grid, config: WatermarkConfig):
    """Frame starts (F,), features (F, C) and cell energies (F, C) of one grid."""
    starts = grid.starts(len(x16), config)
    if len(starts) < 2:
        return starts, None, None
    spec = stft_at(x16, starts, config)
    power = cell_power(spec, config)
    feats = features(power, active_frames(frame_levels_db(spec, config)))
    return starts, feats * level_weights(power), power


def level_weights(power: np.ndarray) -> np.ndarray:
    """(F, C) detector weight of each cell by its level under the frame's peak: 1 down to
    ``LEVEL_KNEE_DB``, falling to ``LEVEL_FLOOR`` over ``LEVEL_SPAN_DB``. Lossy codecs and
    added noise wipe out the deepest cells first (measured: MP3 32 kbps at 44.1 kHz keeps ~5 %
    of the mark in cells 40 dB under the peak, ~60 % at 20-30 dB), so they are trusted less.
    The weights depend on the audio only, so the false-positive bound still holds."""
    rel_db = 10 * np.log10(power / (power.max(axis=1, keepdims=True) + 1e-30) + 1e-30)
    return np.clip(1 + (rel_db + LEVEL_KNEE_DB) / LEVEL_SPAN_DB, LEVEL_FLOOR, 1.0)


def pilot_scores(folded: np.ndarray, layout: Layout) -> np.ndarray:
    """z of every phase p (frame t ↔ block position (t + p) mod T), shape (T,).

    Circular correlation along the block axis, done with FFTs: O(T log T · C).
    """
    q = layout.pilot * layout.chips  # (T, C)
    fa, fa2 = np.fft.rfft(folded, axis=0), np.fft.rfft(folded ** 2, axis=0)  # (T/2+1, C)
    fq, fp = np.fft.rfft(q, axis=0), np.fft.rfft(layout.pilot.astype(np.float64), axis=0)
    n_t = len(folded)
    num = np.fft.irfft((np.conj(fq) * fa).sum(axis=1), n=n_t)  # num[m] pairs row t with t + m
    den = np.fft.irfft((np.conj(fp) * fa2).sum(axis=1), n=n_t)
    # phase p pairs block row β with folded row β − p, i.e. m = −p
    idx = (-np.arange(n_t)) % n_t
    return num[idx] / np.sqrt(np.maximum(den[idx], 1e-12))


def analyse_grid(x16: np.ndarray, grid: Grid, layout: Layout,
                 config: WatermarkConfig) -> Analysis | None:
    starts, feats, power = grid_features(x16, grid, config)
    if feats is None:
        return None
    folded = fold(feats, config.block_frames)
    scores = pilot_scores(folded, layout)
    phase = int(np.argmax(scores))
    return Analysis(float(scores[phase]), grid, phase, starts, feats, power,
                    np.roll(folded, phase, axis=0))


def best_alignment(x16: np.ndarray, layout: Layout, config: WatermarkConfig,
                   tempo: float = 1.0, steps: int = SUB_HOP_STEPS) -> Analysis | None:
    """The best of ``steps`` sub-hop offsets × T phases (``steps · T`` hypotheses)."""
    best = None
    for k in range(steps):
        a = analyse_grid(x16, Grid(int(round(k * config.hop * tempo / steps)), tempo),
                         layout, config)
        if a is not None and (best is None or a.z > best.z):
            best = a
    return best


def channel_weights(a: Analysis, layout: Layout, config: WatermarkConfig) -> np.ndarray:
    """(F, C) decoding weight of every cell: the mark that survives in its region (frequency
    range × level under the frame's peak), measured on the pilot cells, over the region's
    feature variance (maximum-ratio combining)."""
    rows = (np.arange(len(a.feats)) + a.phase) % config.block_frames
    region = cell_regions(a.power)  # (F, C)
    w = region_weights(region_sums(a.feats, region, layout.pilot[rows], layout.chips[rows]))
    return w[region]


N_REGIONS = (len(LEVEL_EDGES_DB) + 1) * CHANNEL_BANDS


def cell_regions(power: np.ndarray) -> np.ndarray:
    """(F, C) cell energies → (F, C) channel-estimate region of each cell (level class ×
    frequency range); per frame."""
    n_cells = power.shape[1]
    rel_db = 10 * np.log10(power / (power.max(axis=1, keepdims=True) + 1e-30) + 1e-30)
    level = np.digitize(-rel_db, [-e for e in LEVEL_EDGES_DB])  # (F, C): 0, 1, 2
    band = (np.arange(n_cells) * CHANNEL_BANDS // n_cells)[None, :]  # (1, C)
    return level * CHANNEL_BANDS + band


def region_sums(feats: np.ndarray, region: np.ndarray, pilot: np.ndarray,
                chips: np.ndarray) -> np.ndarray:
    """(4, N_REGIONS) sums over frames of the channel estimate: pilot gain, pilot count, feature
    energy, live count (``pilot``/``chips``: (F, C), the layout rows of the frames)."""
    region = region.ravel()  # (F·C,)
    live = (feats != 0).ravel()
    on_pilot = (pilot.ravel() & live).astype(np.float64)
    f = feats.ravel()
    return np.stack([
        np.bincount(region, weights=chips.ravel() * f * on_pilot, minlength=N_REGIONS),
        np.bincount(region, weights=on_pilot, minlength=N_REGIONS),
        np.bincount(region, weights=f * f * live, minlength=N_REGIONS),
        np.bincount(region, weights=live.astype(np.float64), minlength=N_REGIONS)])


def region_weights(sums: np.ndarray) -> np.ndarray:
    """(4, N_REGIONS) region sums → (N_REGIONS,) decoding weight of each region."""
    gain, count, energy, n_live = sums
    h = gain / np.maximum(count, 1)
    var = energy / np.maximum(n_live, 1)
    return np.where((count >= 20) & (h > 0), h / np.maximum(var, 1e-9), 0.0)


def soft_bits(a: Analysis, layout: Layout, config: WatermarkConfig) -> np.ndarray:
    """(162,) channel-weighted soft code bits (positive favours bit 0)."""
    weighted = a.feats * channel_weights(a, layout, config)
    folded = np.roll(fold(weighted, config.block_frames), a.phase, axis=0)  # (T, C)
    data = ~layout.pilot
    return np.bincount(layout.bit[data], weights=(layout.chips * folded)[data],
                       minlength=CODED_BITS)


def decode(a: Analysis, layout: Layout, config: WatermarkConfig) -> tuple[int, bool]:
    return decode_soft(soft_bits(a, layout, config))


def per_second_z(a: Analysis, layout: Layout, config: WatermarkConfig,
                 to_input_seconds, n_seconds: int | None = None) -> list[float]:
    """Pilot z of each second of the input at the alignment (0.0 where nothing is audible).
    ``to_input_seconds`` maps analysed-signal sample positions to input seconds;
    ``n_seconds`` (the input's length, rounded up) caps the count: a frame centred past the
    end (padding) counts in the last second, so an 8.000 s file has 8 seconds, not 9."""
    num, den = frame_pilot(a.feats, np.arange(len(a.feats)) + a.phase, layout, config)
    return seconds_z(num, den, a.starts, config, to_input_seconds, n_seconds)


def frame_pilot(feats: np.ndarray, positions: np.ndarray, layout: Layout,
                config: WatermarkConfig) -> tuple[np.ndarray, np.ndarray]:
    """(F,) numerator and denominator of each frame's pilot z (``positions``: (F,) frame index
    + phase); per frame."""
    rows = positions % config.block_frames
    q = (layout.pilot * layout.chips)[rows]  # (F, C)
    return (q * feats).sum(axis=1), (layout.pilot[rows] * feats ** 2).sum(axis=1)


def seconds_z(num: np.ndarray, den: np.ndarray, starts: np.ndarray, config: WatermarkConfig,
              to_input_seconds, n_seconds: int | None = None) -> list[float]:
    """Per-second z from the per-frame pilot sums (see :func:`per_second_z`)."""
    n_frames = len(num)
    second = np.floor(to_input_seconds(starts + config.n_fft / 2)).astype(np.int64)
    second = np.maximum(second, 0)
    if n_seconds is not None:
        second = np.minimum(second, max(n_seconds, 1) - 1)
    n_sec = int(second.max()) + 1 if n_frames else 0
    nums = np.bincount(second, weights=num, minlength=n_sec)
    dens = np.bincount(second, weights=den, minlength=n_sec)
    return [float(n / math.sqrt(d)) if d > 0 else 0.0 for n, d in zip(nums, dens, strict=True)]
