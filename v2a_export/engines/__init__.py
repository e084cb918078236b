"""TensorRT engines for a bundle: profiles from the component descriptors (profiles.py), the
build plan against the engine cache (cache.py, build.py) and the TensorRT build itself
(builder.py); the command is :mod:`v2a_export.cli.engines`. Only builder.py touches
TensorRT, and only when called; the key format and engines.json live in
``v2a_runtime.backends.tensorrt.cache`` so the runtime refuses stale engines by the same rules."""
