"""TensorRT engines, the parts that need no TensorRT: optimization profiles from the descriptors,
engine cache keys, engines.json round trips, stale-engine detection (builder and runtime side),
the build plan, and the one-line errors of ``v2a-export build-engines`` / ``--backend tensorrt``
on a machine without TensorRT or a GPU. tests/test_engines_trt.py builds and runs real engines
where TensorRT and a GPU exist."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from v2a_runtime.backends import BackendError, load_session
from v2a_runtime.backends.tensorrt.cache import (
    INDEX_FILE,
    BuildRequest,
    EngineCacheError,
    EngineEntry,
    EngineIndex,
    EngineKey,
    InputProfile,
    Platform,
    StaleEngineError,
    engine_file,
    read_index,
    select_engines,
    write_index,
)
from v2a_runtime.backends.tensorrt.env import probe_gpu
from v2a_runtime.bundle import load_bundle
from v2a_runtime.config import COMPONENTS
from v2a_runtime.sequence import sequence_lengths

from v2a_export.engines.build import BuildOptions, prepare, resolve
from v2a_export.engines.cache import engine_precision, graph_identity
from v2a_export.engines.profiles import ProfileRequest, engine_profiles, parse_tracks
from v2a_export.export.descriptors import DurationRange, TrackRange

TESTS = Path(__file__).resolve().parent
TEST_BUNDLE = TESTS / "data" / "test_bundle"
H100 = Platform("10.15.1.29", "NVIDIA H100 80GB HBM3", "9.0")
A10 = Platform("10.15.1.29", "NVIDIA A10", "8.6")
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def manifest():
    return load_bundle(TEST_BUNDLE).manifest


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    root = tmp_path / "bundle"
    shutil.copytree(TEST_BUNDLE, root)
    return root


# --- profiles ------------------------------------------------------------------------------


def _lengths(d, sr=16000, hop=256):
    return sequence_lengths(d, sample_rate=sr, hop_length=hop)


def test_default_profiles_follow_the_sequence_table(manifest):
    # manifest: 16 kHz, hop 256, windows 0.64 / 8 (trained) / 10 s; spec/mmaudio.md §1.6 table:
    # 8 s -> L 250, clip 64, sync tokens 192; 10 s -> L 313, clip 80, sync tokens 240.
    p = engine_profiles(manifest, ProfileRequest.default(manifest))
    x = {q.name: q for q in p["denoiser"]}
    assert x["x"] == InputProfile("x", (1, 20, 8), (2, 250, 8), (8, 313, 8))  # CFG: 2 x 4 tracks
    assert x["t"].max == (8,) and x["latent_rope"].opt == (250, 16, 2)
    c = {q.name: q for q in p["conditioner"]}
    assert c["sync_features"] == InputProfile(
        "sync_features", (1, 8, 64), (1, 192, 64), (1, 240, 64)
    )
    assert c["sync_index"].max == (313,) and c["clip_features"].max == (1, 80, 32)
    assert p["text"][0] == InputProfile("token_ids", (2, 77), (2, 77), (2, 77))  # [+; -]
    assert p["clip_visual"][0].max == (80, 64, 64, 3)
    assert p["sync_visual"][0] == InputProfile(
        "segments", (1, 16, 64, 64, 3), (24, 16, 64, 64, 3), (30, 16, 64, 64, 3)
    )
    assert p["vocoder"][0] == InputProfile("mel", (1, 80, 40), (1, 80, 500), (4, 80, 626))
    assert [q.name for q in p["denoiser"]] == [
        t.name for t in manifest.components["denoiser"].inputs
    ]


@pytest.mark.parametrize(
    "durations, tracks",
    [((1.0, 2.0, 4.0), (1, 1, 1)), ((2.0, 5.0, 5.0), (1, 2, 3)), ((8.0, 8.0, 8.0), (2, 2, 2))],
)
def test_profiles_for_duration_ranges_and_batches(manifest, durations, tracks):
    request = ProfileRequest(DurationRange(*durations), TrackRange(*tracks))
    p = engine_profiles(manifest, request)
    lo, opt, hi = (_lengths(d) for d in durations)
    x = {q.name: q for q in p["denoiser"]}["x"]
    assert x.min == (tracks[0], lo.latent, 8)  # cfg = 1 feeds K rows
    assert x.opt == (2 * tracks[1], opt.latent, 8) and x.max == (2 * tracks[2], hi.latent, 8)
    latent = p["vae_decoder"][0]
    assert latent.min == (tracks[0], 8, lo.latent) and latent.max == (tracks[2], 8, hi.latent)
    assert p["vocoder"][0].max == (tracks[2], 80, hi.mel_frames)
    seg = p["sync_visual"][0]
    assert (seg.min[0], seg.opt[0], seg.max[0]) == (lo.sync_segments, opt.sync_segments,
                                                   hi.sync_segments)  # fmt: skip
    cond = {q.name: q for q in p["conditioner"]}
    assert cond["clip_features"].opt == (1, opt.clip_frames, 32)  # one video per call
    if durations[0] == durations[2] and tracks[0] == tracks[2]:  # a static engine
        assert all(q.min == q.max for q in p["vocoder"] + p["clip_visual"])


def test_profiles_at_44k_rates(manifest):
    # large_44k rates: 44.1 kHz, hop 512 -> 8 s gives L 345, 1 s gives L 44 (spec table)
    m = replace(manifest, audio=replace(manifest.audio, sample_rate=44100, hop_length=512))
    p = engine_profiles(m, ProfileRequest(DurationRange(1.0, 8.0, 8.0)), ("denoiser",))
    x = p["denoiser"][0]
    assert (x.min[1], x.opt[1], x.max[1]) == (44, 345, 345)


def test_profile_request_options_and_errors(manifest):
    r = ProfileRequest.of(manifest, max_duration=4.0, tracks=parse_tracks("2"))
    assert (r.durations.min, r.durations.opt, r.durations.max) == (0.64, 4.0, 4.0)  # opt clamped
    assert (r.tracks.min, r.tracks.opt, r.tracks.max) == (1, 1, 2)
    assert parse_tracks("1,2,4") == TrackRange(1, 2, 4)
    assert r.build_request() == BuildRequest((0.64, 4.0, 4.0), (1, 1, 2))
    with pytest.raises(ValueError, match=r"--max-duration 12 s is outside .* 0.64..10 s"):
        ProfileRequest.of(manifest, max_duration=12.0)
    with pytest.raises(ValueError, match="--min-duration 0.5 s"):
        ProfileRequest.of(manifest, min_duration=0.5)
    for bad in ("x", "1,2", "0", "3,2,4"):
        with pytest.raises(ValueError):
            parse_tracks(bad)


@pytest.mark.parametrize(("tracks", "cfg"), [(1, 1.0), (2, 4.5), (3, 4.5)])
def test_profiles_hold_every_shape_the_pipeline_feeds(manifest, tracks, cfg):
    """The profiles' batches come from the pipeline's own rule (v2a_runtime.guidance.batch):
    every feed of a real generate call, with and without guidance, lies in its engine's
    profile, and at opt tracks and the trained duration it is the profile's opt."""
    from v2a_runtime.backends.recording import RecordingSession
    from v2a_runtime.media import Frames
    from v2a_runtime.pipeline import Pipeline

    pipe = Pipeline.load(TEST_BUNDLE, threads=1)
    recorders = {n: RecordingSession(s) for n, s in pipe.sessions.items()}
    request = ProfileRequest.of(manifest, opt_duration=2.0, tracks=TrackRange(1, tracks, 3))
    rng = np.random.default_rng(0)
    frames = Frames(rng.integers(0, 256, (16, 64, 64, 3), np.uint8),
                    rng.integers(0, 256, (50, 64, 64, 3), np.uint8), 0.0, 2.0)  # fmt: skip
    pipe.with_sessions(**recorders).generate(frames, steps=2, cfg=cfg, tracks=tracks,
                                             watermark=False)  # fmt: skip
    for name, profile in engine_profiles(manifest, request).items():
        for shapes in recorders[name].shapes():
            for p in profile:
                assert p.contains(shapes[p.name]), (name, p, shapes[p.name])
                if cfg != 1.0:
                    assert shapes[p.name] == p.opt, (name, p, shapes[p.name])


