"""The int8 pass: measured float islands with reasons, the held-out gate, the bundle it writes
and the command line.

A hand-built graph has one MatMul of each kind the pass must tell apart: plain projections
(quantized), a projection whose input has an outlier channel (dynamic per-tensor activation
quantization leaves the other channels a level or two: its own measured error is far above its
share of the budget, so it stays float), an attention-style MatMul of two activations (float by
rule), a Gemm (rewritten as MatMul + Add, then quantized) and a user-pinned node. The bundle
test converts the small contract bundle of tests/data through the runtime pipeline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from v2a_runtime.bundle import load_bundle  # noqa: E402
from v2a_runtime.config import COMPONENTS, Manifest  # noqa: E402

from v2a_export.export.precision.calibrate import CalibrationPlan, cpu_session  # noqa: E402
from v2a_export.export.precision.gate import INT8_REL_L2, int8_checks  # noqa: E402
from v2a_export.export.precision.int8 import HeldOutPlan, convert_bundle_int8  # noqa: E402
from v2a_export.export.precision.kernels import u8s8_exact  # noqa: E402
from v2a_export.export.precision.policy import Int8Policy  # noqa: E402
from v2a_export.export.precision.quantize import (  # noqa: E402
    candidate_nodes,
    prepare,
    quantize_graph,
    quantize_nodes,
)

TEST_BUNDLE = Path(__file__).parent / "data" / "test_bundle"
D = 64
OUTLIER = 7  # the channel of ``z`` that is 1000x larger than the rest


def _graph() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name
        )

    w_out = (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32)
    w_out[OUTLIER] = 0.0  # the outlier channel carries no signal: only its range hurts
    scale = np.ones(D, np.float32)
    scale[OUTLIER] = 1000.0
    inits = [
        w("w1", D, D),
        w("w2", D, D),
        numpy_helper.from_array(w_out, "w_out"),
        numpy_helper.from_array(scale, "scale"),
        w("wg", D, D),
        numpy_helper.from_array(np.zeros(D, np.float32), "bg"),
        w("wk", D, D),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="proj_in"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="proj_out"),
        helper.make_node("Mul", ["x", "scale"], ["z"], name="outlier_scale"),
        helper.make_node("MatMul", ["z", "w_out"], ["o"], name="outlier_proj"),
        helper.make_node("Transpose", ["h"], ["ht"], perm=[1, 0], name="transpose"),
        helper.make_node("MatMul", ["h", "ht"], ["scores"], name="attention"),
        helper.make_node("Gemm", ["y", "wg", "bg"], ["g"], name="gemm"),
        helper.make_node("MatMul", ["g", "wk"], ["k"], name="pinned"),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "int8_test",
        [helper.make_tensor_value_info("x", f, ["N", D])],
        [helper.make_tensor_value_info(n, f, None) for n in ("o", "scores", "k")],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def _feeds(seed: int, n: int = 3):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((32, D)).astype(np.float32)} for _ in range(n)]


@pytest.fixture(scope="module")
def quantized():
    policy = Int8Policy(budget=0.05, keep_float=("pinned",))
    return quantize_graph(_graph(), policy, feeds=_feeds(1), threads=1)


def test_every_heavy_node_is_int8_or_float_with_its_reason(quantized):
    model, report = quantized
    reasons = {n.name: n.reason for n in report.fp32_nodes}
    assert reasons == {"outlier_proj": "budget", "attention": "activation", "pinned": "user"}
    assert set(report.int8_nodes) == {"proj_in", "proj_out", "gemm"}  # Gemm went via MatMul
    assert report.heavy_nodes == 6
    # the measured own errors: the outlier-starved projection is far above its share
    share = report.share
    assert report.node_errors["outlier_proj"] > 10 * share
    assert all(report.node_errors[n] <= share for n in report.int8_nodes)
    line = dict(x.split(": ", 1) for x in report.manifest_lines())["outlier_proj"]
    assert line.startswith("measured error above its share") and "own rel L2" in line
    assert report.within_budget and report.counts() == {"budget": 1, "activation": 1, "user": 1}
    ops = {n.op_type for n in model.graph.node}
    assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}
    assert "Gemm" not in ops


def test_the_held_out_gate_passes_the_graph_with_islands_and_fails_it_without(quantized):
    model, _ = quantized
    base = prepare(_graph(), _feeds(1)[0])
    ref = cpu_session(base, 1)
    held_out = _feeds(2)
    ok = int8_checks(ref, cpu_session(model, 1), held_out)
    assert all(not c.failures() for c in ok), [c.failures() for c in ok]
    assert max(c.rel_l2 for c in ok) < 0.05
    # every candidate quantized, the outlier projection included: measured, and refused
    candidates, _ = candidate_nodes(GraphIndexOf(base), Int8Policy())
    forced = quantize_nodes(base, candidates, Int8Policy())
    bad = {c.name: c for c in int8_checks(ref, cpu_session(forced, 1), held_out)}
    assert bad["o"].rel_l2 > INT8_REL_L2
    assert any("rel_l2" in f for f in bad["o"].failures())
    assert not bad["scores"].failures()  # the rest of the graph is still fine


def test_the_speed_check_times_both_graphs_and_decides_by_the_ratio(quantized):
    from v2a_export.export.precision.int8 import _decide

    model, report = quantized
    feeds = _feeds(2)
    # threads=None (the CLI's default): timed anyway at one thread, in CPU time
    d = _decide("denoiser", _graph(), model, report, feeds, Int8Policy(), None)
    assert d.fp32_ms > 0 and d.int8_ms > 0 and d.checks
    faster = d.fp32_ms >= Int8Policy().min_speedup * d.int8_ms
    assert d.precision == ("int8" if faster else "fp32")
    assert ("x faster" in d.reason) if faster else ("not faster" in d.reason), d.reason
    assert f"{d.int8_ms:.1f} ms vs {d.fp32_ms:.1f} ms fp32" in d.reason


def GraphIndexOf(model):  # noqa: N802 (reads like the class it builds)
    from v2a_export.export.precision.graph import GraphIndex

    return GraphIndex.of(model)


def test_policy_and_pass_refuse_bad_values():
    with pytest.raises(ValueError, match="int8 budget"):
        Int8Policy(budget=1.5)
    with pytest.raises(ValueError, match="choose from u8, s8-7bit, s8"):
        Int8Policy(weights="s4")
    with pytest.raises(ValueError, match="min_speedup must be >= 1"):
        Int8Policy(min_speedup=0.5)
    with pytest.raises(ValueError, match="no node named 'nope'"):
        quantize_graph(_graph(), Int8Policy(keep_float=("nope",)), feeds=_feeds(1))
    with pytest.raises(ValueError, match="calibration feeds"):
        quantize_graph(_graph(), Int8Policy(), feeds=[])


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "test_int8"
    result = convert_bundle_int8(
        TEST_BUNDLE,
        out,
        Int8Policy(require_speedup=False),
        CalibrationPlan(durations=(1.0, 2.0), steps=2, max_feeds=3),
        HeldOutPlan(duration=2.0, steps=2, max_feeds=3),
        threads=1,
    )
    return result


def test_int8_bundle_manifest_round_trips_and_records_every_decision(int8_bundle):
    bundle = load_bundle(int8_bundle.root)  # sha256 and size of every written file
    manifest = bundle.manifest
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    report = json.loads((int8_bundle.root / "reports" / "precision.json").read_text())
    int8 = manifest.parity["int8"]
    assert set(int8["components"]) == set(COMPONENTS)
    n8 = 0
    for name in COMPONENTS:
        spec = manifest.components[name]
        decision = int8_bundle.decisions[name]
        assert spec.precision == decision.precision == int8["components"][name]["precision"]
        assert report["components"][name]["decision"]["precision"] == spec.precision
        assert int8["components"][name]["reason"] == decision.reason
        if spec.precision == "int8":
            n8 += 1
            lines = spec.fp32_nodes or ()
            assert all(": " in line for line in lines), lines
            assert len(lines) == len(report["components"][name]["fp32_nodes"])
            assert decision.worst()["cosine"] >= 0.995
            ops = {n.op_type for n in onnx.load(str(bundle.path(name))).graph.node}
            assert ops & {"DynamicQuantizeLinear", "MatMulInteger"}, name
        else:
            assert spec.sha256 == load_bundle(TEST_BUNDLE).manifest.components[name].sha256
    assert n8 >= 3, int8
    assert int8_bundle.mel is not None and int8["end_to_end"]["mel_error_db"] < 1.0
    assert int8["passed"] is int8_bundle.passed is True
    assert manifest.parity["passed"] is False  # the contract bundle has no fp32 parity record


def test_the_runtime_runs_the_int8_bundle(int8_bundle):
    from v2a_runtime.pipeline import Pipeline

    pipe = Pipeline.load(int8_bundle.root, threads=1)
    frames = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    sync = np.random.default_rng(1).integers(0, 256, (50, 64, 64, 3), dtype=np.uint8)
    from v2a_runtime.media import Frames

    audio = pipe.generate(Frames(frames, sync, 0.0, 2.0), prompt="a ball", steps=2).audio
    assert audio.shape[-1] == 2 * 16000 and np.isfinite(audio).all()


# --- the command line ------------------------------------------------------------------------


def _run(*args):
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from v2a_export.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def _one_line_error(code: int, out: str, *words: str) -> None:
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    for w in words:
        assert w in lines[0], (w, out)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--int8-budget", "1.5"], ["int8 budget", "1.5"]),
        (["--calibration-video", "/nonexistent.mp4"], ["--calibration-video", "no such file"]),
        (["--components", "speaker"], ["unknown component", "speaker"]),
        (["--held-out-duration", "0"], ["held-out plan", "duration > 0"]),
    ],
)
def test_convert_precision_int8_refuses_bad_input_in_one_line(tmp_path, args, words):
    code, out = _run("convert-precision", TEST_BUNDLE, "--out", tmp_path / "o",
                     "--precision", "int8", *args)  # fmt: skip
    _one_line_error(code, out, *words)
    assert not (tmp_path / "o").exists()


def test_int8_flags_need_int8_and_int8_needs_a_new_fp32_bundle(tmp_path, int8_bundle):
    code, out = _run("convert-precision", TEST_BUNDLE, "--out", tmp_path / "o", "--int8-conv")
    _one_line_error(code, out, "--int8-conv", "--precision int8")
    code, out = _run("convert-precision", TEST_BUNDLE, "--out", TEST_BUNDLE, "--precision", "int8")
    _one_line_error(code, out, "new directory")
    code, out = _run("convert-precision", int8_bundle.root, "--out", tmp_path / "o2",
                     "--precision", "int8")  # fmt: skip
    _one_line_error(code, out, "not an fp32 bundle")
    code, out = _run("convert-precision", tmp_path, "--out", tmp_path / "o3", "--precision", "int8")
    _one_line_error(code, out, "not a bundle")
    code, out = _run("export", "--variant", "tiny", "--out", tmp_path / "e", "--precision", "int8")
    _one_line_error(code, out, "convert-precision")
    code, out = _run("validate", int8_bundle.root)
    _one_line_error(code, out, "int8 graphs", "held-out")


def test_the_command_converts_and_prints_the_decisions(tmp_path):
    bundle = tmp_path / "src"
    shutil.copytree(TEST_BUNDLE, bundle)
    code, out = _run(
        "convert-precision", bundle, "--out", tmp_path / "i8", "--precision", "int8",
        "--components", "denoiser", "--no-speed-check", "--calibration-durations", "1",
        "--calibration-steps", "2", "--held-out-duration", "1", "--held-out-steps", "2",
        "--threads", "1", "-q",
    )  # fmt: skip
    assert code == 0, out
    assert "denoiser     int8" in out and "log-mel error" in out
    assert "TensorRT does not import them" in out  # a CPU bundle, not refused by the TRT check
    manifest = load_bundle(tmp_path / "i8").manifest
    assert {n for n, c in manifest.components.items() if c.precision == "int8"} == {"denoiser"}
    # --int8-weights auto (the default): the format this CPU's kernels measured, recorded
    policy = json.loads((tmp_path / "i8" / "reports" / "precision.json").read_text())["policy"]
    chosen = policy["weights"]
    assert chosen in (("s8", "u8") if u8s8_exact() else ("u8",))  # s8 only where it is exact
    assert policy["weights_reason"].startswith(f"auto: {chosen} (")
    assert f"int8 weights: auto: {chosen}" in out


def test_the_u8s8_probe_agrees_with_an_exact_product():
    """``u8s8_exact`` (the saturating case) answers what a random full-range product shows:
    onnxruntime's u8·s8 kernel equals numpy's int64 product exactly on VNNI/AMX CPUs, and
    differs where AVX2's int16 pair sums saturate."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    a = rng.integers(200, 256, (32, 256)).astype(np.uint8)  # large: pair sums reach 2·255·127
    b = rng.integers(100, 128, (256, 32)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [32, 256])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [32, 32])],
        [numpy_helper.from_array(b, "b")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    (y,) = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"a": a})  # fmt: skip
    exact = a.astype(np.int64) @ b.astype(np.int64)
    assert u8s8_exact() == bool(np.array_equal(y, exact))


@pytest.mark.parametrize("component", ["denoiser", "sync_visual"])
def test_a_model_past_the_protobuf_limit_is_inferred_as_a_skeleton(monkeypatch, component):
    """Shape inference serialises the model (protobuf: 2 GB; full-size CLIP is 2.5 GB): above
    SKELETON_BYTES it runs on a copy whose large initializers have no data. Forced on here: the
    inferred value infos are the full model's, and so is the graph index built on them."""
    import onnx
    from v2a_export.export.precision import graph

    model = onnx.load(str(TEST_BUNDLE / "onnx" / f"{component}.onnx"))
    full = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph.value_info
    types = graph.GraphIndex.of(model).types
    monkeypatch.setattr(graph, "SKELETON_BYTES", 0)
    skeleton = graph._inferred(model)
    assert any(not t.raw_data for t in skeleton.graph.initializer)  # the weights were dropped
    assert {v.name: v.type for v in skeleton.graph.value_info} == {v.name: v.type for v in full}
    assert graph.GraphIndex.of(model).types == types and len(types) > 50
