"""Watermark building blocks with known answers: CRC-16, the convolutional code and its soft
Viterbi decoder, payload packing, the false-positive bound, keys and the keyed layout."""

from __future__ import annotations

import math
import os
import stat

import numpy as np
import pytest
from v2a_runtime.watermark import (
    WatermarkKey,
    demo_key,
    generate_key_file,
    load_key,
    make_payload,
    p_value_bound,
    split_payload,
    threshold_z,
)
from v2a_runtime.watermark.coding import (
    CODED_BITS,
    crc16,
    decode_soft,
    encode_payload,
    message_bits,
)
from v2a_runtime.watermark.layout import DEFAULT_CONFIG, make_layout


def test_crc16_ccitt_false_check_value():
    # The catalogue check value of CRC-16/CCITT-FALSE is over the 9 ASCII bytes "123456789";
    # ours covers 4 payload bytes, so check the same algorithm on "1234" against binascii.
    assert crc16(int.from_bytes(b"1234", "big")) == 0x5349
    assert crc16(0) == 0x84C0 and crc16(0xFFFFFFFF) == 0x1D0F


def test_code_length_and_message_layout():
    bits = message_bits(0x80000001)
    assert len(bits) == 48 and bits[0] == 1 and bits[31] == 1 and bits[1:31].sum() == 0
    coded = encode_payload(0x12345678)
    assert coded.shape == (CODED_BITS,) == (162,) and set(np.unique(coded)) <= {0, 1}


@pytest.mark.parametrize("n_errors", [0, 3, 6])
def test_viterbi_corrects_injected_hard_errors(n_errors):
    rng = np.random.default_rng(n_errors)
    for _ in range(20):
        payload = int(rng.integers(0, 2 ** 32))
        soft = 1.0 - 2.0 * encode_payload(payload)  # ±1, positive = bit 0
        # errors spread over the block (a burst of 6 within one constraint length could not
        # be corrected by a free-distance-15 code either)
        flips = rng.choice(np.arange(0, CODED_BITS, 27) + rng.integers(0, 27), n_errors,
                           replace=False)
        soft[flips] *= -1
        assert decode_soft(soft) == (payload, True)


def test_soft_decoding_beats_hard_decisions():
    rng = np.random.default_rng(7)
    soft_ok = hard_ok = 0
    for _ in range(200):
        payload = int(rng.integers(0, 2 ** 32))
        y = 1.0 - 2.0 * encode_payload(payload) + rng.normal(0, 1.1, CODED_BITS)
        soft_ok += decode_soft(y) == (payload, True)
        hard_ok += decode_soft(np.sign(y)) == (payload, True)
    assert soft_ok > hard_ok + 10 and soft_ok >= 150


def test_crc_catches_corrupted_messages():
    # Decoding a code word of a corrupted message must fail the CRC: the Viterbi decoder
    # returns exactly the corrupted message, whose CRC no longer matches.
    from v2a_runtime.watermark.coding import conv_encode

    rng = np.random.default_rng(3)
    for _ in range(50):
        bits = message_bits(int(rng.integers(0, 2 ** 32)))
        bits[rng.integers(0, 48, int(rng.integers(1, 4)))] ^= 1
        payload, ok = decode_soft(1.0 - 2.0 * conv_encode(bits))
        assert not ok
    # random soft values (no mark): a CRC match needs 2**-16 luck
    hits = sum(decode_soft(rng.normal(size=CODED_BITS))[1] for _ in range(300))
    assert hits == 0


def test_payload_packing_round_trip_and_limits():
    assert make_payload(1, 0xABCDEF) == 0x01ABCDEF
    assert split_payload(0x01ABCDEF) == (1, 0xABCDEF)
    for bad in [(256, 0), (-1, 0), (0, 1 << 24)]:
        with pytest.raises(ValueError, match="must be in"):
            make_payload(*bad)
    with pytest.raises(ValueError, match="32-bit"):
        split_payload(1 << 32)


def test_bound_and_threshold():
    # z* = sqrt(2 ln(K/alpha)): spec/watermark.md §5.5 quotes 6.22 for alpha 1e-6, K 256
    assert threshold_z(1e-6, 256) == pytest.approx(6.2227, abs=1e-4)
    assert threshold_z(1e-6, 28672) == pytest.approx(6.94, abs=0.01)
    assert p_value_bound(threshold_z(1e-6, 256), 256) == pytest.approx(1e-6)
    assert p_value_bound(-1.0, 256) == 1.0 and p_value_bound(1.0, 256) == 1.0
    assert p_value_bound(10.0, 1) == pytest.approx(math.exp(-50))
    with pytest.raises(ValueError):
        threshold_z(0.0, 10)


def test_hoeffding_bound_holds_for_rademacher_sums():
    # The detector's statistic for fixed features G and random chips c: P(z >= t) <= e^-t²/2.
    rng = np.random.default_rng(0)
    g = np.clip(rng.standard_t(3, size=400), -2, 2)  # heavy-tailed, clipped like the features
    c = rng.choice([-1.0, 1.0], size=(20000, 400))
    z = c @ g / np.sqrt(np.sum(g ** 2))
    for t in (1.0, 2.0, 3.0):
        assert np.mean(z >= t) <= math.exp(-t * t / 2)


def test_keys_resolution_order_and_demo_label(tmp_path, monkeypatch):
    monkeypatch.delenv("V2A_WATERMARK_KEY", raising=False)
    monkeypatch.delenv("V2A_WATERMARK_KEY_FILE", raising=False)
    demo = load_key()
    assert demo.is_demo and demo.key_id.startswith("demo-") and demo == demo_key()
    path = tmp_path / "k.key"
    key = generate_key_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and not key.is_demo
    with pytest.raises(ValueError, match="overwrite"):
        generate_key_file(path)
    assert load_key(path) == key
    monkeypatch.setenv("V2A_WATERMARK_KEY_FILE", str(path))
    assert load_key() == key
    other = WatermarkKey.from_secret(bytes(range(32)))
    monkeypatch.setenv("V2A_WATERMARK_KEY", other.secret.hex())
    assert load_key() == other  # the hex variable wins over the key-file variable
    assert load_key(path) == key  # an explicit file wins over both
    assert other.secret.hex() not in repr(other)
    monkeypatch.setenv("V2A_WATERMARK_KEY", "abc")
    with pytest.raises(ValueError, match="V2A_WATERMARK_KEY"):
        load_key()
    (tmp_path / "bad.key").write_text("not hex at all\n")
    with pytest.raises(ValueError, match="bad.key"):
        load_key(tmp_path / "bad.key")


def test_layout_is_keyed_balanced_and_deterministic():
    a = make_layout(demo_key().secret, DEFAULT_CONFIG)
    b = make_layout(WatermarkKey.from_secret(bytes(32)).secret, DEFAULT_CONFIG)
    assert a.pilot.shape == (32, 184)
    assert a.n_pilot == 32 * 184 // 2
    counts = np.bincount(a.bit[~a.pilot], minlength=CODED_BITS)
    assert counts.min() >= 18 and counts.max() <= 19  # every code bit gets its share
    assert abs(a.chips.mean()) < 0.05
    assert (a.pilot != b.pilot).mean() > 0.4 and (a.chips != b.chips).mean() > 0.4
    assert make_layout.__wrapped__(demo_key().secret, DEFAULT_CONFIG).chips.tobytes() == \
        a.chips.tobytes()
