"""Run a benchmark: every bundle under one LoadGen scenario, in interleaved rounds.

Per bundle, before any test: load (sha256 checks included), prepare the requests, then
``config.warmup`` untimed queries whose best latency is the single-query latency the scenario
settings start from (and against which a Server latency bound is checked). Then, for each round,
each bundle in turn (A B A B ..., so a drift of the machine's load hits all of them alike), and
for Server each offered rate, one LoadGen test (:func:`.loadgen.run_test`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..pipeline import DEFAULT_BUNDLE, GenerateOptions, Pipeline
from . import loadgen
from .config import BenchConfig, BenchError
from .stats import peak_concurrency, peak_rss_mb, summary
from .workload import Request, prepare, serve


@dataclass(frozen=True)
class BenchProgress:
    """What the benchmark is doing, for the CLI's progress line."""

    stage: str  # "load", "warmup", "test", "query" (one more served), "done" (test over)
    bundle: str
    round: int = 0
    target_qps: float | None = None
    queries: int = 0  # query samples served so far in this test (stage "query")
    seconds: float = 0.0  # since the stage began


@dataclass(frozen=True)
class BundleRun:
    """One bundle as benchmarked: what it is, its load and warm-up times."""

    label: str
    path: str
    variant: str
    weights: str
    precisions: dict[str, str]  # component -> precision
    options: dict  # the resolved request options (sampler filled in from the bundle)
    load_s: float
    warmup_s: tuple[float, ...]


@dataclass(frozen=True)
class TestResult:
    """One LoadGen test of one bundle."""

    bundle: str  # BundleRun.label
    scenario: str
    round: int
    target_qps: float | None
    loadgen: dict  # LoadGen's results (detail log keys without the "result_" prefix)
    latencies_ns: tuple[int, ...]  # LoadGen's per-sample latencies (scheduled -> complete)
    query_latencies_ns: tuple[int, ...]  # per query (scheduled -> its last sample complete)
    service_s: tuple[float, ...]  # our own: each query's generate (+ mux) call, in seconds
    peak_in_flight: int  # the most query samples our workers served at once (<= instances)
    stages: dict[str, float]  # mean seconds per stage per query
    evaluations: float  # mean denoiser evaluations per query
    peak_rss_mb: float  # the process's peak resident memory after this test
    log_dir: str  # LoadGen's logs, relative to the log root


@dataclass(frozen=True)
class BenchReport:
    config: BenchConfig
    requests: tuple[Request, ...]
    bundles: tuple[BundleRun, ...]
    tests: tuple[TestResult, ...]
    loadgen_version: str
    seconds: float


@dataclass
class _Loaded:
    """A target ready to serve query samples: ``serve(index, mux_dir) -> (timings, evals)``."""

    run: BundleRun
    serve: Callable[[int, Path | None], tuple[dict[str, float], int]]
    samples: int
    single_s: float = field(default=0.0)


def run_bench(config: BenchConfig, bundles: list[Path | None], requests: list[Request],
              log_root: Path, *, key_file: Path | None = None, server: str | None = None,
              progress: Callable[[BenchProgress], None] | None = None) -> BenchReport:
    """Benchmark ``bundles`` (None = the shipped one) and the v2a Triton server at ``server``
    (after the bundles) on ``requests`` under ``config``; LoadGen's logs go under
    ``log_root``."""
    config.check()
    lg = loadgen.require()  # before loading anything
    if not bundles and server is None:
        raise BenchError("no bundle or server to benchmark")
    if server is not None and (config.input != "file" or config.mux or not config.watermark):
        raise BenchError("--server sends video files and gets watermarked audio back: "
                         "--input frames, --mux and --no-watermark do not apply")
    if not requests:
        raise BenchError("no request to send")
    emit = progress or (lambda _e: None)
    started = time.perf_counter()
    remotes = []
    try:
        loaded = [_load(config, b, requests, key_file, emit, i, bundles)
                  for i, b in enumerate(bundles)]
        if server is not None:
            loaded.append(_connect(config, server, requests, emit, remotes))
        tests = _run(config, loaded, log_root, emit)
    finally:
        for remote in remotes:
            remote.close()
    version = lg.__version__ if hasattr(lg, "__version__") else tests[0].loadgen.get(
        "loadgen_version", "")
    return BenchReport(config, tuple(requests), tuple(b.run for b in loaded), tuple(tests),
                       str(version), time.perf_counter() - started)


