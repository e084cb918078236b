"""``v2a bench``: measure a configuration under MLPerf LoadGen's load scenarios.

    v2a bench [BUNDLE ...] [--scenario single-stream|multi-stream|server|offline] [--backend B]
              [--steps N] [--solver S] [--tracks K] [--duration S] [--video FILE | --synthetic]
              [--input file|frames] [--target-qps Q ...] [--latency-bound MS]
              [--samples-per-query N]
              [--min-queries N] [--min-seconds T] [--json OUT] [--report DIR]
    v2a bench [BUNDLE ...] --graphs [--runs N]

Needs the ``bench`` extra (``mlcommons-loadgen``); without it, one ``error:`` line says so.
The table goes to stdout, progress to stderr; ``--json`` and ``--report`` are written
atomically (the report folder appears complete or not at all).
"""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import click

from .. import sampling
from ..backends import BACKENDS
from ..bench import BenchConfig, BenchError, loadgen, report
from ..bench.config import INPUTS, SCENARIOS
from ..bench.runner import BenchProgress, run_bench
from ..bench.workload import MIN_SCENE, SCENE_SECONDS, video_files, world_scenes
from ..media.files import atomic_output
from .common import one_line_errors


@click.command()
@click.argument("bundles", nargs=-1, type=click.Path(path_type=Path))
@click.option("--scenario", type=click.Choice(SCENARIOS), default="single-stream",
              show_default=True, help="LoadGen scenario.")
@click.option("--backend", type=click.Choice(BACKENDS), default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads per graph. [default: all cores]")
@click.option("--instances", type=int, default=1, show_default=True,
              help="Queries served concurrently (worker threads sharing one pipeline).")
@click.option("--video", "videos", multiple=True, type=click.Path(path_type=Path),
              help="A video to send (repeatable). [default: a rendered held-out world scene]")
@click.option("--synthetic", is_flag=True, help="Send rendered world scenes (the default).")
@click.option("--scenes", type=int, default=1, show_default=True,
              help="How many world scenes to render for --synthetic.")
@click.option("-p", "--prompt", default="", help="Prompt for --video requests.")
@click.option("--input", "input_", type=click.Choice(INPUTS), default="file", show_default=True,
              help="file: each query decodes the video; frames: decoded once, before the test.")
@click.option("--mux", is_flag=True, help="Each query also muxes its audio into a video file.")
@click.option("--no-watermark", is_flag=True, help="Skip the watermark stage.")
@click.option("--duration", type=float, default=None,
              help="Seconds of video per query. [default: the whole clip; scenes are 8 s]")
@click.option("--tracks", type=int, default=1, show_default=True, help="Soundtracks per query.")
@click.option("--steps", type=int, default=None, help="Solver steps. [default: the bundle's]")
@click.option("--solver", type=click.Choice(list(sampling.SOLVERS)), default=None,
              help="ODE solver. [default: the bundle's]")
@click.option("--grid", type=click.Choice(list(sampling.GRIDS)), default=None,
              help="Time grid. [default: the bundle's]")
@click.option("--cfg", type=float, default=None, help="Guidance weight. [default: the bundle's]")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--min-queries", type=int, default=16, show_default=True,
              help="LoadGen's minimum query count.")
@click.option("--min-seconds", type=float, default=10.0, show_default=True,
              help="LoadGen's minimum test duration.")
@click.option("--max-seconds", type=float, default=None, help="Stop issuing after this long.")
@click.option("--target-qps", type=float, multiple=True,
              help="Server: offered rate (repeat for a sweep); offline: expected throughput.")
@click.option("--latency-bound", type=float, default=None,
              help="Server: tail-latency bound in ms.")
@click.option("--samples-per-query", type=int, default=None,
              help="Multi-stream: requests per query (camera feeds at once). [default: 8]")
@click.option("--percentile", type=float, default=None,
              help="The latency percentile judged, e.g. 0.99. [default: LoadGen's]")
@click.option("--warmup", type=int, default=1, show_default=True,
              help="Untimed queries per bundle before its first test.")
@click.option("--rounds", type=int, default=1, show_default=True,
              help="Run the bundles in interleaved order this many times.")
@click.option("--server", default=None,
              help="Also benchmark the v2a Triton server at this URL (http://HOST:8000 or "
              "grpc://HOST:8001), after the bundles; alone when no BUNDLE is given.")
@click.option("--graphs", is_flag=True, help="Time each component alone instead (no LoadGen).")
@click.option("--runs", type=int, default=20, show_default=True, help="--graphs: timed runs.")
@click.option("--key-file", type=click.Path(path_type=Path), default=None,
              help="Watermark key file. [default: as v2a generate]")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Write the JSON record here.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="Write bench.json, bench.md, plots and LoadGen's logs into this folder.")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing --json / --report.")
