"""The offset stage of detection in blocks of frames: memory bounded by the block, not by the
length of the audio.

The offset stage (``analysis.best_alignment``: 8 sub-hop grids × T phases) depends on a few
statistics of the whole clip per grid, each one float per frame or a sum over frames: the frame
levels (their 95th percentile decides which frames are active), the per-cell mean log energy over
the active frames, the whitening predictor's normal equations, and the level-weighted features
folded mod T, whose pilot scores give the grid's z and phase. The winning grid and phase then
need the channel estimate's region sums, the soft bits (kept per region, so that the region
weights can be applied at the end) and the per-frame pilot sums of ``per_second_z``. So each grid
is walked in passes over blocks of ``block_frames`` frames, each computed with ``MARGIN`` frames
of context (the predictor's neighbours reach ±2 frames), and only those statistics are kept:

1. STFT: frame levels, and the cell energies (F, C) float64, written to a temporary file (a float64 ``Spool``);
2. the per-cell level;  3. the predictor's normal equations;  4. features × level weights,
   folded mod T → pilot z and phase;  5. (the winning grid) region sums, soft bits per region,
   per-frame pilot sums.

Passes 2-5 read the cell energies back with plain file reads (not ``np.memmap``: mapped pages
count in the resident set). The STFT is over a third of a grid's work (60 s: 0.12 of 0.32 s), so
computing it once per grid instead of once per pass keeps this at 1.1× the in-memory offset
stage's CPU (60 s, one thread, min of 3: 0.78 vs 0.72 s); recomputing it in every pass would
cost ~2.5× (estimated from the per-step profile). The file holds one grid at a time (plus the
best grid so far): 165 MB for 60 minutes.

Every per-frame step is the whole-clip code's (``features.py``, ``analysis.py``) run on the
block and its context, so the result equals ``best_alignment`` on the whole signal up to the
summation order of the statistics (float rounding; the tests hold z to 1e-9).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..signals import Signal, Spool
from .analysis import (
    N_REGIONS,
    SUB_HOP_STEPS,
    Alignment,
    Grid,
    cell_regions,
    frame_pilot,
    level_weights,
    pilot_scores,
    region_sums,
    region_weights,
)
from .coding import CODED_BITS
from .features import (
    PAD,
    active_frames,
    cell_power,
    fold,
    frame_levels_db,
    log_energy,
    neighbours,
    predictor_sums,
    solve_predictor,
    stft_frames,
    whitened,
)
from .layout import Layout, WatermarkConfig
from .spans import Span, spans

BLOCK_FRAMES = 512  # frames per block: 16 s at the 16 kHz analysis rate
MARGIN = PAD  # frames of context on each side: the predictor's neighbours reach ±PAD


@dataclass(frozen=True)
class OffsetStage:
    """The offset stage's result: the best alignment (None: too short to analyse) and every
    grid's folded features ((T, C) each; the key-randomisation null reuses them)."""

    best: Alignment | None
    folded: tuple[np.ndarray, ...]


