"""EBU R128 loudness of generated audio: the target reached (pyloudnorm's BS.1770-4 meter), the
true-peak ceiling kept (measured here at 16x oversampling, independently of the 8x in the
module), silence left alone, and the gain applied before the watermark so that it verifies;
block by block (a spool file, small reads), every number and sample equals the array path."""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import pytest
from scipy.signal import resample_poly
from v2a_runtime.loudness import (
    Loudness,
    integrated,
    integrated_loudness,
    normalize,
    normalized,
    true_peak,
)
from v2a_runtime.loudness.peaks import Limited, sample_peaks
from v2a_runtime.signals import ArraySignal, Spool, blocks

RATE = 16000


def measured_lufs(audio: np.ndarray, rate: int = RATE) -> float:
    return pyloudnorm.Meter(rate).integrated_loudness(np.asarray(audio, np.float64))


def peak_dbtp_16x(audio: np.ndarray) -> float:
    up = resample_poly(np.asarray(audio, np.float64), 16, 1)
    return 20 * math.log10(max(np.abs(up).max(), np.abs(audio).max()))


def impacts(seconds: float = 6.0, level: float = 0.03) -> np.ndarray:
    """Quiet noise with three sharp, loud hits: a peak-to-loudness ratio no gain alone can
    bring to -23 LUFS under -1 dBTP (what the default model makes: impacts over ambience)."""
    rng = np.random.default_rng(0)
    x = level * rng.standard_normal(int(seconds * RATE))
    n = np.arange(800)
    for t in (1.0, 2.5, 4.2):
        i = int(t * RATE)
        x[i : i + 800] += 0.9 * np.exp(-n / 15) * np.sin(0.9 * n)
    return x.astype(np.float32)


def test_meter_agrees_with_pyloudnorm_and_a_known_sine():
    """A full-scale 1 kHz sine is -3.01 LUFS by the standard's definition (0.691 dB offset
    cancels the K-weighting gain at 1 kHz); its true peak is 0 dBTP."""
    t = np.arange(4 * 48000) / 48000
    sine = np.sin(2 * np.pi * 997 * t)
    assert integrated_loudness(sine, 48000) == pytest.approx(-3.01, abs=0.05)
    assert true_peak(sine, 48000) == pytest.approx(0.0, abs=0.05)
    x = impacts()
    assert integrated_loudness(x, RATE) == pytest.approx(measured_lufs(x), abs=1e-9)


@pytest.mark.parametrize("target", [-23.0, -16.0])
def test_quiet_track_reaches_the_target(target):
    rng = np.random.default_rng(1)
    x = (0.01 * rng.standard_normal(5 * RATE)).astype(np.float32)  # about -40 LUFS
    y, report = normalize(x, RATE, Loudness(target, -1.0))
    assert measured_lufs(x) < -35
    assert measured_lufs(y) == pytest.approx(target, abs=0.1)
    assert peak_dbtp_16x(y) <= -1.0 + 0.05
    assert not report.limited and report.gain_db == pytest.approx(target - report.before, abs=0.1)
    assert y.dtype == np.float32 and y.shape == x.shape


def test_peaky_track_is_limited_to_the_ceiling_and_still_reaches_the_target():
    x = impacts()
    gain_only = x * 10 ** ((-23.0 - measured_lufs(x)) / 20)
    assert peak_dbtp_16x(gain_only) > 3.0  # a plain gain would clip far above the ceiling
    y, report = normalize(x, RATE)
    assert report.limited
    assert measured_lufs(y) == pytest.approx(-23.0, abs=0.2)
    assert peak_dbtp_16x(y) <= -1.0 + 0.05
    assert report.true_peak <= -1.0 and report.after == pytest.approx(measured_lufs(y), abs=1e-6)


def test_clipping_track_is_brought_down():
    rng = np.random.default_rng(2)
    x = np.clip(3 * rng.standard_normal(4 * RATE), -1, 1).astype(np.float32)  # full scale
    y, report = normalize(x, RATE)
    assert measured_lufs(x) > -2
    assert measured_lufs(y) == pytest.approx(-23.0, abs=0.1)
    assert report.gain_db < -20


