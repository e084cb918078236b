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
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from v2a_runtime.backends import Session, TensorInfo
from v2a_runtime.bundle import COMPONENTS

from v2a_export.export.precision_graph import GraphIndex
from v2a_export.export.precision_types import Range

_LOGGER = logging.getLogger(__name__)

PROMPTS = (
    ("glass bottles clink on a wooden table while rain falls", "wind noise"),
    ("a rubber ball bounces on a tiled floor", ""),
    ("metal pans clatter, then footsteps on gravel", "music"),
)
WORLD_MIN_S, WORLD_MAX_S = 2.0, 10.0  # scene lengths the procedural world renders
_EXTERNAL_BYTES = 1_800_000_000  # serialise with external data above this (protobuf limit 2 GB)


@dataclass(frozen=True)
class CalibrationPlan:
    """What to run the fp32 bundle on. Durations should span the graphs' range: short clips
    and the trained window (8 s) exercise different sequence lengths and RoPE positions."""

    durations: tuple[float, ...] = (2.0, 8.0)
    steps: int = 8  # Euler steps per clip
    cfg: float = 4.5
    seed: int = 0
    max_feeds: int = 8  # per component, evenly spread over the recorded calls
    prompts: tuple[tuple[str, str], ...] = PROMPTS

    def __post_init__(self) -> None:
        if not self.durations or min(self.durations) <= 0:
            raise ValueError(f"calibration durations must be > 0 s, got {self.durations}")
        if self.steps < 1 or self.max_feeds < 1:
            raise ValueError(f"steps and max_feeds must be >= 1, got {self.steps}/{self.max_feeds}")


@dataclass
class _Recorder:
    """A Session that records every feed it is given (and forwards the call)."""

    session: Session
    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self.session.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self.session.outputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.feeds.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self.session.run(feeds)


def calibration_inputs(
    bundle_dir: str | Path, plan: CalibrationPlan = CalibrationPlan(), *, threads: int | None = None
) -> dict[str, list[dict[str, np.ndarray]]]:
    """{component: [feeds, ...]} recorded from the runtime pipeline on the fp32 bundle."""
    from v2a_runtime.pipeline import Pipeline

    pipe = Pipeline.load(bundle_dir, threads=threads)
    recorders = {name: _Recorder(pipe.sessions[name]) for name in COMPONENTS}
    recording = replace(pipe, sessions=dict(recorders))
    video = pipe.bundle.manifest.video
    for k, duration in enumerate(plan.durations):
        prompt, negative = plan.prompts[k % len(plan.prompts)]
        frames = rendered_frames(plan.seed + k, duration, video)
        recording.generate(
            frames,
            prompt=prompt,
            negative_prompt=negative,
            seed=plan.seed + k,
            steps=plan.steps,
            solver="euler",
            grid="uniform",
            cfg=plan.cfg,
            watermark=False,
        )
    return {name: _spread(r.feeds, plan.max_feeds) for name, r in recorders.items()}


def rendered_frames(seed: int, duration: float, video):
    """Both frame streams of a procedural-world clip at the bundle's rates and sizes. The world
    renders 2–10 s scenes; a shorter span takes the scene's start, a longer one loops it."""
    from v2a_runtime.media import Frames

    from v2a_export.train import world

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
    :class:`Range` over every feed."""
    if not feeds:
        raise ValueError("measure_ranges needs at least one feed")
    idx = GraphIndex.of(model)
    names = [v for v in idx.inputs if idx.is_float(v)]
    ranges: dict[str, Range] = {}
    for feed in feeds:
        for name in names:
            r = Range.of(feed[name])
            ranges[name] = ranges[name].merge(r) if name in ranges else r
    tensors = []
    for node in idx.nodes:
        tensors += [o for o in node.output if o and idx.is_float(o) and o not in tensors]
    for start in range(0, len(tensors), chunk):
        part = tensors[start : start + chunk]
        session = _session_with_outputs(model, idx, part, threads)
        for feed in feeds:
            values = session.run(part, dict(feed))
            for name, value in zip(part, values, strict=True):
                r = Range.of(value)
                ranges[name] = ranges[name].merge(r) if name in ranges else r
    return ranges


def _session_with_outputs(model, idx: GraphIndex, names: list[str], threads):
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {v.name for v in probe.graph.output}
    for name in names:
        if name not in have:
            probe.graph.output.append(helper.make_tensor_value_info(name, idx.types[name], None))
    so = ort.SessionOptions()
    # no fusions: every requested tensor is computed as the exported node computes it
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.intra_op_num_threads = threads or 0
    so.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if probe.ByteSize() < _EXTERNAL_BYTES:
        return ort.InferenceSession(probe.SerializeToString(), so, providers=providers)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save_model(probe, str(path), save_as_external_data=True, location="probe.onnx.data")
        return ort.InferenceSession(str(path), so, providers=providers)


__all__ = [
    "PROMPTS",
    "CalibrationPlan",
    "calibration_inputs",
    "measure_ranges",
    "rendered_frames",
]
