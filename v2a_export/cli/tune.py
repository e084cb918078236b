"""``v2a-export tune-sampler``: few-step samplers tuned on a bundle's own network.

    v2a-export tune-sampler BUNDLE [--evaluations 4,6,8] [--calibration N] [--held-out M]
                            [--videos DIR [--prompts FILE]] [--out DIR] ...

The work is torch-free (:mod:`v2a_runtime.tuning` on the runtime's sessions, any backend); this
module only picks the conditions (:mod:`v2a_runtime.tuning.calibration`), draws progress and
writes the bundle. Conditions:

- ``--videos DIR``: the user's videos (sorted by name; the first N calibrate, the next M are
  the held-out gate), prompts from ``--prompts FILE`` (lines ``NAME<TAB>prompt[<TAB>negative]``;
  unlisted videos get empty prompts);
- otherwise, for a trained bundle: held-out scenes of the procedural world (seeds never used in
  training; calibration and gate from disjoint ranges, and disjoint from the benchmarks' scenes);
- for a random-weight bundle: seeded random encoder features through the conditioner (its
  encoders see nothing in any video).

The samplers go into the manifest (``samplers``, each with its sha256); the one that passes the
held-out gate with the fewest evaluations (<= 8) becomes the default. Without ``--out`` the
manifest of BUNDLE is rewritten atomically (its graphs are untouched); with ``--out DIR`` a new
bundle is written (graphs hard-linked where possible), renamed into place when complete.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import click

from .common import InputError


def _evaluations(_ctx, _param, value: str) -> tuple[int, ...]:
    try:
        out = tuple(sorted({int(v) for v in value.replace(",", " ").split()}))
    except ValueError:
        out = ()
    if not out or min(out) < 2:
        raise InputError(f"--evaluations: expected budgets >= 2 like 4,6,8, got {value!r}")
    return out


@click.command("tune-sampler")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--evaluations", default="4,6,8", show_default=True, callback=_evaluations,
              help="Evaluation budgets to tune for (comma- or space-separated).")
@click.option("--calibration", "n_cal", type=click.IntRange(min=1), default=16,
              show_default=True, help="Calibration conditions N.")
@click.option("--held-out", "n_held", type=click.IntRange(min=1), default=8, show_default=True,
              help="Held-out conditions for the gate (never used in the search).")
@click.option("--videos", type=click.Path(path_type=Path), default=None,
              help="Directory of your own videos (N + M of them, sorted by name).")
@click.option("--prompts", type=click.Path(path_type=Path), default=None,
              help="Lines NAME<TAB>prompt[<TAB>negative] for the videos in --videos.")
@click.option("--features", type=click.Choice(["auto", "world", "random"]), default="auto",
              show_default=True,
              help="Without --videos: world scenes or random encoder features (auto: world "
              "for trained weights, random for random weights).")
@click.option("--duration", type=float, default=None,
              help="Seconds per condition. [default: the bundle's trained window]")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed.")
@click.option("--cfg", type=float, default=None, help="Guidance weight. [default: the bundle's]")
@click.option("--reference-steps", type=click.IntRange(min=2), default=1024, show_default=True,
              help="Heun steps of the reference (checked against half as many).")
@click.option("--points", type=click.IntRange(min=8), default=128, show_default=True,
              help="Fine-grid intervals the grid search chooses from.")
@click.option("--no-fit", is_flag=True, help="Only search grids; fit no multistep weights.")
@click.option("--no-default", is_flag=True, help="Add the samplers; keep the bundle's default.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write a new bundle here instead of updating BUNDLE's manifest.")
@click.option("--backend", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads per graph. [default: all cores]")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def tune_sampler_cmd(bundle: Path, evaluations, n_cal, n_held, videos, prompts, features,
                     duration, seed, cfg, reference_steps, points, no_fit, no_default, out,
                     backend, threads, quiet) -> None:  # fmt: skip
    """Tune few-step samplers (time grids by dynamic programming over reference trajectories,
    least-squares multistep weights) on BUNDLE's network, gate them on held-out conditions,
    and store them in the bundle's manifest."""
    from v2a_runtime.bundle import load_bundle, write_manifest
    from v2a_runtime.pipeline import Pipeline
    from v2a_runtime.tuning import TuneOptions, tune, with_samplers

    with _one_line_errors():
        started = time.perf_counter()
        if out is not None and out.exists():
            raise click.UsageError(f"--out {out} exists; choose a new directory")
        if prompts is not None and videos is None:
            raise click.UsageError("--prompts goes with --videos DIR")
        pipe = Pipeline.load(bundle, backend, threads=threads)
        m = pipe.bundle.manifest
        duration = m.sequence.trained_duration if duration is None else duration
        options = TuneOptions(
            evaluations=evaluations,
            fit=not no_fit,
            points=points,
            reference_steps=reference_steps,
            cfg=m.sampler.cfg if cfg is None else cfg,
        )
        sets = _condition_sets(pipe, videos, prompts, features, n_cal, n_held, duration, seed,
                               quiet)  # fmt: skip
        with _Bars(enabled=not quiet) as bars:
            result = tune(pipe.sessions["denoiser"], *sets, options, callback=bars.update)
        manifest = with_samplers(m, result, set_default=not no_default)
        target = bundle if out is None else out
        if out is None:
            write_manifest(bundle, manifest)
        else:
            _write_bundle(bundle, out, manifest, write_manifest)
        load_bundle(target)  # the written bundle verifies (files and samplers' sha256)
    click.echo(_report(result, manifest, target, time.perf_counter() - started))


