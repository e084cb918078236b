"""The static TensorRT parser check (v2a_export.export.trt_compat): one small graph built to
break each rule is caught, with the rule, the node and what is wrong; the same graph written
the way the parser wants passes; the exporter's uint8 rewrite; every committed bundle passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from v2a_export.export import trt_operators  # noqa: E402
from v2a_export.export.trt_compat import (  # noqa: E402
    RULES,
    TensorRTIncompatible,
    cast_inputs_first,
    check_bundle,
    check_model,
    describe,
)

REPO = Path(__file__).resolve().parents[1]
F32, F16, U8, I64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8, TensorProto.INT64


def _model(nodes, inputs, outputs, inits=(), opset=18) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _found(model) -> list[tuple[str, str]]:
    return [(v.rule, v.node) for v in check_model(model)]


def _only(model, rule: str, node: str) -> str:
    """The model breaks exactly ``rule`` at ``node``; returns the message."""
    violations = check_model(model)
    assert [(v.rule, v.node) for v in violations] == [(rule, node)], [str(v) for v in violations]
    return violations[0].message


# -- uint8: the encoders' pattern ---------------------------------------------------------------


def _pixels(first_op: str) -> onnx.ModelProto:
    """uint8 frames (F, H, W, 3) -> float (F, 3, H, W) and their shape, the way the encoders
    were exported (``first_op="Transpose"``: Shape and Transpose read the uint8 input) or as
    TensorRT needs them (``"Cast"``: everything reads the cast tensor)."""
    if first_op == "Transpose":
        nodes = [
            helper.make_node("Shape", ["frames"], ["s"], name="shape"),
            helper.make_node("Transpose", ["frames"], ["t"], name="permute", perm=[0, 3, 1, 2]),
            helper.make_node("Cast", ["t"], ["y"], name="cast", to=F32),
        ]
    else:
        nodes = [
            helper.make_node("Cast", ["frames"], ["c"], name="cast", to=F32),
            helper.make_node("Shape", ["c"], ["s"], name="shape"),
            helper.make_node("Transpose", ["c"], ["y"], name="permute", perm=[0, 3, 1, 2]),
        ]
    return _model(
        nodes, [("frames", U8, ["F", 8, 8, 3])], [("y", F32, ["F", 3, 8, 8]), ("s", I64, [4])]
    )


def test_uint8_read_by_a_transpose_and_a_shape_is_caught():
    found = _found(_pixels("Transpose"))
    assert ("uint8", "shape") in found and ("uint8", "permute") in found
    messages = [str(v) for v in check_model(_pixels("Transpose"))]
    assert any("reads the uint8 graph input 'frames'" in m for m in messages)
    assert any("makes the uint8 tensor 't'" in m for m in messages)  # the intermediate


def test_uint8_cast_first_passes():
    assert check_model(_pixels("Cast")) == ()


def test_uint8_graph_output_must_come_from_a_cast():
    ok = _model(
        [helper.make_node("Cast", ["x"], ["y"], name="to_u8", to=U8)],
        [("x", F32, [4])],
        [("y", U8, [4])],
    )
    assert check_model(ok) == ()
    bad = _model(
        [helper.make_node("Identity", ["x"], ["y"], name="copy")],
        [("x", U8, [4])],
        [("y", U8, [4])],
    )
    assert ("uint8", "copy") in _found(bad)


def test_cast_inputs_first_moves_shape_onto_the_cast():
    ir = pytest.importorskip("onnx_ir")
    before = _model(
        [
            helper.make_node("Shape", ["frames"], ["s"], name="shape"),
            helper.make_node("Cast", ["frames"], ["c"], name="cast", to=F32),
            helper.make_node("Transpose", ["c"], ["t"], name="permute", perm=[0, 3, 1, 2]),
        ],
        [("frames", U8, ["F", 8, 8, 3])],
        [("t", F32, ["F", 3, 8, 8]), ("s", I64, [4])],
    )
    assert ("uint8", "shape") in _found(before)
    model = ir.from_proto(before)
    assert cast_inputs_first(model) == 1
    after = ir.to_proto(model)
    onnx.checker.check_model(after)
    assert [n.op_type for n in after.graph.node] == ["Cast", "Shape", "Transpose"]
    assert list(after.graph.node[1].input) == ["c"]
    assert check_model(after) == ()


# -- the other rules, one graph each ------------------------------------------------------------


def test_opset_outside_what_10_1_parses():
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", F32, [4])],
                   [("y", F32, [4])], opset=21)  # fmt: skip
    assert _only(model, "opset", "graph") == "default-domain opset 21"


def test_operator_tensorrt_does_not_import():
    model = _model(
        [helper.make_node("Unique", ["x"], ["y"], name="uniq")],
        [("x", F32, [4])],
        [("y", F32, ["N"])],
    )
    assert "does not import Unique (10.1 N, 10.15 N)" in _only(model, "operator", "uniq")
    # newer than our floor (10.1): refused too
    rms = _model(
        [helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", F32, [4])], [("y", F32, [4])]
    )
    rms.graph.node[0].op_type = "RMSNormalization"
    assert "not in 10.1" in check_model(rms)[0].message


def test_custom_domain_operator():
    model = _model([helper.make_node("FusedGelu", ["x"], ["y"], name="g", domain="com.x")],
                   [("x", F32, [4])], [("y", F32, [4])])  # fmt: skip
    model.opset_import.append(helper.make_opsetid("com.x", 1))
    assert "custom domain 'com.x'" in _only(model, "operator", "g")


def test_operator_type_not_in_its_matrix_row():
    model = _model(
        [helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
        [("a", TensorProto.INT32, [2, 2]), ("b", TensorProto.INT32, [2, 2])],
        [("y", TensorProto.INT32, [2, 2])],
    )
    violations = check_model(model)
    assert {(v.rule, v.node) for v in violations} == {("operator-type", "mm")}
    assert "'a' is INT32; MatMul takes BFLOAT16/FLOAT/FLOAT16" in violations[0].message
    assert len(violations) == 2  # a and b


def test_mixed_float_types_at_one_op():
    model = _model(
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")],
        [("a", F32, [2]), ("b", F16, [2])],
        [("y", F32, [2])],
    )
    assert _only(model, "mixed-types", "add") == "inputs of one type variable are FLOAT/FLOAT16"


def test_tensor_type_tensorrt_does_not_have():
    model = _model(
        [helper.make_node("Relu", ["x"], ["y"], name="r")],
        [("x", TensorProto.DOUBLE, [4])],
        [("y", TensorProto.DOUBLE, [4])],
    )
    found = _found(model)
    assert ("tensor-type", "graph input 'x'") in found
    assert ("tensor-type", "graph output 'y'") in found
    assert ("tensor-type", "r") in found  # Relu reads and makes doubles


def test_int8_outside_quantize_dequantize():
    cast_int8 = _model(
        [
            helper.make_node("Cast", ["x"], ["q"], name="to_int8", to=TensorProto.INT8),
            helper.make_node("Cast", ["q"], ["y"], name="from_int8", to=F32),
        ],
        [("x", F32, [4])],
        [("y", F32, [4])],
    )
    found = _found(cast_int8)
    assert ("quantized-type", "to_int8") in found and ("quantized-type", "from_int8") in found
    qdq = _model(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
        ],
        [("x", F32, [4])],
        [("y", F32, [4])],
        inits={"s": np.float32(0.1), "z": np.int8(0)},
    )
    assert check_model(qdq) == ()


def test_shape_tensor_computed_in_fp16():
    def reshape_by(cast_type):
        nodes = [
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Cast", ["s"], ["sh"], name="to_half", to=cast_type),
            helper.make_node("Cast", ["sh"], ["s2"], name="back", to=I64),
            helper.make_node("Reshape", ["x", "s2"], ["y"], name="reshape"),
        ]
        return _model(nodes, [("x", F32, ["N", 4])], [("y", F32, ["N", 4])])

    message = _only(reshape_by(F16), "shape-tensor", "back")
    assert message == "'sh' (FLOAT16) feeds the shape input 1 of Reshape 'reshape'"
    assert check_model(reshape_by(F32)) == ()  # float shape arithmetic is allowed


def test_inputs_the_parser_needs_as_constants():
    computed = _model(
        [
            helper.make_node("Shape", ["x"], ["s"], name="shape", start=-1),
            helper.make_node("Sub", ["s", "one"], ["axes"], name="last"),
            helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean"),
        ],
        [("x", F32, [2, 4])],
        [("y", F32, [2, 1])],
        inits={"one": np.array([1], np.int64)},
    )
    message = _only(computed, "constant-input", "mean")
    assert message == "input 1 'axes' is computed, the parser needs a constant"
    constant = _model(
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean")],
        [("x", F32, [2, 4])],
        [("y", F32, [2, 1])],
        inits={"axes": np.array([1], np.int64)},
    )
    assert check_model(constant) == ()


def test_clip_bounds_from_a_graph_input():
    model = _model(
        [helper.make_node("Clip", ["x", "lo"], ["y"], name="clip")],
        [("x", F32, [4]), ("lo", F32, [])],
        [("y", F32, [4])],
    )
    assert "input 1 'lo' is computed" in _only(model, "constant-input", "clip")


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"mode": "cubic"}, "mode='cubic'"),
        ({"mode": "linear", "antialias": 1}, "antialias=1"),
        ({"coordinate_transformation_mode": "tf_crop_and_resize"},
         "coordinate_transformation_mode='tf_crop_and_resize'"),
        ({"keep_aspect_ratio_policy": "not_larger"}, "keep_aspect_ratio_policy='not_larger'"),
    ],
)  # fmt: skip
def test_resize_attributes(attrs, message):
    model = _model(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", **attrs)],
        [("x", F32, [1, 1, 4, 4])],
        [("y", F32, [1, 1, 8, 8])],
        inits={"scales": np.array([1, 1, 2, 2], np.float32)},
    )
    assert _only(model, "attribute", "up") == message


def test_resize_as_the_test_bundle_writes_it_passes():
    model = _model(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="nearest",
                          coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
        [("x", F32, [1, 1, 4])],
        [("y", F32, [1, 1, 8])],
        inits={"scales": np.array([1, 1, 2], np.float32)},
    )  # fmt: skip
    assert check_model(model) == ()


def test_cast_to_double_and_one_d_pooling():
    cast = _model([helper.make_node("Cast", ["x"], ["y"], name="c", to=TensorProto.DOUBLE)],
                  [("x", F32, [4])], [("y", TensorProto.DOUBLE, [4])])  # fmt: skip
    assert ("attribute", "c") in _found(cast)
    pool = _model(
        [helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2])],
        [("x", F32, [1, 1, 8])],
        [("y", F32, [1, 1, 7])],
    )
    assert _only(pool, "attribute", "pool") == "1-D pooling"


def test_layer_norm_with_mean_and_inv_std_outputs():
    model = _model(
        [helper.make_node("LayerNormalization", ["x", "g"], ["y", "mu", "rs"], name="ln")],
        [("x", F32, [2, 4])],
        [("y", F32, [2, 4])],
        inits={"g": np.ones(4, np.float32)},
    )
    assert _only(model, "outputs", "ln") == "declares 3 outputs, the parser makes 1"


def test_every_rule_has_a_test_graph_above():
    tested = {
        "opset", "operator", "operator-type", "mixed-types", "tensor-type", "uint8",
        "quantized-type", "shape-tensor", "constant-input", "attribute", "outputs",
    }  # fmt: skip
    assert set(RULES) == tested


def test_the_table_records_its_source_and_matrix_rows():
    assert trt_operators.TENSORRT == "10.1 and 10.15"
    assert "96e7811" in trt_operators.SOURCE
    assert trt_operators.OPERATORS["Cast"].split() == [
        "FP32", "FP16", "BF16", "INT32", "INT64", "UINT8", "BOOL",
    ]  # fmt: skip
    assert trt_operators.OPERATORS["Pow"] == "FP32 FP16 BF16"  # 10.15 adds ints, 10.1 has not
    assert "Shape" in trt_operators.OPERATORS and "UINT8" not in trt_operators.OPERATORS["Shape"]
    assert trt_operators.UNSUPPORTED["STFT"] == "10.1 N"


def test_incompatible_error_is_one_line_with_the_first_violation():
    violations = check_model(_pixels("Transpose"))
    e = TensorRTIncompatible({"clip_visual": violations, "text": ()}, hint="see docs")
    text = str(e)
    assert "\n" not in text
    assert text.startswith("clip_visual: TensorRT 10.1 and 10.15 would not parse this graph: ")
    assert f"(and {len(violations) - 1} more); see docs" in text
    assert set(e.violations) == {"clip_visual"}


# -- the committed bundles ----------------------------------------------------------------------


@pytest.mark.parametrize("bundle", ["runtime/default_bundle", "tests/data/test_bundle"])
def test_committed_bundles_pass(bundle):
    result = check_bundle(REPO / bundle)
    assert len(result) == 7
    assert describe(result) == []
