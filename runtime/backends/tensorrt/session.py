"""TensorRT backend: a bundle's prebuilt engines behind the same :class:`Session` protocol.

``load_engines(bundle)`` checks the machine (tensorrt, cuda-python, a GPU), picks each
component's engine from ``engines/engines.json`` for this TensorRT version and GPU, and refuses
any engine whose key does not match the bundle (re-exported graph, other GPU or TensorRT,
modified plan) with one line that says how to rebuild (:mod:`.cache`). Then:

- every plan is deserialized once (``Runtime.deserialize_cuda_engine``);
- one CUDA stream carries every copy and every enqueue, so the stages run one after another;
- one scratch allocation, sized to the largest ``ICudaEngine.device_memory_size_v2``, is shared
  by all execution contexts, created with ``ExecutionContextAllocationStrategy.USER_MANAGED``
  and pointed at it with ``IExecutionContext.set_device_memory(ptr, size)`` — valid because the
  stages never run concurrently (the pattern of TensorRT's demoDiffusion,
  spec/deployment.md §1.6);
- each I/O tensor has one device buffer, sized at load for the profile maximum and only grown;
  input shapes are set (``set_input_shape``) and addresses bound (``set_tensor_address``) only
  when a call's shapes differ from the previous call's;
- ``run`` copies the inputs in, enqueues (``execute_async_v3``), copies the outputs out and
  synchronizes. Every TensorRT call that reports success is checked.

CUDA graph (optional, the denoiser only: its shapes are fixed for a whole sampling loop): after
a shape change the first call runs a plain enqueue — TensorRT's developer guide: "call
enqueueV3() once after an input shape change to update internal state" — and then captures one
``execute_async_v3`` on the stream (global capture mode); later calls at the same shapes copy
the inputs into the same buffers and launch the graph. A failed capture falls back to plain
enqueues with a warning (the outputs of that call came from the plain enqueue).

API pages relied on: docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/
{Runtime,Engine,ExecutionContext}.html (TensorRT 10.x). 11.x keeps these calls and removes the
pre-10.1 ``device_memory_size`` (docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/
tensorrt-10x-to-11x-python-api-reference.html).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ...config import TensorInfo
from ..base import BackendError
from .cache import GraphIdentity, InputProfile, read_index, select_engines
from .cudart import Cuda, DeviceBuffer
from .env import require_tensorrt

_LOGGER = logging.getLogger(__name__)

# tensorrt.DataType member name -> numpy dtype name (the manifest's vocabulary)
_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "BOOL": "bool",
}
GRAPH_COMPONENTS = ("denoiser",)  # fixed shapes across a sampling loop: worth a CUDA graph


def _logger(trt):
    """A TensorRT ILogger that forwards to ``logging`` and keeps the last errors."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:
            s = trt.ILogger.Severity
            if severity in (s.INTERNAL_ERROR, s.ERROR):
                self.errors = [*self.errors[-4:], str(msg)]
                _LOGGER.error("TensorRT: %s", msg)
            elif severity == s.WARNING:
                _LOGGER.warning("TensorRT: %s", msg)
            else:
                _LOGGER.debug("TensorRT: %s", msg)

        def last(self) -> str:
            return self.errors[-1] if self.errors else "no error message from TensorRT"

    return Logger()


class EngineSet:
    """What a bundle's engines share: the TensorRT runtime and logger, the CUDA stream, the
    scratch allocation. Build with :meth:`load`; :meth:`close` frees the device memory."""

    def __init__(self, trt, cuda: Cuda, logger, runtime, stream, scratch: DeviceBuffer) -> None:
        self.trt, self.cuda, self.logger, self.runtime = trt, cuda, logger, runtime
        self.stream, self.scratch = stream, scratch
        self.stream_handle = int(stream)
        self.sessions: dict[str, TrtSession] = {}

    @classmethod
    def load(cls, bundle, *, cuda_graph: bool = True, verify: bool = True) -> EngineSet:
        """Engines for every component of ``bundle`` (a :class:`v2a_runtime.bundle.Bundle`)."""
        stack = require_tensorrt("the tensorrt backend")
        m = bundle.manifest
        graphs = {
            name: GraphIdentity(
                c.file, c.sha256, c.precision, c.external_data.sha256 if c.external_data else None
            )
            for name, c in m.components.items()
        }
        entries = select_engines(
            bundle.root, graphs, read_index(bundle.root), stack.platform, verify_files=verify
        )
        trt, cuda = stack.trt, Cuda(stack.cudart)
        logger = _logger(trt)
        runtime = trt.Runtime(logger)
        engines = {}
        for name, entry in entries.items():
            path = Path(bundle.root) / entry.file
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise BackendError(
                    f"{path}: TensorRT cannot deserialize the engine ({logger.last()}); rebuild "
                    f"with v2a-export build-engines {bundle.root} --components {name}"
                )
            engines[name] = engine
        scratch = DeviceBuffer()
        scratch.ensure(cuda, max(int(e.device_memory_size_v2) for e in engines.values()))
        self = cls(trt, cuda, logger, runtime, cuda.stream(), scratch)
        for name, engine in engines.items():
            use_graph = cuda_graph and name in GRAPH_COMPONENTS
            self.sessions[name] = TrtSession.create(self, name, engine, use_graph=use_graph)
        _LOGGER.info(
            "loaded %d TensorRT engines (%s), shared scratch %.1f MB",
            len(engines), stack.platform.describe(), scratch.capacity / 1e6,
        )  # fmt: skip
        return self

    def close(self) -> None:
        """Free every device allocation and the stream (the sessions are unusable after)."""
        for session in self.sessions.values():
            session.release()
        self.scratch.release(self.cuda)
        if self.stream is not None:
            self.cuda.destroy_stream(self.stream)
            self.stream = None


