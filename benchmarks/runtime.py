"""Runtime vs reference: the ONNX runtime and the PyTorch reference, same weights, inputs, steps.

    python benchmarks/runtime.py --variant tiny --runs 10 --cli-runs 5
    python benchmarks/runtime.py --variant small_16k --bundle /tmp/small_16k --runs 3 \\
        --warmup 0 --stages sampling vae vocoder --encoders-per-unit

One process holds both paths: the bundle's ONNX graphs behind ``v2a_runtime.pipeline``
(onnxruntime CPU) and the PyTorch networks behind ``v2a_export.reference.ReferencePipeline``,
built from the same seed (random weights) or loaded from the weight files the bundle was
exported from (``--weights DIR``, e.g. the shipped default model: ``--bundle
runtime/default_bundle --weights weights/tiny``). ``--bundle DIR`` reuses a bundle (its
manifest's variant and recorded seed rebuild the PyTorch side) or exports one into an empty
``DIR``; without it the variant is exported (seed ``--weights-seed``) into a temporary
directory. Both paths get:

- the same input: a procedural-world clip of ``--duration`` s written with PyAV (or
  ``--video``), the same token ids (the runtime's tokenizer), the same x0 (the runtime's noise
  for ``--seed``, handed to the reference);
- the same algorithm: Euler on the uniform grid, ``--steps`` steps, CFG ``--cfg`` (the
  reference's own sampler; the runtime batches [cond; uncond], the reference runs two passes);
- the same threads: ``torch.set_num_threads(N)`` and onnxruntime ``intra_op_num_threads = N``
  (sequential execution, one inter-op thread), ``--threads``.

What runs (``--stages``, the stages summed into the headline aggregate):

- with ``encoders`` among the stages: **end to end from the video file** — the runtime's
  ``Pipeline.generate(path)`` (decode, encoders, conditions, sampling, vae, vocoder, watermark)
  vs decode + ``ReferencePipeline.generate`` on the decoded frames;
- without: the **flow chain** (conditions → sampling → vae → vocoder) on fixed, seeded encoder
  features, the runtime through its own ``generate`` with the encoder sessions stubbed;
- ``--encoders-per-unit``: each encoder on one unit — ``clip_visual`` one frame,
  ``sync_visual`` one 16-frame segment, ``text`` one [prompt; negative] pair — for full-size
  encoders, whose whole clip takes minutes on a CPU; the per-clip figure is unit × count;
- ``--cli-runs N``: process wall time of ``v2a generate VIDEO -o OUT.mp4`` (subprocess).

Method: a parity round first (both paths, untimed; the runtime without watermark; the waveform
error against the end-to-end bound, encoder outputs against the fp32 per-graph bound), then
``--warmup`` rounds and ``--runs`` timed rounds, interleaved run by run with the order
alternating (runtime, reference / reference, runtime / ...) so load drifts hit both paths.
Per stage: p50 and p95 (nearest rank) and the ratio runtime / reference of the p50s; for the
headline also the median of the per-round ratios. Peak RSS per path: the kernel's high-water
mark (``VmHWM``, reset through ``/proc/self/clear_refs`` before each run) — the process holds
both paths' weights, so the load deltas are reported too. The load average at start and end
goes into the record: absolute times on a shared CPU are noise, ratios are the claim
(DESIGN.md §9).

Writes ``benchmarks/results/runtime_<variant>.{json,md}`` (``--name``, ``--out``) and prints
the table.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import runtime_paths as P  # sibling modules: this script's folder is sys.path[0]
import runtime_report
from machine_info import machine
from v2a_runtime.config import DEFAULT_SAMPLER

RESULTS = Path(__file__).resolve().parent / "results"
CHAIN = ("conditions", "sampling", "vae", "vocoder")
STAGE_CHOICES = ("encoders", *CHAIN)
DEFAULT_STAGES = {"tiny": STAGE_CHOICES, "small_16k": ("sampling", "vae", "vocoder")}
PROMPT = "glass bottles clink, then footsteps on gravel"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", help="tiny, small_16k, ... (default: the bundle's, else tiny)")
    p.add_argument("--bundle", type=Path, help="reuse this bundle, or export into it if empty")
    p.add_argument("--weights-seed", type=int, default=0, help="random weights of an export")
    p.add_argument("--weights", type=Path,
                   help="weight files the --bundle was exported from (a trained bundle)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of video")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--cfg", type=float, default=DEFAULT_SAMPLER.cfg)
    p.add_argument("--seed", type=int, default=42, help="noise seed (both paths)")
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    p.add_argument("--runs", type=int, default=5, help="timed rounds (both paths each)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds after the parity one")
    p.add_argument("--stages", nargs="+", choices=STAGE_CHOICES, help="headline stages")
    p.add_argument("--encoders-per-unit", action="store_true", help="time encoders per unit")
    p.add_argument("--unit-runs", type=int, default=3, help="timed rounds per encoder unit")
    p.add_argument("--cli-runs", type=int, default=0, help="v2a generate process runs")
    p.add_argument("--video", type=Path, help="input video (default: a rendered world clip)")
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--negative", default="")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--name", help="results file stem (default: runtime_<variant>)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--export-only", action="store_true", help="export --bundle and stop")
    args = p.parse_args(argv)
    if min(args.runs, args.threads, args.steps) < 1 or min(args.warmup, args.cli_runs) < 0:
        p.error("--runs, --threads and --steps must be >= 1; --warmup, --cli-runs >= 0")
    if args.export_only and args.bundle is None:
        p.error("--export-only needs --bundle DIR (where the export goes)")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    load_start = os.getloadavg()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="v2a-runtime-bench-") as tmp:
        bundle, config, source = prepare_bundle(args, Path(tmp))
        if args.export_only:
            _log(f"exported {config.name} ({source.describe()}) into {bundle}")
            return 0
        stages = tuple(args.stages or DEFAULT_STAGES.get(config.name, CHAIN))
        req = make_request(args, bundle, Path(tmp))
        _log(f"{config.name}: {req.duration:g} s, L {req.x0.shape[1]}, bundle {bundle}")
        record: dict = {}
        record["pipeline"] = measure_pipeline(args, bundle, config, source, req, stages)
        if args.encoders_per_unit:  # after the pipeline: its load deltas start from a clean heap
            record["encoders_per_unit"] = measure_encoder_units(args, bundle, config, source,
                                                                req)
        if args.cli_runs:
            record["cli"] = measure_cli(args, bundle, req, Path(tmp))
    record = {
        "benchmark": "runtime",
        "command": shlex.join(["python", "benchmarks/runtime.py", *argv]),
        "variant": config.name,
        "weights": (f"random (seed {source.seed})" if source.random
                    else f"trained ({args.weights})"),
        "bundle": str(bundle) if args.bundle else "exported to a temporary directory",
        "request": {
            "video": str(args.video) if args.video else "rendered world scene (PyAV, H.264)",
            "duration": req.duration,
            "latent": int(req.x0.shape[1]),
            "prompt": req.prompt,
            "negative": req.negative,
            "seed": req.seed,
            "solver": "euler",
            "grid": "uniform",
            "steps": req.steps,
            "cfg": req.cfg,
        },
        "threads": {
            "torch_intra_op": torch.get_num_threads(),
            "onnxruntime_intra_op": args.threads,
            "onnxruntime_inter_op": 1,
        },
        "method": {
            "runs": args.runs,
            "warmup": args.warmup,
            "order": "interleaved run by run, order alternating each round",
            "p95": "nearest rank",
            "headline_stages": list(stages),
        },
        "machine": machine(load_average_start=load_start, load_average_end=os.getloadavg()),
        "versions": versions(),
        **record,
    }
    record["passed"] = passed(record)
    table = runtime_report.markdown(record)
    print(table)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / (args.name or f"runtime_{config.name}")
        stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        stem.with_suffix(".md").write_text(table)
    return 0 if record["passed"] else 1


# --- setup ------------------------------------------------------------------------------------


def prepare_bundle(args, tmp: Path):
    """(bundle dir, ModelConfig, WeightSource): reuse ``--bundle`` or export the variant."""
    from v2a_runtime.bundle import load_bundle

    from v2a_export.export.weights import WeightSource
    from v2a_export.models.configs import ModelConfig, get_config

    root = args.bundle or tmp / "bundle"
    if not (root / "manifest.json").is_file():
        export(get_config(args.variant or "tiny"), args.weights_seed, root, args.threads)
    record = json.loads((root / "reports" / "export.json").read_text())
    seed = (record.get("reference") or {}).get("seed")
    if args.weights is not None:
        if not args.weights.is_dir():
            raise SystemExit(f"--weights {args.weights}: not a directory")
        source = WeightSource(directory=args.weights)
    elif record["reference"].get("weights") != "random" or not isinstance(seed, int):
        raise SystemExit(f"{root}: not a random-weight bundle; give --weights DIR, the weight "
                         "files it was exported from")
    else:
        source = WeightSource(seed=seed)
    config = ModelConfig.from_manifest(load_bundle(root, verify=False).manifest)
    if args.variant is not None and args.variant != config.name:
        raise SystemExit(f"{root} holds {config.name}, not --variant {args.variant}")
    return root, config, source


def export(config, seed: int, out: Path, threads: int) -> None:
    """Export with a light gate (this harness checks parity itself), component group by
    group so only one group's networks are in memory (ViT-H alone is 2.5 GB)."""
    from v2a_export.export.bundle import ExportOptions, export_bundle
    from v2a_export.export.parity import ParityPlan
    from v2a_export.export.weights import WeightSource

    plan = ParityPlan(
        durations=(1.0, 2.0), batches=(1,), encoder_durations=(0.64, 1.0), e2e_duration=None
    )
    groups = (("conditioner", "denoiser", "vae_decoder", "vocoder"), ("text",))
    groups += (("sync_visual",), ("clip_visual",))
    for group in groups:
        _log(f"exporting {config.name} {', '.join(group)} (random weights, seed {seed})")
        options = ExportOptions(components=group, plan=plan, threads=threads)
        result = export_bundle(config, WeightSource(seed=seed), out, options)
        if not result.report.passed:
            raise SystemExit(f"export gate failed: {result.report.summary()}")
        release_memory()


