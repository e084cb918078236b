"""Will TensorRT's ONNX parser accept a graph? A static check that needs only ``onnx``.

TensorRT cannot run where graphs are exported, so every graph is checked here against what the
parser of TensorRT 10.1 and 10.15 accepts (:mod:`v2a_export.export.trt_operators`: the
operator matrix, the restrictions, and rules read in the parser's source). Each violation
names the node, the rule and the fix. The rules (:data:`RULES`):

- ``opset``: the default-domain opset is one both releases parse (9 to 20);
- ``operator``: the op type is in both matrices, in the default ONNX domain (anything else
  goes to the plugin fallback, which has no plugin for it);
- ``operator-type``: the op's data inputs (the inputs of its main ONNX type variable; for
  ``Constant`` / ``ConstantOfShape`` the value made) have a type its matrix row lists;
- ``mixed-types``: those inputs agree on one type (a strongly typed build rejects a mismatch);
- ``tensor-type``: every tensor has a type TensorRT has (no DOUBLE, UINT16, STRING, ...);
- ``uint8``: a uint8 graph input feeds Cast nodes only, and no node makes a uint8 tensor
  that is not a graph output produced by a Cast (``ModelImporter.cpp``: "TensorRT does not
  support UINT8 types for intermediate tensors!"; NVIDIA/TensorRT#3985: "All UINT8 inputs
  must directly feed into a cast layer", even a Transpose or a Shape may not read one);
- ``quantized-type``: INT8 / INT4 / FP8 / FP4 tensors only on the quantized side of
  QuantizeLinear / DequantizeLinear (the matrix: "Quantized Types");
- ``shape-tensor``: inputs TensorRT computes as shape tensors (Reshape's shape, Slice's
  starts, Expand's shape, ...) are INT32/INT64, and the arithmetic that computes them, back to
  the Shape ops, constants and graph inputs it starts from, is INT32/INT64/BOOL/FLOAT (no
  uint8, int8, fp16, bf16 shape arithmetic);
- ``constant-input``: inputs the parser reads at build time (Slice/Squeeze/Unsqueeze/Reduce*
  axes, Pad axes, CumSum axis, Clip min/max, TopK K, ...) are initializers or Constants;
- ``attribute``: attribute values the parser refuses (Resize modes, antialias and aspect
  policy, ScatterND reduction, TopK sorted, LSTM layout / input_forget, pooling rank and
  dilations, Constant's sparse/string values, Cast to a type TensorRT has not);
- ``outputs``: no more outputs than the importer makes (LayerNormalization: Y only; MaxPool:
  no Indices).

What it cannot see: anything decided by values or shapes at build time (a shape tensor over 64
elements, If branches of different rank, a kernel TensorRT lacks for one GPU). The first build
on a GPU (``scripts/verify_tensorrt.sh``) remains the acceptance test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto

from v2a_export.export import trt_operators as table

_LOGGER = logging.getLogger(__name__)

RULES: dict[str, str] = {
    "opset": "the default-domain opset is one TensorRT 10.1 and 10.15 both parse",
    "operator": "the op type is one both parsers import (default ONNX domain)",
    "operator-type": "the op's data inputs have a type its operator-matrix row lists",
    "mixed-types": "the inputs of one ONNX type variable have one type (strongly typed)",
    "tensor-type": "every tensor has a type TensorRT has",
    "uint8": "uint8 only as a graph input read by Cast nodes, or a graph output made by a Cast",
    "quantized-type": "INT8/INT4/FP8/FP4 only on the quantized side of Q/DQ",
    "shape-tensor": "shape-tensor inputs and the arithmetic computing them are INT32/INT64",
    "constant-input": "inputs the parser reads at build time are initializers or Constants",
    "attribute": "attribute values the parser accepts",
    "outputs": "no more outputs than the importer makes",
}

# matrix type names -> onnx TensorProto names
_MATRIX_TYPES = {
    "FP32": "FLOAT",
    "FP16": "FLOAT16",
    "BF16": "BFLOAT16",
    "FP8": "FLOAT8E4M3FN",
    "FP4": "FLOAT4E2M1",
    "INT4": "INT4",
    "INT8": "INT8",
    "INT32": "INT32",
    "INT64": "INT64",
    "UINT8": "UINT8",
    "BOOL": "BOOL",
}
_SHAPE_TYPES = ("INT32", "INT64")  # a shape input itself
# inside the arithmetic computing one: comparisons and float scale factors are fine (TensorRT's
# shape tensors may be Bool or Float when they are not engine I/O; ITensor::isShapeTensor)
_SHAPE_CHAIN_TYPES = ("INT32", "INT64", "BOOL", "FLOAT")
# ops that start a shape computation whatever their input type
_SHAPE_SOURCES = ("Shape", "Size")


@dataclass(frozen=True)
class Violation:
    """One broken rule: where (node name and op type, or a graph input/output), what, and how
    to fix it."""

    rule: str
    node: str
    op_type: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"node {self.node!r} ({self.op_type})" if self.op_type else self.node
        return f"{where}: {self.rule}: {self.message}; fix: {self.fix}"


class TensorRTIncompatible(Exception):
    """Graphs that TensorRT's parser would refuse. ``violations``: component -> violations."""

    def __init__(self, violations: dict[str, tuple[Violation, ...]], hint: str = ""):
        self.violations = {k: v for k, v in violations.items() if v}
        count = sum(len(v) for v in self.violations.values())
        name, first = next((k, v[0]) for k, v in self.violations.items())
        more = f" (and {count - 1} more)" if count > 1 else ""
        super().__init__(
            f"{name}: TensorRT {table.TENSORRT} would not parse this graph: {first}{more}"
            + (f"; {hint}" if hint else "")
        )


