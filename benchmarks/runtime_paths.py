"""The two paths that benchmarks/runtime.py times: the ONNX runtime and the PyTorch reference.

Each path is a zero-argument callable that does one unit of work and returns
``(seconds per stage, output)``; the stages use one vocabulary for both paths
(:data:`STAGES`), mapped from what each side reports itself:

| stage | runtime (``Pipeline.generate`` timings) | reference (``ReferencePipeline``) |
|---|---|---|
| decode | ``decode`` (PyAV, in generate) | ``read_frames``: no decoder of its own, same code |
| encoders | ``text`` + ``encode`` | ``encoders`` (+ tokenising) |
| conditions | ``condition`` | ``conditions`` |
| sampling | ``sample`` | ``sampling`` (two sequential passes per step, as upstream) |
| vae | ``vae`` | ``vae`` |
| vocoder | ``vocoder`` | ``vocoder`` |
| watermark | ``watermark`` | - |
| end_to_end | wall time of the call | wall time of decode + tokenise + generate |

In the flow chain the runtime keeps only conditions … vocoder and ``end_to_end`` (the wall
time of its ``generate``: the chain plus its per-call overhead); the reference's
``end_to_end`` is its four stages back to back.

Three kinds of work:

- **end to end** from the video file (:func:`runtime_end_to_end`, :func:`reference_end_to_end`);
- **flow chain** on fixed encoder features (:func:`runtime_chain`, :func:`reference_chain`):
  conditions → sampling → vae → vocoder. The runtime runs its own ``generate`` with the three
  encoder sessions replaced by :class:`FixedSession` (they return the given features), so the
  runtime's real code (feeds, CFG batching, solver, decoding) is what is timed;
- **encoders per unit** (:func:`encoder_units`): ``clip_visual`` on one frame, ``sync_visual``
  on one segment, ``text`` on one [prompt; negative] pair, session vs module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from v2a_runtime.config import TensorInfo
from v2a_runtime.media import Frames, read_frames, sync_segments
from v2a_runtime.pipeline import Pipeline

from v2a_export.reference import Features, ReferencePipeline

STAGES = (
    "decode",
    "encoders",
    "conditions",
    "sampling",
    "vae",
    "vocoder",
    "watermark",
    "end_to_end",
)
CHAIN_STAGES = ("conditions", "sampling", "vae", "vocoder", "end_to_end")
Path_ = Callable[[], tuple[dict[str, float], np.ndarray]]


@dataclass(frozen=True)
class Request:
    """What both paths generate: the same video, tokens, noise, solver and steps."""

    video: Path
    frames: Frames  # the video decoded at the bundle's rates and sizes
    prompt: str
    negative: str
    token_ids: np.ndarray  # int64 (2, 77): [prompt; negative], the runtime's tokenizer
    x0: np.ndarray  # float32 (1, L, C): the runtime's noise for ``seed`` (track 0)
    duration: float
    steps: int
    cfg: float
    seed: int

    def generate_options(self, watermark: bool) -> dict:
        """Pipeline.generate keywords: the reference's algorithm (Euler, uniform grid)."""
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative,
            "start": 0.0,
            "duration": self.duration,
            "seed": self.seed,
            "steps": self.steps,
            "solver": "euler",
            "grid": "uniform",
            "cfg": self.cfg,
            "watermark": watermark,
        }


