"""The int8 pass on one exported graph: fp32 in, int8 heavy nodes with measured float islands out.

    quantized, report = quantize_graph(model, Int8Policy(), feeds=calibration_feeds)

It follows the fp16 pass (:mod:`.convert`) step for step, with onnxruntime's quantizer
(``onnxruntime.quantization``) doing the rewrite:

1. **candidates**: every MatMul whose weight is a constant of the graph (Gemm is rewritten as
   MatMul + Add first, since onnxruntime quantizes Gemm only statically; weights computed from
   initializers, e.g. a sliced qkv matrix, are folded into initializers), and with
   ``policy.conv`` every Conv. A MatMul of two activations (the attention core QKᵀ, PV) stays
   float (``activation``), as does anything else (norms, softmax, Sin/Cos): int8 applies to
   weights only;
2. **measure** each candidate's own error: the fp32 graph runs on the calibration feeds with
   the candidates' inputs exposed; each candidate alone, as a one-node graph, is quantized
   the way the whole graph will be (MatMul dynamically, Conv as QDQ calibrated on the
   captured activations) and run by onnxruntime on those activations: the relative L2 of its
   output against fp32. The kernels are the real ones, so AVX2's u8·s8 pair saturation shows
   up here too;
3. **choose**: the error budget ``policy.budget`` (relative L2 of every graph output) is split
   in power over the n candidates: a node whose own error exceeds its share
   ``budget / sqrt(n)`` stays float (``budget``). The quantized graph then runs on the
   calibration feeds. If an output misses the budget the share is halved; if it meets it,
   the measured gain from the nodes' own errors to the output error sets a larger share aimed
   at :data:`TARGET` of the budget, and the larger share is kept only if it still meets the
   budget (``policy.rounds`` rounds at most);
4. the report lists every heavy node kept float with its reason and measured error, the share
   that was used and the output errors on the calibration inputs. Held-out gating, timing and
   the decision per component are the bundle driver's (:mod:`.int8`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from v2a_export.export.precision.calibrate import cpu_session, session_with_outputs
from v2a_export.export.precision.convert import OutputError, output_error
from v2a_export.export.precision.graph import GraphIndex, normalize
from v2a_export.export.precision.policy import Fp32Node, Int8Policy, WeightFormat

_LOGGER = logging.getLogger(__name__)

_EXTERNAL_BYTES = 1_800_000_000  # save with external data above this (protobuf limit 2 GB)
CAPTURE_BUDGET_BYTES = 1_000_000_000  # captured activations held at once
ERROR_FEEDS = 2  # calibration feeds each node's own error is measured on
TARGET = 0.7  # a grown share aims at this fraction of the budget (margin for held-out inputs)


@dataclass(frozen=True)
class _Round:
    share: float
    chosen: list[str]
    model: onnx.ModelProto
    outputs: dict[str, OutputError]


@dataclass(frozen=True)
class Int8Graph:
    """What the int8 pass did to one graph."""

    weights: str  # WeightFormat value
    heavy_nodes: int  # MatMul/Gemm/Conv nodes of the (Gemm-rewritten) graph
    int8_nodes: tuple[str, ...]
    fp32_nodes: tuple[Fp32Node, ...]  # heavy nodes kept float, with the reason
    node_errors: dict[str, float]  # every candidate's own measured relative L2
    share: float  # per-node error share of the final round
    rounds: int
    budget: float
    outputs: dict[str, OutputError]  # int8 vs fp32 graph on the calibration feeds
    calibration_feeds: int

    @property
    def target(self) -> str:
        return "int8"

    @property
    def within_budget(self) -> bool:
        return bool(self.outputs) and all(
            e.finite and e.rel_l2 <= self.budget for e in self.outputs.values()
        )

    def counts(self) -> dict[str, int]:
        """Heavy nodes kept float, per reason."""
        return dict(Counter(n.reason for n in self.fp32_nodes).most_common())

    def manifest_lines(self) -> tuple[str, ...]:
        return tuple(n.describe() for n in self.fp32_nodes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fp32_by_reason"] = self.counts()
        d["fp32_nodes"] = [asdict(n) for n in self.fp32_nodes]
        d["int8_nodes"] = len(self.int8_nodes)
        return d


def quantize_graph(
    model: onnx.ModelProto,
    policy: Int8Policy,
    *,
    feeds: Sequence[Mapping[str, np.ndarray]],
    threads: int | None = None,
) -> tuple[onnx.ModelProto, Int8Graph]:
    """The int8 version of the fp32 graph ``model`` and its report; ``feeds`` are real
    calibration inputs (at least one)."""
    if not feeds:
        raise ValueError("the int8 pass needs calibration feeds (real inputs)")
    base = prepare(model, feeds[0], threads)
    idx = GraphIndex.of(base)
    candidates, kept = candidate_nodes(idx, policy)
    errors = node_errors(base, idx, candidates, policy, feeds[:ERROR_FEEDS], threads)
    n = max(1, len(candidates))
    share = policy.budget / math.sqrt(n)
    ref = _Cached(cpu_session(base, threads))  # the fp32 outputs, computed once
    best: _Round | None = None
    rounds = 0
    for rounds in range(1, policy.rounds + 1):  # noqa: B007 (reported)
        chosen = [c for c in candidates if errors[c] <= share]
        if not chosen:
            break
        quantized = quantize_nodes(base, chosen, policy, feeds)
        outputs = graph_errors(ref, cpu_session(quantized, threads), feeds)
        worst = max((e.rel_l2 if e.finite else math.inf) for e in outputs.values())
        _LOGGER.info("%s: share %.2e, %d of %d nodes: worst output rel L2 %.2e (budget %.2e)",
                     base.graph.name, share, len(chosen), n, worst, policy.budget)  # fmt: skip
        if worst > policy.budget:
            if best is not None:
                break  # the last passing round stands
            share /= 2
            continue
        best = _Round(share, chosen, quantized, outputs)
        if len(chosen) == n or worst == 0:
            break
        # measured gain from the nodes' own errors to the output: aim the next round's share
        # at TARGET of the budget under that gain
        own = math.sqrt(sum(errors[c] ** 2 for c in chosen))
        grown = TARGET * policy.budget * own / (worst * math.sqrt(n))
        if sum(errors[c] <= grown for c in candidates) == len(chosen):
            break  # no node more
        share = grown
    if best is None:
        best = _Round(share, [], base, {})
    share, chosen, quantized, outputs = best.share, best.chosen, best.model, best.outputs
    ops = {node.name: node.op_type for node in base.graph.node}
    chosen_set = set(chosen)
    for c in candidates:
        if c not in chosen_set:
            detail = f"own rel L2 {errors[c]:.2e} > share {share:.2e}"
            kept[c] = Fp32Node(c, ops[c], "budget", detail)
    order = [node.name for node in base.graph.node]
    report = Int8Graph(
        weights=policy.weights.value,
        heavy_nodes=len(set(candidates) | set(kept)),
        int8_nodes=tuple(c for c in order if c in chosen_set),
        fp32_nodes=tuple(kept[c] for c in order if c in kept),
        node_errors={c: float(errors[c]) for c in candidates},
        share=float(share),
        rounds=rounds,
        budget=policy.budget,
        outputs=outputs,
        calibration_feeds=len(feeds),
    )
    _LOGGER.info("%s: %d of %d heavy nodes int8 (share %.2e, %d rounds), float %s",
                 base.graph.name, len(report.int8_nodes), report.heavy_nodes, share, rounds,
                 report.counts())  # fmt: skip
    return quantized, report


# --- preparation -----------------------------------------------------------------------------

HEAVY_INT8 = ("MatMul", "Conv")


def prepare(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], threads=None):
    """A normalised copy where Gemm is MatMul (+ Add) and every heavy node's weight that is
    computed from initializers alone is an initializer (onnxruntime quantizes initializers)."""
    base = normalize(model)
    _gemm_as_matmul(base)
    idx = GraphIndex.of(base)
    fold = sorted({
        node.input[1]
        for node in base.graph.node
        if node.op_type in HEAVY_INT8 and len(node.input) > 1 and node.input[1]
        and node.input[1] not in idx.initializers and idx.is_constant(node.input[1])
    })  # fmt: skip
    if fold:
        session = session_with_outputs(base, idx, fold, threads)
        values = session.run(fold, dict(feed))
        for name, value in zip(fold, values, strict=True):
            base.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        folded = set(fold)
        keep = [n for n in base.graph.node if not any(o in folded for o in n.output)]
        del base.graph.node[:]
        base.graph.node.extend(keep)
        _prune(base)
    return base


def _gemm_as_matmul(model: onnx.ModelProto) -> None:
    """Gemm(A, B, C) with a constant B, alpha = beta = 1 and no transA becomes
    MatMul(A, B or Bᵀ) + Add(C): the same sums, in a form the dynamic quantizer takes."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes = []
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        b = node.input[1] if node.op_type == "Gemm" and len(node.input) > 1 else None
        if (b not in inits or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                or attrs.get("beta", 1.0) != 1.0):  # fmt: skip
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[b])
        if attrs.get("transB", 0):
            weight = np.ascontiguousarray(weight.T)  # (K, N)
        wname = f"{b}__kn"
        g.initializer.append(numpy_helper.from_array(weight, wname))
        out = node.output[0]
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{out}__mm" if has_bias else out
        nodes.append(helper.make_node("MatMul", [node.input[0], wname], [mm_out], name=node.name))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [out],
                                          name=f"{node.name}__bias"))  # fmt: skip
    del g.node[:]
    g.node.extend(nodes)
    _prune(model)