# --- entry points ----------------------------------------------------------------------------


def check_file(path: str | Path) -> tuple[Violation, ...]:
    """Check one ``.onnx`` file (its external data is not read)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and others
        raise ValueError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from e
    return check_model(model)


def check_bundle(root: str | Path) -> dict[str, tuple[Violation, ...]]:
    """Check every component graph of the bundle in ``root``: component -> violations."""
    from v2a_runtime.bundle import load_bundle

    bundle = load_bundle(root, verify=False)
    return {name: check_file(bundle.path(name)) for name in bundle.manifest.components}


def check_model(model: onnx.ModelProto) -> tuple[Violation, ...]:
    """Every violation of :data:`RULES` in ``model``, in graph order."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    found: list[Violation] = []
    low, high = table.OPSETS
    if not low <= opset <= high:
        found.append(
            Violation(
                "opset",
                "graph",
                "",
                f"default-domain opset {opset}",
                f"export with an opset from {low} to {high} (we use 18)",
            )  # fmt: skip
        )
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as e:  # noqa: BLE001 - inference is best effort; types then come from the graph
        _LOGGER.debug("shape inference failed (%s); checking with declared types", e)
        inferred = model
    graph = inferred.graph
    checker = _Checker(graph, opset)
    found += checker.graph_io()
    for node in _all_nodes(graph):
        found += checker.node(node)
    found += checker.shape_tensors()
    return tuple(found)


def describe(violations: dict[str, tuple[Violation, ...]]) -> list[str]:
    """One line per violation, ``component: node ...: rule: ...; fix: ...``."""
    return [f"{name}: {v}" for name, vs in violations.items() for v in vs]


# --- the exporter's side: make the graph obey the uint8 rule ---------------------------------


