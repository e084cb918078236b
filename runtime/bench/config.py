"""What one ``v2a bench`` run measures: :class:`BenchConfig`, checked once, up front."""

from __future__ import annotations

import math
from dataclasses import dataclass

SCENARIOS = ("single-stream", "multi-stream", "server", "offline")
INPUTS = ("file", "frames")  # each query decodes the file / starts from decoded frames
MULTI_STREAM_SAMPLES = 8  # LoadGen's (and MLPerf's) default multi_stream_samples_per_query


class BenchError(ValueError):
    """A benchmark that cannot run as asked (one ``error:`` line in the CLI)."""


@dataclass(frozen=True)
class BenchConfig:
    scenario: str = "single-stream"
    backend: str = "cpu"
    threads: int | None = None  # per graph; None = onnxruntime's default
    instances: int = 1  # worker threads serving queries (one shared pipeline per bundle)
    # the request
    duration: float | None = None  # seconds of video per query; None = the whole clip
    tracks: int = 1
    steps: int | None = None  # sampler fields: None = each bundle's defaults
    solver: str | None = None
    grid: str | None = None
    cfg: float | None = None
    input: str = "file"  # one of INPUTS
    mux: bool = False  # also mux every result into a video file (file input only)
    watermark: bool = True
    # LoadGen
    min_queries: int = 16
    min_seconds: float = 10.0
    max_seconds: float | None = None  # LoadGen stops issuing after this; None = no cap
    target_qps: tuple[float, ...] = ()  # server: one test per rate (a sweep); offline: a hint
    latency_bound_ms: float | None = None  # server: the tail-latency bound
    percentile: float | None = None  # the judged percentile; None = LoadGen's (0.9 / 0.99)
    samples_per_query: int | None = None  # multi-stream: requests per query; None = 8
    warmup: int = 1  # untimed queries per bundle before the first test
    rounds: int = 1  # bundles run in interleaved order, this many times
    seed: int = 42

    def check(self) -> BenchConfig:
        """Refuse nonsense before anything loads; returns self."""
        if self.scenario not in SCENARIOS:
            raise BenchError(f"unknown scenario {self.scenario!r}; choose from "
                             f"{', '.join(SCENARIOS)}")
        if self.input not in INPUTS:
            raise BenchError(f"unknown input {self.input!r}; choose from {', '.join(INPUTS)}")
        if self.mux and self.input != "file":
            raise BenchError("--mux needs --input file (frames have no container to mux into)")
        for name in ("instances", "tracks", "min_queries", "rounds"):
            if (value := getattr(self, name)) < 1:
                raise BenchError(f"{name.replace('_', '-')} must be >= 1, got {value}")
        if self.warmup < 1:
            raise BenchError(f"warmup must be >= 1 query (it measures the single-query latency "
                             f"the scenario settings start from), got {self.warmup}")
        if self.samples_per_query is not None:
            if self.scenario != "multi-stream":
                raise BenchError(f"--samples-per-query applies to --scenario multi-stream, not "
                                 f"{self.scenario}")
            if self.samples_per_query < 1:
                raise BenchError(f"samples-per-query must be >= 1, got {self.samples_per_query}")
        _positive("min-seconds", self.min_seconds)
        if self.duration is not None:
            _positive("duration", self.duration)
        if self.max_seconds is not None:
            _positive("max-seconds", self.max_seconds)
            if self.max_seconds < self.min_seconds:
                raise BenchError(f"max-seconds {self.max_seconds:g} is below min-seconds "
                                 f"{self.min_seconds:g}: no run could be valid")
        for q in self.target_qps:
            _positive("target-qps", q)
        if self.latency_bound_ms is not None:
            _positive("latency-bound", self.latency_bound_ms)
        if self.percentile is not None and not 0 < self.percentile < 1:
            raise BenchError(f"percentile must be in (0, 1), e.g. 0.9, got {self.percentile:g}")
        if self.scenario == "server":
            if not self.target_qps or self.latency_bound_ms is None:
                raise BenchError("--scenario server needs --target-qps Q and --latency-bound MS "
                                 "(the arrival rate to offer and the tail latency to hold)")
        elif self.latency_bound_ms is not None:
            raise BenchError(f"--latency-bound applies to --scenario server, not {self.scenario}")
        elif self.scenario in ("single-stream", "multi-stream") and self.target_qps:
            raise BenchError(f"--target-qps does not apply to {self.scenario} (one query at a "
                             "time, issued when the previous one completes)")
        elif len(self.target_qps) > 1:
            raise BenchError("offline takes at most one --target-qps (the expected throughput)")
        return self

    @property
    def multi_stream_samples(self) -> int:
        """Multi-stream's N, the requests per query: --samples-per-query, else LoadGen's 8."""
        return self.samples_per_query or MULTI_STREAM_SAMPLES


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise BenchError(f"{name} must be a number > 0, got {value!r}")


__all__ = ["INPUTS", "MULTI_STREAM_SAMPLES", "SCENARIOS", "BenchConfig", "BenchError"]
