"""MLPerf LoadGen (``mlcommons-loadgen``, the optional ``bench`` extra) around the pipeline.

:class:`PipelineSUT` is the system under test: LoadGen hands it query samples
(``issue_query``), worker threads serve each one with a generate request and report it done
(``QuerySamplesComplete``). LoadGen owns the clock: it schedules the queries for the scenario,
timestamps issue and completion, and writes its logs (``mlperf_log_summary.txt``,
``mlperf_log_detail.txt``, ``mlperf_log_trace.json``) into the test's directory;
:func:`read_detail` reads its results back, :func:`read_latencies` and
:func:`read_query_latencies` its per-sample and per-query latencies.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import BenchError

EXTRA = "pip install 'v2a-export[bench]'"
_LG_SCENARIOS = {"single-stream": "SingleStream", "multi-stream": "MultiStream",
                 "server": "Server", "offline": "Offline"}


def require():
    """The ``mlperf_loadgen`` module, or a one-line BenchError naming the extra."""
    try:
        import mlperf_loadgen
    except ImportError:
        raise BenchError(
            f"v2a bench needs MLPerf LoadGen, which is not installed: {EXTRA} "
            "(or pip install mlcommons-loadgen)"
        ) from None
    return mlperf_loadgen


@dataclass(frozen=True)
class TestSpec:
    """The LoadGen settings of one test (PerformanceOnly mode)."""

    scenario: str  # one of config.SCENARIOS
    samples: int  # distinct query samples in the library (one per request)
    min_queries: int
    min_seconds: float
    max_seconds: float | None
    expected_latency_s: float  # from the warm-up: Single/MultiStream's hint, Offline's rate
    instances: int
    samples_per_query: int = 1  # multi-stream's N
    target_qps: float | None = None  # server: offered rate; offline: expected throughput
    latency_bound_s: float | None = None  # server
    percentile: float | None = None  # the latency percentile the scenario is judged on

    def settings(self, lg):
        s = lg.TestSettings()
        s.scenario = getattr(lg.TestScenario, _LG_SCENARIOS[self.scenario])
        s.mode = lg.TestMode.PerformanceOnly
        s.min_query_count = self.min_queries
        s.min_duration_ms = round(self.min_seconds * 1000)
        if self.max_seconds is not None:
            s.max_duration_ms = round(self.max_seconds * 1000)
        s.performance_sample_count_override = self.samples
        ns = max(1, round(self.expected_latency_s * 1e9))
        if self.scenario == "single-stream":
            # LoadGen generates min_seconds / expected queries up front and fails the test when
            # they run out before min_seconds; steady-state calls can run 10x faster than the
            # best warm-up (the test bundle: 67 ms warm, 3-8 ms after), so the hint is 1/16 of
            # it (queries it does not need once both minimums are met are not issued)
            s.single_stream_expected_latency_ns = max(1, ns // 16)
            if self.percentile is not None:
                s.single_stream_target_latency_percentile = self.percentile
        elif self.scenario == "multi-stream":
            # the same reasoning for a query of N samples on `instances` workers: it cannot end
            # before ceil(N / instances) samples one after another (fewer if a worker were
            # faster than the warm-up, which the 1/16 covers)
            waves = -(-self.samples_per_query // self.instances)
            s.multi_stream_expected_latency_ns = max(1, waves * ns // 16)
            s.multi_stream_samples_per_query = self.samples_per_query
            if self.percentile is not None:
                s.multi_stream_target_latency_percentile = self.percentile
        elif self.scenario == "server":
            s.server_target_qps = self.target_qps
            s.server_target_latency_ns = round(self.latency_bound_s * 1e9)
            if self.percentile is not None:
                s.server_target_latency_percentile = self.percentile
        else:  # offline: enough samples in the one query to fill min_seconds; the warm-up
            # overestimates a warm call (see above), so the rate it implies is doubled
            s.offline_expected_qps = self.target_qps or 2 * self.instances / self.expected_latency_s
        return s


@dataclass(frozen=True)
class Served:
    """One query sample as our SUT served it (perf_counter seconds)."""

    index: int  # the library sample (request) it ran
    start: float
    end: float
    timings: dict[str, float]  # seconds per stage of this request
    evaluations: int


@dataclass
class PipelineSUT:
    """LoadGen's system under test: a queue and ``instances`` worker threads, each serving one
    query sample at a time with ``serve(index) -> (timings, evaluations)``."""

    serve: Callable[[int], tuple[dict[str, float], int]]
    instances: int = 1
    on_served: Callable[[int], None] | None = None  # called with the count served so far
    served: list[Served] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._complete_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, lg) -> None:
        self._lg = lg
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"v2a-sut-{i}")
                         for i in range(self.instances)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()

    def issue_query(self, samples) -> None:  # LoadGen's thread: hand over, return at once
        for s in samples:
            self._queue.put((s.id, s.index))

    def flush_queries(self) -> None:
        pass

    def _work(self) -> None:
        lg = self._lg
        while (item := self._queue.get()) is not None:
            sample_id, index = item
            t0 = time.perf_counter()
            try:
                if not self.errors:  # after a failure, complete the rest at once
                    timings, evaluations = self.serve(index)
                    record = Served(index, t0, time.perf_counter(), timings, evaluations)
                    with self._lock:
                        self.served.append(record)
                        count = len(self.served)
                    if self.on_served is not None:
                        self.on_served(count)
            except BaseException as e:  # noqa: BLE001 -- LoadGen must see every sample completed
                with self._lock:
                    self.errors.append(e)
            finally:
                # one completion at a time: LoadGen reads its clock, then counts the sample
                # off its query, and the last one counted stamps the query's end (MultiStream's
                # query latency; loadgen.cc QuerySamplesComplete, called without the GIL); two
                # workers racing between those steps could stamp a query with the earlier
                # clock, below its latest sample's completion in the trace
                with self._complete_lock:
                    lg.QuerySamplesComplete([lg.QuerySampleResponse(sample_id, 0, 0)])


@dataclass(frozen=True)
class TestRun:
    """What one LoadGen test gave: its detail log's results, the per-sample and per-query
    latencies from its trace (ns, from each query's scheduled time to the completion of the
    sample / of the query's last sample) and our own record of each query sample served."""

    detail: dict
    latencies_ns: tuple[int, ...]
    query_latencies_ns: tuple[int, ...]
    served: tuple[Served, ...]
    log_dir: Path


def run_test(spec: TestSpec, sut: PipelineSUT, log_dir: Path) -> TestRun:
    """One LoadGen test of ``sut``; logs go to ``log_dir`` (created)."""
    lg = require()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = lg.LogSettings()
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = True  # per-sample issue and completion times
    handle_sut = lg.ConstructSUT(sut.issue_query, sut.flush_queries)
    handle_qsl = lg.ConstructQSL(spec.samples, spec.samples, _noop, _noop)
    sut.start(lg)
    try:
        # an audit file that cannot exist: LoadGen would otherwise read ./audit.config
        lg.StartTestWithLogSettings(handle_sut, handle_qsl, spec.settings(lg), log,
                                    str(log_dir / "no-audit.config"))
    finally:
        sut.stop()
        lg.DestroyQSL(handle_qsl)
        lg.DestroySUT(handle_sut)
    if sut.errors:
        raise sut.errors[0]
    detail = read_detail(log_dir / "mlperf_log_detail.txt")
    if detail.get("num_errors", 0):
        first = next(iter(read_errors(log_dir / "mlperf_log_detail.txt")), "no message logged")
        raise BenchError(f"LoadGen reported {detail['num_errors']} error(s), the first: {first}")
    samples = read_trace_samples(log_dir / "mlperf_log_trace.json")
    return TestRun(detail, tuple(ns for _query, ns in samples), query_latencies(samples),
                   tuple(sut.served), log_dir)


def _noop(_indices) -> None:
    """Loading samples to RAM: every request is prepared before the test."""


def read_errors(path: Path) -> list[str]:
    """The messages of the entries LoadGen marks ``is_error`` in its detail log, in order (the
    log goes away with a failed report's scratch folder, so the error line must carry them)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(":::MLLOG ") and '"is_error": true' in line:
            try:
                entry = json.loads(line[len(":::MLLOG "):])
            except json.JSONDecodeError:
                continue
            if entry.get("metadata", {}).get("is_error"):
                out.append(" ".join(str(entry.get("value")).split()))
    return out


def read_detail(path: Path) -> dict:
    """LoadGen's detail log (``:::MLLOG {json}`` lines) as {key: value}; the last value wins."""
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(":::MLLOG "):
            try:
                entry = json.loads(line[len(":::MLLOG "):])
            except json.JSONDecodeError:
                continue
            out[entry["key"]] = entry["value"]
    return out


_SAMPLE = re.compile(r'"name":"Sample".*"ph":"b".*"query_seq":(\d+),.*'
                     r'"issue_start_ns":(\d+),"complete_ns":(\d+)')


def read_trace_samples(path: Path) -> list[tuple[int, int]]:
    """(query, completion ns) of every sample in LoadGen's trace, in the file's order: the begin
    event of each "Sample" carries its query's sequence number (``query_seq``) and its
    completion time counted from the query's scheduled time (``complete_ns``; the delay before
    LoadGen issued it is ``issue_start_ns``), the latency LoadGen's own statistics are computed
    from. (Read line by line: LoadGen does not escape every string in that file, so it is not
    always valid JSON.)"""
    out = []
    with path.open(errors="replace") as f:
        for line in f:
            if (m := _SAMPLE.search(line)) is not None:
                out.append((int(m[1]), int(m[3])))
    return out


def read_latencies(path: Path) -> tuple[int, ...]:
    """Per-sample latencies (ns) from LoadGen's trace (:func:`read_trace_samples`)."""
    return tuple(ns for _query, ns in read_trace_samples(path))


def read_query_latencies(path: Path) -> tuple[int, ...]:
    """Per-query latencies (ns) from LoadGen's trace, in query order (:func:`query_latencies`)."""
    return query_latencies(read_trace_samples(path))


def query_latencies(samples: list[tuple[int, int]]) -> tuple[int, ...]:
    """A query ends when its last sample completes, so its latency is the largest of its
    samples' (LoadGen: the query's scheduled time to its "all samples done" time, MultiStream's
    statistic); ``samples`` = (query, latency) pairs, the result in query order."""
    out: dict[int, int] = {}
    for query, ns in samples:
        out[query] = max(ns, out.get(query, ns))
    return tuple(out[q] for q in sorted(out))


__all__ = ["EXTRA", "PipelineSUT", "Served", "TestRun", "TestSpec", "query_latencies",
           "read_detail", "read_latencies", "read_query_latencies", "read_trace_samples",
           "require", "run_test"]
