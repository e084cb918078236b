"""TensorRT engines for real: build the test bundle's seven engines, compare each with
onnxruntime at two sizes inside its profile, run the pipeline on them (against the CPU backend,
same seed -> same bits, other seed -> other audio), CUDA graph vs plain enqueue, and the stale
checks end to end. Needs TensorRT, cuda-python and an NVIDIA GPU; skipped (with the reason)
everywhere else — the CPU-only CI runs tests/test_engines.py instead."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from v2a_runtime.backends import BackendError, load_session
from v2a_runtime.backends.tensorrt.env import require_tensorrt

pytestmark = pytest.mark.requires_trt

TESTS = Path(__file__).resolve().parent
TEST_BUNDLE = TESTS / "data" / "test_bundle"


def _stack():
    try:
        return require_tensorrt("the TensorRT tests")
    except BackendError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A copy of the test bundle with engines for 0.64..2.5 s windows and 1..2 tracks."""
    stack = _stack()
    from v2a_runtime.bundle import load_bundle

    from v2a_export.engines.build import BuildOptions, build_engines, prepare
    from v2a_export.engines.profiles import ProfileRequest, parse_tracks

    root = tmp_path_factory.mktemp("trt") / "bundle"
    shutil.copytree(TEST_BUNDLE, root)
    bundle = load_bundle(root)
    request = ProfileRequest.of(
        bundle.manifest, opt_duration=2.0, max_duration=2.5, tracks=parse_tracks("1,1,2")
    )
    options = BuildOptions(request=request)
    prepared = prepare(bundle, options, stack.platform)
    entries = build_engines(bundle, prepared, stack.trt, options)
    return root, options, stack, entries


def test_engines_are_recorded_and_then_up_to_date(built):
    from v2a_runtime.backends.tensorrt.cache import read_index
    from v2a_runtime.bundle import load_bundle
    from v2a_runtime.config import COMPONENTS

    from v2a_export.engines.build import prepare

    root, options, stack, entries = built
    assert sorted(e.component for e in entries) == sorted(COMPONENTS)
    index = read_index(root)
    for e in entries:
        assert index.find(e.component, stack.platform) == e
        assert (root / e.file).stat().st_size == e.bytes and (root / e.log).is_file()
        assert e.device_memory_bytes >= 0 and e.key == e.key_fields.digest()
    again = prepare(load_bundle(root), options, stack.platform)
    assert [p.reason for p in again.planned] == ["up to date"] * len(COMPONENTS)


@pytest.fixture(scope="module")
def sessions(built):
    from v2a_runtime.backends.tensorrt.session import load_engines
    from v2a_runtime.bundle import load_bundle

    root = built[0]
    out = load_engines(load_bundle(root))
    yield out
    next(iter(out.values())).shared.close()


@pytest.mark.parametrize("duration, tracks", [(0.8, 1), (2.3, 2)])
def test_every_engine_matches_onnxruntime(built, sessions, duration, tracks):
    from v2a_runtime.bundle import load_bundle

    from v2a_export.export.descriptors import descriptors_from_manifest

    m = load_bundle(built[0]).manifest
    rules = m.rates
    for name, desc in descriptors_from_manifest(m).items():
        feeds = desc.sample_inputs(desc.sizes(rules, duration, tracks), seed=3)
        want = load_session(TEST_BUNDLE / m.components[name].file).run(dict(feeds))
        got = sessions[name].run(dict(feeds))
        for out in desc.output_names:
            g, w = got[out].astype(np.float64), want[out].astype(np.float64)
            assert g.shape == w.shape, (name, out)
            rel = np.linalg.norm(g - w) / max(np.linalg.norm(w), 1e-30)
            assert rel <= 1e-4, f"{name}.{out} at {duration} s x{tracks}: rel_l2 {rel:.2e}"
            assert np.abs(g - w).max() <= 1e-3 * max(1.0, np.abs(w).max()), (name, out)


