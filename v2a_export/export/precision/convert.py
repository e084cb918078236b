"""The mixed-precision pass on one exported graph: fp32 in, fp16 or bf16 with fp32 islands out.

    converted, report = convert_graph(model, PrecisionPolicy("fp16"), feeds=calibration_feeds)

1. **measure**: the fp32 graph runs on the calibration feeds with every float intermediate
   exposed; each tensor's largest |value| is kept (:mod:`.calibrate`);
2. **classify**: op-type rules and the measured ranges decide, node by node, what stays fp32
   and why (:mod:`.rules`);
3. **rewrite**: explicit Casts at every boundary, constants stored in the type they are read
   in, graph I/O fp32 unless asked otherwise (:mod:`.graph`);
4. **check**: no node reads mixed float types; onnx's strict type inference passes;
5. **refine (measured)**: the rewritten graph's CPU emulation twin (per-op rounding) runs on
   the calibration feeds; every graph output whose relative L2 error against fp32 exceeds
   ``policy.output_rel_l2`` gets its final projection kept in fp32, and the graph is rewritten
   once more.

The :class:`GraphPrecision` report lists every fp32 node with its reason; the bundle writer puts
``"<node>: <reason>"`` lines into the manifest's ``fp32_nodes`` and the full report (counts per
reason, measured output errors, Cast count) into ``reports/precision.json``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from v2a_export.export.precision.calibrate import cpu_session, measure_ranges
from v2a_export.export.precision.graph import (
    GraphIndex,
    apply_plan,
    count_casts,
    emulate,
    mixed_type_errors,
    normalize,
)
from v2a_export.export.precision.policy import (
    Fp32Node,
    GraphIO,
    Precision,
    PrecisionPolicy,
    Range,
)
from v2a_export.export.precision.rules import classify, output_projection

_LOGGER = logging.getLogger(__name__)


class PrecisionError(RuntimeError):
    """The rewritten graph fails the static type check (a bug in the pass, not user input)."""


@dataclass(frozen=True)
class OutputError:
    """One graph output of the low-precision graph (emulated) vs the fp32 graph, worst over
    the calibration feeds."""

    rel_l2: float
    cosine: float
    max_abs: float
    finite: bool


@dataclass(frozen=True)
class GraphPrecision:
    """What the pass did to one graph."""

    target: str
    io: str
    float_nodes: int
    low_nodes: int
    fp32_nodes: tuple[Fp32Node, ...]
    casts: int  # Cast nodes added
    calibrated_tensors: int  # tensors with a measured range (0: op rules only)
    calibration_feeds: int
    outputs: dict[str, OutputError]  # measured on the calibration feeds (emulated low precision)
    refined: tuple[str, ...]  # outputs whose final projection the measurement moved to fp32

    def counts(self) -> dict[str, int]:
        """fp32 nodes per reason."""
        return dict(Counter(n.reason for n in self.fp32_nodes).most_common())

    def manifest_lines(self) -> tuple[str, ...]:
        return tuple(n.describe() for n in self.fp32_nodes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fp32_by_reason"] = self.counts()
        d["fp32_nodes"] = [asdict(n) for n in self.fp32_nodes]
        return d


def convert_graph(
    model: onnx.ModelProto,
    policy: PrecisionPolicy,
    *,
    feeds: Sequence[Mapping[str, np.ndarray]] = (),
    ranges: Mapping[str, Range] | None = None,
    threads: int | None = None,
) -> tuple[onnx.ModelProto, GraphPrecision]:
    """The mixed-precision version of the fp32 graph ``model`` and its report. ``feeds``
    (calibration inputs) enable the measured rules; ``ranges`` may be given precomputed."""
    base = normalize(model)
    if ranges is None and feeds:
        ranges = measure_ranges(base, feeds, threads=threads)
    extra: dict[str, Fp32Node] = {}
    refined: list[str] = []
    converted, low, fp32 = _rewrite(base, ranges, policy, extra)
    outputs = _output_errors(base, converted, feeds, threads) if feeds else {}
    bad = [o for o, e in outputs.items() if not (e.finite and e.rel_l2 <= policy.output_limit)]
    if bad:
        for o in bad:
            e = outputs[o]
            detail = f"{o}: rel_l2 {e.rel_l2:.1e} > {policy.output_limit:.0e}"
            for name in output_projection(base, o):
                extra.setdefault(name, Fp32Node(name, _op(base, name), "output", detail))
        refined = bad
        converted, low, fp32 = _rewrite(base, ranges, policy, extra)
        outputs = _output_errors(base, converted, feeds, threads)
    report = GraphPrecision(
        target=policy.target.value,
        io=policy.io.value,
        float_nodes=len(low) + len(fp32),
        low_nodes=len(low),
        fp32_nodes=tuple(fp32[n] for n in _order(base) if n in fp32),
        casts=count_casts(converted, base),
        calibrated_tensors=len(ranges or {}),
        calibration_feeds=len(feeds),
        outputs=outputs,
        refined=tuple(refined),
    )
    _LOGGER.info(
        "%s: %d of %d float nodes in %s, %d kept fp32 %s, %d casts",
        model.graph.name, report.low_nodes, report.float_nodes, report.target,
        len(report.fp32_nodes), report.counts(), report.casts,
    )  # fmt: skip
    return converted, report


def _rewrite(base, ranges, policy, extra):
    low, fp32 = classify(base, ranges, policy, extra)
    work = onnx.ModelProto()
    work.CopyFrom(base)
    converted = apply_plan(work, low, policy.target.onnx_type, policy.io is GraphIO.NATIVE)
    problems = mixed_type_errors(converted)
    if problems:
        raise PrecisionError(
            f"{base.graph.name}: the {policy.target.value} graph fails the type check: "
            + "; ".join(problems[:5])
        )
    return converted, low, fp32


def _op(model: onnx.ModelProto, name: str) -> str:
    return next(n.op_type for n in model.graph.node if n.name == name)


def _order(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node]


def _output_errors(base, converted, feeds, threads) -> dict[str, OutputError]:
    ref = cpu_session(base, threads)
    twin = cpu_session(emulate(converted), threads)
    names = [o.name for o in base.graph.output]
    idx = GraphIndex.of(base)
    worst: dict[str, OutputError] = {}
    for feed in feeds:
        want = ref.run(names, dict(feed))
        got = twin.run(names, {k: np.asarray(v, np.float32) if idx.is_float(k) else v
                               for k, v in feed.items()})  # fmt: skip
        for name, g, w in zip(names, got, want, strict=True):
            e = output_error(g, w)
            old = worst.get(name)
            if old is None or _worse(e, old):
                worst[name] = e
    return worst


def output_error(got: np.ndarray, want: np.ndarray) -> OutputError:
    g = np.asarray(got, dtype=np.float64).ravel()
    w = np.asarray(want, dtype=np.float64).ravel()
    finite = bool(np.isfinite(g).all())
    if not finite:
        return OutputError(float("inf"), float("nan"), float("inf"), False)
    diff = g - w
    wn, gn = float(np.linalg.norm(w)), float(np.linalg.norm(g))
    rel = float(np.linalg.norm(diff)) / wn if wn > 0 else float(np.abs(diff).max(initial=0.0))
    cos = float(g @ w) / (wn * gn) if wn * gn > 0 else (1.0 if rel == 0 else 0.0)
    return OutputError(rel, cos, float(np.abs(diff).max(initial=0.0)), True)


def _worse(a: OutputError, b: OutputError) -> bool:
    if a.finite != b.finite:
        return not a.finite
    return a.rel_l2 > b.rel_l2


__all__ = [
    "GraphIO",
    "GraphPrecision",
    "OutputError",
    "Precision",
    "PrecisionError",
    "PrecisionPolicy",
    "convert_graph",
    "cpu_session",
    "output_error",
]