def make_noise(seed: int, latent: int, channels: int) -> np.ndarray:
    """(1, L, C) float32: what ``Pipeline.generate`` draws for track 0 of ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((latent, channels), dtype=np.float32)[None]  # (1, L, C)


# --- end to end -----------------------------------------------------------------------------


def runtime_end_to_end(pipe: Pipeline, req: Request, *, watermark: bool) -> Path_:
    def run() -> tuple[dict[str, float], np.ndarray]:
        start = time.perf_counter()
        result = pipe.generate(req.video, **req.generate_options(watermark))
        wall = time.perf_counter() - start
        return _runtime_stages(result.timings, wall), result.audio[0]  # (W,)

    return run


def reference_end_to_end(ref: ReferencePipeline, pipe: Pipeline, req: Request) -> Path_:
    """Decode (the runtime's decoder: the reference has none), tokenise, ``generate``."""
    video = pipe.bundle.manifest.video

    @torch.no_grad()
    def run() -> tuple[dict[str, float], np.ndarray]:
        stages: dict[str, float] = {}
        start = time.perf_counter()
        frames = read_frames(
            req.video,
            start=0.0,
            duration=req.duration,
            clip_fps=video.clip_fps,
            clip_size=video.clip_size,
            sync_fps=video.sync_fps,
            sync_size=video.sync_size,
        )
        stages["decode"] = time.perf_counter() - start
        t0 = time.perf_counter()
        ids = torch.from_numpy(pipe.tokenizer([req.prompt, req.negative]))  # (2, 77)
        tokenise = time.perf_counter() - t0
        out = ref.generate(
            torch.from_numpy(frames.clip),
            torch.from_numpy(frames.sync),
            ids[:1],
            ids[1:],
            duration=frames.duration,
            x0=torch.from_numpy(req.x0),
            steps=req.steps,
            cfg=req.cfg,
            on_stage=stages.__setitem__,
        )
        stages["encoders"] += tokenise
        stages["end_to_end"] = time.perf_counter() - start
        return stages, _reference_audio(out.waveform, req, pipe)

    return run


# --- the flow chain on fixed encoder features -------------------------------------------------


@dataclass(frozen=True)
class FixedSession:
    """A :class:`v2a_runtime.backends.Session` that returns fixed outputs (an encoder whose
    work is not part of this measurement)."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    values: dict[str, np.ndarray]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # noqa: ARG002
        return dict(self.values)


@dataclass(frozen=True)
class EncoderFeatures:
    """Encoder outputs in the runtime's layout, batch 1."""

    clip: np.ndarray  # float32 (F, Dc), L2-normalised rows
    sync: np.ndarray  # float32 (S, 8, Ds)
    text: np.ndarray  # float32 (2, 77, Dt): [prompt; negative], per-token L2-normalised

    @classmethod
    def random(cls, seed: int, frames: int, segments: int, dims: tuple[int, int, int]):
        """Seeded stand-ins with the real features' shapes and norms."""
        dc, ds, dt = dims
        rng = np.random.default_rng([seed, 7])
        clip = rng.standard_normal((frames, dc), dtype=np.float32)  # (F, Dc)
        sync = rng.standard_normal((segments, 8, ds), dtype=np.float32)  # (S, 8, Ds)
        text = rng.standard_normal((2, 77, dt), dtype=np.float32)  # (2, 77, Dt)
        clip /= np.linalg.norm(clip, axis=-1, keepdims=True)
        text /= np.linalg.norm(text, axis=-1, keepdims=True)
        return cls(clip, sync, text)

    def reference(self) -> Features:
        s, t, d = self.sync.shape
        return Features(
            clip=torch.from_numpy(self.clip)[None],  # (1, F, Dc)
            sync=torch.from_numpy(self.sync.reshape(1, s * t, d)),  # (1, Ls, Ds)
            text=torch.from_numpy(self.text[:1]),  # (1, 77, Dt)
            negative_text=torch.from_numpy(self.text[1:]),  # (1, 77, Dt)
        )


def with_fixed_encoders(pipe: Pipeline, feats: EncoderFeatures) -> Pipeline:
    """``pipe`` whose clip_visual, sync_visual and text sessions return ``feats``."""
    values = {
        "clip_visual": {"clip_features": feats.clip},
        "sync_visual": {"sync_features": feats.sync},
        "text": {"text_features": feats.text},
    }
    specs = pipe.bundle.manifest.components
    fixed = {
        name: FixedSession(
            tuple(TensorInfo(t.name, t.dtype, tuple(t.shape)) for t in specs[name].inputs),
            tuple(TensorInfo(t.name, t.dtype, tuple(t.shape)) for t in specs[name].outputs),
            out,
        )
        for name, out in values.items()
    }
    return pipe.with_sessions(**fixed)


def runtime_chain(pipe: Pipeline, req: Request) -> Path_:
    """``generate`` on decoded frames with fixed encoders (see :func:`with_fixed_encoders`)."""

    def run() -> tuple[dict[str, float], np.ndarray]:
        start = time.perf_counter()
        result = pipe.generate(req.frames, **req.generate_options(watermark=False))
        wall = time.perf_counter() - start
        stages = _runtime_stages(result.timings, wall)
        stages = {k: v for k, v in stages.items() if k in CHAIN_STAGES}  # the rest is stubbed
        return stages, result.audio[0]  # (W,)

    return run


def reference_chain(
    ref: ReferencePipeline, feats: EncoderFeatures, req: Request, pipe: Pipeline
) -> Path_:
    """The reference's stage methods, timed as its ``generate`` times them."""
    features = feats.reference()
    latent = req.x0.shape[1]

    @torch.no_grad()
    def run() -> tuple[dict[str, float], np.ndarray]:
        stages: dict[str, float] = {}
        start = time.perf_counter()
        cond, uncond = ref.conditions(features, latent)
        t1 = time.perf_counter()
        x = ref.sample(torch.from_numpy(req.x0), cond, uncond, steps=req.steps, cfg=req.cfg)
        t2 = time.perf_counter()
        mel = ref.decode_mel(x)
        t3 = time.perf_counter()
        wave = ref.vocode(mel)  # (1, W)
        t4 = time.perf_counter()
        stages.update(conditions=t1 - start, sampling=t2 - t1, vae=t3 - t2, vocoder=t4 - t3)
        stages["end_to_end"] = t4 - start
        return stages, _reference_audio(wave, req, pipe)

    return run


# --- encoders per unit ------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderUnit:
    name: str  # the component
    unit: str  # "frame", "segment", "prompt pair"
    per_clip: int  # units in the request's clip (frames, segments, 1)
    runtime: Path_
    reference: Path_


def encoder_units(sessions: dict, nets, req: Request) -> list[EncoderUnit]:
    """One unit of each encoder in ``sessions``: the runtime's session vs the PyTorch module
    (``nets`` needs the networks behind them: clip for clip_visual and text, synchformer)."""
    frame = np.array(req.frames.clip[:1])  # (1, Hc, Hc, 3), a writable copy
    segments = sync_segments(req.frames.sync)  # (S, 16, Hs, Hs, 3) read-only view
    segment = np.array(segments[:1])  # (1, 16, Hs, Hs, 3)
    ids = req.token_ids  # (2, 77)
    cases = [
        ("clip_visual", "frame", len(req.frames.clip), {"frames": frame},
         lambda: nets.clip.encode_frames_u8(torch.from_numpy(frame))),
        ("sync_visual", "segment", segments.shape[0], {"segments": segment},
         lambda: nets.synchformer.encode_segments_u8(torch.from_numpy(segment))),
        ("text", "prompt pair", 1, {"token_ids": ids},
         lambda: nets.clip.encode_text(torch.from_numpy(ids))),
    ]  # fmt: skip
    return [
        EncoderUnit(name, unit, n, _session_path(sessions[name], feeds), _module_path(fn))
        for name, unit, n, feeds, fn in cases
        if name in sessions
    ]


def _session_path(session, feeds: dict[str, np.ndarray]) -> Path_:
    def run() -> tuple[dict[str, float], np.ndarray]:
        start = time.perf_counter()
        out = next(iter(session.run(feeds).values()))
        return {"unit": time.perf_counter() - start}, out

    return run


def _module_path(fn: Callable[[], torch.Tensor]) -> Path_:
    @torch.no_grad()
    def run() -> tuple[dict[str, float], np.ndarray]:
        start = time.perf_counter()
        out = fn()
        return {"unit": time.perf_counter() - start}, out.numpy()

    return run


# --- helpers ----------------------------------------------------------------------------------


def _runtime_stages(t: dict[str, float], wall: float) -> dict[str, float]:
    return {
        "decode": t["decode"],
        "encoders": t["text"] + t["encode"],
        "conditions": t["condition"],
        "sampling": t["sample"],
        "vae": t["vae"],
        "vocoder": t["vocoder"],
        "watermark": t["watermark"],
        "end_to_end": wall,
    }


def _reference_audio(waveform: torch.Tensor, req: Request, pipe: Pipeline) -> np.ndarray:
    """(W,) float32 as the runtime returns it: trimmed to the span, clipped to [-1, 1]."""
    n = round(req.duration * pipe.bundle.manifest.audio.sample_rate)
    return waveform[0, :n].clamp(-1.0, 1.0).numpy()