def _run(config: BenchConfig, loaded: list[_Loaded], log_root: Path, emit) -> list[TestResult]:
    if config.latency_bound_ms is not None:
        for b in loaded:
            if config.latency_bound_ms / 1000 < b.single_s:
                raise BenchError(
                    f"latency bound {config.latency_bound_ms:g} ms is below {b.run.label}'s "
                    f"single-query latency ({b.single_s * 1000:.0f} ms in the warm-up): no "
                    "rate can hold it"
                )
    rates = config.target_qps if config.scenario == "server" else (
        config.target_qps[:1] or (None,))
    tests = []
    with tempfile.TemporaryDirectory(prefix="v2a-bench-mux-") as mux_tmp:
        mux_dir = Path(mux_tmp) if config.mux else None
        for r in range(config.rounds):
            for b in loaded:
                for qps in rates:
                    tests.append(_test(config, b, r, qps, log_root, len(tests), mux_dir, emit))
    return tests


def _load(config: BenchConfig, bundle: Path | None, requests: list[Request], key_file, emit,
          i: int, all_bundles: list) -> _Loaded:
    path = Path(DEFAULT_BUNDLE if bundle is None else bundle)
    label = _label(path, i, all_bundles)
    emit(BenchProgress("load", label))
    t0 = time.perf_counter()
    pipe = Pipeline.load(bundle, config.backend, threads=config.threads, key_file=key_file)
    load_s = time.perf_counter() - t0
    prepared = [prepare(pipe, r, _options(config), config.input) for r in requests]

    def serve_one(index: int, mux_dir: Path | None = None) -> tuple[dict[str, float], int]:
        return serve(pipe, prepared[index], mux_dir)

    warm = _warmup(config, label, serve_one, len(prepared), emit)
    m, opts = pipe.bundle.manifest, prepared[0].options
    run = BundleRun(
        label=label, path=str(path), variant=m.model.variant, weights=m.model.weights,
        precisions={n: c.precision for n, c in m.components.items()},
        options={"solver": opts.solver, "steps": opts.steps, "grid": opts.grid, "cfg": opts.cfg,
                 "tracks": opts.tracks, "duration": config.duration, "input": config.input,
                 "mux": config.mux, "watermark": opts.watermark},
        load_s=load_s, warmup_s=tuple(warm),
    )  # fmt: skip
    return _Loaded(run, serve_one, len(prepared), min(warm))


def _options(config: BenchConfig) -> GenerateOptions:
    return GenerateOptions(duration=config.duration, seed=config.seed, tracks=config.tracks,
                           steps=config.steps, solver=config.solver, grid=config.grid,
                           cfg=config.cfg, watermark=config.watermark)


def _warmup(config: BenchConfig, label: str, serve_one, samples: int, emit) -> list[float]:
    emit(BenchProgress("warmup", label))
    warm = []
    for q in range(config.warmup):
        t0 = time.perf_counter()
        serve_one(q % samples)
        warm.append(time.perf_counter() - t0)
    return warm


def _connect(config: BenchConfig, url: str, requests: list[Request], emit, remotes: list
             ) -> _Loaded:  # fmt: skip
    """The v2a Triton server at ``url`` as a target (:mod:`.remote`)."""
    from .remote import Remote

    label = f"server {url.split('://')[-1]}"
    emit(BenchProgress("load", label))
    t0 = time.perf_counter()
    remote = Remote.connect(url, requests, _options(config))
    remotes.append(remote)
    load_s = time.perf_counter() - t0
    warm = _warmup(config, label, remote.serve, len(requests), emit)
    o = remote.options[0]
    run = BundleRun(
        label=label, path=url, variant=remote.variant(), weights="(served)", precisions={},
        options={"solver": o.solver, "steps": o.steps, "grid": o.grid, "cfg": o.cfg,
                 "tracks": o.tracks, "duration": config.duration, "input": "file (sent)",
                 "mux": False, "watermark": True},
        load_s=load_s, warmup_s=tuple(warm),
    )  # fmt: skip
    return _Loaded(run, remote.serve, len(requests), min(warm))


