"""What TensorRT needs from the machine, checked before any work: the ``tensorrt`` and
``cuda-python`` packages and an NVIDIA GPU.

:func:`require_tensorrt` collects every missing piece and raises one :class:`BackendError`
whose single line names all of them with what to do (the CLIs print it as is, no traceback).

The GPU is identified through the CUDA *driver* (``libcuda``, loaded with ctypes, no Python
package): that answers "is there a GPU, which one, which compute capability" on any machine,
including one where the optional packages are missing, and it is the identity an engine's
cache key records. cuInit / cuDeviceGetCount / cuDeviceGet / cuDeviceGetName /
cuDeviceGetAttribute are the CUDA Driver API's device-management calls
(docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__DEVICE.html); attributes 75/76 are
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR/MINOR.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from types import ModuleType

from ..base import BackendError
from .cache import Platform

INSTALL_HINT = (
    "pip install 'v2a-export[tensorrt]' (TensorRT >= 10.1 and cuda-python; see "
    "docs/tensorrt.md)"
)
GPU_HINT = "run on a machine with an NVIDIA GPU and its driver"
MIN_TENSORRT = (10, 1)  # device_memory_size_v2 and set_device_memory(ptr, size) arrived in 10.1
_CC_MAJOR, _CC_MINOR = 75, 76  # CUdevice_attribute values


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # "9.0"
    index: int = 0


@dataclass(frozen=True)
class TensorRTStack:
    """The imported modules and the platform they run on."""

    trt: ModuleType  # tensorrt
    cudart: ModuleType  # cuda.bindings.runtime (or cuda.cudart on cuda-python < 12.6)
    platform: Platform


def _driver_library() -> ctypes.CDLL:
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError as e:
        raise BackendError(f"no NVIDIA driver found ({name} cannot be loaded)") from e


def _call(lib: ctypes.CDLL, fn: str, *args) -> None:
    status = getattr(lib, fn)(*args)
    if status != 0:
        text = ctypes.c_char_p()
        lib.cuGetErrorName(status, ctypes.byref(text))
        name = text.value.decode() if text.value else f"CUresult {status}"
        raise BackendError(f"the NVIDIA driver reports {name} from {fn}")


def probe_gpu(index: int = 0) -> Gpu:
    """Name and compute capability of CUDA device ``index`` (after CUDA_VISIBLE_DEVICES)."""
    lib = _driver_library()
    _call(lib, "cuInit", ctypes.c_uint(0))
    count = ctypes.c_int(0)
    _call(lib, "cuDeviceGetCount", ctypes.byref(count))
    if count.value <= index:
        raise BackendError(f"no CUDA device {index} (the driver sees {count.value} GPU(s))")
    device = ctypes.c_int(0)
    _call(lib, "cuDeviceGet", ctypes.byref(device), ctypes.c_int(index))
    name = ctypes.create_string_buffer(256)
    _call(lib, "cuDeviceGetName", name, ctypes.c_int(len(name)), device)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    _call(lib, "cuDeviceGetAttribute", ctypes.byref(major), ctypes.c_int(_CC_MAJOR), device)
    _call(lib, "cuDeviceGetAttribute", ctypes.byref(minor), ctypes.c_int(_CC_MINOR), device)
    return Gpu(name.value.decode(errors="replace"), f"{major.value}.{minor.value}", index)


def import_tensorrt() -> ModuleType:
    """``tensorrt``, or BackendError saying why it cannot be used."""
    try:
        import tensorrt as trt
    except Exception as e:  # missing, or its shared libraries fail to load
        what = "is not installed" if isinstance(e, ModuleNotFoundError) else f"fails to import: {e}"
        raise BackendError(f"tensorrt {what}") from e
    if _version(trt.__version__) < MIN_TENSORRT:
        raise BackendError(
            f"TensorRT {trt.__version__} is too old; {'.'.join(map(str, MIN_TENSORRT))} or "
            "newer is needed"
        )
    return trt


def import_cudart() -> ModuleType:
    """cuda-python's runtime bindings (``cuda.bindings.runtime``; ``cuda.cudart`` before
    cuda-python 12.6), or BackendError."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as e:
            raise BackendError("cuda-python is not installed") from e
    return cudart


def require_tensorrt(what: str = "the tensorrt backend") -> TensorRTStack:
    """Everything TensorRT work needs, or one BackendError listing every missing piece."""
    problems, hints = [], []
    trt = cudart = gpu = None
    try:
        trt = import_tensorrt()
    except BackendError as e:
        problems.append(str(e))
    try:
        cudart = import_cudart()
    except BackendError as e:
        problems.append(str(e))
    if problems:
        hints.append(INSTALL_HINT)
    try:
        gpu = probe_gpu()
    except BackendError as e:
        problems.append(str(e))
        hints.append(GPU_HINT)
    if problems:
        fix = "; ".join(hints)
        raise BackendError(f"{what} cannot run here: {'; '.join(problems)}. To fix: {fix}")
    platform = Platform(trt.__version__, gpu.name, gpu.compute_capability)
    return TensorRTStack(trt, cudart, platform)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


__all__ = [
    "GPU_HINT",
    "INSTALL_HINT",
    "MIN_TENSORRT",
    "Gpu",
    "TensorRTStack",
    "import_cudart",
    "import_tensorrt",
    "probe_gpu",
    "require_tensorrt",
]
