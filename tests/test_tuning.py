"""Tuned samplers: the solver, the reference, the fit, the manifest, the command and the CLI.

The numerical parts run on a flow with a closed-form trajectory: Gaussian data N(μ, s²) per
latent channel and x_t = (1 − t)·x₀ + t·x₁, whose ODE solution from x₀ is
x(t) = t·μ + σ_t·x₀ with σ_t² = (1 − t)² + t²·s². The command runs on the committed test bundle
(placeholder networks, real onnxruntime sessions), with settings small enough for seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from v2a_runtime import named_sampler, sampling
from v2a_runtime.bundle import BundleError, load_bundle
from v2a_runtime.cli import main as v2a_main
from v2a_runtime.named_sampler import Calibration, NamedSampler
from v2a_runtime.tuning import fit, relative_error
from v2a_runtime.tuning.reference import reference
from v2a_runtime.tuning.tune import TuneResult, with_samplers

from v2a_export.cli import main as export_main

TESTS = Path(__file__).resolve().parent
TEST_BUNDLE = TESTS / "data" / "test_bundle"
MU = np.array([0.8, -0.5, 0.3])
S = np.array([0.05, 0.2, 0.6])
# Small but real: 6 + 3 conditions of 0.64 s, a 512-step reference, a 16-interval fine grid.
TUNE = ["--evaluations", "3,4", "--calibration", "6", "--held-out", "3", "--duration", "0.64",
        "--reference-steps", "512", "--points", "16", "--threads", "1", "-q"]  # fmt: skip


def gaussian_velocity(x: np.ndarray, t: float) -> np.ndarray:
    var = (1.0 - t) ** 2 + t * t * S**2
    return (MU + (t * S**2 - (1.0 - t)) / var * (x - t * MU)).astype(x.dtype)


def gaussian_solution(x0: np.ndarray, t: float) -> np.ndarray:
    return t * MU + np.sqrt((1.0 - t) ** 2 + t * t * S**2) * x0


def noise(seed: int, n: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 5, 3), dtype=np.float32)


# --- the solver and the numerics ---------------------------------------------------------


@pytest.mark.parametrize("solver", ["euler", "ab2"])
def test_multistep_with_a_solvers_table_is_that_solver(solver):
    ts = sampling.time_grid("shifted", 7)
    x0 = noise(0)
    table = sampling.multistep_weights(solver, ts)
    got = sampling.multistep(gaussian_velocity, x0, ts, weights=table)
    want = sampling.SOLVERS[solver](gaussian_velocity, x0, ts)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert relative_error(got, gaussian_solution(x0, 1.0)) > 1e-3  # a real, inexact solve


def test_multistep_refuses_a_table_that_does_not_fit_the_grid():
    ts = sampling.time_grid("uniform", 3)
    with pytest.raises(ValueError, match=r"lower-triangular \(3, 3\) table"):
        sampling.multistep(gaussian_velocity, noise(0), ts, weights=np.ones((3, 3)))


def test_reference_stores_the_trajectory_and_the_velocities_on_it():
    x0 = noise(1)
    ref = reference(gaussian_velocity, x0, steps=256, points=16)
    assert ref.times.tolist() == np.linspace(0, 1, 17).tolist()
    assert ref.states.shape == (17, 8, 5, 3) and ref.velocities.shape == (16, 8, 5, 3)
    for i in (0, 5, 16):
        assert relative_error(ref.states[i], gaussian_solution(x0, ref.times[i])) < 1e-4
    for i in (0, 7, 15):  # exactly the network's velocity at the stored state
        np.testing.assert_array_equal(
            ref.velocities[i], gaussian_velocity(ref.states[i], float(ref.times[i]))
        )
    # halving the step changes the endpoint by about 3x the reference's own (2nd-order) error
    err = relative_error(ref.endpoint, gaussian_solution(x0, 1.0))
    assert 1e-7 < err < ref.change < 1e-3
    assert ref.evaluations == 511 + 255


def test_fitted_weights_are_the_base_where_the_base_is_exact():
    # Constant velocity: Euler is exact, so the ridge-regularised fit returns Euler's weights.
    c = np.array([0.3, -1.0, 2.0], dtype=np.float32)
    ts = sampling.time_grid("shifted", 5)
    x0 = noise(2)
    targets = np.stack([x0 + float(t) * c for t in ts])
    base = sampling.multistep_weights("euler", ts)

    def constant(x, _t):
        return np.broadcast_to(c, x.shape)

    table, x = fit.fit_weights(constant, x0, ts, targets, base)
    np.testing.assert_allclose(table, base, rtol=0, atol=1e-7)  # float32 targets
    np.testing.assert_allclose(x, targets[-1], atol=1e-5)


def test_fitted_weights_carry_over_to_new_noise():
    ts = sampling.time_grid("uniform", 4)
    x_cal, x_new = noise(3), noise(4)
    targets = np.stack([gaussian_solution(x_cal, float(t)) for t in ts])
    base = sampling.multistep_weights("euler", ts)
    table, x = fit.fit_weights(gaussian_velocity, x_cal, ts, targets, base)
    fitted = sampling.multistep(gaussian_velocity, x_new, ts, weights=table)
    euler = sampling.euler(gaussian_velocity, x_new, ts)
    truth = gaussian_solution(x_new, 1.0)
    assert relative_error(x, targets[-1]) < 0.2 * relative_error(
        sampling.euler(gaussian_velocity, x_cal, ts), targets[-1]
    )
    assert relative_error(fitted, truth) < 0.2 * relative_error(euler, truth)


def test_integrate_runs_a_named_solver_or_the_multistep_table():
    ts = sampling.time_grid("shifted", 5)
    x0 = noise(5)
    table = sampling.multistep_weights("ab2", ts)
    ab2 = sampling.ab2(gaussian_velocity, x0, ts)
    np.testing.assert_array_equal(
        sampling.integrate(gaussian_velocity, x0, ts, solver="ab2"), ab2
    )
    got = sampling.integrate(gaussian_velocity, x0, ts, solver="multistep", weights=table)
    np.testing.assert_allclose(got, ab2, rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="needs its weights table"):
        sampling.integrate(gaussian_velocity, x0, ts, solver="multistep")
    with pytest.raises(ValueError, match="only with solver 'multistep'"):
        sampling.integrate(gaussian_velocity, x0, ts, solver="euler", weights=table)


def test_stack_conditions_orders_cond_rows_then_uncond_rows():
    from v2a_runtime.guidance import stack_conditions

    # three conditioner outputs: row 0 cond, row 1 uncond; values = 10·condition + row
    outs = [{"g": np.array([[10.0 * k], [10.0 * k + 1]]), "rope": np.full((4, 2), k)}
            for k in range(3)]  # fmt: skip
    feeds = stack_conditions(outs, ("g",))
    assert feeds["g"][:, 0].tolist() == [0, 10, 20, 1, 11, 21]  # [cond × N; uncond × N]
    np.testing.assert_array_equal(feeds["rope"], outs[0]["rope"])  # shared: the first's


def test_calibration_conditions_are_generates_conditions(tmp_path):
    """encode_items feeds the denoiser what generate feeds it for the same video and prompt
    (cond rows then uncond rows), and w = 1 keeps the cond rows only."""
    from media_videos import write_video
    from v2a_runtime.backends.recording import RecordingSession
    from v2a_runtime.pipeline import Pipeline
    from v2a_runtime.tuning import Item, encode_items

    videos = [write_video(tmp_path / f"v{k}.mp4", frames=40, size=size)
              for k, size in enumerate([(160, 120), (96, 128)])]  # fmt: skip
    prompts = ["rain on glass", "a bouncing ball"]
    pipe = Pipeline.load(TEST_BUNDLE)
    cs = encode_items(pipe, [Item(v, p, "wind") for v, p in zip(videos, prompts, strict=True)],
                      duration=1.0, seed=0, source="test")  # fmt: skip
    batched = pipe.bundle.manifest.components["denoiser"].batched_inputs()
    for k, (video, prompt) in enumerate(zip(videos, prompts, strict=True)):
        rec = RecordingSession(pipe.sessions["denoiser"])
        pipe.with_sessions(denoiser=rec).generate(
            video, prompt=prompt, negative_prompt="wind", duration=1.0, steps=1,
            solver="euler", watermark=False,
        )  # fmt: skip
        for name in batched:
            if name in ("x", "t"):
                continue
            seen = rec.feeds[0][name]  # [cond; uncond] of this video
            np.testing.assert_array_equal(cs.feeds[name][[k, 2 + k]], seen)
            np.testing.assert_array_equal(cs.feeds_for(1.0)[name][k], seen[0])
    assert cs.feeds_for(1.0)[batched[-1]].shape[0] == 2


# --- the manifest --------------------------------------------------------------------------


def _record(**kw) -> Calibration:
    values = dict(method="m", source="s", conditions=4, seed=0, duration=1.0, evaluations=3,
                  reference="r", reference_change=1e-4, error=0.1, euler25_error=0.2,
                  held_out_conditions=2, held_out_error=0.1, held_out_euler25_error=0.2,
                  tuning_evaluations=100, tuning_seconds=1.0)  # fmt: skip
    return Calibration(**{**values, **kw})


def _sampler(times=(0.0, 0.3, 0.7, 1.0), **kw) -> NamedSampler:
    weights = ((0.25,), (-0.05, 0.45), (0.01, -0.1, 0.4))
    s = NamedSampler("multistep", times, 4.5, weights, _record(**kw))
    return named_sampler.sealed(s)


def _result(samplers: dict, default: str | None) -> TuneResult:
    return TuneResult(samplers, default, (), None, 0.0, 0.0, 0.0, 0, 0.0)


def test_manifest_round_trip_and_sampler_hash(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(TEST_BUNDLE, bundle)
    m = load_bundle(bundle).manifest
    m2 = with_samplers(m, _result({"tuned-3": _sampler()}, "tuned-3"))
    assert m2.sampler.name == "tuned-3" and m2.sampler.solver == m.sampler.solver
    from v2a_runtime.bundle import Manifest, write_manifest

    write_manifest(bundle, m2)
    loaded = load_bundle(bundle).manifest
    assert loaded == m2 and Manifest.from_dict(loaded.to_dict()) == loaded
    assert loaded.samplers["tuned-3"].sha256 == named_sampler.digest(loaded.samplers["tuned-3"])
    # one edited time is refused, as a modified graph file would be
    data = json.loads((bundle / "manifest.json").read_text())
    data["samplers"]["tuned-3"]["times"][1] = 0.31
    (bundle / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="sampler 'tuned-3' does not match its sha256"):
        load_bundle(bundle)
    load_bundle(bundle, verify=False)  # still a valid manifest; only the hash disagrees
    # a default that names no sampler is refused
    data["sampler"]["name"] = "tuned-9"
    (bundle / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="sampler.name 'tuned-9' is not one of"):
        load_bundle(bundle, verify=False)


def test_manifest_without_samplers_is_written_as_before():
    m = load_bundle(TEST_BUNDLE).manifest
    d = m.to_dict()
    assert "samplers" not in d and "name" not in d["sampler"]


@pytest.mark.parametrize(
    "passed, previous, expected",
    [(True, None, "tuned-3"), (False, None, None), (False, "tuned-3", None),
     (False, "other", "other")],
)  # fmt: skip
def test_default_follows_the_gate(passed, previous, expected):
    m = load_bundle(TEST_BUNDLE).manifest
    old = {} if previous is None else {previous: _sampler()}
    m = replace(m, samplers=old, sampler=replace(m.sampler, name=previous))
    new = _sampler(held_out_error=0.1 if passed else 0.3)
    assert new.passed_gate is passed
    m2 = with_samplers(m, _result({"tuned-3": new}, "tuned-3" if passed else None))
    assert m2.sampler.name == expected


# --- the command ---------------------------------------------------------------------------


def _tune(*args):
    return CliRunner().invoke(export_main, ["tune-sampler", *map(str, args)])


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tuned") / "bundle"
    run = _tune(TEST_BUNDLE, *TUNE, "--out", out)
    assert run.exit_code == 0, run.output
    assert "network evaluations" in run.output
    return out


def test_tune_sampler_writes_named_samplers_that_verify(tuned):
    m = load_bundle(tuned).manifest  # every file and every sampler hash checked
    assert set(m.samplers) == {"tuned-3", "tuned-4"}
    for name, s in m.samplers.items():
        c = s.calibration
        assert s.evaluations == c.evaluations == int(name[-1])
        assert (c.conditions, c.held_out_conditions, c.seed, c.duration) == (6, 3, 0, 0.64)
        assert c.source == "6 random feature sets (seed 0)"  # the test bundle has random weights
        assert 0 < c.error < 1 and 0 < c.held_out_error < 1 and c.reference_change < 1e-3
        assert c.tuning_evaluations > 2 * (1023 + 511)
    # the graphs are shared with the source bundle, untouched
    assert (tuned / "onnx" / "denoiser.onnx").read_bytes() == (
        TEST_BUNDLE / "onnx" / "denoiser.onnx"
    ).read_bytes()


def test_tuned_grids_are_deterministic(tuned, tmp_path):
    def tuned_values(root):
        return {
            n: (s.times, s.weights, s.calibration.error, s.calibration.held_out_error)
            for n, s in load_bundle(root).manifest.samplers.items()
        }

    run = _tune(TEST_BUNDLE, *TUNE, "--out", tmp_path / "again")
    assert run.exit_code == 0, run.output
    assert tuned_values(tmp_path / "again") == tuned_values(tuned)
    run = _tune(TEST_BUNDLE, *TUNE, "--seed", 1, "--out", tmp_path / "seed1")
    assert run.exit_code == 0, run.output
    assert tuned_values(tmp_path / "seed1") != tuned_values(tuned)


def test_in_place_update_keeps_the_graphs(tuned, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(TEST_BUNDLE, bundle)
    run = _tune(bundle, *TUNE, "--evaluations", "3")
    assert run.exit_code == 0, run.output
    m = load_bundle(bundle).manifest
    assert list(m.samplers) == ["tuned-3"]
    assert m.samplers["tuned-3"].times == load_bundle(tuned).manifest.samplers["tuned-3"].times


@pytest.mark.parametrize(
    "args, message",
    [
        (["--calibration", "1"], "1 condition(s) is too few to tune on; give at least 2"),
        (["--videos", "EMPTY"], "has no videos"),
        (["--videos", "VIDEOS", "--calibration", "2", "--held-out", "2"],
         "has 3 videos; --calibration 2 and --held-out 2 need 4"),
        (["--videos", "VIDEOS", "--calibration", "2", "--held-out", "1", "--prompts", "BAD"],
         "line 1: expected NAME<TAB>prompt[<TAB>negative]"),
        (["--videos", "VIDEOS", "--calibration", "2", "--held-out", "1", "--duration", "3"],
         "has 1.60 s of video, 3 s are needed"),
        (["--evaluations", "1,4"], "--evaluations: expected budgets >= 2 like 4,6,8, got '1,4'"),
    ],
)  # fmt: skip
def test_unusable_calibration_is_refused_with_one_line(tmp_path, args, message):
    from media_videos import write_video

    (tmp_path / "empty").mkdir()
    videos = tmp_path / "videos"
    videos.mkdir()
    for k in range(3):
        write_video(videos / f"v{k}.mp4", frames=40)
    (tmp_path / "bad.txt").write_text("nope.mp4\ta prompt\n")
    subst = {"EMPTY": tmp_path / "empty", "VIDEOS": videos, "BAD": tmp_path / "bad.txt"}
    bundle = tmp_path / "b"
    shutil.copytree(TEST_BUNDLE, bundle)
    before = (bundle / "manifest.json").read_bytes()
    run = _tune(bundle, *(subst.get(a, a) for a in args), "-q")
    assert run.exit_code == 2, run.output
    lines = run.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], run.output
    assert "Traceback" not in run.output
    assert (bundle / "manifest.json").read_bytes() == before


def test_tuning_on_own_videos_and_prompts(tmp_path):
    from media_videos import write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    for k in range(4):
        write_video(videos / f"v{k}.mp4", frames=40)
    (tmp_path / "p.txt").write_text("v0.mp4\train on glass\twind\nv3.mp4\ta bouncing ball\n")
    own = ["--calibration", "2", "--held-out", "2", "--videos", videos, "--prompts",
           tmp_path / "p.txt", "--evaluations", "3", "--out", tmp_path / "o"]  # fmt: skip
    run = _tune(TEST_BUNDLE, *TUNE, *own)
    assert run.exit_code == 0, run.output
    c = load_bundle(tmp_path / "o").manifest.samplers["tuned-3"].calibration
    assert (c.source, c.held_out_conditions) == (f"2 videos of {videos}", 2)


# --- the runtime CLI -------------------------------------------------------------------------


def test_sampler_option_selects_a_named_sampler(tuned, tmp_path):
    from media_videos import write_video
    from v2a_runtime.pipeline import Pipeline

    video = write_video(tmp_path / "in.mp4", frames=40)
    pipe = Pipeline.load(tuned)

    def audio(**kw):
        return pipe.generate(video, seed=3, **kw).audio[0]

    a3, a4, fixed = (audio(sampler="tuned-3", watermark=False),
                     audio(sampler="tuned-4", watermark=False), audio(watermark=False))  # fmt: skip
    np.testing.assert_array_equal(a3, audio(sampler="tuned-3", watermark=False))
    for other in (a4, fixed):
        assert np.linalg.norm(a3 - other) > 0.01 * np.linalg.norm(a3)  # the same: exactly 0

    out = tmp_path / "cli.wav"
    args = ["generate", str(video), "--bundle", str(tuned), "-o", str(out), "-q", "--seed", "3"]
    run = CliRunner().invoke(v2a_main, [*args, "--sampler", "tuned-3"])
    assert run.exit_code == 0, run.output
    assert "sampler tuned-3" in run.output
    np.testing.assert_allclose(sf.read(out)[0], audio(sampler="tuned-3"), atol=1e-4)  # 16-bit
    run = CliRunner().invoke(v2a_main, [*args, "-f"])
    assert "euler 25 steps" in run.output  # the gate failed on this toy network: no new default
    run = CliRunner().invoke(v2a_main, ["info", str(tuned)])
    assert run.exit_code == 0 and "tuned-3    multistep 3 evaluations" in run.output
    assert "t = 0.000" in run.output
    run = CliRunner().invoke(v2a_main, [*args, "-f", "--sampler", "tuned-9"])
    assert run.exit_code == 2
    assert "has no sampler 'tuned-9'; it has: tuned-3, tuned-4" in run.output


def test_default_named_sampler_is_used_and_overridable(tuned, tmp_path):
    from media_videos import write_video
    from v2a_runtime.backends.recording import RecordingSession
    from v2a_runtime.bundle import write_manifest
    from v2a_runtime.pipeline import Pipeline

    bundle = tmp_path / "b"
    shutil.copytree(tuned, bundle)
    m = load_bundle(bundle).manifest
    write_manifest(bundle, replace(m, sampler=replace(m.sampler, name="tuned-4")))
    recording = RecordingSession(Pipeline.load(bundle).sessions["denoiser"])
    pipe = Pipeline.load(bundle).with_sessions(denoiser=recording)
    video = write_video(tmp_path / "in.mp4", frames=40)
    default = pipe.generate(video, seed=3, watermark=False)
    assert default.options.sampler == "tuned-4" and default.evaluations == 4
    seen = [float(f["t"][0]) for f in recording.feeds]  # the times the denoiser ran at
    assert seen == [float(t) for t in m.samplers["tuned-4"].grid()[:-1]]
    assert pipe.generate(video, seed=3, steps=5, watermark=False).evaluations == 5
    with pytest.raises(ValueError, match="fixes the solver, steps and grid"):
        pipe.resolve(sampler="tuned-3", solver="euler")


def test_tuning_is_torch_free(tmp_path):
    """The whole command runs in an interpreter where importing torch fails."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys
        class BlockTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError(f"torch is blocked in this test: {name}")
        sys.meta_path.insert(0, BlockTorch())
        from click.testing import CliRunner
        from v2a_export.cli import main
        run = CliRunner().invoke(main, ["tune-sampler", *sys.argv[1:]])
        assert run.exit_code == 0, run.output
        assert not [m for m in sys.modules if m.split(".")[0] == "torch"]
        """
    )
    args = [str(TEST_BUNDLE), *TUNE, "--evaluations", "3", "--out", str(tmp_path / "o")]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