def make_request(args, bundle: Path, tmp: Path) -> P.Request:
    from v2a_runtime.bundle import load_bundle
    from v2a_runtime.media import read_frames
    from v2a_runtime.tokenizer import Tokenizer

    manifest = load_bundle(bundle, verify=False).manifest
    video = args.video or render_video(tmp / "clip.mp4", args.duration, args.seed)
    v = manifest.video
    frames = read_frames(
        video,
        duration=args.duration,
        clip_fps=v.clip_fps,
        clip_size=v.clip_size,
        sync_fps=v.sync_fps,
        sync_size=v.sync_size,
    )
    if abs(frames.duration - args.duration) > 1e-6:
        raise SystemExit(f"{video} holds {frames.duration:.2f} s, not --duration {args.duration}")
    tokenizer = Tokenizer.load(load_bundle(bundle, verify=False).tokenizer_path)
    lengths = manifest.rates.lengths(args.duration)
    return P.Request(
        video=video,
        frames=frames,
        prompt=args.prompt,
        negative=args.negative,
        token_ids=tokenizer([args.prompt, args.negative]),
        x0=P.make_noise(args.seed, lengths.latent, manifest.audio.latent_channels),
        duration=args.duration,
        steps=args.steps,
        cfg=args.cfg,
        seed=args.seed,
    )


