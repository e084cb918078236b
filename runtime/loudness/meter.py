"""Integrated loudness (ITU-R BS.1770-4, EBU R128) of a signal read block by block.

    integrated(signal, block=BLOCK) -> LUFS (-inf for silence)

The K-weighting filters are pyloudnorm's (its ``Meter``'s two IIR stages), run over the blocks
with their state carried from one block to the next, so the filtered signal is the one a
single ``lfilter`` over the whole track gives. The gating blocks (400 ms, 75 % overlap) take
their bounds, mean squares and the two gates (absolute -70 LUFS, relative -10 LU) exactly as
pyloudnorm's ``integrated_loudness`` does, so the result equals its value on the whole array
(tests/test_loudness.py holds them equal) while only one read block and the last 400 ms of the
filtered signal are held, plus one float per gating block and channel (36,000 per channel and
hour).
"""

from __future__ import annotations

import math

import numpy as np

from ..signals import Signal, blocks
from .peaks import BLOCK

GATE_S = 0.4  # gating block length
STEP = 1.0 - 0.75  # gating blocks overlap by 75 %
ABSOLUTE_GATE = -70.0  # LUFS
RELATIVE_GATE = -10.0  # LU under the absolute-gated loudness
CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)  # L, R, C, Ls, Rs
OFFSET = -0.691  # dB: the K-weighting's gain at 1 kHz, cancelled


def _stages(rate: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(b, a, passband gain) of each K-weighting stage at ``rate``, as pyloudnorm builds them."""
    import pyloudnorm

    meter = pyloudnorm.Meter(rate)
    return [(f.b, f.a, f.passband_gain) for f in meter._filters.values()]


def _bounds(j: int, rate: int) -> tuple[int, int]:
    """Sample range [l, u) of gating block j (the float expression pyloudnorm evaluates)."""
    return int(GATE_S * (j * STEP) * rate), int(GATE_S * (j * STEP + 1) * rate)


def block_energies(signal: Signal, block: int = BLOCK) -> np.ndarray:
    """(channels, J) mean square of the K-weighted signal in each gating block."""
    from scipy.signal import lfilter

    rate, n, c = signal.rate, signal.length, signal.channels
    if n < round(GATE_S * rate):
        raise ValueError(f"loudness needs at least {GATE_S} s of audio, got {n / rate:.3f} s")
    count = int(np.round((n / rate - GATE_S) / (GATE_S * STEP))) + 1
    z = np.zeros((c, count))
    stages = _stages(rate)
    state = [np.zeros((c, max(len(a), len(b)) - 1)) for b, a, _ in stages]
    tail, tail_start, j = np.zeros((c, 0)), 0, 0  # filtered samples from tail_start on
    scale = 1.0 / (GATE_S * rate)

    def close(buf: np.ndarray, start: int, until: int) -> int:
        """Fill z for every block j.. that ends by ``until``; returns the next j."""
        nonlocal j
        while j < count:
            lo, hi = _bounds(j, rate)
            if hi > until:
                break
            z[:, j] = scale * np.sum(np.square(buf[:, lo - start : hi - start]), axis=1)
            j += 1
        return j

    for x in blocks(signal, block):  # (c, m)
        for k, (b, a, gain) in enumerate(stages):
            y, state[k] = lfilter(b, a, x, axis=-1, zi=state[k])
            x = gain * y
        buf = np.concatenate([tail, x], axis=1)  # (c, samples from tail_start on)
        close(buf, tail_start, tail_start + buf.shape[1])
        keep = min(_bounds(j, rate)[0], tail_start + buf.shape[1]) if j < count else n
        tail, tail_start = buf[:, keep - tail_start :], keep
    # blocks that run past the end (rounding of the count): their slices end with the signal
    while j < count:
        lo, hi = _bounds(j, rate)
        z[:, j] = scale * np.sum(np.square(tail[:, lo - tail_start : hi - tail_start]), axis=1)
        j += 1
    return z


def gated(z: np.ndarray) -> float:
    """Integrated loudness (LUFS) from (channels, J) block energies; -inf when every block
    is under the absolute gate."""
    gains = np.asarray(CHANNEL_GAINS[: len(z)])[:, None]  # (channels, 1)
    with np.errstate(divide="ignore"):
        level = OFFSET + 10.0 * np.log10((gains * z).sum(axis=0))  # (J,) loudness per block
    above = level >= ABSOLUTE_GATE
    if not above.any():
        return -math.inf
    mean = np.array([z[i, above].mean() for i in range(len(z))])
    relative = OFFSET + 10.0 * np.log10((gains[:, 0] * mean).sum()) + RELATIVE_GATE
    kept = (level > relative) & (level > ABSOLUTE_GATE)
    if not kept.any():
        return -math.inf
    mean = np.array([z[i, kept].mean() for i in range(len(z))])
    with np.errstate(divide="ignore"):
        value = OFFSET + 10.0 * np.log10((gains[:, 0] * mean).sum())
    return float(value) if math.isfinite(value) else -math.inf


def integrated(signal: Signal, block: int = BLOCK) -> float:
    """Gated integrated loudness (LUFS) of ``signal``; -inf for silence."""
    return gated(block_energies(signal, block))


__all__ = ["block_energies", "gated", "integrated"]
