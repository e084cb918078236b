"""PyTorch on the GPU: every component and one whole clip of each variant, eager fp32, eager
bf16 (as MMAudio runs), bf16 replayed from a CUDA graph, torch.compile; device memory; the
GPU's measured matrix and copy ceilings, and each bf16 row's floor.

    python benchmarks/gpu_torch.py --variants small_16k,large_44k_v2,tiny --duration 8 \\
        --steps 8,25 [--compile denoiser] [--budget 300] [--out STEM]
    python benchmarks/gpu_torch.py --dry-run      # CPU, tiny, 1 s, seconds: exercises the code

Networks: ``tiny`` with the shipped weights (``weights/tiny``), the other variants with the
random weights an export of seed 0 gets (same code, same shapes: the time does not depend on
the values). Each variant's networks are copied to the device once; the modes run in the
order fp32 → bf16 → graph → compile on that copy.

Rows (p50 / p95 after warm-up; a row stops after ``--repeats`` runs or ``--row-seconds``,
whichever comes first, with at least 3 runs):

- **component**: the export wrapper of each component (the module the exporter exports) on
  the inputs one 8 s window feeds it (``Descriptor.sample_inputs``): text (2, 77), clip frames
  (F, 384, 384, 3), sync segments, the conditioner (batch 1), the denoiser with the CFG pair
  (batch 2: one sampling step), the VAE decoder and the vocoder (batch 1).
  ``eager-fp32``: PyTorch's defaults (fp32 matmuls, TF32 convolutions); ``eager-bf16``: weights
  and float inputs in bfloat16 (autocast over fp32 weights where pure bf16 fails: noted);
  ``graph-bf16``: the bf16 call captured once in a ``torch.cuda.CUDAGraph`` and replayed;
  ``compile-bf16``: ``torch.compile`` (``--compile-mode``, default ``reduce-overhead``: inductor
  kernels replayed from CUDA graphs) of the components in ``--compile``, its compile time in
  the note.
- **end to end**: ``ReferencePipeline.generate`` (encoders → conditions → Euler with CFG as two
  passes per step, as upstream → VAE → vocoder) on random frames, at each ``--steps``; eager
  fp32, eager bf16, and bf16 with each step's two denoiser passes replayed from one captured
  CUDA graph (the conditions copied into the graph's buffers per clip).

The networks keep two float32 constants as plain CPU tensors (the time-embedding and RoPE
frequencies, ``v2a_export.models.layers``) and copy them to the device on every call; that
copy synchronises, which no CUDA graph capture allows, so the device copy of the networks gets
them on the device once (same values; what a deployment that captures graphs does).

Memory: ``torch.cuda.max_memory_allocated`` during the row (weights included). Ceilings: the
median of 10 timed 8192³ products on random data after warm-up (bf16, fp16, fp32 with and
without TF32) and a 2 GiB device-to-device copy (bytes read + written). Floor of a bf16 row:
max(FLOPs / bf16 rate, weight bytes / copy rate); FLOPs from ``torch.utils.flop_counter``.
Writes ``<out>.json`` and ``<out>.md``, rewritten after each variant so a stopped run keeps
what it measured. The dry run's CPU numbers are not results.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
COMPONENTS = ("clip_visual", "sync_visual", "text", "conditioner", "denoiser", "vae_decoder",
              "vocoder")  # fmt: skip
MODES = ("eager-fp32", "eager-bf16", "graph-bf16", "compile-bf16")
E2E_MODES = ("eager-fp32", "eager-bf16", "graph-bf16")
PROMPT, NEGATIVE, CFG = "glass bottles clink, then footsteps on gravel", "", 4.5
SEED = 0
COMPILE_RESERVE_S = 120.0  # a compile cannot be stopped once started: start one only with this


@dataclass
class Row:
    variant: str
    stage: str  # component | end to end
    name: str  # component name, or "pipeline"
    mode: str  # one of MODES
    p50_ms: float | None = None
    p95_ms: float | None = None
    runs: int = 0
    memory_mb: float | None = None  # peak allocated during the row
    steps: int | None = None
    gflop: float | None = None  # per call
    floor_ms: float | None = None  # bf16 rows: max(FLOPs / bf16 rate, weight bytes / copy rate)
    note: str = ""


class Budget:
    """A deadline for the whole run: rows are skipped (with a note) once it has passed."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def measure(fn, sync, *, warmup: int, repeats: int, max_s: float) -> tuple[float, float, int]:
    """(p50 ms, p95 ms, runs) of ``fn`` after ``warmup`` calls: ``repeats`` runs, or fewer (at
    least 3) when they would take longer than ``max_s``."""
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - started < max_s):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95, len(times)


