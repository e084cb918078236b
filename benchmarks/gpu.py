"""GPU latency: every component and the whole pipeline, fp32 vs fp16, CPU vs GPU backends, and
the PyTorch reference (eager fp32, eager bf16, torch.compile) on the same inputs.

    python benchmarks/gpu.py --bundle B32 [--fp16-bundle B16] --backend cpu,cuda \\
        --duration 8 --steps 8,25 [--torch eager-fp32,eager-bf16,compile] [--repeats 20]
    python benchmarks/gpu.py --variant small_16k ...     # exports random weights first
    python benchmarks/gpu.py --dry-run                    # CPU, tiny, seconds: exercises the code

Inputs: one rendered procedural-world clip of ``--duration`` seconds; the fp32 bundle's
pipeline (on the first ``--backend``) records what each component is fed (frames, tokens,
features, conditions, the first denoiser state, latent, mel), and every row runs exactly those
arrays.

Rows (p50 / p95 over ``--repeats`` runs after ``--warmup``; device memory per row):

- **component**, onnxruntime: each graph's ``run`` on numpy arrays on every backend and
  precision (on ``cuda`` that includes the host↔device copies);
- **denoiser step**, onnxruntime CUDA: one step of the device-resident loop (captured denoiser
  replay + the CFG/Euler step graph, x and conditions on the device), with and without CUDA
  graphs; and the captured replay alone;
- **component**, PyTorch: the same wrapper modules the exporter exported, eager fp32, eager bf16
  (weights and inputs in bfloat16, as MMAudio runs), ``torch.compile`` of the bf16 module
  (``--torch-components`` narrows these rows and the networks built);
- **end to end**: ``Pipeline.generate`` (frames → waveform, Euler, CFG 4.5, no watermark) per
  backend, precision and step count; PyTorch: ``ReferencePipeline.generate`` (upstream's
  sampling, two passes per step) eager fp32 / bf16, when every network is built.

Device memory: PyTorch rows report ``torch.cuda.max_memory_allocated``; onnxruntime rows the
process's device memory from NVML after the row (onnxruntime's arena keeps its peak), loaded
fresh per backend × precision. Writes ``<out>.json`` (machine, GPU, versions, command, rows,
summary) and ``<out>.md``, after each backend × precision too (a stopped run keeps those rows).
Speed claims are ratios within one run; absolute times only from a
GPU run with the GPU named (DESIGN.md §9). The dry run's CPU numbers are not results.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from v2a_runtime.config import DEFAULT_SAMPLER

RESULTS = Path(__file__).resolve().parent / "results"
COMPONENTS = ("clip_visual", "sync_visual", "text", "conditioner", "denoiser", "vae_decoder",
              "vocoder")  # fmt: skip
TORCH_MODES = ("eager-fp32", "eager-bf16", "compile")
GOAL_STEP_SPEEDUP = 3.0  # fp16 CUDA-graph step vs PyTorch eager bf16 (issue 7)
GOAL_E2E_MS = 150.0  # small_16k, 8 s, 8 steps, fp16 CUDA


@dataclass
class Row:
    stage: str  # component | denoiser step | end to end
    name: str  # component name, or "pipeline"
    engine: str  # onnxruntime | pytorch
    backend: str  # cpu | cuda | tensorrt
    precision: str  # fp32 | fp16 | bf16
    mode: str  # run | loop step | replay | eager | compile | generate
    p50_ms: float | None = None
    p95_ms: float | None = None
    runs: int = 0
    memory_mb: float | None = None
    steps: int | None = None
    note: str = ""


def measure(fn, warmup: int, repeats: int, sync=None) -> tuple[float, float, int]:
    """(p50 ms, p95 ms, runs) of ``fn`` after ``warmup`` calls; ``sync`` waits for the device."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95, len(times)


# --- NVML (device memory of this process; ctypes, no extra package) -------------------------


