"""Calibration of the mixed-precision pass: representative inputs and measured ranges.

:func:`calibration_inputs` runs the runtime pipeline on an fp32 bundle and records what every
component is fed: a video rendered by the procedural world (``v2a_export.train.world``, at the
bundle's frame sizes), a prompt and a negative prompt, at several durations, sampled with Euler
and classifier-free guidance. So the denoiser is calibrated on the real conditions and on the
real states x_t along the trajectory, the VAE decoder on sampled latents and the vocoder on the
mels the decoder makes: the inputs the deployed graphs will see, not random tensors.

:func:`measure_ranges` runs a graph with every float intermediate exposed as an extra output
and keeps, per tensor, the largest |value|, the smallest nonzero |value| and whether all were
finite (the approach of onnxruntime's fp16 block lists, made automatic: spec/deployment.md §2.3,
§7.3). Outputs are requested in chunks so that peak memory stays bounded on big graphs.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from v2a_runtime.backends.recording import RecordingSession
from v2a_runtime.config import COMPONENTS, DEFAULT_SAMPLER

from v2a_export.export.precision.graph import GraphIndex
from v2a_export.export.precision.policy import Range

_LOGGER = logging.getLogger(__name__)

PROMPTS = (
    ("glass bottles clink on a wooden table while rain falls", "wind noise"),
    ("a rubber ball bounces on a tiled floor", ""),
    ("metal pans clatter, then footsteps on gravel", "music"),
)
WORLD_MIN_S, WORLD_MAX_S = 2.0, 10.0  # scene lengths the procedural world renders
_EXTERNAL_BYTES = 1_800_000_000  # serialise with external data above this (protobuf limit 2 GB)
CHUNK_BUDGET_BYTES = 1_000_000_000  # exposed intermediates held at once by measure_ranges


@dataclass(frozen=True)
class CalibrationPlan:
    """What to run the fp32 bundle on. Durations should span the graphs' range: short clips
    and the trained window (8 s) exercise different sequence lengths and RoPE positions."""

    durations: tuple[float, ...] = (2.0, 8.0)
    steps: int = 8  # Euler steps per clip
    cfg: float = DEFAULT_SAMPLER.cfg
    seed: int = 0
    max_feeds: int = 8  # per component, evenly spread over the recorded calls
    prompts: tuple[tuple[str, str], ...] = PROMPTS
    # The video encoders see frames (segments) one by one and the decoders are convolutional:
    # their ranges are local, so calibrating them on the first frames / seconds of each clip
    # measures the same statistics at a fraction of the cost (full-size CLIP at 384 px is
    # ~0.5 TFLOP per frame, and every intermediate of a vocoder at 8 s is gigabytes).
    encoder_items: int | None = 4  # frames (clip) / segments (sync) per feed; None: all
    decoder_seconds: float | None = 2.0  # latent/mel span per feed; None: all
    videos: tuple[str, ...] = ()  # the user's own videos instead of rendered world scenes

    def __post_init__(self) -> None:
        if not self.durations or min(self.durations) <= 0:
            raise ValueError(f"calibration durations must be > 0 s, got {self.durations}")
        if self.steps < 1 or self.max_feeds < 1:
            raise ValueError(f"steps and max_feeds must be >= 1, got {self.steps}/{self.max_feeds}")


def calibration_inputs(
    bundle_dir: str | Path, plan: CalibrationPlan = CalibrationPlan(), *, threads: int | None = None
) -> dict[str, list[dict[str, np.ndarray]]]:
    """{component: [feeds, ...]} recorded from the runtime pipeline on the fp32 bundle: on
    rendered world clips of ``plan.durations``, or on the user's ``plan.videos``."""
    from v2a_runtime.pipeline import Pipeline

    pipe = Pipeline.load(bundle_dir, threads=threads)
    clips = plan_clips(plan, pipe.bundle.manifest)
    feeds, _ = record_pipeline(pipe, clips, steps=plan.steps, cfg=plan.cfg)
    rate = pipe.bundle.manifest.audio.latent_rate
    return {
        name: [_trim(name, f, plan, rate) for f in _spread(recorded, plan.max_feeds)]
        for name, recorded in feeds.items()
    }


@dataclass(frozen=True)
class Clip:
    """One input of a recording run: both frame streams, the prompts, the noise seed."""

    frames: object  # v2a_runtime.media.Frames
    prompt: str
    negative: str
    seed: int


def plan_clips(plan: CalibrationPlan, manifest) -> list[Clip]:
    """The plan's clips: the user's videos (decoded at the bundle's rates and sizes, up to the
    longest of ``plan.durations``), else rendered world scenes, one per duration."""
    video = manifest.video
    if plan.videos:
        from v2a_runtime.media import read_frames

        clips = []
        longest = min(max(plan.durations), manifest.sequence.max_duration)
        for k, path in enumerate(plan.videos):
            frames = read_frames(path, duration=None, clip_fps=video.clip_fps,
                                 clip_size=video.clip_size, sync_fps=video.sync_fps,
                                 sync_size=video.sync_size)  # fmt: skip
            frames = _first_seconds(frames, longest)
            prompt, negative = plan.prompts[k % len(plan.prompts)]
            clips.append(Clip(frames, prompt, negative, plan.seed + k))
        return clips
    out = []
    for k, duration in enumerate(plan.durations):
        prompt, negative = plan.prompts[k % len(plan.prompts)]
        out.append(Clip(rendered_frames(plan.seed + k, duration, video), prompt, negative,
                        plan.seed + k))  # fmt: skip
    return out