def _condition_sets(pipe, videos, prompts, features, n_cal, n_held, duration, seed, quiet):
    from v2a_runtime.tuning import CalibrationError, encode_items, random_features
    from v2a_runtime.tuning.calibration import (
        WORLD_CALIBRATION_START,
        WORLD_GATE_START,
        video_items,
        world_items,
        world_source,
    )

    m = pipe.bundle.manifest
    if videos is not None:
        items = video_items(videos, prompts)
        if len(items) < n_cal + n_held:
            raise CalibrationError(
                f"--videos {videos} has {len(items)} videos; --calibration {n_cal} and "
                f"--held-out {n_held} need {n_cal + n_held}"
            )
        parts = [(items[:n_cal], f"{n_cal} videos of {videos}"),
                 (items[n_cal:n_cal + n_held], f"{n_held} videos of {videos}")]  # fmt: skip
    elif features == "random" or (features == "auto" and m.model.weights == "random"):
        return (random_features(pipe, n_cal, duration=duration, seed=seed),
                random_features(pipe, n_held, duration=duration, seed=seed + 1))  # fmt: skip
    else:
        parts = [
            (world_items(m.video, n_cal, WORLD_CALIBRATION_START, duration),
             world_source(WORLD_CALIBRATION_START, n_cal)),
            (world_items(m.video, n_held, WORLD_GATE_START, duration),
             world_source(WORLD_GATE_START, n_held)),
        ]  # fmt: skip
    sets = []
    for k, (items, source) in enumerate(parts):
        with _Bars(enabled=not quiet) as bars:
            sets.append(encode_items(pipe, items, duration=duration, seed=seed + k,
                                     source=source, callback=bars.encode))  # fmt: skip
    return tuple(sets)


def _write_bundle(src: Path, out: Path, manifest, write_manifest) -> None:
    """A new bundle at ``out``: ``src``'s files hard-linked (copied across file systems) and
    the new manifest, built beside ``out`` and renamed into place when complete."""
    work = out.parent / f".{out.name}.tuning-{os.getpid()}"

    def link(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    try:
        shutil.copytree(src, work, copy_function=link)
        write_manifest(work, manifest)
        os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _report(result, manifest, target: Path, seconds: float) -> str:
    e25, h25 = result.euler25_error, result.held_out_euler25_error
    lines = [
        f"reference: {result.calibration_reference.describe()}; held-out change "
        f"{result.held_out_reference_change:.1e}",
        f"25-step euler: calibration {e25:.3e}, held-out {h25:.3e}",
        "| evaluations | candidate | calibration error (x euler-25) | kept |",
        "|---|---|---|---|",
    ]
    for c in sorted(result.candidates, key=lambda c: (c.evaluations, c.method)):
        kept = any(s.calibration.method == c.method and s.evaluations == c.evaluations
                   for s in result.samplers.values())  # fmt: skip
        lines.append(f"| {c.evaluations} | {c.method} | {c.error:.3e} ({c.error / e25:.2f}x) | "
                     f"{'yes' if kept else ''} |")  # fmt: skip
    lines += ["", "| sampler | solver | held-out error (x euler-25) | gate |", "|---|---|---|---|"]
    for name, s in result.samplers.items():
        c = s.calibration
        lines.append(f"| {name} | {s.solver} | {c.held_out_error:.3e} "
                     f"({c.held_out_error / h25:.2f}x) | "
                     f"{'pass' if s.passed_gate else 'FAIL'} |")  # fmt: skip
    default = manifest.sampler.name or (
        f"{manifest.sampler.solver}, {manifest.sampler.steps} steps, {manifest.sampler.grid}"
    )
    lines += [
        "",
        f"default sampler: {default}",
        f"cost: {result.evaluations} network evaluations, {result.seconds / 60:.1f} min tuning, "
        f"{seconds / 60:.1f} min in all",
        f"wrote {target / 'manifest.json'}",
    ]
    return "\n".join(lines)


@contextmanager
def _one_line_errors():
    """Bad input (ValueError: calibration, bundle, media; OSError) -> one ``Error:`` line, exit 2,
    the bundle untouched."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo("Error: interrupted; the bundle was not changed", err=True)
        sys.exit(130)
    except (ValueError, OSError) as e:
        raise InputError(" ".join(str(e).split()) or type(e).__name__) from e


class _Bars:
    """One click progress bar per stage (stderr)."""

    def __init__(self, *, enabled: bool):
        self.enabled, self.bar, self.stage, self.shown = enabled, None, None, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._close()

    def _close(self):
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None

    def _show(self, stage: str, done: int, total: int):
        if not self.enabled:
            return
        if stage != self.stage:
            self._close()
            self.stage, self.shown = stage, 0
            self.bar = click.progressbar(length=max(total, 1), label=f"{stage:<18}",
                                         file=sys.stderr, show_pos=True)  # fmt: skip
            self.bar.render_progress()
        self.bar.update(done - self.shown)
        self.shown = done

    def update(self, event) -> None:
        self._show(event.stage, event.done, event.total)

    def encode(self, done: int, total: int) -> None:
        self._show("conditions", done, total)
