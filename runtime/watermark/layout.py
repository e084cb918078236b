"""The watermark's fixed geometry (``WatermarkConfig``) and its keyed cell layout (``Layout``).

Geometry (spec/watermark.md §6.1), all at the 16 kHz analysis rate:

- STFT: 1024-point periodic sqrt-Hann frames (64 ms), hop 512; analysis and synthesis windows
  are equal and their squares sum to one, so the embedder can add ``ISTFT(X·(G − 1))``.
- cells: 2 FFT bins × 1 frame over 250–6000 Hz, i.e. bins [16, 384) → C = 184 cells a frame;
- block: T = 32 frames (1.024 s). The layout repeats every block, so the detector folds the
  received features modulo T before correlating and any stretch about a block long suffices.

Layout (keyed, HMAC-derived streams): half of the T × C cells are **pilot** cells with a ±1 chip
each (presence and synchronisation); the other half are **data** cells, each carrying one of
the 162 code bits, spread at random over time and frequency, with its own ±1 chip.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .coding import CODED_BITS
from .keys import keyed_rng


@dataclass(frozen=True)
class WatermarkConfig:
    """Geometry and strength. The defaults are the shipped watermark; a mark made with one
    configuration is only detectable with the same geometry (strength may differ)."""

    sample_rate: int = 16000  # analysis rate; every input is resampled to it
    n_fft: int = 1024  # frame length (64 ms)
    hop: int = 512
    f_lo: float = 250.0  # band edges (Hz)
    f_hi: float = 6000.0
    cell_bins: int = 2  # FFT bins per cell
    block_frames: int = 32  # T: frames per layout block (1.024 s)
    pilot_fraction: float = 0.5
    # strength and perceptual shaping (see shaping.py)
    valley_db: float = 0.01  # gain at a frame's peak cell, growing as (P/P_peak)**-valley_beta
    valley_beta: float = 0.8
    flat_db: float = 3.0  # extra gain in noise-like regions (× flatness³)
    flat_beta: float = 1.0  # ... ∝ (P / local mean)**-flat_beta: weak cells get more
    floor_db: float = 60.0  # cells this far under their frame's peak get no mark
    max_cell_db: float = 3.0  # clamp of any cell's gain
    target_snr_db: float = 25.0  # the mark is scaled down if its SNR would be lower
    closed_loop_iters: int = 1  # informed-embedding passes after the first

    @property
    def bin_hz(self) -> float:
        return self.sample_rate / self.n_fft

    @property
    def lo_bin(self) -> int:
        return int(round(self.f_lo / self.bin_hz))

    @property
    def n_cells(self) -> int:
        """C: cells per frame."""
        return (int(round(self.f_hi / self.bin_hz)) - self.lo_bin) // self.cell_bins

    @property
    def hi_bin(self) -> int:
        return self.lo_bin + self.n_cells * self.cell_bins


DEFAULT_CONFIG = WatermarkConfig()


@dataclass(frozen=True)
class Layout:
    """Keyed cell roles for one block; arrays are read-only, shape (T, C)."""

    pilot: np.ndarray  # bool: pilot cell
    chips: np.ndarray  # float32 ±1 chip of every cell
    bit: np.ndarray  # int16: code bit index of a data cell, -1 for pilot cells

    @property
    def n_pilot(self) -> int:
        return int(self.pilot.sum())


@lru_cache(maxsize=16)
def make_layout(secret: bytes, config: WatermarkConfig = DEFAULT_CONFIG) -> Layout:
    """The layout of ``secret`` (pure; cached per key and geometry)."""
    shape = (config.block_frames, config.n_cells)
    n = shape[0] * shape[1]
    n_pilot = int(round(config.pilot_fraction * n))
    order = keyed_rng(secret, "pilot-cells").permutation(n)
    pilot = np.zeros(n, dtype=bool)
    pilot[order[:n_pilot]] = True
    chips = keyed_rng(secret, "chips").integers(0, 2, n).astype(np.float32) * 2 - 1
    bit = np.full(n, -1, dtype=np.int16)
    data_cells = np.flatnonzero(~pilot)
    # Interleaver: every code bit gets floor or ceil(n_data / 162) cells, scattered at random.
    bit[keyed_rng(secret, "interleaver").permutation(data_cells)] = (
        np.arange(len(data_cells)) % CODED_BITS)
    arrays = [a.reshape(shape) for a in (pilot, chips, bit)]  # (T, C) each
    for a in arrays:
        a.setflags(write=False)
    return Layout(*arrays)
