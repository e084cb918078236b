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
   convolution); the phase outputs are stacked on a new last axis and reshaped. BigVGAN's
   UpSample1d goes on with ``× ratio`` and a crop ``[a : −b]``: a power-of-two scale moves
   into the phase weights (bit-exact), the crop into the phase convs' pads, so the cropped
   samples are never computed (phases that start on different samples share one input
   through a zero tap).
2. :func:`crop_padding` — a ``Slice`` that only cuts into a ``Pad``'s last-axis padding
   becomes a smaller ``Pad`` (where 1. left BigVGAN's edge pad 5 + crop 2, one edge pad 3).
3. :func:`conv1d_as_conv2d` — every 1-D ``Conv`` with a constant weight becomes
   ``Unsqueeze(axis 2)`` → 2-D ``Conv`` (kernel 1 × k, same strides, dilations, pads, group,
   bias) → ``Squeeze(axis 2)``.
4. :func:`cancel_squeeze_unsqueeze` — the ``Squeeze`` → ``Unsqueeze`` pairs that 3. leaves
   between two convs go, so onnxruntime keeps the tensor in its blocked layout between them.
5. :func:`square_as_mul` — ``Pow(x, 2)`` becomes ``Mul(x, x)`` (SnakeBeta's sin²).
6. :func:`slice_before_transpose`, :func:`squeeze_before_transpose` — a Transpose followed
   by a Slice, or by a Squeeze of size-1 axes, slices or squeezes first and transposes the
   smaller tensor (MMAudio's q/k/v head split: a 4-D instead of a 5-D transpose).
7. :func:`qkv_outermost` — before 6.: the qkv projection's columns are reordered so q, k
   and v come out as contiguous blocks rather than interleaved element by element.
8. :func:`split_projection` — a projection whose output is split on its last axis becomes
   one projection per chunk (the adaLN modulation).

1. and 3. compute the same sums in a different order (float32 differences of a few ulp; the
parity gate runs on the rewritten graph); 2., 4. to 8. and the folds in 1. change no arithmetic
(small_16k's vocoder and denoiser give the same bits; onnxruntime may still fuse a rewritten
graph differently: sync_visual differs by rel L2 3.7e-7).
On small_16k (one thread) 2., 4., 5. and the folds took the vocoder's onnxruntime time 8 %
down, 5. to 8. the denoiser's 4 % (docs/benchmarks.md). TensorRT and the CUDA provider
accept every form.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnx_ir.convenience import replace_all_uses_with, replace_nodes_and_values

_LOGGER = logging.getLogger(__name__)


def rewrite_for_cpu(model: ir.Model) -> dict[str, int]:
    """Apply the rewrites to ``model``'s main graph in place; returns the count of each."""
    graph = model.graph
    counts = {
        "polyphase_transposed": polyphase_transposed(graph),
        "crop_padding": crop_padding(graph),
        "conv1d_as_conv2d": conv1d_as_conv2d(graph),
        "squeeze_unsqueeze": cancel_squeeze_unsqueeze(graph),
        "square_as_mul": square_as_mul(graph),
        "split_projection": split_projection(graph),
        "qkv_outermost": qkv_outermost(graph),
        "slice_before_transpose": slice_before_transpose(graph),
        "squeeze_before_transpose": squeeze_before_transpose(graph),
    }
    _LOGGER.debug("cpu rewrites: %s", counts)
    return counts


def polyphase_transposed(graph: ir.Graph) -> int:
    """Rewrite every depthwise 1-D ``ConvTranspose`` with stride > 1 (see the module doc)."""
    count = 0
    for node in list(graph):
        w = _weight(node, "ConvTranspose")
        if w is None or not _is_plain_depthwise_upsample(node, w):
            continue
        name = node.name or f"convtranspose_{count}"
        channels, _, taps = w.shape  # (C, 1, K)
        stride = _ints(node, "strides", [1])[0]
        x, bias = node.inputs[0], (node.inputs[2] if len(node.inputs) > 2 else None)
        scale_node, scale = _power_of_two_scale(node.outputs[0])
        tail = scale_node.outputs[0] if scale_node is not None else node.outputs[0]
        crop_node, crop = _static_crop(tail, taps, stride)
        old = [node] + [n for n in (scale_node, crop_node) if n is not None]
        if scale != 1.0 and bias is not None:
            bias = _constant(graph, f"{name}_bias_scaled", bias.const_value.numpy() * scale)
        left, right, layout = _phase_layout(taps, stride, crop)
        new: list[ir.Node] = []
        source = _crop_input(graph, x, left, right, f"{name}_input", new)
        phases = []
        for q, (p, lead, trail) in enumerate(layout):
            h = w[:, :, p::stride][:, :, ::-1] * np.float32(scale)  # (C, 1, K/s), flipped
            h = np.pad(h, [(0, 0), (0, 0), (lead, trail)])  # zero taps align the phases
            weight = _constant(graph, f"{name}_phase{q}_weight", h)
            conv = ir.node(
                "Conv",
                [source, weight] + ([bias] if bias is not None else []),
                {
                    "group": channels,
                    "kernel_shape": [h.shape[2]],
                    "pads": [max(left, 0), max(right, 0)],
                    "strides": [1],
                    "dilations": [1],
                },
                name=f"{name}_phase{q}",
            )  # (B, C, T_q)
            last = _constant(graph, "v2a_cpu_last_axis", np.array([-1], np.int64))
            stack = ir.node("Unsqueeze", [conv.outputs[0], last], name=f"{name}_phase{q}_axis")
            new += [conv, stack]
            phases.append(stack.outputs[0])  # (B, C, T_q, 1)
        cat = ir.node("Concat", phases, {"axis": -1}, name=f"{name}_phases")  # (B, C, T_q, s)
        shape = _constant(graph, "v2a_cpu_interleave_shape", np.array([0, 0, -1], np.int64))
        out = ir.node("Reshape", [cat.outputs[0], shape], name=f"{name}_interleave")
        # (B, C, s·T_q)
        new += [cat, out]
        old_weight, old_bias = node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else None
        replace_nodes_and_values(graph, node, old, new, [old[-1].outputs[0]], [out.outputs[0]])
        for value in (old_weight, old_bias):
            if value is not None:
                _drop_if_unused(graph, value)
        count += 1
    return count


def _is_plain_depthwise_upsample(node: ir.Node, w: np.ndarray) -> bool:
    channels, per_group, taps = w.shape  # (C_in, C_out / group, K)
    stride = _ints(node, "strides", [1])[0]
    return (
        _int(node, "group", 1) == channels > 1
        and per_group == 1
        and stride > 1
        and taps % stride == 0
        and not any(_ints(node, "pads", [0, 0]))
        and not any(_ints(node, "output_padding", [0]))
        and _ints(node, "dilations", [1]) == [1]
        and "output_shape" not in node.attributes
    )


def _power_of_two_scale(value: ir.Value) -> tuple[ir.Node | None, float]:
    """The ``Mul`` by a constant scalar ±2^k that is ``value``'s only use, and that scalar.

    Scaling by a power of two is exact in float32, so it moves into the weights bit for bit.
    """
    node = _only_consumer(value, "Mul")
    if node is None:
        return None, 1.0
    other = node.inputs[1] if node.inputs[0] is value else node.inputs[0]
    c = _scalar(other)
    if c is None or c == 0.0 or np.frexp(c)[0] not in (0.5, -0.5):
        return None, 1.0
    return node, c


def _static_crop(value: ir.Value, taps: int, stride: int) -> tuple[ir.Node | None, tuple[int, int]]:
    """The ``Slice`` ``[a : -b]`` on the last axis that is ``value``'s only use, and (a, b).

    Only crops that leave every output phase the same length, ``(K − s − a − b) % s == 0``.
    """
    node = _only_consumer(value, "Slice")
    crop = _slice_last_axis(node, 3) if node is not None and node.inputs[0] is value else None
    if crop is None or (taps - stride - crop[0] - crop[1]) % stride:
        return None, (0, 0)
    return node, crop


def _phase_layout(
    taps: int, stride: int, crop: tuple[int, int]
) -> tuple[int, int, list[tuple[int, int, int]]]:
    """The pads (l, r) of the phase convs, and per output phase q: the filter phase p and the
    zero taps before and after its flipped K/s taps.

    Uncropped output y[s·m + p] = Σ_j x[m − j] · h[p + s·j]; cropped out[i] = y[a + i]; so
    out[s·n + q] = y_p[d + n] with p = (a + q) mod s and d = (a + q) div s. A conv of the
    flipped K/s taps with pads (l_q, r_q) = (K/s − 1 − d, c + d) gives exactly those values,
    T + c of them, c = (K − s − a − b) / s. All phases share one input and pads
    (l, r) = (max l_q, max r_q): phase q's filter gets l − l_q zeros in front and r − r_q
    behind (an exact shift). A negative pad crops the input itself (:func:`_crop_input`).
    """
    a, b = crop
    j, c = taps // stride, (taps - stride - a - b) // stride
    pads = [(j - 1 - (a + q) // stride, c + (a + q) // stride) for q in range(stride)]
    left, right = max(p[0] for p in pads), max(p[1] for p in pads)
    layout = [((a + q) % stride, left - lq, right - rq) for q, (lq, rq) in enumerate(pads)]
    return left, right, layout


def _crop_input(
    graph: ir.Graph, x: ir.Value, left: int, right: int, name: str, new: list[ir.Node]
) -> ir.Value:
    """``x[-left : right]`` on the last axis where a pad is negative, else ``x`` itself."""
    if left >= 0 and right >= 0:
        return x
    start = _constant(graph, f"v2a_cpu_start_{max(-left, 0)}", np.array([max(-left, 0)], np.int64))
    end_value = right if right < 0 else np.iinfo(np.int64).max
    end = _constant(graph, f"v2a_cpu_end_{end_value}", np.array([end_value], np.int64))
    last = _constant(graph, "v2a_cpu_last_axis", np.array([-1], np.int64))
    node = ir.node("Slice", [x, start, end, last], name=name)  # (B, C, T − |l| − |r|)
    new.append(node)
    return node.outputs[0]


def crop_padding(graph: ir.Graph) -> int:
    """Fold a ``Slice`` that only cuts into a ``Pad``'s last-axis padding into a smaller Pad.

    ``Pad(x, l, r)[a : -b]`` with a ≤ l, b ≤ r is ``Pad(x, l − a, r − b)`` for the constant,
    edge and reflect modes (the padded values do not depend on how much is padded). Runs
    after :func:`polyphase_transposed`, whose input crops land on BigVGAN's edge padding.
    """
    count = 0
    for node in list(graph):
        pad = node.inputs[0].producer() if node.op_type == "Slice" and node.inputs else None
        if pad is None or pad.op_type != "Pad" or pad.domain not in ("", "ai.onnx"):
            continue
        pads = _ints_input(pad, 1)
        crop = _slice_last_axis(node, len(pads) // 2) if pads is not None else None
        mode = pad.attributes.get("mode")
        mode = "constant" if mode is None else mode.value
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if (
            pads is None
            or crop is None
            or mode not in ("constant", "edge", "reflect")
            or (len(pad.inputs) > 3 and pad.inputs[3] is not None)  # explicit axes
        ):
            continue
        rank, (a, b) = len(pads) // 2, crop
        if a > pads[rank - 1] or b > pads[-1]:
            continue
        new_pads = list(pads)
        new_pads[rank - 1] -= a
        new_pads[-1] -= b
        inputs = [pad.inputs[0], _constant(graph, f"v2a_cpu_pads_{'_'.join(map(str, new_pads))}",
                                           np.array(new_pads, np.int64))]  # fmt: skip
        if len(pad.inputs) > 2 and pad.inputs[2] is not None:
            inputs.append(pad.inputs[2])
        smaller = ir.node("Pad", inputs, {"mode": mode}, name=(node.name or "crop") + "_pad")
        _swap(graph, node, smaller)
        if not any(o.uses() or o.is_graph_output() for o in pad.outputs):
            graph.remove(pad, safe=True)
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


def cancel_squeeze_unsqueeze(graph: ir.Graph) -> int:
    """``Unsqueeze(Squeeze(x, axes), axes)`` is ``x``: readers of the Unsqueeze read ``x``.

    :func:`conv1d_as_conv2d` wraps every conv in Unsqueeze/Squeeze, so two convs in a row
    meet as Squeeze → Unsqueeze; onnxruntime's NCHWc pass does not look through that pair and
    reorders the tensor out of and back into its blocked layout between them.
    """
    count = 0
    for node in list(graph):
        squeeze = node.inputs[0].producer() if node.op_type == "Unsqueeze" and node.inputs else None
        if squeeze is None or squeeze.op_type != "Squeeze" or len(squeeze.inputs) < 2:
            continue
        axes = _ints_input(node, 1)
        if axes is None or axes != _ints_input(squeeze, 1) or node.outputs[0].is_graph_output():
            continue
        replace_all_uses_with(node.outputs[0], squeeze.inputs[0])
        graph.remove(node, safe=True)
        if not squeeze.outputs[0].uses() and not squeeze.outputs[0].is_graph_output():
            graph.remove(squeeze, safe=True)
        count += 1
    return count


def square_as_mul(graph: ir.Graph) -> int:
    """``Pow(x, 2)`` becomes ``Mul(x, x)`` (the same correctly rounded value, half the time on
    onnxruntime's CPU kernels: BigVGAN's SnakeBeta squares a sine per sample)."""
    count = 0
    for node in list(graph):
        if node.op_type != "Pow" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
            continue
        x = node.inputs[0]
        if _scalar(node.inputs[1]) != 2.0 or x.dtype not in (ir.DataType.FLOAT, None):
            continue
        square = ir.node("Mul", [x, x], name=(node.name or f"pow_{count}") + "_square")
        _swap(graph, node, square)
        count += 1
    return count


def split_projection(graph: ir.Graph) -> int:
    """``Split(MatMul(x, W) + b, last axis)`` becomes one ``MatMul(x, W[:, chunk]) + b[chunk]``
    per output: the same dot products, and no copy of the (B, L, 6·C) adaLN modulation into
    six strided chunks (12 per denoiser step on small_16k)."""
    count = 0
    for node in list(graph):
        match = _split_projection_pattern(node)
        if match is None:
            continue
        matmul, add, sizes = match
        w = matmul.inputs[1].const_value.numpy()  # (C_in, Σ sizes)
        bias = add.inputs[1] if add.inputs[0] is matmul.outputs[0] else add.inputs[0]
        b = bias.const_value.numpy()
        name, new, start = node.name or f"split_{count}", [], 0
        for i, size in enumerate(sizes):
            cols = slice(start, start + size)
            wi = _constant(graph, f"{name}_w{i}", np.ascontiguousarray(w[:, cols]))
            bi = _constant(graph, f"{name}_b{i}", np.ascontiguousarray(b[cols]))
            mm = ir.node("MatMul", [matmul.inputs[0], wi], name=f"{name}_matmul{i}")
            new += [mm, ir.node("Add", [mm.outputs[0], bi], name=f"{name}_add{i}")]
            start += size
        outs = [n.outputs[0] for n in new[1::2]]  # (…, size_i) each
        consts = (matmul.inputs[1], bias)
        replace_nodes_and_values(graph, node, [matmul, add, node], new, list(node.outputs), outs)
        for value in consts:
            _drop_if_unused(graph, value)
        count += 1
    return count


def _split_projection_pattern(node: ir.Node):
    """(MatMul, Add, chunk sizes) when ``node`` splits a biased projection's last axis."""
    if node.op_type != "Split" or not node.inputs or node.inputs[0] is None:
        return None
    shape = node.inputs[0].shape
    axis = _int(node, "axis", 0)
    if shape is None or axis not in (-1, len(shape) - 1):
        return None
    add = node.inputs[0].producer()
    if add is None or add.op_type != "Add" or _only_consumer(add.outputs[0], "Split") is not node:
        return None
    matmul = next((i.producer() for i in add.inputs if i.producer() is not None), None)
    bias = (
        add.inputs[1]
        if matmul is not None and add.inputs[0] is matmul.outputs[0]
        else add.inputs[0]
    )
    if matmul is None or matmul.op_type != "MatMul" or matmul.inputs[1].const_value is None:
        return None
    if _only_consumer(matmul.outputs[0], "Add") is not add or bias.const_value is None:
        return None
    w, b = matmul.inputs[1].const_value.numpy(), bias.const_value.numpy()
    if w.ndim != 2 or b.shape != (w.shape[1],):
        return None
    sizes = _ints_input(node, 1) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if sizes is None:
        n = len(node.outputs)
        if w.shape[1] % n:
            return None
        sizes = [w.shape[1] // n] * n
    return (matmul, add, sizes) if sum(sizes) == w.shape[1] else None


def qkv_outermost(graph: ir.Graph) -> int:
    """Reorder a projection's output columns from (h d k) to (k h d) where the k factor is
    then transposed to the front (einops ``b n (h d k) -> k b h n d``, MMAudio's qkv).

    Pattern: ``MatMul(x, W)`` (+ ``b``) → ``Reshape`` to (…, H, D, K) by a ``Concat`` whose
    last three pieces are constants → ``Transpose`` that puts axis −1 first. The columns of W
    and b are permuted so the Reshape gives (…, K, H, D) and the Transpose's perm is remapped:
    the same tensor, each element the same dot product. q, k and v are then contiguous blocks,
    which :func:`slice_before_transpose` slices without an element-by-element gather.
    """
    count = 0
    for node in list(graph):
        match = _qkv_pattern(node)
        if match is None:
            continue
        matmul, add, reshape, concat = match
        h, d, k = (
            _ints_input(concat, i)[0] for i in range(len(concat.inputs) - 3, len(concat.inputs))
        )
        name = node.name or f"qkv_{count}"
        weight = _khd(graph, matmul.inputs[1], (h, d, k), f"{name}_weight")
        new_mm = ir.node("MatMul", [matmul.inputs[0], weight], name=f"{name}_matmul")
        new = [new_mm]
        out = new_mm.outputs[0]
        if add is not None:
            bias = add.inputs[1] if add.inputs[0] is matmul.outputs[0] else add.inputs[0]
            new_add = ir.node(
                "Add", [out, _khd(graph, bias, (h, d, k), f"{name}_bias")], name=f"{name}_bias"
            )
            new.append(new_add)
            out = new_add.outputs[0]
        pieces = list(concat.inputs[:-3]) + [
            concat.inputs[-1],
            concat.inputs[-3],
            concat.inputs[-2],
        ]
        shape = ir.node("Concat", pieces, {"axis": 0}, name=f"{name}_shape")  # (…, K, H, D)
        view = ir.node("Reshape", [out, shape.outputs[0]], name=f"{name}_view")
        r = len(_ints(node, "perm", []))
        where = {r - 1: r - 3, r - 3: r - 2, r - 2: r - 1}  # old axis of H, D, K -> new axis
        perm = [where.get(a, a) for a in _ints(node, "perm", [])]
        tr = ir.node("Transpose", [view.outputs[0]], {"perm": perm}, name=f"{name}_t")
        new += [shape, view, tr]
        old = [n for n in (matmul, add, reshape, node) if n is not None]
        consts = [matmul.inputs[1]] + ([bias] if add is not None else [])
        replace_nodes_and_values(graph, node, old, new, [node.outputs[0]], [tr.outputs[0]])
        if not any(o.uses() or o.is_graph_output() for o in concat.outputs):
            graph.remove(concat, safe=True)
        for value in consts:
            _drop_if_unused(graph, value)
        count += 1
    return count


def _khd(graph: ir.Graph, value: ir.Value, factors: tuple[int, int, int], name: str) -> ir.Value:
    """The constant ``value`` with its last axis reordered from (h d k) to (k h d)."""
    h, d, k = factors
    a = value.const_value.numpy()  # (..., H·D·K), column (h·D + d)·K + kk
    b = np.moveaxis(a.reshape(*a.shape[:-1], h, d, k), -1, -3)  # (..., K, H, D)
    return _constant(graph, f"{name}_khd", np.ascontiguousarray(b.reshape(a.shape)))


def _qkv_pattern(node: ir.Node):
    """(MatMul, Add or None, Reshape, shape Concat) feeding Transpose ``node``, else None."""
    perm = _ints(node, "perm", []) if node.op_type == "Transpose" else []
    if len(perm) < 4 or perm[0] != len(perm) - 1:
        return None
    reshape = node.inputs[0].producer()
    if (
        reshape is None
        or reshape.op_type != "Reshape"
        or _only_consumer(reshape.outputs[0], "Transpose") is not node
    ):
        return None
    concat = reshape.inputs[1].producer()
    if concat is None or concat.op_type != "Concat" or len(concat.inputs) < 4:
        return None
    tail = [_ints_input(concat, i) for i in range(len(concat.inputs) - 3, len(concat.inputs))]
    if any(t is None or len(t) != 1 or t[0] < 1 for t in tail):
        return None
    add = reshape.inputs[0].producer()
    matmul = add
    if add is not None and add.op_type == "Add":
        matmul = next((i.producer() for i in add.inputs if i.producer() is not None), None)
        other = add.inputs[1] if add.inputs[0].producer() is matmul else add.inputs[0]
        if other.const_value is None or other.const_value.numpy().ndim != 1:
            return None
        if _only_consumer(add.outputs[0], "Reshape") is not reshape:
            return None
    else:
        add = None
    if matmul is None or matmul.op_type != "MatMul" or matmul.inputs[1].const_value is None:
        return None
    if matmul.inputs[1].const_value.numpy().ndim != 2:
        return None
    if _only_consumer(matmul.outputs[0], "Add" if add is not None else "Reshape") is None:
        return None
    return matmul, add, reshape, concat


def slice_before_transpose(graph: ir.Graph) -> int:
    """``Slice(Transpose(x, perm), axes)`` becomes ``Transpose(Slice(x, perm[axes]), perm)``.

    With :func:`squeeze_before_transpose` this takes MMAudio's ``qkv[i]`` (a Slice and a
    Squeeze of the transposed (3, B, H, N, D) tensor) to a slice of x, a squeeze, and a 4-D
    transpose; the 5-D one goes.
    """
    count = 0
    for node in list(graph):
        tr = node.inputs[0].producer() if node.op_type == "Slice" and node.inputs else None
        if tr is None or tr.op_type != "Transpose" or "perm" not in tr.attributes:
            continue
        perm, starts = _ints(tr, "perm", []), _ints_input(node, 1)
        has_axes = len(node.inputs) > 3 and node.inputs[3] is not None
        axes = _ints_input(node, 3) if has_axes else list(range(len(starts or [])))
        if not perm or starts is None or axes is None:
            continue
        name = node.name or f"slice_{count}"
        mapped = np.array([perm[a % len(perm)] for a in axes], np.int64)
        at = _constant(graph, f"v2a_cpu_axes_{'_'.join(map(str, mapped))}", mapped)
        inputs = [tr.inputs[0], node.inputs[1], node.inputs[2], at, *node.inputs[4:]]
        cut = ir.node("Slice", inputs, name=f"{name}_first")
        then = ir.node("Transpose", [cut.outputs[0]], {"perm": perm}, name=f"{name}_t")
        replace_nodes_and_values(
            graph, node, [node], [cut, then], [node.outputs[0]], [then.outputs[0]]
        )
        if not any(o.uses() or o.is_graph_output() for o in tr.outputs):
            graph.remove(tr, safe=True)
        count += 1
    return count


def squeeze_before_transpose(graph: ir.Graph) -> int:
    """``Squeeze(Transpose(x, perm), axes)`` becomes ``Transpose(Squeeze(x, perm[axes]), perm')``.

    MMAudio splits q, k, v with einops ``b n (h d k) -> k b h n d``: Split on the innermost
    axis, then a 5-D Transpose that moves the size-1 split axis first, then Squeeze. That
    Transpose takes onnxruntime's generic path (0.65 ms per (2, 250, 7, 64) tensor); after the
    squeeze it is (0, 2, 1, 3) over rows of 64 floats, 5× faster. The Squeeze itself vouches
    that each squeezed axis has size 1, so no shape inference is needed.
    """
    count = 0
    for node in list(graph):
        tr = node.inputs[0].producer() if node.op_type == "Squeeze" and node.inputs else None
        if tr is None or tr.op_type != "Transpose" or "perm" not in tr.attributes:
            continue
        perm, axes = _ints(tr, "perm", []), _ints_input(node, 1)
        if axes is None or not perm:
            continue
        rank = len(perm)
        gone = sorted(perm[a % rank] for a in axes)  # the squeezed axes of x
        kept = [p for p in perm if p not in gone]
        new_perm = [p - sum(g < p for g in gone) for p in kept]
        name = node.name or f"squeeze_{count}"
        at = _constant(graph, f"v2a_cpu_axes_{'_'.join(map(str, gone))}", np.array(gone, np.int64))
        squeeze = ir.node("Squeeze", [tr.inputs[0], at], name=f"{name}_first")
        new = [squeeze]
        if new_perm != sorted(new_perm):
            then = ir.node("Transpose", [squeeze.outputs[0]], {"perm": new_perm}, name=f"{name}_t")
            new.append(then)
        replace_nodes_and_values(graph, node, [node], new, [node.outputs[0]], [new[-1].outputs[0]])
        if not any(o.uses() or o.is_graph_output() for o in tr.outputs):
            graph.remove(tr, safe=True)
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


def _swap(graph: ir.Graph, old: ir.Node, new: ir.Node) -> None:
    """Put single-output ``new`` in the place of single-output ``old``."""
    replace_nodes_and_values(graph, old, [old], [new], [old.outputs[0]], [new.outputs[0]])


def _only_consumer(value: ir.Value, op_type: str) -> ir.Node | None:
    """The single standard-domain ``op_type`` node reading ``value``, else None."""
    users = {id(n): n for n, _ in value.uses()}
    if len(users) != 1 or value.is_graph_output():
        return None
    (node,) = users.values()
    return node if node.op_type == op_type and node.domain in ("", "ai.onnx") else None


def _scalar(value: ir.Value | None) -> float | None:
    """The float held by a one-element constant, else None."""
    tensor = value.const_value if value is not None else None
    if tensor is None or tensor.dtype != ir.DataType.FLOAT or tensor.numpy().size != 1:
        return None
    return float(tensor.numpy().reshape(()))


def _ints_input(node: ir.Node, index: int) -> list[int] | None:
    """The constant integer input ``index`` of ``node`` as a list, else None."""
    value = node.inputs[index] if len(node.inputs) > index else None
    tensor = value.const_value if value is not None else None
    if tensor is None or tensor.dtype not in (ir.DataType.INT64, ir.DataType.INT32):
        return None
    return [int(v) for v in tensor.numpy().reshape(-1)]


def _slice_last_axis(node: ir.Node, rank: int) -> tuple[int, int] | None:
    """(a, b) for a ``Slice`` that is ``[a : -b]`` (or ``[a:]``, b = 0) on the last of ``rank``
    axes, else None."""
    starts, ends = _ints_input(node, 1), _ints_input(node, 2)
    axes = _ints_input(node, 3) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    steps = _ints_input(node, 4) if len(node.inputs) > 4 and node.inputs[4] is not None else [1]
    if axes is None and len(node.inputs) > 3 and node.inputs[3] is not None:
        return None
    axes = axes if axes is not None else list(range(len(starts or [])))
    if starts is None or ends is None or steps != [1] or len(starts) != 1 or len(ends) != 1:
        return None
    if axes[0] not in (-1, rank - 1) or starts[0] < 0:
        return None
    end = ends[0]
    if end < 0:
        return starts[0], -end
    return (starts[0], 0) if end >= np.iinfo(np.int64).max // 2 else None


__all__ = [
    "cancel_squeeze_unsqueeze",
    "conv1d_as_conv2d",
    "crop_padding",
    "polyphase_transposed",
    "qkv_outermost",
    "rewrite_for_cpu",
    "slice_before_transpose",
    "split_projection",
    "square_as_mul",
    "squeeze_before_transpose",
]
