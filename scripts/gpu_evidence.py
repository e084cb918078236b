"""The GPU evidence kit's driver: turns a few minutes on a lent GPU machine into this project's
GPU numbers (docs/gpu.md; ``scripts/gpu_evidence.sh`` sets up the paths and runs it).

    python scripts/gpu_evidence.py stage-a --out OUT [--budget 300] [--dry-run]
    python scripts/gpu_evidence.py stage-b --out OUT [--budget 330] [--dry-run]
    python scripts/gpu_evidence.py export --variant small_16k --scratch DIR   # stage A starts it
    python scripts/gpu_evidence.py collect FILES_AT       # afterwards: into benchmarks/results/

**Stage A** needs only what the machine has (PyTorch with CUDA, numpy, onnx, onnxruntime CPU):
the environment, TensorRT's parse of the shipped graphs when TensorRT is there, then
``benchmarks/gpu_torch.py`` (every component and one whole clip of tiny, small_16k and
large_44k_v2 in PyTorch: eager fp32 / bf16, bf16 CUDA graphs, torch.compile; ceilings and
floors). Meanwhile, on the CPU cores the benchmark leaves free, a background job (its own
process session, so it outlives the call while the machine stays warm) exports small_16k with
random weights to ONNX and converts it to fp16 for stage B.

**Stage B** runs with onnxruntime-gpu unpacked by ``gpu_evidence.sh`` (``scripts/gpu_pack.py``):
a smoke run on the CUDA provider (active, equal to the CPU provider), TensorRT's parse of the
exported graphs, ``pytest -m requires_cuda``, and ``benchmarks/gpu.py`` on tiny (the shipped
bundle and its fp16 conversion) and on small_16k (the bundles stage A's job exported): every
component, the device-resident step with and without CUDA graph, end to end, and the PyTorch
bf16 denoiser in the same process for the step goal.

Each stage keeps to ``--budget`` seconds (a step that would start after it is skipped with a
note), writes ``gpu_<gpu>_stage_<a|b>.json`` and ``.md`` into ``--out`` after every step, and
prints the summary table last; its exit status is 1 when a step failed (the reports are written
either way). ``--dry-run`` runs both stages on the CPU on tiny in seconds
(tests/test_gpu_kit.py): it checks the kit, not the GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO / "runtime" / "default_bundle"
TINY_WEIGHTS = REPO / "weights" / "tiny"
STEP_GRAPH = REPO / "runtime" / "data" / "step_graphs" / "cfg_step_f32_f32.onnx"
TRT_PARSE_SCRIPT = REPO / "scripts" / "trt_parse_first.py"  # issue 19, where present
EXPORT_VARIANT = "small_16k"


# --- the stage record ------------------------------------------------------------------------


@dataclass
class Step:
    name: str
    status: str  # ok | failed | skipped
    seconds: float
    detail: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class Stage:
    """What one stage did, rewritten to ``out`` after every step (a stopped run keeps it)."""

    label: str  # "a" | "b"
    out: Path
    gpu: str
    budget: float
    dry_run: bool
    started: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)
    results: dict = field(default_factory=dict)  # headline numbers

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.started)

    def run(self, name: str, fn, *, needs: float = 0.0):
        """Run ``fn() -> (detail dict, note)``; record it; never raise."""
        if self.left() < needs:
            self.steps.append(Step(name, "skipped", 0.0, note=f"needs ~{needs:.0f} s, "
                                   f"{max(self.left(), 0):.0f} s of the budget left"))  # fmt: skip
            self.write()
            return None
        print(f"\n=== {name} ({self.left():.0f} s of the stage budget left)", flush=True)
        t0 = time.monotonic()
        try:
            detail, note = fn()
            status = "failed" if detail.get("failed") else "ok"
        except Exception as e:  # one step's failure must not cost the others
            traceback.print_exc()
            detail, note, status = {}, f"{type(e).__name__}: {str(e)[:300]}", "failed"
        self.steps.append(Step(name, status, round(time.monotonic() - t0, 1), detail, note))
        self.write()
        return detail

    @property
    def stem(self) -> Path:
        return self.out / f"gpu_{self.gpu}_stage_{self.label}"

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        report = {"stage": self.label, "gpu": self.gpu, "dry_run": self.dry_run,
                  "budget_s": self.budget, "elapsed_s": round(time.monotonic() - self.started, 1),
                  "results": self.results, "steps": [asdict(s) for s in self.steps]}  # fmt: skip
        self.stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        self.stem.with_suffix(".md").write_text(self.markdown())

    def exit_status(self) -> int:
        """1 when a step failed (skipped steps are the budget's doing, not failures)."""
        return int(any(s.status == "failed" for s in self.steps))

    def markdown(self) -> str:
        lines = [f"### GPU kit, stage {self.label.upper()}, on {self.gpu}", ""]
        if self.dry_run:
            lines += ["**Dry run on a CPU: checks the kit; nothing here is a GPU result.**", ""]
        lines += ["| step | status | s | note |", "|---|---|---:|---|"]
        lines += [f"| {s.name} | {s.status} | {s.seconds:g} | {s.note} |" for s in self.steps]
        if self.results:
            lines += ["", "| result | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in self.results.items()]
        budget = f"a {self.budget:.0f} s budget" if self.budget < 1e8 else "no budget"
        lines += ["", f"{time.monotonic() - self.started:.0f} s of {budget}", ""]
        return "\n".join(lines)


# --- helpers ---------------------------------------------------------------------------------


def sh(cmd: list, *, timeout: float, log: Path | None = None) -> tuple[int, list[str]]:
    """Run ``cmd`` (no shell), stopped after ``timeout`` s (exit status 124). Its output goes
    to this process's (the stage log) as it comes, or to ``log``, printed afterwards.
    Returns (exit status, the last 40 lines of ``log``)."""
    cmd = [str(c) for c in cmd]
    print("$ " + " ".join(cmd), flush=True)
    with open(log, "w") if log else open(os.devnull) as sink:  # noqa: SIM115
        out = {"stdout": sink, "stderr": subprocess.STDOUT} if log else {}
        try:
            rc = subprocess.run(cmd, timeout=max(timeout, 1), check=False, **out).returncode
        except subprocess.TimeoutExpired:
            rc = 124
            print(f"[stopped after {timeout:.0f} s]", flush=True)
    if log is None:
        return rc, []
    text = log.read_text(errors="replace")
    print(text, flush=True)
    return rc, text.splitlines()[-40:]


def nvidia_smi() -> dict:
    if shutil.which("nvidia-smi") is None:
        return {}
    fields = "name,driver_version,memory.total,clocks.max.sm,power.limit"
    try:
        line = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (subprocess.SubprocessError, IndexError, OSError):  # fmt: skip
        return {}
    return dict(zip(fields.split(","), (v.strip() for v in line.split(",")), strict=False))


def gpu_slug(dry_run: bool) -> str:
    text = "dryrun_cpu" if dry_run else nvidia_smi().get("name", "no_gpu")
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")


def versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("torch", "numpy", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu",
                 "tensorrt", "av", "soundfile", "ftfy", "scipy", "click", "pytest"):  # fmt: skip
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def environment(stage: Stage):
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cores": os.cpu_count(), "nvidia_smi": nvidia_smi(), "versions": versions(),
            "trtexec": shutil.which("trtexec"),
            "ld_library_path": os.environ.get("LD_LIBRARY_PATH"),
            "project": {m: _origin(m) for m in ("v2a_runtime", "v2a_export")},
            "tensorrt_module": importlib.util.find_spec("tensorrt") is not None}  # fmt: skip
    stage.results["gpu"] = info["nvidia_smi"].get("name", "none (CPU)")
    stage.results["driver"] = info["nvidia_smi"].get("driver_version", "-")
    return info, ""


def _origin(module: str) -> str | None:
    """Where ``module`` is imported from (the working tree, not an installed copy)."""
    spec = importlib.util.find_spec(module)
    return str(Path(spec.origin).resolve()) if spec and spec.origin else None


def split_cores() -> tuple[set[int] | None, set[int] | None]:
    """(cores for the measurements, cores for the background export): a quarter / the rest,
    so the export's CPU work does not sit on the benchmark's launch thread. None: no split."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 8:
        return None, None
    k = len(cores) // 4
    return set(cores[:k]), set(cores[k:])


# --- TensorRT --------------------------------------------------------------------------------


def trt_check(paths: list[Path], out: Path, timeout: float):
    """TensorRT's parse (strongly typed) of every graph under ``paths``, when TensorRT is on
    this machine: ``scripts/trt_parse_first.py`` (issue 19) where it exists, else ``trtexec
    --stronglyTyped`` per graph. Absent TensorRT is a result too."""
    have_module = importlib.util.find_spec("tensorrt") is not None
    trtexec = shutil.which("trtexec")
    if not have_module and trtexec is None:
        return {"available": False}, "no tensorrt module and no trtexec here: nothing to parse"
    if have_module and TRT_PARSE_SCRIPT.is_file():
        rc, tail = sh([sys.executable, TRT_PARSE_SCRIPT, *paths, "--out", out],
                      timeout=timeout)  # fmt: skip
        return {"available": True, "exit": rc, "tail": tail, "failed": rc not in (0, 1)}, (
            f"trt_parse_first.py exit {rc}: {tail[-1] if tail else ''}")  # fmt: skip
    graphs = [g for p in paths for g in (sorted(p.glob("onnx/*.onnx")) if p.is_dir() else [p])]
    results, started = {}, time.monotonic()
    for g in graphs:
        left = timeout - (time.monotonic() - started)
        if left < 5:
            results[str(g)] = "not run: time"
            continue
        cmd = [trtexec, f"--onnx={g}", "--stronglyTyped", "--skipInference",
               "--builderOptimizationLevel=0"]  # fmt: skip
        rc, tail = sh(cmd, timeout=min(left, 120))
        results[str(g)] = {"exit": rc, "tail": tail[-5:]}
    passed = sum(1 for r in results.values() if isinstance(r, dict) and r["exit"] == 0)
    return {"available": True, "trtexec": results}, f"trtexec: {passed}/{len(graphs)} graphs built"


# --- the background export (stage A starts it, stage B uses it) --------------------------------


def export_paths(scratch: Path, variant: str) -> dict[str, Path]:
    root = scratch / "bundles"
    return {"fp32": root / f"{variant}_fp32", "fp16": root / f"{variant}_fp16",
            "status": root / f"export_{variant}.json",
            "log": root / f"export_{variant}.log"}  # fmt: skip


def start_export(scratch: Path, variant: str, cores: set[int] | None, threads: int):
    """Start ``gpu_evidence.py export`` in its own process session on ``cores``, CPU only."""
    paths = export_paths(scratch, variant)
    paths["log"].parent.mkdir(parents=True, exist_ok=True)
    if paths["status"].is_file() and json.loads(paths["status"].read_text())["status"] == "done":
        return {"status": "done earlier", **{k: str(v) for k, v in paths.items()}}, "reused"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the GPU stays the benchmark's
    cmd = [sys.executable, __file__, "export", "--variant", variant, "--scratch", str(scratch),
           "--threads", str(threads)]  # fmt: skip
    with open(paths["log"], "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,  # outlives this call (docs/gpu.md)
                                preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores
                                else None)  # fmt: skip
    return {"pid": proc.pid, "cores": sorted(cores) if cores else None, "log": str(paths["log"])}, (
        f"pid {proc.pid}, {threads} threads, log {paths['log']}")


def wait_export(scratch: Path, variant: str, seconds: float) -> dict:
    """The export job's status, waiting up to ``seconds`` while it is running (not when it
    never started here or its process is gone: a fresh machine has neither job nor bundles)."""
    status = export_paths(scratch, variant)["status"]
    end = time.monotonic() + seconds
    while True:
        if not status.is_file():
            return {"status": "not started on this machine"}
        state = json.loads(status.read_text())
        if state["status"] != "running" or time.monotonic() >= end:
            return state
        if not _alive(state["pid"]):
            return {**state, "status": "died (its process is gone)"}
        time.sleep(2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def export_job(variant: str, scratch: Path, threads: int) -> int:
    """Export ``variant`` (random weights, seed 0) to fp32 ONNX with a short parity gate, then
    convert it to fp16 with measured fp32 islands (docs/precision.md); record each step."""
    from v2a_export.export.bundle import ExportOptions, export_bundle
    from v2a_export.export.precision.bundle import convert_bundle
    from v2a_export.export.precision.policy import PrecisionPolicy
    from v2a_export.export.weights import WeightSource
    from v2a_export.models.configs import get_config

    paths = export_paths(scratch, variant)
    state: dict = {"status": "running", "pid": os.getpid(), "variant": variant,
                   "threads": threads, "seconds": {}}  # fmt: skip

    def save() -> None:
        paths["status"].write_text(json.dumps(state, indent=1) + "\n")

    save()
    try:
        t0 = time.monotonic()
        export_bundle(get_config(variant), WeightSource(seed=0), paths["fp32"],
                      ExportOptions(plan=export_plan(), threads=threads))  # fmt: skip
        state["seconds"]["export_fp32"] = round(time.monotonic() - t0, 1)
        save()
        t0 = time.monotonic()
        convert_bundle(paths["fp32"], paths["fp16"], PrecisionPolicy("fp16"), calibration_plan(),
                       threads=threads)  # fmt: skip
        state["seconds"]["convert_fp16"] = round(time.monotonic() - t0, 1)
        state["status"] = "done"
    except Exception as e:
        traceback.print_exc()
        state |= {"status": "failed", "error": f"{type(e).__name__}: {str(e)[:500]}"}
    save()
    return 0 if state["status"] == "done" else 1


def export_plan():
    """The exporter's parity gate at its cheapest: two short durations, batch 1, no end to end
    (the full gate of small_16k runs on the build machine: benchmarks/results/export_*.md)."""
    from v2a_export.export.parity import ParityPlan

    return ParityPlan(durations=(1.0, 2.0), batches=(1,), encoder_durations=(0.64, 1.0),
                      e2e_duration=None)  # fmt: skip


def calibration_plan():
    """Calibration on one 8 s clip (the trained window, the longest RoPE positions), 8 steps."""
    from v2a_export.export.precision.calibrate import CalibrationPlan

    return CalibrationPlan(durations=(8.0,), steps=8, max_feeds=4)


# --- stage A ---------------------------------------------------------------------------------


def stage_a(args) -> int:
    stage = Stage("a", args.out, gpu_slug(args.dry_run), args.budget, args.dry_run)
    bench_cores, export_cores = split_cores()
    stage.run("environment", lambda: environment(stage))
    if args.export != "none" and not args.dry_run:
        threads = len(export_cores) if export_cores else max(1, (os.cpu_count() or 2) - 2)
        stage.run(f"start {args.export} export (background)",
                  lambda: start_export(args.scratch, args.export, export_cores, threads))
    stage.run("tensorrt parse (shipped bundle)",
              lambda: trt_check([DEFAULT_BUNDLE], args.out / "trt_parse_a.json", 60), needs=10)
    if bench_cores:
        os.sched_setaffinity(0, bench_cores)  # inherited by the benchmark below

    def torch_rows():
        stem = args.out / f"gpu_{stage.gpu}_pytorch"
        cmd = [sys.executable, REPO / "benchmarks" / "gpu_torch.py", "--out", stem,
               "--budget", str(max(stage.left() - 25, 10)), "--variants", args.variants,
               "--components", args.components]  # fmt: skip
        cmd += ["--dry-run"] if args.dry_run else []
        rc, tail = sh(cmd, timeout=stage.left() + 30)
        report = json.loads(stem.with_suffix(".json").read_text())
        stage.results |= torch_headlines(report)
        failed = [r for r in report["rows"] if r["note"].startswith("failed")]
        return {"exit": rc, "rows": len(report["rows"]), "failed_rows": len(failed),
                "failed": rc != 0}, f"{len(report['rows'])} rows, {len(failed)} failed"  # fmt: skip

    stage.run("pytorch rows (benchmarks/gpu_torch.py)", torch_rows, needs=30)
    if args.export != "none" and not args.dry_run:
        def job():
            state = wait_export(args.scratch, args.export, 0)
            return state, f"{state['status']}, {state.get('seconds', {})}"

        stage.run("export job so far", job)
    print("\n" + stage.markdown(), flush=True)
    return stage.exit_status()


def torch_headlines(report: dict) -> dict:
    out = {k: f"{v:.0f}" for k, v in report["ceilings"].items() if k.endswith(("tflops", "gbps"))}
    for r in report["rows"]:
        if r["p50_ms"] is None:
            continue
        if r["name"] == "denoiser" and r["stage"] == "component":
            out[f"{r['variant']} denoiser step, torch {r['mode']} (ms)"] = f"{r['p50_ms']:.3f}"
        if r["stage"] == "end to end" and r["steps"] == 8:
            out[f"{r['variant']} 8 s, 8 steps, torch {r['mode']} (ms)"] = f"{r['p50_ms']:.1f}"
    return out


# --- stage B ---------------------------------------------------------------------------------


def onnxruntime_smoke(dry_run: bool):
    """The CUDA provider is active and its result equals the CPU provider's."""
    import numpy as np
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((1, 13, 8), dtype=np.float32),
             "velocity": rng.standard_normal((2, 13, 8), dtype=np.float32),
             "dt": np.array([0.125], np.float32), "w": np.array([4.5], np.float32),
             "w_uncond": np.array([-3.5], np.float32)}  # fmt: skip
    cpu = ort.InferenceSession(str(STEP_GRAPH), providers=["CPUExecutionProvider"])
    want = cpu.run(None, feeds)
    detail = {"onnxruntime": ort.__version__, "file": ort.__file__,
              "providers": ort.get_available_providers()}  # fmt: skip
    if dry_run:
        return detail, "dry run: CPU provider only"
    gpu = ort.InferenceSession(str(STEP_GRAPH), providers=["CUDAExecutionProvider"])
    detail["session_providers"] = gpu.get_providers()
    got = gpu.run(None, feeds)
    err = max(float(np.abs(a - b).max()) for a, b in zip(got, want, strict=True))
    detail |= {"max_abs_vs_cpu": err, "cuda_options": gpu.get_provider_options().get(
        "CUDAExecutionProvider")}  # fmt: skip
    ok = gpu.get_providers()[0] == "CUDAExecutionProvider" and err < 1e-5
    detail["failed"] = not ok
    return detail, f"providers {gpu.get_providers()}, max |CUDA − CPU| {err:.1e}"


