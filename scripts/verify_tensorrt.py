"""Verify the TensorRT path on a machine with TensorRT and an NVIDIA GPU (scripts/verify_tensorrt.sh
runs it). For each variant (default: tiny and small_16k, random weights):

1. export the bundle (``v2a-export export``; fp16 graphs as well when the exporter offers
   ``--precision``) unless it already exists in OUT;
2. ``v2a-export build-engines`` (default windows, 1..2 tracks, a shared timing cache), then
   ``--check`` must report every engine up to date;
3. parity gate: every engine against the **fp32 PyTorch reference** (the networks rebuilt from
   the bundle's recorded seed) at two durations per dynamic axis, with TensorRT thresholds
   (fp32 engines, TF32 off: rel L2 <= 1e-4; fp16/bf16: rel L2 <= 4e-2, i.e. cosine >= ~0.999),
   and the end-to-end waveform of the runtime pipeline on the engines against the PyTorch
   reference pipeline (rel L2 <= 1e-3 for fp32);
4. runtime checks: same seed -> same bits, other seed -> other audio, the denoiser's CUDA graph
   is active and equals plain enqueues;
5. timings on the GPU: per-component ``run`` p50/p95 at the bundle's trained duration, the
   denoiser step with and without the CUDA graph, end-to-end ``generate`` at 8 and 25 steps,
   resident device memory after loading; ``benchmarks/gpu.py --backend tensorrt`` too when that
   benchmark exists and offers the backend.

Results: ``benchmarks/results/tensorrt_<gpu>.json`` and ``.md`` (machine, versions, command).
``--backend cpu`` runs steps 3-5 on onnxruntime CPU with no TensorRT (a dry run of this script
on any machine; nothing is built and the results file is named ``tensorrt_dryrun_cpu``).
Exit status 1 when any gate fails.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "v2a_export.cli", *args]
    print("$ v2a-export " + " ".join(args), flush=True)
    return subprocess.run(cmd, check=False, text=True, capture_output=True)


def export(variant: str, out: Path, precision: str | None) -> Path:
    root = out / (variant if precision in (None, "fp32") else f"{variant}-{precision}")
    if (root / "manifest.json").is_file():
        return root
    args = ["export", "--variant", variant, "--out", str(root), "--seed", "0", "-q",
            "--encoder-durations", "1,2", "--e2e-duration", "none"]  # fmt: skip
    if precision not in (None, "fp32"):
        args += ["--precision", precision]
    r = run_cli(*args)
    if r.returncode != 0:
        raise SystemExit(f"export {variant} {precision or 'fp32'} failed:\n{r.stdout}{r.stderr}")
    return root


def exporter_offers_precision() -> bool:
    return "--precision" in run_cli("export", "--help").stdout


def build(root: Path, cache: Path) -> dict:
    args = ["build-engines", str(root), "--batch", "1,1,2", "--timing-cache", str(cache)]
    r = run_cli(*args)
    print(r.stdout + r.stderr, flush=True)
    if r.returncode != 0:
        raise SystemExit(f"build-engines {root} failed")
    check = run_cli(*args, "--check")
    return {"output": r.stdout, "check_exit": check.returncode}


# --- parity against the PyTorch fp32 reference ---------------------------------------------


def thresholds(precision: str):
    from v2a_export.export.parity import Threshold

    if precision == "fp32":
        return Threshold(rel_l2=1e-4, max_abs_scale=1e-3), Threshold(rel_l2=1e-3)
    if precision == "tf32":
        return Threshold(rel_l2=5e-3, max_abs_scale=None), Threshold(rel_l2=2e-2)
    return Threshold(rel_l2=4e-2, max_abs_scale=None), Threshold(rel_l2=1e-1)


def parity(root: Path, sessions: dict, backend: str) -> dict:
    from v2a_runtime.bundle import load_bundle

    from v2a_export.export.bundle import bundle_config, validation_source
    from v2a_export.export.descriptors import descriptors
    from v2a_export.export.parity import ParityPlan, check_component
    from v2a_export.export.weights import load_weights
    from v2a_export.export.wrappers import wrap

    m = load_bundle(root).manifest
    config = bundle_config(m)
    loaded = load_weights(config, validation_source(m, m.parity or {}, None))
    rules = config.rates
    q = m.sequence
    durations = (min(2.0, q.max_duration), q.trained_duration)
    out, passed = {}, True
    for name, desc in descriptors(config).items():
        precision = (
            m.components[name].precision if backend == "cpu" else _engine_precision(root, name)
        )
        batches = (1,) if name == "conditioner" else (2, 1)  # the profile's batch ranges
        plan = ParityPlan(durations=durations, batches=batches, encoder_durations=(1.0, 2.0))
        comp = check_component(
            wrap(loaded.networks, name), desc, sessions[name], rules, plan,
            threshold=thresholds(precision)[0],
        )  # fmt: skip
        passed &= comp.passed
        out[name] = {**comp.summary(), "precision": precision, "failures": comp.failures}
        verdict = "pass" if comp.passed else "FAIL"
        print(f"  parity {name:<12} {precision:<5} rel_l2 {comp.worst('rel_l2'):.2e} cos "
              f"{comp.min_cosine():.6f} {verdict}", flush=True)  # fmt: skip
    e2e = end_to_end(root, loaded.networks, backend, thresholds(out["denoiser"]["precision"])[1])
    passed &= e2e["passed"]
    return {"components": out, "end_to_end": e2e, "passed": bool(passed)}


def _engine_precision(root: Path, name: str) -> str:
    from v2a_runtime.backends.tensorrt.cache import read_index
    from v2a_runtime.backends.tensorrt.env import require_tensorrt

    entry = read_index(root).find(name, require_tensorrt().platform)
    return entry.key_fields.precision


def end_to_end(root: Path, nets, backend: str, threshold) -> dict:
    """The runtime pipeline on ``backend`` vs the PyTorch reference pipeline (same x0)."""
    import torch
    from v2a_runtime.config import DEFAULT_SAMPLER
    from v2a_runtime.media import Frames
    from v2a_runtime.pipeline import Pipeline
    from v2a_runtime.tokenizer import Tokenizer

    from v2a_export.export.descriptors import dim_sizes
    from v2a_export.export.parity import Metrics
    from v2a_export.reference import ReferencePipeline

    d, steps, cfg, seed = 2.0, 8, DEFAULT_SAMPLER.cfg, 0
    prompt = "a dog barks twice, then footsteps on gravel"
    config, s = nets.config, nets.config.streams
    n = dim_sizes(config.rates, d)
    rng = np.random.default_rng(seed)
    clip = rng.integers(0, 256, (n["F"], s.clip_size, s.clip_size, 3), dtype=np.uint8)
    sync = rng.integers(0, 256, (int(d * s.sync_fps), s.sync_size, s.sync_size, 3), np.uint8)
    pipe = Pipeline.load(root, backend)
    got = pipe.generate(
        Frames(clip=clip, sync=sync, start=0.0, duration=d), prompt=prompt, seed=seed,
        steps=steps, solver="euler", grid="uniform", cfg=cfg, watermark=False,
    ).audio[0]  # fmt: skip
    ids = torch.from_numpy(Tokenizer.load()([prompt, ""]))
    x0 = np.random.default_rng(seed).standard_normal((n["L"], config.flow.latent_dim), np.float32)
    with torch.no_grad():
        ref = ReferencePipeline(nets).generate(
            torch.from_numpy(clip), torch.from_numpy(sync), ids[:1], ids[1:], duration=d,
            x0=torch.from_numpy(x0)[None], steps=steps, cfg=cfg,
        )  # fmt: skip
    want = ref.waveform[0, : got.shape[0]].clamp(-1.0, 1.0).numpy()
    metrics = Metrics.of(got, want)
    failures = threshold.failures(metrics)
    print(f"  end to end {d:g} s, {steps} Euler steps: waveform rel_l2 {metrics.rel_l2:.2e} "
          f"{'pass' if not failures else 'FAIL'}", flush=True)  # fmt: skip
    _close(pipe.sessions)
    return {"rel_l2": metrics.rel_l2, "cosine": metrics.cosine, "max_abs": metrics.max_abs,
            "threshold_rel_l2": threshold.rel_l2, "passed": not failures}  # fmt: skip


# --- runtime checks and timings --------------------------------------------------------------


def load_sessions(root: Path, backend: str, *, cuda_graph: bool = True) -> dict:
    from v2a_runtime.backends import load_session
    from v2a_runtime.bundle import load_bundle
    from v2a_runtime.config import COMPONENTS

    bundle = load_bundle(root)
    if backend == "cpu":
        return {n: load_session(bundle.path(n)) for n in COMPONENTS}
    from v2a_runtime.backends.tensorrt.session import load_engines

    return load_engines(bundle, cuda_graph=cuda_graph)


def _close(sessions: dict) -> None:
    first = next(iter(sessions.values()))
    if hasattr(first, "shared"):
        first.shared.close()


def runtime_checks(root: Path, sessions: dict, backend: str) -> dict:
    from v2a_runtime.bundle import load_bundle

    from v2a_export.export.descriptors import descriptors_from_manifest

    m = load_bundle(root).manifest
    desc = descriptors_from_manifest(m)["denoiser"]
    sizes = desc.sizes(m.rates, m.sequence.trained_duration, 1)
    out = {}
    if backend != "cpu":
        plain = load_sessions(root, backend, cuda_graph=False)
        equal = all(
            np.array_equal(sessions["denoiser"].run(dict(f))["velocity"],
                           plain["denoiser"].run(dict(f))["velocity"])
            for f in (desc.sample_inputs(sizes, seed=k) for k in range(3))
        )  # fmt: skip
        _close(plain)
        den = sessions["denoiser"]
        out["cuda_graph_active"] = bool(den.use_graph and den.graph_note is None)
        out["cuda_graph_note"] = den.graph_note
        out["cuda_graph_equals_plain"] = bool(equal)
    a = sessions["denoiser"].run(desc.sample_inputs(sizes, seed=0))["velocity"]
    b = sessions["denoiser"].run(desc.sample_inputs(sizes, seed=1))["velocity"]
    out["different_inputs_differ"] = bool(np.abs(a - b).max() > 0)
    return out


def seeds_check(root: Path, backend: str) -> dict:
    from v2a_runtime.frames import VideoArray
    from v2a_runtime.pipeline import Pipeline

    pipe = Pipeline.load(root, backend)
    pixels = np.random.default_rng(0).integers(0, 256, (100, 96, 128, 3), dtype=np.uint8)
    video = VideoArray(pixels, 25.0)
    args = dict(prompt="rain", steps=8, watermark=False)
    a, b = (pipe.generate(video, seed=7, **args).audio for _ in range(2))
    c = pipe.generate(video, seed=8, **args).audio
    _close(pipe.sessions)
    return {"same_seed_same_bits": bool(np.array_equal(a, b)),
            "other_seed_differs": bool(np.abs(a - c).max() > 1e-3)}  # fmt: skip


def timings(root: Path, sessions: dict, backend: str, runs: int) -> dict:
    from v2a_runtime.bundle import load_bundle
    from v2a_runtime.frames import VideoArray
    from v2a_runtime.pipeline import Pipeline

    from v2a_export.export.descriptors import descriptors_from_manifest

    m = load_bundle(root).manifest
    rules, d = m.rates, m.sequence.trained_duration
    out = {"duration": d, "components": {}}
    for name, desc in descriptors_from_manifest(m).items():
        feeds = desc.sample_inputs(desc.sizes(rules, d, 1))
        out["components"][name] = _time(lambda s=sessions[name], f=feeds: s.run(dict(f)), runs)
    if backend != "cpu":
        plain = load_sessions(root, backend, cuda_graph=False)
        desc = descriptors_from_manifest(m)["denoiser"]
        feeds = desc.sample_inputs(desc.sizes(rules, d, 1))
        out["denoiser_step_no_graph"] = _time(lambda: plain["denoiser"].run(dict(feeds)), runs)
        _close(plain)
        out["resident_device_mb"] = resident_mb(root, backend)
    pipe = Pipeline.load(root, backend)
    pixels = np.random.default_rng(1).integers(0, 256, (int(25 * d), 96, 128, 3), np.uint8)
    video = VideoArray(pixels, 25.0)
    for steps in (8, 25):
        totals, stages = [], []
        for i in range(max(3, runs // 4)):
            r = pipe.generate(video, seed=i, steps=steps, watermark=False)
            totals.append(r.timings["total"])
            stages.append(r.timings)
        out[f"generate_{steps}_steps"] = {
            "p50_ms": 1e3 * float(np.median(totals)),
            "p95_ms": 1e3 * float(np.percentile(totals, 95)),
            "stages_p50_ms": {
                k: 1e3 * float(np.median([t[k] for t in stages])) for k in stages[0]
            },  # fmt: skip
        }
    _close(pipe.sessions)
    return out


def _time(fn, runs: int) -> dict:
    fn()  # warm-up (and the CUDA graph capture)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {
        "p50_ms": 1e3 * float(np.median(times)),
        "p95_ms": 1e3 * float(np.percentile(times, 95)),
    }


def resident_mb(root: Path, backend: str) -> float:
    """Device memory held by a loaded engine set (cudaMemGetInfo before and after)."""
    from v2a_runtime.backends.tensorrt.env import import_cudart

    rt = import_cudart()
    before = rt.cudaMemGetInfo()[1]
    sessions = load_sessions(root, backend)
    after = rt.cudaMemGetInfo()[1]
    _close(sessions)
    return (before - after) / 1e6


def gpu_benchmark(root: Path) -> dict | None:
    script = REPO / "benchmarks" / "gpu.py"
    if not script.is_file():
        return None
    help_text = subprocess.run([sys.executable, str(script), "--help"], text=True,
                               capture_output=True, check=False).stdout  # fmt: skip
    if "tensorrt" not in help_text:
        return {"skipped": "benchmarks/gpu.py has no tensorrt backend option"}
    cmd = [sys.executable, str(script), "--bundle", str(root), "--backend", "tensorrt"]
    r = subprocess.run(cmd, text=True, capture_output=True, check=False)
    return {"command": " ".join(cmd), "exit": r.returncode, "output": r.stdout[-4000:]}


# --- main ------------------------------------------------------------------------------------


def machine(backend: str) -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform()}
    if backend != "cpu":
        from v2a_runtime.backends.tensorrt.env import require_tensorrt

        p = require_tensorrt().platform
        info.update(tensorrt=p.tensorrt, gpu=p.gpu, compute_capability=p.compute_capability)
    import onnxruntime

    info["onnxruntime"] = onnxruntime.__version__
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="tiny,small_16k")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "verify_tensorrt")
    ap.add_argument("--backend", choices=("tensorrt", "cpu"), default="tensorrt")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(["python scripts/verify_tensorrt.py", *(argv or sys.argv[1:])]),
              "machine": machine(args.backend), "variants": {}}  # fmt: skip
    precisions = ["fp32"]
    if args.backend != "cpu" and exporter_offers_precision():
        precisions.append("fp16")
    ok = True
    for variant in args.variants.split(","):
        for precision in precisions:
            root = export(variant, args.out, precision)
            label = f"{variant}/{precision}"
            print(f"== {label}: {root}", flush=True)
            entry = {}
            if args.backend != "cpu":
                entry["build"] = build(root, args.out / "timing.cache")
                ok &= entry["build"]["check_exit"] == 0
            sessions = load_sessions(root, args.backend)
            entry["parity"] = parity(root, sessions, args.backend)
            entry["runtime"] = {**runtime_checks(root, sessions, args.backend),
                                **seeds_check(root, args.backend)}  # fmt: skip
            entry["timings"] = timings(root, sessions, args.backend, args.runs)
            _close(sessions)
            if args.backend != "cpu":
                entry["gpu_benchmark"] = gpu_benchmark(root)
            checks = [v for k, v in entry["runtime"].items() if isinstance(v, bool)]
            ok &= entry["parity"]["passed"] and all(checks)
            report["variants"][label] = entry
    write_results(report, args.backend)
    print("ALL CHECKS PASSED" if ok else "SOME CHECKS FAILED", flush=True)
    return 0 if ok else 1


def write_results(report: dict, backend: str) -> None:
    gpu = report["machine"].get("gpu", "dryrun_cpu") if backend != "cpu" else "dryrun_cpu"
    slug = "".join(ch if ch.isalnum() else "_" for ch in gpu.lower()).strip("_")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"tensorrt_{slug}"
    path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# TensorRT verification ({gpu})", "", f"`{report['command']}`", "",
             f"machine: {json.dumps(report['machine'])}", ""]  # fmt: skip
    for label, e in report["variants"].items():
        head = "| component | precision | worst rel_l2 | min cosine | parity | p50 ms | p95 ms |"
        lines += [f"## {label}", "", head, "|---|---|---|---|---|---|---|"]
        for name, p in e["parity"]["components"].items():
            t = e["timings"]["components"][name]
            rel, cos = p["worst_rel_l2"], p["min_cosine"]
            lines.append(
                f"| {name} | {p['precision']} | {_f(rel, '.2e')} | {_f(cos, '.6f')} | "
                f"{'pass' if p['passed'] else 'FAIL'} | {t['p50_ms']:.2f} | {t['p95_ms']:.2f} |"
            )
        e2e = e["parity"]["end_to_end"]
        lines += ["", f"end to end (8 Euler steps, 2 s): waveform rel_l2 {e2e['rel_l2']:.2e} "
                  f"({'pass' if e2e['passed'] else 'FAIL'})"]  # fmt: skip
        for steps in (8, 25):
            g = e["timings"][f"generate_{steps}_steps"]
            lines.append(f"generate {e['timings']['duration']:g} s, {steps} steps: p50 "
                         f"{g['p50_ms']:.1f} ms, p95 {g['p95_ms']:.1f} ms")  # fmt: skip
        if "denoiser_step_no_graph" in e["timings"]:
            lines.append(f"denoiser step without CUDA graph: p50 "
                         f"{e['timings']['denoiser_step_no_graph']['p50_ms']:.2f} ms; resident "
                         f"{e['timings']['resident_device_mb']:.0f} MB")  # fmt: skip
        lines += [f"runtime checks: {json.dumps(e['runtime'])}", ""]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {path}.json and .md", flush=True)


def _f(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


if __name__ == "__main__":
    sys.exit(main())