@click.option("-q", "--quiet", is_flag=True, help="No progress.")
def bench(bundles: tuple[Path, ...], videos: tuple[Path, ...], synthetic: bool, scenes: int,
          prompt: str, input_: str, no_watermark: bool, target_qps: tuple[float, ...],
          latency_bound: float | None, server: str | None, graphs: bool, runs: int,
          key_file: Path | None, json_out: Path | None, report_dir: Path | None, force: bool,
          quiet: bool,
          **settings) -> None:
    """Benchmark BUNDLEs (default: the shipped one) under a LoadGen scenario: one query is one
    generate request; prints LoadGen's results, the per-stage breakdown and ratios."""
    with one_line_errors():
        config = BenchConfig(
            input=input_, watermark=not no_watermark, target_qps=tuple(target_qps),
            latency_bound_ms=latency_bound, **settings,
        ).check()  # fmt: skip
        if videos and synthetic:
            raise BenchError("give --video FILE or --synthetic, not both")
        if scenes < 1:
            raise BenchError(f"scenes must be >= 1, got {scenes}")
        if not graphs:
            loadgen.require()
        elif server is not None:
            raise BenchError("--graphs times a bundle's graphs locally; it takes no --server")
        _check_target(json_out, force, "--json")
        _check_target(report_dir, force, "--report")
        with tempfile.TemporaryDirectory(prefix="v2a-bench-") as tmp:
            work = Path(tmp)
            if videos:
                requests = video_files(list(videos), prompt)
            else:
                say(quiet, f"rendering {scenes} world scene(s)")
                seconds = max(config.duration or SCENE_SECONDS, MIN_SCENE)
                requests = world_scenes(work, scenes, seconds)
            if graphs:
                _graphs(config, list(bundles) or [None], requests, runs, key_file, quiet)
                return
            staging = (report_dir.with_name(f".{report_dir.name}.{secrets.token_hex(4)}.part")
                       if report_dir is not None else work / "report")
            try:
                (staging / "loadgen").mkdir(parents=True)
                targets = list(bundles) or ([] if server else [None])
                result = run_bench(config, targets, requests,
                                   staging / "loadgen", key_file=key_file, server=server,
                                   progress=None if quiet else Progress(config.scenario))
                record = report.finish(result, staging, ["v2a", "bench", *sys.argv[2:]])
                if json_out is not None:
                    with atomic_output(json_out) as tmp_json:
                        shutil.copyfile(staging / "bench.json", tmp_json)
                if report_dir is not None:
                    report.replace_dir(staging, report_dir)
            finally:
                if staging.exists() and report_dir is not None:
                    shutil.rmtree(staging, ignore_errors=True)
    per = "sample (one request)" if config.scenario == "multi-stream" else "query"
    lines = report.table(result) + [""] + [f"seconds per {per} by stage:"]
    lines += report.stage_table(result)
    lines += report.verdicts(result)
    if report_dir is not None:
        lines.append(f"wrote {report_dir}/ (bench.json, bench.md, {', '.join(record['plots'])}"
                     f"{', ' if record['plots'] else ''}loadgen/)")
    elif json_out is not None:
        lines.append(f"wrote {json_out}")
    click.echo("\n".join(lines))


def _check_target(path: Path | None, force: bool, option: str) -> None:
    if path is None:
        return
    if not path.parent.is_dir():
        raise BenchError(f"{option} {path}: directory {str(path.parent)!r} does not exist")
    if path.exists() and not force:
        raise BenchError(f"{option} {path}: already exists (use --force to overwrite)")


def say(quiet: bool, message: str) -> None:
    if not quiet:
        click.echo(message, err=True)


class Progress:
    """Progress on stderr: one line per stage, a counter of served queries per test."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        # what is counted: samples served, one per query in these two
        self.unit = "queries" if scenario in ("single-stream", "server") else "samples"
        self.open = False

    def __call__(self, e: BenchProgress) -> None:
        if e.stage == "query":
            click.echo(f"\r  {e.queries} {self.unit}, {e.seconds:.1f} s", err=True, nl=False)
            self.open = True
            return
        if self.open:
            click.echo("", err=True)
            self.open = False
        if e.stage == "done":
            click.echo(f"  {e.queries} {self.unit} in {e.seconds:.1f} s", err=True)
        elif e.stage == "load":
            click.echo(f"loading {e.bundle}", err=True)
        elif e.stage == "warmup":
            click.echo(f"warming up {e.bundle}", err=True)
        else:
            rate = "" if e.target_qps is None else f" at {e.target_qps:g} QPS"
            click.echo(f"{e.bundle}: {self.scenario}{rate}, round {e.round + 1}", err=True)


def _graphs(config: BenchConfig, bundles, requests, runs: int, key_file, quiet: bool) -> None:
    from ..bench.graphs import time_graphs
    from ..bench.workload import prepare
    from ..pipeline import GenerateOptions, Pipeline

    lines = ["| bundle | component | input shapes | calls/query | p50 ms | p95 ms | p99 ms |",
             "|---|---|---|---|---|---|---|"]
    for b in bundles:
        say(quiet, f"loading {b or 'the shipped bundle'}")
        pipe = Pipeline.load(b, config.backend, threads=config.threads, key_file=key_file)
        opts = GenerateOptions(duration=config.duration, seed=config.seed, tracks=config.tracks,
                               steps=config.steps, solver=config.solver, grid=config.grid,
                               cfg=config.cfg, watermark=config.watermark)
        prepared = prepare(pipe, requests[0], opts, "frames")
        name = pipe.bundle.root.name
        for g in time_graphs(pipe, prepared, runs=runs):
            shapes = " ".join(f"{k}{list(v)}" for k, v in g.shapes.items())
            s = g.seconds
            lines.append(f"| {name} | {g.component} | {shapes} | {g.calls_per_query} | "
                         f"{s['p50'] * 1e3:.2f} | {s['p95'] * 1e3:.2f} | {s['p99'] * 1e3:.2f} |")
    click.echo("\n".join(lines))