# --- keys --------------------------------------------------------------------------------------


def _key(**changes) -> EngineKey:
    base = EngineKey(
        component="denoiser",
        onnx_sha256="ab" * 32,
        precision="fp16",
        profiles=(
            (
                InputProfile("x", (1, 20, 8), (2, 250, 8), (8, 313, 8)),
                InputProfile("t", (1,), (2,), (8,)),
            ),
        ),  # fmt: skip
        platform=H100,
    )
    return replace(base, **changes)


def test_identical_inputs_give_the_same_key_and_it_is_pinned():
    a, b = _key(), _key()
    assert a == b and a.digest() == b.digest()
    # Rebuilt from its JSON (as engines.json stores it) the key is the same key.
    again = EngineKey.from_dict(json.loads(json.dumps(a.to_dict())))
    assert again == a and again.digest() == a.digest()
    # Pinned: changing the canonical form would silently orphan every engine in every bundle.
    canonical = json.dumps({"key_version": 1, **a.to_dict()}, sort_keys=True, separators=(",", ":"))
    assert a.digest() == hashlib.sha256(canonical.encode()).hexdigest()
    assert a.digest() == "571ec2aea8ad3368b84be7820eaae94978f0290228772c0877d4a85490edb26f"


def test_every_input_of_the_key_changes_it():
    base = _key()
    x, t = base.profiles[0]
    variants = {
        "component": _key(component="vocoder"),
        "onnx": _key(onnx_sha256="ac" * 32),
        "external data": _key(external_data_sha256="cd" * 32),
        "precision": _key(precision="fp32"),
        "tf32": _key(precision="tf32"),
        "profile min": _key(profiles=((replace(x, min=(1, 21, 8)), t),)),
        "profile opt": _key(profiles=((replace(x, opt=(2, 251, 8)), t),)),
        "profile max": _key(profiles=((replace(x, max=(16, 313, 8)), t),)),
        "profile input order": _key(profiles=((t, x),)),
        "second profile": _key(profiles=((x, t), (x, t))),
        "tensorrt": _key(platform=replace(H100, tensorrt="10.15.1.30")),
        "gpu name": _key(platform=replace(H100, gpu="NVIDIA H100 PCIe")),
        "compute capability": _key(platform=replace(H100, compute_capability="9.1")),
        "opt level": _key(opt_level=5),
        "workspace": _key(workspace_bytes=4 << 30),
    }
    digests = {name: k.digest() for name, k in variants.items()}
    assert base.digest() not in digests.values()
    assert len(set(digests.values())) == len(digests)  # all different from each other too
    assert engine_file(base) != engine_file(variants["onnx"])


