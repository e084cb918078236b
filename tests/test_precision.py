"""The fp16/bf16 pass on the shipped tiny bundle (real exported graphs), calibrated through the
runtime pipeline on rendered video.

One module-scoped conversion feeds the tests: every graph passes the static type check and
keeps norms, reductions and phases in fp32 while its MatMul/Conv/attention core is fp16; every
fp16 graph runs under onnxruntime CPU without NaN/Inf and, with its emulation twin (per-op
fp16 rounding), stays within cosine 0.999 of the fp32 graph at two durations and two batch
sizes; the whole pipeline on the fp16 bundle is within 1 dB log-mel of the fp32 bundle. The
fp32 graphs are the reference here (they are gated against PyTorch at 1e-5 by the exporter);
the PyTorch gate of the converted bundle runs through the CLI at the end (random weights only).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from v2a_runtime.backends import load_session  # noqa: E402
from v2a_runtime.bundle import load_bundle  # noqa: E402
from v2a_runtime.config import COMPONENTS  # noqa: E402
from v2a_runtime.pipeline import DEFAULT_BUNDLE, Pipeline  # noqa: E402

from v2a_export.export.descriptors import descriptors  # noqa: E402
from v2a_export.export.precision.bundle import PRECISION_REPORT, convert_bundle  # noqa: E402
from v2a_export.export.precision.calibrate import CalibrationPlan, rendered_frames  # noqa: E402
from v2a_export.export.precision.convert import output_error  # noqa: E402
from v2a_export.export.precision.gate import TwinSession, mel_error_db  # noqa: E402
from v2a_export.export.precision.graph import GraphIndex, mixed_type_errors  # noqa: E402
from v2a_export.export.precision.policy import PrecisionPolicy  # noqa: E402
from v2a_export.models.configs import ModelConfig  # noqa: E402

F16, F32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
CALIBRATION = CalibrationPlan(durations=(1.0, 3.0), steps=3, max_feeds=3)


@pytest.fixture(scope="module")
def fp16(tmp_path_factory):
    out = tmp_path_factory.mktemp("precision") / "tiny_fp16"
    return convert_bundle(DEFAULT_BUNDLE, out, PrecisionPolicy("fp16"), CALIBRATION, threads=2)


@pytest.fixture(scope="module")
def config():
    return ModelConfig.from_manifest(load_bundle(DEFAULT_BUNDLE, verify=False).manifest)


def test_fp16_bundle_passes_the_tensorrt_parser_check(fp16):
    from v2a_export.export.trt_compat import check_bundle

    assert fp16.trt_violations == {}
    checked = check_bundle(fp16.root)
    assert len(checked) == 7 and all(v == () for v in checked.values())


def test_manifest_says_fp16_and_lists_every_fp32_node_with_its_reason(fp16):
    bundle = load_bundle(fp16.root)  # sizes and sha256 of every converted file
    report = json.loads((fp16.root / PRECISION_REPORT).read_text())
    for name in COMPONENTS:
        spec = bundle.manifest.components[name]
        assert spec.precision == "fp16"
        assert all(t.dtype != "float16" for t in (*spec.inputs, *spec.outputs))  # fp32 I/O
        lines = spec.fp32_nodes
        assert lines and all(": " in line for line in lines), name
        entry = report["components"][name]
        assert sum(entry["fp32_by_reason"].values()) == len(lines) == len(entry["fp32_nodes"])
        assert entry["low_nodes"] > 0.7 * entry["float_nodes"], (name, entry["fp32_by_reason"])
    assert bundle.manifest.parity["passed"] is False  # not validated yet at fp16
    counts = {n: r.counts() for n, r in fp16.components.items()}
    assert counts["denoiser"]["norm"] >= 16 * 6  # every QK RMSNorm: x², mean, +eps, √, 1/·, x·r
    assert counts["conditioner"]["trig"] >= 6  # RoPE positions → angles → cos/sin
    assert counts["vocoder"]["trig"] >= 2 * 27  # Snake sin(αx): sin and αx


def test_graphs_are_strongly_typed_with_fp16_compute_and_fp32_islands(fp16):
    heavy = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Softmax"}
    for name in COMPONENTS:
        model = onnx.load(str(fp16.root / "onnx" / f"{name}.onnx"))
        assert mixed_type_errors(model) == [], name
        types = GraphIndex.of(model).types
        kept = {line.split(": ")[0] for line in load_bundle(fp16.root).manifest.components[
            name].fp32_nodes}  # fmt: skip
        for node in model.graph.node:
            out = types.get(node.output[0])
            if node.op_type in heavy and node.name not in kept:
                assert out == F16, (name, node.name)
            if node.op_type in {"LayerNormalization", "ReduceMean", "ReduceL2", "Sin", "Cos",
                                "Reciprocal"}:  # fmt: skip
                assert out == F32 and node.name in kept, (name, node.name)


@pytest.mark.parametrize("component", COMPONENTS)
def test_fp16_graph_and_its_twin_match_fp32_at_two_sizes(fp16, config, component):
    desc = descriptors(config)[component]
    rules = config.rates
    ref = load_session(DEFAULT_BUNDLE / "onnx" / f"{component}.onnx", threads=2)
    real = load_session(fp16.root / "onnx" / f"{component}.onnx", threads=2)
    twin = TwinSession.load(fp16.root / "onnx" / f"{component}.onnx", threads=2)
    for k, (duration, tracks) in enumerate(((1.5, 2), (4.0, 1))):
        feeds = desc.sample_inputs(desc.sizes(rules, duration, tracks), seed=k)
        want = ref.run(feeds)
        for session in (real, twin):
            got = session.run(feeds)
            for out in desc.output_names:
                e = output_error(got[out], want[out])
                assert e.finite, (component, out, duration)
                assert e.cosine >= 0.999 and e.rel_l2 <= 0.05, (component, out, duration, e)


def test_pipeline_on_the_fp16_bundle_is_within_a_db_of_fp32(fp16):
    fp32 = Pipeline.load(None, threads=2)
    low = Pipeline.load(fp16.root, threads=2)
    frames = rendered_frames(7, 2.0, fp32.bundle.manifest.video)
    kw = dict(prompt="a ball bounces twice", seed=5, steps=4, solver="euler", watermark=False)
    want = fp32.generate(frames, **kw).audio[0]
    got = low.generate(frames, **kw).audio[0]
    assert np.isfinite(got).all() and got.shape == want.shape
    mel = mel_error_db(got, want, fp32.bundle.manifest.audio.sample_rate)
    assert mel.bins > 1000 and mel.mean_db < 1.0, mel
    # and the twin-based pipeline (fp16 rounding of every op) too
    twins = {n: TwinSession.load(fp16.root / "onnx" / f"{n}.onnx", threads=2) for n in COMPONENTS}
    emulated = low.with_sessions(**twins).generate(frames, **kw).audio[0]
    assert mel_error_db(emulated, want, 16000).mean_db < 1.0


def test_bf16_denoiser_through_its_twin(config, tmp_path):
    """bf16 has no onnxruntime CPU kernels: the twin is the CPU measurement."""
    from v2a_export.export.precision.calibrate import calibration_inputs
    from v2a_export.export.precision.convert import convert_graph

    feeds = calibration_inputs(DEFAULT_BUNDLE, replace(CALIBRATION, durations=(2.0,)), threads=2)
    model = onnx.load(str(DEFAULT_BUNDLE / "onnx" / "denoiser.onnx"))
    converted, report = convert_graph(model, PrecisionPolicy("bf16"), feeds=feeds["denoiser"],
                                      threads=2)  # fmt: skip
    assert mixed_type_errors(converted) == []
    assert report.low_nodes > 0.6 * report.float_nodes
    assert all(e.finite and e.cosine >= 0.999 for e in report.outputs.values()), report.outputs
    onnx.save(converted, str(tmp_path / "denoiser.onnx"))
    twin = TwinSession.load(tmp_path / "denoiser.onnx", threads=2)
    desc = descriptors(config)["denoiser"]
    feeds = desc.sample_inputs(desc.sizes(config.rates, 2.5, 1), seed=3)
    ref = load_session(DEFAULT_BUNDLE / "onnx" / "denoiser.onnx", threads=2).run(feeds)
    e = output_error(twin.run(feeds)["velocity"], ref["velocity"])
    assert e.finite and e.cosine >= 0.999, e


@pytest.mark.slow
def test_cli_validate_gates_the_fp16_bundle_against_pytorch(fp16):
    """``v2a-export validate`` dispatches an fp16 bundle to the precision gate: PyTorch fp32
    networks (rebuilt from the recorded seed, or the shipped model's weight files), the graph
    and its twin at two durations, end to
    end with the log-mel error."""
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from v2a_export.cli import main

    manifest = load_bundle(fp16.root).manifest
    args = ["validate", str(fp16.root), "--parity-durations", "1,2", "--parity-batches", "1",
            "--e2e-duration", "1", "--e2e-steps", "3", "--threads", "2", "-q"]  # fmt: skip
    if manifest.model.weights == "trained":  # the shipped model: gate against its weight files
        args += ["--weights", str(Path(__file__).resolve().parents[1] / "weights" / "tiny")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "log-mel error" in result.output and "7/7 components pass" in result.output
    parity = load_bundle(fp16.root).manifest.parity
    assert parity["passed"] is True and parity["end_to_end"]["mel_error_db"] < 1.0
    den = json.loads((fp16.root / "reports" / "parity.json").read_text())["components"]["denoiser"]
    names = {o["name"] for case in den["cases"] for o in case["outputs"]}
    assert names == {"velocity", "velocity [emulated fp16]"}