class Nvml:
    def __init__(self) -> None:
        self.lib = None
        try:
            self.lib = ctypes.CDLL("libnvidia-ml.so.1")
            if self.lib.nvmlInit_v2() != 0:
                self.lib = None
        except OSError:
            self.lib = None

    def _handle(self, index: int = 0):
        h = ctypes.c_void_p()
        if self.lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(h)) != 0:
            return None
        return h

    def gpu_name(self) -> str | None:
        if self.lib is None or (h := self._handle()) is None:
            return None
        buf = ctypes.create_string_buffer(96)
        if self.lib.nvmlDeviceGetName(h, buf, 96) != 0:
            return None
        return buf.value.decode()

    def process_mb(self) -> float | None:
        """Device memory used by this process (MB), or None."""
        if self.lib is None or (h := self._handle()) is None:
            return None

        class Info(ctypes.Structure):  # nvmlProcessInfo_t
            _fields_ = [
                ("pid", ctypes.c_uint),
                ("usedGpuMemory", ctypes.c_ulonglong),
                ("gpuInstanceId", ctypes.c_uint),
                ("computeInstanceId", ctypes.c_uint),
            ]

        count = ctypes.c_uint(64)
        infos = (Info * 64)()
        fn = getattr(self.lib, "nvmlDeviceGetComputeRunningProcesses_v3", None)
        if fn is None or fn(h, ctypes.byref(count), infos) != 0:
            return None
        used = [i.usedGpuMemory for i in infos[: count.value] if i.pid == os.getpid()]
        return used[0] / 1e6 if used else 0.0


# --- inputs ----------------------------------------------------------------------------------


def record_inputs(bundle: Path, duration: float, seed: int, threads, backend: str = "cpu"):
    """(frames, {component: feeds}, the pipeline) from one fp32 pipeline run on a rendered
    clip; the rows reuse the pipeline (loading a full-size bundle on a GPU takes a while)."""
    from v2a_runtime.backends.recording import RecordingSession
    from v2a_runtime.pipeline import Pipeline

    from v2a_export.export.precision.calibrate import rendered_frames

    pipe = Pipeline.load(bundle, backend, threads=threads)
    frames = rendered_frames(seed, duration, pipe.bundle.manifest.video)
    rec = {n: RecordingSession(s) for n, s in pipe.sessions.items()}
    pipe.with_sessions(**rec).generate(frames, prompt=PROMPT, seed=seed, steps=2,
                                         solver="euler", cfg=CFG, watermark=False)  # fmt: skip
    return frames, {n: r.feeds[0] for n, r in rec.items()}, pipe


PROMPT, NEGATIVE = "glass bottles clink, then footsteps on gravel", ""
CFG = DEFAULT_SAMPLER.cfg


# --- onnxruntime rows ------------------------------------------------------------------------


def onnxruntime_rows(args, bundles, frames, feeds, nvml, loaded=None) -> Iterator[list[Row]]:
    """The rows of each backend and precision in turn (so the caller can save as they come)."""
    from v2a_runtime.pipeline import Pipeline

    for backend in args.backend:
        for precision, root in bundles.items():
            rows: list[Row] = []
            try:
                pipe = (loaded or {}).pop((backend, precision), None) or Pipeline.load(
                    root, backend, threads=args.threads
                )
            except Exception as e:  # a backend that cannot load: one row that says why
                yield [Row("end to end", "pipeline", "onnxruntime", backend, precision,
                           "generate", note=f"not run: {str(e).splitlines()[0]}")]  # fmt: skip
                continue
            for name in args.components:
                p50, p95, n = measure(lambda s=pipe.sessions[name], f=feeds[name]: s.run(f),
                                      args.warmup, args.repeats)  # fmt: skip
                rows.append(Row("component", name, "onnxruntime", backend, precision, "run",
                                p50, p95, n, nvml.process_mb()))  # fmt: skip
            if backend == "cuda":
                rows += _device_step_rows(args, root, feeds["denoiser"], precision, nvml)
            for steps in args.steps:

                def generate(steps=steps, pipe=pipe):
                    return pipe.generate(frames, prompt=PROMPT, seed=args.seed, steps=steps,
                                         solver="euler", cfg=CFG, watermark=False)  # fmt: skip

                p50, p95, n = measure(generate, args.warmup, args.repeats_e2e)
                rows.append(Row("end to end", "pipeline", "onnxruntime", backend, precision,
                                "generate", p50, p95, n, nvml.process_mb(), steps))  # fmt: skip
            del pipe
            gc.collect()
            yield rows