def test_invalid_keys_and_profiles_are_refused():
    with pytest.raises(ValueError, match="precision 'int8'"):
        _key(precision="int8")
    with pytest.raises(ValueError, match="opt_level"):
        _key(opt_level=6)
    with pytest.raises(ValueError, match="1 <= min <= opt <= max"):
        InputProfile("x", (1, 300, 8), (2, 250, 8), (8, 313, 8))
    with pytest.raises(ValueError, match="equal ranks"):
        InputProfile("x", (1, 20), (2, 250, 8), (8, 313, 8))
    p = InputProfile("x", (1, 20, 8), (2, 250, 8), (8, 313, 8))
    assert p.contains((8, 20, 8)) and not p.contains((9, 20, 8)) and not p.contains((1, 20))


# --- engines.json ------------------------------------------------------------------------------


def _entry(root: Path, component: str, platform: Platform = H100, *, manifest=None,
           content: bytes = b"plan", **key_changes) -> EngineEntry:  # fmt: skip
    """An entry whose plan file exists (arbitrary bytes: nothing here deserializes it)."""
    if manifest is not None:
        g = graph_identity(manifest, component)
        key_changes = {"onnx_sha256": g.sha256, "precision": g.precision, **key_changes}
    key = _key(component=component, platform=platform, **key_changes)
    rel = engine_file(key)
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(content)
    return EngineEntry(
        component=component,
        file=rel,
        sha256=hashlib.sha256(content).hexdigest(),
        bytes=len(content),
        key=key.digest(),
        key_fields=key,
        request=BuildRequest((0.64, 8.0, 10.0), (1, 1, 4)),
        device_memory_bytes=123_456_789,
        build_seconds=12.5,
        built_at="2026-01-01T00:00:00+00:00",
        log=rel.removesuffix(".plan") + ".log",
    )


