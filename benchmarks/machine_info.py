"""The machine a benchmark ran on, for its JSON record: the runtime's own description, shared
with ``v2a bench`` (:mod:`v2a_runtime.bench.stats`)."""

from __future__ import annotations

from v2a_runtime.bench.stats import cpu_name, machine

__all__ = ["cpu_name", "machine"]
