"""Build one TensorRT engine from one ONNX graph through the TensorRT Python API (10.x, 11.x).

The ``tensorrt`` module is passed in (imported by the caller only when a build is requested),
so importing this file needs no TensorRT. Steps, with the API they use:

1. ``Builder(logger).create_network(1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED)``:
   strongly typed — every tensor's type comes from the graph (the fp32/fp16/bf16 ONNX with its
   explicit Casts). Required on 10.x for our mixed graphs; on 11.x strong typing is always on
   and the flag is accepted and ignored, so one code path serves both
   (docs.nvidia.com/deeplearning/tensorrt/11.0.0/api/migration/tensorrt-10x-to-11x.html,
   "Strongly Typed Networks Are Now Required"). No precision builder flag is ever set
   (BuilderFlag.FP16/BF16/INT8 do not exist in 11.x).
2. ``OnnxParser(network, logger).parse_from_file(path)`` — from the file, so external data
   (graphs over 2 GB) resolves beside it; every parser error is reported with its node.
3. ``IBuilderConfig``: ``builder_optimization_level`` (0..5, TensorRT's default 3),
   ``set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)`` when a workspace is given,
   ``BuilderFlag.TF32`` set for precision ``tf32`` and cleared otherwise (explicitly: fp32
   engines and the fp32 islands of fp16 graphs stay exact fp32), one optimization profile
   (``create_optimization_profile`` / ``set_shape(name, min, opt, max)`` /
   ``add_optimization_profile``), and the optional timing cache (``create_timing_cache(bytes)``
   / ``set_timing_cache(cache, ignore_mismatch=False)``; saved back after the build with
   ``get_timing_cache().serialize()``). A timing cache only records tactic timings for this
   device and TensorRT version (docs.nvidia.com/deeplearning/tensorrt/latest/performance/
   builder-performance.html, "Timing Cache"), so it is not part of the engine key.
4. ``build_serialized_network(network, config)`` → the plan (None on failure: the builder log's
   errors are raised). The plan is then deserialized once (``Runtime.deserialize_cuda_engine``)
   to check it loads and to read ``device_memory_size_v2`` — the scratch a context reserves at
   the profile maximum, recorded in engines.json.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from v2a_runtime.backends.tensorrt.cache import EngineKey
from v2a_runtime.media.files import atomic_output

_LOGGER = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """TensorRT could not parse or build a graph; the message carries TensorRT's own errors."""


@dataclass(frozen=True)
class BuiltEngine:
    plan: bytes
    seconds: float  # parse + build (not the deserialization check)
    device_memory_bytes: int  # ICudaEngine.device_memory_size_v2
    log: tuple[str, ...]  # "[W] message" lines, INFO and above (VERBOSE with verbose=True)
    warnings: int


def _collecting_logger(trt: ModuleType, verbose: bool):
    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[str] = []
            self.errors: list[str] = []
            self.warnings = 0

        def log(self, severity, msg) -> None:
            s = trt.ILogger.Severity
            tag = {
                s.INTERNAL_ERROR: "F", s.ERROR: "E", s.WARNING: "W", s.INFO: "I", s.VERBOSE: "V"
            }.get(severity, "?")  # fmt: skip
            if tag == "V" and not verbose:
                return
            self.lines.append(f"[{tag}] {msg}")
            if tag in ("F", "E"):
                self.errors.append(str(msg))
                _LOGGER.error("TensorRT: %s", msg)
            elif tag == "W":
                self.warnings += 1
                _LOGGER.warning("TensorRT: %s", msg)

        def tail(self) -> str:
            return " | ".join(self.errors[-3:]) or "no error message from TensorRT"

    return Logger()


def build_engine(
    trt: ModuleType,
    onnx_path: str | Path,
    key: EngineKey,
    *,
    timing_cache: str | Path | None = None,
    verbose: bool = False,
) -> BuiltEngine:
    """Parse ``onnx_path`` and build the plan ``key`` describes (precision, profile, options)."""
    logger = _collecting_logger(trt, verbose)
    started = time.perf_counter()
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise BuildError(
            f"{key.component}: TensorRT cannot parse {onnx_path}: {_parser_errors(parser)}"
        )
    config = _config(trt, builder, network, key, logger)
    cache = _attach_timing_cache(config, timing_cache)
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        raise BuildError(f"{key.component}: TensorRT build failed after {seconds:.0f} s: "
                         f"{logger.tail()}")  # fmt: skip
    plan = bytes(memoryview(serialized))
    if cache is not None:
        _save_timing_cache(config, Path(timing_cache))
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise BuildError(f"{key.component}: the new plan does not deserialize: {logger.tail()}")
    scratch = int(engine.device_memory_size_v2)
    return BuiltEngine(plan, seconds, scratch, tuple(logger.lines), logger.warnings)


def _parser_errors(parser) -> str:
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node_name = getattr(err, "node_name", lambda: "")()
        op = getattr(err, "node_operator", lambda: "")()
        where = f"node {err.node()}" + (f" {node_name!r}" if node_name else "")
        where += f" ({op})" if op else ""
        out.append(f"{where}: {err.desc()}")
    return "; ".join(out[:3]) + (f" (+{len(out) - 3} more)" if len(out) > 3 else "")


def _config(trt: ModuleType, builder, network, key: EngineKey, logger):
    config = builder.create_builder_config()
    config.builder_optimization_level = key.opt_level
    if key.workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, key.workspace_bytes)
    if key.precision == "tf32":
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    profile = builder.create_optimization_profile()
    wanted = {p.name: p for p in key.profiles[0]}
    if sorted(names) != sorted(wanted):
        raise BuildError(
            f"{key.component}: graph inputs {names} differ from the manifest's {list(wanted)}; "
            "re-export the bundle"
        )
    for name in names:
        p = wanted[name]
        profile.set_shape(name, p.min, p.opt, p.max)
    if config.add_optimization_profile(profile) < 0:
        raise BuildError(f"{key.component}: TensorRT rejects the profile: {logger.tail()}")
    return config


def _attach_timing_cache(config, path: str | Path | None):
    if path is None:
        return None
    path = Path(path)
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None and data:
        _LOGGER.warning("timing cache %s is unreadable; starting an empty one", path)
        cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        _LOGGER.warning("timing cache %s does not match this TensorRT/GPU; not used", path)
        return None
    return cache


def _save_timing_cache(config, path: Path) -> None:
    data = bytes(memoryview(config.get_timing_cache().serialize()))
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


__all__ = ["BuildError", "BuiltEngine", "build_engine"]