def test_index_round_trip_and_one_entry_per_component_and_platform(tmp_path):
    assert read_index(tmp_path) == EngineIndex()  # no engines yet
    index = EngineIndex()
    for e in (_entry(tmp_path, "vocoder"), _entry(tmp_path, "denoiser"),
              _entry(tmp_path, "denoiser", A10)):  # fmt: skip
        index = index.with_entry(e)
    write_index(tmp_path, index)
    again = read_index(tmp_path)
    assert again == index and len(again.engines) == 3
    assert again.find("denoiser", A10).key_fields.platform == A10
    assert again.find("text", H100) is None
    newer = _entry(tmp_path, "denoiser", opt_level=5)  # same component and platform: replaces
    updated = again.with_entry(newer)
    assert len(updated.engines) == 3 and updated.find("denoiser", H100) == newer
    assert updated.find("denoiser", A10) == index.find("denoiser", A10)  # other GPU kept


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(schema_version=2), "schema_version 2 is not supported"),
        (lambda d: d["engines"][0].update(color="red"), r"unknown fields \['color'\]"),
        (lambda d: d["engines"][0].pop("sha256"), r"missing fields \['sha256'\]"),
        (lambda d: d["engines"][0]["key_fields"].update(precision="int4"), "malformed"),
        (lambda d: d.pop("engines"), "expected an object with schema_version and engines"),
    ],
)
def test_malformed_index_is_one_clear_error(tmp_path, mutate, message):
    write_index(tmp_path, EngineIndex().with_entry(_entry(tmp_path, "vocoder")))
    path = tmp_path / INDEX_FILE
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(EngineCacheError, match=message):
        read_index(tmp_path)
    path.write_text("{not json")
    with pytest.raises(EngineCacheError, match="cannot read engines.json"):
        read_index(tmp_path)


# --- stale detection (the runtime's rules) ------------------------------------------------------


def _graphs(manifest):
    return {name: graph_identity(manifest, name) for name in COMPONENTS}


def _full_index(root, manifest, platform=H100):
    index = EngineIndex()
    for name in COMPONENTS:
        index = index.with_entry(_entry(root, name, platform, manifest=manifest))
    write_index(root, index)
    return index


def test_matching_engines_are_selected(bundle_copy, manifest):
    index = _full_index(bundle_copy, manifest)
    found = select_engines(bundle_copy, _graphs(manifest), read_index(bundle_copy), H100)
    assert found == {name: index.find(name, H100) for name in COMPONENTS}


def test_engines_for_another_gpu_or_tensorrt_are_refused(bundle_copy, manifest):
    _full_index(bundle_copy, manifest, A10)
    for other in (H100, replace(A10, tensorrt="11.0.0.1")):
        with pytest.raises(StaleEngineError) as e:
            select_engines(bundle_copy, _graphs(manifest), read_index(bundle_copy), other)
        msg = str(e.value)
        assert f"no engine for {other.describe()}" in msg and "\n" not in msg
        assert msg.endswith(f"Rebuild with: v2a-export build-engines {bundle_copy}")


def test_reexported_graph_modified_plan_and_edited_key_are_stale(bundle_copy, manifest):
    index = _full_index(bundle_copy, manifest)
    # The denoiser graph was re-exported after the build: its engine is from another onnx.
    old = index.find("denoiser", H100)
    index = index.with_entry(_entry(bundle_copy, "denoiser", manifest=manifest,
                                    onnx_sha256="ee" * 32))  # fmt: skip
    # The vocoder plan file was modified on disk (same size, other bytes).
    voc = index.find("vocoder", H100)
    (bundle_copy / voc.file).write_bytes(b"PLAN")
    # text's key fields were edited in engines.json without its digest.
    text = index.find("text", H100)
    index = index.with_entry(replace(text, key_fields=replace(text.key_fields, opt_level=1)))
    write_index(bundle_copy, index)
    with pytest.raises(StaleEngineError) as e:
        select_engines(bundle_copy, _graphs(manifest), read_index(bundle_copy), H100)
    msg = str(e.value)
    assert "denoiser: it was built from a different onnx/denoiser.onnx" in msg
    assert "vocoder: its plan" in msg and "was modified (sha256 mismatch)" in msg
    assert "text: its recorded key does not match its key fields" in msg
    assert "clip_visual" not in msg and old.file != index.find("denoiser", H100).file
    # The hint rebuilds exactly those three, with the ranges they were built for.
    assert msg.endswith(
        f"v2a-export build-engines {bundle_copy} --components text,denoiser,vocoder "
        "--min-duration 0.64 --opt-duration 8 --max-duration 10 --batch 1,1,4"
    )
    # Without hashing (verify=False) a same-size modified plan is not detected; the rest is.
    with pytest.raises(StaleEngineError, match="denoiser") as e2:
        select_engines(bundle_copy, _graphs(manifest), read_index(bundle_copy), H100,
                       verify_files=False)  # fmt: skip
    assert "vocoder" not in str(e2.value)


