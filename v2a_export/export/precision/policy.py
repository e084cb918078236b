"""The vocabulary of the mixed-precision pass: targets, the policy, and per-node decisions.

Kept apart from the pass itself so that the rules (:mod:`.rules`), the graph rewrite
(:mod:`.graph`) and the bundle-level driver (:mod:`.convert`) share one set of types.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from onnx import TensorProto
from v2a_runtime.config import PRECISIONS

FP16_MAX = 65504.0  # largest finite float16
FP16_TINY = 2.0**-24  # smallest float16 subnormal; nonzero values below it flush to 0
FP16_NORMAL = 2.0**-14  # smallest normal float16; below it precision degrades


class Precision(str, Enum):
    """Numeric format of a graph's compute (the runtime's :data:`PRECISIONS`, typed). ``fp32``
    is the exported reference."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @classmethod
    def parse(cls, name: str | Precision) -> Precision:
        try:
            return cls(name)
        except ValueError:
            allowed = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown precision {name!r}; choose from {allowed}") from None

    @property
    def onnx_type(self) -> int:
        return {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16,
                "bf16": TensorProto.BFLOAT16}[self.value]  # fmt: skip

    @property
    def default_range_limit(self) -> float:
        """Largest |value| a low-precision tensor may reach in calibration (16x headroom
        below float16's 65504 for inputs the calibration did not see; bf16 has fp32's
        exponent range, so only infinities matter there)."""
        return 4096.0 if self is Precision.FP16 else 1e30


assert tuple(Precision) == PRECISIONS, "Precision must list the runtime's precision names"


class GraphIO(str, Enum):
    """Element type of the graph's float inputs and outputs."""

    FP32 = "fp32"  # float32 at the boundary (the contract's default; casts inside)
    NATIVE = "native"  # the target type at the boundary (fp16 in, fp16 out)

    @classmethod
    def parse(cls, name: str | GraphIO) -> GraphIO:
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown graph I/O type {name!r}; choose from fp32, native") from None


@dataclass(frozen=True)
class PrecisionPolicy:
    """What the pass keeps in fp32. Every rule can be switched off to measure what it buys.

    - ``norm_fp32``: reductions and the statistics chain of every norm (LayerNorm, RMSNorm's
      x² → mean → +eps → sqrt → 1/· → x·r, L2 normalisation), see deployment.md §4 rows 2, 7;
    - ``trig_fp32``: Sin/Cos and the phase computation feeding them (RoPE and time-embedding
      tables, Snake's sin(αx)), row 9;
    - ``division_fp32``: Reciprocal and Div by a computed value (Snake 1/β, norms), row 21;
    - ``softmax_fp32``: Softmax itself. Off by default: the attention core (QKᵀ → Softmax →
      PV) stays in the target type so fused attention kernels apply; their softmax keeps
      max/sum statistics in fp32 internally;
    - ``range_limit``: any tensor whose calibrated |value| exceeds it is fp32, and so are its
      producer and consumers (None: the target's default);
    - ``output_rel_l2``: after conversion the pass measures every graph output against fp32 on
      the calibration inputs; an output worse than this gets its final projection in fp32
      (None: :attr:`output_limit`'s per-target default);
    - ``absorb``: cheap nodes whose every neighbour is fp32 join the island (fewer Casts);
    - ``keep_fp32``: node names forced to fp32 by the user.
    """

    target: Precision = Precision.FP16
    io: GraphIO = GraphIO.FP32
    norm_fp32: bool = True
    trig_fp32: bool = True
    division_fp32: bool = True
    softmax_fp32: bool = False
    range_limit: float | None = None
    output_rel_l2: float | None = None  # None: 5e-3 for fp16, 2e-2 for bf16
    absorb: bool = True
    keep_fp32: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", Precision.parse(self.target))
        object.__setattr__(self, "io", GraphIO.parse(self.io))
        if self.target is Precision.FP32:
            raise ValueError("the mixed-precision pass needs a low target: fp16 or bf16")
        if self.target is Precision.BF16 and self.io is GraphIO.NATIVE:
            raise ValueError(
                "bf16 graph I/O cannot be fed from numpy (no bfloat16 dtype); use fp32 I/O"
            )
        if self.range_limit is not None and not self.range_limit > 0:
            raise ValueError(f"range_limit must be > 0, got {self.range_limit}")

    @property
    def limit(self) -> float:
        return self.range_limit or self.target.default_range_limit

    @property
    def output_limit(self) -> float:
        """Output rel L2 that triggers the final-projection refinement: ~10x the error of the
        pass on the tiny graphs (fp16 ~5e-4, bf16 ~4e-3 per output; bf16 keeps 8 bits)."""
        if self.output_rel_l2 is not None:
            return self.output_rel_l2
        return 5e-3 if self.target is Precision.FP16 else 2e-2


# Why a node stays in fp32. The manifest lists "<node>: <reason text>".
REASONS = {
    "norm": "norm statistics",
    "reduction": "reduction",
    "trig": "RoPE/time-embedding/Snake phase (Sin/Cos and their argument)",
    "division": "division by a computed value",
    "softmax": "softmax (policy)",
    "range": "calibrated range beyond the limit",
    "subnormal": "calibrated values in the float16 subnormal range",
    "constant": "constant outside the target's range",
    "schema": "no kernel signature for the target type in this ONNX opset",
    "output": "final projection (measured output error)",
    "absorbed": "between fp32 nodes (saves two Casts)",
    "follows": "moves an fp32 tensor (no arithmetic)",
    "user": "requested",
}


@dataclass(frozen=True)
class Fp32Node:
    """One node kept in fp32: its name, op type, reason key (:data:`REASONS`) and detail."""

    name: str
    op: str
    reason: str
    detail: str = ""

    def describe(self) -> str:
        text = REASONS[self.reason]
        return f"{self.name}: {text}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Range:
    """Calibrated statistics of one float tensor over every calibration run. Infinities are
    not counted in ``max_abs``: ±inf (an attention mask) is ±inf in every float format."""

    max_abs: float  # largest finite |value|
    min_nonzero: float  # smallest nonzero |value| (inf when all zero)
    nan: bool  # some value was NaN

    def merge(self, other: Range) -> Range:
        return Range(
            max(self.max_abs, other.max_abs),
            min(self.min_nonzero, other.min_nonzero),
            self.nan or other.nan,
        )

    @classmethod
    def of(cls, x: np.ndarray) -> Range:
        a = np.abs(np.asarray(x, dtype=np.float32))
        nan = bool(np.isnan(a).any())
        a = a[np.isfinite(a)]
        nz = a[a > 0]
        return cls(float(a.max(initial=0.0)), float(nz.min()) if nz.size else float("inf"), nan)


__all__ = [
    "FP16_MAX",
    "FP16_NORMAL",
    "FP16_TINY",
    "REASONS",
    "Fp32Node",
    "GraphIO",
    "Precision",
    "PrecisionPolicy",
    "Range",
]
