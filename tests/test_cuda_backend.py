"""The CUDA backend's IO binding and device-resident sampling loop.

On a CPU machine the same code runs with ``CudaOptions(device="cpu")``: onnxruntime binds CPU
``OrtValue`` s exactly as it binds CUDA ones, so the loop structure (conditions bound once,
fixed x/velocity buffers, the packaged CFG+Euler step graph, ping-pong state, the host-solver
path, the NaN canary) is checked here for bit equality with the plain numpy path. The tests
marked ``requires_cuda`` run the real thing (CUDA graph capture) and skip with a reason when
onnxruntime has no CUDAExecutionProvider.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from v2a_runtime.backends import Backend, BackendError, load_session
from v2a_runtime.backends.cuda.loop import CANARY_RUNS, STEP_GRAPHS, DeviceSampler
from v2a_runtime.backends.cuda.session import BoundSession, CudaOptions, cuda_available
from v2a_runtime.pipeline import DEFAULT_BUNDLE, Pipeline

CPU = CudaOptions(device="cpu", threads=2)
requires_cuda = pytest.mark.skipif(
    not cuda_available(), reason="onnxruntime has no CUDAExecutionProvider (needs onnxruntime-gpu)"
)


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.load(None, threads=2)


@pytest.fixture(scope="module")
def frames(pipe):
    """Two seconds of moving, textured frames at the bundle's sizes (no torch needed)."""
    v = pipe.bundle.manifest.video
    rng = np.random.default_rng(0)

    def stream(fps, size):
        n = int(fps * 2.0)
        _, xx = np.mgrid[0:size, 0:size]
        ramp = [((xx + 3 * i) % size * 255 // size)[..., None] for i in range(n)]  # moving edge
        frames = [r + rng.integers(0, 40, (size, size, 3)) for r in ramp]
        return np.clip(np.stack(frames), 0, 255).astype(np.uint8)

    from v2a_runtime.media import Frames

    return Frames(stream(v.clip_fps, v.clip_size), stream(v.sync_fps, v.sync_size), 0.0, 2.0)


def _device(pipe, options=CPU):
    """The pipeline with the CUDA backend's sampler (the device-resident loop) on ``options``."""
    den = pipe.sessions["denoiser"]
    sampler = DeviceSampler.load(pipe.bundle.path("denoiser"), options, den.inputs, den.outputs)
    return replace(pipe, backend=Backend("cuda", pipe.sessions, lambda _denoiser: sampler))


def test_step_graphs_are_the_generated_ones():
    pytest.importorskip("onnx")
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("steps", REPO / "scripts/make_step_graphs.py")
    steps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(steps)
    for name, data in steps.graphs().items():
        assert (STEP_GRAPHS / name).read_bytes() == data, f"{name}: run scripts/make_step_graphs.py"


@pytest.mark.parametrize("cfg", [4.5, None])
def test_step_graph_is_the_numpy_cfg_euler_update_bit_for_bit(cfg):
    rng = np.random.default_rng(1)
    k, shape = 2, (2, 13, 8)
    x = rng.standard_normal(shape, dtype=np.float32)
    v = rng.standard_normal((2 * k if cfg else k, 13, 8), dtype=np.float32)
    t0, t1 = 0.3125, 0.4375
    name = "cfg_step_f32_f32.onnx" if cfg else "plain_step_f32_f32.onnx"
    step = BoundSession.load(STEP_GRAPHS / name, CPU)
    feeds = {"x": x, "velocity": v, "dt": np.array([t1 - t0], np.float32)}
    if cfg:
        feeds |= {"w": np.array([cfg], np.float32), "w_uncond": np.array([1.0 - cfg], np.float32)}
    out = step.run(feeds)
    guided = cfg * v[:k] + (1.0 - cfg) * v[k:] if cfg else v  # the pipeline's numpy path
    x_next = x + (t1 - t0) * guided
    assert np.array_equal(out["guided"], guided) and np.array_equal(out["x_next"], x_next)
    assert np.array_equal(out["x_den"], np.concatenate([x_next, x_next]) if cfg else x_next)
    # fp16 denoiser I/O: velocity read as fp16, the next denoiser input written as fp16
    half = BoundSession.load(STEP_GRAPHS / name.replace("f32_f32", "f16_f16"), CPU)
    out16 = half.session.run(None, {**feeds, "velocity": v.astype(np.float16)})
    assert out16[2].dtype == np.float16 and np.allclose(out16[1], x_next, atol=1e-3)


@pytest.mark.parametrize(
    ("solver", "cfg", "tracks"),
    [("euler", 4.5, 2), ("euler", 1.0, 1), ("abm3", 4.5, 1), ("heun", 3.0, 1)],
)
def test_device_loop_equals_the_plain_pipeline_bit_for_bit(pipe, frames, solver, cfg, tracks):
    """Euler runs wholly on the (CPU) device: conditions bound once, x/velocity in fixed
    buffers, CFG + update in the step graph; the other solvers use the host-solver path."""
    kw = dict(prompt="a ball bounces", seed=3, steps=5, solver=solver, cfg=cfg, tracks=tracks,
              watermark=False)  # fmt: skip
    plain = pipe.generate(frames, **kw)
    events = []
    device = _device(pipe).generate(frames, callback=events.append, **kw)
    assert np.array_equal(device.audio, plain.audio)
    assert device.evaluations == plain.evaluations
    steps = [e.step for e in events if e.stage == "sample" and e.step]
    assert steps == list(range(1, 6))


def test_seeds_change_the_audio_and_repeat_exactly(pipe, frames):
    """Guards against a loop that silently ignores its input (deployment.md §4 row 34)."""
    dev = _device(pipe)
    kw = dict(prompt="rain on a tin roof", steps=4, solver="euler", watermark=False)
    a = dev.generate(frames, seed=1, **kw).audio
    b = dev.generate(frames, seed=2, **kw).audio
    c = dev.generate(frames, seed=1, **kw).audio
    assert np.array_equal(a, c)
    assert np.abs(a - b).max() > 0.01 * np.abs(a).max()


def test_a_run_that_writes_nothing_is_caught_by_the_canary(pipe, frames, monkeypatch):
    """A denoiser run that returns without writing its output (what a broken capture does)
    leaves the NaN canary in the velocity buffer: an error, not silent noise."""
    dev = _device(pipe)
    den = dev.backend.sampler()
    real = BoundSession.run_bound

    def silent(self, binding, graph_id=None):
        if self.path == den.path and any(t.name == "velocity" for t in self.outputs):
            return None  # the run "succeeds" and writes nothing
        return real(self, binding, graph_id)

    monkeypatch.setattr(BoundSession, "run_bound", silent)
    with pytest.raises(BackendError, match="left its velocity buffer unwritten"):
        dev.generate(frames, seed=1, steps=2, solver="euler", watermark=False)
    assert CANARY_RUNS >= 3  # capture happens on the third run in onnxruntime


def test_fixed_dims_sessions_and_their_buffers_persist_per_shape(pipe, frames):
    """A captured CUDA graph replays the addresses it was captured with: every call of the
    same shape must write into the same device buffers, and still get its own result."""
    dev = _device(pipe)
    sampler = dev.backend.sampler()
    kw = dict(steps=2, solver="euler", watermark=False)
    dev.generate(frames, seed=1, prompt="rain", **kw)
    (dims,) = sampler._shapes
    shape = sampler._shapes[dims]
    ptrs = {n: b.data_ptr() for n, b in (("x", shape.X), ("v", shape.V), *shape.conds.items())}
    other = dev.generate(frames, seed=2, prompt="a dog barks", **kw).audio
    assert len(sampler._shapes) == 1 and sampler._shapes[dims] is shape
    now = {n: b.data_ptr() for n, b in (("x", shape.X), ("v", shape.V), *shape.conds.items())}
    assert now == ptrs
    assert np.array_equal(other, pipe.generate(frames, seed=2, prompt="a dog barks", **kw).audio)
    assert dict(dims)["B"] == 2 and dict(dims)["L"] == 63
    session = shape.session
    assert dict(session.static_dims) == dict(dims) and not session.captured  # CPU: no graphs
    # onnxruntime now sees static sizes (its shape subgraphs fold away) ...
    assert session.inputs[0].shape == (2, 63, dev.bundle.manifest.audio.latent_channels)
    # ... and refuses another batch instead of silently recompiling
    bad = {t.name: np.zeros(t.shape, np.float32) for t in session.inputs}
    bad["x"], bad["t"] = np.zeros((5, *bad["x"].shape[1:]), np.float32), np.zeros(5, np.float32)
    with pytest.raises(BackendError, match="onnxruntime run failed"):
        session.run(bad)


def test_bound_session_runs_every_component_like_onnxruntime(pipe):
    for name in ("text", "vae_decoder"):
        plain = pipe.sessions[name]
        bound = BoundSession.load(pipe.bundle.path(name), CPU)
        assert bound.inputs == plain.inputs and bound.outputs == plain.outputs
        shape = {"text": (2, 77), "vae_decoder": (1, plain.inputs[0].shape[1], 40)}[name]
        feed = {plain.inputs[0].name: (np.ones(shape, np.int64) if name == "text"
                                       else np.full(shape, 0.1, np.float32))}  # fmt: skip
        a, b = plain.run(feed), bound.run(feed)
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_cuda_without_a_gpu_is_one_clear_error():
    if cuda_available():
        pytest.skip("this machine has the CUDA provider")
    with pytest.raises(BackendError, match=r"onnxruntime-gpu \(pip install 'v2a-export\[gpu\]'"):
        load_session(DEFAULT_BUNDLE / "onnx" / "text.onnx", "cuda")
    with pytest.raises(BackendError, match="unknown device"):
        CudaOptions(device="tpu")


# --- on a GPU ------------------------------------------------------------------------------


@pytest.mark.requires_cuda
@requires_cuda
def test_cuda_graph_replay_equals_an_uncaptured_run_and_follows_the_seed(pipe, frames):
    graph = _device(pipe, CudaOptions())
    plain = _device(pipe, CudaOptions(cuda_graph=False))
    kw = dict(prompt="glass clinks", steps=8, solver="euler", watermark=False)
    a = graph.generate(frames, seed=1, **kw).audio
    sampler = graph.backend.sampler()
    assert all(s.session.captured for s in sampler._shapes.values())
    opts = next(iter(sampler._shapes.values())).session.session.get_provider_options()
    assert opts["CUDAExecutionProvider"]["enable_cuda_graph"] == "1"
    b = plain.generate(frames, seed=1, **kw).audio
    assert np.allclose(a, b, atol=1e-5), np.abs(a - b).max()  # same kernels, replayed
    again = graph.generate(frames, seed=1, **kw).audio  # pure replays now
    assert np.array_equal(a, again)
    other = graph.generate(frames, seed=2, **kw).audio
    assert np.abs(a - other).max() > 0.01 * np.abs(a).max()


@pytest.mark.requires_cuda
@requires_cuda
def test_cuda_backend_matches_cpu(pipe, frames):
    gpu = Pipeline.load(None, "cuda")
    kw = dict(prompt="footsteps on gravel", seed=4, steps=6, solver="abm3", watermark=False)
    a = gpu.generate(frames, **kw).audio
    b = pipe.generate(frames, **kw).audio
    rel = np.linalg.norm(a - b) / np.linalg.norm(b)
    assert rel < 1e-3, rel


# --- benchmarks/gpu.py ---------------------------------------------------------------------


def _bench():
    import importlib.util
    import sys

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_benchmark_dry_run_writes_json_and_markdown(tmp_path):
    """The CPU dry run exercises every code path that has no GPU dependency."""
    pytest.importorskip("torch")
    import json

    bench = _bench()
    out = tmp_path / "gpu_dry"
    args = ["--dry-run", "--precision", "fp32", "--components", "text,denoiser",
            "--torch", "eager-fp32", "--out", str(out)]  # fmt: skip
    assert bench.main(args) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["config"]["dry_run"] and report["config"]["variant"] == "tiny"
    got = {(r["stage"], r["name"], r["engine"], r["mode"]) for r in report["rows"]}
    for name in ("text", "denoiser"):
        assert ("component", name, "onnxruntime", "run") in got
        assert ("component", name, "pytorch", "eager-fp32") in got
    assert ("end to end", "pipeline", "onnxruntime", "generate") in got
    assert ("end to end", "pipeline", "pytorch", "eager-fp32 (reference)") in got
    assert all(r["p50_ms"] > 0 and r["p95_ms"] >= r["p50_ms"] for r in report["rows"])
    assert "not results" in out.with_suffix(".md").read_text()


def test_gpu_benchmark_summary_checks_the_goals():
    bench = _bench()
    rows = [
        bench.Row("denoiser step", "denoiser", "onnxruntime", "cuda", "fp16",
                  "loop step (CUDA graph)", 1.0, 1.2, 80),
        bench.Row("component", "denoiser", "pytorch", "cuda", "bf16", "eager-bf16", 3.5, 4.0, 20),
        bench.Row("end to end", "pipeline", "onnxruntime", "cuda", "fp16", "generate", 120.0,
                  130.0, 5, steps=8),
    ]  # fmt: skip
    s = bench.summarize(rows)
    d = s["denoiser_step_vs_torch_eager_bf16"]
    assert d["ratio"] == pytest.approx(3.5) and d["met"]
    assert s["end_to_end_fp16_cuda_8_steps_ms"] == 120.0