def _device_step_rows(args, root, feed, precision, nvml) -> list[Row]:
    """One step of the device-resident loop, with and without CUDA graphs, and the captured
    denoiser replay alone."""
    from v2a_runtime.backends import SampleRequest
    from v2a_runtime.backends.cuda import BoundSession, CudaOptions, DeviceSampler

    rows = []
    k = feed["x"].shape[0] // 2  # the CFG batch [cond; uncond]
    x0 = feed["x"][:k]
    conds = {n: v for n, v in feed.items() if n not in ("x", "t")}
    ts = np.linspace(0.0, 1.0, 9, dtype=np.float32)  # 8 steps per call
    for graph in (True, False):
        path, options = Path(root) / "onnx" / "denoiser.onnx", CudaOptions(cuda_graph=graph)
        den = BoundSession.load(path, options)
        sampler = DeviceSampler.load(path, options, den.inputs, den.outputs)

        def loop(sampler=sampler):
            sampler(SampleRequest(x0, conds, ts, CFG, "euler"))

        p50, p95, n = measure(loop, args.warmup, args.repeats)
        mode = "loop step (CUDA graph)" if graph else "loop step (no graph)"
        captured = all(s.session.captured for s in sampler._shapes.values())
        note = "" if captured == graph else "onnxruntime refused capture: ran without a graph"
        rows.append(Row("denoiser step", "denoiser", "onnxruntime", "cuda", precision, mode,
                        p50 / 8, p95 / 8, n * 8, nvml.process_mb(), note=note))  # fmt: skip
        if graph:  # the replay alone: the buffers of the loop's last call
            replay = sampler.bound_denoiser(x0, conds, CFG)
            p50, p95, n = measure(replay, args.warmup, args.repeats)
            rows.append(Row("denoiser step", "denoiser", "onnxruntime", "cuda", precision,
                            "replay", p50, p95, n, nvml.process_mb()))  # fmt: skip
        del den, sampler
        gc.collect()
    return rows


# --- PyTorch rows ----------------------------------------------------------------------------


def torch_rows(args, bundle: Path, frames, feeds) -> list[Row]:
    import torch
    from v2a_runtime.bundle import load_bundle
    from v2a_runtime.config import NETWORK_OF, NETWORKS

    from v2a_export.export.weights import WeightSource, load_weights
    from v2a_export.export.wrappers import wrap
    from v2a_export.models.configs import ModelConfig

    manifest = load_bundle(bundle).manifest
    seed = ((manifest.parity or {}).get("reference") or {}).get("seed")
    if args.weights:  # the weight files the bundle was exported from
        source = WeightSource(directory=Path(args.weights))
    elif manifest.model.weights == "random" and isinstance(seed, int):
        source = WeightSource(seed=seed)
    else:
        note = "skipped: trained or official weights; pass --weights DIR (the bundle's files)"
        return [Row("component", "-", "pytorch", "-", "-", "-", note=note)]
    device = torch.device("cuda" if "cuda" in args.backend and torch.cuda.is_available()
                          else "cpu")  # fmt: skip
    torch.set_num_threads(args.threads or torch.get_num_threads())
    config = ModelConfig.from_manifest(manifest)
    components = args.torch_components or args.components
    needed = {NETWORK_OF[c] for c in args.torch_components} if args.torch_components else NETWORKS
    e2e = set(needed) == set(NETWORKS)  # the reference pipeline needs every network
    nets = load_weights(config, source, tuple(n for n in NETWORKS if n in needed)).networks
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    rows = []
    for mode in args.torch:  # fp32 first (parse orders them): bf16 converts the weights in place
        dtype = torch.float32 if mode == "eager-fp32" else torch.bfloat16
        precision = "fp32" if dtype == torch.float32 else "bf16"
        for name in components:
            module = wrap(nets, name).to(device=device, dtype=dtype)
            names = _input_names(module)
            fn = torch.compile(module) if mode == "compile" else module
            row = _torch_component(args, fn, feeds[name], names, device, dtype, sync)
            if row.note and dtype == torch.bfloat16:  # a network that keeps fp32 internals:
                module.to(torch.float32)  # bf16 autocast over fp32 weights instead
                fn = torch.compile(module) if mode == "compile" else module
                row = _torch_component(args, fn, feeds[name], names, device, dtype, sync,
                                       autocast=True)  # fmt: skip
            rows.append(replace(row, name=name, backend=device.type, precision=precision,
                                mode=mode))  # fmt: skip
        if mode != "compile" and e2e:
            rows += _torch_e2e(args, nets, frames, device, dtype, precision, mode, sync)
    return rows