def cuda_tests(out: Path, timeout: float, with_trt: bool):
    markers = "requires_cuda or requires_trt" if with_trt else "requires_cuda"
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if any(f"mark.{m}" in p.read_text() for m in markers.split(" or ")))  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", "-m", markers, "-q", "-rA", "-p", "no:cacheprovider",
           *files]  # fmt: skip
    rc, tail = sh(cmd, timeout=timeout, log=out / "pytest_cuda.txt")
    counts = re.compile(r"\d+ (passed|failed|skipped|errors?|deselected)\b.* in [\d.]+s")
    summary = next((line.strip(" =") for line in reversed(tail) if counts.search(line)), "")
    return {"exit": rc, "files": files, "summary": summary, "failed": rc not in (0, 5)}, summary


def ort_rows(stage: Stage, label: str, args: list[str], timeout: float):
    stem = stage.out / f"gpu_{stage.gpu}_onnxruntime_{label}"
    rc, tail = sh([sys.executable, REPO / "benchmarks" / "gpu.py", *args, "--out", stem],
                  timeout=timeout)  # fmt: skip
    if not stem.with_suffix(".json").is_file():
        return {"exit": rc, "tail": tail, "failed": True}, f"exit {rc}: no report"
    report = json.loads(stem.with_suffix(".json").read_text())
    for key, value in report["summary"].items():
        if isinstance(value, dict):
            stage.results[f"{label}: {key}"] = (f"{value['ratio']:.2f}x (goal >= {value['goal']}x:"
                                                f" {'met' if value['met'] else 'NOT met'})")
        else:
            stage.results[f"{label}: {key}"] = f"{value:.1f}"
    bad = [r for r in report["rows"] if r["note"].startswith(("not run", "failed"))]
    return {"exit": rc, "rows": len(report["rows"]), "summary": report["summary"],
            "failed": rc != 0}, f"{len(report['rows'])} rows, {len(bad)} not run"  # fmt: skip


