"""The runtime's arithmetic, pinned without torch: a committed golden output of the test bundle,
and direct checks of classifier-free guidance, the sampler's step and the latent
un-normalisation.

Golden data (``tests/data/golden/test_bundle.npz``, 6 kB) was written by this runtime on the
committed test bundle (tests/data/test_bundle, ONNX files unchanged since): 1 s of fixed
pixels (seeded), prompt "rain on a tin roof", negative prompt "wind", seed 7, 2 tracks, Euler,
8 uniform steps, cfg 4.5 (the bundle's), no watermark. It holds ``latent``, the sampled latent
(K, L, C) = (2, 32, 8) before un-normalisation, and ``waveform``, every 32nd sample of the
(2, 16000) waveform. Tolerance: max |error| <= 1e-4 and relative L2 <= 1e-5 (float32 kernels
of another CPU may round differently; a wrong formula moves these by 1e-2 to 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from v2a_runtime import guidance, sampling
from v2a_runtime.backends import HostSampler, SampleRequest
from v2a_runtime.config import TensorInfo
from v2a_runtime.media import Frames
from v2a_runtime.pipeline import Pipeline, unnormalise

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden" / "test_bundle.npz"
REQUEST = dict(prompt="rain on a tin roof", negative_prompt="wind", seed=7, tracks=2,
               solver="euler", grid="uniform", steps=8, watermark=False)  # fmt: skip
MAX_ABS, REL_L2 = 1e-4, 1e-5


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return Pipeline.load(DATA / "test_bundle", threads=1)


def golden_frames() -> Frames:
    """1 s of seeded pixels at the test bundle's rates and sizes (8 and 25 fps, 64 px)."""
    rng = np.random.default_rng(2024)
    clip = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    sync = rng.integers(0, 256, (25, 64, 64, 3), dtype=np.uint8)
    return Frames(clip=clip, sync=sync, start=0.0, duration=1.0)


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape, (got.shape, want.shape)
    err = np.abs(got.astype(np.float64) - want)
    rel = np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want)
    assert err.max() <= MAX_ABS and rel <= REL_L2, f"max |error| {err.max():.2e}, rel L2 {rel:.2e}"


def test_cfg_combines_cond_and_uncond_rows():
    """v = w·v_cond + (1 − w)·v_uncond on [cond × K; uncond × K]."""
    k, w = 2, 4.5
    v_cond = np.full((k, 3, 2), 1.0, np.float32)
    v_uncond = np.full((k, 3, 2), 0.25, np.float32)
    out = guidance.combine(np.concatenate([v_cond, v_uncond]), w)  # (K, L, C)
    np.testing.assert_allclose(out, w * 1.0 + (1.0 - w) * 0.25)  # 3.625, not 0.25·w + 1 − w
    assert guidance.is_guided(w) and not guidance.is_guided(1.0)
    np.testing.assert_array_equal(guidance.condition_rows(k, True), [0, 0, 1, 1])
    np.testing.assert_array_equal(guidance.condition_rows(k, False), [0, 0])


def test_batched_conditions_follow_the_manifest_shapes(pipe):
    spec = pipe.bundle.manifest.components["denoiser"]
    batched = spec.batched_inputs()
    assert batched == ("x", "t", "clip_tokens", "text_tokens", "global_cond", "sync_cond")
    conditions = {"global_cond": np.array([[1.0], [2.0]]), "latent_rope": np.ones((5, 2, 2))}
    feeds = guidance.batch_conditions(conditions, batched, guidance.condition_rows(2, True))
    np.testing.assert_array_equal(feeds["global_cond"][:, 0], [1, 1, 2, 2])  # [cond×2; uncond×2]
    assert feeds["latent_rope"] is conditions["latent_rope"]  # shared: no batch axis


@dataclass
class RowVelocity:
    """A denoiser whose velocity is its row's value of ``rows`` (cond rows vs uncond rows)."""

    rows: np.ndarray

    inputs = (TensorInfo("x", "float32", ("B", "L", "C")),)
    outputs = (TensorInfo("velocity", "float32", ("B", "L", "C")),)

    def run(self, feeds):
        x = feeds["x"]
        return {"velocity": np.broadcast_to(self.rows[:, None, None], x.shape).astype(np.float32)}


def test_the_host_sampler_steps_by_dt_with_the_guided_velocity():
    """x₀ = 0, v_cond = 1, v_uncond = 0.25: each Euler step adds (t' − t)·(w·1 + (1 − w)·0.25)."""
    w, k = 4.5, 2
    sampler = HostSampler(RowVelocity(np.array([1.0, 1.0, 0.25, 0.25])))
    x0 = np.zeros((k, 4, 3), np.float32)
    ts = np.array([0.0, 0.25, 1.0], np.float32)
    steps = []
    x, n = sampler(SampleRequest(x0, {}, ts, w, "euler", lambda _i, t, _x: steps.append(t)))
    assert n == 2 and steps == [0.25, 1.0]
    np.testing.assert_allclose(x, 1.0 * (w + (1 - w) * 0.25), rtol=1e-6)
    half = sampler(SampleRequest(x0, {}, np.array([0.0, 0.5], np.float32), w, "euler"))[0]
    np.testing.assert_allclose(half, 0.5 * (w + (1 - w) * 0.25), rtol=1e-6)
    plain = HostSampler(RowVelocity(np.array([0.5, 0.5])))(SampleRequest(x0, {}, ts, 1.0, "euler"))
    np.testing.assert_allclose(plain[0], 0.5, rtol=1e-6)  # w = 1: the K cond rows alone


def test_unnormalise_is_x_times_std_plus_mean_channels_first(pipe):
    audio = pipe.bundle.manifest.audio
    mean, std = np.array(audio.latent_mean), np.array(audio.latent_std)
    x = np.random.default_rng(0).standard_normal((2, 5, audio.latent_channels)).astype(np.float32)
    out = unnormalise(x, audio)
    assert out.shape == (2, audio.latent_channels, 5) and out.flags.c_contiguous
    np.testing.assert_allclose(out, (x * std + mean).transpose(0, 2, 1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(unnormalise(np.zeros_like(x), audio)[0, :, 0], mean, rtol=1e-6)


def test_golden_latent_and_waveform(pipe):
    golden = np.load(GOLDEN)
    frames = golden_frames()
    opts = pipe.resolve(**REQUEST)
    latent = pipe.bundle.manifest.rates.lengths(frames.duration).latent
    clip, sync = pipe.encode_video(frames)
    conditions = pipe.condition(clip, sync, pipe.encode_text(opts.prompt, opts.negative_prompt),
                                latent)  # fmt: skip
    noise = np.stack([np.random.default_rng(opts.seed + k).standard_normal(
        (latent, 8), dtype=np.float32) for k in range(opts.tracks)])  # fmt: skip
    ts = sampling.time_grid(opts.grid, opts.steps)
    x, evaluations = pipe.sample(noise, conditions, ts, cfg=opts.cfg, solver=opts.solver)
    assert evaluations == 8 and opts.cfg == 4.5
    assert_close(x, golden["latent"])
    audio = pipe.generate(frames, opts).audio
    assert audio.shape == (2, 16000)
    assert_close(audio[:, ::32], golden["waveform"])