def _prune(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody reads, and unread initializers."""
    g = model.graph
    while True:
        used = {x for n in g.node for x in n.input} | {v.name for v in g.output}
        keep = [n for n in g.node if any(o in used for o in n.output if o)]
        if len(keep) == len(g.node):
            break
        del g.node[:]
        g.node.extend(keep)
    used = {x for n in g.node for x in n.input}
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)


def candidate_nodes(idx: GraphIndex, policy: Int8Policy) -> tuple[list[str], dict[str, Fp32Node]]:
    """(names of the heavy nodes to measure, {name: why} for heavy nodes that stay float)."""
    candidates: list[str] = []
    kept: dict[str, Fp32Node] = {}
    user = set(policy.keep_float)
    names = {n.name for n in idx.nodes}
    missing = sorted(user - names)
    if missing:
        raise ValueError(f"keep_float: no node named {missing[0]!r} in the graph")
    for node in idx.nodes:
        if node.op_type not in ("MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"):
            continue
        weight = node.input[1] if len(node.input) > 1 else ""
        if node.name in user:
            kept[node.name] = Fp32Node(node.name, node.op_type, "user")
        elif node.op_type == "MatMul" and weight not in idx.initializers:
            reason = "activation" if not idx.is_constant(weight) else "weight"
            kept[node.name] = Fp32Node(node.name, node.op_type, reason)
        elif node.op_type == "Conv" and policy.conv and weight in idx.initializers:
            candidates.append(node.name)
        elif node.op_type == "MatMul":
            candidates.append(node.name)
        else:
            detail = "Conv: pass conv=True (static QDQ)" if node.op_type == "Conv" else ""
            kept[node.name] = Fp32Node(node.name, node.op_type, "op", detail)
    return candidates, kept


# --- measurement -----------------------------------------------------------------------------


def node_errors(
    model: onnx.ModelProto,
    idx: GraphIndex,
    names: Sequence[str],
    policy: Int8Policy,
    feeds: Sequence[Mapping[str, np.ndarray]],
    threads: int | None = None,
) -> dict[str, float]:
    """Each named node's own error: the node alone, quantized as :func:`quantize_nodes` would,
    on the activations the fp32 graph feeds it (worst relative L2 over ``feeds``)."""
    by_name = {n.name: n for n in idx.nodes}
    out: dict[str, float] = {}
    for captured in _captures(model, idx, names, feeds, threads):
        for name in names:
            node = by_name[name]
            acts = [x for x in node.input if x and x not in idx.initializers]
            if name in out or not all(a in captured for a in acts):
                continue
            samples = [{a: captured[a][k] for a in acts} for k in range(len(feeds))]
            out[name] = _own_error(model, idx, node, acts, samples, policy, threads)
    return out


def _captures(model, idx, names, feeds, threads) -> Iterator[dict[str, list[np.ndarray]]]:
    """Chunks of {activation tensor: [value per feed]} covering the named nodes' inputs,
    sized to stay near :data:`CAPTURE_BUDGET_BYTES`."""
    by_name = {n.name: n for n in idx.nodes}
    tensors: list[str] = []
    for name in names:
        for x in by_name[name].input:
            if x and x not in idx.initializers and x not in tensors:
                tensors.append(x)
    start, size = 0, 16
    while start < len(tensors):
        part = tensors[start : start + size]
        session = session_with_outputs(model, idx, part, threads)
        got: dict[str, list[np.ndarray]] = {t: [] for t in part}
        held = 0
        for feed in feeds:
            values = session.run(part, dict(feed))
            held += sum(v.nbytes for v in values)
            for t, v in zip(part, values, strict=True):
                got[t].append(v)
        yield got
        start += len(part)
        per_tensor = max(1, held // len(part))
        size = int(min(max(CAPTURE_BUDGET_BYTES // per_tensor, 1), 256))


def _own_error(model, idx, node, acts, samples, policy, threads) -> float:
    """Relative L2 of one node quantized alone vs fp32, worst over ``samples``."""
    single = _single_node_model(model, idx, node, acts)
    quantized = quantize_nodes(single, [node.name], policy, samples)
    ref, q = cpu_session(single, threads), cpu_session(quantized, threads)
    worst = 0.0
    for sample in samples:
        want = ref.run(None, sample)[0]
        got = q.run(None, sample)[0]
        e = output_error(got, want)
        worst = max(worst, e.rel_l2 if e.finite else math.inf)
    return worst


def _single_node_model(model, idx: GraphIndex, node, acts) -> onnx.ModelProto:
    g = model.graph
    inits = [t for t in g.initializer if t.name in set(node.input)]
    inputs = [helper.make_tensor_value_info(a, idx.types[a], None) for a in acts]
    out_type = idx.types.get(node.output[0], onnx.TensorProto.FLOAT)
    outputs = [helper.make_tensor_value_info(node.output[0], out_type, None)]
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    graph = helper.make_graph([copy], node.name, inputs, outputs, inits)
    single = helper.make_model(graph, opset_imports=model.opset_import)
    single.ir_version = model.ir_version
    return single


class _Cached:
    """An onnxruntime session whose outputs per feed are computed once (the fp32 graph that
    every round of the share search compares with)."""

    def __init__(self, session):
        self.session, self.memo = session, {}

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, names, feed):
        key = (tuple(names), id(feed))
        if key not in self.memo:
            self.memo[key] = self.session.run(names, feed)
        return self.memo[key]


def graph_errors(ref, session, feeds) -> dict[str, OutputError]:
    """Worst error per graph output of ``session`` vs ``ref`` (onnxruntime sessions)."""
    names = [o.name for o in ref.get_outputs()]
    worst: dict[str, OutputError] = {}
    for feed in feeds:
        want = ref.run(names, feed)
        got = session.run(names, dict(feed))
        for name, g, w in zip(names, got, want, strict=True):
            e = output_error(g, w)
            old = worst.get(name)
            if old is None or not e.finite or (old.finite and e.rel_l2 > old.rel_l2):
                worst[name] = e
    return worst


# --- the rewrite (onnxruntime's quantizer) ---------------------------------------------------


def quantize_nodes(
    model: onnx.ModelProto,
    names: Sequence[str],
    policy: Int8Policy,
    feeds: Sequence[Mapping[str, np.ndarray]] = (),
) -> onnx.ModelProto:
    """``model`` with the named MatMul nodes quantized dynamically and the named Conv nodes
    as calibrated QDQ (on ``feeds``), weights per ``policy``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    ops = {n.name: n.op_type for n in model.graph.node}
    matmuls = [n for n in names if ops[n] == "MatMul"]
    convs = [n for n in names if ops[n] == "Conv"]
    weight_type = QuantType.QUInt8 if policy.weights is WeightFormat.U8 else QuantType.QInt8
    common = {
        "per_channel": policy.per_channel,
        "reduce_range": policy.weights is WeightFormat.S8_7BIT,
        "weight_type": weight_type,
    }

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else dict(item)

    with tempfile.TemporaryDirectory(prefix="v2a-int8-") as tmp, _quiet_root_logger():
        path = _save(model, Path(tmp) / "fp32.onnx")
        big = model.ByteSize() > _EXTERNAL_BYTES
        if convs:
            if not feeds:
                raise ValueError("static Conv quantization needs calibration feeds")
            out = Path(tmp) / "static.onnx"
            quantize_static(
                path, out, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                nodes_to_quantize=convs, activation_type=QuantType.QUInt8,
                use_external_data_format=big,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
                **common,
            )  # fmt: skip
            path = out
        if matmuls:
            out = Path(tmp) / "dynamic.onnx"
            quantize_dynamic(
                path, out, op_types_to_quantize=["MatMul"], nodes_to_quantize=matmuls,
                use_external_data_format=big,
                extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True},
                **common,
            )  # fmt: skip
            path = out
        return onnx.load(str(path))


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantizer warns through the root logger about every non-float graph input
    and suggests its pre-processing (which would rename our nodes); keep that off the user's
    terminal while it runs, and restore the level after."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    if model.ByteSize() > _EXTERNAL_BYTES:
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))
    return path


__all__ = [
    "Int8Graph",
    "candidate_nodes",
    "graph_errors",
    "node_errors",
    "prepare",
    "quantize_graph",
    "quantize_nodes",
]