def test_silence_is_left_unchanged():
    x = np.zeros(2 * RATE, np.float32)
    y, report = normalize(x, RATE)
    assert np.array_equal(x, y) and report.before == -math.inf and report.gain_db == 0.0
    assert report.to_dict()["before_lufs"] is None  # JSON-safe


def test_bad_targets_are_refused():
    with pytest.raises(ValueError, match="loudness target"):
        Loudness(5.0)
    with pytest.raises(ValueError, match="true-peak"):
        Loudness(-23.0, 3.0)
    with pytest.raises(ValueError, match="at least 0.4 s"):
        integrated_loudness(np.ones(100), RATE)


# --- block by block (issue 21): a long track is measured and normalised from a spool file ---


@pytest.mark.parametrize("block", [997, 6400, 1 << 20])
@pytest.mark.parametrize("shape", [(1, 5 * RATE + 77), (2, 3 * RATE), (1, int(0.45 * RATE))])
def test_meter_in_blocks_equals_pyloudnorm_on_the_whole_array(block, shape):
    """Filter state carried across blocks, gating blocks cut from a 400 ms tail: the value is
    pyloudnorm's on the whole array, to the last bit, whatever the read block."""
    rng = np.random.default_rng(shape[1])
    x = 0.05 * rng.standard_normal(shape) * np.linspace(0.1, 2.0, shape[1])  # level changes
    expected = pyloudnorm.Meter(RATE).integrated_loudness(x.T if shape[0] > 1 else x[0])
    assert integrated(ArraySignal(x, RATE), block) == expected


def test_limited_reads_equal_the_whole_limited_signal():
    """Any range of the lazy limiter (its context read around it) equals that range of the
    whole limited signal, bit for bit, including ranges at both ends and past them."""
    x = ArraySignal((8 * impacts(5.0)[None]).astype(np.float64), RATE)  # peaks far over 1
    limited = Limited(x, 0.5)
    whole = limited.read(0, x.length)
    assert sample_peaks(x, 0, x.length).max() > 4.0  # (the gain's own ripple: ~1e-4 over)
    assert sample_peaks(ArraySignal(whole, RATE), 0, x.length).max() <= 0.5 * 1.001
    for start, stop in [(0, 10), (5, 16003), (16000 + 400, 16000 + 900), (x.length - 7, x.length),
                        (-30, 40), (x.length - 40, x.length + 25)]:  # fmt: skip
        got = limited.read(start, stop)
        lo, hi = max(start, 0), min(stop, x.length)
        np.testing.assert_array_equal(got[:, lo - start : hi - start], whole[:, lo:hi])
        assert not got[:, : lo - start].any() and not got[:, hi - start :].any()


@pytest.mark.parametrize("level", [0.01, 1.0])  # gain only; gain + limiter (impacts)
def test_normalized_from_a_spool_equals_normalize_on_the_array(tmp_path, level):
    """The streamed rounds (each written to a float64 spool file, read back in small blocks)
    give the array path's samples exactly; the spool files are gone afterwards."""
    x = impacts(5.0) if level == 1.0 else (level * np.random.default_rng(3).standard_normal(
        5 * RATE)).astype(np.float32)  # fmt: skip
    expected, report = normalize(x, RATE)
    with Spool(1, RATE, tmp_path) as spool:
        spool.append(x[None])
        with normalized(spool, Loudness(), spool=tmp_path, block=4001) as (y, streamed):
            got = np.concatenate([b for b in blocks(y, 3000)], axis=1)[0].astype(np.float32)
            assert len(list(tmp_path.iterdir())) == 2  # the input and the last round
    assert list(tmp_path.iterdir()) == []
    np.testing.assert_array_equal(got, expected)
    assert streamed == report and report.limited == (level == 1.0)