def cast_inputs_first(model) -> int:
    """Make ``Shape`` nodes that read a uint8 graph input read the input's ``Cast`` instead
    (the same shape), and put that Cast first, so the input feeds Casts only (rule ``uint8``).

    The dynamo exporter reads each dynamic size where torch.export bound it, on the graph
    input, even when the network casts first (``CLIP.preprocess_u8``). Returns the number of
    Shape nodes moved. ``model`` is an ``onnx_ir.Model``.
    """
    import onnx_ir as ir

    graph = model.graph
    moved = 0
    for value in graph.inputs:
        if value.dtype != ir.DataType.UINT8:
            continue
        uses = list(value.uses())
        cast = next((n for n, _ in uses if n.op_type == "Cast" and n.domain == ""), None)
        if cast is None:
            continue
        for node, index in uses:
            if node.op_type == "Shape" and node.domain == "":
                node.replace_input_with(index, cast.outputs[0])
                moved += 1
        if moved:  # the Cast reads only the graph input: it can go first
            graph.remove(cast)
            graph.insert_before(next(iter(graph)), cast)
    return moved


# --- the rules -------------------------------------------------------------------------------


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _all_nodes(sub)


def _type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type) if elem_type else "UNDEFINED"


class _Checker:
    """Types, producers and consumers of one graph (subgraphs included), and the node rules."""

    def __init__(self, graph: onnx.GraphProto, opset: int):
        self.graph = graph
        self.opset = opset
        self.types: dict[str, str] = {}
        self.constants: set[str] = set()
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.inputs = {v.name for v in graph.input}
        self.outputs = {v.name for v in graph.output}
        self._collect(graph)

    def _collect(self, graph: onnx.GraphProto) -> None:
        for v in (*graph.input, *graph.output, *graph.value_info):
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type:
                self.types[v.name] = _type_name(v.type.tensor_type.elem_type)
        for t in graph.initializer:
            self.types[t.name] = _type_name(t.data_type)
            self.constants.add(t.name)
        for node in _all_nodes(graph):
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                self.constants.update(n for n in node.output if n)
                kind = _constant_type(node)
                if kind and node.output and node.output[0] not in self.types:
                    self.types[node.output[0]] = kind

    # graph inputs and outputs
    def graph_io(self) -> list[Violation]:
        found = []
        for v in (*self.graph.input, *self.graph.output):
            kind = self.types.get(v.name)
            if kind is None or kind in table.TENSOR_TYPES:
                continue
            found.append(
                Violation(
                    "tensor-type",
                    f"graph {'input' if v.name in self.inputs else 'output'} {v.name!r}",
                    "",
                    f"type {kind}",
                    "give the graph I/O a TensorRT type (float32, float16, int64, ...)",
                )  # fmt: skip
            )
        for name in self.inputs:
            if self.types.get(name) != "UINT8":
                continue
            for node in self.consumers.get(name, []):
                if node.op_type != "Cast" or node.domain not in ("", "ai.onnx"):
                    found.append(
                        _at(node, "uint8", f"reads the uint8 graph input {name!r}",
                            "cast the input first (x.float()) and read only the cast tensor; "
                            "export runs cast_inputs_first for Shape nodes"),
                    )  # fmt: skip
        for name in self.outputs:
            node = self.producer.get(name)
            if self.types.get(name) == "UINT8" and node is not None and node.op_type != "Cast":
                found.append(
                    _at(node, "uint8", f"makes the uint8 graph output {name!r}",
                        "compute in a TensorRT type and end with a Cast to uint8"),
                )  # fmt: skip
        return found

    def node(self, node: onnx.NodeProto) -> list[Violation]:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            return [
                _at(node, "operator", f"custom domain {node.domain!r}",
                    "export with standard ONNX ops (the parser would look for a plugin)"),
            ]  # fmt: skip
        if op not in table.OPERATORS:
            why = table.UNSUPPORTED.get(op, "in neither operator matrix")
            return [
                _at(node, "operator", f"TensorRT does not import {op} ({why})",
                    "rewrite it with supported ops, or keep it out of the graph"),
            ]  # fmt: skip
        found = []
        found += self._types(node)
        found += self._uint8_and_quantized(node)
        found += self._constant_inputs(node)
        found += self._attributes(node)
        limit = table.MAX_OUTPUTS.get(op)
        if limit is not None and len(node.output) > limit:
            found.append(
                _at(node, "outputs", f"declares {len(node.output)} outputs, the parser makes "
                    f"{limit}", f"export {op} with its first output only"),
            )  # fmt: skip
        return found

    def _types(self, node: onnx.NodeProto) -> list[Violation]:
        op = node.op_type
        allowed = {_MATRIX_TYPES[t] for t in table.OPERATORS[op].split()}
        if op in ("Constant", "ConstantOfShape"):
            names = [n for n in node.output[:1] if n]
        else:
            names = [node.input[i] for i in _data_inputs(node, self.opset)]
        found = []
        kinds = {self.types[n] for n in names if n in self.types}
        for name in names:
            kind = self.types.get(name)
            if kind is None or kind in allowed:
                continue
            if kind not in table.TENSOR_TYPES:
                rule, fix = "tensor-type", "compute in float32 or float16"
            elif kind == "UINT8" or kind in table.QUANTIZED_TYPES:
                continue  # the uint8 / quantized-type rules say it better
            else:
                rule, fix = "operator-type", f"cast to one of {_fmt(allowed)} first"
            found.append(_at(node, rule, f"{name!r} is {kind}; {op} takes {_fmt(allowed)}", fix))
        if len(kinds) > 1 and op != "Pow":
            found.append(
                _at(node, "mixed-types", f"inputs of one type variable are {_fmt(kinds)}",
                    "insert a Cast so all are one type"),
            )  # fmt: skip
        for name in node.output:
            kind = self.types.get(name)
            if name and kind is not None and kind not in table.TENSOR_TYPES:
                found.append(
                    _at(node, "tensor-type", f"makes {name!r} of type {kind}",
                        "compute in float32 or float16"),
                )  # fmt: skip
        return found

    def _uint8_and_quantized(self, node: onnx.NodeProto) -> list[Violation]:
        found = []
        op = node.op_type
        for i, name in enumerate(node.output):
            kind = self.types.get(name)
            if kind == "UINT8" and not (name in self.outputs and op == "Cast"):
                found.append(
                    _at(node, "uint8", f"makes the uint8 tensor {name!r}",
                        "keep uint8 to graph inputs (read by a Cast) and outputs (made by one)"),
                )  # fmt: skip
            if kind in table.QUANTIZED_TYPES and not (op == "QuantizeLinear" and i == 0):
                found.append(
                    _at(node, "quantized-type", f"makes the {kind} tensor {name!r}",
                        "quantize only through QuantizeLinear/DequantizeLinear pairs"),
                )  # fmt: skip
        for i, name in enumerate(node.input):
            kind = self.types.get(name)
            quantized_side = (op == "DequantizeLinear" and i in (0, 2)) or (
                op == "QuantizeLinear" and i == 2
            )
            if kind in table.QUANTIZED_TYPES and not quantized_side:
                found.append(
                    _at(node, "quantized-type", f"reads the {kind} tensor {name!r}",
                        "dequantize it first (DequantizeLinear)"),
                )  # fmt: skip
        return found

    def _constant_inputs(self, node: onnx.NodeProto) -> list[Violation]:
        found = []
        for i in table.CONSTANT_INPUTS.get(node.op_type, ()):
            if i < len(node.input) and node.input[i] and node.input[i] not in self.constants:
                found.append(
                    _at(node, "constant-input",
                        f"input {i} {node.input[i]!r} is computed, the parser needs a constant",
                        "make it an initializer (fold the computation at export)"),
                )  # fmt: skip
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zero = node.input[2]
            if zero and zero not in self.constants:
                found.append(
                    _at(node, "constant-input", f"zero point {zero!r} is computed",
                        "use a constant zero point of 0"),
                )  # fmt: skip
        return found

    def _attributes(self, node: onnx.NodeProto) -> list[Violation]:
        op = node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        found = []
        for name, (default, allowed) in table.ATTRIBUTES.get(op, {}).items():
            value = attrs.get(name, default)
            if value not in allowed:
                found.append(
                    _at(node, "attribute", f"{name}={value!r}",
                        f"use one of {', '.join(repr(a) for a in allowed)}"),
                )  # fmt: skip
        if op in table.POOLING:
            rank = len(attrs.get("kernel_shape", ()))
            if rank not in (2, 3):
                found.append(
                    _at(node, "attribute", f"{rank}-D pooling", "pool in 2-D or 3-D (reshape)")
                )
            if any(d != 1 for d in attrs.get("dilations", ())):
                found.append(
                    _at(node, "attribute", f"dilations={list(attrs['dilations'])}",
                        "pool without dilation"),
                )  # fmt: skip
        if op == "Constant":
            for name in table.CONSTANT_ATTRIBUTES_REFUSED:
                if name in attrs:
                    found.append(
                        _at(node, "attribute", f"Constant with {name}",
                            "store a dense numeric tensor"),
                    )  # fmt: skip
        if op == "Cast" and "to" in attrs:
            allowed = {_MATRIX_TYPES[t] for t in table.OPERATORS["Cast"].split()}
            target = _type_name(attrs["to"])
            if target not in allowed:
                found.append(
                    _at(node, "attribute", f"casts to {target}", f"cast to one of {_fmt(allowed)}")
                )
        return found

    # shape tensors: each shape input, and the arithmetic behind it
    def shape_tensors(self) -> list[Violation]:
        found, seen = [], set()
        for node in _all_nodes(self.graph):
            for i in table.SHAPE_INPUTS.get(node.op_type, ()):
                if i >= len(node.input) or not node.input[i]:
                    continue
                for name, user in self._shape_chain(node.input[i], node):
                    kind = self.types.get(name)
                    ok = _SHAPE_TYPES if name == node.input[i] else _SHAPE_CHAIN_TYPES
                    if kind is None or kind in ok or (name, kind) in seen:
                        continue
                    seen.add((name, kind))
                    found.append(
                        _at(user, "shape-tensor",
                            f"{name!r} ({kind}) feeds the shape input {i} of "
                            f"{node.op_type} {node.name!r}",
                            "compute shapes in int64 from Shape ops and int constants"),
                    )  # fmt: skip
        return found

    def _shape_chain(self, name: str, user: onnx.NodeProto) -> Iterable[tuple[str, onnx.NodeProto]]:
        """(tensor, its reader) for every tensor computing ``name``, back to Shape/Size ops,
        constants and graph inputs."""
        stack, done = [(name, user)], set()
        while stack:
            name, user = stack.pop()
            if name in done:
                continue
            done.add(name)
            yield name, user
            node = self.producer.get(name)
            if node is None or node.op_type in _SHAPE_SOURCES or name in self.constants:
                continue
            stack.extend((n, node) for n in node.input if n)


