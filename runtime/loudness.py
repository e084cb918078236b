"""Broadcast loudness: EBU R128 integrated loudness (ITU-R BS.1770-4, measured with pyloudnorm)
brought to a target, under a true-peak ceiling.

    normalize(audio, rate, Loudness(target=-23.0, true_peak=-1.0)) -> (audio, LoudnessReport)
    integrated_loudness(audio, rate) -> LUFS      (-inf for silence)
    true_peak(audio, rate) -> dBTP                (BS.1770-4 Annex 2: 8x oversampled peak)

``normalize`` applies the gain that brings the integrated loudness to the target; where that
lifts the true peak above the ceiling, a look-ahead peak limiter (gain envelope: the gain each
oversampled peak needs, spread by a minimum filter of ±``LOOKAHEAD`` and smoothed by a moving
average half as long, so the smoothed gain never exceeds what any peak needs) pulls the peaks
down and the gain is measured again, up to ``PASSES`` times; a last static trim guarantees the
ceiling. Silence (integrated loudness -inf: every 400 ms block below the -70 LUFS gate) is
returned unchanged. Audio is (W,) mono or (C, W); all channels share one gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OVERSAMPLE = 8  # BS.1770-4 Annex 2 asks >= 4x at 48 kHz; 8x under-reads less (<0.2 dB)
LOOKAHEAD = 0.005  # seconds the limiter's gain reaches ahead of (and holds after) a peak
PASSES = 4  # gain + limiter rounds
TOLERANCE_LU = 0.1  # stop once the loudness is this close to the target


@dataclass(frozen=True)
class Loudness:
    """A loudness target: integrated loudness in LUFS and the true-peak ceiling in dBTP."""

    target: float = -23.0  # EBU R128
    true_peak: float = -1.0  # EBU R128 (lossy delivery: -1 dBTP)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target) and -70.0 < self.target <= 0.0):
            raise ValueError(f"loudness target must be in (-70, 0] LUFS, got {self.target!r}")
        if not (math.isfinite(self.true_peak) and -20.0 <= self.true_peak <= 0.0):
            raise ValueError(f"true-peak ceiling must be in [-20, 0] dBTP, got {self.true_peak!r}")


@dataclass(frozen=True)
class LoudnessReport:
    """What ``normalize`` measured and did to one track."""

    before: float  # integrated loudness of the input, LUFS (-inf: silence)
    after: float  # integrated loudness of the output, LUFS
    true_peak: float  # true peak of the output, dBTP
    gain_db: float  # overall gain (loudness after - before); 0 for silence
    limited: bool  # the peak limiter acted (the target alone would exceed the ceiling)

    def to_dict(self) -> dict:
        def num(x: float) -> float | None:  # JSON has no -inf
            return round(x, 3) if math.isfinite(x) else None

        return {"before_lufs": num(self.before), "after_lufs": num(self.after),
                "true_peak_dbtp": num(self.true_peak), "gain_db": num(self.gain_db),
                "limited": self.limited}  # fmt: skip


def _channels_last(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float64)
    return a if a.ndim == 1 else a.T  # pyloudnorm: (W,) or (W, C)


def integrated_loudness(audio: np.ndarray, rate: int) -> float:
    """Gated integrated loudness (LUFS) of (W,) or (C, W) audio; -inf for silence. At least
    one 400 ms block is needed."""
    import pyloudnorm

    data = _channels_last(audio)
    if data.shape[0] < round(0.4 * rate):
        seconds = data.shape[0] / rate
        raise ValueError(f"loudness needs at least 0.4 s of audio, got {seconds:.3f} s")
    with np.errstate(divide="ignore"):
        value = float(pyloudnorm.Meter(rate).integrated_loudness(data))
    return value if math.isfinite(value) else -math.inf


def _peaks(audio: np.ndarray) -> np.ndarray:
    """Per-sample true peak (linear): the largest |x| of the 8x oversampled signal in each
    sample's 8 sub-samples, over all channels; (W,)."""
    from scipy.signal import resample_poly

    a = np.atleast_2d(np.asarray(audio, dtype=np.float64))  # (C, W)
    up = np.abs(resample_poly(a, OVERSAMPLE, 1, axis=1))  # (C, 8W)
    per = up[:, : a.shape[1] * OVERSAMPLE].reshape(a.shape[0], a.shape[1], OVERSAMPLE)
    return np.maximum(per.max(axis=(0, 2)), np.abs(a).max(axis=0))


def true_peak(audio: np.ndarray, rate: int) -> float:  # noqa: ARG001 - same signature as loudness
    """True peak in dBTP (BS.1770-4 Annex 2, 8x oversampling); -inf for silence."""
    peak = float(_peaks(audio).max())
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def _limit(audio: np.ndarray, rate: int, ceiling: float) -> np.ndarray:
    """A look-ahead limiter: every sample's gain <= what each peak within LOOKAHEAD needs."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    reach = max(1, round(LOOKAHEAD * rate))
    need = np.minimum(1.0, ceiling / np.maximum(_peaks(audio), 1e-12))  # (W,)
    held = minimum_filter1d(need, size=2 * reach + 1, mode="nearest")
    gain = uniform_filter1d(held, size=reach | 1, mode="nearest")  # odd size, within the hold
    return audio * np.minimum(gain, need)  # (float rounding guard)


def normalize(
    audio: np.ndarray, rate: int, loudness: Loudness = Loudness()
) -> tuple[np.ndarray, LoudnessReport]:
    """``audio`` (W,) or (C, W) brought to ``loudness.target`` LUFS with true peaks at or
    below ``loudness.true_peak`` dBTP; float32 out, same shape."""
    x = np.asarray(audio, dtype=np.float64)
    before = integrated_loudness(x, rate)
    if before == -math.inf:
        return np.asarray(audio, np.float32), LoudnessReport(
            before, before, true_peak(x, rate), 0.0, False
        )
    ceiling = 10 ** (loudness.true_peak / 20) * 0.999  # a hair below: float32 and 16-bit
    y, limited, now = x, False, before
    for _ in range(PASSES):
        y = y * 10 ** ((loudness.target - now) / 20)
        if _peaks(y).max() > ceiling:
            y, limited = _limit(y, rate, ceiling), True
        now = integrated_loudness(y, rate)
        if abs(now - loudness.target) <= TOLERANCE_LU:
            break
    y = trim_peak(y, rate, loudness.true_peak)
    after = integrated_loudness(y, rate)
    report = LoudnessReport(before, after, true_peak(y, rate), after - before, limited)
    return y.astype(np.float32), report


def trim_peak(audio: np.ndarray, rate: int, ceiling_db: float) -> np.ndarray:
    """``audio`` scaled down (one static gain) so its true peak is at most ``ceiling_db``
    dBTP; unchanged when it already is (e.g. after a watermark added a little energy)."""
    peak = true_peak(audio, rate)
    limit = ceiling_db + 20 * math.log10(0.999)
    if peak <= limit:
        return audio
    return (audio * 10 ** ((limit - peak) / 20)).astype(np.asarray(audio).dtype, copy=False)


__all__ = ["Loudness", "LoudnessReport", "integrated_loudness", "normalize", "trim_peak",
           "true_peak"]  # fmt: skip
