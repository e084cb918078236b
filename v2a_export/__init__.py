"""v2a_export: the torch side of v2a-export.

Builds artifacts: checkpoint-compatible MMAudio-family networks, ONNX export with parity
gates, mixed precision, TensorRT engines, and the trainer of the default model. It imports
``v2a_runtime`` for the bundle format, never the other way round.

This file imports nothing heavy.
"""

__version__ = "0.1.0"
