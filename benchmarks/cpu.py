"""CPU speed: fp32 vs int8 graphs vs the PyTorch reference, per component and for a whole clip.

    python benchmarks/cpu.py --bundle B32 --int8 B8 [--best B] [--threads 1 2]
                             [--sections peaks units clip profile] [--weights DIR]

Four measurements, each interleaved (the order of the paths alternates run by run, so load
drifts on a shared machine hit all of them), each at every ``--threads`` count (torch
``set_num_threads`` and onnxruntime ``intra_op_num_threads``; one inter-op thread):

- **peaks**: the machine's GEMM peaks on ``--gemm N`` square matrices: numpy fp32 ``@``,
  onnxruntime fp32 MatMul, and onnxruntime's integer kernels MatMulInteger u8·s8, u8·u8, s8·s8
  and DynamicQuantizeMatMul (fp32 in; u8·u8 inside with ``--int8-weights u8``, u8·s8 with
  ``s8``/``s8-7bit``: what the int8 graphs run). Best of
  ``--gemm-reps``; GFLOP/s (int8: giga integer multiply-adds × 2);
- **units**: each component on one unit of work, real inputs: ``clip_visual`` on
  ``--clip-frames`` decoded frames, ``sync_visual`` on one 16-frame segment, ``text`` on the
  [prompt; negative] pair, and the conditioner, one denoiser evaluation (the CFG batch), the
  VAE decoder and the vocoder on what the runtime feeds them for a ``--duration`` clip. Per
  component: the fp32 graph, its int8 graph (from ``--int8``; a component that bundle keeps
  fp32 is quantized here with every candidate node, ungated, so it is measured either way),
  and the PyTorch module behind the export wrapper (same inputs). ``--runs`` rounds;
- **threads**: the fp32 denoiser (one evaluation) and vocoder under onnxruntime with one
  thread, two threads spinning (onnxruntime's default: idle workers busy-wait for the next
  op) and two threads without spinning, interleaved, wall time;
- **clip**: video file to waveform for ``--duration`` s: the runtime on ``--bundle`` (fp32) and
  on ``--best`` (the best gated bundle), and the PyTorch reference's stage methods (decode with
  the same PyAV reader, both encoders, text, conditions, Euler, VAE, vocoder), each once per
  thread count after a short warm-up (the reference is slow); every stage in the table;
- **profile**: onnxruntime's profiler on one denoiser evaluation (fp32 and int8 graph): time
  per op type, the FLOPs of every MatMul/Gemm/Conv from the recorded shapes, and the achieved
  GFLOP/s of the heavy ops and of the whole graph against the peaks above.

Writes ``benchmarks/results/<name>.{json,md}`` (default ``cpu_<variant>``). Absolute times on a
shared CPU are noise: the claims are ratios from one run, and the record holds the load.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import runtime_paths as P  # sibling modules: this script's folder is sys.path[0]
from machine_info import machine

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("peaks", "units", "threads", "clip", "profile")
NETWORK = {"clip_visual": "clip", "text": "clip", "sync_visual": "synchformer",
           "conditioner": "flow", "denoiser": "flow", "vae_decoder": "vae",
           "vocoder": "vocoder"}  # fmt: skip
UNITS = ("clip_visual", "sync_visual", "text", "conditioner", "denoiser", "vae_decoder", "vocoder")
PROMPT = ("glass bottles clink, then footsteps on gravel", "")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True, help="the fp32 bundle")
    p.add_argument("--int8", type=Path, help="an int8 bundle of it (units, profile)")
    p.add_argument("--best", type=Path, help="the best gated bundle (clip); default --int8")
    p.add_argument("--weights", type=Path, help="weight files of a trained --bundle")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--components", nargs="+", choices=UNITS, default=list(UNITS))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--steps", type=int, default=25, help="Euler steps of the whole clip")
    p.add_argument("--cfg", type=float, default=4.5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--runs", type=int, default=3, help="timed rounds per unit")
    p.add_argument("--clip-frames", type=int, default=1, help="frames per clip_visual unit")
    p.add_argument("--gemm", type=int, default=1024, help="square GEMM size of the peaks")
    p.add_argument("--gemm-reps", type=int, default=5)
    p.add_argument("--no-reference", action="store_true", help="clip: skip PyTorch")
    p.add_argument("--name", help="results file stem (default cpu_<variant>)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if min(args.threads) < 1 or args.runs < 1:
        p.error("--threads and --runs must be >= 1")
    if args.best is None:
        args.best = args.int8
    needs = {"units": args.int8, "profile": args.int8, "clip": args.best}
    missing = [s for s in args.sections if s in needs and needs[s] is None]
    if missing:
        p.error(f"section {missing[0]} needs --int8 (or --best for clip)")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    load_start = os.getloadavg()
    import torch
    from v2a_runtime.bundle import load_bundle

    manifest = load_bundle(args.bundle, verify=False).manifest
    record: dict = {
        "benchmark": "cpu",
        "command": shlex.join(["python", "benchmarks/cpu.py", *argv]),
        "variant": manifest.model.variant,
        "bundles": {"fp32": str(args.bundle), "int8": str(args.int8), "best": str(args.best)},
        "threads": args.threads,
        "cpu_flags": cpu_flags(),
    }
    with tempfile.TemporaryDirectory(prefix="v2a-cpu-bench-") as tmp:
        req = make_request(args, Path(tmp))
        if "peaks" in args.sections:
            record["peaks"] = {t: gemm_peaks(args.gemm, t, args.gemm_reps) for t in args.threads}
        if "units" in args.sections:
            record["units"] = measure_units(args, req)
        if "threads" in args.sections:
            record["thread_settings"] = measure_thread_settings(args, req)
        if "profile" in args.sections:
            record["profile"] = {t: profile_denoiser(args, req, t) for t in args.threads}
        if "clip" in args.sections:
            record["clip"] = measure_clip(args, req)
    record["machine"] = machine(load_average_start=load_start, load_average_end=os.getloadavg())
    record["versions"] = versions(torch)
    table = markdown(record)
    print(table)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / (args.name or f"cpu_{record['variant']}")
        stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        stem.with_suffix(".md").write_text(table)
    return 0


# --- inputs ------------------------------------------------------------------------------------


def make_request(args, tmp: Path) -> P.Request:
    """The clip every section uses: a rendered world scene, decoded at the bundle's rates."""
    import runtime as R  # benchmarks/runtime.py: the same request the runtime benchmark builds

    ns = argparse.Namespace(video=None, duration=args.duration, seed=args.seed, steps=args.steps,
                            cfg=args.cfg, prompt=PROMPT[0], negative=PROMPT[1])  # fmt: skip
    return R.make_request(ns, args.bundle, tmp)


