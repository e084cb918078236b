"""Export one wrapped component to ONNX, driven by its descriptor.

Exporter: ``torch.onnx.export(dynamo=True)`` with ``torch.export`` dynamic shapes named after
the glossary dims. The TorchScript exporter cannot export these networks with dynamic sizes
(it turns ``x.shape[-1]`` of a LayerNorm into a graph value and refuses it); the dynamo exporter
traces symbolic sizes, so RoPE tables and every reshape follow the runtime sizes. Opset 18 (the
dynamo exporter's minimum) is parsed by TensorRT 10 and 11 and by onnxruntime.

After export, on the in-memory graph:

1. the graph I/O dims get the contract's names (the exporter writes ``2*B`` for the
   conditioner's rows, ``2*L`` for mel frames); a dim the contract declares dynamic but the
   exporter made static is an :class:`ExportError` (silent specialisation, pytorch#152018);
2. **pinned constants**: the exporter folds size-independent subgraphs with numpy, whose float32
   ``pow`` differs from PyTorch's by up to 2 ulp. For the v2 time embedding (frequencies up to
   1e4) that moves the phase by ~5e-4 rad and the velocity by ~3e-5 relative. Tables the torch
   network computes from constants alone (time and RoPE frequencies) are therefore written with
   the values PyTorch computes (:func:`pin_constants`), so the graph matches the reference
   bit for bit where it can;
3. **CPU rewrites** (:mod:`v2a_export.export.cpu_rewrites`): depthwise transposed convolutions
   become polyphase depthwise convolutions and 1-D convolutions 2-D ones, so onnxruntime's CPU
   provider runs its fast kernels (BigVGAN's vocoder: 1.3× faster). Exact up to summation order.
4. **uint8 inputs feed a Cast only** (:func:`v2a_export.export.trt_compat.cast_inputs_first`):
   the networks cast pixels first, and Shape nodes the exporter puts on a uint8 input read the
   cast tensor instead, because TensorRT allows no other reader of a uint8 tensor.

Graphs whose initializers exceed 2 GB are saved with external data (``<file>.data``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from v2a_export.export.cpu_rewrites import rewrite_for_cpu
from v2a_export.export.descriptors import Descriptor
from v2a_export.export.trt_compat import cast_inputs_first

_LOGGER = logging.getLogger(__name__)

OPSET = 18
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3  # protobuf's 2 GB limit (onnx/onnx#4394)
PIN_RTOL = 1e-5  # a folded table within this of the torch values is the same table


_NOISY_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")


class ExportError(RuntimeError):
    """The exporter failed or produced a graph that breaks the contract."""


@dataclass(frozen=True)
class ExportResult:
    component: str
    path: Path
    bytes: int  # .onnx plus external data
    external_data: Path | None
    seconds: float
    opset: int
    nodes: int
    pinned: tuple[str, ...]  # constants replaced by PyTorch's values


def export_component(
    module: nn.Module,
    descriptor: Descriptor,
    path: str | Path,
    example: Mapping[str, np.ndarray],
    *,
    pins: Mapping[str, np.ndarray] | None = None,
    opset: int = OPSET,
) -> ExportResult:
    """Export ``module`` (a wrapper whose forward takes the descriptor's inputs in order) to
    ``path``. ``example`` gives the trace inputs: every dynamic size must be >= 2 (torch.export
    specialises sizes 0 and 1). ``pins``: label -> table the graph must hold exactly."""
    path = Path(path)
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in descriptor.input_names)
    small = {
        f"{t.name}[{i}]": args[k].shape[i]
        for k, t in enumerate(descriptor.inputs)
        for i, d in enumerate(t.shape)
        if isinstance(d, str) and args[k].shape[i] < 2
    }
    if small:
        raise ValueError(f"{descriptor.name}: trace sizes must be >= 2 on dynamic axes: {small}")
    started = time.perf_counter()
    program = _export(module, descriptor, args, opset)
    _name_dims(program.model, descriptor)
    pinned = pin_constants(program.model, pins or {})
    rewrite_for_cpu(program.model)
    cast_inputs_first(program.model)
    program.model.metadata_props["v2a.component"] = descriptor.name
    program.model.metadata_props["v2a.contract"] = "docs/contract.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    size = sum(
        v.const_value.nbytes
        for v in program.model.graph.initializers.values()
        if v.const_value is not None
    )
    external = size > EXTERNAL_DATA_THRESHOLD
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    with _quiet():
        program.save(path, external_data=external)
    seconds = time.perf_counter() - started
    total = path.stat().st_size + (data.stat().st_size if external else 0)
    nodes = sum(1 for _ in program.model.graph.all_nodes())
    _LOGGER.info("%s: %d nodes, %.1f MB, %.1f s", descriptor.name, nodes, total / 1e6, seconds)
    return ExportResult(
        component=descriptor.name,
        path=path,
        bytes=total,
        external_data=data if external else None,
        seconds=seconds,
        opset=opset,
        nodes=nodes,
        pinned=pinned,
    )


def _export(module: nn.Module, descriptor: Descriptor, args: tuple, opset: int):
    dims: dict[str, torch.export.Dim] = {}
    dynamic_shapes = {}
    for t in descriptor.inputs:
        axes = {}
        for i, d in enumerate(t.shape):
            if isinstance(d, str):
                dims.setdefault(d, torch.export.Dim(d, min=1))
                axes[i] = dims[d]
        dynamic_shapes[t.name] = axes or None
    try:
        with _quiet(), torch.no_grad():
            return torch.onnx.export(
                module,
                args,
                input_names=list(descriptor.input_names),
                output_names=list(descriptor.output_names),
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                dynamo=True,
                optimize=True,  # onnxscript's constant folding and dead-code removal
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types; keep the first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{descriptor.name}: torch.onnx.export failed: {first}") from e


def _name_dims(model, descriptor: Descriptor) -> None:
    """Give graph inputs/outputs the contract's dim names; refuse specialised dims."""
    graph = model.graph
    for kind, values, specs in (
        ("input", graph.inputs, descriptor.inputs),
        ("output", graph.outputs, descriptor.outputs),
    ):
        names = [v.name for v in values]
        if names != [t.name for t in specs]:
            raise ExportError(
                f"{descriptor.name}: graph {kind}s are {names}, expected {[t.name for t in specs]}"
            )
        for value, spec in zip(values, specs, strict=True):
            have = list(value.shape.dims) if value.shape is not None else None
            if have is None or len(have) != len(spec.shape):
                raise ExportError(
                    f"{descriptor.name}: {kind} {spec.name} has shape {have}, expected rank "
                    f"{len(spec.shape)} {list(spec.shape)}"
                )
            for want, got in zip(spec.shape, have, strict=True):
                if isinstance(want, str) and isinstance(got, int):
                    raise ExportError(
                        f"{descriptor.name}: {kind} {spec.name} dim {want!r} was specialised "
                        f"to {got} by the exporter; it must stay dynamic"
                    )
                if isinstance(want, int) and isinstance(got, int) and want != got:
                    raise ExportError(
                        f"{descriptor.name}: {kind} {spec.name} has static size {got} where "
                        f"the contract says {want}"
                    )
            value.shape = type(value.shape)(list(spec.shape))


def pin_constants(model, pins: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """Replace every float32 initializer that equals a pinned table to ``PIN_RTOL`` (any
    shape with the same number of elements) by the table's exact values. Returns the labels
    that matched at least one initializer."""
    import onnx_ir as ir

    matched = []
    initializers = list(model.graph.initializers.values())
    for label, table in pins.items():
        want = np.ascontiguousarray(table, dtype=np.float32).ravel()
        hits = 0
        for value in initializers:
            tensor = value.const_value
            if tensor is None or tensor.dtype != ir.DataType.FLOAT or tensor.size != want.size:
                continue
            have = tensor.numpy().ravel()
            if np.allclose(have, want, rtol=PIN_RTOL, atol=0.0):
                shape = tuple(tensor.shape.numpy())
                value.const_value = ir.tensor(want.reshape(shape), name=value.name)
                hits += 1
        if hits:
            matched.append(label)
        _LOGGER.debug("pinned %s in %d initializer(s)", label, hits)
    return tuple(matched)


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress and registry warnings; the library stays silent."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if sink.getvalue().strip():
            _LOGGER.debug("exporter output:\n%s", sink.getvalue())


__all__ = ["EXTERNAL_DATA_THRESHOLD", "OPSET", "ExportError", "ExportResult", "export_component"]
