"""The GPU evidence kit (docs/gpu.md) without a GPU: both stages' CPU dry runs through
``scripts/gpu_evidence.sh`` on a Python where PyAV, soundfile and ftfy cannot be imported (as on
the GPU machine), the smoke check that refuses a CPU fallback, and a stage's time budget."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


# --- the stages' dry runs --------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_machine_python(tmp_path_factory) -> dict:
    """Environment for the kit's processes: PyAV, soundfile and ftfy cannot be imported (the
    GPU machine has none of them), the scratch and $OUT in a temporary directory."""
    tmp = tmp_path_factory.mktemp("gpu_machine")
    blocked = tmp / "blocked"
    blocked.mkdir()
    for name in ("av", "soundfile", "ftfy"):
        (blocked / f"{name}.py").write_text(f"raise ImportError('no {name} on the GPU machine')\n")
    return {**os.environ, "PYTHONPATH": str(blocked), "PYTHON": sys.executable,
            "V2A_GPU_SCRATCH": str(tmp / "scratch"), "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip


def _stage(env: dict, stage: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/gpu_evidence.sh", stage, "--dry-run", *extra],
                          cwd=REPO, env={**env, "OUT": str(out)}, capture_output=True, text=True,
                          timeout=1800)  # fmt: skip


@pytest.mark.slow
def test_stage_a_dry_run(gpu_machine_python, tmp_path):
    run = _stage(gpu_machine_python, "A", tmp_path, "--components", "text,denoiser")
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gpu_dryrun_cpu_pytorch.json", "gpu_dryrun_cpu_pytorch.md",
        "gpu_dryrun_cpu_stage_a.json", "gpu_dryrun_cpu_stage_a.md", "stage_a.log"]  # fmt: skip
    stage = json.loads((tmp_path / "gpu_dryrun_cpu_stage_a.json").read_text())
    assert stage["dry_run"] and [s["status"] for s in stage["steps"]] == ["ok", "ok", "ok"]
    assert "no tensorrt module" in stage["steps"][1]["note"]
    assert stage["steps"][0]["detail"]["project"] == {  # the working tree, not an installed copy
        "v2a_runtime": str(REPO / "runtime" / "__init__.py"),
        "v2a_export": str(REPO / "v2a_export" / "__init__.py")}  # fmt: skip
    report = json.loads((tmp_path / "gpu_dryrun_cpu_pytorch.json").read_text())
    c = report["ceilings"]
    assert c["bf16_tflops"] > 0 and c["fp32_tflops"] > 0 and c["copy_gbps"] > 0
    rows = {(r["stage"], r["name"], r["mode"], r["steps"]): r for r in report["rows"]}
    for name in ("text", "denoiser"):
        for mode in ("eager-fp32", "eager-bf16"):
            r = rows[("component", name, mode, None)]
            assert r["runs"] == 2 and 0 < r["p50_ms"] <= r["p95_ms"], r
        assert rows[("component", name, "graph-bf16", None)]["note"] == (
            "skipped: graph-bf16 needs a GPU")  # fmt: skip
    assert rows[("component", "denoiser", "eager-fp32", None)]["gflop"] > 0
    assert rows[("end to end", "pipeline", "eager-fp32", 2)]["p50_ms"] > 0  # fp32 only on a CPU
    assert "times are not results" in (tmp_path / "gpu_dryrun_cpu_pytorch.md").read_text()
    assert "stage A" in (tmp_path / "stage_a.log").read_text()


@pytest.mark.slow
def test_stage_b_dry_run(gpu_machine_python, tmp_path):
    run = _stage(gpu_machine_python, "B", tmp_path, "--components", "text,denoiser")
    assert run.returncode == 0, run.stdout + run.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["gpu_dryrun_cpu_onnxruntime_tiny.json", "gpu_dryrun_cpu_onnxruntime_tiny.md",
                     "gpu_dryrun_cpu_stage_b.json", "gpu_dryrun_cpu_stage_b.md", "pytest_cuda.txt",
                     "stage_b.log"]  # fmt: skip
    stage = json.loads((tmp_path / "gpu_dryrun_cpu_stage_b.json").read_text())
    steps = {s["name"]: s for s in stage["steps"]}
    assert all(s["status"] == "ok" for s in stage["steps"]), stage["steps"]
    assert [s["name"] for s in stage["steps"]] == [
        "environment", "tensorrt parse (shipped + exported graphs)",
        "onnxruntime CUDA provider smoke", "pytest -m requires_cuda",
        "onnxruntime rows: tiny"]  # fmt: skip
    assert "CPUExecutionProvider" in steps["onnxruntime CUDA provider smoke"]["detail"]["providers"]
    pytest_step = steps["pytest -m requires_cuda"]
    assert pytest_step["detail"]["files"] == ["tests/test_cuda_backend.py"]  # no TensorRT
    assert "skipped" in pytest_step["note"] and "failed" not in pytest_step["note"]
    report = json.loads((tmp_path / "gpu_dryrun_cpu_onnxruntime_tiny.json").read_text())
    got = {(r["stage"], r["name"], r["engine"], r["mode"]) for r in report["rows"]
           if r["p50_ms"] and r["p50_ms"] > 0}  # fmt: skip
    assert {("component", "denoiser", "onnxruntime", "run"),
            ("end to end", "pipeline", "onnxruntime", "generate"),
            ("component", "denoiser", "pytorch", "eager-fp32")} <= got  # fmt: skip


def test_a_cpu_fallback_is_a_failed_smoke():
    """onnxruntime runs a session on the CPU, with a warning, when the CUDA provider cannot
    load: the smoke must call that a failure, not a pass."""
    kit = _module(REPO / "scripts" / "gpu_evidence.py", "gpu_evidence")
    if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    detail, note = kit.onnxruntime_smoke(dry_run=False)
    assert detail["failed"] and detail["session_providers"] == ["CPUExecutionProvider"], note


def test_a_stage_keeps_to_its_budget(tmp_path):
    kit = _module(REPO / "scripts" / "gpu_evidence.py", "gpu_evidence")
    stage = kit.Stage("b", tmp_path, "cpu", budget=30.0, dry_run=True)
    assert stage.run("quick", lambda: ({"x": 1}, "fine"), needs=10) == {"x": 1}
    assert stage.run("long", lambda: ({}, "never runs"), needs=60) is None
    assert stage.run("broken", lambda: 1 / 0) == {}  # recorded, not raised
    assert [(s.name, s.status) for s in stage.steps] == [
        ("quick", "ok"), ("long", "skipped"), ("broken", "failed")]  # fmt: skip
    assert stage.steps[1].note.startswith("needs ~60 s") and "ZeroDivisionError" in (
        stage.steps[2].note)  # fmt: skip
    written = json.loads((tmp_path / "gpu_cpu_stage_b.json").read_text())
    assert [s["status"] for s in written["steps"]] == ["ok", "skipped", "failed"]
    md = stage.markdown()
    assert "| quick | ok |" in md and "| long | skipped | 0 | needs ~60 s" in md


def test_stage_b_stops_when_the_cuda_provider_does_not_run(tmp_path):
    """Without a working CUDA provider every later step would time the CPU: stage B records
    the smoke's failure and stops (exit status 1) instead."""
    kit = _module(REPO / "scripts" / "gpu_evidence.py", "gpu_evidence")
    if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    rc = kit.main(["stage-b", "--out", str(tmp_path), "--scratch", str(tmp_path / "scratch"),
                   "--budget", "60"])  # fmt: skip
    report = json.loads(next(tmp_path.glob("gpu_*_stage_b.json")).read_text())
    assert rc == 1 and [(s["name"], s["status"]) for s in report["steps"]] == [
        ("environment", "ok"), ("tensorrt parse (shipped + exported graphs)", "ok"),
        ("onnxruntime CUDA provider smoke", "failed")]  # fmt: skip


