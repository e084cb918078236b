"""Exact rewrites of an exported graph for onnxruntime's CPU kernels.

The exporter writes 1-D convolutions as ``Conv`` on (B, C, T) tensors. onnxruntime's CPU
provider runs those as im2col + GEMM, one group at a time, while 2-D convolutions get its
NCHWc layout pass (channels in blocks of 16, MLAS's direct and depthwise kernels). A
depthwise ``ConvTranspose`` has no fast CPU kernel at all. BigVGAN's anti-aliased activations
consist of exactly these: a depthwise ×2 transposed convolution and a depthwise stride-2
convolution with 12 taps around every SnakeBeta. On small_16k (random weights, 8 s, one
thread) they made onnxruntime's vocoder 1.18× slower than PyTorch's; the rewrites below took
24.3 s to 18.5 s (see docs/benchmarks.md, "What was changed").

1. :func:`polyphase_transposed` — a depthwise transposed convolution with stride s and K taps
   (``group`` = channels, one filter per channel, K divisible by s) becomes s depthwise
   convolutions of K/s taps, one per output phase, interleaved:
   ``y[s·m + p] = Σ_j x[m − j] · h[p + s·j]`` (zero outside the input, as the transposed
   convolution); the phase outputs are stacked on a new last axis and reshaped.
2. :func:`conv1d_as_conv2d` — every 1-D ``Conv`` with a constant weight becomes
   ``Unsqueeze(axis 2)`` → 2-D ``Conv`` (kernel 1 × k, same strides, dilations, pads, group,
   bias) → ``Squeeze(axis 2)``.

Both compute the same sums in a different order (float32 differences of a few ulp; the parity
gate runs on the rewritten graph). TensorRT and the CUDA provider accept both forms.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnx_ir.convenience import replace_nodes_and_values

_LOGGER = logging.getLogger(__name__)


def rewrite_for_cpu(model: ir.Model) -> dict[str, int]:
    """Apply both rewrites to ``model``'s main graph in place; returns the count of each."""
    graph = model.graph
    counts = {
        "polyphase_transposed": polyphase_transposed(graph),
        "conv1d_as_conv2d": conv1d_as_conv2d(graph),
    }
    _LOGGER.debug("cpu rewrites: %s", counts)
    return counts


def polyphase_transposed(graph: ir.Graph) -> int:
    """Rewrite every depthwise 1-D ``ConvTranspose`` with stride > 1 (see the module doc)."""
    count = 0
    for node in list(graph):
        w = _weight(node, "ConvTranspose")
        if w is None:
            continue
        channels, per_group, taps = w.shape  # (C_in, C_out / group, K)
        stride = _ints(node, "strides", [1])[0]
        if not (
            _int(node, "group", 1) == channels > 1
            and per_group == 1
            and stride > 1
            and taps % stride == 0
            and not any(_ints(node, "pads", [0, 0]))
            and not any(_ints(node, "output_padding", [0]))
            and _ints(node, "dilations", [1]) == [1]
            and "output_shape" not in node.attributes
        ):
            continue
        name = node.name or f"convtranspose_{count}"
        j = taps // stride
        x, bias = node.inputs[0], (node.inputs[2] if len(node.inputs) > 2 else None)
        last = _constant(graph, "v2a_cpu_last_axis", np.array([-1], np.int64))
        new, phases = [], []
        for p in range(stride):
            h = np.ascontiguousarray(w[:, :, p::stride][:, :, ::-1])  # (C, 1, K/s), flipped
            weight = _constant(graph, f"{name}_phase{p}_weight", h)
            conv = ir.node(
                "Conv",
                [x, weight] + ([bias] if bias is not None else []),
                {
                    "group": channels,
                    "kernel_shape": [j],
                    "pads": [j - 1, j - 1],
                    "strides": [1],
                    "dilations": [1],
                },
                name=f"{name}_phase{p}",
            )  # fmt: skip  (B, C, T + K/s − 1)
            stack = ir.node("Unsqueeze", [conv.outputs[0], last], name=f"{name}_phase{p}_axis")
            new += [conv, stack]
            phases.append(stack.outputs[0])  # (B, C, T + K/s − 1, 1)
        cat = ir.node("Concat", phases, {"axis": -1}, name=f"{name}_phases")  # (B, C, T', s)
        shape = _constant(graph, "v2a_cpu_interleave_shape", np.array([0, 0, -1], np.int64))
        out = ir.node("Reshape", [cat.outputs[0], shape], name=f"{name}_interleave")  # (B, C, s·T')
        new += [cat, out]
        old_weight = node.inputs[1]
        replace_nodes_and_values(graph, node, [node], new, [node.outputs[0]], [out.outputs[0]])
        _drop_if_unused(graph, old_weight)
        count += 1
    return count


