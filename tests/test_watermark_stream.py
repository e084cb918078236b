"""``detect_signal`` (``v2a watermark verify``'s block-wise detector) against ``detect`` on the
whole array: the same verdict, payload, offset and search result, z and per-second z to float
rounding (rel 1e-9), on clips of many blocks; a long signal's speed/tempo search on its loudest
excerpt."""

from __future__ import annotations

import numpy as np
import pytest
from make_watermark_golden import KEY, PAYLOAD
from scipy.signal import resample_poly
from v2a_runtime.oracles import clips
from v2a_runtime.signals import ArraySignal, MonoMix, Resampled
from v2a_runtime.watermark import DEFAULT_CONFIG, detect, embed
from v2a_runtime.watermark import search as search_module
from v2a_runtime.watermark.analysis import Alignment, best_alignment
from v2a_runtime.watermark.detect import _to_mono16
from v2a_runtime.watermark.detect_stream import detect_signal
from v2a_runtime.watermark.layout import make_layout
from v2a_runtime.watermark.scan import scan

BLOCK = 40  # frames per block (1.3 s): a 20 s clip is 16 blocks
RTOL = 1e-9  # z, soft bits, per-second z: the statistics' summation order differs
EXACT = ("present", "payload", "crc_ok", "model_id", "generation_id", "offset_samples", "speed",
         "tempo", "search", "n_hypotheses", "threshold_z", "key_id", "p_value_empirical")


@pytest.fixture(scope="module")
def stereo():
    """20 s of music + ambience at 44.1 kHz stereo, float32, and the same marked."""
    x = np.stack([clips.make_clip("music", 31, 44100, 20.0),
                  0.5 * clips.make_clip("ambience", 32, 44100, 20.0)]).astype(np.float32)
    return x, embed(x, 44100, KEY, PAYLOAD)


def _assert_same(streamed, whole):
    for field in EXACT:
        assert getattr(streamed, field) == getattr(whole, field), field
    assert streamed.z == pytest.approx(whole.z, rel=RTOL)
    assert len(streamed.per_second_z) == len(whole.per_second_z)
    np.testing.assert_allclose(streamed.per_second_z, whole.per_second_z, rtol=RTOL, atol=RTOL)


def test_offset_stage_in_blocks_equals_best_alignment(stereo):
    x16 = _to_mono16(stereo[1], 44100, DEFAULT_CONFIG)
    layout = make_layout(KEY.secret, DEFAULT_CONFIG)
    a = best_alignment(x16, layout, DEFAULT_CONFIG)
    whole = Alignment.of(a, layout, DEFAULT_CONFIG)
    signal = Resampled(MonoMix(ArraySignal(stereo[1], 44100)), 16000)
    got = scan(signal, layout, DEFAULT_CONFIG, block_frames=BLOCK).best
    assert len(got.starts) > 10 * BLOCK
    assert got.phase == whole.phase and np.array_equal(got.starts, whole.starts)
    assert got.z == pytest.approx(whole.z, rel=RTOL) and got.z > 20
    scale = np.abs(whole.soft).max()
    np.testing.assert_allclose(got.soft / scale, whole.soft / scale, rtol=0, atol=RTOL)
    for mine, theirs in ((got.pilot_num, whole.pilot_num), (got.pilot_den, whole.pilot_den)):
        np.testing.assert_allclose(mine, theirs, rtol=RTOL, atol=RTOL * np.abs(theirs).max())


def test_streamed_detection_equals_detect_on_a_marked_clip(stereo):
    y = stereo[1]
    whole = detect(y, 44100, KEY, search="offset", null_keys=20)
    streamed = detect_signal(ArraySignal(y, 44100), KEY, search="offset", null_keys=20,
                             block_frames=BLOCK)
    assert whole.present and whole.payload == PAYLOAD and whole.p_value_empirical == 1 / 21
    _assert_same(streamed, whole)
    _assert_same(detect_signal(ArraySignal(y, 44100), KEY), detect(y, 44100, KEY))  # auto


def test_streamed_detection_equals_detect_on_an_unmarked_clip():
    """The offset stage finds nothing, so ``auto`` runs the speed/tempo search: on a signal
    under SEARCH_LIMIT_S, on the same array as ``detect``'s (bit for bit)."""
    x = clips.make_clip("foley", 33, 16000, 8.0).astype(np.float32)
    whole = detect(x, 16000, KEY, search="auto")
    streamed = detect_signal(ArraySignal(x[None], 16000), KEY, search="auto", block_frames=BLOCK)
    assert not whole.present and whole.search == "speed/tempo"
    assert (whole.speed, whole.tempo) != (1.0, 1.0)  # the search's find decided
    _assert_same(streamed, whole)
    assert streamed.z == whole.z  # the search's find: the same array, the same arithmetic


def test_a_long_signal_is_searched_on_its_loudest_excerpt(monkeypatch):
    """A slowed (speed 0.9) marked 8 s clip inside 24 s of faint noise, the search limited to
    6 s: the search runs on the 6 s of the clip and finds it; per-second z covers them."""
    monkeypatch.setattr(search_module, "SEARCH_LIMIT_S", 6.0)
    rate = 16000
    y = embed(clips.make_clip("foley", 34, rate, 8.0), rate, KEY, PAYLOAD)
    slow = resample_poly(y, 10, 9)  # 8.9 s, played at 0.9 of the speed
    x = 1e-3 * np.random.default_rng(0).standard_normal(24 * rate)
    x[12 * rate: 12 * rate + len(slow)] += slow
    signal = ArraySignal(x[None], rate)
    start = search_module.loudest_start(signal, 6 * rate, rate // 4)
    assert 12 * rate <= start <= 12 * rate + len(slow) - 6 * rate
    d = detect_signal(signal, KEY, search="auto", block_frames=BLOCK)
    assert d.present and d.payload == PAYLOAD and d.search == "speed/tempo"
    assert d.speed == pytest.approx(0.9, abs=0.003)
    assert len(d.per_second_z) == 24 and 0 <= d.offset_samples < 1.2 * rate
    seconds = np.array(d.per_second_z)
    first = start // rate
    assert not seconds[:first].any() and not seconds[first + 7:].any()  # outside the excerpt
    assert (seconds[first + 1: first + 5] > 3).all()


def test_streamed_detection_refuses_bad_audio():
    x = np.zeros((1, 20000))
    with pytest.raises(ValueError, match="too short"):
        detect_signal(ArraySignal(x[:, :600], 16000), KEY)
    x[0, 12345] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        detect_signal(ArraySignal(x, 16000), KEY)
    with pytest.raises(ValueError, match="search must be one of"):
        detect_signal(ArraySignal(x, 16000), KEY, search="fast")
    with pytest.raises(ValueError, match="8000 Hz"):
        detect_signal(ArraySignal(x, 4000), KEY)
