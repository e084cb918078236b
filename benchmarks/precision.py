"""Accuracy of the fp16/bf16 bundles: which nodes stay fp32 and why, per-component error against
the fp32 graphs at two durations, and the end-to-end log-mel error.

    python benchmarks/precision.py --bundle B32 [--targets fp16,bf16] [--torch]
    python benchmarks/precision.py --variant tiny        # exports random weights first
    python benchmarks/precision.py --graphs DIR          # a partial export: flow, VAE, vocoder

``--graphs`` takes ``v2a-export export --components conditioner,denoiser,vae_decoder,vocoder``
output (full-size encoders are too costly to calibrate on a CPU): the conditioner is fed
encoder-like unit-norm features and everything downstream is the real chain
(``precision_calibrate.chain_inputs``); end to end is that chain (conditions → Euler → VAE →
vocoder) instead of the whole pipeline.

1. The fp32 bundle is converted (``convert_bundle``: calibration through the runtime pipeline
   on rendered procedural-world clips of ``--calibration`` seconds).
2. Evaluation inputs are recorded the same way but from other clips, prompts and durations
   (``--eval-durations``, seed 100): every component is fed what the pipeline feeds it (the
   denoiser: the real conditions and the states x_t along an Euler trajectory).
3. Per component and duration, the low-precision graph under onnxruntime CPU (fp16 only; no
   bf16 CPU kernels) and its emulation twin (per-op rounding, precision_graph.emulate) are
   compared with the fp32 graph: max / median / p99 |error|, relative L2, cosine, worst over
   the feeds. (The fp32 graphs match PyTorch fp32 to ~1e-6 relative: the export gate.)
4. End to end: ``Pipeline.generate`` (``--e2e-duration`` s, Euler ``--e2e-steps``, CFG 4.5, no
   watermark) on the fp32 bundle vs the low-precision bundle (graphs, and twins): waveform
   relative L2 and the log-mel error in dB (mean / p99 / max over bins within 80 dB of the
   peak). With ``--torch`` also against the PyTorch fp32 reference pipeline (random-weight
   bundles only: the networks are rebuilt from the recorded seed).

Writes ``benchmarks/results/precision_<variant>.{json,md}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
from v2a_runtime.backends import load_session
from v2a_runtime.bundle import load_bundle
from v2a_runtime.config import COMPONENTS, DEFAULT_SAMPLER
from v2a_runtime.pipeline import Pipeline

from v2a_export.export.parity import Metrics, jsonable
from v2a_export.export.precision.bundle import convert_bundle
from v2a_export.export.precision.calibrate import (
    CHAIN,
    CalibrationPlan,
    calibration_inputs,
    chain_inputs,
    chain_run,
    rendered_frames,
)
from v2a_export.export.precision.convert import convert_graph
from v2a_export.export.precision.gate import TwinSession, mel_error_db
from v2a_export.export.precision.policy import PrecisionPolicy

RESULTS = Path(__file__).resolve().parent / "results"
CFG = DEFAULT_SAMPLER.cfg  # MMAudio's guidance weight
EVAL_SEED = 100
PROMPT = ("a metal pan clatters on a stone floor, then rain", "")


def component_errors(args, fp32: Path, bundles: dict[str, Path], evals) -> list[dict]:
    rows = []
    for name in args.components:
        ref = load_session(fp32 / "onnx" / f"{name}.onnx", threads=args.threads)
        for target, root in bundles.items():
            path = root / "onnx" / f"{name}.onnx"
            sessions = {"emulated": TwinSession.load(path, threads=args.threads)}
            if target == "fp16":
                sessions["graph"] = load_session(path, threads=args.threads)
            for duration, feeds in evals.items():
                for kind, session in sessions.items():
                    worst: dict[str, Metrics] = {}
                    for feed in feeds[name]:
                        want, got = ref.run(feed), session.run(feed)
                        for out in want:
                            m = Metrics.of(got[out], want[out])
                            old = worst.get(out)
                            if old is None or not m.finite or m.rel_l2 > old.rel_l2:
                                worst[out] = m
                    for out, m in worst.items():
                        rows.append({"component": name, "target": target, "run": kind,
                                     "duration": duration, "output": out, "feeds": len(feeds[name]),
                                     **asdict(m)})  # fmt: skip
            del sessions
            gc.collect()
        del ref
    return rows


def end_to_end(args, fp32: Path, bundles: dict[str, Path]) -> list[dict]:
    video = load_bundle(fp32, verify=False).manifest.video
    frames = rendered_frames(EVAL_SEED + 7, args.e2e_duration, video)
    kw = dict(prompt=PROMPT[0], negative_prompt=PROMPT[1], seed=EVAL_SEED, steps=args.e2e_steps,
              solver="euler", grid="uniform", cfg=CFG, watermark=False)  # fmt: skip

    def audio(pipe) -> np.ndarray:
        return pipe.generate(frames, **kw).audio[0]

    pipe = Pipeline.load(fp32, threads=args.threads)
    want = audio(pipe)
    sr = pipe.bundle.manifest.audio.sample_rate
    del pipe
    gc.collect()
    runs = {}
    for target, root in bundles.items():
        if target == "fp16":
            pipe = Pipeline.load(root, threads=args.threads)
            runs[(target, "graph")] = audio(pipe)
            del pipe
        base = Pipeline.load(fp32, threads=args.threads)
        twins = {n: TwinSession.load(root / "onnx" / f"{n}.onnx", threads=args.threads)
                 for n in COMPONENTS}  # fmt: skip
        runs[(target, "emulated")] = audio(base.with_sessions(**twins))
        del base, twins
        gc.collect()
    rows = [_e2e_row(t, k, "fp32 bundle (onnxruntime)", got, want, sr, args)
            for (t, k), got in runs.items()]  # fmt: skip
    if args.torch:
        rows += _against_torch(args, fp32, frames, runs, sr)
    return rows


def _e2e_row(target, kind, reference, got, want, sr, args) -> dict:
    m = Metrics.of(got, want)
    mel = mel_error_db(got, want, sr)
    return {"target": target, "run": kind, "reference": reference, "duration": args.e2e_duration,
            "steps": args.e2e_steps, "waveform_rel_l2": m.rel_l2, "waveform_cosine": m.cosine,
            "finite": m.finite, "mel_mean_db": mel.mean_db, "mel_p99_db": mel.p99_db,
            "mel_max_db": mel.max_db, "mel_bins": mel.bins}  # fmt: skip


def _against_torch(args, fp32: Path, frames, runs, sr) -> list[dict]:
    import torch
    from v2a_runtime.tokenizer import Tokenizer

    from v2a_export.export.weights import WeightSource, load_weights
    from v2a_export.models.configs import ModelConfig
    from v2a_export.reference import ReferencePipeline

    manifest = load_bundle(fp32, verify=False).manifest
    seed = ((manifest.parity or {}).get("reference") or {}).get("seed")
    if manifest.model.weights != "random" or not isinstance(seed, int):
        return []
    config = ModelConfig.from_manifest(manifest)
    nets = load_weights(config, WeightSource(seed=seed)).networks
    ids = torch.from_numpy(Tokenizer.load()(list(PROMPT)))
    n = ReferencePipeline(nets).lengths(frames.duration)
    x0 = np.random.default_rng(EVAL_SEED).standard_normal((n.latent, config.flow.latent_dim),
                                                          dtype=np.float32)  # fmt: skip
    with torch.inference_mode():
        ref = ReferencePipeline(nets).generate(
            torch.from_numpy(frames.clip), torch.from_numpy(frames.sync), ids[:1], ids[1:],
            duration=frames.duration, x0=torch.from_numpy(x0)[None], steps=args.e2e_steps,
            cfg=CFG,
        )  # fmt: skip
    want = ref.waveform[0].clamp(-1, 1).numpy()
    rows = []
    for (t, k), got in runs.items():
        rows.append(_e2e_row(t, k, "PyTorch fp32 reference", got, want[: got.shape[0]], sr, args))
    return rows


def convert_partial(args, graphs: Path, config, calib, work: Path):
    feeds = chain_inputs(graphs, config, calib, threads=args.threads)
    bundles, conversion = {}, {}
    for target in args.targets:
        out = work / target
        (out / "onnx").mkdir(parents=True, exist_ok=True)
        conversion[target] = {}
        for name in CHAIN:
            model = onnx.load(str(graphs / "onnx" / f"{name}.onnx"))
            converted, report = convert_graph(model, PrecisionPolicy(target), feeds=feeds[name],
                                              threads=args.threads)  # fmt: skip
            onnx.save_model(converted, str(out / "onnx" / f"{name}.onnx"))
            conversion[target][name] = report.to_dict()
            del model, converted
            gc.collect()
        bundles[target] = out
    return bundles, conversion


def end_to_end_partial(args, graphs: Path, config, bundles: dict[str, Path]) -> list[dict]:
    from v2a_export.export.descriptors import descriptors

    desc = descriptors(config)["conditioner"]
    sizes = desc.sizes(config.rates, args.e2e_duration)
    cond_in = desc.sample_inputs(sizes, seed=EVAL_SEED)
    x = np.random.default_rng(EVAL_SEED).standard_normal((1, sizes["L"], config.flow.latent_dim),
                                                         dtype=np.float32)  # fmt: skip

    def wave(make) -> np.ndarray:
        sessions = {n: make(n) for n in CHAIN}
        out = chain_run(sessions, cond_in, x, args.e2e_steps, CFG)[0][0]
        del sessions
        gc.collect()
        return out

    want = wave(lambda n: load_session(graphs / "onnx" / f"{n}.onnx", threads=args.threads))
    rows = []
    for target, root in bundles.items():
        path = root / "onnx"
        if target == "fp16":
            got = wave(lambda n, p=path: load_session(p / f"{n}.onnx", threads=args.threads))
            rows.append(_e2e_row(target, "graph", "fp32 graphs (onnxruntime), conditioner → "
                                 "vocoder", got, want, config.sample_rate, args))  # fmt: skip
        got = wave(lambda n, p=path: TwinSession.load(p / f"{n}.onnx", threads=args.threads))
        rows.append(_e2e_row(target, "emulated", "fp32 graphs (onnxruntime), conditioner → "
                             "vocoder", got, want, config.sample_rate, args))  # fmt: skip
    return rows


def markdown(report: dict) -> str:
    c = report["config"]
    out = [f"### Mixed precision, {c['variant']} ({c['weights']} weights)", ""]
    out += ["fp32 nodes per component (of the float nodes), by reason; Casts added:", ""]
    out += ["| target | component | float nodes | low | fp32 | casts | fp32 by reason |",
            "|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for target, comps in report["conversion"].items():
        for name, r in comps.items():
            reasons = ", ".join(f"{k} {v}" for k, v in r["fp32_by_reason"].items())
            out.append(f"| {target} | {name} | {r['float_nodes']} | {r['low_nodes']} | "
                       f"{len(r['fp32_nodes'])} | {r['casts']} | {reasons} |")  # fmt: skip
    out += ["", "Per component vs the fp32 graph (worst feed; `graph` = the low-precision graph "
            "under onnxruntime CPU, `emulated` = its twin with per-op rounding):", "",
            "| target | component | output | s | run | cosine | rel L2 | max abs | p99 abs |"
            " median abs |", "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in report["components"]:
        out.append(
            f"| {r['target']} | {r['component']} | {r['output']} | {r['duration']:g} | {r['run']}"
            f" | {r['cosine']:.6f} | {r['rel_l2']:.2e} | {r['max_abs']:.2e} | {r['p99_abs']:.2e}"
            f" | {r['median_abs']:.2e} |"
        )
    out += ["", f"End to end ({c['e2e_duration']:g} s, {c['e2e_steps']} Euler steps, CFG 4.5):",
            "", "| target | run | reference | waveform rel L2 | log-mel mean dB | p99 dB |"
            " max dB |", "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in report["end_to_end"]:
        out.append(
            f"| {r['target']} | {r['run']} | {r['reference']} | {r['waveform_rel_l2']:.2e}"
            f" | {r['mel_mean_db']:.3f} | {r['mel_p99_db']:.3f} | {r['mel_max_db']:.3f} |"
        )
    out += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="fp32 bundle (default: export --variant, random weights)")
    ap.add_argument("--graphs", help="a partial export (conditioner, denoiser, vae, vocoder)")
    ap.add_argument("--variant", default="tiny")
    ap.add_argument("--targets", default="fp16,bf16")
    ap.add_argument("--calibration", default="2,8")
    ap.add_argument("--calibration-steps", type=int, default=8)
    ap.add_argument("--eval-durations", default="3,9")
    ap.add_argument("--eval-steps", type=int, default=4)
    ap.add_argument("--e2e-duration", type=float, default=8.0)
    ap.add_argument("--e2e-steps", type=int, default=25)
    ap.add_argument("--components", default=",".join(COMPONENTS))
    ap.add_argument("--torch", action="store_true", help="also end to end vs PyTorch fp32")
    ap.add_argument("--keep", help="keep the converted bundles under this directory")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", help="output stem (default benchmarks/results/precision_<variant>)")
    args = ap.parse_args(argv)
    args.components = [c for c in args.components.split(",") if c]
    args.targets = [t for t in args.targets.split(",") if t]
    started = time.perf_counter()
    calib = CalibrationPlan(durations=_floats(args.calibration), steps=args.calibration_steps)
    with tempfile.TemporaryDirectory(prefix="v2a-precision-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        run = _run_partial if args.graphs else _run_bundle
        variant, weights, conversion, evals, rows, e2e = run(args, calib, work)
    report = {
        "command": " ".join(["benchmarks/precision.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "config": {"variant": variant, "weights": weights, "partial": bool(args.graphs),
                   "calibration": asdict(calib), "eval_durations": list(evals),
                   "e2e_duration": args.e2e_duration, "e2e_steps": args.e2e_steps,
                   "seconds": round(time.perf_counter() - started, 1)},
        "conversion": conversion,
        "components": rows,
        "end_to_end": e2e,
    }  # fmt: skip
    stem = Path(args.out) if args.out else RESULTS / f"precision_{variant}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(jsonable(report), indent=2) + "\n")
    text = markdown(report)
    stem.with_suffix(".md").write_text(text)
    print(text)
    return 0


def _run_bundle(args, calib, work: Path):
    fp32 = Path(args.bundle) if args.bundle else _export(args, work)
    manifest = load_bundle(fp32).manifest
    bundles, conversion = {}, {}
    for target in args.targets:
        out = work / f"{manifest.model.variant}_{target}"
        result = convert_bundle(fp32, out, PrecisionPolicy(target), calib, threads=args.threads)
        bundles[target] = out
        conversion[target] = {n: r.to_dict() for n, r in result.components.items()}
        print(f"converted to {target} in {result.seconds:.0f} s", file=sys.stderr)
    evals = {}
    for k, d in enumerate(_floats(args.eval_durations)):
        plan = CalibrationPlan(durations=(d,), steps=args.eval_steps, seed=EVAL_SEED + k,
                               max_feeds=3)  # fmt: skip
        evals[d] = calibration_inputs(fp32, plan, threads=args.threads)
    rows = component_errors(args, fp32, bundles, evals)
    e2e = end_to_end(args, fp32, bundles)
    return manifest.model.variant, manifest.model.weights, conversion, evals, rows, e2e


def _run_partial(args, calib, work: Path):
    from v2a_export.models.configs import get_config

    fp32 = Path(args.graphs)
    meta = json.loads((fp32 / "reports" / "export.json").read_text())
    config = get_config(meta["variant"])  # a partial export has no manifest
    args.components = [c for c in args.components if c in CHAIN]
    bundles, conversion = convert_partial(args, fp32, config, calib, work)
    evals = {}
    for k, d in enumerate(_floats(args.eval_durations)):
        plan = CalibrationPlan(durations=(d,), steps=args.eval_steps, seed=EVAL_SEED + k,
                               max_feeds=3)  # fmt: skip
        evals[d] = chain_inputs(fp32, config, plan, threads=args.threads)
    rows = component_errors(args, fp32, bundles, evals)
    e2e = end_to_end_partial(args, fp32, config, bundles)
    return config.name, meta.get("weights", "random"), conversion, evals, rows, e2e


def _export(args, work: Path) -> Path:
    from v2a_export.export.bundle import ExportOptions, export_bundle
    from v2a_export.export.parity import ParityPlan
    from v2a_export.export.weights import WeightSource
    from v2a_export.models.configs import get_config

    out = work / f"{args.variant}_fp32"
    plan = ParityPlan(durations=(2.0, 5.0), batches=(1,), e2e_duration=None)
    export_bundle(get_config(args.variant), WeightSource(seed=0), out,
                  ExportOptions(plan=plan, threads=args.threads))  # fmt: skip
    return out


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


if __name__ == "__main__":
    raise SystemExit(main())