def chain_feeds(bundle: Path, req: P.Request, threads: int) -> dict[str, dict[str, np.ndarray]]:
    """What the runtime feeds the conditioner, the denoiser (one CFG evaluation), the VAE and
    the vocoder for the request's clip (encoders stubbed with seeded stand-in features: their
    values do not change the work downstream)."""
    from v2a_runtime.backends.recording import RecordingSession
    from v2a_runtime.bundle import load_bundle
    from v2a_runtime.media import sync_segments

    import runtime as R

    pipe = R.chain_pipeline(bundle, threads)
    manifest = load_bundle(bundle, verify=False).manifest
    segments = sync_segments(req.frames.sync).shape[0]
    dims = tuple(_feature_dim(manifest, n) for n in ("clip_visual", "sync_visual", "text"))
    feats = P.EncoderFeatures.random(req.seed, len(req.frames.clip), segments, dims)
    pipe = P.with_fixed_encoders(pipe, feats)
    chain = ("conditioner", "denoiser", "vae_decoder", "vocoder")
    recorders = {n: RecordingSession(pipe.sessions[n]) for n in chain}
    pipe = pipe.with_sessions(**recorders)
    pipe.generate(req.frames, **{**req.generate_options(watermark=False), "steps": 1})
    return {n: r.feeds[0] for n, r in recorders.items()}


def _feature_dim(manifest, component: str) -> int:
    return int(manifest.components[component].outputs[0].shape[-1])


def unit_feeds(args, req: P.Request) -> dict[str, dict[str, np.ndarray]]:
    from v2a_runtime.media import sync_segments

    feeds = chain_feeds(args.bundle, req, max(args.threads))
    segments = sync_segments(req.frames.sync)
    return {
        "clip_visual": {"frames": np.array(req.frames.clip[: args.clip_frames])},
        "sync_visual": {"segments": np.array(segments[:1])},
        "text": {"token_ids": req.token_ids},
        **feeds,
    }


# --- peaks -------------------------------------------------------------------------------------