def test_cuda_graph_replay_equals_plain_enqueue(built, sessions):
    from v2a_runtime.backends.tensorrt.session import load_engines
    from v2a_runtime.bundle import load_bundle

    from v2a_export.export.descriptors import descriptors_from_manifest

    m = load_bundle(built[0]).manifest
    desc = descriptors_from_manifest(m)["denoiser"]
    sizes = desc.sizes(m.rates, 2.0, 1)
    plain = load_engines(load_bundle(built[0]), cuda_graph=False)
    try:
        graphed = sessions["denoiser"]
        for seed in (0, 1, 2):  # the first call captures, the next ones replay
            feeds = desc.sample_inputs(sizes, seed=seed)
            a = graphed.run(dict(feeds))["velocity"]
            b = plain["denoiser"].run(dict(feeds))["velocity"]
            np.testing.assert_array_equal(a, b)
        assert graphed.use_graph and graphed.graph_note is None, graphed.graph_note
    finally:
        next(iter(plain.values())).shared.close()


def test_pipeline_on_engines_matches_cpu_and_follows_the_seed(built):
    from v2a_runtime.frames import VideoArray
    from v2a_runtime.pipeline import Pipeline

    pixels = np.random.default_rng(0).integers(0, 256, (45, 48, 64, 3), dtype=np.uint8)
    video = VideoArray(pixels, 25.0)  # 1.8 s
    trt = Pipeline.load(built[0], "tensorrt")
    try:
        cpu = Pipeline.load(built[0], "cpu")
        args = dict(prompt="rain on a tin roof", steps=4, tracks=2, watermark=False)
        a = trt.generate(video, seed=7, **args).audio
        b = trt.generate(video, seed=7, **args).audio
        c = trt.generate(video, seed=8, **args).audio
        ref = cpu.generate(video, seed=7, **args).audio
        np.testing.assert_array_equal(a, b)  # same seed, same backend: same bits
        assert np.abs(a - c).max() > 1e-3  # another seed: other audio (no frozen capture)
        rel = np.linalg.norm(a - ref) / np.linalg.norm(ref)
        assert rel <= 1e-3, f"TensorRT vs onnxruntime CPU waveform rel_l2 {rel:.2e}"
    finally:
        next(iter(trt.sessions.values())).shared.close()


def test_shapes_outside_the_profile_are_a_clear_error(built, sessions):
    from v2a_runtime.bundle import load_bundle

    from v2a_export.export.descriptors import descriptors_from_manifest

    m = load_bundle(built[0]).manifest
    desc = descriptors_from_manifest(m)["vocoder"]
    feeds = desc.sample_inputs(desc.sizes(m.rates, 4.0, 1))  # max is 2.5 s
    with pytest.raises(BackendError, match="outside the engine's profile"):
        sessions["vocoder"].run(feeds)


def test_modified_plan_is_refused_and_rebuilt(built, tmp_path):
    from v2a_runtime.backends.tensorrt.cache import StaleEngineError, read_index
    from v2a_runtime.pipeline import Pipeline

    from v2a_export.cli import main

    root, _options, stack, _ = built
    copy = tmp_path / "bundle"
    shutil.copytree(root, copy)
    entry = read_index(copy).find("vocoder", stack.platform)
    data = bytearray((copy / entry.file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / entry.file).write_bytes(bytes(data))
    with pytest.raises(StaleEngineError, match=r"vocoder: its plan .* was modified") as e:
        Pipeline.load(copy, "tensorrt")
    assert "v2a-export build-engines" in str(e.value) and "--components vocoder" in str(e.value)
    runner = CliRunner()
    args = ["build-engines", str(copy), "--opt-duration", "2", "--max-duration", "2.5",
            "--batch", "1,1,2"]  # fmt: skip
    assert runner.invoke(main, [*args, "--check"]).exit_code == 1
    rebuilt = runner.invoke(main, args)
    assert rebuilt.exit_code == 0, rebuilt.output + rebuilt.stderr
    assert "vocoder      build" in rebuilt.output and "text         keep" in rebuilt.output
    assert runner.invoke(main, [*args, "--check"]).exit_code == 0
    pipe = Pipeline.load(copy, "tensorrt")
    next(iter(pipe.sessions.values())).shared.close()
