"""The eager PyTorch reference pipeline: frames + prompt ids → waveform.

Faithful to MMAudio's ``demo.py`` / ``eval_utils.generate`` defaults (spec/mmaudio.md §1):
Euler, 25 uniform steps with t from 0 (noise) to 1 (data), CFG 4.5 run as two sequential
passes, the unconditional branch = learned null video features + the negative prompt's text
features (the empty string's when there is none). It is the parity reference and the speed
baseline of every benchmark, so it stays plain eager PyTorch.

Stages (each a method, so benchmarks can time them; :meth:`ReferencePipeline.generate` also
reports each stage's wall time to an optional ``on_stage(name, seconds)`` callback):
``encoders`` → ``conditions`` → ``sampling`` → ``vae`` → ``vocoder``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor
from v2a_runtime.config import DEFAULT_SAMPLER
from v2a_runtime.sequence import SEGMENT_FRAMES, SEGMENT_STRIDE, SequenceLengths

from v2a_export.models.build import Networks
from v2a_export.models.flow import Conditions

DEFAULT_STEPS = 25

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (t 0-d, x (B, L, C)) -> v (B, L, C)
StepCallback = Callable[[int, Tensor, Tensor, Tensor], None]  # (i, t, x, v)


def euler(
    velocity_fn: VelocityFn, x0: Tensor, num_steps: int, *, callback: StepCallback | None = None
) -> Tensor:
    """Explicit Euler on dx/dt = v(t, x) over ``linspace(0, 1, num_steps + 1)`` (float32),
    t = 0 noise → t = 1 data; the last velocity is taken at ``1 − 1/num_steps``
    (``FlowMatching(min_sigma=0, inference_mode='euler').to_data``)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    ts = torch.linspace(0, 1, num_steps + 1)
    x = x0
    for i in range(num_steps):
        v = velocity_fn(ts[i], x)  # (B, L, C)
        if callback is not None:
            callback(i, ts[i], x, v)
        x = x + (ts[i + 1] - ts[i]) * v
    return x


def segment_sync_frames(frames: Tensor) -> Tensor:
    """(Fs, H, W, 3) → (S, 16, H, W, 3): windows of 16 frames with stride 8 (a view)."""
    windows = frames.unfold(0, SEGMENT_FRAMES, SEGMENT_STRIDE)  # (S, H, W, 3, 16)
    return windows.permute(0, 4, 1, 2, 3)  # (S, 16, H, W, 3)


@dataclass(frozen=True)
class Features:
    """Encoder outputs for one video and its prompts (batch 1)."""

    clip: Tensor  # (1, Lc, Dc), L2-normalised
    sync: Tensor  # (1, Ls, Ds)
    text: Tensor  # (1, 77, Dt), per-token L2-normalised
    negative_text: Tensor  # (1, 77, Dt)


@dataclass(frozen=True)
class ReferenceOutput:
    waveform: Tensor  # (B, W) float32 in [-1, 1]
    mel: Tensor  # (B, n_mels, M) log-mel
    latent: Tensor  # (B, L, C) normalised model latent (before unnormalize)


