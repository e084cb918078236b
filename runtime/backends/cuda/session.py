"""The onnxruntime CUDA backend: IO binding, device-resident buffers, CUDA graphs.

A :class:`BoundSession` runs one graph through onnxruntime's IO binding
(https://onnxruntime.ai/docs/performance/tune-performance/iobinding.html): inputs and outputs
are ``OrtValue`` buffers that live on the device, so a sampling loop can keep x, the conditions
and the velocity there across steps (:mod:`.loop`). Its plain :meth:`~BoundSession.run`
satisfies the :class:`~v2a_runtime.backends.base.Session` protocol, so the pipeline can use it
for every component.

The device is configurable: ``"cuda"`` in production, ``"cpu"`` to exercise exactly the same
binding code on a machine without a GPU (onnxruntime binds CPU ``OrtValue`` s the same way).

CUDA graphs (provider option ``enable_cuda_graph``) need, per onnxruntime's rules
(microsoft/onnxruntime PRs #9978, #15005, #16491; spec/deployment.md §2.3, §4 rows 35–36):
no control flow, no Memcpy nodes (every compute node on the CUDA EP), fixed input/output
addresses, and one shape per captured graph. A graph is loaded for capture with its dynamic
dims fixed (``SessionOptions.add_free_dimension_override_by_name``: our graphs name their dims
``B``, ``L``, ``Lc``, ... per docs/contract.md), so onnxruntime folds the shape subgraphs
and no Shape → Memcpy chain remains. onnxruntime refuses at session creation when capture is
impossible; that error surfaces as a :class:`BackendError` naming the graph and the reason.

Graph I/O: float32 feeds given to a graph whose inputs are float16 (``--io-dtype native``)
are cast at the boundary, and float16 outputs come back as float32 from :meth:`run`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import onnxruntime as ort

from ...config import TensorInfo
from ..base import BackendError
from ..ort import OrtOptions, create_session, first_line, graph_io, providers, session_options

_LOGGER = logging.getLogger(__name__)

DEVICES = ("cuda", "cpu")
GRAPH_ID_KEY = "gpu_graph_id"  # RunOptions key selecting a captured CUDA graph (ORT >= 1.18)
GRAPH_SKIP = "-1"  # ... and the value that runs without capture or replay
_NUMPY = MappingProxyType({"float32": np.float32, "float16": np.float16, "int64": np.int64,
                           "int32": np.int32, "uint8": np.uint8, "bool": np.bool_})  # fmt: skip


@dataclass(frozen=True)
class CudaOptions:
    """How to build a bound session.

    ``device``: where the bound buffers live (``cpu`` exercises the same code without a GPU).
    ``cuda_graph``: capture the graph on its first runs and replay it afterwards (CUDA only;
    needs fixed dims, see :meth:`BoundSession.load`). ``conv_algo_search``: cuDNN's search for
    convolution algorithms (EXHAUSTIVE measures each shape once, then reuses the winner).
    """

    device: str = "cuda"
    device_id: int = 0
    cuda_graph: bool = True
    threads: int | None = None  # CPU threads (device "cpu")
    graph_optimization: str = "all"
    conv_algo_search: str = "EXHAUSTIVE"

    def __post_init__(self) -> None:
        self.ort_options()  # validates device, threads and graph optimisation
        if self.conv_algo_search not in ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"):
            raise BackendError(
                f"unknown conv_algo_search {self.conv_algo_search!r}; "
                "choose from EXHAUSTIVE, HEURISTIC, DEFAULT"
            )

    def ort_options(self) -> OrtOptions:
        """The plain onnxruntime options these extend (session options come from them)."""
        return OrtOptions(self.device, self.threads, self.graph_optimization)


def cuda_available() -> bool:
    return "CUDAExecutionProvider" in ort.get_available_providers()


def provider_list(options: CudaOptions, *, capture: bool) -> list:
    """onnxruntime providers for ``options``; BackendError with the install hint when the CUDA
    provider is missing."""
    if options.device == "cpu":
        return ["CPUExecutionProvider"]
    providers("cuda")  # BackendError with the install hint when the CUDA provider is missing
    cuda = {
        "device_id": str(options.device_id),
        "enable_cuda_graph": "1" if capture else "0",
        "cudnn_conv_algo_search": options.conv_algo_search,
        # one stream for copies and kernels: an update_inplace between runs is ordered with them
        "do_copy_in_default_stream": "1",
    }
    return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]


def _session_options(options: CudaOptions, static_dims: Mapping[str, int] | None):
    so = session_options(options.ort_options())
    for name, size in (static_dims or {}).items():
        so.add_free_dimension_override_by_name(name, int(size))
    return so


@dataclass(frozen=True)
class BoundSession:
    """One graph on one device, run through IO binding. Build with :meth:`load`."""

    session: ort.InferenceSession
    path: Path
    options: CudaOptions
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    static_dims: tuple[tuple[str, int], ...]  # dims fixed at load (for capture)
    captured: bool  # CUDA graph enabled

    @classmethod
    def load(
        cls,
        path: str | Path,
        options: CudaOptions = CudaOptions(),
        *,
        static_dims: Mapping[str, int] | None = None,
    ) -> BoundSession:
        """Load ``path``. With ``static_dims`` (glossary dim -> size) every such dim is fixed,
        and on CUDA with ``options.cuda_graph`` the graph is captured on its first runs."""
        path = Path(path)
        capture = bool(options.cuda_graph and options.device == "cuda" and static_dims)
        session = create_session(path, _session_options(options, static_dims),
                                 provider_list(options, capture=capture))  # fmt: skip
        if options.device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            raise BackendError(f"{path.name}: onnxruntime did not enable the CUDA provider")
        inputs, outputs = graph_io(session)
        static = tuple(sorted((static_dims or {}).items()))
        return cls(session, path, options, inputs, outputs, static, capture)

    # --- device buffers --------------------------------------------------------------------

    def to_device(self, array: np.ndarray, dtype: str | None = None) -> ort.OrtValue:
        """A device copy of ``array`` (cast to ``dtype``, a numpy name, when given)."""
        a = np.ascontiguousarray(array if dtype is None else array.astype(_NUMPY[dtype]))
        return ort.OrtValue.ortvalue_from_numpy(a, self.options.device, self.options.device_id)

    def empty(self, shape: tuple[int, ...], dtype: str) -> ort.OrtValue:
        """An uninitialised device buffer."""
        return ort.OrtValue.ortvalue_from_shape_and_type(
            list(shape), _NUMPY[dtype], self.options.device, self.options.device_id
        )

    def binding(
        self, inputs: Mapping[str, ort.OrtValue], outputs: Mapping[str, ort.OrtValue]
    ) -> ort.IOBinding:
        """An IO binding of every input and output to the given device buffers. The buffers'
        addresses are what a captured CUDA graph replays, so they must outlive the binding."""
        missing = [t.name for t in self.inputs if t.name not in inputs]
        missing += [t.name for t in self.outputs if t.name not in outputs]
        if missing:
            raise BackendError(f"{self.path.name}: no buffer bound for {missing}")
        b = self.session.io_binding()
        for name, value in inputs.items():
            b.bind_ortvalue_input(name, value)
        for name, value in outputs.items():
            b.bind_ortvalue_output(name, value)
        return b

    def run_bound(self, binding: ort.IOBinding, graph_id: int | None = None) -> None:
        """Run with ``binding``. On a captured session the first runs capture a CUDA graph and
        later runs replay it; ``graph_id`` (>= 1) keeps several graphs apart (onnxruntime's
        default id is used when None). onnxruntime synchronises the device at the end of the
        run, so host writes after it are safe."""
        ro = ort.RunOptions()
        if self.captured and graph_id is not None:
            ro.add_run_config_entry(GRAPH_ID_KEY, str(graph_id))
        try:
            # host writes (OrtValue.update_inplace) may still be in flight on another stream:
            # order them before the run, and the run's outputs before the next host read
            binding.synchronize_inputs()
            self.session.run_with_iobinding(binding, ro)
            binding.synchronize_outputs()
        except Exception as e:  # every run's status is checked: a failure is never silent
            raise BackendError(f"{self.path.name}: onnxruntime run failed: {first_line(e)}") from e

    # --- the Session protocol --------------------------------------------------------------

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """numpy in, numpy out (float16 graph I/O cast at the boundary)."""
        b = self.session.io_binding()
        try:
            for t in self.inputs:
                if t.name not in feeds:
                    raise BackendError(f"{self.path.name}: missing input {t.name!r}")
                value = feeds[t.name]
                if t.dtype == "float16" and value.dtype != np.float16:
                    value = value.astype(np.float16)
                b.bind_cpu_input(t.name, np.ascontiguousarray(value))
            for t in self.outputs:
                b.bind_output(t.name, self.options.device, self.options.device_id)
            ro = ort.RunOptions()
            if self.captured:  # host buffers move between calls: never capture this run
                ro.add_run_config_entry(GRAPH_ID_KEY, GRAPH_SKIP)
            self.session.run_with_iobinding(b, ro)
            values = b.copy_outputs_to_cpu()
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(f"{self.path.name}: onnxruntime run failed: {first_line(e)}") from e
        return {
            t.name: (v.astype(np.float32) if v.dtype == np.float16 else v)
            for t, v in zip(self.outputs, values, strict=True)
        }


__all__ = [
    "DEVICES",
    "GRAPH_ID_KEY",
    "BoundSession",
    "CudaOptions",
    "cuda_available",
    "provider_list",
]
