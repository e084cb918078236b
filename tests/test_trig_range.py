"""Range reduction of large trigonometric arguments (models/layers.reduce_angle): the v2 time
embedding reaches 1e4 rad at t = 1, where GPU fast-math sin/cos lose accuracy; the reduced
angle keeps cos/sin within 1.4e-7 of the float64 values and no cos/sin sees more than π."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from v2a_export.models.layers import (  # noqa: E402
    TWO_PI_HI,
    TWO_PI_LO,
    TimestepEmbedder,
    reduce_angle,
)


def test_two_pi_split():
    assert TWO_PI_HI == 3217 / 512  # 12 significant bits: k·TWO_PI_HI exact for |k| < 4096
    assert np.float32(TWO_PI_LO) == np.float32(2 * math.pi - TWO_PI_HI)
    assert abs(TWO_PI_HI + TWO_PI_LO - 2 * math.pi) < 1e-12


@pytest.mark.parametrize("top", [10.0, 312.0, 1e4, 25000.0])
def test_reduced_angles_give_the_same_cos_and_sin(top):
    x = torch.from_numpy(np.random.default_rng(0).uniform(-top, top, 100_000).astype(np.float32))
    r = reduce_angle(x)
    assert r.dtype == torch.float32
    assert r.abs().max().item() <= math.pi + 2e-3
    exact = x.double()
    for f in (torch.cos, torch.sin):
        err = (f(r).double() - f(exact)).abs().max().item()
        assert err <= 1.4e-7, (f.__name__, top, err)


def test_angles_within_pi_are_unchanged():
    x = torch.linspace(-3.14, 3.14, 10_001)
    assert torch.equal(reduce_angle(x), x)  # k = 0: v1 time embeddings (|t·f| <= 1) keep bits


def test_v2_time_embedding_feeds_cos_and_sin_at_most_pi(monkeypatch):
    emb = TimestepEmbedder(64, 64, 1)  # v2: frequencies 1e4 ... ~1
    assert emb.frequencies().max().item() == 1e4
    seen = []
    for name in ("cos", "sin"):
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda a, real=real: seen.append(a) or real(a))
    t = torch.tensor([0.0, 0.37, 0.999, 1.0])
    got = emb.sinusoid(t)
    monkeypatch.undo()
    assert len(seen) == 2 and max(a.abs().max().item() for a in seen) <= math.pi + 1e-3
    args = (t[:, None] * emb.frequencies()[None]).double()  # the float32 product, as before
    want = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    assert (got.double() - want).abs().max().item() <= 1.4e-7


@pytest.mark.parametrize(("length", "scale"), [(431, 1.0), (80, 431 / 80)])
def test_rope_table_within_pi_and_float64_close(monkeypatch, length, scale):
    """large_44k_v2 at 10 s: 431 latent positions, 80 clip positions on the latent axis."""
    from v2a_export.models.layers import rope_frequencies, rope_table

    freqs = rope_frequencies(64)
    scale = torch.tensor(scale, dtype=torch.float32)
    seen = []
    real = torch.cos
    monkeypatch.setattr(torch, "cos", lambda a: seen.append(a) or real(a))
    table = rope_table(length, freqs, scale)  # (N, hd/2, 2)
    monkeypatch.undo()
    assert table.shape == (length, 32, 2)
    assert seen[0].abs().max().item() <= math.pi + 1e-3
    angle = (torch.arange(length, dtype=torch.float32)[:, None] * (freqs * scale)[None]).double()
    assert angle.max().item() > 420  # what the cos/sin kernels saw before
    want = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
    assert (table.double() - want).abs().max().item() <= 1.4e-7
