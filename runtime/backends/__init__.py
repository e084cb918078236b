"""Backends: one small :class:`Session` protocol and the loaders behind it.

``load_session(path, backend)`` is the seam the pipeline uses. Backends today:

- ``cpu``  — onnxruntime, CPUExecutionProvider;
- ``cuda`` — onnxruntime with CUDAExecutionProvider (needs onnxruntime-gpu).

A TensorRT backend and device-resident (IO-binding) variants plug in here by adding a name
to :data:`BACKENDS` and a loader returning an object that satisfies :class:`Session`.
"""

from __future__ import annotations

from pathlib import Path

from .base import BackendError, Dim, Session, TensorInfo
from .ort import OrtOptions, OrtSession

BACKENDS = ("cpu", "cuda")


def load_session(
    path: str | Path,
    backend: str = "cpu",
    *,
    threads: int | None = None,
    graph_optimization: str = "all",
) -> Session:
    """Load the graph at ``path`` on ``backend`` (one of :data:`BACKENDS`)."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return OrtSession.load(
        path, device=backend, threads=threads, graph_optimization=graph_optimization
    )


__all__ = [
    "BACKENDS",
    "BackendError",
    "Dim",
    "OrtOptions",
    "OrtSession",
    "Session",
    "TensorInfo",
    "load_session",
]
