"""Broadcast loudness: EBU R128 integrated loudness (ITU-R BS.1770-4, pyloudnorm's K-weighting
and gating) brought to a target under a true-peak ceiling, on arrays or on signals read in
blocks (a long track on disk never has to be in memory).

Arrays ((W,) mono or (C, W); all channels share one gain):

    normalize(audio, rate, Loudness(target=-23.0, true_peak=-1.0) or None = EBU R128)
        -> (audio, LoudnessReport)
    integrated_loudness(audio, rate) -> LUFS      (-inf for silence)
    true_peak(audio, rate) -> dBTP                (BS.1770-4 Annex 2: 8x oversampled peak)
    trim_peak(audio, rate, ceiling_db) -> audio   (one static gain, only if over the ceiling)

Signals (:mod:`v2a_runtime.signals`): :func:`normalized` (a context manager: the rounds'
intermediate results wait in spool files), :func:`trimmed`, :func:`integrated`,
:func:`signal_true_peak`. The array functions are these on the array: one implementation.

How (:mod:`.normalize`): the gain that brings the integrated loudness to the target; where that
lifts the true peak above the ceiling, a look-ahead peak limiter (:mod:`.peaks`) pulls the
peaks down and the gain is measured again, up to ``PASSES`` times; a last static trim
guarantees the ceiling. Silence is returned unchanged.
"""

from __future__ import annotations

import numpy as np

from ..signals import ArraySignal
from .meter import integrated
from .normalize import PASSES, TOLERANCE_LU, Loudness, LoudnessReport, normalized, trimmed
from .peaks import LOOKAHEAD, OVERSAMPLE
from .peaks import true_peak as signal_true_peak


def _signal(audio: np.ndarray, rate: int) -> ArraySignal:
    a = np.asarray(audio)
    return ArraySignal(a[None] if a.ndim == 1 else a, int(rate))  # (C, W)


def integrated_loudness(audio: np.ndarray, rate: int) -> float:
    """Gated integrated loudness (LUFS) of (W,) or (C, W) audio; -inf for silence. At least
    one 400 ms block is needed."""
    return integrated(_signal(audio, rate))


def true_peak(audio: np.ndarray, rate: int) -> float:
    """True peak in dBTP (BS.1770-4 Annex 2, 8x oversampling); -inf for silence."""
    return signal_true_peak(_signal(audio, rate))


def normalize(
    audio: np.ndarray, rate: int, loudness: Loudness | None = None
) -> tuple[np.ndarray, LoudnessReport]:
    """``audio`` (W,) or (C, W) brought to ``loudness.target`` LUFS with true peaks at or
    below ``loudness.true_peak`` dBTP; float32 out, same shape."""
    signal = _signal(audio, rate)
    with normalized(signal, loudness or Loudness(), spool=None) as (out, report):
        y = out.read(0, signal.length).astype(np.float32)
    return y.reshape(np.shape(audio)), report


def trim_peak(audio: np.ndarray, rate: int, ceiling_db: float) -> np.ndarray:
    """``audio`` scaled down (one static gain) so its true peak is at most ``ceiling_db``
    dBTP; unchanged when it already is (e.g. after a watermark added a little energy)."""
    _, factor = trimmed(_signal(audio, rate), ceiling_db)
    if factor is None:
        return audio
    return (audio * factor).astype(np.asarray(audio).dtype, copy=False)


__all__ = ["LOOKAHEAD", "Loudness", "LoudnessReport", "OVERSAMPLE", "PASSES", "TOLERANCE_LU",
           "integrated", "integrated_loudness", "normalize", "normalized", "signal_true_peak",
           "trim_peak", "trimmed", "true_peak"]  # fmt: skip