def render_video(path: Path, duration: float, seed: int) -> Path:
    """A procedural-world clip (objects falling and colliding), H.264, 256 px, 25 fps."""
    from v2a_runtime import world

    if not 2.0 <= duration <= 10.0:
        raise SystemExit("the rendered clip needs --duration in [2, 10] s; or pass --video")
    return world.write_video(world.make_scene(seed, duration=duration), path)


# --- measurements -----------------------------------------------------------------------------


def measure_pipeline(args, bundle: Path, config, source, req: P.Request, stages) -> dict:
    """The headline measurement: end to end (``encoders`` in ``stages``) or the flow chain."""
    from v2a_runtime.pipeline import Pipeline

    from v2a_export.export.parity import END_TO_END, Metrics
    from v2a_export.export.weights import load_weights
    from v2a_export.reference import ReferencePipeline

    e2e = "encoders" in stages
    rss0 = rss()
    if e2e:
        pipe = Pipeline.load(bundle, threads=args.threads)
    else:  # only the chain's four graphs in memory; the encoders are stubbed below
        pipe = chain_pipeline(bundle, args.threads)
    rss1 = rss()
    if e2e:
        nets = load_weights(config, source).networks
    else:
        nets = load_weights(config, source, ("flow", "vae", "vocoder")).networks
    ref = ReferencePipeline(nets)
    rss2 = rss()
    if e2e:
        paths = {
            "runtime": P.runtime_end_to_end(pipe, req, watermark=True),
            "reference": P.reference_end_to_end(ref, pipe, req),
        }
        first = {"runtime": P.runtime_end_to_end(pipe, req, watermark=False)}
    else:
        seq = ref.lengths(req.duration)
        dims = (config.flow.clip_dim, config.flow.sync_dim, config.flow.text_dim)
        feats = P.EncoderFeatures.random(req.seed, seq.clip_frames, seq.sync_segments, dims)
        pipe = P.with_fixed_encoders(pipe, feats)
        paths = {
            "runtime": P.runtime_chain(pipe, req),
            "reference": P.reference_chain(ref, feats, req, pipe),
        }
        first = {}
    rounds = interleave(paths, first, args.warmup, args.runs, "pipeline")
    m = Metrics.of(rounds["outputs"]["runtime"], rounds["outputs"]["reference"])
    out = {
        "mode": "end to end from the video file" if e2e else "flow chain, fixed encoder features",
        **summarize(rounds, stages),
        "parity": {
            "what": "waveform, runtime (no watermark) vs reference, trimmed, clipped to [-1, 1]",
            "rel_l2": m.rel_l2,
            "max_abs": m.max_abs,
            "cosine": m.cosine,
            "bound_rel_l2": END_TO_END.rel_l2,
            "passed": not END_TO_END.failures(m),
        },
        "memory_mb": {
            "load_runtime": _mb(rss1 - rss0),
            "load_reference": _mb(rss2 - rss1),
            **{f"peak_{k}": _mb(max(v)) for k, v in rounds["peak_rss"].items()},
        },
    }
    del pipe, ref, nets, paths, first
    release_memory()
    return out