def stage_b(args) -> int:
    stage = Stage("b", args.out, gpu_slug(args.dry_run), args.budget, args.dry_run)
    stage.run("environment", lambda: environment(stage))
    paths = export_paths(args.scratch, EXPORT_VARIANT)
    exported = [p for p in (paths["fp32"], paths["fp16"]) if (p / "manifest.json").is_file()]
    stage.run("tensorrt parse (shipped + exported graphs)",
              # into the scratch: $OUT already holds the 8 files that come back (its tail is
              # in this step's detail)
              lambda: trt_check([DEFAULT_BUNDLE, *exported], args.scratch / "trt_parse_b.json",
                                90),
              needs=10)  # fmt: skip
    stage.run("onnxruntime CUDA provider smoke", lambda: onnxruntime_smoke(args.dry_run))
    if stage.steps[-1].status != "ok":  # every later step would measure the CPU
        print("\n" + stage.markdown(), flush=True)
        return 1
    with_trt = importlib.util.find_spec("tensorrt") is not None
    stage.run("pytest -m requires_cuda",
              lambda: cuda_tests(args.out, min(240, stage.left() - 60), with_trt), needs=60)
    tiny = ["--bundle", str(DEFAULT_BUNDLE), "--weights", str(TINY_WEIGHTS), "--backend", "cuda",
            "--steps", args.steps, "--components", args.components, "--precision", "fp32,fp16",
            "--calibration", "2", "--torch", "eager-fp32,eager-bf16"]  # fmt: skip
    if args.dry_run:  # gpu.py's own CPU dry run: 1 s, 2 steps, 2 repeats
        tiny = ["--dry-run", "--precision", "fp32", "--torch", "eager-fp32",
                "--components", args.components]  # fmt: skip
    small = ["--bundle", str(paths["fp32"]), "--fp16-bundle", str(paths["fp16"]),
             "--backend", "cuda", "--steps", args.steps, "--torch", "eager-bf16",
             "--torch-components", "denoiser", "--repeats", "10", "--repeats-e2e", "3",
             "--warmup", "2"]  # fmt: skip

    def run_tiny():
        stage.run("onnxruntime rows: tiny",
                  lambda: ort_rows(stage, "tiny", tiny, stage.left() - 10), needs=45)  # fmt: skip

    def run_small():
        stage.run(f"onnxruntime rows: {EXPORT_VARIANT}",
                  lambda: ort_rows(stage, EXPORT_VARIANT, small, stage.left() - 10),
                  needs=120)  # fmt: skip

    if args.dry_run:
        run_tiny()
    elif wait_export(args.scratch, EXPORT_VARIANT, 0)["status"] == "done":
        run_small()  # the goals first, while the budget is whole
        run_tiny()
    else:
        run_tiny()
        def wait():
            state = wait_export(args.scratch, EXPORT_VARIANT, max(stage.left() - 130, 0))
            return state, state["status"]

        state = stage.run(f"wait for the {EXPORT_VARIANT} export (stage A started it)", wait)
        if state and state.get("status") == "done":
            run_small()
    print("\n" + stage.markdown(), flush=True)
    return stage.exit_status()


