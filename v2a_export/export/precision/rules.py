"""Which node computes in which type: the rules of the mixed-precision pass.

:func:`classify` returns the set of nodes that compute in the low target and, for every other
float node, why it stays in fp32 (:class:`Fp32Node`). The rules, in order (the first that
applies is the recorded reason):

1. ``user``: names in ``policy.keep_fp32``;
2. ``norm`` / ``reduction``: norm ops, every reduction, and a reduction's statistics chain up to
   the op that applies it to the tensor it was computed from (RMSNorm's x² → mean → +eps →
   sqrt → 1/· → x·r; L2 normalisation's ‖x‖ → max(·, eps) → x/·);
3. ``trig``: Sin/Cos and the chain computing their argument (RoPE angles n·f·scale, the time
   embedding t·f with f up to 1e4, Snake's αx), walked back until it meets a merge of two
   activations (inputs with no common source: the x − round(x/2π)·2π of a range reduction is
   one activation) or a non-elementwise op;
4. ``division``: Reciprocal, and Div by a computed (non-constant) value;
5. ``softmax``: only when the policy asks (the attention core stays low by default);
6. ``constant``: the node reads a constant that the target cannot hold (|c| > 65504, or a small
   constant such as an epsilon that rounding moves by more than 1 %);
7. ``range`` / ``subnormal``: a tensor it reads or writes went beyond ``policy.limit`` (or
   stayed entirely in float16's subnormal range) on the calibration inputs: measured, not
   guessed (spec/deployment.md §7.3);
8. ``schema``: the op has no signature for the target type in the graph's opset (at opset 18
   Conv, ConvTranspose, Sin and Cos have no bfloat16 variant).

Every other float node computes in the target type: MatMul/Gemm/Conv and the attention core
included. Data-movement ops (Reshape, Transpose, Slice, ...) take the type of their input, so no
Cast is spent on them. Finally, cheap nodes whose every neighbour is fp32 join the island
(``absorbed``), which saves a Cast pair per such node.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from v2a_export.export.precision.graph import FLOAT, GraphIndex, opset_of, round_to
from v2a_export.export.precision.policy import (
    FP16_MAX,
    FP16_NORMAL,
    Fp32Node,
    Precision,
    PrecisionPolicy,
    Range,
)

HEAVY = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "MatMulInteger"})
REDUCTIONS = frozenset({
    "ReduceMean", "ReduceSum", "ReduceL2", "ReduceL1", "ReduceSumSquare", "ReduceMax",
    "ReduceMin", "ReduceLogSumExp", "ReduceLogSum", "ReduceProd",
})  # fmt: skip
NORMS = frozenset({
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
    "RMSNormalization", "LpNormalization", "MeanVarianceNormalization",
    "SimplifiedLayerNormalization", "SkipLayerNormalization",
})  # fmt: skip
MOVEMENT = frozenset({
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Concat", "Split", "Expand",
    "Gather", "GatherElements", "Pad", "Identity", "Flatten", "Tile",
})  # fmt: skip
ELEMENTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log",
    "Sin", "Cos", "Tanh", "Sigmoid", "Erf", "Relu", "Clip", "Max", "Min", "Floor", "Ceil",
    "Round", "Sign", "Cast", "Range", "Where", "LeakyRelu", "Elu", "Selu", "Softplus",
})  # fmt: skip
# a norm's statistics chain: from the reduction to the op that applies it
_STAT_WALK = frozenset({
    "Add", "Sub", "Mul", "Div", "Sqrt", "Reciprocal", "Pow", "Clip", "Max", "Min", "Abs",
    "Neg", "Expand", "Unsqueeze", "Reshape", "Squeeze", "Cast",
})  # fmt: skip
_STAT_DEPTH = 6
_SQUARE_OPS = frozenset({"Pow", "Mul", "Sub", "Abs"})  # x², x·x, x − mean feeding a reduction
_PHASE_WALK = ELEMENTWISE | frozenset({"Unsqueeze", "Reshape", "Squeeze", "Expand", "Concat",
                                       "Transpose", "Flatten"})  # fmt: skip
_PHASE_DEPTH = 12
_CONSTANT_RTOL = 0.01  # a small constant moved by more than this by rounding stays fp32


def classify(
    model: onnx.ModelProto,
    ranges: Mapping[str, Range] | None,
    policy: PrecisionPolicy,
    extra: Mapping[str, Fp32Node] | None = None,
) -> tuple[set[str], dict[str, Fp32Node]]:
    """(names of nodes computing in the target type, {name: why} for fp32 float nodes).

    ``model`` must be normalised (:func:`precision_graph.normalize`). ``extra`` pins more
    nodes to fp32 (the measured final-projection refinement)."""
    idx = GraphIndex.of(model)
    float_nodes = [i for i in range(len(idx.nodes)) if idx.is_float_node(i)]
    pinned: dict[int, Fp32Node] = {}

    def pin(i: int, reason: str, detail: str = "") -> None:
        if i not in pinned and idx.is_float_node(i):
            node = idx.nodes[i]
            pinned[i] = Fp32Node(node.name, node.op_type, reason, detail)

    by_name = {idx.nodes[i].name: i for i in float_nodes}
    for name in policy.keep_fp32:
        if name not in by_name:
            raise ValueError(f"keep_fp32: no float node named {name!r} in the graph")
        pin(by_name[name], "user")
    for name, entry in (extra or {}).items():
        if name in by_name:
            pinned.setdefault(by_name[name], entry)
    if policy.norm_fp32:
        _norm_rule(idx, float_nodes, pin)
    if policy.trig_fp32:
        _trig_rule(idx, float_nodes, pin)
    if policy.division_fp32:
        for i in float_nodes:
            node = idx.nodes[i]
            if node.op_type == "Reciprocal" or (
                node.op_type == "Div" and len(node.input) > 1 and not idx.is_constant(node.input[1])
            ):
                pin(i, "division")
    if policy.softmax_fp32:
        for i in float_nodes:
            if idx.nodes[i].op_type in ("Softmax", "LogSoftmax"):
                pin(i, "softmax")
    _constant_rule(idx, float_nodes, policy.target, pin)
    if ranges:
        _range_rule(idx, ranges, policy, pin)
    _schema_rule(idx, float_nodes, policy.target, pin)

    fp32 = _assign(idx, float_nodes, set(pinned), low_inputs=policy.io.value == "native")
    if policy.absorb:
        for i in _absorb(idx, float_nodes, fp32, native_io=policy.io.value == "native"):
            pin(i, "absorbed")
            fp32.add(i)
    low = {idx.nodes[i].name for i in float_nodes if i not in fp32}
    reasons = {}
    for i in sorted(fp32):
        node = idx.nodes[i]
        reasons[node.name] = pinned.get(i) or Fp32Node(node.name, node.op_type, "follows")
    return low, reasons


# --- rules -----------------------------------------------------------------------------------


def _schema_rule(idx: GraphIndex, float_nodes, target: Precision, pin) -> None:
    want = f"tensor({'float16' if target is Precision.FP16 else 'bfloat16'})"
    opset = opset_of(idx.model)
    for i in float_nodes:
        node = idx.nodes[i]
        if node.op_type == "Cast":
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
        except onnx.defs.SchemaError:
            pin(i, "schema", "unknown op")
            continue
        allowed = {t.type_param_str: set(t.allowed_type_strs) for t in schema.type_constraints}
        params = {_formal(schema.inputs, k).type_str for k, x in enumerate(node.input) if x}
        params |= {_formal(schema.outputs, k).type_str for k, x in enumerate(node.output) if x}
        float_params = [p for p in params if p in allowed and "tensor(float)" in allowed[p]]
        if any(want not in allowed[p] for p in float_params):
            pin(i, "schema", f"{node.op_type}-{schema.since_version} has no {want}")


def _formal(formals, k: int):
    """The formal parameter of slot ``k`` (the last one repeats for variadic ops)."""
    return formals[min(k, len(formals) - 1)]


def _constant_rule(idx: GraphIndex, float_nodes, target: Precision, pin) -> None:
    bad: dict[str, str] = {}
    for name, t in idx.initializers.items():
        if t.data_type != FLOAT:
            continue
        v = numpy_helper.to_array(t).astype(np.float32)
        if v.size == 0:
            continue
        finite = np.abs(v[np.isfinite(v)])  # ±inf (masks) is ±inf in every float format
        big = float(finite.max(initial=0.0))
        if target is Precision.FP16 and big > FP16_MAX:
            bad[name] = f"{name}: |c| {big:.3g} > 65504"
        elif v.size <= 16 and np.isfinite(v).all():
            r = round_to(v, target.onnx_type)
            moved = np.abs(r - v) > _CONSTANT_RTOL * np.abs(v)
            if moved.any():
                c = v.ravel()[np.argmax(moved.ravel())]
                bad[name] = f"{name} = {c:.3g} is not representable"
    for i in float_nodes:
        for x in idx.nodes[i].input:
            if x in bad:
                pin(i, "constant", bad[x])
                break


def _range_rule(idx: GraphIndex, ranges: Mapping[str, Range], policy, pin) -> None:
    limit = policy.limit
    fp16 = policy.target is Precision.FP16
    for name, r in ranges.items():
        if r.nan:
            detail, reason = f"{name} has NaN in fp32", "range"
        elif r.max_abs > limit:
            detail, reason = f"|{name}| reaches {r.max_abs:.3g} > {limit:g}", "range"
        elif fp16 and 0 < r.max_abs < FP16_NORMAL:
            detail, reason = f"|{name}| <= {r.max_abs:.2g}", "subnormal"
        else:
            continue
        if name in idx.producer:
            pin(idx.producer[name], reason, detail)
        for c in idx.consumers.get(name, []):
            pin(c, reason, detail)


def _norm_rule(idx: GraphIndex, float_nodes, pin) -> None:
    for i in float_nodes:
        node = idx.nodes[i]
        if node.op_type in NORMS:
            pin(i, "norm", node.op_type)
        elif node.op_type in REDUCTIONS:
            chain = _statistics_chain(idx, i)
            if chain:
                for j in chain:
                    pin(j, "norm", f"statistics of {node.name}")
            else:
                pin(i, "reduction", node.op_type)


def _statistics_chain(idx: GraphIndex, r: int) -> list[int]:
    """The reduction ``r``, its squaring producer and the path to the node that applies the
    statistic to the tensor it came from; [] when no such node is near (a plain pooling)."""
    data = idx.nodes[r].input[0]
    sources = {data}
    square = idx.producer.get(data)
    if square is not None and idx.nodes[square].op_type in _SQUARE_OPS:
        sources |= {x for x in idx.nodes[square].input if x and not idx.is_constant(x)}
    else:
        square = None
    found: list[int] = []
    frontier = [(o, [r]) for o in idx.nodes[r].output if o]
    for _ in range(_STAT_DEPTH):
        nxt = []
        for tensor, path in frontier:
            for c in idx.consumers.get(tensor, []):
                node = idx.nodes[c]
                if node.op_type not in _STAT_WALK:
                    continue
                if any(x in sources for x in node.input if x != tensor):
                    found += [*path, c]
                    continue
                nxt += [(o, [*path, c]) for o in node.output if o]
        frontier = nxt
    if not found:
        return []
    return sorted(set(found) | ({square} if square is not None else set()))


def _data_dependent(idx: GraphIndex) -> set[str]:
    """Tensors whose values depend on the values of a float graph input (not just shapes)."""
    dd = {x for x in idx.inputs if idx.is_float(x)}
    for node in idx.nodes:
        if node.op_type in ("Shape", "Size"):
            continue
        if any(x in dd for x in node.input if x):
            dd.update(o for o in node.output if o)
    return dd


def _trig_rule(idx: GraphIndex, float_nodes, pin) -> None:
    dd = _data_dependent(idx)
    for i in float_nodes:
        node = idx.nodes[i]
        if node.op_type not in ("Sin", "Cos"):
            continue
        pin(i, "trig", node.op_type)
        stack, seen = [(node.input[0], 0)], set()
        while stack:
            tensor, depth = stack.pop()
            j = idx.producer.get(tensor)
            if j is None or j in seen or depth > _PHASE_DEPTH or idx.is_constant(tensor):
                continue
            prev = idx.nodes[j]
            if prev.op_type not in _PHASE_WALK:
                continue
            live = [x for x in prev.input if x and x in dd and idx.is_float(x)]
            if tensor in dd and len(live) > 1 and not _one_source(idx, live, dd):
                continue  # a merge of two activations: the phase starts after it
            seen.add(j)
            pin(j, "trig", f"argument of {node.name}")
            stack += [(x, depth + 1) for x in prev.input if x]


def _one_source(idx: GraphIndex, tensors: list[str], dd: set[str]) -> bool:
    """Whether ``tensors`` share an ancestor through phase-walk ops (``x`` and ``k·2π`` with
    ``k = round(x/2π)``), rather than being two activations (a residual's two branches)."""
    common = None
    for tensor in tensors:
        seen, stack = set(), [(tensor, 0)]
        while stack:
            t, depth = stack.pop()
            if t in seen or depth > _PHASE_DEPTH:
                continue
            seen.add(t)
            j = idx.producer.get(t)
            if j is None or idx.is_constant(t) or idx.nodes[j].op_type not in _PHASE_WALK:
                continue
            stack += [(x, depth + 1) for x in idx.nodes[j].input if x and x in dd]
        common = seen if common is None else common & seen
    return bool(common)


# --- assignment ------------------------------------------------------------------------------


def _assign(idx: GraphIndex, float_nodes, pinned: set[int], *, low_inputs: bool) -> set[int]:
    """fp32 node indices: the pinned ones, plus data-movement nodes that move an fp32 tensor
    to an fp32 consumer. A movement node whose consumers compute low is low itself: the Cast
    goes on its source, shared by every such node (one Cast of a RoPE table, not one per
    Gather)."""
    fp32 = set(pinned)
    is_float_node = set(float_nodes)
    outputs = set(idx.outputs)
    for i in float_nodes:
        if i in fp32:
            continue
        node = idx.nodes[i]
        if node.op_type not in MOVEMENT and node.op_type != "Cast":
            continue
        src = next(
            (x for x in node.input if x and idx.is_float(x) and not idx.is_constant(x)), None
        )
        if src is None:
            continue
        j = idx.producer.get(src)
        from_fp32 = (j in fp32) if j in is_float_node else (src in idx.inputs and not low_inputs)
        if from_fp32 and not _feeds_low_only(idx, i, fp32, outputs):
            fp32.add(i)
    return fp32


def _feeds_low_only(idx: GraphIndex, i: int, fp32: set[int], outputs: set[str]) -> bool:
    """Every consumer of node ``i``'s outputs will compute low (not pinned, not movement)."""
    for o in idx.nodes[i].output:
        if not o or o in outputs:
            return False
        for c in idx.consumers.get(o, []):
            op = idx.nodes[c].op_type
            if c in fp32 or op in MOVEMENT or op == "Cast" or not idx.is_float_node(c):
                return False
    return True


def _absorb(idx: GraphIndex, float_nodes, fp32: set[int], *, native_io: bool) -> list[int]:
    """Low nodes (not heavy, not softmax) whose float inputs all come from fp32 and whose
    float outputs all go to fp32: computing them in fp32 removes their Casts."""
    outputs = set(idx.outputs)
    absorbed: list[int] = []
    changed = True
    while changed:
        changed = False
        for i in float_nodes:
            node = idx.nodes[i]
            if i in fp32 or node.op_type in HEAVY or node.op_type in ("Softmax", "LogSoftmax"):
                continue
            ins = [x for x in node.input if x and idx.is_float(x) and not idx.is_constant(x)]
            outs = [o for o in node.output if o and idx.is_float(o)]
            if not ins or not outs:
                continue
            ok_in = all(
                (idx.producer[x] in fp32) if x in idx.producer else not native_io for x in ins
            )
            ok_out = all(
                (o not in outputs or not native_io)
                and all(c in fp32 or not idx.is_float_node(c) for c in idx.consumers.get(o, []))
                for o in outs
            )
            if ok_in and ok_out:
                fp32.add(i)
                absorbed.append(i)
                changed = True
    return absorbed


def output_projection(model: onnx.ModelProto, output: str) -> list[str]:
    """Nodes from graph output ``output`` back to and including the nearest heavy op(s)
    (MatMul/Gemm/Conv/ConvTranspose) on every path: the "final projection"."""
    idx = GraphIndex.of(model)
    names, stack, seen = [], [(output, 0)], set()
    while stack:
        tensor, depth = stack.pop()
        j = idx.producer.get(tensor)
        if j is None or j in seen or depth > 16 or idx.is_constant(tensor):
            continue
        seen.add(j)
        node = idx.nodes[j]
        if idx.is_float_node(j):
            names.append(node.name)
        if node.op_type in HEAVY:
            continue
        stack += [(x, depth + 1) for x in node.input if x and idx.is_float(x)]
    return names


__all__ = ["ELEMENTWISE", "HEAVY", "MOVEMENT", "NORMS", "REDUCTIONS", "classify",
           "output_projection"]  # fmt: skip
