"""Speed and tempo search: the fallback when no mark is found at the original time scale.

Hypotheses live on one fixed fine grid: factors 0.8 … 1.25 in geometric steps of 0.1 %, for
each of three kinds:

- ``speed`` s (resampled playback, pitch and tempo both change): the signal is resampled by s
  to undo it, then analysed on the normal frame grid;
- ``tempo`` r (pitch-preserving time stretch, e.g. FFmpeg atempo): the frame hop is scaled by
  1/r, frequencies are untouched;
- ``pitch`` p (pitch shift, duration kept): resampled by p to bring the frequencies back, which
  stretches time by p, so the hop is scaled by p.

Coarse to fine: every 6th factor is scored on the loudest ``EXCERPT_S`` seconds with two
sub-hop offsets; the best few are refined on the whole signal, and the best refinement gets the
full offset search. Only fine-grid points are ever reported, so the union bound over
``n_hypotheses()`` alignments holds whichever were visited (spec/watermark.md §5.6, §6.1).

The search works on whole arrays, so for a :class:`~v2a_runtime.signals.Signal` (the streamed
detector, ``detect_stream``) it is bounded: a signal longer than ``SEARCH_LIMIT_S`` is searched
on its loudest excerpt of that length (read from the signal; :func:`search_signal`), one up to
that length whole, exactly as ``detect`` searches it. The excerpt is chosen from the audio alone
and only fine-grid points are reported, so the bound is unchanged; the per-second z of a find
then covers the excerpt only (0.0 elsewhere). The search needs ~2 MB per second of excerpt:
with a 120 s limit an unmarked 10-minute file peaked at 434 MB against 302 MB for 1 minute;
at 60 s every length peaks like a 1-minute file (289 MB at 10 minutes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy.signal import resample_poly

from ..signals import Signal
from .analysis import SUB_HOP_STEPS, Analysis, best_alignment
from .layout import Layout, WatermarkConfig

FACTOR_RANGE = (0.8, 1.25)
FINE_STEP = 0.001  # geometric step of the reported grid
COARSE_EVERY = 6  # coarse grid = every 6th fine factor (0.6 %)
REFINE_SPAN = 4  # fine factors tried on each side of a coarse candidate
N_CANDIDATES = 4
EXCERPT_S = 4.0
SEARCH_LIMIT_S = 60.0  # longer signals are searched on their loudest excerpt this long
ENERGY_BLOCK = 64  # quarter seconds per read when a long signal's loudness is measured
KINDS = ("speed", "tempo", "pitch")


@lru_cache(maxsize=1)
def fine_factors() -> np.ndarray:
    lo, hi = FACTOR_RANGE
    n = int(math.floor(math.log(hi / lo) / math.log1p(FINE_STEP))) + 1
    f = lo * (1 + FINE_STEP) ** np.arange(n)
    f.setflags(write=False)
    return f


def n_hypotheses(config: WatermarkConfig) -> int:
    """Alignments the search can report: kinds × fine factors × sub-hop offsets × phases."""
    return len(KINDS) * len(fine_factors()) * SUB_HOP_STEPS * config.block_frames


@dataclass(frozen=True)
class Found:
    analysis: Analysis
    kind: str  # "speed", "tempo" or "pitch"
    factor: float


def undo_speed(x16: np.ndarray, factor: float) -> np.ndarray:
    """Stretch a signal played ``factor`` times too fast back to its original time scale."""
    r = Fraction(factor).limit_denominator(1000)
    return resample_poly(x16, r.numerator, r.denominator)


def _prepare(x16: np.ndarray, kind: str, factor: float) -> tuple[np.ndarray, float]:
    """(signal to analyse, grid tempo) for one hypothesis."""
    if kind == "speed":
        return undo_speed(x16, factor), 1.0
    if kind == "pitch":
        return undo_speed(x16, factor), factor
    return x16, 1.0 / factor


def _loudest(x16: np.ndarray, seconds: float, sample_rate: int) -> np.ndarray:
    n = int(seconds * sample_rate)
    if len(x16) <= n:
        return x16
    hop = sample_rate // 4
    energy = np.convolve(x16 ** 2, np.ones(hop), "valid")[::hop]  # (windows,)
    per_window = np.convolve(energy, np.ones(n // hop), "valid")
    start = int(np.argmax(per_window)) * hop
    return x16[start: start + n]


def _score(x: np.ndarray, kind: str, factor: float, layout: Layout, config: WatermarkConfig,
           offsets: int) -> Analysis | None:
    signal, tempo = _prepare(x, kind, factor)
    return best_alignment(signal, layout, config, tempo, offsets)


def search(x16: np.ndarray, layout: Layout, config: WatermarkConfig) -> Found | None:
    """Best speed/tempo hypothesis for a 16 kHz mono signal (None if too short)."""
    factors = fine_factors()
    excerpt = _loudest(x16, EXCERPT_S, config.sample_rate)
    coarse = []
    for kind in KINDS:
        for i in range(0, len(factors), COARSE_EVERY):
            a = _score(excerpt, kind, float(factors[i]), layout, config, 2)
            if a is not None:
                coarse.append((a.z, kind, i))
    coarse.sort(reverse=True)
    refined = []
    for _, kind, i in coarse[:N_CANDIDATES]:
        for j in range(max(0, i - REFINE_SPAN), min(len(factors), i + REFINE_SPAN + 1)):
            a = _score(x16, kind, float(factors[j]), layout, config, 2)
            if a is not None:
                refined.append((a.z, kind, j))
    if not refined:
        return None
    _, kind, j = max(refined)
    signal, tempo = _prepare(x16, kind, float(factors[j]))
    a = best_alignment(signal, layout, config, tempo=tempo)
    return None if a is None else Found(a, kind, float(factors[j]))


def search_signal(x16: Signal, layout: Layout, config: WatermarkConfig) -> tuple[Found, int] | None:
    """:func:`search` of a one-channel 16 kHz signal of any length: the whole signal up to
    ``SEARCH_LIMIT_S``, else its loudest excerpt that long; with the excerpt's first sample."""
    n = int(SEARCH_LIMIT_S * config.sample_rate)
    start = 0 if x16.length <= n else loudest_start(x16, n, config.sample_rate // 4)
    found = search(x16.read(start, min(start + n, x16.length))[0], layout, config)
    return None if found is None else (found, start)


def loudest_start(x16: Signal, n: int, hop: int) -> int:
    """First sample of the loudest ``n`` samples of a one-channel signal, on a grid of ``hop``
    samples (energy of whole hops, read ``ENERGY_BLOCK`` hops at a time)."""
    n_hops, step = x16.length // hop, ENERGY_BLOCK * hop
    energy = np.empty(n_hops)
    for a in range(0, n_hops * hop, step):
        b = min(a + step, n_hops * hop)
        x = x16.read(a, b)[0]
        energy[a // hop: b // hop] = (x * x).reshape(-1, hop).sum(axis=1)  # (hops,)
    total = np.concatenate([[0.0], np.cumsum(energy)])
    width = n // hop
    return int(np.argmax(total[width:] - total[:-width])) * hop