def conv1d_as_conv2d(graph: ir.Graph) -> int:
    """Rewrite every 1-D ``Conv`` with a constant weight as a 2-D one over (B, C, 1, T)."""
    count = 0
    weights4d: dict[int, ir.Value] = {}  # shared weights stay shared
    for node in list(graph):
        w = _weight(node, "Conv")
        if w is None:
            continue
        name = node.name or f"conv1d_{count}"
        axis = _constant(graph, "v2a_cpu_axis2", np.array([2], np.int64))
        key = id(node.inputs[1])
        if key not in weights4d:
            weights4d[key] = _constant(graph, f"{name}_weight_2d", w[:, :, None, :])  # (O, I, 1, k)
        p0, p1 = _ints(node, "pads", [0, 0])
        lift = ir.node("Unsqueeze", [node.inputs[0], axis], name=f"{name}_lift")  # (B, C, 1, T)
        conv = ir.node(
            "Conv",
            [lift.outputs[0], weights4d[key], *node.inputs[2:]],
            {
                "group": _int(node, "group", 1),
                "kernel_shape": [1, w.shape[2]],
                "strides": [1, *_ints(node, "strides", [1])],
                "dilations": [1, *_ints(node, "dilations", [1])],
                "pads": [0, p0, 0, p1],
            },
            name=name,
        )  # (B, O, 1, T_out)
        drop = ir.node("Squeeze", [conv.outputs[0], axis], name=f"{name}_drop")  # (B, O, T_out)
        old_weight = node.inputs[1]
        new = [lift, conv, drop]
        replace_nodes_and_values(graph, node, [node], new, [node.outputs[0]], [drop.outputs[0]])
        _drop_if_unused(graph, old_weight)
        count += 1
    return count


# --- helpers ----------------------------------------------------------------------------------


def _weight(node: ir.Node, op_type: str) -> np.ndarray | None:
    """The constant 3-D weight of a plain 1-D ``op_type`` node (explicit pads), else None."""
    if node.op_type != op_type or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return None
    auto_pad = node.attributes.get("auto_pad")
    if auto_pad is not None and auto_pad.value not in ("NOTSET", b"NOTSET"):
        return None
    value = node.inputs[1]
    tensor = value.const_value if value is not None else None
    if tensor is None or tensor.dtype != ir.DataType.FLOAT:
        return None
    w = tensor.numpy()
    return w if w.ndim == 3 else None


def _int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else int(attr.value)


def _ints(node: ir.Node, name: str, default: list[int]) -> list[int]:
    attr = node.attributes.get(name)
    return list(default) if attr is None else [int(v) for v in attr.value]


def _constant(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """The initializer ``name`` (registered on first use)."""
    if name in graph.initializers:
        return graph.initializers[name]
    value = ir.val(name, const_value=ir.tensor(np.ascontiguousarray(array), name=name))
    graph.register_initializer(value)
    return value


def _drop_if_unused(graph: ir.Graph, value: ir.Value) -> None:
    """Remove a replaced weight from the initializers once nothing reads it."""
    if (
        value.name in graph.initializers
        and graph.initializers[value.name] is value
        and not value.uses()
        and not value.is_graph_output()
    ):
        graph.initializers.pop(value.name)


__all__ = ["conv1d_as_conv2d", "polyphase_transposed", "rewrite_for_cpu"]