# --- after the run: the reports into benchmarks/results/ --------------------------------------

RESULTS = REPO / "benchmarks" / "results"
REPORT_NAME = re.compile(
    r"gpu_(?P<gpu>[a-z0-9_]+?)_(stage_[ab]|pytorch|onnxruntime_[a-z0-9_]+)\.json")


class CollectError(Exception):
    """Why the reports cannot be collected (one line for the CLI)."""


def collect(folder: Path, results: Path = RESULTS) -> list[Path]:
    """Copy the GPU run's reports (``gpu_<gpu>_*.json`` and their ``.md``, and
    ``pytest_cuda.txt`` as ``gpu_<gpu>_pytest_cuda.txt``) from ``folder`` (the device tool's
    ``files_at``) into ``results``, each written atomically; the inputs stay as they are.
    Refuses dry runs and reports of no GPU: those are not results. Returns the written paths."""
    if not folder.is_dir():
        raise CollectError(f"{folder} is not a folder")
    plan: list[tuple[Path, str]] = []
    gpus = set()
    for src in sorted(folder.glob("gpu_*.json")):
        m = REPORT_NAME.fullmatch(src.name)
        if m is None:
            raise CollectError(f"{src.name} is not a report of the GPU kit")
        try:
            report = json.loads(src.read_text())
        except (OSError, ValueError) as e:
            raise CollectError(f"{src.name} is not readable JSON: {e}") from e
        dry = report.get("dry_run", report.get("config", {}).get("dry_run"))
        if dry or m["gpu"] in ("dryrun_cpu", "no_gpu", "cpu"):
            raise CollectError(f"{src.name} comes from a dry run or a machine without a GPU: "
                               "not a result")  # fmt: skip
        gpus.add(m["gpu"])
        plan.append((src, src.name))
        if src.with_suffix(".md").is_file():
            plan.append((src.with_suffix(".md"), src.with_suffix(".md").name))
    if not plan:
        raise CollectError(f"no gpu_*.json report in {folder}")
    if len(gpus) > 1:
        raise CollectError(f"reports of several GPUs in one folder: {sorted(gpus)}")
    if (folder / "pytest_cuda.txt").is_file():
        plan.append((folder / "pytest_cuda.txt", f"gpu_{gpus.pop()}_pytest_cuda.txt"))
    results.mkdir(parents=True, exist_ok=True)
    written = []
    for src, name in plan:
        dst = results / name
        tmp = dst.with_name(f".{name}.tmp")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)
        written.append(dst)
    return written


