"""The exporter's CPU rewrites on small hand-built graphs: onnxruntime gives the same outputs
before and after (float32, a few ulp), at two input lengths, and the rewritten graph holds the
intended nodes; nodes the rewrites do not cover are left alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from v2a_export.export.cpu_rewrites import rewrite_for_cpu

F32 = TensorProto.FLOAT


def _model(nodes, inits, outputs=("y",)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F32, ["B", "C", "T"])],
        [helper.make_tensor_value_info(o, F32, ["B", None, None]) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), so, ["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _rewrite(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    m = ir.from_proto(model)
    counts = rewrite_for_cpu(m)
    out = ir.to_proto(m)
    onnx.checker.check_model(out)
    return out, counts


def _same(before: onnx.ModelProto, after: onnx.ModelProto, channels: int) -> None:
    rng = np.random.default_rng(0)
    for t in (37, 64):  # the graphs keep T dynamic
        x = rng.standard_normal((2, channels, t), dtype=np.float32)
        for want, got in zip(_run(before, x), _run(after, x), strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * max(1, np.abs(want).max()))


@pytest.mark.parametrize(("stride", "taps", "bias"), [(2, 12, False), (3, 12, True), (2, 4, True)])
def test_depthwise_transposed_conv_becomes_polyphase(stride, taps, bias):
    c = 16
    rng = np.random.default_rng(1)
    inits = {"w": rng.standard_normal((c, 1, taps), dtype=np.float32)}
    inputs = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(c, dtype=np.float32)
        inputs.append("b")
    node = helper.make_node("ConvTranspose", inputs, ["y"], group=c, strides=[stride],
                            kernel_shape=[taps])  # fmt: skip
    before = _model([node], inits)
    after, counts = _rewrite(before)
    assert counts["polyphase_transposed"] == 1 and counts["conv1d_as_conv2d"] == stride
    ops = [n.op_type for n in after.graph.node]
    assert "ConvTranspose" not in ops and ops.count("Conv") == stride
    convs = [n for n in after.graph.node if n.op_type == "Conv"]
    for n in convs:  # each phase: a depthwise 2-D conv of K/s taps
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["group"] == c and attrs["kernel_shape"] == [1, taps // stride]
    assert "w" not in {i.name for i in after.graph.initializer}  # the old weight is gone
    assert [o.name for o in after.graph.output] == ["y"]
    _same(before, after, c)


def test_conv1d_becomes_conv2d_with_every_attribute():
    rng = np.random.default_rng(2)
    inits = {
        "w1": rng.standard_normal((8, 2, 5), dtype=np.float32),  # group 4: 8 in, 8 out
        "b1": rng.standard_normal(8, dtype=np.float32),
        "w2": rng.standard_normal((6, 8, 3), dtype=np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], group=4, dilations=[3], strides=[2],
                         pads=[2, 1], kernel_shape=[5]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1]),
        helper.make_node("Conv", ["r", "w2"], ["z"], strides=[3]),  # shares w2
    ]  # fmt: skip
    before = _model(nodes, inits, outputs=("y", "z"))
    after, counts = _rewrite(before)
    assert (counts["polyphase_transposed"], counts["conv1d_as_conv2d"]) == (0, 3)
    weights = {i.name: numpy_helper.to_array(i).shape for i in after.graph.initializer}
    assert sorted(s for s in weights.values() if len(s) == 4) == [(6, 8, 1, 3), (8, 2, 1, 5)]
    assert [o.name for o in after.graph.output] == ["y", "z"]  # graph outputs keep their names
    first = next(n for n in after.graph.node if n.op_type == "Conv")
    attrs = {a.name: helper.get_attribute_value(a) for a in first.attribute}
    assert attrs == {"group": 4, "kernel_shape": [1, 5], "strides": [1, 2],
                     "dilations": [1, 3], "pads": [0, 2, 0, 1]}  # fmt: skip
    _same(before, after, 8)


def test_other_convolutions_are_left_alone():
    rng = np.random.default_rng(3)
    inits = {
        "wt": rng.standard_normal((8, 4, 4), dtype=np.float32),  # dense transposed conv
        "wd": rng.standard_normal((8, 1, 5), dtype=np.float32),  # depthwise, K not divisible
    }
    nodes = [
        helper.make_node("ConvTranspose", ["x", "wt"], ["y"], strides=[2]),
        helper.make_node("ConvTranspose", ["x", "wd"], ["z"], group=8, strides=[2]),
        helper.make_node("Conv", ["x", "x_weight"], ["u"]),  # weight is not a constant
    ]
    graph = _model(nodes[:2], inits, outputs=("y", "z"))
    after, counts = _rewrite(graph)
    assert not any(counts.values())
    assert [n.op_type for n in after.graph.node] == ["ConvTranspose", "ConvTranspose"]
    dynamic = _model(nodes[2:], {}, outputs=("u",))
    dynamic.graph.input.append(helper.make_tensor_value_info("x_weight", F32, [8, 8, 3]))
    after, counts = _rewrite(dynamic)
    assert not any(counts.values())
    assert [n.op_type for n in after.graph.node] == ["Conv"]


def _edge_pad(pads: list[int]) -> tuple[helper.NodeProto, np.ndarray]:
    return helper.make_node("Pad", ["x", "pads"], ["xp"], mode="edge"), np.array(pads, np.int64)


@pytest.mark.parametrize(
    ("stride", "taps", "crop", "bias", "pad_crops"),
    [(2, 12, (15, 15), True, 1), (3, 12, (10, 5), False, 0)],
)
def test_scaled_cropped_upsample_folds_into_the_phases(stride, taps, crop, bias, pad_crops):
    """BigVGAN's UpSample1d: edge pad, depthwise transposed conv, × ratio, crop. The scale
    moves into the phase weights, the crop into the phase pads (one zero tap aligns the
    phases on one input) and then into the edge pad."""
    c, pad = 16, taps // stride - 1
    rng = np.random.default_rng(4)
    pad_node, pads = _edge_pad([0, 0, pad, 0, 0, pad])
    inits = {
        "pads": pads,
        "w": rng.standard_normal((c, 1, taps), dtype=np.float32),
        "ratio": np.array(float(stride), np.float32) if stride == 2 else np.array(0.25, np.float32),
        "starts": np.array([crop[0]], np.int64),
        "ends": np.array([-crop[1]], np.int64),
        "axes": np.array([-1], np.int64),
    }
    inputs = ["xp", "w"] + (["b"] if bias else [])
    if bias:
        inits["b"] = rng.standard_normal(c, dtype=np.float32)
    nodes = [
        pad_node,
        helper.make_node("ConvTranspose", inputs, ["u"], group=c, strides=[stride],
                         kernel_shape=[taps]),
        helper.make_node("Mul", ["u", "ratio"], ["s"]),
        helper.make_node("Slice", ["s", "starts", "ends", "axes"], ["y"]),
    ]  # fmt: skip
    before = _model(nodes, inits)
    after, counts = _rewrite(before)
    assert counts["polyphase_transposed"] == 1 and counts["crop_padding"] == pad_crops
    ops = [n.op_type for n in after.graph.node]
    assert "Mul" not in ops and "Slice" not in ops and "ConvTranspose" not in ops
    assert ops.count("Pad") == 1 and ops.count("Conv") == stride
    for n in after.graph.node:
        if n.op_type == "Conv":  # K/s taps and one zero tap, on the one (edge padded) input
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            assert attrs["kernel_shape"] == [1, taps // stride + 1]
    _same(before, after, c)


def test_crop_padding_only_inside_the_padding():
    pad_node, pads = _edge_pad([0, 0, 3, 0, 0, 2])
    inits = {"pads": pads, "s1": np.array([2], np.int64), "e1": np.array([-2], np.int64),
             "s2": np.array([4], np.int64), "e2": np.array([-1], np.int64),
             "ax": np.array([2], np.int64)}  # fmt: skip
    nodes = [
        pad_node,
        helper.make_node("Slice", ["xp", "s1", "e1", "ax"], ["y"]),  # inside: folds
        helper.make_node("Slice", ["xp", "s2", "e2", "ax"], ["z"]),  # cuts into x: stays
    ]
    before = _model(nodes, inits, outputs=("y", "z"))
    after, counts = _rewrite(before)
    assert counts["crop_padding"] == 1
    assert sorted(n.op_type for n in after.graph.node) == ["Pad", "Pad", "Slice"]
    _same(before, after, 4)


def test_squeeze_unsqueeze_pairs_cancel_and_pow2_becomes_a_product():
    rng = np.random.default_rng(5)
    inits = {
        "w1": rng.standard_normal((8, 4, 3), dtype=np.float32),
        "w2": rng.standard_normal((4, 8, 3), dtype=np.float32),
        "two": np.array(2.0, np.float32),
        "three": np.array(3.0, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1]),
        helper.make_node("Conv", ["h", "w2"], ["g"], pads=[1, 1]),  # conv -> conv: pair cancels
        helper.make_node("Pow", ["g", "two"], ["y"]),
        helper.make_node("Pow", ["g", "three"], ["z"]),  # other exponents stay
    ]
    before = _model(nodes, inits, outputs=("y", "z"))
    after, counts = _rewrite(before)
    assert counts["conv1d_as_conv2d"] == 2 and counts["squeeze_unsqueeze"] == 1
    assert counts["square_as_mul"] == 1
    ops = [n.op_type for n in after.graph.node]
    assert ops.count("Squeeze") == 1 and ops.count("Unsqueeze") == 1 and ops.count("Pow") == 1
    _same(before, after, 4)


def test_squeeze_moves_before_transpose():
    """MMAudio's q/k/v split: Split on the innermost axis, Transpose that moves it first,
    Squeeze it; also a Squeeze of two axes and a Transpose that becomes the identity."""
    inits = {"a0": np.array([0], np.int64), "a01": np.array([0, -1], np.int64)}
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),  # (B, C, T/3, 1, 3)
        helper.make_node("Split", ["r"], ["q", "k", "v"], axis=4, num_outputs=3),
        helper.make_node("Transpose", ["q"], ["qt"], perm=[4, 0, 3, 2, 1]),
        helper.make_node("Squeeze", ["qt", "a0"], ["y"]),  # (B, 1, T/3, C)
        helper.make_node("Transpose", ["k"], ["kt"], perm=[4, 0, 1, 2, 3]),
        helper.make_node("Squeeze", ["kt", "a0"], ["z"]),  # only a squeeze is left
        helper.make_node("Transpose", ["v"], ["vt"], perm=[4, 1, 2, 0, 3]),
        helper.make_node("Squeeze", ["vt", "a01"], ["u"]),  # squeezes v's axes 4 and 3
    ]
    inits["shape"] = np.array([0, 0, -1, 1, 3], np.int64)
    before = _model(nodes, inits, outputs=("y", "z", "u"))
    after, counts = _rewrite(before)
    assert counts["squeeze_before_transpose"] == 3
    perms = [helper.get_attribute_value(n.attribute[0]) for n in after.graph.node
             if n.op_type == "Transpose"]  # fmt: skip
    assert sorted(perms) == [[0, 3, 2, 1], [1, 2, 0]]
    rng = np.random.default_rng(6)
    for t in (3, 36):  # T/3 = 1 is a size-1 axis too: only the named axes go
        x = rng.standard_normal((2, 4, t), dtype=np.float32)
        for want, got in zip(_run(before, x), _run(after, x), strict=True):
            np.testing.assert_array_equal(got, want)  # data movement only: the same bits


def _tokens() -> list[onnx.NodeProto]:
    return [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1])]  # (B, T, C)


def test_qkv_columns_go_outermost_and_the_5d_transpose_goes():
    """einops ``b n (h d k) -> k b h n d`` then ``qkv[i]``, as MMAudio exports it."""
    c, h, d, k = 8, 2, 3, 3
    rng = np.random.default_rng(7)
    inits = {
        "w": rng.standard_normal((c, h * d * k), dtype=np.float32),
        "b": rng.standard_normal(h * d * k, dtype=np.float32),
        "nh": np.array([h], np.int64), "nd": np.array([d], np.int64), "nk": np.array([k], np.int64),
        "s0": np.array([0], np.int64), "s2": np.array([2], np.int64),
    }  # fmt: skip
    nodes = _tokens() + [
        helper.make_node("MatMul", ["xt", "w"], ["p"]),
        helper.make_node("Add", ["p", "b"], ["pb"]),
        helper.make_node("Shape", ["xt"], ["bt"], end=2),
        helper.make_node("Concat", ["bt", "nh", "nd", "nk"], ["shape"], axis=0),
        helper.make_node("Reshape", ["pb", "shape"], ["view"]),  # (B, T, H, D, K)
        helper.make_node("Transpose", ["view"], ["qkv"], perm=[4, 0, 2, 1, 3]),  # (K, B, H, T, D)
    ]
    for i, out in enumerate("qkv"):
        inits[f"i{i}"], inits[f"j{i}"] = np.array([i], np.int64), np.array([i + 1], np.int64)
        nodes += [
            helper.make_node("Slice", ["qkv", f"i{i}", f"j{i}", "s0"], [f"{out}1"]),
            helper.make_node("Squeeze", [f"{out}1", "s0"], [out]),  # (B, H, T, D)
        ]
    before = _model(nodes, inits, outputs=("q", "k", "v"))
    after, counts = _rewrite(before)
    assert counts["qkv_outermost"] == 1
    assert counts["slice_before_transpose"] == counts["squeeze_before_transpose"] == 3
    perms = [helper.get_attribute_value(n.attribute[0]) for n in after.graph.node
             if n.op_type == "Transpose"]  # fmt: skip
    assert sorted(perms) == [[0, 2, 1]] + [[0, 2, 1, 3]] * 3  # no 5-D transpose left
    assert len(after.graph.initializer) < len(inits) + 8 and "w" not in {
        i.name for i in after.graph.initializer
    }  # the permuted weight replaces the old one
    _same(before, after, c)


@pytest.mark.parametrize("sizes", [None, [2, 10]])
def test_split_projection_becomes_one_projection_per_chunk(sizes):
    rng = np.random.default_rng(8)
    inits = {
        "w": rng.standard_normal((6, 12), dtype=np.float32),
        "b": rng.standard_normal(12, dtype=np.float32),
    }
    outs = ("y", "z", "u") if sizes is None else ("y", "z")
    split_inputs = ["pb"]
    if sizes is not None:
        inits["sizes"] = np.array(sizes, np.int64)
        split_inputs.append("sizes")
    nodes = _tokens() + [
        helper.make_node("MatMul", ["xt", "w"], ["p"]),
        helper.make_node("Add", ["p", "b"], ["pb"]),
        helper.make_node("Split", split_inputs, list(outs), axis=2,
                         **({"num_outputs": 3} if sizes is None else {})),
    ]  # fmt: skip
    before = onnx.shape_inference.infer_shapes(_model(nodes, inits, outputs=outs))  # as exported
    after, counts = _rewrite(before)
    assert counts["split_projection"] == 1
    ops = [n.op_type for n in after.graph.node]
    assert "Split" not in ops and ops.count("MatMul") == len(outs)
    _same(before, after, 6)
