"""Bundle reader/writer: round trip, validation, hash and I/O checks (torch-free)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from v2a_runtime.backends import BackendError, OrtSession, load_session
from v2a_runtime.bundle import check_io, describe_file, load_bundle, sha256_file, write_manifest
from v2a_runtime.config import COMPONENTS, BundleError, Manifest, TensorInfo

TEST_BUNDLE = Path(__file__).parent / "data" / "test_bundle"


@pytest.fixture()
def bundle_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(TEST_BUNDLE, dst)
    return dst


def _edit_manifest(root: Path, edit) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_round_trip_is_exact(tmp_path):
    text = (TEST_BUNDLE / "manifest.json").read_text()
    manifest = Manifest.from_dict(json.loads(text))
    assert manifest.components["denoiser"].inputs[0] == TensorInfo("x", "float32", ("B", "L", 8))
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    write_manifest(tmp_path, manifest)
    assert (tmp_path / "manifest.json").read_text() == text  # byte-identical JSON
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_load_verifies_every_file():
    bundle = load_bundle(TEST_BUNDLE)
    assert set(bundle.manifest.components) == set(COMPONENTS)
    for name in COMPONENTS:
        spec = bundle.manifest.components[name]
        assert sha256_file(bundle.path(name)) == spec.sha256
        assert describe_file(bundle.root, spec.file).bytes == spec.bytes
    assert bundle.tokenizer_path is None  # the packaged CLIP vocabulary


def test_hash_mismatch_is_refused_with_what_to_do(bundle_copy):
    path = bundle_copy / "onnx" / "vocoder.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, one flipped byte
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"sha256 mismatch for onnx/vocoder.onnx.*re-export"):
        load_bundle(bundle_copy)
    load_bundle(bundle_copy, verify=False)  # verification can be skipped explicitly


def test_truncated_file_is_refused(bundle_copy):
    path = bundle_copy / "onnx" / "text.onnx"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"onnx/text.onnx has 100 bytes, the manifest says"):
        load_bundle(bundle_copy)


def test_missing_file(bundle_copy):
    (bundle_copy / "onnx" / "denoiser.onnx").unlink()
    with pytest.raises(BundleError, match=r"denoiser file onnx/denoiser.onnx is missing"):
        load_bundle(bundle_copy)


def test_schema_1_is_read_without_its_derived_fields(bundle_copy):
    """Schema 1 also stored the latent rate, the shortest window and the text length; they
    must agree with what the other fields give, then the manifest is the schema 2 one."""
    now = load_bundle(bundle_copy).manifest

    def to_schema_1(d):
        d["schema_version"] = 1
        d["audio"]["latent_rate"] = 31.25
        d["sequence"].update(min_duration=0.64, text_tokens=77)

    _edit_manifest(bundle_copy, to_schema_1)
    assert load_bundle(bundle_copy).manifest == now
    _edit_manifest(bundle_copy, lambda d: d["audio"].update(latent_rate=62.5))
    with pytest.raises(BundleError, match=r"audio.latent_rate is 62.5, but the other fields"):
        load_bundle(bundle_copy)


def test_unknown_schema_version(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d.update(schema_version=3))
    with pytest.raises(BundleError, match=r"schema_version 3 is not supported.*knows 1, 2"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["components"].pop("vocoder"), r"components missing \['vocoder'\]"),
        (lambda d: d["audio"].update(latent_std=[1.0]), r"latent_std has 1 values"),
        (
            lambda d: d["audio"].update(sample_rate="16k"),
            r"manifest.json: audio.sample_rate: expected int, got '16k'",
        ),
        (lambda d: d["model"].update(weights="maybe"), r"model.weights 'maybe' is not one of"),
        (lambda d: d["video"].update(fps=3), r"unknown fields \['fps'\]"),
        (lambda d: d["sequence"].pop("trained_duration"), r"missing fields \['trained_duration'\]"),
    ],
)
def test_invalid_manifest_names_the_field(bundle_copy, edit, message):
    _edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match=r"does not exist"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match=r"has no manifest.json; it is not a v2a bundle"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"cannot read manifest.json"):
        load_bundle(tmp_path)


def test_check_io_accepts_the_real_graphs_and_catches_mismatches():
    bundle = load_bundle(TEST_BUNDLE)
    session = load_session(bundle.path("denoiser"))
    spec = bundle.manifest.components["denoiser"]
    check_io("denoiser", spec, session)  # matches the exported graph
    renamed = replace(spec, inputs=(replace(spec.inputs[0], name="latent"), *spec.inputs[1:]))
    with pytest.raises(BundleError, match=r"graph inputs are \['x', 't'"):
        check_io("denoiser", renamed, session)
    wrong_dtype = replace(spec, outputs=(replace(spec.outputs[0], dtype="float16"),))
    with pytest.raises(BundleError, match=r"'velocity' has dtype float32, the manifest declares"):
        check_io("denoiser", wrong_dtype, session)
    wrong_width = replace(spec, outputs=(replace(spec.outputs[0], shape=("B", "L", 20)),))
    with pytest.raises(BundleError, match=r"has shape \['B', 'L', 8\]"):
        check_io("denoiser", wrong_width, session)


def test_backend_errors(tmp_path):
    with pytest.raises(BackendError, match=r"unknown backend 'tpu'; choose from cpu, cuda"):
        load_session(TEST_BUNDLE / "onnx" / "text.onnx", "tpu")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(BackendError, match=r"onnxruntime cannot load .*bad.onnx"):
        OrtSession.load(bad)
    with pytest.raises(BackendError, match=r"graph optimisation 'max'"):
        OrtSession.load(TEST_BUNDLE / "onnx" / "text.onnx", graph_optimization="max")


def test_cuda_without_onnxruntime_gpu_says_what_to_install():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(
        BackendError, match=r"needs onnxruntime-gpu \(pip install 'v2a-export\[gpu\]'"
    ):
        load_session(TEST_BUNDLE / "onnx" / "text.onnx", "cuda")


def test_session_options_are_explicit():
    session = OrtSession.load(
        TEST_BUNDLE / "onnx" / "text.onnx", threads=1, graph_optimization="basic"
    )
    options = session.session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level.name == "ORT_ENABLE_BASIC"
    assert options.use_deterministic_compute
    # idle workers sleep: spinning ones took the cores the computing thread needed on a shared
    # machine (docs/benchmarks.md, thread settings)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session.session.get_providers() == ["CPUExecutionProvider"]