def _first_seconds(frames, seconds: float):
    from v2a_runtime.media import Frames

    if frames.duration <= seconds:
        return frames
    n_clip = int(round(len(frames.clip) * seconds / frames.duration))
    n_sync = int(round(len(frames.sync) * seconds / frames.duration))
    return Frames(clip=frames.clip[:n_clip], sync=frames.sync[:n_sync], start=frames.start,
                  duration=float(seconds))  # fmt: skip


def record_pipeline(pipe, clips, *, steps: int, cfg: float):
    """Run ``pipe`` (Euler, uniform grid, CFG, no watermark) on every clip, recording what each
    component is fed: ({component: [feeds, ...]}, [waveform (W,) per clip])."""
    recorders = {name: RecordingSession(pipe.sessions[name]) for name in COMPONENTS}
    recording = pipe.with_sessions(**recorders)
    audio = []
    for clip in clips:
        result = recording.generate(
            clip.frames,
            prompt=clip.prompt,
            negative_prompt=clip.negative,
            seed=clip.seed,
            steps=steps,
            solver="euler",
            grid="uniform",
            cfg=cfg,
            watermark=False,
        )
        audio.append(result.audio[0])
    return {name: r.feeds for name, r in recorders.items()}, audio


def _trim(name: str, feed: dict, plan: CalibrationPlan, latent_rate: float) -> dict:
    """The calibration slice of one recorded feed (see CalibrationPlan)."""
    if name in ("clip_visual", "sync_visual") and plan.encoder_items:
        return {k: v[: plan.encoder_items] for k, v in feed.items()}  # (F | S, ...)
    if name in ("vae_decoder", "vocoder") and plan.decoder_seconds:
        n = max(1, math.ceil(plan.decoder_seconds * latent_rate))  # latent frames
        n = n if name == "vae_decoder" else 2 * n  # mel frames = 2 L
        return {k: v[..., :n] for k, v in feed.items()}  # (B, C | n_mels, L | M)
    return feed


CHAIN = ("conditioner", "denoiser", "vae_decoder", "vocoder")


def chain_inputs(
    graph_dir: str | Path,
    config,
    plan: CalibrationPlan = CalibrationPlan(),
    *,
    threads: int | None = None,
) -> dict[str, list[dict[str, np.ndarray]]]:
    """Calibration feeds for a partial export without the encoders (``onnx/{conditioner,
    denoiser,vae_decoder,vocoder}.onnx`` under ``graph_dir``, e.g. the flow, VAE and vocoder
    of a full-size variant, whose CLIP is too costly to calibrate on a CPU). The conditioner
    gets encoder-like features (unit-norm rows, as the encoders emit); everything downstream is
    the real chain, as the pipeline runs it: conditions → Euler + CFG trajectory (the
    denoiser's feeds) → latent → mel. The latent goes to the VAE without the manifest's
    un-normalisation (a partial export has no manifest: identity statistics)."""
    from v2a_runtime.backends import load_session

    from v2a_export.export.descriptors import descriptors

    graph_dir = Path(graph_dir)
    sessions = {n: load_session(graph_dir / "onnx" / f"{n}.onnx", threads=threads) for n in CHAIN}
    desc, rules = descriptors(config), config.rates
    feeds: dict[str, list] = {n: [] for n in CHAIN}
    for k, duration in enumerate(plan.durations):
        sizes = desc["conditioner"].sizes(rules, duration)
        cond_in = desc["conditioner"].sample_inputs(sizes, seed=plan.seed + k)
        x = np.random.default_rng(plan.seed + k).standard_normal(
            (1, sizes["L"], config.flow.latent_dim), dtype=np.float32
        )  # (1, L, C)
        _, latent, trail = chain_run(sessions, cond_in, x, plan.steps, plan.cfg)
        for name, trail_feeds in trail.items():
            feeds[name] += trail_feeds
    rate = config.latent_rate
    return {n: [_trim(n, f, plan, rate) for f in _spread(v, plan.max_feeds)]
            for n, v in feeds.items()}  # fmt: skip


