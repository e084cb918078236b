"""Which int8 weight format suits this CPU, measured on onnxruntime's own kernels.

    choose_weights() -> (WeightFormat, reason)

onnxruntime quantizes activations to uint8, so the weight format picks the integer kernel:
u8·u8 (widened to 16 bits on AVX2: exact, about the fp32 rate) or u8·s8 (VPMADDUBSW on AVX2,
whose int16 pair sums saturate; VPDPBUSD on AVX-512 VNNI / AVX-VNNI and AMX tiles, which
accumulate in int32: exact and several times faster). Two measurements decide: whether a u8·s8
product that saturates an int16 pair sum (255 · 127 · 2 > 32767) comes out exact, and the
rates of the two kernels on a square product. u8·s8 is chosen only when it is exact and
clearly faster; otherwise u8 (the safe format everywhere).
"""

from __future__ import annotations

import time

import numpy as np

from .policy import WeightFormat

SIZE = 512  # square product for the rates (large enough to reach the kernels' peaks)
REPS = 5  # best of
FASTER = 1.5  # u8·s8 must be at least this many times the u8·u8 rate


def _session(weight: np.ndarray, k: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("a", TensorProto.UINT8, [None, k])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [None, weight.shape[1]])
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "probe", [x], [y], [numpy_helper.from_array(weight, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])  # fmt: skip


def _rate(session, a: np.ndarray) -> float:
    """Giga multiply-adds x 2 per second of ``session`` on ``a``, best of REPS (CPU time)."""
    best = float("inf")
    for _ in range(REPS):
        t0 = time.process_time()
        session.run(None, {"a": a})
        best = min(best, time.process_time() - t0)
    n = a.shape[0]
    return 2.0 * n**3 / max(best, 1e-9) / 1e9


def u8s8_exact() -> bool:
    """A u8·s8 product whose int16 pair sums would saturate, computed exactly?"""
    k = 64
    a = np.full((4, k), 255, np.uint8)
    b = np.full((k, 4), 127, np.int8)
    (y,) = _session(b, k).run(None, {"a": a})
    return bool(np.all(y == 255 * 127 * k))


def choose_weights() -> tuple[WeightFormat, str]:
    """The weight format for int8 graphs run on this CPU, and the measurements behind it."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (SIZE, SIZE)).astype(np.uint8)
    exact = u8s8_exact()
    s8 = _rate(_session(rng.integers(-127, 128, (SIZE, SIZE)).astype(np.int8), SIZE), a)
    u8 = _rate(_session(rng.integers(0, 256, (SIZE, SIZE)).astype(np.uint8), SIZE), a)
    measured = (f"u8·s8 {'exact' if exact else 'saturates'}, {s8:.0f} vs u8·u8 {u8:.0f} "
                f"GFLOP/s ({SIZE}² MatMulInteger, one thread)")  # fmt: skip
    if exact and s8 >= FASTER * u8:
        return WeightFormat.S8, f"auto: s8 ({measured})"
    return WeightFormat.U8, f"auto: u8 ({measured})"


__all__ = ["choose_weights", "u8s8_exact"]
