"""The flow network against the flow_v1/flow_v2 reference fixtures, and its export split.

Tolerances: fixtures README §3.2 (single pass rel_l2 ≤ 1e-5, max_abs ≤ 1e-4·max(1, max|ref|);
chained Euler samples 5e-5 / 2e-4·max(1, max|ref|)).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from v2a_runtime.sequence import sync_index  # noqa: E402

from v2a_export.checkpoints import component_state_dict, load_into  # noqa: E402
from v2a_export.fixtures import check_fixture, compare, load_fixture  # noqa: E402
from v2a_export.fixtures.flow import build  # noqa: E402
from v2a_export.models.configs import TINY, VARIANTS  # noqa: E402
from v2a_export.models.flow import MMAudio  # noqa: E402
from v2a_export.models.layers import rope_frequencies, rope_table  # noqa: E402

FLOW_FIXTURES = ("flow_v1", "flow_v2")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


GROUPS = (
    "cond.",
    "uncond.",
    "uncond_neg.",
    "flow_cond",
    "flow_uncond",
    "flow_uncond_neg",
    "dbg.",
    "sample.",
)


@pytest.mark.parametrize("name", FLOW_FIXTURES)
def test_flow_fixture_matches_reference(fixtures_dir, name):
    report = check_fixture(fixtures_dir / "parity" / f"{name}.json")
    bad = [(r.key, r.max_abs, r.rel_l2, r.note) for r in report.failures]
    assert report.passed, bad
    checked = {r.key for r in report.results if r.note != "not reproduced"}
    # every array of both cases is reproduced: conditions, the three branches, debug, sample
    for case in ("A", "B"):
        for group in GROUPS:
            assert any(k.startswith(f"{case}.{group}") for k in checked), (case, group)
    assert len(checked) == sum(1 for r in report.results)  # nothing skipped


@pytest.fixture(scope="module", params=FLOW_FIXTURES)
def loaded(request, fixtures_dir):
    fx = load_fixture(fixtures_dir / "parity" / f"{request.param}.json")
    net = build(fx.spec["constructor"])
    load_into(net, component_state_dict(fx.weights, "flow"), component="flow")
    return net.eval(), fx


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


def _assert_close(key: str, got: torch.Tensor, ref: np.ndarray) -> None:
    r = compare("flow", key, "output", got.detach().numpy(), ref)
    assert r.ok, (key, r.max_abs, r.rel_l2)


@torch.no_grad()
def test_conditioner_and_denoiser_equal_reference_branches(loaded):
    """The export split (one conditioner call for [cond; uncond], one batched denoiser call
    per step) reproduces the reference's cond / uncond_neg results."""
    net, fx = loaded
    a = fx.arrays
    for case in ("A", "B"):
        x, t = _t(a[f"{case}.x"]), _t(a[f"{case}.t"])
        B, L = x.shape[:2]
        sync_idx = torch.from_numpy(sync_index(a[f"{case}.sync_f"].shape[1], L))
        clip_tok, text_tok, g, sync_cond, lrope, crope = net.conditioner(
            _t(a[f"{case}.clip_f"]),
            _t(a[f"{case}.sync_f"]),
            _t(a[f"{case}.text_f"]),
            _t(a[f"{case}.neg_text_f"]),
            sync_idx,
        )
        assert clip_tok.shape[0] == text_tok.shape[0] == g.shape[0] == sync_cond.shape[0] == 2 * B
        for rows, branch in ((slice(0, B), "cond"), (slice(B, 2 * B), "uncond_neg")):
            _assert_close(f"{case}.{branch}.clip_f", clip_tok[rows], a[f"{case}.{branch}.clip_f"])
            _assert_close(f"{case}.{branch}.text_f", text_tok[rows], a[f"{case}.{branch}.text_f"])
            _assert_close(f"{case}.{branch}.sync_f", sync_cond[rows], a[f"{case}.{branch}.sync_f"])
        v = net.denoiser(
            torch.cat([x, x]), torch.cat([t, t]), clip_tok, text_tok, g, sync_cond, lrope, crope
        )
        _assert_close(f"{case}.flow_cond", v[:B], a[f"{case}.flow_cond"])
        _assert_close(f"{case}.flow_uncond_neg", v[B:], a[f"{case}.flow_uncond_neg"])
        # RoPE tables equal the reference's stored rotation matrices (cos at [0,0], sin at [1,0])
        # to 1.4e-7: the angles are reduced to [-π, π] first (layers.reduce_angle), which
        # moves cos/sin by at most the rounding of the reduced angle (bit-equal before that)
        for table, key in ((lrope, "latent_rot"), (crope, "clip_rot")):
            rot = a[f"{case}.dbg.{key}"][0]
            want = np.stack([rot[..., 0, 0], rot[..., 1, 0]], -1)
            assert table.shape == want.shape
            assert np.abs(table.numpy() - want).max() <= 1.4e-7, key


