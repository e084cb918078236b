"""The mel VAE: fixture parity, official key layout, fold == trainable forward, tiny config."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from v2a_export.fixtures import load_fixture, max_abs_error, rel_l2_error  # noqa: E402
from v2a_export.fixtures.vae import run  # noqa: E402
from v2a_export.models import vae_stats  # noqa: E402
from v2a_export.models.configs import TINY, VAE_16K, VAE_44K, VAEConfig  # noqa: E402
from v2a_export.models.vae import VAE, DiagonalGaussian  # noqa: E402

FIXTURES = ("vae_16k", "vae_44k")


@pytest.fixture(scope="module", params=FIXTURES)
def fixture(request, fixtures_dir):
    return load_fixture(fixtures_dir / "parity" / f"{request.param}.json")


def test_fixture_parity(fixture):
    """README §3.2: outputs rel_l2 <= 1e-5 and max_abs <= 1e-4·max(1, max|ref|);
    folded weights rel_l2 <= 1e-6. Every output and intermediate must be reproduced."""
    got = run(fixture.spec, fixture.weights, fixture.arrays)
    checked = [k for k, a in fixture.spec["arrays"].items() if a["role"] != "input"]
    assert len(checked) == 5 and set(checked) <= set(got)
    for key in checked:
        ref = fixture.arrays[key]
        assert got[key].shape == ref.shape, key
        rel = rel_l2_error(got[key], ref)
        if "weight_eff" in key:
            assert rel <= 1e-6, (key, rel)
        else:
            bound = 1e-4 * max(1.0, float(np.abs(ref).max()))
            assert rel <= 1e-5 and max_abs_error(got[key], ref) <= bound, (key, rel)


@pytest.mark.parametrize("name,data_dim", [("vae_16k", 80), ("vae_44k", 128)])
def test_data_stats_are_the_official_buffers(fixtures_dir, name, data_dim):
    fx = load_fixture(fixtures_dir / "parity" / f"{name}.json")
    vae = VAE(VAEConfig(data_dim=data_dim, embed_dim=4, hidden_dim=4))
    assert torch.equal(vae.data_mean, fx.weights["data_mean"])
    assert torch.equal(vae.data_std, fx.weights["data_std"])
    assert vae.data_mean.shape == (1, data_dim, 1)
    mean = vae_stats.DATA_MEAN_80D if data_dim == 80 else vae_stats.DATA_MEAN_128D
    assert len(mean) == data_dim


@pytest.mark.parametrize("name,cfg", [("vae_16k", VAE_16K), ("vae_44k", VAE_44K)])
def test_official_key_layout(fixtures_dir, name, cfg):
    manifest = json.loads((fixtures_dir / "keys" / f"{name}.json").read_text())
    with torch.device("meta"):
        vae = VAE(cfg)
    got = [(k, list(v.shape)) for k, v in vae.state_dict().items()]
    assert got == list(manifest["tensors"].items())  # same keys, shapes and order
    assert sum(v.numel() for v in vae.state_dict().values()) == manifest["num_params"]


def test_folded_equals_trainable_forward(fixtures_dir):
    fx = load_fixture(fixtures_dir / "parity" / "vae_16k.json")
    vae = VAE(VAEConfig(**fx.spec["constructor"])).eval()
    vae.load_state_dict(fx.weights, strict=True)
    z = torch.from_numpy(fx.arrays["z"]).transpose(1, 2)  # (B, C, N)
    mel = torch.from_numpy(fx.arrays["mel"])  # (B, n_mels, 2N)
    with torch.no_grad():
        dec_raw, moments = vae.decode_raw(z), vae.encoder(vae.normalize(mel))
        vae.remove_weight_norm()
        assert vae.folded
        assert rel_l2_error(vae.decode_raw(z).numpy(), dec_raw.numpy()) <= 1e-6
        assert rel_l2_error(vae.encoder(vae.normalize(mel)).numpy(), moments.numpy()) <= 1e-6
        folded = vae.decoder.conv_in.weight.clone()
        vae.remove_weight_norm()  # idempotent
        assert torch.equal(vae.decoder.conv_in.weight, folded)
    # the raw file weights are untouched by the fold
    assert not torch.equal(fx.weights["decoder.conv_in.weight"], folded)


def test_unfolded_vae_trains():
    torch.manual_seed(0)
    vae = VAE(TINY.vae)
    mel = torch.randn(2, 80, 16)
    post = vae.encode(mel)
    loss = (vae.decode(post.sample()) - mel).pow(2).mean() + post.kl().mean()
    loss.backward()
    grads = [p.grad for p in vae.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert vae.encoder.conv_in.weight.grad.abs().sum() > 0
    assert vae.decoder.learnable_gain.grad != 0


def test_posterior_clamps_logvar():
    moments = torch.cat([torch.zeros(1, 3, 5), torch.full((1, 3, 5), 50.0)], dim=1)
    post = DiagonalGaussian.from_moments(moments)
    assert torch.all(post.logvar == 20.0)
    assert torch.equal(post.mode(), torch.zeros(1, 3, 5))
    post = DiagonalGaussian.from_moments(-moments)
    assert torch.all(post.logvar == -30.0)


def test_tiny_shapes_and_determinism():
    torch.manual_seed(0)
    vae = VAE(TINY.vae).eval().remove_weight_norm()
    L = 25
    z = torch.randn(2, TINY.vae.embed_dim, L)
    with torch.no_grad():
        mel = vae.decode(z)
        assert mel.shape == (2, TINY.mel.n_mels, 2 * L)  # contract: (B, n_mels, M = 2L)
        assert torch.isfinite(mel).all()
        assert torch.equal(mel, vae.decode(z))
        post = vae.encode(mel)
        assert post.mean.shape == (2, TINY.vae.embed_dim, L)
    with pytest.raises(ValueError, match="even"):
        vae.encode(torch.zeros(1, 80, 7))
