"""Graph surgery of the mixed-precision pass: explicit Casts, converted constants, the static
type check, and the CPU emulation twin.

:func:`apply_plan` rewrites an fp32 graph so that every float node computes in the type the
plan gives it (fp32 or the low target). Strongly typed TensorRT (10 with the flag, 11 always)
and onnxruntime take types from the graph alone, so the rewrite makes every boundary explicit:

- a float input whose producer has another type gets a ``Cast`` (one per tensor and type,
  shared by every consumer);
- float initializers are stored once per type they are read in;
- ``Cast(to=FLOAT)`` nodes of the original graph (int → float) emit the node's type directly;
- graph inputs and outputs keep float32 unless ``GraphIO.NATIVE`` asks for the target type.

:func:`mixed_type_errors` is the static check a strongly typed build relies on: no node may
read float inputs of different types (ops whose schema fixes an input to ``tensor(float)``,
like Resize's scales, are the only exemption), and onnx's strict shape inference must accept
the result.

:func:`emulate` makes the numerical twin used to *measure* a low-precision graph on a CPU.
onnxruntime's CPU provider has float16 kernels for few ops; it inserts Casts and computes
chains of fp16 nodes in fp32 without rounding between them (checked: ``(1 + 2⁻¹²) − 1``
through two fp16 nodes gives 2⁻¹², not 0), and it has no bfloat16 kernels at all. The twin
computes in fp32 but rounds every low-precision tensor through ``Cast(low) → Cast(float)``, as
a GPU stores it, and holds the rounded weights: per-op rounding with fp32 accumulation, which is
what cuBLAS/cuDNN fp16 kernels do by default.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT
LOW_TYPES = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
FLOAT_TYPES = (FLOAT, *LOW_TYPES)
# Ops whose float input may be of any type and whose output is not float: no Cast in front.
NEUTRAL_CONSUMERS = frozenset({"Shape", "Size"})


SKELETON_BYTES = 1_500_000_000  # above this, shape inference runs on a copy without weights
BIG_TENSOR = 1024  # elements: initializers above this lose their data in the skeleton


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with inferred value infos. Shape inference serialises the model, which
    protobuf caps at 2 GB (full-size CLIP is 2.5 GB): a bigger model is inferred as a skeleton
    whose large initializers keep their name, type and dims but no data (small ones, e.g.
    Reshape targets, keep their values)."""
    if model.ByteSize() < SKELETON_BYTES:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    inits = []
    for t in model.graph.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) > BIG_TENSOR:
            t = TensorProto(name=t.name, data_type=t.data_type, dims=t.dims)  # no data
        inits.append(t)
    graph = helper.make_graph(model.graph.node, model.graph.name, model.graph.input,
                              model.graph.output, inits, value_info=model.graph.value_info)
    skeleton = helper.make_model(graph, opset_imports=model.opset_import,
                                 ir_version=model.ir_version)  # fmt: skip
    skeleton.functions.extend(model.functions)
    return onnx.shape_inference.infer_shapes(skeleton, strict_mode=False)


@dataclass
class GraphIndex:
    """Lookup tables over one graph: producers, consumers, tensor types, initializers."""

    model: onnx.ModelProto
    types: dict[str, int]  # tensor -> onnx elem type
    producer: dict[str, int]  # tensor -> index of the node that outputs it
    consumers: dict[str, list[int]]  # tensor -> indices of nodes that read it
    initializers: dict[str, onnx.TensorProto]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    _constant: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, model: onnx.ModelProto) -> GraphIndex:
        g = _inferred(model).graph
        types: dict[str, int] = {}
        for v in (*g.input, *g.output, *g.value_info):
            if v.type.HasField("tensor_type"):
                types[v.name] = v.type.tensor_type.elem_type
        inits = {t.name: t for t in model.graph.initializer}
        for name, t in inits.items():
            types[name] = t.data_type
        producer, consumers = {}, defaultdict(list)
        for i, node in enumerate(model.graph.node):
            for o in node.output:
                if o:
                    producer[o] = i
            for x in node.input:
                if x:
                    consumers[x].append(i)
        return cls(
            model=model,
            types=types,
            producer=producer,
            consumers=dict(consumers),
            initializers=inits,
            inputs=tuple(v.name for v in model.graph.input),
            outputs=tuple(v.name for v in model.graph.output),
        )

    @property
    def nodes(self):
        return self.model.graph.node

    def is_float(self, name: str) -> bool:
        return self.types.get(name) in FLOAT_TYPES

    def float_inputs(self, i: int) -> list[str]:
        return [x for x in self.nodes[i].input if x and self.is_float(x)]

    def float_outputs(self, i: int) -> list[str]:
        return [x for x in self.nodes[i].output if x and self.is_float(x)]

    def is_float_node(self, i: int) -> bool:
        node = self.nodes[i]
        if node.op_type in NEUTRAL_CONSUMERS:
            return False
        return bool(self.float_inputs(i) or self.float_outputs(i))

    def is_constant(self, name: str) -> bool:
        """An initializer, or the output of a node computed from initializers only."""
        if name not in self._constant:
            self._constant[name] = self._compute_constant(name)
        return self._constant[name]

    def _compute_constant(self, name: str) -> bool:
        if name in self.initializers:
            return True
        i = self.producer.get(name)
        if i is None:
            return False
        self._constant[name] = False  # cycle guard
        ins = [x for x in self.nodes[i].input if x]
        return bool(ins) and all(self.is_constant(x) for x in ins)