def test_sync_index_matches_torch_nearest_exact():
    # including the float32 ties that plain floor((i + 0.5)·Ls/L) gets wrong (8 -> 428 etc.)
    pairs = [
        (8, 428),
        (8, 484),
        (40, 820),
        (48, 1128),
        (192, 345),
        (192, 250),
        (16, 32),
        (40, 63),
        (240, 431),
        (8, 1),
        (392, 690),
    ]
    pairs += [(ls, n) for ls in range(8, 200, 24) for n in range(1, 700, 37)]
    for ls, n in pairs:
        src = torch.arange(ls, dtype=torch.float32).view(1, 1, ls)
        ref = F.interpolate(src, size=n, mode="nearest-exact")[0, 0].long().numpy()
        np.testing.assert_array_equal(sync_index(ls, n), ref, err_msg=f"Ls={ls} L={n}")
    exact = np.minimum((2 * np.arange(484) + 1) * 8 // (2 * 484), 7)  # floor((i+0.5)·8/484)
    assert not np.array_equal(exact, sync_index(8, 484))  # PyTorch's rounding really differs
    with pytest.raises(ValueError, match="must both be >= 1"):
        sync_index(0, 10)


def test_rope_scale_as_tensor_equals_python_float():
    # the conditioner forms the clip scale L/Lc as a float32 tensor (graph-friendly); upstream
    # multiplies float32 frequencies by the Python float: both round the scale to float32
    for n, nc in ((345, 64), (250, 64), (63, 16), (431, 80)):
        a = rope_table(nc, rope_frequencies(64), n / nc)
        b = rope_table(nc, rope_frequencies(64), torch.scalar_tensor(n, dtype=torch.float32) / nc)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("variant", ["small_16k", "large_44k_v2"])
def test_official_sizes_build_on_meta(variant):
    with torch.device("meta"):
        net = MMAudio.from_config(VARIANTS[variant].flow)
    assert all(p.is_meta for p in net.parameters())
    assert list(net.buffers()) == []  # nothing left to materialise after an assign-load


def test_constructor_rejects_bad_widths():
    with pytest.raises(ValueError, match="heads of even width"):
        MMAudio(
            latent_dim=8,
            clip_dim=8,
            sync_dim=8,
            text_dim=8,
            hidden_dim=60,
            depth=2,
            fused_depth=1,
            num_heads=8,
        )
    with pytest.raises(ValueError, match="must exceed fused_depth"):
        MMAudio(
            latent_dim=8,
            clip_dim=8,
            sync_dim=8,
            text_dim=8,
            hidden_dim=64,
            depth=2,
            fused_depth=2,
            num_heads=2,
        )


@torch.no_grad()
def test_tiny_denoiser_step_shapes_and_determinism():
    from v2a_export.models.build import randomize_

    cfg = TINY.flow
    net = randomize_(MMAudio.from_config(cfg), seed=3).eval()
    B, L, Lc, Ls = 2, 250, 64, 192  # 8 s at 16 kHz
    gen = torch.Generator().manual_seed(0)
    clip = torch.randn(B, Lc, cfg.clip_dim, generator=gen)
    sync = torch.randn(B, Ls, cfg.sync_dim, generator=gen)
    text = torch.randn(B, 77, cfg.text_dim, generator=gen)
    neg = torch.randn(B, 77, cfg.text_dim, generator=gen)
    conds = net.conditioner(clip, sync, text, neg, net.sync_index(Ls, L))
    shapes = [tuple(c.shape) for c in conds]
    H, hd = cfg.hidden_dim, cfg.head_dim
    assert shapes == [
        (2 * B, Lc, H),
        (2 * B, 77, H),
        (2 * B, H),
        (2 * B, L, H),
        (L, hd // 2, 2),
        (Lc, hd // 2, 2),
    ]
    x = torch.randn(2 * B, L, cfg.latent_dim, generator=gen)
    t = torch.full((2 * B,), 0.3)
    v1 = net.denoiser(x, t, *conds)
    v2 = net.denoiser(x, t, *conds)
    assert v1.shape == x.shape and torch.isfinite(v1).all()
    assert torch.equal(v1, v2)
    # the velocity depends on t and on the conditions
    assert not torch.allclose(v1, net.denoiser(x, t + 0.1, *conds))
    assert not torch.allclose(v1[:B], v1[B:])
