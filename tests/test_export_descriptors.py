"""Component descriptors: the contract's I/O, sizes from durations, profiles, sample inputs.

The descriptors module is torch-free; the one test that compares its RoPE table with the
network's uses ``pytest.importorskip("torch")``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from v2a_runtime.config import COMPONENTS, Manifest
from v2a_runtime.sequence import sync_index

from v2a_export.export.descriptors import (
    DurationRange,
    ShapeRange,
    TrackRange,
    descriptors,
    descriptors_from_manifest,
    dim_sizes,
    rope_table,
)
from v2a_export.models.configs import TINY, VARIANTS, ModelConfig

TEST_BUNDLE = Path(__file__).parent / "data" / "test_bundle"


def _manifest(root: Path) -> Manifest:
    return Manifest.from_dict(json.loads((root / "manifest.json").read_text()))


def test_tiny_descriptors_equal_the_contract_io_of_the_test_bundle():
    # tests/data/test_bundle declares docs/contract.md's I/O at the tiny widths by hand
    manifest = _manifest(TEST_BUNDLE)
    want = descriptors_from_manifest(manifest)
    have = descriptors(TINY)
    assert tuple(have) == COMPONENTS
    for name in COMPONENTS:
        assert have[name].inputs == want[name].inputs, name
        assert have[name].outputs == want[name].outputs, name
    # the placeholder test bundle keeps the official 8 fps clip stream and MMAudio's nearest
    # sync alignment; tiny decodes at 25 fps and reads sync tokens by "frames" (configs.py);
    # everything else in the rules is the same
    assert manifest.rates == replace(TINY.rates, clip_fps=8.0, sync_alignment="nearest")


def test_official_widths_and_glossary_sizes_at_8s_16k():
    d = descriptors(VARIANTS["small_16k"])
    assert d["clip_visual"].inputs[0].shape == ("F", 384, 384, 3)
    assert d["sync_visual"].inputs[0].shape == ("S", 16, 224, 224, 3)
    assert d["text"].outputs[0].shape == ("B", 77, 1024)
    assert d["denoiser"].inputs[0].shape == ("B", "L", 20)
    assert d["conditioner"].outputs[0].shape == ("2B", "Lc", 448)
    assert d["conditioner"].outputs[4].shape == ("L", 32, 2)  # hd/2 = 64/2
    assert d["vocoder"].outputs[0].shape == ("B", 1, "W")
    sizes = dim_sizes(VARIANTS["small_16k"].rates, 8.0, 1)
    # docs/contract.md glossary, column "8 s, 16 kHz (small_16k)"
    assert sizes == {
        "B": 1,
        "2B": 2,
        "F": 64,
        "S": 24,
        "L": 250,
        "Lc": 64,
        "Ls": 192,
        "M": 500,
        "W": 128_000,
    }
    assert dim_sizes(VARIANTS["large_44k_v2"].rates, 8.0)["L"] == 345  # float rules


def test_input_dims():
    d = descriptors(TINY)
    assert d["conditioner"].input_dims() == ("B", "Lc", "Ls", "L")
    assert d["clip_visual"].input_dims() == ("F",)
    assert d["vae_decoder"].input_dims() == ("B", "L")


def test_profiles_from_duration_and_track_ranges():
    rules = VARIANTS["small_16k"].rates
    d = descriptors(VARIANTS["small_16k"])
    durations = DurationRange(0.64, 8.0, 10.0)
    tracks = TrackRange(1, 2, 4)
    x = d["denoiser"].profile(rules, durations, tracks)["x"]
    assert x == ShapeRange((1, 20, 20), (4, 250, 20), (8, 313, 20))  # CFG doubles tracks
    # text always sees [prompt; negative prompt] (the pipeline's batch, guidance.batch)
    assert d["text"].profile(rules, durations, tracks)["token_ids"] == ShapeRange(
        (2, 77), (2, 77), (2, 77)
    )
    cond = d["conditioner"].profile(rules, durations, tracks)
    assert cond["sync_features"] == ShapeRange((1, 8, 768), (1, 192, 768), (1, 240, 768))
    assert cond["sync_index"] == ShapeRange((20,), (250,), (313,))
    assert d["vocoder"].profile(rules, durations, tracks)["mel"] == ShapeRange(
        (1, 80, 40), (2, 80, 500), (4, 80, 626)
    )
    frames = d["clip_visual"].profile(rules, durations, tracks)["frames"]
    assert frames == ShapeRange((5, 384, 384, 3), (64, 384, 384, 3), (80, 384, 384, 3))
    for name, desc in d.items():  # every axis grows from min to max
        for r in desc.profile(rules, durations, tracks).values():
            assert all(a <= b <= c for a, b, c in zip(r.min, r.opt, r.max, strict=True)), name


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError, match="min <= opt <= max"):
        DurationRange(2.0, 1.0, 3.0)
    with pytest.raises(ValueError, match="tracks"):
        TrackRange(0, 1, 2)
    with pytest.raises(ValueError, match="shorter than one sync segment"):
        dim_sizes(TINY.rates, 0.5)


def test_sample_inputs_are_seeded_and_realistic():
    rules = TINY.rates
    d = descriptors(TINY)
    sizes = dim_sizes(rules, 2.0, 3)
    for name, desc in d.items():
        a, b = desc.sample_inputs(sizes, seed=1), desc.sample_inputs(sizes, seed=1)
        c = desc.sample_inputs(sizes, seed=2)
        for t in desc.inputs:
            assert a[t.name].dtype == np.dtype(t.dtype), (name, t.name)
            assert a[t.name].shape == t.concrete(sizes), (name, t.name)
            np.testing.assert_array_equal(a[t.name], b[t.name])
        assert any(not np.array_equal(a[n], c[n]) for n in a), name  # the seed matters
    cond = d["conditioner"].sample_inputs(sizes)
    np.testing.assert_array_equal(cond["sync_index"], sync_index(sizes["Ls"], sizes["L"]))
    np.testing.assert_allclose(np.linalg.norm(cond["clip_features"], axis=-1), 1.0, rtol=1e-5)
    den = d["denoiser"].sample_inputs(sizes)
    rope = den["clip_rope"]
    np.testing.assert_allclose(rope[..., 0] ** 2 + rope[..., 1] ** 2, 1.0, rtol=1e-5)
    assert 0 <= den["t"].min() and den["t"].max() <= 1
    ids = d["text"].sample_inputs(sizes)["token_ids"]
    assert (ids[:, 0] == 49406).all() and ((ids == 49407).sum(axis=1) == 1).all()
    assert 0 <= ids.min() and ids.max() < 49408


def test_rope_table_matches_the_network():
    torch = pytest.importorskip("torch")
    from v2a_export.models.flow import MMAudio

    flow = MMAudio.from_config(TINY.flow)
    latent, clip = flow.rope_tables(63, 16)
    np.testing.assert_allclose(rope_table(63, TINY.flow.head_dim, 1.0), latent.numpy(), atol=2e-6)
    scale = np.float32(63) / np.float32(16)
    np.testing.assert_allclose(rope_table(16, TINY.flow.head_dim, scale), clip.numpy(), atol=2e-6)
    assert torch.is_tensor(latent)


def test_a_custom_config_round_trips_through_the_manifest_once():
    """A bundle states each fact once: a custom config is recorded without the facts its audio
    and video sections carry, and composed back from both; a registered one records nothing."""
    manifest = _manifest(TEST_BUNDLE)
    custom = replace(TINY, name="mine", flow=replace(TINY.flow, depth=3))
    assert TINY.manifest_config() is None
    recorded = custom.manifest_config()
    assert "streams" not in recorded and "sample_rate" not in recorded["mel"]
    m = replace(
        manifest,
        model=replace(manifest.model, variant="mine", config=recorded),
        video=custom.streams,
    )
    assert ModelConfig.from_manifest(m) == custom
    with pytest.raises(ValueError, match="disagree with variant 'tiny'"):
        ModelConfig.from_manifest(replace(m, model=replace(m.model, variant="tiny", config=None),
                                          video=replace(m.video, clip_fps=8.0)))  # fmt: skip