def _torch_component(args, fn, feed, names, device, dtype, sync, autocast=False) -> Row:
    import contextlib

    import torch

    cast = dtype if not autocast else torch.float32
    ins = [_tensor(feed[n], device, cast) for n in names]
    ctx = (torch.autocast(device.type, dtype=dtype) if autocast
           else contextlib.nullcontext())  # fmt: skip
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    note = "autocast over fp32 weights (pure bf16 fails)" if autocast else ""
    try:
        with torch.inference_mode(), ctx:
            p50, p95, n = measure(lambda: fn(*ins), args.warmup + 2, args.repeats, sync)
    except Exception as e:  # a network that cannot run in this mode: say why
        return Row("component", "", "pytorch", "", "", "",
                   note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")  # fmt: skip
    mem = torch.cuda.max_memory_allocated() / 1e6 if device.type == "cuda" else None
    return Row("component", "", "pytorch", "", "", "", p50, p95, n, mem, note=note)


def _input_names(module):
    import inspect

    return list(inspect.signature(module.forward).parameters)


def _tensor(x: np.ndarray, device, dtype):
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    return t.to(dtype) if t.is_floating_point() else t


def _torch_e2e(args, nets, frames, device, dtype, precision, mode, sync) -> list[Row]:
    import torch
    from v2a_runtime.tokenizer import Tokenizer

    from v2a_export.reference import ReferencePipeline

    ref = ReferencePipeline(nets)
    for m in nets.modules().values():
        m.to(device=device, dtype=dtype)
    n = ref.lengths(frames.duration)
    gen = torch.Generator().manual_seed(args.seed)
    x0 = torch.randn(1, n.latent, nets.config.flow.latent_dim, generator=gen).to(device, dtype)
    ids = torch.from_numpy(Tokenizer.load()([PROMPT, NEGATIVE])).to(device)
    clip = torch.from_numpy(frames.clip).to(device)
    sync_frames = torch.from_numpy(frames.sync).to(device)
    rows = []
    for steps in args.steps:

        def generate(steps=steps, x0=x0):
            ref.generate(clip, sync_frames, ids[:1], ids[1:], duration=frames.duration, x0=x0,
                         steps=steps, cfg=CFG)  # fmt: skip

        row = _torch_generate(args, generate, device, sync)
        if row.note and dtype == torch.bfloat16:  # autocast over fp32 weights instead
            for m in nets.modules().values():
                m.to(torch.float32)
            x0 = x0.float()

            def generate(steps=steps, x0=x0):
                with torch.autocast(device.type, dtype=dtype):
                    ref.generate(clip, sync_frames, ids[:1], ids[1:], duration=frames.duration,
                                 x0=x0, steps=steps, cfg=CFG)  # fmt: skip

            row = _torch_generate(args, generate, device, sync)
            row.note = row.note or "autocast over fp32 weights (pure bf16 fails)"
        rows.append(replace(row, backend=device.type, precision=precision,
                            mode=f"{mode} (reference)", steps=steps))  # fmt: skip
    return rows


def _torch_generate(args, generate, device, sync) -> Row:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        with torch.inference_mode():
            p50, p95, n = measure(generate, args.warmup, args.repeats_e2e, sync)
    except Exception as e:
        return Row("end to end", "pipeline", "pytorch", "", "", "",
                   note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")  # fmt: skip
    mem = torch.cuda.max_memory_allocated() / 1e6 if device.type == "cuda" else None
    return Row("end to end", "pipeline", "pytorch", "", "", "", p50, p95, n, mem)


# --- bundles, summary, output ----------------------------------------------------------------


def prepare_bundles(args, work: Path) -> dict[str, Path]:
    from v2a_export.export.precision.bundle import convert_bundle
    from v2a_export.export.precision.calibrate import CalibrationPlan
    from v2a_export.export.precision.policy import PrecisionPolicy

    fp32 = Path(args.bundle) if args.bundle else _export(args, work)
    bundles = {"fp32": fp32}
    if "fp16" in args.precision:
        if args.fp16_bundle and Path(args.fp16_bundle).is_dir():
            bundles["fp16"] = Path(args.fp16_bundle)
        else:
            out = Path(args.fp16_bundle) if args.fp16_bundle else work / "fp16"
            plan = CalibrationPlan(durations=args.calibration, steps=4 if args.dry_run else 8)
            convert_bundle(fp32, out, PrecisionPolicy("fp16"), plan, threads=args.threads)
            bundles["fp16"] = out
    if "fp32" not in args.precision:
        bundles.pop("fp32")
    return bundles


def _export(args, work: Path) -> Path:
    from v2a_export.export.bundle import ExportOptions, export_bundle
    from v2a_export.export.parity import ParityPlan
    from v2a_export.export.weights import WeightSource
    from v2a_export.models.configs import get_config

    out = work / f"{args.variant}_fp32"
    plan = ParityPlan(durations=(2.0, 5.0), batches=(1,), e2e_duration=None)
    export_bundle(get_config(args.variant), WeightSource(seed=args.seed), out,
                  ExportOptions(plan=plan, threads=args.threads))  # fmt: skip
    return out


def summarize(rows: list[Row]) -> dict:
    def find(**kw):
        for r in rows:
            if r.p50_ms is not None and all(getattr(r, k) == v for k, v in kw.items()):
                return r
        return None

    out = {}
    ort_step = find(stage="denoiser step", precision="fp16", mode="loop step (CUDA graph)")
    torch_bf16 = find(stage="component", name="denoiser", engine="pytorch", mode="eager-bf16")
    if ort_step and torch_bf16:
        ratio = torch_bf16.p50_ms / ort_step.p50_ms
        out["denoiser_step_vs_torch_eager_bf16"] = {
            "ratio": ratio, "goal": GOAL_STEP_SPEEDUP, "met": ratio >= GOAL_STEP_SPEEDUP,
            "onnxruntime_fp16_graph_ms": ort_step.p50_ms, "torch_eager_bf16_ms": torch_bf16.p50_ms,
        }  # fmt: skip
    for steps in sorted({r.steps for r in rows if r.steps}):
        e2e = find(stage="end to end", engine="onnxruntime", backend="cuda", precision="fp16",
                   steps=steps)  # fmt: skip
        if e2e:
            out[f"end_to_end_fp16_cuda_{steps}_steps_ms"] = e2e.p50_ms
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"### onnxruntime vs PyTorch, {report['config']['variant']}, "
        f"{report['config']['duration']:g} s, on {m['gpu'] or 'CPU (no GPU)'}",
        "",
    ]
    if report["config"]["dry_run"]:
        lines += ["**Dry run on a CPU: exercises the script; the times are not results.**", ""]
    lines += [
        "| stage | name | engine | backend | precision | mode | steps | p50 ms | p95 ms | mem MB |"
        " note |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---|",
    ]

    def f(x):
        return "-" if x is None else f"{x:.2f}"

    for r in report["rows"]:
        lines.append(
            f"| {r['stage']} | {r['name']} | {r['engine']} | {r['backend']} | {r['precision']} | "
            f"{r['mode']} | {r['steps'] or ''} | {f(r['p50_ms'])} | {f(r['p95_ms'])} | "
            f"{f(r['memory_mb'])} | {r['note']} |"
        )
    s = report["summary"]
    if s:
        lines += ["", "Summary:"]
        if "denoiser_step_vs_torch_eager_bf16" in s:
            d = s["denoiser_step_vs_torch_eager_bf16"]
            lines.append(
                f"- denoiser step, fp16 CUDA graph {d['onnxruntime_fp16_graph_ms']:.3f} ms vs "
                f"PyTorch eager bf16 {d['torch_eager_bf16_ms']:.3f} ms: {d['ratio']:.2f}x "
                f"(goal >= {d['goal']:g}x: {'met' if d['met'] else 'NOT met'})"
            )
        for k, v in s.items():
            if k.startswith("end_to_end"):
                lines.append(f"- {k}: {v:.1f} ms")
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def machine(nvml: Nvml) -> dict:
    import onnxruntime as ort

    info = {
        "gpu": nvml.gpu_name(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "numpy": np.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="fp32 bundle (default: export --variant with random weights)")
    ap.add_argument("--fp16-bundle", help="fp16 bundle (default: convert --bundle into a temp dir)")
    ap.add_argument("--variant", default="tiny")
    ap.add_argument("--weights", help="weight files of --bundle for the PyTorch rows (a trained "
                    "or official bundle; random-weight bundles rebuild from their seed)")
    ap.add_argument("--backend", default="cpu,cuda", help="comma list: cpu, cuda, tensorrt")
    ap.add_argument("--precision", default="fp32,fp16")
    ap.add_argument("--torch", default=",".join(TORCH_MODES), help="PyTorch modes ('' = none)")
    ap.add_argument("--components", default=",".join(COMPONENTS))
    ap.add_argument("--torch-components", help="components of the PyTorch rows, and only their "
                    "networks are built (default: --components, every network built, and the "
                    "reference end to end)")  # fmt: skip
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--steps", default="8,25")
    ap.add_argument("--calibration", default="2,8", help="calibration seconds for the fp16 bundle")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--repeats-e2e", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", help="output stem (default benchmarks/results/gpu_<variant>_<gpu>)")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU only, the shipped tiny bundle, 1 s, 2 steps, 2 repeats, "
                    "no warm-up")  # fmt: skip
    args = ap.parse_args(argv)
    if args.dry_run:
        from v2a_runtime.pipeline import DEFAULT_BUNDLE

        if args.bundle is None:  # the shipped bundle, with its trained weights
            args.bundle = str(DEFAULT_BUNDLE)
            args.weights = args.weights or str(Path(__file__).resolve().parents[1] / "weights"
                                               / "tiny")
        args.backend, args.duration, args.steps = "cpu", 1.0, "2"
        args.repeats, args.repeats_e2e, args.warmup = 2, 1, 0
        args.torch = "eager-fp32,eager-bf16" if args.torch == ",".join(TORCH_MODES) else args.torch
        args.calibration, args.threads = "1", args.threads or 2
    args.backend = [b for b in args.backend.split(",") if b]
    args.precision = [p for p in args.precision.split(",") if p]
    torch_modes = [m for m in args.torch.split(",") if m]
    args.torch = [m for m in TORCH_MODES if m in torch_modes]  # fp32 first
    args.components = [c for c in args.components.split(",") if c]
    args.torch_components = [c for c in (args.torch_components or "").split(",") if c]
    args.steps = [int(s) for s in args.steps.split(",") if s]
    args.calibration = tuple(float(s) for s in args.calibration.split(",") if s)
    bad = [m for m in torch_modes if m not in TORCH_MODES]
    bad += [c for c in (*args.components, *args.torch_components) if c not in COMPONENTS]
    bad += [b for b in args.backend if b not in ("cpu", "cuda", "tensorrt")]
    bad += [p for p in args.precision if p not in ("fp32", "fp16")]
    if bad:
        ap.error(f"unknown value(s) {bad}")
    return args