def _label(path: Path, i: int, bundles: list) -> str:
    names = [Path(DEFAULT_BUNDLE if b is None else b).name for b in bundles]
    return path.name if names.count(path.name) == 1 else f"{path.name}#{i + 1}"


def _test(config: BenchConfig, b: _Loaded, r: int, qps: float | None, log_root: Path, n: int,
          mux_dir: Path | None, emit) -> TestResult:
    label = b.run.label
    emit(BenchProgress("test", label, r, qps))
    t0 = time.perf_counter()

    def on_served(count: int) -> None:
        emit(BenchProgress("query", label, r, qps, count, time.perf_counter() - t0))

    sut = loadgen.PipelineSUT(lambda index: b.serve(index, mux_dir), config.instances, on_served)
    spec = loadgen.TestSpec(
        scenario=config.scenario, samples=b.samples, min_queries=config.min_queries,
        min_seconds=config.min_seconds, max_seconds=config.max_seconds,
        expected_latency_s=b.single_s, instances=config.instances,
        samples_per_query=config.multi_stream_samples if config.scenario == "multi-stream"
        else 1, target_qps=qps,
        latency_bound_s=None if config.latency_bound_ms is None
        else config.latency_bound_ms / 1000,
        percentile=config.percentile,
    )  # fmt: skip
    rate = "" if qps is None else f"-{qps:g}qps"
    log_dir = f"{n + 1:02d}-{_safe(label)}-{config.scenario}{rate}-r{r + 1}"
    result = loadgen.run_test(spec, sut, log_root / log_dir)
    emit(BenchProgress("done", label, r, qps, len(result.served), time.perf_counter() - t0))
    served = result.served
    stage_names = list(served[0].timings) if served else []
    stages = {s: sum(q.timings.get(s, 0.0) for q in served) / len(served) for s in stage_names}
    return TestResult(
        bundle=label, scenario=config.scenario, round=r, target_qps=qps,
        loadgen=_results(result.detail), latencies_ns=result.latencies_ns,
        query_latencies_ns=result.query_latencies_ns,
        service_s=tuple(q.end - q.start for q in served),
        peak_in_flight=peak_concurrency([(q.start, q.end) for q in served]), stages=stages,
        evaluations=sum(q.evaluations for q in served) / max(1, len(served)),
        peak_rss_mb=peak_rss_mb(), log_dir=log_dir,
    )  # fmt: skip


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _results(detail: dict) -> dict:
    """LoadGen's results and effective settings from its detail log."""
    out = {k.removeprefix("result_"): v for k, v in detail.items() if k.startswith("result_")}
    for key in ("early_stopping_met", "early_stopping_result", "generated_query_count",
                "generated_samples_per_query", "loadgen_version", "effective_target_qps",
                "effective_target_latency_ns", "effective_target_latency_percentile",
                "effective_min_duration_ms", "effective_min_query_count",
                "effective_max_duration_ms", "effective_scenario", "effective_samples_per_query",
                "early_stopping_latency_ss", "early_stopping_latency_ms"):
        if key in detail:
            out[key] = detail[key]
    return out


def latency_summary(test: TestResult, per_query: bool = False) -> dict:
    """LoadGen's per-sample (per-query) latencies of ``test`` in ms, recomputed from its trace
    (same rule)."""
    ns = test.query_latencies_ns if per_query else test.latencies_ns
    return {k: (v / 1e6 if k != "count" else v) for k, v in summary([float(x) for x in ns]).items()}


__all__ = ["BenchProgress", "BenchReport", "BundleRun", "TestResult", "latency_summary",
           "run_bench"]
