"""The requests a benchmark sends: what one LoadGen query sample runs.

A request is a video (a file, or its frames decoded once before the test) and a prompt. By
default it is a held-out scene of the procedural world rendered into a file (the shipped model's
own domain, with the scene's caption as prompt); ``--video FILE`` uses the user's clips.
:func:`serve` runs one request through the pipeline exactly as ``v2a generate`` does, plus the
mux into a video when asked, and returns the seconds per stage.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..frames import frame_source
from ..media import Frames, mux, probe
from ..pipeline import GenerateOptions, Pipeline
from ..sequence import min_duration
from .config import BenchError

SCENE_SECONDS = 8.0  # the rendered scene: the trained window of the shipped model
MIN_SCENE = 2.0  # the world renders scenes of 2-10 s; a shorter --duration uses their start


@dataclass(frozen=True)
class Request:
    name: str
    path: Path  # the video file
    prompt: str
    negative_prompt: str = ""


def world_scenes(work: Path, count: int = 1, seconds: float = SCENE_SECONDS) -> list[Request]:
    """``count`` held-out world scenes rendered into ``work`` as silent H.264 files."""
    from .. import world  # the renderer; only needed for synthetic requests

    out = []
    for n in range(count):
        scene = world.make_scene(world.HELD_OUT_SEED_BASE + n, seconds)
        path = world.write_video(scene, work / f"scene{n}.mp4")
        out.append(Request(f"scene {n}", path, scene.caption))
    return out


def video_files(paths: list[Path], prompt: str, negative_prompt: str = "") -> list[Request]:
    """The user's videos, each checked to be a readable video long enough for one window."""
    out = []
    for path in paths:
        info = probe(path)  # MediaError (a ValueError) when not a readable video
        if info.duration < min_duration() - 1e-9:
            raise BenchError(f"{path}: {info.duration:.2f} s is shorter than one sync segment "
                             f"({min_duration():.2f} s)")
        out.append(Request(path.name, path, prompt, negative_prompt))
    return out


@dataclass(frozen=True)
class Prepared:
    """A request ready for one bundle: its input (a path, or frames decoded at the bundle's
    rates and sizes) and the resolved options."""

    request: Request
    source: Path | Frames
    options: GenerateOptions


def prepare(pipe: Pipeline, request: Request, options: GenerateOptions, input: str
            ) -> Prepared:  # fmt: skip
    """``input`` "file": each query decodes the file; "frames": decoded here, untimed."""
    opts = pipe.resolve(replace(options, prompt=request.prompt,
                                negative_prompt=request.negative_prompt))
    if input == "file":
        return Prepared(request, request.path, opts)
    src = frame_source(request.path, pipe.bundle.manifest.video, start=opts.start,
                       duration=opts.duration)
    frames = src.window(0.0, src.duration)
    return Prepared(request, frames, replace(opts, start=0.0, duration=None))


def serve(pipe: Pipeline, prepared: Prepared, mux_dir: Path | None = None
          ) -> tuple[dict[str, float], int]:  # fmt: skip
    """One query: generate (and mux into ``mux_dir`` when given). Returns (seconds per stage
    with ``total``, denoiser evaluations)."""
    t0 = time.perf_counter()
    result = pipe.generate(prepared.source, prepared.options)
    timings = {k: v for k, v in result.timings.items() if k != "total"}
    if mux_dir is not None:
        t1 = time.perf_counter()
        out = mux_dir / f"query-{threading.get_ident()}.mp4"  # one file per worker thread
        mux(prepared.request.path, out, result.audio, result.sample_rate, start=result.start,
            overwrite=True)
        timings["mux"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    return timings, result.evaluations


__all__ = ["MIN_SCENE", "Prepared", "Request", "SCENE_SECONDS", "prepare", "serve", "video_files",
           "world_scenes"]
