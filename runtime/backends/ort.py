"""onnxruntime sessions (CPU; CUDA when onnxruntime-gpu offers it), with explicit options.

Every option that changes speed or results is set here, not left to onnxruntime's defaults:
thread counts, sequential execution, the graph optimisation level and the provider list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import onnxruntime as ort

from ..config import TensorInfo
from .base import BackendError

_LOGGER = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
GRAPH_OPTIMIZATIONS = MappingProxyType(
    {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
)
# onnxruntime's type strings -> numpy dtype names (the manifest's vocabulary)
_ORT_TYPES = MappingProxyType(
    {
        "tensor(float)": "float32",
        "tensor(float16)": "float16",
        "tensor(double)": "float64",
        "tensor(int64)": "int64",
        "tensor(int32)": "int32",
        "tensor(uint8)": "uint8",
        "tensor(int8)": "int8",
        "tensor(bool)": "bool",
    }
)


@dataclass(frozen=True)
class OrtOptions:
    """How to build an onnxruntime session. ``threads=None`` lets onnxruntime use all cores."""

    device: str = "cpu"
    threads: int | None = None
    graph_optimization: str = "all"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise BackendError(f"unknown device {self.device!r}; choose from {', '.join(DEVICES)}")
        if self.graph_optimization not in GRAPH_OPTIMIZATIONS:
            raise BackendError(
                f"unknown graph optimisation {self.graph_optimization!r}; "
                f"choose from {', '.join(GRAPH_OPTIMIZATIONS)}"
            )
        if self.threads is not None and self.threads < 1:
            raise BackendError(f"threads must be >= 1 or None (all cores), got {self.threads}")


def session_options(options: OrtOptions) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = GRAPH_OPTIMIZATIONS[options.graph_optimization]
    # The graphs are chains of large ops: parallelism inside ops, not between them.
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = options.threads or 0  # 0 = onnxruntime picks (one per core)
    so.inter_op_num_threads = 1
    # Idle intra-op workers sleep instead of busy-waiting for the next op (onnxruntime's
    # default spins). On a CPU shared with other jobs the spinning workers take the cores the
    # computing thread needs: measured on a 2-core machine under load, two spinning threads
    # were slower than one and two sleeping ones as fast or faster (docs/benchmarks.md,
    # benchmarks/cpu.py --sections threads).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Same seed, same backend -> same output (DESIGN.md §8), also on CUDA, whose fastest
    # kernels may otherwise pick run-dependent algorithms; the CPU kernels are deterministic.
    so.use_deterministic_compute = True
    so.log_severity_level = 3  # errors only: warnings go to stderr, the CLI owns the terminal
    return so


def providers(device: str) -> list[str]:
    """The provider list for ``device``; BackendError with the install hint if CUDA is absent."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise BackendError(
            "device 'cuda' needs onnxruntime-gpu (pip install 'v2a-export[gpu]' after "
            f"uninstalling onnxruntime); this onnxruntime offers {', '.join(available)}"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


@dataclass(frozen=True)
class OrtSession:
    """An onnxruntime InferenceSession plus its I/O metadata. Build with :meth:`load`."""

    session: ort.InferenceSession
    path: Path
    options: OrtOptions
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        graph_optimization: str = "all",
    ) -> OrtSession:
        options = OrtOptions(device=device, threads=threads, graph_optimization=graph_optimization)
        path = Path(path)
        so = session_options(options)
        if device == "cpu":
            # Memory patterns plan one block per set of input shapes from a session's second
            # run and keep it: +100 MB on the default bundle as soon as a second window runs,
            # for nothing on the CPU, whose arena already reuses its buffers. Off, a long
            # video's peak memory is one window's (issue 21; benchmarks/memory.py).
            so.enable_mem_pattern = False
        session = create_session(path, so, providers(device))
        _LOGGER.debug("loaded %s on %s", path.name, session.get_providers())
        return cls(session, path, options, *graph_io(session))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # fp16 graph I/O (v2a-export --io-dtype native): the runtime works in float32, so
        # float16 inputs are cast on the way in and float16 outputs on the way out
        half = {t.name for t in self.inputs if t.dtype == "float16"}
        if half:
            feeds = {k: (v.astype(np.float16) if k in half else v) for k, v in feeds.items()}
        try:
            values = self.session.run(None, feeds)
        except Exception as e:
            raise BackendError(f"{self.path.name}: onnxruntime run failed: {first_line(e)}") from e
        return {
            info.name: (value.astype(np.float32) if value.dtype == np.float16 else value)
            for info, value in zip(self.outputs, values, strict=True)
        }


def create_session(path: Path, options: ort.SessionOptions, provider_list: list):
    """``ort.InferenceSession`` of ``path``; BackendError with onnxruntime's first line."""
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=provider_list)
    except BackendError:
        raise
    except Exception as e:  # onnxruntime raises its own (non-ValueError) exception types
        raise BackendError(f"onnxruntime cannot load {path}: {first_line(e)}") from e


def tensor_info(arg: ort.NodeArg) -> TensorInfo:
    """An onnxruntime input/output as the manifest describes it (numpy dtype name, dims)."""
    dtype = _ORT_TYPES.get(arg.type, arg.type)
    shape = tuple(d if isinstance(d, int) else (d or "?") for d in arg.shape)
    return TensorInfo(name=arg.name, dtype=dtype, shape=shape)


def graph_io(session) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """(inputs, outputs) of an onnxruntime session."""
    return (tuple(tensor_info(a) for a in session.get_inputs()),
            tuple(tensor_info(a) for a in session.get_outputs()))  # fmt: skip


def first_line(e: Exception) -> str:
    """An exception's first message line (onnxruntime's messages run to pages)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
