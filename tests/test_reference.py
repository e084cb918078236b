"""The eager reference pipeline on tiny random weights."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from v2a_runtime.sequence import sequence_lengths  # noqa: E402

from v2a_export.models.build import build_networks  # noqa: E402
from v2a_export.models.configs import TINY  # noqa: E402
from v2a_export.reference import (  # noqa: E402
    ReferencePipeline,
    euler,
    segment_sync_frames,
)

STEPS = 4


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def pipe():
    return ReferencePipeline(build_networks(TINY, seed=5))


def _inputs(duration: float, seed: int = 0):
    seq = sequence_lengths(
        duration, sample_rate=16000, hop_length=256, clip_fps=TINY.streams.clip_fps
    )
    gen = torch.Generator().manual_seed(seed)
    clip = torch.randint(0, 256, (seq.clip_frames, 64, 64, 3), generator=gen, dtype=torch.uint8)
    sync = torch.randint(
        0, 256, (seq.sync_frames + 3, 64, 64, 3), generator=gen, dtype=torch.uint8
    )  # extra frames past the last segment are unused
    prompt = torch.zeros(1, 77, dtype=torch.int64)
    prompt[0, :4] = torch.tensor([49406, 320, 1929, 49407])  # SOT "a dog" EOT
    negative = torch.zeros(1, 77, dtype=torch.int64)
    negative[0, :2] = torch.tensor([49406, 49407])  # the empty string
    return seq, (clip, sync, prompt, negative)


def test_seeded_generation_is_reproducible_and_seed_dependent(pipe):
    seq, inputs = _inputs(1.0)
    a = pipe.generate(*inputs, duration=1.0, seed=0, steps=STEPS)
    b = pipe.generate(*inputs, duration=1.0, seed=0, steps=STEPS)
    c = pipe.generate(*inputs, duration=1.0, seed=1, steps=STEPS)
    assert torch.equal(a.waveform, b.waveform) and torch.equal(a.latent, b.latent)
    assert not torch.allclose(a.waveform, c.waveform)
    assert (a.waveform - c.waveform).abs().max() > 1e-3


@pytest.mark.parametrize("duration", [1.0, 2.0])
def test_output_lengths_follow_the_sequence_rules(pipe, duration):
    seq, inputs = _inputs(duration)
    stages = []
    out = pipe.generate(
        *inputs,
        duration=duration,
        seed=0,
        steps=2,
        on_stage=lambda name, sec: stages.append((name, sec)),
    )
    assert out.latent.shape == (1, seq.latent, TINY.flow.latent_dim)
    assert out.mel.shape == (1, TINY.mel.n_mels, seq.mel_frames)
    assert out.waveform.shape == (1, seq.samples)  # 16 384 at 1 s, 32 256 at 2 s
    assert torch.isfinite(out.waveform).all() and out.waveform.abs().max() <= 1.0
    assert [s for s, _ in stages] == ["encoders", "conditions", "sampling", "vae", "vocoder"]
    assert all(sec >= 0 for _, sec in stages)


@torch.no_grad()
def test_sampling_equals_batched_conditioner_denoiser_euler(pipe):
    """The reference (two sequential CFG passes per step) equals a hand-written Euler loop over
    the export split: one conditioner call, one denoiser call on [cond; uncond] per step."""
    seq, (clip, sync, prompt, negative) = _inputs(1.0, seed=3)
    flow, cfg = pipe.nets.flow, 4.5
    feats = pipe.encode(clip, sync[: seq.sync_frames], prompt, negative)
    cond, uncond = pipe.conditions(feats, seq.latent)
    x0 = pipe.initial_noise(seq.latent, seed=7)
    ref = pipe.sample(x0, cond, uncond, steps=STEPS, cfg=cfg)

    idx = flow.sync_index(feats.sync.shape[1], seq.latent)
    conds = flow.conditioner(feats.clip, feats.sync, feats.text, feats.negative_text, idx)
    x = x0
    for i in range(STEPS):
        t0, t1 = i / STEPS, (i + 1) / STEPS
        v = flow.denoiser(torch.cat([x, x]), torch.full((2,), t0), *conds)  # (2, L, C)
        x = x + (t1 - t0) * (cfg * v[:1] + (1 - cfg) * v[1:])
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=3e-5)  # float32 order of the batch
    assert (ref - x0).abs().max() > 0.1  # the sampler really moved


@torch.no_grad()
def test_negative_prompt_and_cfg_change_the_result(pipe):
    seq, (clip, sync, prompt, negative) = _inputs(1.0)
    x0 = pipe.initial_noise(seq.latent, seed=0)
    base = pipe.generate(clip, sync, prompt, negative, duration=1.0, x0=x0, steps=2)
    other_neg = pipe.generate(clip, sync, prompt, prompt, duration=1.0, x0=x0, steps=2)
    no_cfg = pipe.generate(clip, sync, prompt, negative, duration=1.0, x0=x0, steps=2, cfg=0.5)
    assert not torch.allclose(base.latent, other_neg.latent)
    assert not torch.allclose(base.latent, no_cfg.latent)
    # two tracks from a batched x0 equal the two single-track runs
    x0b = torch.cat([x0, pipe.initial_noise(seq.latent, seed=1)])
    both = pipe.generate(clip, sync, prompt, negative, duration=1.0, x0=x0b, steps=2)
    torch.testing.assert_close(both.latent[:1], base.latent, rtol=1e-5, atol=3e-5)


def test_bad_inputs_are_value_errors_naming_the_input(pipe):
    seq, (clip, sync, prompt, negative) = _inputs(1.0)
    with pytest.raises(
        ValueError, match=rf"clip_frames: expected uint8 \({seq.clip_frames}, 64, 64, 3\)"
    ):
        pipe.generate(clip[:-1], sync, prompt, negative, duration=1.0, seed=0, steps=1)
    with pytest.raises(ValueError, match=r"sync_frames: expected uint8 \(>= 24, 64, 64, 3\)"):
        pipe.generate(clip, sync[:10], prompt, negative, duration=1.0, seed=0, steps=1)
    with pytest.raises(ValueError, match="exactly one of seed or x0"):
        pipe.generate(clip, sync, prompt, negative, duration=1.0, steps=1)
    with pytest.raises(ValueError, match=r"x0 shape \(1, 5, 8\) must be \(B, 32, 8\)"):
        pipe.generate(clip, sync, prompt, negative, duration=1.0, x0=torch.zeros(1, 5, 8))
    with pytest.raises(ValueError, match="shorter than one sync segment"):
        pipe.generate(clip, sync, prompt, negative, duration=0.5, seed=0)


def test_euler_grid_and_segments():
    seen = []
    x = euler(
        lambda _t, x: torch.ones_like(x),
        torch.zeros(1, 3, 2),
        5,
        callback=lambda _i, t, _x, _v: seen.append(float(t)),
    )
    torch.testing.assert_close(x, torch.ones(1, 3, 2))  # ∫0^1 1 dt
    assert seen == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    with pytest.raises(ValueError, match="num_steps"):
        euler(lambda _t, x: x, torch.zeros(1), 0)
    frames = torch.arange(40).view(40, 1, 1, 1).expand(40, 2, 2, 3)
    seg = segment_sync_frames(frames)  # (S, 16, H, W, 3)
    assert seg.shape == (4, 16, 2, 2, 3)
    for s in range(4):
        assert torch.equal(seg[s], frames[8 * s : 8 * s + 16])