def gemm_peaks(n: int, threads: int, reps: int) -> dict:
    """GFLOP/s (int8: 2 x giga multiply-adds per second) of square n x n products, best of
    ``reps``, the kernels interleaved."""
    import onnxruntime as ort
    from onnx import TensorProto as T
    from onnx import helper
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)

    def session(nodes, in_type, out_type, inits, ms=False):
        x = helper.make_tensor_value_info("a", in_type, [n, n])
        y = helper.make_tensor_value_info("y", out_type, [n, n])
        g = helper.make_graph(nodes, "gemm", [x], [y], inits)
        ops = [helper.make_opsetid("", 18)] + ([helper.make_opsetid("com.microsoft", 1)] * ms)
        model = helper.make_model(g, opset_imports=ops)
        model.ir_version = 9
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])  # fmt: skip

    u8 = rng.integers(0, 255, (n, n)).astype(np.uint8)
    s8 = rng.integers(-127, 127, (n, n)).astype(np.int8)
    matmul = [helper.make_node("MatMul", ["a", "b"], ["y"])]
    integer = [helper.make_node("MatMulInteger", ["a", "b"], ["y"])]
    dq = [helper.make_node("DynamicQuantizeMatMul", ["a", "b", "s", "z"], ["y"],
                           domain="com.microsoft")]  # fmt: skip
    scale = nh.from_array(np.full(n, 0.01, np.float32), "s")
    kernels = {
        "numpy fp32": (lambda: a @ b),
        "onnxruntime fp32 MatMul": _runner(session(matmul, T.FLOAT, T.FLOAT,
                                                   [nh.from_array(b, "b")]), a),
        "onnxruntime MatMulInteger u8·s8": _runner(session(integer, T.UINT8, T.INT32,
                                                           [nh.from_array(s8, "b")]), u8),
        "onnxruntime MatMulInteger u8·u8": _runner(session(integer, T.UINT8, T.INT32,
                                                           [nh.from_array(u8, "b")]), u8),
        "onnxruntime MatMulInteger s8·s8": _runner(session(integer, T.INT8, T.INT32,
                                                           [nh.from_array(s8, "b")]), s8),
        "onnxruntime DynamicQuantizeMatMul (fp32 in, u8·u8)": _runner(session(
            dq, T.FLOAT, T.FLOAT, [nh.from_array(u8, "b"), scale,
                                   nh.from_array(np.full(n, 128, np.uint8), "z")], ms=True), a),
        "onnxruntime DynamicQuantizeMatMul (fp32 in, u8·s8)": _runner(session(
            dq, T.FLOAT, T.FLOAT, [nh.from_array(s8, "b"), scale,
                                   nh.from_array(np.zeros(n, np.int8), "z")], ms=True), a),
    }  # fmt: skip
    import torch

    torch.set_num_threads(threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    kernels["torch fp32 matmul"] = lambda: ta @ tb
    THREADS[0] = threads
    best = interleave_best(kernels, reps)
    flops = 2.0 * n**3
    clock_name = "cpu" if threads == 1 else "wall"
    return {k: {"seconds": s, "gflops": flops / s / 1e9} for k, s in best.items()} | {
        "n": n,
        "clock": clock_name,
    }


def _runner(session, x):
    return lambda: session.run(None, {"a": x})


def interleave_best(fns: dict, reps: int) -> dict[str, float]:
    """Best seconds of each callable over ``reps`` rounds after one untimed call, the order
    rotating every round: process CPU time at one thread (what the kernels cost when they run:
    on a shared machine the wall time of a short call mostly measures when the scheduler lets
    it run), wall time otherwise (see :func:`clock`)."""
    times = interleave_times(fns, reps, quiet=True)
    return {n: min(measure(t) for t in ts) for n, ts in times.items()}


def clock() -> tuple[float, float]:
    """(wall, process CPU) seconds now."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = clock()
    return {"wall": wall - start[0], "cpu": cpu - start[1]}


THREADS: list[int] = [1]  # the thread count being measured (set per measurement)


def measure(t: dict[str, float]) -> float:
    """The time a ratio is taken on: CPU time at one thread, wall time at more. At one thread
    onnxruntime and torch compute on the calling thread, so process CPU time is the work;
    with more, CPU time would count worker threads spinning, and wall time is what a user
    waits (on this shared machine: the contention too)."""
    return t["cpu"] if THREADS[0] == 1 else t["wall"]


# --- units -------------------------------------------------------------------------------------


def measure_units(args, req: P.Request) -> dict:
    import torch
    from v2a_runtime.backends import load_session
    from v2a_runtime.bundle import load_bundle

    from v2a_export.export.precision.gate import int8_checks
    from v2a_export.export.wrappers import wrap

    feeds = unit_feeds(args, req)
    fp32, int8 = load_bundle(args.bundle, verify=False), load_bundle(args.int8, verify=False)
    config, source = _config_source(args)
    out = {}
    for name in args.components:
        _log(f"units: {name}")
        nets = _networks(config, source, NETWORK[name])
        module = wrap(nets, name)
        feed = feeds[name]
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()}
        forced = int8.manifest.components[name].precision != "int8"
        q_model = _forced_int8(fp32.path(name), feed) if forced else None
        row: dict = {"int8_source": "forced: every candidate node, ungated" if forced
                     else f"{args.int8}", "threads": {}}  # fmt: skip
        for t in args.threads:
            torch.set_num_threads(t)
            s32 = load_session(fp32.path(name), threads=t)
            s8 = _session(q_model, t) if forced else load_session(int8.path(name), threads=t)

            def torch_run(module=module, tensors=tensors):
                with torch.no_grad():
                    return module(**tensors)

            fns = {"fp32": lambda s=s32, f=feed: s.run(f),
                   "int8": lambda s=s8, f=feed: s.run(f), "torch": torch_run}  # fmt: skip
            THREADS[0] = t
            times = interleave_times(fns, args.runs)
            row["threads"][t] = {k: _stats(v) for k, v in times.items()}
        ref32 = _ort(fp32.path(name))
        q = _ort_model(q_model) if forced else _ort(int8.path(name))
        checks = int8_checks(ref32, q, [feed])
        row["int8_error"] = [
            {"output": c.name, "rel_l2": c.rel_l2, "cosine": c.cosine, "row_cosine": c.row_cosine}
            for c in checks
        ]
        row["unit"] = _unit_name(name, args)
        out[name] = row
        del nets, module, s32, s8, q_model
        gc.collect()
    return out


def _unit_name(name: str, args) -> str:
    return {"clip_visual": f"{args.clip_frames} frame(s)", "sync_visual": "1 segment",
            "text": "prompt pair", "denoiser": "1 CFG evaluation (batch 2)"}.get(
        name, f"{args.duration:g} s")  # fmt: skip


def interleave_times(fns: dict, runs: int, quiet: bool = False) -> dict[str, list[dict]]:
    """{name: [{"wall": s, "cpu": s} per run]}: one untimed call each, then ``runs`` rounds,
    the order rotating every round."""
    names = list(fns)
    for name in names:  # untimed first run: allocations, first-shape work
        fns[name]()
    times: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(runs):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = clock()
            fns[name]()
            times[name].append(since(start))
        if not quiet:
            _log(" ".join(f"{n} {1e3 * measure(times[n][-1]):.0f} ms" for n in names)
                 + f"; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    return times


def _stats(runs: list[dict]) -> dict:
    return {
        "p50_ms": 1e3 * statistics.median(measure(t) for t in runs),
        "min_ms": 1e3 * min(measure(t) for t in runs),
        "wall_p50_ms": 1e3 * statistics.median(t["wall"] for t in runs),
        "cpu_p50_ms": 1e3 * statistics.median(t["cpu"] for t in runs),
        "clock": "cpu" if THREADS[0] == 1 else "wall",
        "runs": runs,
    }


def _forced_int8(path: Path, feed):
    """Every quantizable node of the graph at ``path`` in int8 (MatMul dynamic, Conv static QDQ
    calibrated on ``feed``; weights as ``--int8-weights auto`` chooses on this CPU), no gate:
    what int8 would cost and buy if it were forced."""
    import onnx

    from v2a_export.export.precision.graph import GraphIndex
    from v2a_export.export.precision.kernels import choose_weights
    from v2a_export.export.precision.policy import Int8Policy
    from v2a_export.export.precision.quantize import candidate_nodes, prepare, quantize_nodes

    policy = Int8Policy(conv=True, weights=choose_weights()[0])  # as convert-precision's auto
    base = prepare(onnx.load(str(path)), feed)
    names, _ = candidate_nodes(GraphIndex.of(base), policy)
    return quantize_nodes(base, names, policy, [feed]) if names else base


def _session(model, threads: int):
    from v2a_export.export.precision.calibrate import cpu_session

    session = cpu_session(model, threads)

    class Run:
        def run(self, feed):
            return session.run(None, feed)

    return Run()


def _ort(path: Path):
    import onnx

    return _ort_model(onnx.load(str(path)))


def _ort_model(model):
    from v2a_export.export.precision.calibrate import cpu_session

    return cpu_session(model, None)


def _config_source(args):
    """The bundle's model config (``ModelConfig.from_manifest``) and its weights. A bundle whose
    video section disagrees with its registered variant (a shipped bundle exported before the
    variant changed) is rebuilt with the variant's networks and the bundle's own video facts,
    which is what its graphs compute."""
    from dataclasses import replace

    from v2a_runtime.bundle import load_bundle

    from v2a_export.export.weights import WeightSource
    from v2a_export.models.configs import ModelConfig, get_config

    manifest = load_bundle(args.bundle, verify=False).manifest
    try:
        config = ModelConfig.from_manifest(manifest)
    except ValueError as e:
        _log(f"reference config: {e}; using the variant with the bundle's video section")
        config = replace(get_config(manifest.model.variant), streams=manifest.video)
    if args.weights is not None:
        return config, WeightSource(directory=args.weights)
    record = json.loads((args.bundle / "reports" / "export.json").read_text())
    return config, WeightSource(seed=record["reference"]["seed"])


def _networks(config, source, *networks):
    from v2a_export.export.weights import load_weights

    return load_weights(config, source, tuple(networks)).networks


# --- thread settings ---------------------------------------------------------------------------

THREAD_SETTINGS = {"1 thread": (1, True), "2 threads, spinning": (2, True),
                   "2 threads, no spinning": (2, False)}  # fmt: skip


def measure_thread_settings(args, req: P.Request) -> dict:
    """Wall time of the fp32 denoiser and vocoder under each of :data:`THREAD_SETTINGS`."""
    import onnxruntime as ort
    from v2a_runtime.bundle import load_bundle

    feeds = chain_feeds(args.bundle, req, 1)
    bundle = load_bundle(args.bundle, verify=False)
    THREADS[0] = 2  # wall time for every setting
    out = {}
    for name in ("denoiser", "vocoder"):
        fns = {}
        for label, (threads, spin) in THREAD_SETTINGS.items():
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.log_severity_level = 3
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            session = ort.InferenceSession(str(bundle.path(name)), so,
                                           providers=["CPUExecutionProvider"])  # fmt: skip
            fns[label] = lambda s=session, f=feeds[name]: s.run(None, f)
        _log(f"threads: {name}")
        out[name] = {k: _stats(v) for k, v in interleave_times(fns, args.runs).items()}
    return out


# --- the whole clip ------------------------------------------------------------------------------


@dataclass
class TimedSession:
    """A Session that adds its run time to ``totals[name]``."""

    session: object
    name: str
    totals: dict

    @property
    def inputs(self):
        return self.session.inputs

    @property
    def outputs(self):
        return self.session.outputs

    def run(self, feeds):
        start = clock()
        out = self.session.run(feeds)
        spent = since(start)
        total = self.totals.setdefault(self.name, {"wall": 0.0, "cpu": 0.0})
        total["wall"] += spent["wall"]
        total["cpu"] += spent["cpu"]
        return out


def measure_clip(args, req: P.Request) -> dict:
    """Video file to waveform, once per path and thread count, the paths' order alternating."""
    paths = ["fp32", "best"] + ([] if args.no_reference else ["reference"])
    out: dict = {}
    for k, t in enumerate(args.threads):
        order = paths if k % 2 == 0 else paths[::-1]
        out[t] = {}
        for name in order:
            _log(f"clip: {name}, {t} thread(s)")
            if name == "reference":
                out[t][name] = reference_clip(args, req, t)
            else:
                out[t][name] = runtime_clip(args.bundle if name == "fp32" else args.best, req, t)
            tot = out[t][name]["total"]
            _log(f"clip: {name}: {tot['wall']:.1f} s wall, {tot['cpu']:.1f} s CPU; load "
                 f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    return out


def runtime_clip(bundle: Path, req: P.Request, threads: int) -> dict:
    """``Pipeline.generate(video)`` with every session timed (wall and CPU): the stages are
    the sessions' totals, decode and watermark the pipeline's own timings (wall)."""
    from v2a_runtime.pipeline import Pipeline

    pipe = Pipeline.load(bundle, threads=threads)
    totals: dict[str, dict] = {}
    pipe = pipe.with_sessions(**{n: TimedSession(s, n, totals) for n, s in pipe.sessions.items()})
    warm = dict(req.generate_options(watermark=True), duration=1.0, steps=1)
    pipe.generate(req.video, **warm)  # sessions' first run on small shapes
    totals.clear()
    start = clock()
    result = pipe.generate(req.video, **req.generate_options(watermark=True))
    total = since(start)
    t = result.timings
    stages = {"decode": {"wall": t["decode"]}}
    for name, stage in (("clip_visual", "clip_visual"), ("sync_visual", "sync_visual"),
                        ("text", "text"), ("conditioner", "conditioner"),
                        ("denoiser", "sampling"), ("vae_decoder", "vae"),
                        ("vocoder", "vocoder")):  # fmt: skip
        stages[stage] = totals.get(name, {"wall": 0.0, "cpu": 0.0})
    stages["watermark"] = {"wall": t["watermark"]}
    precisions = {n: c.precision for n, c in pipe.bundle.manifest.components.items()}
    return {"stages": stages, "total": total, "precisions": precisions}


def reference_clip(args, req: P.Request, threads: int) -> dict:
    """The PyTorch reference's stage methods, as ``ReferencePipeline.generate`` calls them,
    each timed (wall and CPU): decode (the runtime's reader), clip, sync, text, conditions,
    Euler, VAE, vocoder."""
    import torch
    from v2a_runtime.bundle import load_bundle
    from v2a_runtime.media import read_frames

    from v2a_export.reference import Features, ReferencePipeline, segment_sync_frames

    torch.set_num_threads(threads)
    config, source = _config_source(args)
    ref = ReferencePipeline(_networks(config, source, "clip", "synchformer", "flow", "vae",
                                      "vocoder"))  # fmt: skip
    video = load_bundle(args.bundle, verify=False).manifest.video
    nets = ref.nets

    @torch.no_grad()
    def run(duration: float, steps: int) -> tuple[dict, dict]:
        st: dict[str, dict] = {}
        t0 = clock()
        frames = read_frames(req.video, duration=duration, clip_fps=video.clip_fps,
                             clip_size=video.clip_size, sync_fps=video.sync_fps,
                             sync_size=video.sync_size)  # fmt: skip
        s = ref.lengths(duration)
        st["decode"] = since(t0)
        t = clock()
        clip = nets.clip.encode_frames_u8(torch.from_numpy(frames.clip))  # (F, Dc)
        st["clip_visual"], t = since(t), clock()
        segments = segment_sync_frames(torch.from_numpy(frames.sync[: s.sync_frames]))
        sync = nets.synchformer.encode_segments_u8(segments)  # (S, 8, Ds)
        st["sync_visual"], t = since(t), clock()
        text = nets.clip.encode_text(torch.from_numpy(req.token_ids))  # (2, 77, Dt)
        st["text"], t = since(t), clock()
        feats = Features(clip[None], sync.flatten(0, 1)[None], text[:1], text[1:])
        cond, uncond = ref.conditions(feats, s.latent)
        st["conditioner"], t = since(t), clock()
        full = duration == req.duration
        x0 = torch.from_numpy(req.x0) if full else ref.initial_noise(s.latent, 0)
        latent = ref.sample(x0, cond, uncond, steps=steps, cfg=req.cfg)
        st["sampling"], t = since(t), clock()
        mel = ref.decode_mel(latent)
        st["vae"], t = since(t), clock()
        ref.vocode(mel)
        st["vocoder"] = since(t)
        return st, since(t0)

    run(1.0, 1)  # warm-up, as the runtime paths get
    stages, total = run(req.duration, req.steps)
    return {"stages": stages, "total": total}


# --- profile -----------------------------------------------------------------------------------


def profile_denoiser(args, req: P.Request, threads: int) -> dict:
    """onnxruntime's profile of one denoiser evaluation, fp32 and int8 graphs (the int8 graph
    forced with every candidate when ``--int8`` keeps the denoiser fp32)."""
    import onnx
    from v2a_runtime.bundle import load_bundle

    feed = chain_feeds(args.bundle, req, threads)["denoiser"]
    fp32 = load_bundle(args.bundle, verify=False).path("denoiser")
    int8 = load_bundle(args.int8, verify=False)
    out = {"fp32": profile_graph(fp32, feed, threads)}
    if int8.manifest.components["denoiser"].precision == "int8":
        out["int8"] = profile_graph(int8.path("denoiser"), feed, threads)
        return out
    with tempfile.TemporaryDirectory() as tmp:  # kept fp32 there: forced, as in the units
        path = Path(tmp) / "denoiser_int8.onnx"
        onnx.save(_forced_int8(fp32, feed), str(path))
        out["int8"] = profile_graph(path, feed, threads) | {"forced": True}
    return out


def profile_graph(path: Path, feed: dict, threads: int, runs: int = 5) -> dict:
    """Per node the shortest of ``runs`` profiled runs (after a warm-up): a node the scheduler
    preempted in one run is timed by another, so the sum approximates the graph's time on a
    machine of its own. The wall time of whole runs is recorded next to it."""
    import onnxruntime as ort

    weights = conv_weight_shapes(path)
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "p")
        so.log_severity_level = 3
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        s.run(None, feed)  # warm-up, excluded below
        walls = []
        for _ in range(runs):
            start = clock()
            s.run(None, feed)
            walls.append(since(start))
        events = json.loads(Path(s.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(nodes) // (runs + 1)
    best: dict[str, dict] = {}
    for e in nodes[per_run:]:  # drop the warm-up run
        old = best.get(e["name"])
        if old is None or e["dur"] < old["dur"]:
            best[e["name"]] = e
    by_op: dict[str, dict] = {}
    heavy_flops = heavy_us = total_us = 0.0
    for e in best.values():
        op = e["args"].get("op_name", "?")
        node = re.sub(r"(_token_\d+)?_kernel_time$", "", e["name"])  # fused QDQ: <node>_token_N
        flops = node_flops(op, e["args"], weights.get(node))
        row = by_op.setdefault(op, {"ms": 0.0, "gflop": 0.0, "count": 0})
        row["ms"] += e["dur"] / 1e3
        row["gflop"] += flops / 1e9
        row["count"] += 1
        total_us += e["dur"]
        if flops:
            heavy_flops += flops
            heavy_us += e["dur"]
    gflop = heavy_flops / 1e9
    return {
        "sum_of_node_minima_ms": total_us / 1e3,
        "wall_p50_ms": 1e3 * statistics.median(w["wall"] for w in walls),
        "cpu_p50_ms": 1e3 * statistics.median(w["cpu"] for w in walls),
        "gflop": gflop,
        "gflops_whole_graph": gflop / (total_us / 1e6) if total_us else None,
        "gflops_heavy_ops": gflop / (heavy_us / 1e6) if heavy_us else None,
        "heavy_ms": heavy_us / 1e3,
        "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1]["ms"])),
    }


def conv_weight_shapes(path: Path) -> dict[str, list[int]]:
    """{node name: weight shape} of the graph's Conv/QLinearConv/ConvInteger nodes whose weight
    is an initializer (or its DequantizeLinear): onnxruntime's profile leaves a prepacked
    weight out of a node's inputs."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    for n in model.graph.node:  # QDQ: the weight reaches the Conv through a DequantizeLinear
        if n.op_type == "DequantizeLinear" and n.input[0] in dims:
            dims[n.output[0]] = dims[n.input[0]]
    slot = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
    return {n.name: dims[n.input[slot[n.op_type]]] for n in model.graph.node
            if n.op_type in slot and n.input[slot[n.op_type]] in dims}  # fmt: skip


def node_flops(op: str, a: dict, weight: list[int] | None = None) -> float:
    """2 x multiply-adds of one MatMul/Gemm/Conv-family node from its profiled shapes (a Conv's
    weight shape from the graph, ``weight``, when the profile omits the prepacked weight)."""
    ins = [next(iter(x.values())) for x in a.get("input_type_shape", [])]
    outs = [next(iter(x.values())) for x in a.get("output_type_shape", [])]
    if not ins or not outs:
        return 0.0
    if op in ("MatMul", "FusedMatMul", "MatMulInteger", "DynamicQuantizeMatMul",
              "MatMulIntegerToFloat", "QLinearMatMul", "Gemm"):  # fmt: skip
        a_shape = ins[0]
        k = a_shape[-1] if op != "Gemm" or not a.get("transA") else a_shape[0]
        return 2.0 * float(np.prod(outs[0])) * k
    if op in ("Conv", "FusedConv", "NhwcFusedConv", "QLinearConv", "ConvInteger"):
        w = weight or (ins[3] if op == "QLinearConv" else ins[1])
        return 2.0 * float(np.prod(outs[0])) * float(np.prod(w[1:]))
    return 0.0


# --- records -----------------------------------------------------------------------------------


def cpu_flags() -> dict:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    fam = next((ln.split(":")[1].strip() for ln in text.splitlines()
                if ln.startswith("cpu family")), "?")  # fmt: skip
    model = next((ln.split(":")[1].strip() for ln in text.splitlines()
                  if ln.startswith("model\t")), "?")  # fmt: skip
    return {"family": fam, "model": model,
            **{f: f in flags for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
                                       "amx_int8")}}  # fmt: skip


def versions(torch) -> dict:
    import onnxruntime

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__}  # fmt: skip


def markdown(r: dict) -> str:
    m, f = r["machine"], r["cpu_flags"]
    isa = ", ".join(k for k in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
                    if f.get(k)) or "?"  # fmt: skip
    lines = [
        f"## CPU: fp32 vs int8 vs PyTorch, {r['variant']}",
        "",
        f"`{r['command']}`  ",
        f"{m['cpu']} (family {f.get('family')}, model {f.get('model')}; {isa}; "
        f"{'VNNI' if f.get('avx512_vnni') or f.get('avx_vnni') else 'no VNNI'}), "
        f"{m['cores']} cores, shared with other "
        f"jobs: 1-min load {m['load_average_start'][0]:g} at start, "
        f"{m['load_average_end'][0]:g} at end. onnxruntime {r['versions']['onnxruntime']}, "
        f"torch {r['versions']['torch']}. Times at 1 thread are process CPU time (the work, "
        "not the waits for a core), at 2 threads wall time.",
    ]
    if "peaks" in r:
        lines += _peaks_md(r["peaks"])
    if "units" in r:
        lines += _units_md(r["units"])
    if "thread_settings" in r:
        lines += _threads_md(r["thread_settings"])
    if "profile" in r:
        lines += _profile_md(r["profile"], r.get("peaks", {}))
    if "clip" in r:
        lines += _clip_md(r["clip"])
    return "\n".join(lines) + "\n"


def _peaks_md(peaks: dict) -> list[str]:
    threads = list(peaks)
    first = peaks[threads[0]]
    kernels = [k for k in first if k not in ("n", "clock")]
    out = ["", f"### GEMM peaks ({first['n']}² products; GFLOP/s, int8: 2 x giga multiply-adds "
           "per second; best of the runs)", "",
           "| kernel | " + " | ".join(f"{t} thread(s)" for t in threads) + " |",
           "|---|" + "---:|" * len(threads)]  # fmt: skip
    for k in kernels:
        out.append(f"| {k} | " + " | ".join(f"{peaks[t][k]['gflops']:.1f}" for t in threads)
                   + " |")  # fmt: skip
    return out


def _units_md(units: dict) -> list[str]:
    out = ["", "### Per component (one unit of work; p50 ms over interleaved runs)", "",
           "| component | unit | threads | fp32 | int8 | PyTorch | int8 / fp32 | "
           "fp32 / PyTorch | int8 vs fp32: rel L2, cosine (worst feature cos) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for name, u in units.items():
        err = u["int8_error"][0]
        feat = f" ({err['row_cosine']:.4f})" if err.get("row_cosine") is not None else ""
        tag = " (forced)" if u["int8_source"].startswith("forced") else ""
        for t, row in u["threads"].items():
            a, b, c = (row[k]["p50_ms"] for k in ("fp32", "int8", "torch"))
            out.append(f"| {name}{tag} | {u['unit']} | {t} | {a:.1f} | {b:.1f} | {c:.1f} | "
                       f"{b / a:.2f} | {a / c:.2f} | {err['rel_l2']:.1e}, {err['cosine']:.5f}"
                       f"{feat} |")  # fmt: skip
    return out


def _threads_md(settings: dict) -> list[str]:
    labels = list(next(iter(settings.values())))
    out = [
        "",
        "### onnxruntime thread settings (fp32 graphs; wall ms, p50 and best)",
        "",
        "| graph | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for name, row in settings.items():
        out.append(f"| {name} | " + " | ".join(
            f"{row[k]['wall_p50_ms']:.0f} ({min(t['wall'] for t in row[k]['runs']) * 1e3:.0f})"
            for k in labels) + " |")  # fmt: skip
    return out


def _profile_md(profile: dict, peaks: dict) -> list[str]:
    out = ["", "### Denoiser, one CFG evaluation: achieved GFLOP/s (onnxruntime profiler, each "
           "node's shortest of the runs)", "",
           "| threads | graph | ms (sum of nodes) | wall p50 ms | GFLOP | GFLOP/s whole graph | "
           "GFLOP/s in MatMul/Conv | peak used | top ops (ms) |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for t, pr in profile.items():
        pk = peaks.get(t) or peaks.get(str(t)) or {}
        for label, p in pr.items():
            top = ", ".join(f"{op} {v['ms']:.0f}" for op, v in list(p["by_op"].items())[:5])
            key = ("onnxruntime fp32 MatMul" if label == "fp32"
                   else "onnxruntime DynamicQuantizeMatMul (fp32 in, u8·u8)")  # fmt: skip
            peak = pk.get(key, {}).get("gflops")
            heavy = p["gflops_heavy_ops"]
            used = f"{heavy / peak:.0%}" if heavy and peak else "-"
            whole = p["gflops_whole_graph"]
            label = f"{label} (forced)" if p.get("forced") else label
            out.append(f"| {t} | {label} | {p['sum_of_node_minima_ms']:.0f} | "
                       f"{p['wall_p50_ms']:.0f} | {p['gflop']:.1f} | {whole:.1f} | "
                       f"{heavy:.1f} | {used} | {top} |")  # fmt: skip
    return out


def _clip_md(clip: dict) -> list[str]:
    stages = ("decode", "clip_visual", "sync_visual", "text", "conditioner", "sampling", "vae",
              "vocoder", "watermark")  # fmt: skip
    out = ["", "### The whole clip: video file to waveform (seconds; one run per path and "
           "thread count after a 1 s warm-up; CPU time / wall time)", ""]  # fmt: skip
    for t, paths in clip.items():
        names = [n for n in ("fp32", "best", "reference") if n in paths]
        out += [f"**{t} thread(s)**", "", "| stage | " + " | ".join(names) + " |",
                "|---|" + "---:|" * len(names)]  # fmt: skip
        for s in stages:
            cells = []
            for n in names:
                v = paths[n]["stages"].get(s)
                cells.append("-" if v is None else
                             (f"{v['cpu']:.1f} / {v['wall']:.1f}" if "cpu" in v
                              else f"- / {v['wall']:.1f}"))  # fmt: skip
            out.append(f"| {s} | " + " | ".join(cells) + " |")
        out.append("| **total** | " + " | ".join(
            f"**{paths[n]['total']['cpu']:.1f} / {paths[n]['total']['wall']:.1f}**"
            for n in names) + " |")  # fmt: skip
        if "best" in paths:
            p8 = paths["best"]["precisions"]
            out += ["", "best bundle: " + ", ".join(f"{k} {v}" for k, v in p8.items()), ""]
    return out


def _log(text: str) -> None:
    print(f"[cpu bench] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