def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with unique node names and every ``Constant`` node turned into an initializer
    (the rewrite converts initializers; Constant attributes would need a second path)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    seen: set[str] = set()
    nodes = []
    for i, node in enumerate(g.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
        attrs = node.attribute
        if node.op_type == "Constant" and len(attrs) == 1 and attrs[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            g.initializer.append(tensor)
            continue
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    return out


# --- the rewrite -----------------------------------------------------------------------------


def _schema_fixed_float_inputs(node: onnx.NodeProto, opset: int) -> set[int]:
    """Input slots whose schema allows exactly ``tensor(float)`` (no choice of type)."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return set()
    fixed = set()
    formal = list(schema.inputs)
    for slot in range(len(node.input)):
        spec = formal[min(slot, len(formal) - 1)] if formal else None
        if spec is not None and spec.type_str == "tensor(float)":
            fixed.add(slot)
    return fixed


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)


def apply_plan(
    model: onnx.ModelProto, low_nodes: set[str], low_type: int, native_io: bool
) -> onnx.ModelProto:
    """Rewrite ``model`` (normalised, fp32) so the nodes named in ``low_nodes`` compute in
    ``low_type`` and every other float node in float32, with explicit Casts between."""
    return _Rewrite(model, low_nodes, low_type, native_io).run()


class _Rewrite:
    """One application of a plan: node types, shared Casts, converted initializers."""

    def __init__(self, model, low_nodes: set[str], low_type: int, native_io: bool):
        self.model, self.idx = model, GraphIndex.of(model)
        self.low_type, self.native_io = low_type, native_io
        idx = self.idx
        self.dtype_of_node = {  # node index -> compute type, for float nodes
            i: (low_type if node.name in low_nodes else FLOAT)
            for i, node in enumerate(model.graph.node)
            if idx.is_float_node(i)
        }
        # the type each float tensor is produced in. Native I/O puts a graph input in the low
        # type unless an fp32 node reads it: the denoiser's t feeds the time-embedding phase
        # t·f (f up to 1e4), where float16's spacing of t alone moves the phase by a radian
        self.produced: dict[str, int] = {}
        for name in idx.inputs:
            if idx.is_float(name):
                readers = idx.consumers.get(name, [])
                read_fp32 = any(self.dtype_of_node.get(c) == FLOAT for c in readers)
                self.produced[name] = low_type if native_io and not read_fp32 else FLOAT
        for i, node in enumerate(model.graph.node):
            for o in node.output:
                if o and idx.is_float(o):
                    self.produced[o] = self.dtype_of_node.get(i, idx.types[o])
        self.casts: dict[str, onnx.NodeProto] = {}  # cast output name -> Cast node
        self.converted: dict[str, onnx.TensorProto] = {}  # new initializer name -> tensor

    def run(self) -> onnx.ModelProto:
        g = self.model.graph
        nodes = self._nodes()
        nodes += self._outputs(nodes)
        for v in g.input:
            if self.idx.is_float(v.name):
                v.type.tensor_type.elem_type = self.produced[v.name]
        used = {x for n in nodes for x in n.input} | {v.name for v in g.output}
        inits = [t for t in (*g.initializer, *self.converted.values()) if t.name in used]
        del g.node[:]
        g.node.extend(nodes)
        del g.initializer[:]
        g.initializer.extend(inits)
        del g.value_info[:]
        return self.model

    def _initializer_as(self, name: str, to: int) -> str:
        src = self.idx.initializers[name]
        if src.data_type == to:
            return name
        new = f"{name}__{_SUFFIX[to]}"
        if new not in self.converted:
            self.converted[new] = convert_tensor(src, to, new)
        return new

    def _cast_of(self, name: str, to: int) -> str:
        out = f"{name}__{_SUFFIX[to]}"
        if out not in self.casts:
            self.casts[out] = helper.make_node("Cast", [name], [out], to=to, name=f"Cast_{out}")
        return out

    def _nodes(self) -> list[onnx.NodeProto]:
        """Every node with its float inputs in its compute type, each Cast placed right
        before its first reader (topological order kept)."""
        idx, opset = self.idx, opset_of(self.model)
        out, emitted = [], set()
        for i, node in enumerate(self.model.graph.node):
            d = self.dtype_of_node.get(i)
            if d is not None:
                fixed = _schema_fixed_float_inputs(node, opset)
                cast_node = node.op_type == "Cast"  # reads any type: no Cast in front
                for slot, x in enumerate(node.input):
                    if not x or not idx.is_float(x) or slot in fixed or cast_node:
                        continue
                    if x in idx.initializers:
                        node.input[slot] = self._initializer_as(x, d)
                    elif self.produced.get(x, FLOAT) != d:
                        node.input[slot] = self._cast_of(x, d)
                if cast_node and _attr(node, "to") in FLOAT_TYPES:
                    _set_attr(node, "to", d)
                if node.op_type == "ConstantOfShape":
                    _convert_value_attr(node, d)
            for x in node.input:
                if x in self.casts and x not in emitted:
                    out.append(self.casts[x])
                    emitted.add(x)
            out.append(node)
        return out

    def _outputs(self, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        """Casts to the declared boundary type of the graph outputs (the producer's tensor is
        renamed; the Cast writes the contract's name)."""
        want = self.low_type if self.native_io else FLOAT
        renames, tail = {}, []
        for v in self.model.graph.output:
            if not self.idx.is_float(v.name) or v.name in self.idx.initializers:
                continue
            have = self.produced.get(v.name, FLOAT)
            if have != want:
                renames[v.name] = f"{v.name}__{_SUFFIX[have]}"
            v.type.tensor_type.elem_type = want
        for node in nodes:
            for k, x in enumerate(node.input):
                node.input[k] = renames.get(x, x)
            for k, x in enumerate(node.output):
                node.output[k] = renames.get(x, x)
        for name, inner in renames.items():
            tail.append(helper.make_node("Cast", [inner], [name], to=want, name=f"Cast_{name}_out"))
        return tail


_SUFFIX = {FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16"}


def convert_tensor(src: onnx.TensorProto, to: int, name: str) -> onnx.TensorProto:
    """``src`` as a tensor of type ``to`` (round to nearest even), named ``name``."""
    values = numpy_helper.to_array(src).astype(np.float32)
    if to == TensorProto.FLOAT16:
        return numpy_helper.from_array(values.astype(np.float16), name)
    if to == TensorProto.BFLOAT16:
        out = onnx.TensorProto(name=name, data_type=TensorProto.BFLOAT16, dims=values.shape)
        out.raw_data = bf16_bits(values).tobytes()
        return out
    return numpy_helper.from_array(values, name)


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns of float32 ``x``, round to nearest even (NaN kept NaN)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(x)
    return np.where(nan, 0x7FC0, rounded).astype(np.uint16)


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 ``x`` rounded to the nearest bfloat16 value (returned as float32)."""
    return (bf16_bits(x).astype(np.uint32) << 16).view(np.float32)


def round_to(x: np.ndarray, low_type: int) -> np.ndarray:
    """float32 values rounded through the low type, as float32."""
    x = np.asarray(x, dtype=np.float32)
    if low_type == TensorProto.FLOAT16:
        return x.astype(np.float16).astype(np.float32)
    return bf16_round(x)


def _attr(node: onnx.NodeProto, name: str):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for a in node.attribute:
        if a.name == name:
            node.attribute.remove(a)
            break
    node.attribute.append(helper.make_attribute(name, value))


def _convert_value_attr(node: onnx.NodeProto, to: int) -> None:
    for a in node.attribute:
        if a.name == "value" and a.t.data_type in FLOAT_TYPES and a.t.data_type != to:
            t = convert_tensor(a.t, to, a.t.name)
            a.t.CopyFrom(t)


# --- checks ----------------------------------------------------------------------------------


def mixed_type_errors(model: onnx.ModelProto) -> list[str]:
    """Every node that reads float inputs of different types (a strongly typed TensorRT build
    rejects them), plus anything onnx's strict type inference (``check_type``) rejects. Empty
    when clean."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        return [f"onnx type check: {str(e).strip().splitlines()[0]}"]
    idx = GraphIndex.of(inferred)
    opset = opset_of(model)
    problems = []
    for node in inferred.graph.node:
        if node.op_type in NEUTRAL_CONSUMERS or node.op_type == "Cast":
            continue
        fixed = _schema_fixed_float_inputs(node, opset)
        types = {
            idx.types[x]
            for slot, x in enumerate(node.input)
            if x and idx.is_float(x) and slot not in fixed
        }
        if len(types) > 1:
            names = sorted(onnx.TensorProto.DataType.Name(t) for t in types)
            problems.append(f"{node.name} ({node.op_type}) reads {' and '.join(names)}")
        missing = [x for x in (*node.input, *node.output) if x and x not in idx.types]
        if missing:
            problems.append(f"{node.name} ({node.op_type}): no inferred type for {missing}")
    return problems


def count_casts(model: onnx.ModelProto, original: onnx.ModelProto) -> int:
    """Cast nodes the pass added."""
    return sum(n.op_type == "Cast" for n in model.graph.node) - sum(
        n.op_type == "Cast" for n in original.graph.node
    )


# --- the CPU emulation twin ------------------------------------------------------------------

# Ops that only move or select values: their outputs are already representable, no rounding.
_MOVEMENT = frozenset({
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Concat", "Split", "Expand",
    "Gather", "Pad", "Identity", "Flatten", "Tile", "Shape", "Size",
})  # fmt: skip


def emulate(model: onnx.ModelProto) -> onnx.ModelProto:
    """An all-float32 copy of a mixed-precision graph that rounds every low-precision tensor
    as it is stored (see the module docstring). Graph I/O becomes float32."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    idx = GraphIndex.of(out)
    inits = []
    for t in g.initializer:
        if t.data_type in LOW_TYPES:
            values = _low_values(t)
            inits.append(numpy_helper.from_array(values, t.name))
        else:
            inits.append(t)
    del g.initializer[:]
    g.initializer.extend(inits)
    nodes = []
    rounded_inputs = {}
    for v in g.input:
        low = v.type.tensor_type.elem_type
        if low in LOW_TYPES:
            v.type.tensor_type.elem_type = FLOAT
            rounded_inputs[v.name] = (f"{v.name}__in", low)
    for name, (inner, low) in rounded_inputs.items():
        nodes += _round_trip(name, inner, low)
    for node in g.node:
        for k, x in enumerate(node.input):
            if x in rounded_inputs:
                node.input[k] = rounded_inputs[x][0]
        if node.op_type == "Cast" and _attr(node, "to") in LOW_TYPES:
            low = _attr(node, "to")
            _set_attr(node, "to", FLOAT)
            inner = f"{node.output[0]}__raw"
            target = node.output[0]
            node.output[0] = inner
            nodes.append(node)
            nodes += _round_trip(inner, target, low)
            continue
        if node.op_type == "ConstantOfShape":
            _convert_value_attr(node, FLOAT)
        low_outs = [o for o in node.output if o and idx.types.get(o) in LOW_TYPES]
        if not low_outs or node.op_type in _MOVEMENT:
            nodes.append(node)
            continue
        tails = []
        for k, o in enumerate(node.output):
            if o in low_outs:
                inner = f"{o}__raw"
                node.output[k] = inner
                tails += _round_trip(inner, o, idx.types[o])
        nodes.append(node)
        nodes += tails
    for v in g.output:
        if v.type.tensor_type.elem_type in LOW_TYPES:
            v.type.tensor_type.elem_type = FLOAT
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return out


def _round_trip(src: str, dst: str, low: int) -> list[onnx.NodeProto]:
    mid = f"{dst}__{_SUFFIX[low]}"
    return [
        helper.make_node("Cast", [src], [mid], to=low, name=f"Round_{mid}"),
        helper.make_node("Cast", [mid], [dst], to=FLOAT, name=f"Round_{dst}"),
    ]


def _low_values(t: onnx.TensorProto) -> np.ndarray:
    """float32 values of a float16/bfloat16 initializer."""
    if t.data_type == TensorProto.FLOAT16:
        return numpy_helper.to_array(t).astype(np.float32)
    if t.raw_data:
        bits = np.frombuffer(t.raw_data, dtype=np.uint16)
    else:
        bits = np.asarray(t.int32_data, dtype=np.uint16)
    values = (bits.astype(np.uint32) << 16).view(np.float32)
    return values.reshape(tuple(t.dims))


__all__ = [
    "FLOAT",
    "GraphIndex",
    "apply_plan",
    "bf16_round",
    "convert_tensor",
    "count_casts",
    "emulate",
    "mixed_type_errors",
    "normalize",
    "opset_of",
    "round_to",
]