def load_engines(bundle, *, cuda_graph: bool = True, verify: bool = True) -> dict[str, TrtSession]:
    """One :class:`TrtSession` per component (see :class:`EngineSet`)."""
    return dict(EngineSet.load(bundle, cuda_graph=cuda_graph, verify=verify).sessions)


class TrtSession:
    """One engine and its execution context; :meth:`run` follows the Session protocol."""

    def __init__(self, shared: EngineSet, name: str, engine, context, *, use_graph: bool) -> None:
        self.shared, self.name, self.engine, self.context = shared, name, engine, context
        self.use_graph = use_graph
        self.graph_note: str | None = None  # why graphs were turned off, if they were
        self._names: list[str] = []
        self._inputs: list[TensorInfo] = []
        self._outputs: list[TensorInfo] = []
        self._profiles: dict[str, InputProfile] = {}
        self._buffers: dict[str, DeviceBuffer] = {}
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._out_shapes: dict[str, tuple[int, ...]] = {}
        self._graph: Any = None
        self._graph_exec: Any = None
        self._resident: dict[str, np.ndarray] = {}  # inputs uploaded once (see resident())
        self._uploaded: set[str] = set()  # ... and already on the device at these shapes

    @classmethod
    def create(cls, shared: EngineSet, name: str, engine, *, use_graph: bool) -> TrtSession:
        trt = shared.trt
        strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
        context = engine.create_execution_context(strategy)
        if context is None:
            raise BackendError(f"{name}: TensorRT cannot create an execution context "
                               f"({shared.logger.last()})")  # fmt: skip
        context.set_device_memory(shared.scratch.ptr, shared.scratch.capacity)
        self = cls(shared, name, engine, context, use_graph=use_graph)
        for i in range(engine.num_io_tensors):
            tensor = engine.get_tensor_name(i)
            dtype = _DTYPES.get(engine.get_tensor_dtype(tensor).name)
            if dtype is None or dtype == "bfloat16":
                raise BackendError(
                    f"{name}: engine tensor {tensor!r} has type {engine.get_tensor_dtype(tensor)}; "
                    "the runtime feeds float32/float16/integer I/O (export with fp32 I/O)"
                )
            shape = tuple(d if d >= 0 else "?" for d in engine.get_tensor_shape(tensor))
            info = TensorInfo(tensor, dtype, shape)
            self._names.append(tensor)
            self._buffers[tensor] = DeviceBuffer()
            if engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT:
                if engine.is_shape_inference_io(tensor):
                    raise BackendError(f"{name}: input {tensor!r} is a shape tensor (host "
                                       "memory); the exported graphs never have one")  # fmt: skip
                lo, opt, hi = (tuple(d) for d in engine.get_tensor_profile_shape(tensor, 0))
                self._profiles[tensor] = InputProfile(tensor, lo, opt, hi)
                self._inputs.append(info)
            else:
                self._outputs.append(info)
        # Size every buffer for the profile maximum now, so runs never allocate.
        self._reshape({t.name: self._profiles[t.name].max for t in self._inputs})
        self._shapes = None
        return self

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return tuple(self._inputs)

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return tuple(self._outputs)

    def profile(self, name: str) -> InputProfile:
        return self._profiles[name]

    @contextmanager
    def resident(self, feeds: Mapping[str, np.ndarray]) -> Iterator[None]:
        """Inside the block, ``feeds`` stay on the device: they are uploaded by the first run
        (and again only after a shape change), and runs take only the other inputs."""
        self._resident = {n: np.ascontiguousarray(v) for n, v in feeds.items()}
        self._uploaded = set()
        try:
            yield
        finally:
            self._resident, self._uploaded = {}, set()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = self._arrays({**self._resident, **feeds})
        shapes = {n: a.shape for n, a in arrays.items()}
        if shapes != self._shapes:
            self._reshape(shapes)
            self._uploaded = set()  # buffers may have moved
        cuda, stream = self.shared.cuda, self.shared.stream
        for n, a in arrays.items():
            if n in self._uploaded:
                continue
            if a.nbytes:
                cuda.upload(self._buffers[n].ptr, a, stream)
            if n in self._resident:
                self._uploaded.add(n)
        self._execute()
        out = {}
        for info in self._outputs:
            arr = np.empty(self._out_shapes[info.name], dtype=info.dtype)
            if arr.nbytes:
                cuda.download(arr, self._buffers[info.name].ptr, stream)
            out[info.name] = arr
        cuda.synchronize(stream)  # the host arrays above stay alive until here
        return out

    def release(self) -> None:
        self._drop_graph()
        for buf in self._buffers.values():
            buf.release(self.shared.cuda)

    # --- internals ------------------------------------------------------------------------

    def _arrays(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        want = [t.name for t in self._inputs]
        if sorted(feeds) != sorted(want):
            raise BackendError(f"{self.name}: feeds {sorted(feeds)}, the engine takes {want}")
        out = {}
        for info in self._inputs:
            a = np.ascontiguousarray(feeds[info.name])
            if a.dtype != np.dtype(info.dtype):
                raise BackendError(
                    f"{self.name}: input {info.name!r} has dtype {a.dtype}, the engine takes "
                    f"{info.dtype}"
                )
            out[info.name] = a
        return out

    def _reshape(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Set input shapes, derive output shapes, grow buffers and bind their addresses."""
        ctx, cuda = self.context, self.shared.cuda
        for n, shape in shapes.items():
            p = self._profiles[n]
            if not p.contains(shape):
                raise BackendError(
                    f"{self.name}: input {n!r} has shape {tuple(shape)}, outside the engine's "
                    f"profile (min {p.min}, max {p.max}); rebuild the engines for these sizes "
                    "with v2a-export build-engines BUNDLE --max-duration S --batch N"
                )
            if not ctx.set_input_shape(n, tuple(int(d) for d in shape)):
                raise BackendError(f"{self.name}: set_input_shape({n}, {shape}) failed "
                                   f"({self.shared.logger.last()})")  # fmt: skip
        out_shapes = {}
        for info in self._outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(info.name))
            if any(d < 0 for d in shape):
                raise BackendError(f"{self.name}: output {info.name!r} shape {shape} is not "
                                   "determined by the input shapes")  # fmt: skip
            out_shapes[info.name] = shape
        all_shapes = {**shapes, **out_shapes}
        for info in (*self._inputs, *self._outputs):
            nbytes = math.prod(all_shapes[info.name]) * np.dtype(info.dtype).itemsize
            self._buffers[info.name].ensure(cuda, nbytes)
            if not ctx.set_tensor_address(info.name, self._buffers[info.name].ptr):
                raise BackendError(f"{self.name}: set_tensor_address({info.name}) failed "
                                   f"({self.shared.logger.last()})")  # fmt: skip
        self._shapes = {n: tuple(s) for n, s in shapes.items()}
        self._out_shapes = out_shapes
        self._drop_graph()

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.shared.stream_handle):
            raise BackendError(f"{self.name}: TensorRT execute_async_v3 failed "
                               f"({self.shared.logger.last()})")  # fmt: skip

    def _execute(self) -> None:
        if not self.use_graph:
            self._enqueue()
            return
        if self._graph_exec is not None:
            self.shared.cuda.launch(self._graph_exec, self.shared.stream)
            return
        self._enqueue()  # the first enqueue after a shape change updates TensorRT's state
        self.shared.cuda.synchronize(self.shared.stream)
        try:
            self._capture()
        except BackendError as e:
            self.use_graph, self.graph_note = False, str(e)
            _LOGGER.warning("%s: CUDA graph capture failed, running without: %s", self.name, e)

    def _capture(self) -> None:
        cuda, stream = self.shared.cuda, self.shared.stream
        cuda.begin_capture(stream)
        ok = self.context.execute_async_v3(self.shared.stream_handle)
        graph = cuda.end_capture(stream)  # always end the capture, even after a failed enqueue
        if not ok:
            cuda.destroy_graph(graph, None)
            raise BackendError(f"execute_async_v3 is not capturable ({self.shared.logger.last()})")
        try:
            self._graph_exec = cuda.instantiate(graph)
        except BackendError:
            cuda.destroy_graph(graph, None)
            raise
        self._graph = graph

    def _drop_graph(self) -> None:
        if self._graph is not None or self._graph_exec is not None:
            self.shared.cuda.destroy_graph(self._graph, self._graph_exec)
        self._graph = self._graph_exec = None


__all__ = ["GRAPH_COMPONENTS", "EngineSet", "TrtSession", "load_engines"]
