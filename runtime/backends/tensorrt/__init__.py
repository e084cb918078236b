"""The TensorRT backend: a bundle's prebuilt engines behind the :class:`Session` protocol.

:mod:`.session` runs the engines; :mod:`.cache` keys them and reads ``engines/engines.json``
(pure Python, shared with the builder of ``v2a-export build-engines``); :mod:`.env` checks the
machine (tensorrt, cuda-python, a GPU); :mod:`.cudart` wraps cuda-python's runtime calls;
:mod:`.sampler` is the sampling loop with the conditions resident on the device.
Nothing here imports tensorrt or cuda-python until an engine is loaded.
"""

from .sampler import TrtSampler
from .session import EngineSet, TrtSession, load_engines

__all__ = ["EngineSet", "TrtSampler", "TrtSession", "load_engines"]
