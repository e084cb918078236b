"""Key-randomisation null: the same audio scored with many random keys (spec/watermark.md
§5.5, §6.1). Features do not depend on the key, so they are computed once per sub-hop offset
and every random key costs only a few small FFTs. Used for the empirical p-value cross-check of
``detect(..., null_keys=N)`` and by the benchmark's 10⁵-trial null."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from .analysis import SUB_HOP_STEPS, Grid, grid_features
from .features import fold
from .layout import WatermarkConfig, make_layout


def null_secrets(n: int, label: str = "") -> list[bytes]:
    """``n`` fixed pseudo-random keys (never a real key: they are public)."""
    return [hashlib.sha256(f"v2a-wm null key {label} {i}".encode()).digest() for i in range(n)]


def null_scores(x16: np.ndarray, secrets: Iterable[bytes], config: WatermarkConfig) -> np.ndarray:
    """Best pilot z over the offset search's 256 alignments for each key, shape (n_keys,)."""
    folded = []
    for k in range(SUB_HOP_STEPS):
        _, feats, _ = grid_features(x16, Grid(k * config.hop // SUB_HOP_STEPS), config)
        if feats is not None:
            folded.append(fold(feats, config.block_frames))  # (T, C)
    return null_scores_folded(folded, secrets, config)


def null_scores_folded(folded: Sequence[np.ndarray], secrets: Iterable[bytes],
                       config: WatermarkConfig) -> np.ndarray:
    """:func:`null_scores` from each sub-hop grid's folded features ((T, C) each)."""
    spectra = [(np.fft.rfft(f, axis=0), np.fft.rfft(f ** 2, axis=0)) for f in folded]
    scores = []
    for secret in secrets:
        layout = make_layout.__wrapped__(secret, config)  # uncached: thousands of keys
        fq = np.conj(np.fft.rfft(layout.pilot * layout.chips, axis=0))
        fp = np.conj(np.fft.rfft(layout.pilot.astype(np.float64), axis=0))
        best = -np.inf
        for fa, fa2 in spectra:  # same circular correlation as analysis.pilot_scores
            num = np.fft.irfft((fq * fa).sum(axis=1), n=config.block_frames)
            den = np.fft.irfft((fp * fa2).sum(axis=1), n=config.block_frames)
            best = max(best, float(np.max(num / np.sqrt(np.maximum(den, 1e-12)))))
        scores.append(best)
    return np.array(scores)


def empirical_p_value(z: float, null: np.ndarray) -> float:
    """(1 + #{null ≥ z}) / (n + 1): never zero, valid for any n."""
    return float((1 + np.sum(null >= z)) / (len(null) + 1))
