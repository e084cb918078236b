"""The fast subset of the robustness benchmark: a marked clip survives real codecs (PyAV:
MP3 32k, AAC 64k, Opus 32k), resampling, polarity, gain with clipping, a 2 s crop, a shift,
and a 0.9x speed change (with the speed/tempo search); the same attacks on the unmarked clip
stay below the threshold. benchmarks/watermark/robustness.py runs the whole protocol on 400
clips."""

from __future__ import annotations

import numpy as np
import pytest
from v2a_runtime.oracles import attacks, clips
from v2a_runtime.watermark import WatermarkKey, detect, embed, make_payload, threshold_z

KEY = WatermarkKey.from_secret(bytes(range(100, 132)))
PAYLOAD = make_payload(3, 0x123456)
ATTACKS_16K = ["mp3_32k", "aac_64k", "opus_32k", "resample_2x", "polarity", "gain_10_clip",
               "crop_2s", "shift_1234"]
ATTACKS_44K = ["mp3_32k", "aac_64k", "opus_32k", "resample_48k", "resample_16k", "crop_2s"]


@pytest.fixture(scope="module", params=[16000, 44100])
def clip(request):
    sr = request.param
    x = clips.make_clip("foley", 21, sr, 6.0)
    return sr, x, embed(x, sr, KEY, PAYLOAD)


def _attack(name, audio, sr, x):
    ctx = attacks.Context(np.random.default_rng(5), x, x)
    return attacks.apply(name, audio, sr, ctx)


def test_survives_offset_attacks(clip):
    sr, x, y = clip
    names = ATTACKS_16K if sr == 16000 else ATTACKS_44K
    for name in names:
        d = detect(_attack(name, y, sr, x), sr, KEY, search="offset")
        assert d.present and d.z > 1.3 * d.threshold_z, (name, d.z)
        assert d.crc_ok and d.payload == PAYLOAD, name
        neg = detect(_attack(name, x, sr, x), sr, KEY, search="offset")
        assert not neg.present and neg.z < 5.0, (name, neg.z)


def test_shift_reports_the_offset(clip):
    sr, x, y = clip
    shifted = np.concatenate([np.zeros(sr // 2, np.float32), y])  # 0.5 s of silence first
    d = detect(shifted, sr, KEY, search="offset")
    # the block grid now starts 0.5 s in; the sub-hop search resolves 64/16000 s
    assert d.present and abs(d.offset_samples - sr // 2) <= sr * 64 // 16000


def test_speed_change_needs_and_gets_the_search(clip):
    sr, x, y = clip
    fast = _attack("speed_0.9", y, sr, x)
    assert not detect(fast, sr, KEY, search="offset").present
    d = detect(fast, sr, KEY, search="auto")
    assert d.present and d.search == "speed/tempo" and d.speed == pytest.approx(0.9, abs=0.003)
    assert d.threshold_z > threshold_z(1e-6, 256) and d.payload == PAYLOAD
