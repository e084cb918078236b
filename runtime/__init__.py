"""v2a_runtime: the torch-free runtime of v2a-export.

Decodes video, runs the exported graphs (onnxruntime or TensorRT), drives the few-step
flow-matching sampler, watermarks every output and muxes the audio back into the video.
Only numpy, onnxruntime, av, soundfile, scipy, ftfy and click are needed; torch never is.
"""

__version__ = "0.1.0"