def chain_pipeline(bundle: Path, threads: int):
    """A Pipeline holding only the chain's four sessions (checked like ``Pipeline.load``)."""
    from v2a_runtime.backends import Backend, HostSampler, load_session
    from v2a_runtime.bundle import check_io, load_bundle
    from v2a_runtime.pipeline import Pipeline
    from v2a_runtime.tokenizer import Tokenizer
    from v2a_runtime.watermark import load_key

    b = load_bundle(bundle)
    sessions = {}
    for name in ("conditioner", "denoiser", "vae_decoder", "vocoder"):
        sessions[name] = load_session(b.path(name), "cpu", threads=threads)
        check_io(name, b.manifest.components[name], sessions[name])
    context = b.manifest.tokenizer.context_length
    tokenizer = Tokenizer.load(b.tokenizer_path, context_length=context)
    return Pipeline(b, Backend("cpu", sessions, HostSampler), tokenizer, load_key(None))


def measure_encoder_units(args, bundle: Path, config, source, req: P.Request) -> dict:
    """Each encoder on one unit; one PyTorch network at a time in memory (ViT-H is large)."""
    from v2a_runtime.backends import load_session
    from v2a_runtime.bundle import load_bundle

    from v2a_export.export.parity import FP32, Metrics
    from v2a_export.export.weights import load_weights

    b = load_bundle(bundle, verify=False)
    out = {}
    for network, names in (("clip", ("clip_visual", "text")), ("synchformer", ("sync_visual",))):
        nets = load_weights(config, source, (network,)).networks
        sessions = {n: load_session(b.path(n), "cpu", threads=args.threads) for n in names}
        for unit in P.encoder_units(sessions, nets, req):
            paths = {"runtime": unit.runtime, "reference": unit.reference}
            rounds = interleave(paths, {}, args.warmup, args.unit_runs, unit.name)
            m = Metrics.of(rounds["outputs"]["runtime"], rounds["outputs"]["reference"])
            s = summarize(rounds, ("unit",))["stages"]["unit"]
            out[unit.name] = {
                "unit": unit.unit,
                "units_per_clip": unit.per_clip,
                **s,
                "parity": {
                    "rel_l2": m.rel_l2,
                    "max_abs": m.max_abs,
                    "cosine": m.cosine,
                    "bound_rel_l2": FP32.rel_l2,
                    "passed": not FP32.failures(m),
                },
                "peak_rss_mb": {k: _mb(max(v)) for k, v in rounds["peak_rss"].items()},
            }
        del nets, sessions
        release_memory()
    return out