# --- ceilings --------------------------------------------------------------------------------


def ceilings(torch, device, n: int, copy_bytes: int) -> dict:
    """Measured matrix rates (TFLOP/s) and device copy bandwidth (GB/s, read + write)."""
    out = {"matmul_size": n}
    cuda = device.type == "cuda"
    tf32 = torch.backends.cuda.matmul.allow_tf32
    for label, dtype, allow_tf32 in (("bf16", torch.bfloat16, False), ("fp16", torch.float16,
                                     False), ("fp32", torch.float32, False),
                                     ("tf32", torch.float32, True)):  # fmt: skip
        if not cuda and label in ("fp16", "tf32"):
            continue
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        a = torch.randn(n, n, device=device, dtype=dtype)  # random: zeros run faster
        b = torch.randn(n, n, device=device, dtype=dtype)
        ms = _timed(torch, device, lambda a=a, b=b: a @ b, 10)
        out[f"{label}_tflops"] = 2 * n**3 / ms / 1e9
        del a, b
    torch.backends.cuda.matmul.allow_tf32 = tf32
    src = torch.randn(copy_bytes // 4, device=device)
    dst = torch.empty_like(src)
    ms = _timed(torch, device, lambda: dst.copy_(src), 10)
    out["copy_gbps"] = 2 * copy_bytes / ms / 1e6
    return out


def _timed(torch, device, fn, n: int) -> float:
    """Median ms of ``n`` calls after 3 warm-ups (CUDA events on a GPU)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(n):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# --- networks and inputs ---------------------------------------------------------------------


def network_sections(config) -> dict[str, object]:
    """The config section each network is built from (equal sections: identical networks)."""
    return {"clip": (config.clip_vision, config.clip_text), "synchformer": config.synchformer,
            "flow": config.flow, "vae": config.vae, "vocoder": config.vocoder}  # fmt: skip


def cpu_networks(variant: str, cache: dict):
    """The variant's networks in fp32 on the CPU; networks equal to one already loaded for an
    earlier variant (CLIP and Synchformer are shared by every official variant) are reused."""
    from v2a_export.export.weights import WeightSource, load_weights
    from v2a_export.models.build import Networks
    from v2a_export.models.configs import get_config

    config = get_config(variant)
    if variant == "tiny":
        source = WeightSource(directory=REPO / "weights" / "tiny")
    else:
        source = WeightSource(seed=SEED)
    modules = {}
    for name, section in network_sections(config).items():
        key = (name, repr(section), source)
        if key not in cache:
            cache[key] = load_weights(config, source, (name,)).networks.modules()[name]
        modules[name] = cache[key]
    return Networks(config=config, **modules), source.describe()


def component_feeds(config, duration: float) -> dict[str, dict[str, np.ndarray]]:
    """{component: {input: array}} one ``duration`` s window feeds each component."""
    from v2a_export.export.descriptors import descriptors

    return {name: d.sample_inputs(d.sizes(config.rates, duration), seed=SEED)
            for name, d in descriptors(config).items()}  # fmt: skip


def constants_to(torch, module, device) -> int:
    """Move the plain tensor attributes (not parameters, not buffers) of ``module`` and its
    children to ``device``; returns how many moved. See the module docstring."""
    moved = 0
    for sub in module.modules():
        for name, value in list(vars(sub).items()):
            if isinstance(value, torch.Tensor) and value.device != device:
                setattr(sub, name, value.to(device))
                moved += 1
    return moved


def _tensor(torch, x: np.ndarray, device, dtype):
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    return t.to(dtype) if t.is_floating_point() else t


def _bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


# --- component rows --------------------------------------------------------------------------


@dataclass
class Context:
    torch: object
    device: object
    args: argparse.Namespace
    budget: Budget
    peaks: dict
    gflop: dict = field(default_factory=dict)  # (variant, component) -> GFLOP per call

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def reset_memory(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats()

    def memory_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated() / 1e6


def component_rows(ctx: Context, variant: str, nets, feeds, mode: str) -> list[Row]:
    from v2a_export.export.wrappers import wrap

    torch = ctx.torch
    dtype = torch.float32 if mode == "eager-fp32" else torch.bfloat16
    rows = []
    for name in ctx.args.components:
        row = Row(variant, "component", name, mode)
        if mode == "compile-bf16" and name not in ctx.args.compile:
            continue
        if (why := _skip(ctx, mode)) is not None:
            rows.append(Row(variant, "component", name, mode, note=why))
            continue
        module = wrap(nets, name).to(device=ctx.device, dtype=dtype)
        names = list(_parameters(module))
        ins = [_tensor(torch, feeds[name][n], ctx.device, dtype) for n in names]
        row = _run_component(ctx, row, module, ins, autocast=False)
        if row.note.startswith("failed") and dtype == torch.bfloat16:  # fp32 internals:
            module.to(torch.float32)  # bf16 autocast over fp32 weights instead
            ins = [_tensor(torch, feeds[name][n], ctx.device, torch.float32) for n in names]
            row = _run_component(ctx, Row(variant, "component", name, mode), module, ins,
                                 autocast=True)  # fmt: skip
            module.to(dtype)
        if dtype == torch.bfloat16 and row.gflop and ctx.peaks.get("bf16_tflops"):
            flop_ms = row.gflop / ctx.peaks["bf16_tflops"]  # GFLOP / (TFLOP/s) = ms
            byte_ms = _bytes(module) / ctx.peaks["copy_gbps"] / 1e6
            row.floor_ms = max(flop_ms, byte_ms)
        rows.append(row)
    return rows


def _skip(ctx: Context, mode: str) -> str | None:
    if mode in ("graph-bf16", "compile-bf16") and ctx.device.type != "cuda":
        return f"skipped: {mode} needs a GPU"
    if ctx.budget.left() < 5:
        return "skipped: the time budget is spent"
    if mode == "compile-bf16" and ctx.budget.left() < COMPILE_RESERVE_S:
        return f"skipped: under {COMPILE_RESERVE_S:.0f} s of the time budget left to compile in"
    return None


def _parameters(module):
    import inspect

    return inspect.signature(module.forward).parameters


def _run_component(ctx: Context, row: Row, module, ins, autocast: bool) -> Row:
    torch = ctx.torch
    a = ctx.args
    amp = (torch.autocast(ctx.device.type, dtype=torch.bfloat16) if autocast
           else contextlib.nullcontext())  # fmt: skip
    notes = ["autocast over fp32 weights (pure bf16 fails)"] if autocast else []
    ctx.reset_memory()
    try:
        with torch.inference_mode(), amp:
            fn = lambda: module(*ins)  # noqa: E731
            key = (row.variant, row.name)
            if key not in ctx.gflop and row.mode.startswith("eager"):
                ctx.gflop[key] = _gflop(fn)
            row.gflop = ctx.gflop.get(key)
            if row.mode == "graph-bf16":
                fn = _captured(torch, fn)
            elif row.mode == "compile-bf16":
                compiled = torch.compile(module, mode=a.compile_mode, dynamic=False)
                started = time.perf_counter()
                compiled(*ins)
                ctx.sync()
                notes.append(f"{a.compile_mode}: compiled in {time.perf_counter() - started:.0f} s")
                fn = lambda: compiled(*ins)  # noqa: E731
            max_s = min(a.row_seconds, max(ctx.budget.left() - 5, 1))
            row.p50_ms, row.p95_ms, row.runs = measure(
                fn, ctx.sync, warmup=a.warmup, repeats=a.repeats, max_s=max_s
            )
    except Exception as e:  # a mode this network cannot run in: one row that says why
        notes.append(f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    row.memory_mb = ctx.memory_mb()
    row.note = "; ".join(notes)
    return row


def _gflop(fn) -> float | None:
    """GFLOP of one call (matmuls, convolutions, attention), or None where the counter fails
    (seen on CPU for the conditioner: its module tracker expects autograd nodes)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    try:
        with counter:
            fn()
    except Exception:  # the row is still timed; it just has no floor
        return None
    total = counter.get_total_flops()
    return total / 1e9 if total else None


def _captured(torch, fn):
    """``fn`` captured in a CUDA graph (after warm-up on a side stream); returns its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


# --- end to end ------------------------------------------------------------------------------


class GraphedVelocity:
    """``flow.ode_wrapper`` (both CFG passes of one step) captured once in a CUDA graph over
    static x, t and condition buffers; a clip's conditions are copied in by :meth:`bind`."""

    def __init__(self, torch, flow, cond, uncond, x, cfg: float):
        self.cond, self.uncond = _clone(cond), _clone(uncond)
        self.x, self.t = x.clone(), torch.zeros((), device=x.device, dtype=x.dtype)

        def step():
            return flow.ode_wrapper(self.t, self.x, self.cond, self.uncond, cfg)

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.v = step()

    def bind(self, cond, uncond) -> None:
        for static, new in ((self.cond, cond), (self.uncond, uncond)):
            for f in fields(static):
                getattr(static, f.name).copy_(getattr(new, f.name))

    def __call__(self, t, x):
        self.t.copy_(t)
        self.x.copy_(x)
        self.graph.replay()
        return self.v


def _clone(cond):
    return type(cond)(*(getattr(cond, f.name).clone() for f in fields(cond)))


def e2e_rows(ctx: Context, variant: str, nets, mode: str) -> list[Row]:
    """One row per step count; a bf16 mode whose pure-bf16 run fails reruns as bf16 autocast
    over fp32 weights (noted)."""
    rows = _e2e(ctx, variant, nets, mode, autocast=False)
    if mode != "eager-fp32" and all(r.note.startswith("failed") for r in rows):
        rows = _e2e(ctx, variant, nets, mode, autocast=True)
    return rows


def _e2e(ctx: Context, variant: str, nets, mode: str, autocast: bool) -> list[Row]:
    from v2a_runtime.tokenizer import Tokenizer

    from v2a_export.reference import ReferencePipeline, euler

    torch, a = ctx.torch, ctx.args
    dtype = torch.float32 if mode == "eager-fp32" or autocast else torch.bfloat16
    for m in nets.modules().values():
        m.to(device=ctx.device, dtype=dtype)
    ref = ReferencePipeline(nets)
    n = ref.lengths(a.duration)
    s = nets.config.streams
    rng = np.random.default_rng(SEED)
    clip = torch.from_numpy(rng.integers(0, 256, (n.clip_frames, s.clip_size, s.clip_size, 3),
                                         dtype=np.uint8)).to(ctx.device)  # fmt: skip
    sync = torch.from_numpy(rng.integers(0, 256, (n.sync_frames, s.sync_size, s.sync_size, 3),
                                         dtype=np.uint8)).to(ctx.device)  # fmt: skip
    ids = torch.from_numpy(Tokenizer.load()([PROMPT, NEGATIVE])).to(ctx.device)
    gen = torch.Generator().manual_seed(SEED)
    x0 = torch.randn(1, n.latent, nets.config.flow.latent_dim, generator=gen).to(ctx.device, dtype)
    graphed: dict = {}

    def eager(steps: int) -> None:
        ref.generate(clip, sync, ids[:1], ids[1:], duration=a.duration, x0=x0, steps=steps,
                     cfg=CFG)  # fmt: skip

    def replayed(steps: int) -> None:  # the reference's stages, the sampling on graph replays
        feats = ref.encode(clip, sync[: n.sync_frames], ids[:1], ids[1:])
        cond, uncond = ref.conditions(feats, n.latent)
        if "velocity" not in graphed:
            graphed["velocity"] = GraphedVelocity(torch, nets.flow, cond, uncond, x0, CFG)
        velocity = graphed["velocity"]
        velocity.bind(cond, uncond)
        ref.vocode(ref.decode_mel(euler(velocity, x0, steps)))

    rows = []
    for steps in a.steps:
        row = Row(variant, "end to end", "pipeline", mode, steps=steps)
        if (why := _skip(ctx, mode)) is not None:
            row.note = why
            rows.append(row)
            continue
        run = replayed if mode == "graph-bf16" else eager
        ctx.reset_memory()
        amp = (torch.autocast(ctx.device.type, dtype=torch.bfloat16) if autocast
               else contextlib.nullcontext())  # fmt: skip
        try:
            with torch.inference_mode(), amp:
                max_s = min(a.row_seconds, max(ctx.budget.left() - 5, 1))
                row.p50_ms, row.p95_ms, row.runs = measure(
                    lambda s=steps, run=run: run(s), ctx.sync, warmup=0 if a.dry_run else 1,
                    repeats=a.repeats_e2e, max_s=max_s,
                )
            row.note = "autocast over fp32 weights (pure bf16 fails)" if autocast else ""
        except Exception as e:
            row.note = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
        row.memory_mb = ctx.memory_mb()
        rows.append(row)
    return rows


# --- the run ---------------------------------------------------------------------------------


def run_variant(ctx: Context, variant: str, cache: dict) -> tuple[list[Row], dict]:
    torch = ctx.torch
    started = time.perf_counter()
    cpu_nets, weights = cpu_networks(variant, cache)
    loaded_s = time.perf_counter() - started
    nets = copy.deepcopy(cpu_nets)  # the CPU copies stay fp32 for later variants
    for m in nets.modules().values():
        m.to(ctx.device)
        constants_to(torch, m, ctx.device)
    feeds = component_feeds(nets.config, ctx.args.duration)
    info = {"weights": weights, "weights_load_s": round(loaded_s, 1),
            "parameters_m": {k: round(sum(p.numel() for p in m.parameters()) / 1e6, 2)
                             for k, m in nets.modules().items()}}  # fmt: skip
    rows: list[Row] = []
    for mode in ctx.args.modes:
        rows += component_rows(ctx, variant, nets, feeds, mode)
        if mode in ctx.args.e2e_modes:
            rows += e2e_rows(ctx, variant, nets, mode)
    del nets
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    return rows, info


def machine(torch, device) -> dict:
    info = {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
            "numpy": np.__version__,
            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32}  # fmt: skip
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info |= {"sm": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count,
                 "memory_gib": round(p.total_memory / 2**30, 1)}  # fmt: skip
    return info


def markdown(report: dict) -> str:
    m, c = report["machine"], report["ceilings"]
    lines = [f"### PyTorch on {m['gpu'] or 'CPU (no GPU)'}: components and end to end, "
             f"{report['config']['duration']:g} s", ""]  # fmt: skip
    if report["config"]["dry_run"]:
        lines += ["**Dry run on a CPU: exercises the script; the times are not results.**", ""]
    rates = ", ".join(f"{k.removesuffix('_tflops')} {v:.3g}" for k, v in c.items()
                      if k.endswith("_tflops"))  # fmt: skip
    lines += [f"torch {m['torch']} (CUDA {m['cuda']}, cuDNN {m['cudnn']}); measured matmul "
              f"TFLOP/s ({c['matmul_size']}³, random data): {rates}; device copy "
              f"{c['copy_gbps']:.3g} GB/s (read + write)", ""]  # fmt: skip
    for variant, info in report["variants"].items():
        params = sum(info["parameters_m"].values())
        lines += [f"**{variant}** ({params:.0f} M parameters, {info['weights']}, loaded in "
                  f"{info['weights_load_s']:g} s)", "",
                  "| stage | name | mode | steps | p50 ms | p95 ms | runs | GFLOP | floor ms | "
                  "p50/floor | mem MB | note |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
        for r in report["rows"]:
            if r["variant"] != variant:
                continue
            gap = (r["p50_ms"] / r["floor_ms"]) if r["p50_ms"] and r["floor_ms"] else None
            lines.append(
                f"| {r['stage']} | {r['name']} | {r['mode']} | {r['steps'] or ''} | "
                f"{_f(r['p50_ms'])} | {_f(r['p95_ms'])} | {r['runs']} | {_f(r['gflop'], 1)} | "
                f"{_f(r['floor_ms'], 3)} | {_f(gap, 1)} | {_f(r['memory_mb'], 0)} | {r['note']} |"
            )
        lines.append("")
    lines += [f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def _f(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="small_16k,large_44k_v2,tiny")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--components", default=",".join(COMPONENTS))
    ap.add_argument("--compile", default="denoiser", help="components torch.compile runs on")
    ap.add_argument("--compile-mode", default="reduce-overhead")
    ap.add_argument("--no-e2e", dest="e2e", action="store_false", help="components only")
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--steps", default="8,25")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--repeats-e2e", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--row-seconds", type=float, default=3.0, help="time cap of one row")
    ap.add_argument("--budget", type=float, help="seconds for the whole run (default 300; "
                    "the dry run: no limit)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", help="output stem (default benchmarks/results/gpu_<gpu>_pytorch)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny, 1 s, 2 steps, 2 repeats, "
                    "end to end once in fp32 only: exercises the code")  # fmt: skip
    args = ap.parse_args(argv)
    if args.budget is None:
        args.budget = 1e9 if args.dry_run else 300.0
    if args.dry_run:
        args.variants, args.duration, args.steps = "tiny", 1.0, "2"
        args.repeats, args.repeats_e2e, args.warmup, args.row_seconds = 2, 1, 1, 1.0
    args.e2e_modes = () if not args.e2e else ("eager-fp32",) if args.dry_run else E2E_MODES
    args.variants = [v for v in args.variants.split(",") if v]
    args.modes = [m for m in MODES if m in args.modes.split(",")]  # fp32 first: see run_variant
    args.components = [c for c in args.components.split(",") if c]
    args.compile = [c for c in args.compile.split(",") if c]
    args.steps = [int(s) for s in args.steps.split(",") if s]
    bad = [c for c in (*args.components, *args.compile) if c not in COMPONENTS]
    if bad:
        ap.error(f"unknown component(s) {bad}; choose from {', '.join(COMPONENTS)}")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    budget = Budget(args.budget)
    report = {"machine": machine(torch, device), "command": " ".join(
                  ["gpu_torch.py", *(sys.argv[1:] if argv is None else argv)]),
              "config": {"duration": args.duration, "steps": args.steps, "cfg": CFG,
                         "solver": "euler", "modes": args.modes, "dry_run": args.dry_run,
                         "repeats": args.repeats, "row_seconds": args.row_seconds},
              "ceilings": {}, "variants": {}, "rows": [], "notes": []}  # fmt: skip
    gpu = report["machine"]["gpu"]
    stem = Path(args.out) if args.out else RESULTS / f"gpu_{slug(gpu or 'dryrun_cpu')}_pytorch"
    stem.parent.mkdir(parents=True, exist_ok=True)
    n, copy_bytes = (8192, 2 << 30) if device.type == "cuda" else (256, 1 << 22)
    report["ceilings"] = ceilings(torch, device, n, copy_bytes)
    _write(stem, report)
    ctx = Context(torch, device, args, budget, report["ceilings"])
    cache: dict = {}
    for variant in args.variants:
        if budget.left() < 20:
            report["notes"].append(f"{variant}: skipped, the time budget is spent")
            continue
        try:
            rows, info = run_variant(ctx, variant, cache)
        except Exception as e:  # e.g. out of memory while loading: the next variant may fit
            report["notes"].append(f"{variant}: failed: {type(e).__name__}: {e}"[:300])
            continue
        report["variants"][variant] = info
        report["rows"] += [asdict(r) for r in rows]
        _write(stem, report)
    text = _write(stem, report)
    print(text)
    return 0


def _write(stem: Path, report: dict) -> str:
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    stem.with_suffix(".md").write_text(text)
    return text


if __name__ == "__main__":
    raise SystemExit(main())