# --- after the run: the reports into benchmarks/results/ ---------------------------------------


def _gpu_reports(kit, folder: Path, gpu: str, dry_run: bool) -> None:
    """A stage report as the kit writes it (Stage.write), and the log beside it."""
    stage = kit.Stage("b", folder, gpu, budget=60.0, dry_run=dry_run)
    stage.results["gpu"] = "NVIDIA H200"
    stage.run("environment", lambda: ({"x": 1}, ""))
    (folder / "pytest_cuda.txt").write_text("3 passed in 1.00s\n")
    (folder / "stage_b.log").write_text("log\n")


def test_collect_copies_a_gpu_runs_reports_into_results(tmp_path):
    kit = _module(REPO / "scripts" / "gpu_evidence.py", "gpu_evidence")
    files_at, results = tmp_path / "files_at", tmp_path / "results"
    _gpu_reports(kit, files_at, "nvidia_h200", dry_run=False)
    before = {p.name: p.read_bytes() for p in files_at.iterdir()}
    assert kit.main(["collect", str(files_at), "--results", str(results)]) == 0
    assert sorted(p.name for p in results.iterdir()) == [
        "gpu_nvidia_h200_pytest_cuda.txt", "gpu_nvidia_h200_stage_b.json",
        "gpu_nvidia_h200_stage_b.md"]  # fmt: skip (the log stays out)
    assert (results / "gpu_nvidia_h200_stage_b.json").read_bytes() == before[
        "gpu_nvidia_h200_stage_b.json"]  # fmt: skip
    assert "| environment | ok |" in (results / "gpu_nvidia_h200_stage_b.md").read_text()
    assert {p.name: p.read_bytes() for p in files_at.iterdir()} == before  # inputs untouched


def test_collect_refuses_a_dry_run(tmp_path, capsys):
    kit = _module(REPO / "scripts" / "gpu_evidence.py", "gpu_evidence")
    _gpu_reports(kit, tmp_path / "files_at", "dryrun_cpu", dry_run=True)
    rc = kit.main(["collect", str(tmp_path / "files_at"), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "dry run" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
    # a report of a GPU run that says dry_run (renamed by hand) is refused too
    _gpu_reports(kit, tmp_path / "renamed", "nvidia_h200", dry_run=True)
    assert kit.main(["collect", str(tmp_path / "renamed"), "--results", str(tmp_path / "r")]) == 1
    assert kit.main(["collect", str(tmp_path / "missing"), "--results", str(tmp_path / "r")]) == 1


def test_collect_from_the_command_line_is_one_error_line(tmp_path):
    run = subprocess.run([sys.executable, "scripts/gpu_evidence.py", "collect", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == f"error: no gpu_*.json report in {tmp_path}\n"
