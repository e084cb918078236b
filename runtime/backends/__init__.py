"""Backends: one small :class:`Session` protocol and the loaders behind it.

``load_session(path, backend)`` is the seam the pipeline uses. Backends today:

- ``cpu``  — onnxruntime, CPUExecutionProvider;
- ``cuda`` — onnxruntime with CUDAExecutionProvider (needs onnxruntime-gpu), through IO
  binding (:mod:`.cuda`); the denoiser gets the device-resident sampling loop with CUDA-graph
  capture (:mod:`.cuda.loop`);
- ``tensorrt`` — a bundle's prebuilt TensorRT engines (``v2a-export build-engines``); loaded
  per bundle by :func:`v2a_runtime.backends.tensorrt.load_engines` (engine cache checks, one
  shared scratch allocation), not per graph file: ``Pipeline.load(bundle, "tensorrt")``.

Device-resident (IO-binding) variants plug in here by adding a name to :data:`BACKENDS` and a
loader returning an object that satisfies :class:`Session`.
"""

from __future__ import annotations

from pathlib import Path

from .base import BackendError, Dim, Session, TensorInfo
from .ort import OrtOptions, OrtSession

BACKENDS = ("cpu", "cuda", "tensorrt")


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
    if backend == "tensorrt":
        raise BackendError(
            f"{path}: the tensorrt backend runs a bundle's prebuilt engines, not a graph file; "
            "load the bundle (Pipeline.load(bundle, backend='tensorrt')) after "
            "v2a-export build-engines BUNDLE"
        )
    if backend == "cuda":
        from .cuda.loop import load_cuda_session
        from .cuda.session import CudaOptions

        options = CudaOptions(threads=threads, graph_optimization=graph_optimization)
        return load_cuda_session(path, options)
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