def test_missing_plan_and_precision_mismatch_are_stale(bundle_copy, manifest):
    index = _full_index(bundle_copy, manifest)
    (bundle_copy / index.find("clip_visual", H100).file).unlink()
    index = index.with_entry(_entry(bundle_copy, "vae_decoder", manifest=manifest,
                                    precision="fp16"))  # fmt: skip
    write_index(bundle_copy, index)
    with pytest.raises(StaleEngineError) as e:
        select_engines(bundle_copy, _graphs(manifest), read_index(bundle_copy), H100)
    assert "clip_visual: its plan engines/clip_visual." in str(e.value)
    assert "vae_decoder: it was built as fp16, the graph is fp32" in str(e.value)


# --- the build plan ----------------------------------------------------------------------------


def test_build_plan_keeps_matching_engines_and_explains_the_rest(bundle_copy):
    bundle = load_bundle(bundle_copy)
    options = BuildOptions(components=("text", "denoiser", "vocoder"))
    first = prepare(bundle, options, H100)
    assert [p.reason for p in first.planned] == [f"no engine for {H100.describe()}"] * 3
    # Record engines exactly as requested: everything is up to date, nothing to build.
    index = EngineIndex()
    for p in first.planned:
        index = index.with_entry(_entry(bundle_copy, p.component, **_fields(p.key)))
    write_index(bundle_copy, index)
    again = prepare(bundle, options, H100)
    assert [(p.build, p.reason) for p in again.planned] == [(False, "up to date")] * 3
    assert all(p.key.digest() == p.existing.key for p in again.planned)
    forced = prepare(bundle, replace(options, force=True), H100)
    assert all(p.build and p.reason == "forced (--force)" for p in forced.planned)
    # A longer max window changes the denoiser and vocoder profiles, not text's.
    longer = replace(options, request=ProfileRequest.of(bundle.manifest, max_duration=8.0))
    verdicts = {p.component: (p.build, p.reason) for p in prepare(bundle, longer, H100).planned}
    assert verdicts["text"] == (False, "up to date")
    assert verdicts["denoiser"] == (
        True, "the build request changed: profile x max (8, 313, 8) -> (8, 250, 8)"
    )  # fmt: skip
    assert verdicts["vocoder"][1].startswith("the build request changed: profile mel max")
    other = prepare(bundle, replace(options, opt_level=5), H100)
    assert {p.reason for p in other.planned} == {"the build request changed: opt level 3 -> 5"}
    assert all(p.build for p in prepare(bundle, options, A10).planned)  # another GPU


def _fields(key: EngineKey) -> dict:
    return {
        "onnx_sha256": key.onnx_sha256,
        "precision": key.precision,
        "profiles": key.profiles,
        "opt_level": key.opt_level,
        "workspace_bytes": key.workspace_bytes,
    }


def test_engine_precision_comes_from_the_graph(manifest):
    assert engine_precision(manifest, "denoiser", None) == "fp32"
    assert engine_precision(manifest, "denoiser", "tf32") == "tf32"
    with pytest.raises(ValueError, match="export the bundle with v2a-export export --precision"):
        engine_precision(manifest, "denoiser", "fp16")
    fp16 = replace(
        manifest,
        components={**manifest.components,
                    "denoiser": replace(manifest.components["denoiser"], precision="fp16")},
    )  # fmt: skip
    assert engine_precision(fp16, "denoiser", None) == "fp16"
    with pytest.raises(ValueError, match="needs fp32 graphs"):
        engine_precision(fp16, "denoiser", "fp32")
    bundle = load_bundle(TEST_BUNDLE)
    r = resolve(bundle, BuildOptions(precision="tf32", components=("vocoder",)))
    assert r.precisions == {"vocoder": "tf32"} and r.profiles["vocoder"][0].name == "mel"
    with pytest.raises(ValueError, match="--components bogus"):
        BuildOptions(components=("bogus",))