def _data_inputs(node: onnx.NodeProto, opset: int) -> list[int]:
    """Positions of the inputs typed by the op's main type variable (``T``, else the first
    input's), from the ONNX schema at ``opset``; the first input when there is no schema."""
    present = [i for i, n in enumerate(node.input) if n]
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return present[:1]
    formal = schema.inputs
    if not formal:
        return []
    params = {c.type_param_str for c in schema.type_constraints}
    var = "T" if "T" in params else formal[0].type_str
    return [i for i in present if formal[min(i, len(formal) - 1)].type_str == var]


def _constant_type(node: onnx.NodeProto) -> str | None:
    for attr in node.attribute:
        if attr.name == "value":
            return _type_name(attr.t.data_type)
        if attr.name in ("value_float", "value_floats"):
            return "FLOAT"
        if attr.name in ("value_int", "value_ints"):
            return "INT64"
        if attr.name in ("value_string", "value_strings"):
            return "STRING"
    return None


def _at(node: onnx.NodeProto, rule: str, message: str, fix: str) -> Violation:
    return Violation(rule, node.name or node.output[0], node.op_type, message, fix)


def _fmt(kinds: Iterable[str]) -> str:
    return "/".join(sorted(kinds))


__all__ = [
    "RULES",
    "TensorRTIncompatible",
    "Violation",
    "cast_inputs_first",
    "check_bundle",
    "check_file",
    "check_model",
    "describe",
]