class ReferencePipeline:
    """The reference generator over a set of networks (eval mode, folded weights)."""

    def __init__(self, nets: Networks):
        self.nets = nets
        self.config = nets.config

    @property
    def device(self) -> torch.device:
        return self.nets.flow.latent_mean.device

    def lengths(self, duration: float) -> SequenceLengths:
        return self.config.rates.lengths(duration)

    # --- stages ------------------------------------------------------------------------------

    def encode(
        self, clip_frames: Tensor, sync_frames: Tensor, prompt_ids: Tensor, negative_ids: Tensor
    ) -> Features:
        """uint8 clip frames (F, Hc, Hc, 3), uint8 sync frames (≥ Fs, Hs, Hs, 3), token ids
        (1, 77) for the prompt and the negative prompt → encoder features."""
        nets, dev = self.nets, self.device
        clip = nets.clip.encode_frames_u8(clip_frames.to(dev))  # (F, Dc)
        segments = segment_sync_frames(sync_frames.to(dev))  # (S, 16, Hs, Hs, 3)
        sync = nets.synchformer.encode_segments_u8(segments)  # (S, 8, Ds)
        text = nets.clip.encode_text(torch.cat([prompt_ids, negative_ids]).to(dev))  # (2, 77, Dt)
        return Features(clip[None], sync.flatten(0, 1)[None], text[:1], text[1:])

    def conditions(self, feats: Features, latent_len: int) -> tuple[Conditions, Conditions]:
        """Conditional and unconditional branch conditions (batch 1)."""
        flow = self.nets.flow
        cond = flow.preprocess_conditions(feats.clip, feats.sync, feats.text, latent_len)
        uncond = flow.get_empty_conditions(
            1,
            clip_len=feats.clip.shape[1],
            sync_len=feats.sync.shape[1],
            latent_len=latent_len,
            negative_text_features=feats.negative_text,
        )
        return cond, uncond

    def initial_noise(self, latent_len: int, seed: int, batch: int = 1) -> Tensor:
        """x0 ~ N(0, I), (B, L, C), from a CPU ``torch.Generator`` seeded with ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        x0 = torch.randn(batch, latent_len, self.config.flow.latent_dim, generator=gen)
        return x0.to(self.device)

    def sample(
        self,
        x0: Tensor,
        cond: Conditions,
        uncond: Conditions,
        *,
        steps: int = DEFAULT_STEPS,
        cfg: float = DEFAULT_SAMPLER.cfg,
        callback: StepCallback | None = None,
    ) -> Tensor:
        """Euler + CFG from x0 (B, L, C) to the normalised latent (B, L, C)."""
        batch = x0.shape[0]
        cond, uncond = cond.expand(batch), uncond.expand(batch)
        flow = self.nets.flow
        return euler(
            lambda t, x: flow.ode_wrapper(t, x, cond, uncond, cfg), x0, steps, callback=callback
        )

    def decode_mel(self, latent: Tensor) -> Tensor:
        """Normalised latent (B, L, C) → log-mel (B, n_mels, 2L)."""
        z = self.nets.flow.unnormalize(latent).transpose(1, 2)  # (B, C, L)
        return self.nets.vae.decode(z)

    def vocode(self, mel: Tensor) -> Tensor:
        """log-mel (B, n_mels, M) → waveform (B, M·hop)."""
        return self.nets.vocoder(mel)[:, 0]  # (B, W)

    # --- end to end --------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        clip_frames: Tensor,
        sync_frames: Tensor,
        prompt_ids: Tensor,
        negative_ids: Tensor,
        *,
        duration: float,
        seed: int | None = None,
        x0: Tensor | None = None,
        steps: int = DEFAULT_STEPS,
        cfg: float = DEFAULT_SAMPLER.cfg,
        on_stage: Callable[[str, float], None] | None = None,
    ) -> ReferenceOutput:
        """Frames + prompt ids → waveform for ``duration`` seconds.

        ``clip_frames`` must hold exactly ``int(clip_fps·d)`` frames and ``sync_frames`` at
        least the frames of the ``S`` sync segments (sequence rules). Give ``seed`` (batch 1)
        or ``x0`` (B, L, C); B > 1 generates B tracks for the same video.
        """
        seq = self.lengths(duration)
        _check_frames(clip_frames, seq.clip_frames, self.config.streams.clip_size, "clip_frames")
        _check_frames(
            sync_frames,
            seq.sync_frames,
            self.config.streams.sync_size,
            "sync_frames",
            at_least=True,
        )
        if (seed is None) == (x0 is None):
            raise ValueError("give exactly one of seed or x0")
        with _stage("encoders", on_stage):
            feats = self.encode(
                clip_frames, sync_frames[: seq.sync_frames], prompt_ids, negative_ids
            )
        with _stage("conditions", on_stage):
            cond, uncond = self.conditions(feats, seq.latent)
            if x0 is None:
                x0 = self.initial_noise(seq.latent, seed)
        want = (seq.latent, self.config.flow.latent_dim)
        if tuple(x0.shape[1:]) != want:
            raise ValueError(f"x0 shape {tuple(x0.shape)} must be (B, {want[0]}, {want[1]})")
        with _stage("sampling", on_stage):
            latent = self.sample(x0.to(self.device), cond, uncond, steps=steps, cfg=cfg)
        with _stage("vae", on_stage):
            mel = self.decode_mel(latent)
        with _stage("vocoder", on_stage):
            wav = self.vocode(mel)
        return ReferenceOutput(wav, mel, latent)


def _check_frames(
    frames: Tensor, count: int, size: int, name: str, *, at_least: bool = False
) -> None:
    ok_count = frames.shape[0] >= count if at_least else frames.shape[0] == count
    if (
        frames.dtype != torch.uint8
        or frames.ndim != 4
        or not ok_count
        or (tuple(frames.shape[1:]) != (size, size, 3))
    ):
        need = f"{'>= ' if at_least else ''}{count}"
        raise ValueError(
            f"{name}: expected uint8 ({need}, {size}, {size}, 3), "
            f"got {str(frames.dtype).removeprefix('torch.')} {tuple(frames.shape)}"
        )


@contextmanager
def _stage(name: str, on_stage: Callable[[str, float], None] | None):
    start = time.perf_counter()
    yield
    if on_stage is not None:
        on_stage(name, time.perf_counter() - start)
