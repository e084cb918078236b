"""Quality and detection metrics for the watermark benchmark (pure numpy, + pesq/pystoi)."""

from __future__ import annotations

import numpy as np
from scipy import signal


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    n = min(len(ref), len(test))
    noise = np.sum((test[:n] - ref[:n]) ** 2)
    return float(10 * np.log10(np.sum(ref[:n] ** 2) / max(noise, 1e-20)))


def si_snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    n = min(len(ref), len(test))
    r, t = ref[:n] - ref[:n].mean(), test[:n] - test[:n].mean()
    s = np.dot(t, r) / max(np.dot(r, r), 1e-20) * r
    return float(10 * np.log10(np.sum(s ** 2) / max(np.sum((t - s) ** 2), 1e-20)))


def seg_snr_db(ref: np.ndarray, test: np.ndarray, sr: int) -> float:
    """Mean per-20 ms SNR, each clamped to [-10, 35] dB, over frames above -60 dB."""
    n = int(0.02 * sr)
    m = min(len(ref), len(test)) // n
    r = ref[: m * n].reshape(m, n)  # (frames, n)
    e = test[: m * n].reshape(m, n) - r
    pr, pe = np.sum(r ** 2, 1), np.sum(e ** 2, 1)
    live = pr > np.max(pr) * 1e-6
    seg = 10 * np.log10(pr[live] / np.maximum(pe[live], 1e-20))
    return float(np.mean(np.clip(seg, -10, 35))) if live.any() else float("nan")


def lsd_db(ref: np.ndarray, test: np.ndarray, sr: int) -> float:
    """Log-spectral distance (dB RMS over frequency, mean over frames), 32 ms frames."""
    n = min(len(ref), len(test))
    nper = int(0.032 * sr)
    _, _, a = signal.stft(ref[:n], nperseg=nper)
    _, _, b = signal.stft(test[:n], nperseg=nper)
    la = 10 * np.log10(np.abs(a) ** 2 + 1e-10)
    lb = 10 * np.log10(np.abs(b) ** 2 + 1e-10)
    return float(np.mean(np.sqrt(np.mean((la - lb) ** 2, axis=0))))


def pesq_wb(ref16: np.ndarray, test16: np.ndarray) -> float:
    from pesq import pesq

    try:
        return float(pesq(16000, ref16.astype(np.float64), test16.astype(np.float64), "wb"))
    except Exception:  # pesq raises on clips without detectable speech
        return float("nan")


def stoi(ref: np.ndarray, test: np.ndarray, sr: int) -> float:
    from pystoi import stoi as _stoi

    n = min(len(ref), len(test))
    return float(_stoi(ref[:n], test[:n], sr, extended=False))


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + ½ P(tie), by ranks."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    ranks = np.argsort(np.argsort(allv, kind="mergesort"), kind="mergesort") + 1.0
    # average ranks of ties
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def bit_accuracy(decoded: int, truth: int, bits: int = 32) -> float:
    return 1.0 - bin((decoded ^ truth) & ((1 << bits) - 1)).count("1") / bits
