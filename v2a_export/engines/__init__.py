"""TensorRT engines for a bundle: profiles from the component descriptors (profiles.py), the
build plan against the engine cache (cache.py, build.py), the TensorRT build itself
(builder.py) and ``v2a-export build-engines`` (commands.py). Only builder.py touches
TensorRT, and only when called; the key format and engines.json live in
``v2a_runtime.backends.tensorrt.cache`` so the runtime refuses stale engines by the same rules."""
