"""Synchformer visual branch: fixture parity, uint8 entry point, key layout, tiny config."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from v2a_export.fixtures import load_fixture, max_abs_error, rel_l2_error  # noqa: E402
from v2a_export.fixtures.synchformer import config_from_spec, run  # noqa: E402
from v2a_export.models.configs import SYNCHFORMER, TINY  # noqa: E402
from v2a_export.models.synchformer import Synchformer  # noqa: E402


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    return load_fixture(fixtures_dir / "parity" / "synchformer.json")


def test_fixture_parity(fixture):
    """README §3.2: rel_l2 <= 1e-5 and max_abs <= 1e-4·max(1, max|ref|), outputs and dbg.*."""
    got = run(fixture.spec, fixture.weights, fixture.arrays)
    checked = [k for k, a in fixture.spec["arrays"].items() if a["role"] != "input"]
    assert set(checked) == {"feat", "feat_flat", "dbg.patch_embed_3d", "dbg.last_block"}
    for key in checked:
        ref = fixture.arrays[key]
        assert got[key].shape == ref.shape, key
        bound = 1e-4 * max(1.0, float(np.abs(ref).max()))
        rel, mabs = rel_l2_error(got[key], ref), max_abs_error(got[key], ref)
        assert rel <= 1e-5 and mabs <= bound, (key, rel, mabs)


def test_uint8_channels_last_entry_point(fixture):
    """encode_segments_u8 (S, 16, H, W, 3) -> (S, 8, D) equals the reference layout's output."""
    net = Synchformer(config_from_spec(fixture.spec)).eval()
    net.load_state_dict(fixture.weights, strict=True)
    vis_u8 = torch.from_numpy(fixture.arrays["vis_u8"])[0]  # (S, 16, 3, H, W)
    with torch.no_grad():
        feat = net.encode_segments_u8(vis_u8.permute(0, 1, 3, 4, 2))  # channels last
    ref = fixture.arrays["feat"][0]
    assert feat.shape == ref.shape
    assert rel_l2_error(feat.numpy(), ref) <= 1e-5


def test_official_key_layout(fixtures_dir):
    manifest = json.loads((fixtures_dir / "keys" / "synchformer_visual.json").read_text())
    with torch.device("meta"):
        net = Synchformer(SYNCHFORMER)
    got = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    assert got == list(manifest["tensors"].items())
    assert sum(v.numel() for v in net.state_dict().values()) == manifest["num_params"]


def test_tiny_shapes_and_determinism():
    torch.manual_seed(0)
    cfg = TINY.synchformer
    net = Synchformer(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    segments = torch.randint(0, 256, (3, 16, 64, 64, 3), dtype=torch.uint8, generator=gen)
    with torch.no_grad():
        feat = net.encode_segments_u8(segments)
        assert feat.shape == (3, 8, cfg.embed_dim)  # contract: (S, 8, Ds)
        assert torch.isfinite(feat).all()
        assert torch.equal(feat, net.encode_segments_u8(segments))
        # segments are independent: encoding one alone gives its row of the batch
        one = net.encode_segments_u8(segments[1:2])
    assert torch.allclose(one[0], feat[1], atol=1e-5)
    with pytest.raises(ValueError, match="64px"):
        net.encode_segments_u8(torch.zeros(1, 16, 32, 32, 3, dtype=torch.uint8))


def test_unknown_override_is_rejected(fixture):
    spec = json.loads(json.dumps(fixture.spec))
    spec["constructor"]["config_overrides"]["VIT.ATTN_LAYER"] = "joint"
    with pytest.raises(ValueError, match="ATTN_LAYER"):
        config_from_spec(spec)
    spec["constructor"]["config_overrides"] = {"VIT.SOMETHING": 1}
    with pytest.raises(ValueError, match="unsupported keys"):
        config_from_spec(spec)
