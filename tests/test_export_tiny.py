"""Export of every ``tiny`` component (random weights), gated against PyTorch, as a bundle.

One module-scoped export (real exporter, real onnxruntime sessions) feeds every test here:

- the parity gate at 2 s and 9 s (batch 3 and 1), neither being the traced export size
  (3 s, batch 2): each graph really runs at other sizes and matches PyTorch to fp32 rel L2
  ≤ 1e-5 (so its dims are dynamic, not silently specialised);
- the end-to-end check (runtime pipeline vs the PyTorch reference, Euler + CFG 4.5, same x0):
  waveform rel L2 ≤ 1e-3;
- every file's sha256 against the manifest; v2a_runtime.bundle loads the bundle;
- the runtime pipeline generates from the bundle; ``validate`` rebuilds the weights from the
  recorded seed and catches other weights and modified files;
- every graph passes the TensorRT parser check (the encoders' uint8 input feeds one Cast).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from click.testing import CliRunner  # noqa: E402
from v2a_runtime.bundle import load_bundle, sha256_file  # noqa: E402
from v2a_runtime.config import (  # noqa: E402
    COMPONENTS,
    NETWORKS,  # noqa: E402
    BundleError,
)
from v2a_runtime.media import Frames  # noqa: E402
from v2a_runtime.pipeline import Pipeline  # noqa: E402
from v2a_runtime.sampling import DEFAULT_GRID, DEFAULT_SOLVER, DEFAULT_STEPS  # noqa: E402

from v2a_export.cli import main as cli  # noqa: E402
from v2a_export.export.bundle import ExportOptions, export_bundle  # noqa: E402
from v2a_export.export.descriptors import descriptors, dim_sizes  # noqa: E402
from v2a_export.export.parity import ParityPlan  # noqa: E402
from v2a_export.export.weights import WeightSource  # noqa: E402
from v2a_export.models.build import build_networks  # noqa: E402
from v2a_export.models.configs import TINY, ModelConfig  # noqa: E402

PLAN = ParityPlan(durations=(2.0, 9.0), batches=(3, 1), e2e_duration=2.0, e2e_steps=10)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny_bundle"
    return export_bundle(TINY, WeightSource(seed=0), out, ExportOptions(plan=PLAN, threads=2))


def test_every_component_passes_the_gate_at_two_durations(exported):
    report = exported.report
    rules = TINY.rates
    traced = PLAN.export_sizes(rules)
    assert set(report.components) == set(COMPONENTS)
    for name, parity in report.components.items():
        assert parity.passed, (name, parity.failures)
        assert [c.duration for c in parity.cases] == [2.0, 9.0]
        for case in parity.cases:
            assert case.sizes and all(case.sizes[d] != traced[d] for d in case.sizes), (name, case)
            for out in case.outputs:
                m = out.metrics
                assert m.finite and m.rel_l2 <= 1e-5 and m.cosine > 0.99999, (name, out)
                assert m.max_abs <= 1e-4 * max(1.0, m.ref_max_abs), (name, out)
        # each dynamic axis took two different sizes
        for dim in parity.cases[0].sizes:
            assert parity.cases[0].sizes[dim] != parity.cases[1].sizes[dim], (name, dim)
    den = report.components["denoiser"].cases
    for case, duration, batch in zip(den, (2.0, 9.0), (3, 1), strict=True):
        n = dim_sizes(rules, duration, batch)
        assert case.sizes == {"B": batch, "L": n["L"], "Lc": n["Lc"]}
    assert den[1].sizes["L"] == 282  # ceil(9 s · 16000 / 256 / 2)
    assert report.passed


def test_graph_io_carries_the_contract_dim_names(exported):
    for name, desc in descriptors(TINY).items():
        model = onnx.load(str(exported.root / "onnx" / f"{name}.onnx"))
        assert model.opset_import[0].version == 18
        for spec, value in zip(
            (*desc.inputs, *desc.outputs), (*model.graph.input, *model.graph.output), strict=True
        ):
            dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            assert value.name == spec.name and dims == list(spec.shape), (name, spec.name)


def test_time_embedding_frequencies_are_pytorch_exact(exported):
    # the exporter folds 10000**(i/F) with numpy's pow; the graph must hold PyTorch's values
    assert "time frequencies" in exported.exports["denoiser"].pinned
    nets = build_networks(TINY, seed=0)
    want = nets.flow.t_embed.frequencies().numpy()
    model = onnx.load(str(exported.root / "onnx" / "denoiser.onnx"))
    tables = [
        onnx.numpy_helper.to_array(t).ravel()
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) == want.size
    ]
    assert any(np.array_equal(t, want) for t in tables)


def test_end_to_end_waveform_matches_the_reference(exported):
    e2e = exported.report.end_to_end
    assert e2e is not None and e2e.passed
    assert e2e.steps == 10 and e2e.cfg == 4.5 and e2e.samples == 32_000
    assert e2e.metrics.finite and e2e.metrics.rel_l2 <= 1e-3
    assert e2e.metrics.ref_max_abs > 1e-3  # a real waveform, not silence


def test_every_file_matches_its_sha256_and_the_runtime_loads_it(exported):
    root = exported.root
    manifest = json.loads((root / "manifest.json").read_text())
    files = [(c["file"], c["sha256"], c["bytes"]) for c in manifest["components"].values()]
    files.append((manifest["tokenizer"]["file"], manifest["tokenizer"]["sha256"], None))
    assert len(files) == 8
    for rel, digest, size in files:
        assert sha256_file(root / rel) == digest, rel
        assert size is None or (root / rel).stat().st_size == size, rel
    bundle = load_bundle(root)  # schema, hashes
    m = bundle.manifest
    assert m.model.variant == "tiny" and m.model.weights == "random" and m.model.model_id == 1
    assert "RANDOM WEIGHTS (seed 0)" in m.model.weights_note
    assert (m.sampler.solver, m.sampler.steps, m.sampler.grid, m.sampler.cfg) == (
        DEFAULT_SOLVER,
        DEFAULT_STEPS,
        DEFAULT_GRID,
        4.5,
    )
    assert m.audio.latent_channels == 8 and len(m.audio.latent_mean) == 8
    flow = build_networks(TINY, seed=0).flow
    np.testing.assert_array_equal(m.audio.latent_std, flow.latent_std.detach().flatten().numpy())
    assert m.parity["passed"] and m.parity["reference"] == {
        "weights": "random",
        "seed": 0,
        "source": None,
    }
    # each fact once: a registered variant records no config of its own, no model_config.json
    assert m.model.config is None and not (root / "model_config.json").exists()
    assert ModelConfig.from_manifest(m) == TINY
    assert {c.opset for c in m.components.values()} == {18}
    assert {"torch", "onnx", "onnxruntime", "v2a_export"} <= set(m.versions)
    report = json.loads((root / "reports" / "parity.json").read_text())
    assert report["passed"] and set(report["components"]) == set(COMPONENTS)


def test_runtime_pipeline_generates_from_the_bundle(exported):
    pipe = Pipeline.load(exported.root, threads=2)
    rng = np.random.default_rng(3)
    frames = Frames(
        clip=rng.integers(0, 256, (int(1.5 * TINY.streams.clip_fps), 64, 64, 3), dtype=np.uint8),
        sync=rng.integers(0, 256, (37, 64, 64, 3), dtype=np.uint8),
        start=0.0,
        duration=1.5,
    )
    result = pipe.generate(frames, prompt="rain on a tin roof", steps=3, tracks=2, seed=7)
    assert result.audio.shape == (2, 24_000) and np.isfinite(result.audio).all()
    assert result.evaluations == 3 and len(result.watermarks) == 2
    assert np.abs(result.audio[0] - result.audio[1]).max() > 1e-3  # two seeds, two tracks
    again = pipe.generate(frames, prompt="rain on a tin roof", steps=3, tracks=2, seed=7)
    np.testing.assert_array_equal(result.audio, again.audio)


def _cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_every_graph_passes_the_tensorrt_parser_check(exported):
    from v2a_export.export.trt_compat import check_bundle

    assert exported.trt_violations == {}
    checked = check_bundle(exported.root)
    assert set(checked) == set(COMPONENTS) and all(v == () for v in checked.values())
    for name in ("clip_visual", "sync_visual"):  # the uint8 input feeds one Cast, nothing else
        graph = onnx.load(str(exported.root / "onnx" / f"{name}.onnx"))
        pixels = graph.graph.input[0].name
        readers = [n.op_type for n in graph.graph.node if pixels in n.input]
        assert readers == ["Cast"]


@pytest.mark.parametrize("component", ["conditioner", "denoiser"])
def test_no_cos_or_sin_in_the_graph_sees_more_than_pi(exported, component):
    """At t = 1 the v2 time embedding is 1e4 rad, at 10 s the RoPE tables 312 rad; every
    Sin/Cos of the exported graph reads the reduced angle (layers.reduce_angle)."""
    from v2a_runtime.backends import load_session

    model = onnx.load(str(exported.root / "onnx" / f"{component}.onnx"))
    args = {n.input[0] for n in model.graph.node if n.op_type in ("Sin", "Cos")}
    assert args  # denoiser: one angle (cos, sin of t·f); conditioner: latent and clip RoPE
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(a, onnx.TensorProto.FLOAT, None) for a in sorted(args)
    )
    path = exported.root.parent / f"{component}_trig.onnx"
    onnx.save(model, str(path))
    desc = descriptors(TINY)[component]
    feeds = desc.sample_inputs(desc.sizes(TINY.rates, 10.0, 1), seed=5)
    if component == "denoiser":
        feeds["t"] = np.ones_like(feeds["t"])
    got = load_session(path).run(feeds)
    assert max(float(np.abs(got[a]).max()) for a in args) <= np.pi + 1e-3


def test_validate_rebuilds_the_recorded_seed(exported, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(exported.root, bundle)
    code, out = _cli(
        "validate", bundle, "--components", "text,vae_decoder", "--parity-durations", "1,1.5",
        "--e2e-duration", "none", "-q",
    )  # fmt: skip
    assert code == 0, out
    assert "2/2 components pass" in out
    assert "TensorRT parser check: every graph passes" in out
    saved = json.loads((bundle / "manifest.json").read_text())["parity"]
    assert saved["plan"]["durations"] == [1.0, 1.5] and saved["passed"]
    assert saved["components"]["text"]["sizes_tested"] == 2
    assert saved["components"]["denoiser"]["from_previous_export"]  # not re-checked: kept
    assert set(saved["components"]) == set(COMPONENTS)


def test_validate_fails_against_other_weights(exported, tmp_path):
    # a single weight file of seed-1 networks (unfolded, as a trainer saves them)
    from safetensors.torch import save_file

    nets = build_networks(TINY, seed=1, fold=False)
    state = {
        f"{n}.{k}": v.contiguous()
        for n in NETWORKS
        for k, v in nets.modules()[n].state_dict().items()
    }
    weights = tmp_path / "other.safetensors"
    save_file(state, str(weights))
    code, out = _cli(
        "validate",
        exported.root,
        "--weights-file",
        weights,
        "--components",
        "vae_decoder",
        "--parity-durations",
        "1,1.5",
        "--e2e-duration",
        "none",
        "--no-write",
        "-q",
    )
    assert code == 1, out
    assert "FAIL" in out and "rel_l2" in out


def test_modified_file_is_refused(exported, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(exported.root, bundle)
    path = bundle / "onnx" / "vae_decoder.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 mismatch"):
        load_bundle(bundle)
    code, out = _cli("validate", bundle, "-q")
    assert code == 2 and out.count("\n") == 1 and "sha256 mismatch" in out


def test_export_of_some_components_keeps_the_others(exported, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(exported.root, bundle)
    before = load_bundle(bundle).manifest
    code, out = _cli(
        "export", "--variant", "tiny", "--out", bundle, "--components", "text",
        "--parity-durations", "1,1.5", "--e2e-duration", "none", "-q",
    )  # fmt: skip
    assert code == 0, out
    after = load_bundle(bundle).manifest
    assert after.components == before.components  # same weights, deterministic export
    assert after.parity["components"]["denoiser"]["from_previous_export"]
    assert "from_previous_export" not in after.parity["components"]["text"]
    assert "kept clip_visual, conditioner, denoiser, sync_visual, vae_decoder, vocoder" in out
    code, out = _cli(
        "export", "--variant", "tiny", "--seed", "1", "--out", bundle, "--components", "text"
    )
    assert code == 2 and "other weights" in out