class _GridScan:
    """One sub-hop grid of the signal and its whole-file statistics (filled pass by pass)."""

    def __init__(self, x16: Signal, offset: int, n_frames: int, config: WatermarkConfig,
                 block: int, directory: str | os.PathLike | None):
        self.x16, self.offset, self.n_frames = x16, offset, n_frames
        self.config, self.block = config, block
        self.power = Spool(config.n_cells, 1, directory, np.float64)  # (C, F) cell energies
        self.coef = None  # (SUB_BANDS, J) predictor; None: too few active frames (all zero)

    def spans(self) -> Iterator[Span]:
        return spans(self.n_frames, self.block, MARGIN)

    def analyse(self) -> None:
        """Passes 1-3: cell energies and levels, the per-cell level, the predictor."""
        c, levels = self.config, np.empty(self.n_frames)
        for s in self.spans():  # 1. STFT (frames past the end of the signal read zeros)
            x = self.x16.read(self.offset + s.f0 * c.hop, self.offset + (s.f1 + 1) * c.hop)[0]
            spec = stft_frames(x, s.f1 - s.f0, c)  # (n, bins)
            levels[s.f0: s.f1] = frame_levels_db(spec, c)
            self.power.append(cell_power(spec, c).T)
        self.active = active_frames(levels)
        if self.active.sum() < 3:
            return  # features() is all zeros
        total, count = np.zeros(c.n_cells), 0
        for s in self.spans():  # 2. the per-cell level over the active frames
            act = self.active[s.f0: s.f1]
            total += log_energy(self.power.read(s.f0, s.f1).T)[act].sum(axis=0)
            count += int(act.sum())
        self.level = total / count
        sums = 0.0
        for s in self.spans():  # 3. the predictor's normal equations
            _, log_e, shifted = self._log_energy(s)
            sums = sums + predictor_sums(log_e[s.rows], shifted[s.rows],
                                         self.active[s.f0: s.f1])
        self.coef = solve_predictor(sums)

    def _log_energy(self, s: Span) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cell energies, levelled log energies and their neighbours of the context rows."""
        power = self.power.read(s.e0, s.e1).T  # (n, C)
        log_e = log_energy(power) - self.level
        return power, log_e, neighbours(log_e)  # (n, C), (n, C), (n, C, J)

    def features(self) -> Iterator[tuple[Span, np.ndarray, np.ndarray]]:
        """Per block: the span, its level-weighted features and cell energies ((n, C) each)."""
        for s in self.spans():
            if self.coef is None:
                zeros = np.zeros((s.f1 - s.f0, self.config.n_cells))
                yield s, zeros, self.power.read(s.f0, s.f1).T
                continue
            power, log_e, shifted = self._log_energy(s)
            feats = whitened(log_e[s.rows], shifted[s.rows], self.coef, self.active[s.f0: s.f1])
            yield s, feats * level_weights(power[s.rows]), power[s.rows]

    def folded(self) -> np.ndarray:
        """4. (T, C) features folded mod T (frame t → row t mod T)."""
        n_t = self.config.block_frames
        out = np.zeros((n_t, self.config.n_cells))
        for s, feats, _ in self.features():
            out += np.roll(fold(feats, n_t), s.f0 % n_t, axis=0)
        return out

    def alignment(self, z: float, phase: int, layout: Layout) -> Alignment:
        """5. The report of this grid at ``phase``: channel estimate, soft bits, pilot sums."""
        n_t, n = self.config.block_frames, self.n_frames
        sums, per_region = np.zeros((4, N_REGIONS)), np.zeros(N_REGIONS * CODED_BITS)
        num, den = np.empty(n), np.empty(n)
        for s, feats, power in self.features():
            positions = np.arange(s.f0, s.f1) + phase
            rows = positions % n_t
            pilot, chips = layout.pilot[rows], layout.chips[rows]  # (n, C)
            region = cell_regions(power)  # (n, C)
            sums += region_sums(feats, region, pilot, chips)
            data = ~pilot
            index = region[data] * CODED_BITS + layout.bit[rows][data].astype(np.int64)
            per_region += np.bincount(index, weights=(chips * feats)[data],
                                      minlength=N_REGIONS * CODED_BITS)
            num[s.f0: s.f1], den[s.f0: s.f1] = frame_pilot(feats, positions, layout,
                                                          self.config)
        # soft bit b = Σ over its data cells of chip · feature · weight of the cell's region
        soft = per_region.reshape(N_REGIONS, CODED_BITS).T @ region_weights(sums)  # (162,)
        starts = self.offset + np.arange(n, dtype=np.int64) * self.config.hop
        return Alignment(z, phase, starts, soft, num, den)

    def close(self) -> None:
        self.power.close()


def scan(x16: Signal, layout: Layout, config: WatermarkConfig, *,
         block_frames: int = BLOCK_FRAMES,
         directory: str | os.PathLike | None = None) -> OffsetStage:
    """``analysis.best_alignment`` of a one-channel 16 kHz signal, block by block.

    ``directory``: where the temporary file of cell energies goes (default: the system's)."""
    if x16.channels != 1 or x16.rate != config.sample_rate:
        raise ValueError(f"expected a one-channel {config.sample_rate} Hz signal, got "
                         f"{x16.channels} channels at {x16.rate} Hz")
    best, best_z, folded = None, None, []
    try:
        for k in range(SUB_HOP_STEPS):
            offset = int(round(k * config.hop / SUB_HOP_STEPS))
            n_frames = len(Grid(offset).starts(x16.length, config))
            if n_frames < 2:
                continue
            grid = _GridScan(x16, offset, n_frames, config, block_frames, directory)
            try:
                grid.analyse()
                folded.append(grid.folded())
            except BaseException:
                grid.close()
                raise
            scores = pilot_scores(folded[-1], layout)
            phase = int(np.argmax(scores))
            if best is None or scores[phase] > best_z:
                if best is not None:
                    best[0].close()
                best, best_z = (grid, phase), float(scores[phase])
            else:
                grid.close()
        if best is None:
            return OffsetStage(None, ())
        return OffsetStage(best[0].alignment(best_z, best[1], layout), tuple(folded))
    finally:
        if best is not None:
            best[0].close()