# --- command line --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, budget in (("stage-a", 300.0), ("stage-b", 330.0)):  # seconds on the GPU
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True, help="$OUT on the device machine")
        p.add_argument("--scratch", type=Path, default=Path("/tmp/v2a-gpu"),
                       help="survives between calls while the machine stays warm")  # fmt: skip
        p.add_argument("--budget", type=float, default=budget,
                       help=f"seconds for the stage (default {budget:g}; no limit in a dry run)")
        p.add_argument("--components", default="clip_visual,sync_visual,text,conditioner,"
                       "denoiser,vae_decoder,vocoder")  # fmt: skip
        p.add_argument("--dry-run", action="store_true", help="CPU, tiny, seconds")
    a = sub.choices["stage-a"]
    a.add_argument("--variants", default="small_16k,large_44k_v2,tiny", help="in this order: "
                   "the goals' variant first, the budget may end before the last")  # fmt: skip
    a.add_argument("--export", default=EXPORT_VARIANT, help="variant exported in the background "
                   "for stage B ('none': no export)")  # fmt: skip
    sub.choices["stage-b"].add_argument("--steps", default="8,25")
    e = sub.add_parser("export", help="the background export (stage A starts it)")
    e.add_argument("--variant", default=EXPORT_VARIANT)
    e.add_argument("--scratch", type=Path, required=True)
    e.add_argument("--threads", type=int, default=8)
    c = sub.add_parser("collect", help="after the run: copy the reports in FOLDER (the device "
                       "tool's files_at) into benchmarks/results/")  # fmt: skip
    c.add_argument("folder", type=Path)
    c.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.command == "collect":
        try:
            written = collect(args.folder, args.results)
        except (CollectError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for path in written:
            print(path)
        return 0
    if args.command != "export" and args.dry_run and "--budget" not in (argv or sys.argv):
        args.budget = 1e9  # a dry run checks the kit on any machine, however slow
    if args.command == "export":
        return export_job(args.variant, args.scratch, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    return stage_a(args) if args.command == "stage-a" else stage_b(args)


if __name__ == "__main__":
    raise SystemExit(main())
