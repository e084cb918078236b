"""Per-graph timing (``v2a bench --graphs``): each component alone, as ``trtexec`` times one
engine. The feeds are the real ones: one generate request runs with every session wrapped in a
:class:`~v2a_runtime.backends.recording.RecordingSession`, then each component's first recorded
feed (the denoiser's: one solver evaluation on the CFG batch) is run ``warmup`` times untimed and
``runs`` times timed."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..backends.recording import RecordingSession
from ..config import COMPONENTS
from ..pipeline import Pipeline
from .stats import summary
from .workload import Prepared


@dataclass(frozen=True)
class GraphTiming:
    component: str
    shapes: dict[str, tuple[int, ...]]  # the feed's input shapes
    calls_per_query: int  # how often one request runs this graph
    seconds: dict  # stats.summary of the timed runs


def time_graphs(pipe: Pipeline, prepared: Prepared, *, runs: int = 20, warmup: int = 3
                ) -> list[GraphTiming]:  # fmt: skip
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got {runs} and {warmup}")
    recorders = {n: RecordingSession(pipe.sessions[n]) for n in COMPONENTS}
    pipe.with_sessions(**recorders).generate(prepared.source, prepared.options)
    out = []
    for name in COMPONENTS:
        rec = recorders[name]
        if not rec.feeds:
            continue
        feeds, session = rec.feeds[0], pipe.sessions[name]
        for _ in range(warmup):
            session.run(feeds)
        seconds = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(feeds)
            seconds.append(time.perf_counter() - t0)
        out.append(GraphTiming(name, rec.shapes()[0], len(rec.feeds), summary(seconds)))
    return out


__all__ = ["GraphTiming", "time_graphs"]
