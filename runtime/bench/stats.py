"""Timing statistics and the machine description, shared by ``v2a bench`` and the repository's
``benchmarks/`` scripts (``benchmarks/machine_info.py`` re-exports :func:`machine`)."""

from __future__ import annotations

import os
import platform
import resource
from collections.abc import Sequence
from pathlib import Path

PERCENTILES = (0.5, 0.9, 0.95, 0.97, 0.99, 0.999)  # what LoadGen reports


def percentile(values: Sequence[float], p: float) -> float:
    """LoadGen's percentile: the sorted values' element ``int(p * n)`` (clamped to the last),
    so a percentile is always a measured value and ours match LoadGen's to the nanosecond."""
    if not values:
        raise ValueError("percentile of no values")
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


def summary(values: Sequence[float], percentiles: Sequence[float] = PERCENTILES) -> dict:
    """count, min, mean, max and the percentiles (keys ``p50``, ``p90``, ``p99.9``...)."""
    if not values:
        return {"count": 0}
    out = {"count": len(values), "min": min(values), "mean": sum(values) / len(values),
           "max": max(values)}
    out.update({percentile_key(p): percentile(values, p) for p in percentiles})
    return out


def percentile_key(p: float) -> str:
    return f"p{p * 100:g}"


def peak_concurrency(intervals: Sequence[tuple[float, float]]) -> int:
    """The most (start, end) intervals open at one time (one ending as another starts: not
    both)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_, peak = 0, 0
    for _t, step in events:
        open_ += step
        peak = max(peak, open_)
    return peak


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MiB; Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if platform.system() == "Darwin" else 2**10)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine(**load_averages: tuple[float, ...]) -> dict:
    """CPU, cores, the given load averages (rounded; key = argument name), Python, platform."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        **{key: [round(x, 2) for x in load] for key, load in load_averages.items()},
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


__all__ = ["PERCENTILES", "cpu_name", "machine", "peak_concurrency", "peak_rss_mb", "percentile",
           "percentile_key", "summary"]
