"""The onnxruntime CUDA backend: IO-bound sessions (:mod:`.session`) and the device-resident
sampling loop with CUDA-graph capture (:mod:`.loop`)."""

from .loop import DeviceSampler
from .session import BoundSession, CudaOptions, cuda_available

__all__ = ["BoundSession", "CudaOptions", "DeviceSampler", "cuda_available"]
