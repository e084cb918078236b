"""The machine a benchmark ran on, for its JSON record (shared by the benchmark scripts)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


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