def chain_run(sessions, cond_in: dict, x: np.ndarray, steps: int, cfg: float):
    """(waveform (1, W), latent (1, C, L), {component: feeds}) of the conditioner → Euler with
    CFG over a uniform grid → VAE → vocoder chain on ``sessions``, from noise ``x``."""
    from v2a_runtime import sampling

    trail: dict[str, list] = {n: [] for n in CHAIN}
    trail["conditioner"].append(cond_in)
    conds = sessions["conditioner"].run(cond_in)
    rows = np.array([0, 1])  # [cond; uncond]
    feeds = {n: (v if n.endswith("_rope") else v[rows]) for n, v in conds.items()}

    def velocity(x: np.ndarray, t: float) -> np.ndarray:
        f = {"x": np.concatenate([x, x]), "t": np.full(2, t, np.float32), **feeds}
        trail["denoiser"].append(f)
        v = sessions["denoiser"].run(f)["velocity"]  # (2, L, C)
        return cfg * v[:1] + (1.0 - cfg) * v[1:]

    x = sampling.sample(velocity, x, solver="euler", grid="uniform", steps=steps)
    latent = np.ascontiguousarray(x.transpose(0, 2, 1))  # (1, C, L)
    trail["vae_decoder"].append({"latent": latent})
    mel = sessions["vae_decoder"].run({"latent": latent})["mel"]
    trail["vocoder"].append({"mel": mel})
    wave = sessions["vocoder"].run({"mel": mel})["waveform"][:, 0]  # (1, W)
    return wave, latent, trail


def rendered_frames(seed: int, duration: float, video):
    """Both frame streams of a procedural-world clip at the bundle's rates and sizes. The world
    renders 2–10 s scenes; a shorter span takes the scene's start, a longer one loops it."""
    from v2a_runtime import world
    from v2a_runtime.media import Frames

    span = min(max(float(duration), WORLD_MIN_S), WORLD_MAX_S)
    scene = world.make_scene(seed, span)

    def stream(fps: float, size: int) -> np.ndarray:
        times = world.decoded_times(span, fps)
        frames = world.render_frames(scene, times, size=size)  # (N, size, size, 3)
        n = int(fps * duration)
        return frames[np.arange(n) % len(frames)]

    return Frames(
        clip=stream(video.clip_fps, video.clip_size),
        sync=stream(video.sync_fps, video.sync_size),
        start=0.0,
        duration=float(duration),
    )


def _spread(feeds: list, n: int) -> list:
    if len(feeds) <= n:
        return feeds
    picks = np.linspace(0, len(feeds) - 1, n).round().astype(int)
    return [feeds[i] for i in sorted(set(picks.tolist()))]


def measure_ranges(
    model: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    threads: int | None = None,
    chunk: int = 256,
) -> dict[str, Range]:
    """Per float tensor of ``model`` (graph inputs, intermediates, outputs): the calibrated
    :class:`Range` over every feed. The first run exposes ``chunk`` tensors; later runs are
    sized so the exposed tensors stay near :data:`CHUNK_BUDGET_BYTES`."""
    if not feeds:
        raise ValueError("measure_ranges needs at least one feed")
    idx = GraphIndex.of(model)
    names = [v for v in idx.inputs if idx.is_float(v)]
    ranges: dict[str, Range] = {}
    for feed in feeds:
        for name in names:
            r = Range.of(feed[name])
            ranges[name] = ranges[name].merge(r) if name in ranges else r
    tensors, seen = [], set()
    for node in idx.nodes:
        for o in node.output:
            if o and idx.is_float(o) and o not in seen:
                tensors.append(o)
                seen.add(o)
    start, size = 0, chunk
    while start < len(tensors):
        part = tensors[start : start + size]
        session = session_with_outputs(model, idx, part, threads)
        held = 0
        for feed in feeds:
            values = session.run(part, dict(feed))
            held = max(held, sum(v.nbytes for v in values))
            for name, value in zip(part, values, strict=True):
                r = Range.of(value)
                ranges[name] = ranges[name].merge(r) if name in ranges else r
            del values
        start += len(part)
        # keep one run's exposed tensors near the memory budget
        per_tensor = max(1, held // max(1, len(part)))
        size = int(min(max(CHUNK_BUDGET_BYTES // per_tensor, 8), 4 * chunk))
    return ranges


def session_with_outputs(model, idx: GraphIndex, names: list[str], threads):
    """A CPU session of ``model`` that also returns the tensors ``names``."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {v.name for v in probe.graph.output}
    for name in names:
        if name not in have:
            probe.graph.output.append(helper.make_tensor_value_info(name, idx.types[name], None))
    # no fusions: every requested tensor is computed as the exported node computes it
    return cpu_session(probe, threads, optimization=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)


def cpu_session(
    model: onnx.ModelProto,
    threads: int | None = None,
    *,
    optimization=ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
) -> ort.InferenceSession:
    """An onnxruntime CPU session for an in-memory model; graphs over protobuf's 2 GB limit go
    through a temporary file with external data."""
    so = ort.SessionOptions()
    so.graph_optimization_level = optimization
    so.intra_op_num_threads = threads or 0
    so.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if model.ByteSize() < _EXTERNAL_BYTES:
        return ort.InferenceSession(model.SerializeToString(), so, providers=providers)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data")
        return ort.InferenceSession(str(path), so, providers=providers)


__all__ = [
    "CHAIN",
    "PROMPTS",
    "chain_inputs",
    "chain_run",
    "cpu_session",
    "CalibrationPlan",
    "Clip",
    "calibration_inputs",
    "plan_clips",
    "record_pipeline",
    "measure_ranges",
    "rendered_frames",
]
