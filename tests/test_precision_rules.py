"""The mixed-precision pass on small hand-built graphs: each rule keeps exactly the nodes it
names in fp32 and why, the rewrite leaves no node with mixed float inputs, graph I/O types
follow the policy, and the emulation twin rounds every op as a GPU stores it (where
onnxruntime's CPU provider does not)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from v2a_export.export.precision.convert import convert_graph, cpu_session  # noqa: E402
from v2a_export.export.precision.graph import (  # noqa: E402
    GraphIndex,
    bf16_round,
    emulate,
    mixed_type_errors,
)
from v2a_export.export.precision.policy import Precision, PrecisionPolicy  # noqa: E402

F32, F16, BF16 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16


def _model(nodes, inputs, outputs, inits=(), opset=18):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
        [
            numpy_helper.from_array(
                np.asarray(v, np.float32 if v.dtype.kind == "f" else v.dtype), k
            )
            for k, v in inits
        ],  # fmt: skip
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _types(model) -> dict[str, int]:
    """elem type of every node output of the rewritten graph."""
    return GraphIndex.of(model).types


def _node_out_type(model, name: str) -> int:
    node = next(n for n in model.graph.node if n.name == name)
    return _types(model)[node.output[0]]


def _rmsnorm_mlp():
    """x (B, 8) -> RMSNorm (x^2 -> mean -> +eps -> sqrt -> 1/. -> x*r) -> MatMul -> y, plus a
    mean pooling of x -> MatMul -> pooled."""
    rng = np.random.default_rng(0)
    inits = [
        ("two", np.array(2.0)),
        ("eps", np.array(1e-6)),
        ("axes", np.array([-1], np.int64)),
        ("w", rng.standard_normal((8, 4))),
        ("pool_axes", np.array([0], np.int64)),
    ]
    nodes = [
        helper.make_node("Pow", ["x", "two"], ["sq"], name="square"),
        helper.make_node("ReduceMean", ["sq", "axes"], ["ms"], name="mean_sq"),
        helper.make_node("Add", ["ms", "eps"], ["mse"], name="add_eps"),
        helper.make_node("Sqrt", ["mse"], ["rms"], name="sqrt"),
        helper.make_node("Reciprocal", ["rms"], ["inv"], name="rsqrt"),
        helper.make_node("Mul", ["x", "inv"], ["xn"], name="normalize"),
        helper.make_node("MatMul", ["xn", "w"], ["y"], name="proj"),
        helper.make_node("ReduceMean", ["x", "pool_axes"], ["pm"], name="pool"),
        helper.make_node("MatMul", ["pm", "w"], ["pooled"], name="pool_proj"),
    ]
    return _model(nodes, [("x", F32, ["B", 8])], [("y", F32), ("pooled", F32)], inits)


def test_norm_statistics_stay_fp32_and_the_projection_goes_fp16():
    converted, report = convert_graph(_rmsnorm_mlp(), PrecisionPolicy("fp16"))
    reasons = {n.name: n.reason for n in report.fp32_nodes}
    chain = ("square", "mean_sq", "add_eps", "sqrt", "rsqrt", "normalize")
    assert {k: reasons.get(k) for k in chain} == dict.fromkeys(chain, "norm")
    assert reasons["pool"] == "reduction"  # a pooling, not a norm: only the reduction itself
    assert _node_out_type(converted, "proj") == F16
    assert _node_out_type(converted, "pool_proj") == F16
    assert _node_out_type(converted, "normalize") == F32
    assert mixed_type_errors(converted) == []
    # fp32 graph I/O by default, with the Casts inside
    assert [v.type.tensor_type.elem_type for v in converted.graph.input] == [F32]
    assert [v.type.tensor_type.elem_type for v in converted.graph.output] == [F32, F32]
    assert report.casts > 0 and report.low_nodes == 2


def test_native_io_makes_the_boundary_fp16_except_where_fp32_nodes_read():
    converted, _ = convert_graph(_rmsnorm_mlp(), PrecisionPolicy("fp16", io="native"))
    # x is read by the norm statistics (fp32): it stays float32; the outputs are fp16
    assert [v.type.tensor_type.elem_type for v in converted.graph.input] == [F32]
    assert [v.type.tensor_type.elem_type for v in converted.graph.output] == [F16, F16]
    assert mixed_type_errors(converted) == []
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    y, pooled = cpu_session(converted).run(None, {"x": x})
    want = cpu_session(_rmsnorm_mlp()).run(None, {"x": x})
    assert y.dtype == np.float16 and np.allclose(y, want[0], rtol=1e-2, atol=1e-2)


def test_measured_range_keeps_large_activations_and_their_neighbours_fp32():
    rng = np.random.default_rng(2)
    inits = [("w", rng.standard_normal((8, 8))), ("big", np.array(3e4)),
             ("small", np.array(1 / 3e4)), ("w2", rng.standard_normal((8, 8)))]  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"),
        helper.make_node("Mul", ["h", "big"], ["hb"], name="scale_up"),  # |hb| ~ 1e5 > 65504
        helper.make_node("Mul", ["hb", "small"], ["th"], name="scale_down"),
        helper.make_node("MatMul", ["th", "w2"], ["y"], name="mm2"),
    ]
    model = _model(nodes, [("x", F32, ["B", 8])], [("y", F32)], inits)
    feeds = [{"x": rng.standard_normal((4, 8)).astype(np.float32)} for _ in range(2)]
    _, guessed = convert_graph(model, PrecisionPolicy("fp16"))  # op rules only
    assert guessed.fp32_nodes == ()
    converted, measured = convert_graph(model, PrecisionPolicy("fp16"), feeds=feeds)
    reasons = {n.name: n.reason for n in measured.fp32_nodes}
    assert reasons == {"scale_up": "range", "scale_down": "range"}  # producer, consumer of hb
    assert _node_out_type(converted, "mm1") == F16 and _node_out_type(converted, "mm2") == F16
    assert measured.calibrated_tensors >= 4 and measured.calibration_feeds == 2
    out = measured.outputs["y"]
    assert out.finite and out.cosine > 0.999
    # without the range rule the fp16 graph overflows: hb goes to inf
    bad = convert_graph(model, PrecisionPolicy("fp16", range_limit=1e9), feeds=feeds)[1]
    assert "scale_up" not in {n.name for n in bad.fp32_nodes}
    assert not bad.outputs["y"].finite or bad.outputs["y"].rel_l2 > 1e-2


def test_trig_phase_chain_stops_where_two_activations_merge():
    """Snake-like: (conv + residual) -> ·alpha -> sin -> ^2 -> ·c -> + : the phase x·alpha and
    sin are fp32, the merge before them is not; a RoPE-like t·f -> cos chain is fp32 whole."""
    rng = np.random.default_rng(3)
    inits = [("w", rng.standard_normal((4, 4, 1))), ("alpha", rng.uniform(1, 3, (1, 4, 1))),
             ("two", np.array(2.0)), ("c", rng.uniform(0.5, 1, (1, 4, 1))),
             ("freq", np.array([1.0, 10.0, 100.0, 1000.0])),
             ("ax", np.array([-1], np.int64))]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"], name="conv"),
        helper.make_node("Add", ["h", "x"], ["r"], name="residual"),
        helper.make_node("Mul", ["r", "alpha"], ["phase"], name="snake_phase"),
        helper.make_node("Sin", ["phase"], ["s"], name="snake_sin"),
        helper.make_node("Pow", ["s", "two"], ["s2"], name="snake_sq"),
        helper.make_node("Mul", ["s2", "c"], ["sc"], name="snake_scale"),
        helper.make_node("Add", ["r", "sc"], ["y"], name="snake_out"),
        helper.make_node("Unsqueeze", ["t", "ax"], ["tu"], name="t_unsq"),
        helper.make_node("Mul", ["tu", "freq"], ["ang"], name="t_angle"),
        helper.make_node("Cos", ["ang"], ["emb"], name="t_cos"),
    ]
    model = _model(nodes, [("x", F32, [1, 4, 16]), ("t", F32, ["B"])], [("y", F32), ("emb", F32)],
                   inits)  # fmt: skip
    converted, report = convert_graph(model, PrecisionPolicy("fp16"))
    trig = {n.name for n in report.fp32_nodes if n.reason == "trig"}
    assert trig == {"snake_phase", "snake_sin", "t_unsq", "t_angle", "t_cos"}
    assert _node_out_type(converted, "residual") == F16
    assert _node_out_type(converted, "conv") == F16
    assert mixed_type_errors(converted) == []
    # native I/O: x goes fp16 at the boundary, t does not (float16's spacing of t times a
    # frequency of 1000 would move the phase by up to 0.5 rad)
    native, _ = convert_graph(model, PrecisionPolicy("fp16", io="native"))
    types = {v.name: v.type.tensor_type.elem_type for v in native.graph.input}
    assert types == {"x": F16, "t": F32}
    assert mixed_type_errors(native) == []


def test_trig_phase_chain_goes_through_a_range_reduction():
    """t·f reduced to [-π, π] (layers.reduce_angle: x - k·hi - k·lo, k = round(x/2π)) before
    cos: x and k·2π are one activation, so the whole reduction stays fp32 with the cos (in
    fp16, round(x/2π) and the reduced angle would lose ~1e-3 rad)."""
    inits = [("freq", np.array([1.0, 100.0, 1e4])), ("ax", np.array([-1], np.int64)),
             ("inv", np.array(1 / (2 * np.pi))), ("hi", np.array(6.283203125)),
             ("lo", np.array(-1.781781975296326e-05)),
             ("w", np.random.default_rng(4).standard_normal((3, 3)))]  # fmt: skip
    nodes = [
        helper.make_node("Unsqueeze", ["t", "ax"], ["tu"], name="t_unsq"),
        helper.make_node("Mul", ["tu", "freq"], ["x"], name="angle"),
        helper.make_node("Mul", ["x", "inv"], ["turns"], name="turns"),
        helper.make_node("Round", ["turns"], ["k"], name="round"),
        helper.make_node("Mul", ["k", "hi"], ["khi"], name="k_hi"),
        helper.make_node("Sub", ["x", "khi"], ["r1"], name="minus_hi"),
        helper.make_node("Mul", ["k", "lo"], ["klo"], name="k_lo"),
        helper.make_node("Sub", ["r1", "klo"], ["r"], name="minus_lo"),
        helper.make_node("Cos", ["r"], ["c"], name="cos"),
        helper.make_node("MatMul", ["c", "w"], ["y"], name="proj"),
    ]
    model = _model(nodes, [("t", F32, ["B"])], [("y", F32)], inits)
    converted, report = convert_graph(model, PrecisionPolicy("fp16"))
    trig = {n.name for n in report.fp32_nodes if n.reason == "trig"}
    assert trig == {"t_unsq", "angle", "turns", "round", "k_hi", "minus_hi", "k_lo",
                    "minus_lo", "cos"}  # fmt: skip
    assert _node_out_type(converted, "proj") == F16
    assert mixed_type_errors(converted) == []


def test_constants_the_target_cannot_hold_keep_their_consumer_fp32():
    inits = [("eps", np.array(1e-9)), ("huge", np.array(1e5)), ("mask", np.array([0.0, -np.inf]))]
    nodes = [
        helper.make_node("Add", ["x", "eps"], ["a"], name="add_tiny"),
        helper.make_node("Mul", ["a", "huge"], ["b"], name="mul_huge"),
        helper.make_node("Add", ["b", "mask"], ["y"], name="add_mask"),
    ]
    model = _model(nodes, [("x", F32, [2])], [("y", F32)], inits)
    _, report = convert_graph(model, PrecisionPolicy("fp16"))
    reasons = {n.name: n.reason for n in report.fp32_nodes}
    assert reasons["add_tiny"] == "constant" and reasons["mul_huge"] == "constant"
    assert reasons.get("add_mask") in (None, "absorbed")  # -inf is -inf in fp16


def test_emulation_twin_rounds_every_low_precision_op():
    """(1 + 2^-12) - 1 through two fp16 nodes: a GPU stores 1 + 2^-12 as 1.0 and returns 0;
    onnxruntime's CPU provider computes both nodes in fp32 and returns 2^-12. The twin
    returns 0, as the GPU would."""
    nodes = [helper.make_node("Add", ["a", "b"], ["s"], name="add"),
             helper.make_node("Sub", ["s", "a"], ["y"], name="sub")]  # fmt: skip
    model = _model(nodes, [("a", F32, [1]), ("b", F32, [1])], [("y", F32)])
    feeds = {"a": np.ones(1, np.float32), "b": np.full(1, 2.0**-12, np.float32)}
    for target, want in (("fp16", 0.0), ("bf16", 0.0)):
        converted, _ = convert_graph(model, PrecisionPolicy(target))
        twin = emulate(converted)
        assert {t.data_type for t in twin.graph.initializer} <= {F32}
        assert cpu_session(twin).run(None, feeds)[0][0] == want
    fp16, _ = convert_graph(model, PrecisionPolicy("fp16"))
    assert cpu_session(fp16).run(None, feeds)[0][0] == 2.0**-12  # onnxruntime CPU flatters


def test_bf16_keeps_ops_without_a_bf16_signature_fp32_and_rounds_like_onnxruntime():
    rng = np.random.default_rng(4)
    inits = [("w", rng.standard_normal((4, 4, 3))), ("w2", rng.standard_normal((16, 4)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], name="conv", pads=[1, 1]),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm")]  # fmt: skip
    model = _model(nodes, [("x", F32, [1, 4, 16])], [("y", F32)], inits)
    converted, report = convert_graph(model, PrecisionPolicy("bf16"))
    assert {n.name: n.reason for n in report.fp32_nodes} == {"conv": "schema"}
    assert _node_out_type(converted, "mm") == BF16
    assert mixed_type_errors(converted) == []
    x = rng.standard_normal((1, 4, 16)).astype(np.float32)
    got = cpu_session(emulate(converted)).run(None, {"x": x})[0]
    want = cpu_session(model).run(None, {"x": x})[0]
    assert np.isfinite(got).all() and np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.999
    # bf16_round == onnxruntime's Cast(float -> bfloat16 -> float), ties to even included
    v = np.concatenate([rng.standard_normal(1000) * 10.0 ** rng.integers(-20, 20, 1000),
                        [1.00390625, 1.01171875, -3.3e38, 0.0]]).astype(np.float32)  # fmt: skip
    trip = [helper.make_node("Cast", ["v"], ["b"], to=BF16),
            helper.make_node("Cast", ["b"], ["r"], to=F32)]  # fmt: skip
    cast = helper.make_graph(
        trip, "c", [helper.make_tensor_value_info("v", F32, [None])],
        [helper.make_tensor_value_info("r", F32, [None])],
    )  # fmt: skip
    sess = ort.InferenceSession(
        helper.make_model(cast, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    assert np.array_equal(bf16_round(v), sess.run(None, {"v": v})[0])


def test_the_static_check_catches_mixed_float_inputs():
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=F16),
             helper.make_node("Add", ["h", "x"], ["y"], name="mixed")]  # fmt: skip
    bad = _model(nodes, [("x", F32, [2])], [("y", F16)])
    assert mixed_type_errors(bad)  # onnx's strict inference or our per-node check


def test_policy_errors_name_the_value_and_the_choices():
    with pytest.raises(ValueError, match="fp16 or bf16"):
        PrecisionPolicy("fp32")
    with pytest.raises(ValueError, match="choose from fp32, fp16, bf16"):
        Precision.parse("int8")
    with pytest.raises(ValueError, match="bf16 graph I/O"):
        PrecisionPolicy("bf16", io="native")
    with pytest.raises(ValueError, match="no float node named 'nope'"):
        convert_graph(_rmsnorm_mlp(), PrecisionPolicy("fp16", keep_fp32=("nope",)))
    _, report = convert_graph(_rmsnorm_mlp(), PrecisionPolicy("fp16", keep_fp32=("proj",)))
    assert ("proj", "user") in {(n.name, n.reason) for n in report.fp32_nodes}
