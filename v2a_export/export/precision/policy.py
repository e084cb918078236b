"""The vocabulary of the mixed-precision pass: targets, the policy, and per-node decisions.

Kept apart from the pass itself so that the rules (:mod:`.rules`), the graph rewrite
(:mod:`.graph`) and the bundle-level driver (:mod:`.convert`) share one set of types.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from onnx import TensorProto
from v2a_runtime.config import FLOAT_PRECISIONS

FP16_MAX = 65504.0  # largest finite float16
FP16_TINY = 2.0**-24  # smallest float16 subnormal; nonzero values below it flush to 0
FP16_NORMAL = 2.0**-14  # smallest normal float16; below it precision degrades


class Precision(str, Enum):
    """Float format of a graph's compute (the runtime's :data:`FLOAT_PRECISIONS`, typed).
    ``fp32`` is the exported reference; int8 has its own pass (:class:`Int8Policy`)."""

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


assert tuple(Precision) == FLOAT_PRECISIONS, "Precision must list the runtime's float precisions"


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
    """One node kept in fp32: its name, op type, reason key (:data:`REASONS`, or
    :data:`INT8_REASONS` for a heavy node an int8 graph keeps float) and detail."""

    name: str
    op: str
    reason: str
    detail: str = ""

    def describe(self) -> str:
        text = REASONS.get(self.reason) or INT8_REASONS[self.reason]
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


# --- int8 ------------------------------------------------------------------------------------


class WeightFormat(str, Enum):
    """How int8 weights are stored. Activations are always uint8 (onnxruntime's
    DynamicQuantizeLinear; QDQ activations likewise), so this chooses the kernel family.

    - ``u8``: U8U8, uint8 weights with a symmetric per-channel scale (zero point 128). On AVX2
      onnxruntime widens both operands to 16 bits (VPMADDWD): no intermediate saturation.
    - ``s8-7bit``: U8S8 with 7-bit weights (onnxruntime's ``reduce_range``), the documented
      mitigation for AVX2 and AVX-512 without VNNI.
    - ``s8``: U8S8 with full 8-bit weights. VPMADDUBSW adds two u8·s8 products into a saturating
      int16 (255·127·2 > 32767): on AVX2 the measured output error is ~10x that of the other
      two (docs/precision.md); on VNNI CPUs (VPDPBUSD, int32 accumulation) it is exact.

    S8S8 is not offered: onnxruntime's s8s8 MatMulInteger ran 4-9x slower than u8s8 here
    (benchmarks/cpu.py, GEMM peaks).
    """

    U8 = "u8"
    S8_7BIT = "s8-7bit"
    S8 = "s8"

    @classmethod
    def parse(cls, name: str | WeightFormat) -> WeightFormat:
        try:
            return cls(name)
        except ValueError:
            allowed = ", ".join(f.value for f in cls)
            raise ValueError(
                f"unknown int8 weight format {name!r}; choose from {allowed}"
            ) from None


@dataclass(frozen=True)
class Int8Policy:
    """What the int8 pass quantizes, and the error each component may spend.

    Quantized are the heavy nodes with a constant weight: MatMul/Gemm **dynamically** (weights
    int8 per output channel, activations quantized per run from their own min/max: no
    calibrated activation range to go stale), and, with ``conv``, Conv **statically** (QDQ:
    activation ranges calibrated on real inputs, so only where activations allow: a node whose
    calibrated range clips shows a large measured error and stays float). Everything else
    (norms, softmax, the attention core QKᵀ/PV whose both inputs are activations, Sin/Cos,
    elementwise) computes in fp32.

    - ``budget``: relative L2 error of each graph output, on the calibration inputs, that the
      component may spend; a node stays float when its own measured error exceeds its share
      (budget / sqrt(nodes): independent errors add in power), and the share is halved until
      the whole graph meets the budget (:mod:`.quantize`);
    - ``rounds``: how many halvings before the component stays fp32;
    - ``require_speedup``: a component whose int8 graph is not at least ``min_speedup`` times as
      fast as its fp32 graph (timed interleaved on a held-out input, one thread, CPU time)
      stays fp32: int8 spends accuracy, and a tie within timing noise buys nothing;
    - ``keep_float``: node names forced to stay float;
    - ``weights_reason``: why ``weights`` (``--int8-weights auto``: the kernel measurements of
      :mod:`.kernels`), recorded with the policy.
    """

    weights: WeightFormat = WeightFormat.U8
    per_channel: bool = True
    conv: bool = False
    budget: float = 0.05
    rounds: int = 5
    require_speedup: bool = True
    min_speedup: float = 1.1
    keep_float: tuple[str, ...] = ()
    weights_reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", WeightFormat.parse(self.weights))
        if not 0 < self.budget < 1:
            raise ValueError(f"int8 budget must be a relative error in (0, 1), got {self.budget}")
        if self.rounds < 1:
            raise ValueError(f"int8 rounds must be >= 1, got {self.rounds}")
        if not self.min_speedup >= 1:
            raise ValueError(f"int8 min_speedup must be >= 1, got {self.min_speedup}")

    @property
    def target(self) -> str:
        return "int8"


# Why a heavy node of an int8 graph stays float. The manifest lists "<node>: <reason text>".
INT8_REASONS = {
    "activation": "both inputs are activations (attention core; no constant weight)",
    "budget": "measured error above its share of the error budget",
    "op": "op not quantized by this policy",
    "weight": "weight is not a constant of the graph",
    "user": "requested",
}


__all__ = [
    "FP16_MAX",
    "FP16_NORMAL",
    "FP16_TINY",
    "INT8_REASONS",
    "Int8Policy",
    "REASONS",
    "Fp32Node",
    "GraphIO",
    "Precision",
    "PrecisionPolicy",
    "Range",
    "WeightFormat",
]