# --- machines without TensorRT or a GPU ---------------------------------------------------------


def _one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    return lines[0]


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed on this machine")
def test_build_engines_without_tensorrt_is_one_line_with_the_install_hint(bundle_copy):
    from v2a_export.cli import main

    result = CliRunner().invoke(main, ["build-engines", str(bundle_copy)])
    assert result.exit_code == 2
    line = _one_line_error(result)
    assert line.startswith("error: v2a-export build-engines cannot run here: tensorrt is not "
                           "installed")  # fmt: skip
    assert "pip install 'v2a-export[tensorrt]'" in line
    assert not (bundle_copy / "engines").exists()  # nothing written


def test_without_a_gpu_driver_the_probe_says_so():
    try:
        gpu = probe_gpu()
    except BackendError as e:
        assert (
            "no NVIDIA driver found" in str(e)
            or "the NVIDIA driver reports" in str(e)
            or ("no CUDA device 0" in str(e))
        )
        if importlib.util.find_spec("tensorrt") is None:
            return
        pytest.skip("a driver without a usable GPU: covered above")
    else:
        assert gpu.name and gpu.compute_capability.count(".") == 1  # a real GPU here


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed on this machine")
def test_no_gpu_and_no_tensorrt_are_both_named_in_one_line(bundle_copy):
    from v2a_export.cli import main

    try:
        probe_gpu()
        pytest.skip("this machine has a GPU")
    except BackendError:
        pass
    result = CliRunner().invoke(main, ["build-engines", str(bundle_copy)])
    line = _one_line_error(result)
    assert "no NVIDIA driver found" in line and "run on a machine with an NVIDIA GPU" in line


@pytest.mark.parametrize(
    "args, message",
    [
        (["--precision", "fp16"], "--precision fp16 needs fp16 graphs"),
        (["--max-duration", "30"], "--max-duration 30 s is outside"),
        (["--batch", "1,x"], "--batch takes MAX or MIN,OPT,MAX"),
        (["--opt-level", "7"], "--opt-level must be 0..5"),
        (["--workspace", "0"], "--workspace must be > 0"),
        (["--components", "denoiser,nope"], "--components nope: choose from"),
    ],
)
def test_bad_options_are_one_line_before_any_machine_check(bundle_copy, args, message):
    from v2a_export.cli import main

    result = CliRunner().invoke(main, ["build-engines", str(bundle_copy), *args])
    assert result.exit_code == 2
    assert message in _one_line_error(result)


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed on this machine")
def test_runtime_tensorrt_backend_without_tensorrt_is_one_line(tmp_path):
    from media_videos import write_video
    from v2a_runtime.cli import main
    from v2a_runtime.pipeline import Pipeline

    with pytest.raises(BackendError, match=r"tensorrt is not installed.*pip install"):
        Pipeline.load(TEST_BUNDLE, "tensorrt")
    with pytest.raises(BackendError, match="runs a bundle's prebuilt engines"):
        load_session(TEST_BUNDLE / "onnx" / "text.onnx", "tensorrt")
    video = write_video(tmp_path / "in.mp4", frames=20, size=(64, 48))
    result = CliRunner().invoke(
        main, ["generate", str(video), "--bundle", str(TEST_BUNDLE), "--backend", "tensorrt",
               "-o", str(tmp_path / "out.wav")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "pip install 'v2a-export[tensorrt]'" in _one_line_error(result)
    assert not (tmp_path / "out.wav").exists()


def test_cuda_python_errors_are_checked():
    cudart = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    from v2a_runtime.backends.tensorrt.cudart import Cuda, CudaError

    cuda = Cuda(cudart)
    err, count = cudart.cudaGetDeviceCount()
    if err == cudart.cudaError_t.cudaSuccess and count > 0:
        ptr = cuda.malloc(1024)  # a GPU: a real round trip through device memory
        stream = cuda.stream()
        a = np.arange(256, dtype=np.float32)
        b = np.zeros_like(a)
        cuda.upload(ptr, a, stream)
        cuda.download(b, ptr, stream)
        cuda.synchronize(stream)
        cuda.free(ptr)
        cuda.destroy_stream(stream)
        np.testing.assert_array_equal(a, b)
    else:
        with pytest.raises(CudaError, match="CUDA cudaMalloc"):
            cuda.malloc(1024)
