"""CLIP (open_clip layout): fixture parity, uint8 entry point, 384-vs-378 crop, key layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from v2a_export.fixtures import load_fixture, max_abs_error, rel_l2_error  # noqa: E402
from v2a_export.fixtures.clip import config_from_spec, run  # noqa: E402
from v2a_export.models.clip import CLIP  # noqa: E402
from v2a_export.models.configs import CLIP_TEXT_H14, CLIP_VISION_H14_378, TINY  # noqa: E402

UNIT = ("image_embeds", "text_states")


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    return load_fixture(fixtures_dir / "parity" / "clip.json")


@pytest.fixture(scope="module")
def net(fixture):
    vision, text, nonscalar = config_from_spec(fixture.spec)
    model = CLIP(vision, text, nonscalar_logit_scale=nonscalar).eval()
    model.load_state_dict(fixture.weights, strict=True)
    return model


def test_fixture_parity(fixture):
    """README §3.2: unit vectors max_abs <= 1e-5 and rel_l2 <= 1e-5; the unnormalised
    intermediates rel_l2 <= 1e-5 and max_abs <= 1e-4·max(1, max|ref|)."""
    got = run(fixture.spec, fixture.weights, fixture.arrays)
    checked = [k for k, a in fixture.spec["arrays"].items() if a["role"] != "input"]
    assert len(checked) == 4 and set(checked) <= set(got)
    for key in checked:
        ref = fixture.arrays[key]
        assert got[key].shape == ref.shape, key
        bound = 1e-5 if key in UNIT else 1e-4 * max(1.0, float(np.abs(ref).max()))
        rel, mabs = rel_l2_error(got[key], ref), max_abs_error(got[key], ref)
        assert rel <= 1e-5 and mabs <= bound, (key, rel, mabs)


def test_uint8_channels_last_entry_point(fixture, net):
    image_u8 = torch.from_numpy(fixture.arrays["image_u8"]).flatten(0, 1)  # (T, 3, H, W)
    frames = image_u8.permute(0, 2, 3, 1)  # (T, H, W, 3) as the runtime feeds them
    pixels = net.preprocess_u8(frames)
    assert torch.equal(pixels, torch.from_numpy(fixture.arrays["pixel_values"]).flatten(0, 1))
    with torch.no_grad():
        feats = net.encode_frames_u8(frames)  # (T, E)
    assert max_abs_error(feats.numpy(), fixture.arrays["image_embeds"][0]) <= 1e-5


def test_trailing_pixels_are_ignored(fixture, net):
    """48 px into the 42 px model (like 384 into 378): the last 6 rows/cols do not matter."""
    pixels = torch.from_numpy(fixture.arrays["pixel_values"]).flatten(0, 1).clone()
    changed = pixels.clone()
    changed[..., 42:, :] = 5.0
    changed[..., :, 42:] = -5.0
    with torch.no_grad():
        assert torch.equal(net.encode_image(pixels), net.encode_image(changed))
        with pytest.raises(ValueError, match="patch grid"):
            net.encode_image(pixels[..., :28, :28])


def test_text_is_causal_and_unit_norm(fixture, net):
    tokens = torch.from_numpy(fixture.arrays["tokens"])[1:2].clone()  # (1, 77)
    later = tokens.clone()
    later[0, 10:] = 1000  # change every token from position 10 on
    with torch.no_grad():
        a, b = net.encode_text(tokens), net.encode_text(later)
    assert torch.equal(a[0, :10], b[0, :10])  # earlier states never see later tokens
    assert not torch.allclose(a[0, 10:], b[0, 10:])
    assert torch.allclose(a.norm(dim=-1), torch.ones(1, 77), atol=1e-6)


def test_official_key_layout(fixtures_dir):
    manifest = json.loads((fixtures_dir / "keys" / "clip_dfn5b_vit_h_14_378.json").read_text())
    with torch.device("meta"):
        net = CLIP(CLIP_VISION_H14_378, CLIP_TEXT_H14)
    sd = net.state_dict()
    assert [(k, list(v.shape)) for k, v in sd.items()] == list(manifest["tensors"].items())
    assert sum(v.numel() for v in sd.values()) == manifest["num_params"]
    assert "attn_mask" not in sd


def test_tiny_shapes_and_determinism():
    torch.manual_seed(0)
    net = CLIP(TINY.clip_vision, TINY.clip_text).eval()
    gen = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8, generator=gen)
    tokens = torch.randint(0, 49408, (2, 77), generator=gen)
    with torch.no_grad():
        img = net.encode_frames_u8(frames)
        txt = net.encode_text(tokens)
        assert img.shape == (4, TINY.clip_vision.embed_dim)  # contract: (F, Dc)
        assert txt.shape == (2, 77, TINY.clip_text.width)  # contract: (B, 77, Dt)
        assert torch.allclose(img.norm(dim=-1), torch.ones(4), atol=1e-6)
        assert torch.isfinite(txt).all()
        assert torch.equal(img, net.encode_frames_u8(frames))
        assert torch.equal(txt, net.encode_text(tokens))
