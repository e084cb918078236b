"""``v2a demo``: the main job end to end on a scene whose truth is known.

    v2a demo [--seed N] [--out DIR] [--bundle DIR]

Renders held-out scene N of the procedural world (world seed ``1 000 000 + N``, never used in
training) as a silent 8 s video, generates its soundtrack with the bundle (default: the shipped
model) from the scene's caption, muxes it into the video, verifies the watermark, and prints
the clip's metrics: synchronization of the generated onsets with the true contact times (ms),
material of each generated impact, level of the named ambience. ``--out DIR`` keeps
``scene.mp4`` (silent), ``truth.json`` (event times in s, materials, ambience, caption),
``generated.flac`` and ``scene.v2a.mp4``.

The world and its metrics are :mod:`v2a_runtime.world` (numpy, scipy and PyAV, like the rest
of the runtime), so the demo needs nothing beyond the runtime.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click

from .. import world
from ..media import mux, write_audio
from ..pipeline import Pipeline
from ..watermark import detect, read_audio
from ..world import metrics
from .common import ProgressBar, notes, one_line_errors

DURATION = 8.0


@click.command()
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Held-out scene number N (world seed 1000000 + N).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the video, truth, audio and muxed video here. [default: discard]")
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="Bundle directory. [default: the bundle shipped with v2a_runtime]")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads per graph. [default: all cores]")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no notes.")
def demo(seed: int, out: Path | None, bundle: Path | None, threads: int | None,
         quiet: bool) -> None:
    """Render a held-out scene, generate and mux its soundtrack, and score it against the
    scene's truth."""
    with one_line_errors():
        with tempfile.TemporaryDirectory(prefix="v2a-demo-") as tmp:
            work = out if out is not None else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            lines = _run(seed, work, bundle, threads, quiet)
            if out is not None:
                lines.append(f"files     {work}/: scene.mp4 (silent), truth.json, "
                             "generated.flac, scene.v2a.mp4")
    click.echo("\n".join(lines))


def _run(n: int, work: Path, bundle: Path | None, threads: int | None,
         quiet: bool) -> list[str]:
    scene = world.make_scene(world.HELD_OUT_SEED_BASE + n, DURATION)
    truth = scene.ground_truth()
    video = world.write_video(scene, work / "scene.mp4")
    (work / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    pipe = Pipeline.load(bundle, threads=threads)
    if not quiet:
        notes(pipe)
    t0 = time.perf_counter()
    with ProgressBar(enabled=not quiet) as bar:
        result = pipe.generate(video, prompt=scene.caption, callback=bar.update)
    seconds = time.perf_counter() - t0
    audio = result.audio[0]
    write_audio(work / "generated.flac", audio, result.sample_rate, overwrite=True)
    muxed = work / "scene.v2a.mp4"
    mux(video, muxed, [audio], result.sample_rate, overwrite=True,
        title=f"v2a demo ({pipe.bundle.manifest.model.variant})")
    m = metrics.evaluate_clip(audio, truth, result.sample_rate)
    o, model = result.options, pipe.bundle.manifest.model
    lines = [
        f"scene     held-out #{n} (world seed {scene.seed}): {DURATION:g} s, "
        f"{len(scene.events)} events, ambience {scene.ambience}",
        f"prompt    {scene.caption!r}",
        f"model     {model.variant} ({model.weights} weights), {o.solver} {o.steps} steps, "
        f"cfg {o.cfg:g}, seed {o.seed}: {seconds:.1f} s",
        _watermark_line(pipe, muxed, result),
        *_metric_lines(m, scene),
    ]
    return lines


def _watermark_line(pipe: Pipeline, muxed: Path, result) -> str:
    """Detect the mark in the muxed video's (AAC) track, as ``v2a watermark verify`` would."""
    if not result.watermarks:
        return "watermark none embedded"
    mark = result.watermarks[0]
    audio, sr = read_audio(muxed)
    d = detect(audio, sr, pipe.key)
    if not d.present:
        return (f"watermark NOT found in {muxed.name} (z {d.z:.1f}); embedded: model "
                f"{mark.model_id}, generation {mark.generation_id:06x}")
    same = d.payload == mark.payload
    return (f"watermark verified in {muxed.name}: z {d.z:.1f}, p <= {d.p_value_bound:.0e}, "
            f"model {d.model_id}, payload {'as embedded' if same else 'DIFFERENT'}"
            + (" (public demo key)" if pipe.key.is_demo else ""))


def _metric_lines(m, scene) -> list[str]:
    hits = f"{m.n_hits}/{m.n_onsets} onsets within ±{metrics.TOLERANCE * 1000:.0f} ms"
    if m.n_hits:
        hits += (f", median |offset| {m.median_abs_offset_ms:.1f} ms, "
                 f"p95 {m.p95_abs_offset_ms:.1f} ms")
    out = [f"sync      {hits}, {m.n_false} false onsets ({m.false_per_second:.2f}/s)"]
    if m.material_total:
        out.append(f"material  {m.material_correct}/{m.material_total} scored impacts "
                   "sound like their material")
    else:
        out.append("material  no isolated impact was hit (nothing to score)")
    levels = ", ".join(f"{a} {v:.1f} dB" for a, v in m.ambience_db.items())
    out.append(f"ambience  {scene.ambience}; band levels: {levels}")
    return out