def main(argv=None) -> int:
    from v2a_runtime.bundle import load_bundle

    args = parse(argv)
    nvml = Nvml()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="v2a-gpu-bench-") as tmp:
        bundles = prepare_bundles(args, Path(tmp))
        reference = bundles.get("fp32") or Path(args.bundle)
        variant = load_bundle(reference, verify=False).manifest.model.variant
        report = {
            "machine": machine(nvml),
            "command": " ".join([Path(sys.argv[0]).name if argv is None else "gpu.py",
                                 *(sys.argv[1:] if argv is None else argv)]),  # fmt: skip
            "config": {"variant": variant, "duration": args.duration, "steps": args.steps,
                       "cfg": CFG, "solver": "euler", "repeats": args.repeats,
                       "dry_run": args.dry_run,
                       "bundles": {k: str(v) for k, v in bundles.items()}},
        }  # fmt: skip
        device = "dryrun_cpu" if args.dry_run else _slug(report["machine"]["gpu"] or "cpu")
        stem = Path(args.out) if args.out else RESULTS / f"gpu_{variant}_{device}"
        stem.parent.mkdir(parents=True, exist_ok=True)

        def save() -> str:  # after every block of rows: a run stopped later keeps them
            report.update(rows=[asdict(r) for r in rows], summary=summarize(rows))
            stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
            text = markdown(report)
            stem.with_suffix(".md").write_text(text)
            return text

        backend = args.backend[0] if args.backend[0] != "tensorrt" else "cpu"
        frames, feeds, pipe = record_inputs(reference, args.duration, args.seed, args.threads,
                                            backend)  # fmt: skip
        loaded = {(backend, "fp32"): pipe} if "fp32" in bundles else {}
        del pipe  # onnxruntime_rows frees each pipeline when it is done with it
        for block in onnxruntime_rows(args, bundles, frames, feeds, nvml, loaded):
            rows += block
            save()
        if args.torch:
            try:
                rows += torch_rows(args, reference, frames, feeds)
            except ImportError:
                rows.append(Row("component", "-", "pytorch", "-", "-", "-",
                                note="skipped: torch is not installed"))  # fmt: skip
    print(save())
    return 0


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")


if __name__ == "__main__":
    raise SystemExit(main())
