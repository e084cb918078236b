"""BigVGAN vocoders: fixture parity, Kaiser-sinc filters, key layouts, weight-norm fold."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from v2a_export.fixtures import load_fixture, max_abs_error, rel_l2_error  # noqa: E402
from v2a_export.fixtures.bigvgan import config_from_spec, run  # noqa: E402
from v2a_export.models.bigvgan import (  # noqa: E402
    BigVGAN,
    kaiser_sinc_filter,
    rename_parametrized_weight_norm,
)
from v2a_export.models.configs import BIGVGAN_16K, BIGVGAN_V2_44K, TINY  # noqa: E402

FIXTURES = ("bigvgan_16k", "bigvgan_v2_44k")


@pytest.fixture(scope="module", params=FIXTURES)
def fixture(request, fixtures_dir):
    return load_fixture(fixtures_dir / "parity" / f"{request.param}.json")


def _loaded(fx) -> BigVGAN:
    net = BigVGAN(config_from_spec(fx.spec)).eval()
    net.load_state_dict(fx.weights, strict=True)
    return net


def test_fixture_parity(fixture):
    """README §3.2 / json tolerance: wav and dbg.* rel_l2 <= 1e-5 and max_abs <= 1e-5."""
    got = run(fixture.spec, fixture.weights, fixture.arrays)
    checked = [k for k, a in fixture.spec["arrays"].items() if a["role"] != "input"]
    assert len(checked) == 9 and set(checked) <= set(got)  # wav, conv_pre, 6 ups, conv_post
    for key in checked:
        ref = fixture.arrays[key]
        assert got[key].shape == ref.shape, key
        rel, mabs = rel_l2_error(got[key], ref), max_abs_error(got[key], ref)
        assert rel <= 1e-5 and mabs <= 1e-5, (key, rel, mabs)


def test_kaiser_sinc_filter_matches_stored_buffers(fixture):
    ours = np.asarray(kaiser_sinc_filter(), dtype=np.float32)
    assert ours.shape == (12,)
    assert abs(float(ours.astype(np.float64).sum()) - 1.0) < 1e-6  # unit DC gain
    np.testing.assert_allclose(ours, ours[::-1], atol=0)  # symmetric (linear phase)
    buffers = [v for k, v in fixture.weights.items() if k.endswith("filter")]
    stages = len(fixture.spec["constructor"]["h"]["upsample_rates"])
    assert len(buffers) == stages * 3 * 6 * 2 + 2  # 3 AMP blocks x 6 activations x (up, down)
    for buf in buffers:
        assert buf.shape == (1, 1, 12)
        assert np.abs(buf.numpy().ravel() - ours).max() <= 1e-7  # float32 rounding only
    net = BigVGAN(TINY.vocoder)
    assert torch.equal(net.activation_post.upsample.filter.ravel(), torch.from_numpy(ours))


@pytest.mark.parametrize(
    "name,cfg",
    [("bigvgan_16k", BIGVGAN_16K), ("bigvgan_v2_44k_128band_512x", BIGVGAN_V2_44K)],
)
def test_official_key_layout(fixtures_dir, name, cfg):
    manifest = json.loads((fixtures_dir / "keys" / f"{name}.json").read_text())
    with torch.device("meta"):
        net = BigVGAN(cfg)
    got = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    assert got == list(manifest["tensors"].items())  # keys, shapes (g per input channel), order
    assert sum(v.numel() for v in net.state_dict().values()) == manifest["num_params"]


def test_parametrization_naming_loads(fixture):
    renamed = {
        k.replace("weight_g", "parametrizations.weight.original0").replace(
            "weight_v", "parametrizations.weight.original1"
        ): v
        for k, v in fixture.weights.items()
    }
    assert rename_parametrized_weight_norm(renamed).keys() == fixture.weights.keys()
    net = BigVGAN(config_from_spec(fixture.spec))
    net.load_state_dict(renamed, strict=True)  # the load hook renames
    loaded = net.state_dict()
    assert loaded.keys() == fixture.weights.keys()
    assert all(torch.equal(loaded[k], v) for k, v in fixture.weights.items())


def test_folded_equals_trainable_forward(fixture):
    net = _loaded(fixture)
    mel = torch.from_numpy(fixture.arrays["mel"])
    with torch.no_grad():
        wav = net(mel)
        net.remove_weight_norm()
        assert net.folded
        keys = net.state_dict().keys()
        assert "conv_pre.weight" in keys and not any(k.endswith("weight_g") for k in keys)
        folded = net(mel)
    assert max_abs_error(folded.numpy(), wav.numpy()) <= 1e-6
    # fold: g·v/‖v‖ with the norm per OUTPUT channel (conv) / per INPUT channel (transposed)
    g, v = fixture.weights["ups.0.0.weight_g"], fixture.weights["ups.0.0.weight_v"]
    expect = g * v / v.flatten(1).norm(dim=1)[:, None, None]
    assert torch.allclose(net.ups[0][0].weight, expect, rtol=1e-6, atol=1e-7)


def test_unfolded_bigvgan_trains():
    torch.manual_seed(0)
    net = BigVGAN(TINY.vocoder)
    wav = net(torch.randn(1, 80, 3))
    wav.pow(2).mean().backward()
    for p in (
        net.conv_pre.weight_g,
        net.conv_pre.weight_v,
        net.ups[0][0].weight_g,
        net.resblocks[0].activations[0].act.alpha,
        net.activation_post.act.beta,
    ):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_tiny_shapes_and_determinism():
    torch.manual_seed(0)
    cfg = TINY.vocoder
    net = BigVGAN(cfg).eval().remove_weight_norm()
    M = 20
    mel = torch.randn(2, cfg.num_mels, M)
    with torch.no_grad():
        wav = net(mel)
        assert wav.shape == (2, 1, M * cfg.hop_length)  # contract: (B, 1, W = M·hop)
        assert cfg.hop_length == TINY.mel.hop_length
        assert torch.isfinite(wav).all() and wav.abs().max() <= 1.0
        assert torch.equal(wav, net(mel))


def test_constructor_rejects_unsupported_variants(fixture):
    spec = json.loads(json.dumps(fixture.spec))
    spec["constructor"]["h"]["resblock"] = "2"
    with pytest.raises(ValueError, match="resblock"):
        config_from_spec(spec)
