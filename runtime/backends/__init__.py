"""Backends: a bundle's graphs on one device, behind two small protocols (:mod:`.base`).

:func:`load_backend` is the one factory the pipeline uses; every backend returns a
:class:`Backend`: one :class:`Session` per component, checked against the manifest, and the
factory of its :class:`Sampler`. Backends today:

- ``cpu`` — onnxruntime, CPUExecutionProvider (:mod:`.ort`); the host sampling loop
  (:mod:`.host`);
- ``cuda`` — onnxruntime with CUDAExecutionProvider (needs onnxruntime-gpu), through IO
  binding (:mod:`.cuda`); its sampler keeps x, the conditions and the velocity on the device
  and replays a captured CUDA graph (:mod:`.cuda.loop`);
- ``tensorrt`` — the bundle's prebuilt TensorRT engines (``v2a-export build-engines``), with
  the engine cache checks and one shared scratch allocation (:mod:`.tensorrt`); its sampler
  uploads the conditions once per window, then only x and t per evaluation.

:func:`load_session` loads one graph file (cpu, cuda) for tools that work graph by graph.
"""

from __future__ import annotations

from pathlib import Path

from ..bundle import Bundle, check_io
from ..config import COMPONENTS, Dim, TensorInfo
from .base import Backend, BackendError, Sampler, SampleRequest, Session
from .host import HostSampler
from .ort import OrtOptions, OrtSession

BACKENDS = ("cpu", "cuda", "tensorrt")


def load_backend(
    bundle: Bundle, name: str = "cpu", *, threads: int | None = None, verify: bool = True
) -> Backend:
    """Every component of ``bundle`` on backend ``name`` (one of :data:`BACKENDS`), each
    session's I/O checked against the manifest. ``verify``: check the engines' files
    (TensorRT; the bundle's own files are checked by ``load_bundle``)."""
    _check_name(name)
    if name == "tensorrt":
        from .tensorrt import TrtSampler, load_engines

        backend = Backend(name, load_engines(bundle, verify=verify), TrtSampler)
    elif name == "cuda":
        from .cuda import BoundSession, CudaOptions, DeviceSampler

        options = CudaOptions(threads=threads)
        sessions = {n: BoundSession.load(bundle.path(n), options) for n in COMPONENTS}
        den = sessions["denoiser"]
        device = DeviceSampler.load(bundle.path("denoiser"), options, den.inputs, den.outputs)
        backend = Backend(name, sessions, lambda _denoiser: device)
    else:
        sessions = {n: OrtSession.load(bundle.path(n), threads=threads) for n in COMPONENTS}
        backend = Backend(name, sessions, HostSampler)
    for component in COMPONENTS:
        check_io(component, bundle.manifest.components[component], backend.sessions[component])
    return backend


def load_session(
    path: str | Path,
    backend: str = "cpu",
    *,
    threads: int | None = None,
    graph_optimization: str = "all",
) -> Session:
    """Load the single graph at ``path`` on ``backend`` (cpu or cuda)."""
    _check_name(backend)
    if backend == "tensorrt":
        raise BackendError(
            f"{path}: the tensorrt backend runs a bundle's prebuilt engines, not a graph file; "
            "load the bundle (Pipeline.load(bundle, backend='tensorrt')) after "
            "v2a-export build-engines BUNDLE"
        )
    if backend == "cuda":
        from .cuda import BoundSession, CudaOptions

        return BoundSession.load(path, CudaOptions(threads=threads,
                                                   graph_optimization=graph_optimization))
    return OrtSession.load(path, threads=threads, graph_optimization=graph_optimization)


def _check_name(name: str) -> None:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "SampleRequest",
    "Dim",
    "HostSampler",
    "OrtOptions",
    "OrtSession",
    "Sampler",
    "Session",
    "TensorInfo",
    "load_backend",
    "load_session",
]
