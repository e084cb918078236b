"""Device memory, one stream and CUDA graphs through cuda-python's runtime bindings.

cuda-python returns a tuple ``(cudaError_t, *values)`` from every call and never raises;
:meth:`Cuda.check` turns a non-success code into a :class:`CudaError` naming the call and the
error (cudaGetErrorName), so no return value is ever ignored (spec/deployment.md §4 row 34: an
ignored capture failure once produced identical noise for every seed with exit status 0).

Calls used (CUDA Runtime API, docs.nvidia.com/cuda/cuda-runtime-api/): cudaMalloc / cudaFree
(group__CUDART__MEMORY), cudaMemcpyAsync host<->device (the host arrays are pageable numpy
memory: the copy is staged, and :meth:`Cuda.synchronize` ends every run before the arrays are
released), cudaStreamCreateWithFlags(cudaStreamNonBlocking) / cudaStreamSynchronize
(group__CUDART__STREAM), and stream capture: cudaStreamBeginCapture(Global) /
cudaStreamEndCapture / cudaGraphInstantiate(graph, 0) / cudaGraphLaunch / cudaGraphExecDestroy /
cudaGraphDestroy (group__CUDART__GRAPH). Capture must run on a non-default stream, hence the
stream of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..base import BackendError


class CudaError(BackendError):
    """A CUDA runtime call failed."""


@dataclass(frozen=True)
class Cuda:
    """The cuda-python runtime module plus checked helpers. Pointers are Python ints."""

    rt: ModuleType  # cuda.bindings.runtime

    def check(self, result: Any, what: str) -> Any:
        """The values of a cuda-python call's ``(err, *values)`` result; CudaError if err."""
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            name_err, name = self.rt.cudaGetErrorName(err)
            label = name.decode() if name_err == self.rt.cudaError_t.cudaSuccess else str(err)
            raise CudaError(f"CUDA {what} failed: {label}")
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def malloc(self, nbytes: int) -> int:
        return int(self.check(self.rt.cudaMalloc(max(int(nbytes), 1)), f"cudaMalloc({nbytes})"))

    def free(self, ptr: int) -> None:
        self.check(self.rt.cudaFree(ptr), "cudaFree")

    def stream(self) -> Any:
        flags = self.rt.cudaStreamNonBlocking
        return self.check(self.rt.cudaStreamCreateWithFlags(flags), "cudaStreamCreateWithFlags")

    def destroy_stream(self, stream: Any) -> None:
        self.check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def upload(self, dst: int, array: np.ndarray, stream: Any) -> None:
        """Queue a host->device copy of a C-contiguous array."""
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        result = self.rt.cudaMemcpyAsync(dst, array.ctypes.data, array.nbytes, kind, stream)
        self.check(result, "cudaMemcpyAsync host->device")

    def download(self, array: np.ndarray, src: int, stream: Any) -> None:
        """Queue a device->host copy into a C-contiguous array."""
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        result = self.rt.cudaMemcpyAsync(array.ctypes.data, src, array.nbytes, kind, stream)
        self.check(result, "cudaMemcpyAsync device->host")

    def synchronize(self, stream: Any) -> None:
        self.check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def begin_capture(self, stream: Any) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        self.check(self.rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")

    def end_capture(self, stream: Any) -> Any:
        """The captured cudaGraph_t (CudaError when the capture was invalidated)."""
        return self.check(self.rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")

    def instantiate(self, graph: Any) -> Any:
        return self.check(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")

    def launch(self, graph_exec: Any, stream: Any) -> None:
        self.check(self.rt.cudaGraphLaunch(graph_exec, stream), "cudaGraphLaunch")

    def destroy_graph(self, graph: Any, graph_exec: Any) -> None:
        if graph_exec is not None:
            self.check(self.rt.cudaGraphExecDestroy(graph_exec), "cudaGraphExecDestroy")
        if graph is not None:
            self.check(self.rt.cudaGraphDestroy(graph), "cudaGraphDestroy")


@dataclass
class DeviceBuffer:
    """One device allocation that only grows (reallocated when a larger tensor arrives)."""

    ptr: int = 0
    capacity: int = 0

    def ensure(self, cuda: Cuda, nbytes: int) -> bool:
        """Make room for ``nbytes``; True when the address changed (rebind, drop graphs)."""
        if nbytes <= self.capacity and self.ptr:
            return False
        if self.ptr:
            cuda.free(self.ptr)
            self.ptr, self.capacity = 0, 0
        size = max(int(nbytes), 256)
        self.ptr, self.capacity = cuda.malloc(size), size
        return True

    def release(self, cuda: Cuda) -> None:
        if self.ptr:
            cuda.free(self.ptr)
        self.ptr, self.capacity = 0, 0


__all__ = ["Cuda", "CudaError", "DeviceBuffer"]