def interleave(paths: dict[str, P.Path_], first: dict[str, P.Path_], warmup: int, runs: int,
               label: str) -> dict:  # fmt: skip
    """A parity round (``first`` overrides a path there), ``warmup`` rounds, ``runs`` timed
    rounds; the path order alternates each round. Outputs come from the parity round."""
    names = list(paths)
    times: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    peaks: dict[str, list[int]] = {n: [] for n in names}
    outputs: dict[str, np.ndarray] = {}
    cold: dict[str, dict[str, float]] = {}
    total = 1 + warmup + runs
    for r in range(total):
        order = names if r % 2 == 0 else names[::-1]
        line = []
        for name in order:
            run = first.get(name, paths[name]) if r == 0 else paths[name]
            reset_peak_rss()
            stages, output = run()
            peak = peak_rss()
            if r == 0:
                outputs[name], cold[name] = output, stages
            elif r > warmup:
                times[name].append(stages)
                peaks[name].append(peak)
            line.append(f"{name} {sum(v for k, v in stages.items() if k != 'end_to_end'):.2f} s")
        kind = "parity" if r == 0 else "warm-up" if r <= warmup else "timed"
        _log(f"{label} round {r + 1}/{total} ({kind}): {', '.join(line)}; "
             f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    return {"times": times, "peak_rss": peaks, "outputs": outputs, "cold": cold}


def summarize(rounds: dict, headline: tuple[str, ...]) -> dict:
    times = rounds["times"]
    rt, ref = times["runtime"], times["reference"]
    stages = {}
    for stage in [*P.STAGES, "unit"]:
        row = {}
        for name, runs in times.items():
            if runs and stage in runs[0]:
                row[name] = _stats([r[stage] for r in runs])
        if row:
            both = "runtime" in row and "reference" in row
            ratio = row["runtime"]["p50_ms"] / row["reference"]["p50_ms"] if both else None
            row["ratio_p50"] = ratio
            stages[stage] = row
    agg_rt = [sum(r[s] for s in headline) for r in rt]
    agg_ref = [sum(r[s] for s in headline) for r in ref]
    return {
        "stages": stages,
        "headline": {
            "stages": list(headline),
            "runtime": _stats(agg_rt),
            "reference": _stats(agg_ref),
            "ratio_p50": statistics.median(agg_rt) / statistics.median(agg_ref),
            "ratio_paired_median": statistics.median(
                a / b for a, b in zip(agg_rt, agg_ref, strict=True)
            ),
        },
        "cold_round_ms": {n: {k: 1e3 * v for k, v in s.items()} for n, s in rounds["cold"].items()},
    }


def measure_cli(args, bundle: Path, req: P.Request, tmp: Path) -> dict:
    """Process wall time of ``v2a generate`` (a fresh interpreter each time), and of
    ``v2a --version`` (interpreter start + imports) for scale."""
    exe = Path(sys.executable).with_name("v2a")
    out = tmp / "out.mp4"
    generate = [
        str(exe), "generate", str(req.video), "-o", str(out), "--bundle", str(bundle),
        "-p", req.prompt, "-n", req.negative, "--seed", str(req.seed), "--steps", str(req.steps),
        "--solver", "euler", "--grid", "uniform", "--cfg", str(req.cfg),
        "--duration", str(req.duration), "--threads", str(args.threads), "-q", "-f",
    ]  # fmt: skip
    version = [str(exe), "--version"]
    walls: dict[str, list[float]] = {"generate": [], "version": []}
    inside: list[float] = []
    summary = ""
    for r in range(1 + args.cli_runs):  # round 0 warms the file cache
        for key, cmd in (("generate", generate), ("version", version)):
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - start
            if done.returncode:
                raise SystemExit(f"{shlex.join(cmd)} failed: {done.stderr.strip()}")
            if r:
                walls[key].append(wall)
                total = re.search(r"total ([0-9.]+)", done.stdout)
                if key == "generate" and total:
                    inside.append(float(total.group(1)))
            if key == "generate":
                summary = done.stdout.strip()
        _log(f"cli round {r + 1}/{1 + args.cli_runs}: {summary[-60:]}")
    return {
        "command": shlex.join(["v2a", *generate[1:]]).replace(str(tmp), "$TMP"),
        "output": "MP4, video packets copied, AAC audio, watermarked",
        "includes": "interpreter start, imports, bundle load (sha256 of every file), sessions, "
        "decode, encoders, sampling, vae, vocoder, watermark, mux",
        "generate": _stats(walls["generate"]),
        "inside_command": _stats(inside) if inside else None,
        "version": _stats(walls["version"]),
        "last_summary": summary.replace(str(tmp), "$TMP"),
    }


# --- records ----------------------------------------------------------------------------------


def versions() -> dict:
    import av

    from v2a_export.export.bundle import library_versions

    return {**library_versions(), "av": av.__version__}


def passed(record: dict) -> bool:
    ok = record["pipeline"]["parity"]["passed"]
    for unit in record.get("encoders_per_unit", {}).values():
        ok = ok and unit["parity"]["passed"]
    return bool(ok)


def _stats(xs: list[float]) -> dict:
    s = sorted(xs)
    return {
        "p50_ms": 1e3 * statistics.median(s),
        "p95_ms": 1e3 * s[min(len(s) - 1, round(0.95 * (len(s) - 1)))],
        "n": len(s),
        "runs_ms": [round(1e3 * x, 2) for x in xs],
    }


# --- memory -----------------------------------------------------------------------------------


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def rss() -> int:
    return _status("VmRSS")


def peak_rss() -> int:
    return _status("VmHWM")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def release_memory() -> None:
    """Collect, then hand freed heap pages back to the OS (glibc), so later RSS deltas and
    peaks are not hidden by memory a finished phase left in the allocator."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


def _log(text: str) -> None:
    print(f"[runtime bench] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
