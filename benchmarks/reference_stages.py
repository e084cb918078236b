"""Latency of the eager PyTorch reference: one denoiser step, and every stage end to end.

The reference (``v2a_export.reference``) is the baseline of every speed ratio in this project,
so this script times it the same way each time: random fixture-style weights of a variant
(default ``tiny``), a synthetic video of ``--duration`` seconds, seeded.

- **denoiser step**: one ``MMAudio.denoiser`` call on the CFG batch [cond; uncond] (B = 2),
  the unit of work of every sampling step;
- **stages**: ``ReferencePipeline.generate`` with its per-stage callback: encoders,
  conditions, sampling (``--steps`` Euler steps, two sequential passes each, as upstream),
  vae, vocoder.

Usage::

    python benchmarks/reference_stages.py                       # tiny, 8 s, CPU
    python benchmarks/reference_stages.py --variant small_16k --device cuda

Prints a markdown table and writes ``benchmarks/results/reference_<variant>_<device>.{json,md}``
(machine, library versions, command, p50/p95 per stage). Absolute CPU times on a shared machine
are noise; quote ratios, or absolute times from a GPU run with the GPU named.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from v2a_export.models.build import build_networks
from v2a_export.models.configs import VARIANTS, get_config
from v2a_export.reference import ReferencePipeline

RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("encoders", "conditions", "sampling", "vae", "vocoder")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def _inputs(pipe: ReferencePipeline, duration: float, seed: int):
    seq = pipe.lengths(duration)
    s = pipe.config.streams
    gen = torch.Generator().manual_seed(seed)
    clip = torch.randint(
        0, 256, (seq.clip_frames, s.clip_size, s.clip_size, 3), generator=gen, dtype=torch.uint8
    )
    sync = torch.randint(
        0, 256, (seq.sync_frames, s.sync_size, s.sync_size, 3), generator=gen, dtype=torch.uint8
    )
    prompt = torch.zeros(1, 77, dtype=torch.int64)
    prompt[0, :4] = torch.tensor([49406, 320, 1929, 49407])  # "a dog"
    negative = torch.zeros(1, 77, dtype=torch.int64)
    negative[0, :2] = torch.tensor([49406, 49407])  # ""
    return seq, (clip, sync, prompt, negative)


@torch.no_grad()
def time_denoiser_step(pipe: ReferencePipeline, duration: float, reps: int) -> list[float]:
    seq, (clip, sync, prompt, negative) = _inputs(pipe, duration, seed=0)
    flow, dev = pipe.nets.flow, pipe.device
    feats = pipe.encode(clip, sync, prompt, negative)
    idx = flow.sync_index(feats.sync.shape[1], seq.latent)
    conds = flow.conditioner(feats.clip, feats.sync, feats.text, feats.negative_text, idx)
    x = torch.randn(2, seq.latent, pipe.config.flow.latent_dim, device=dev)
    t = torch.full((2,), 0.5, device=dev)
    for _ in range(3):  # warm-up
        flow.denoiser(x, t, *conds)
    times = []
    for _ in range(reps):
        _sync(dev)
        start = time.perf_counter()
        flow.denoiser(x, t, *conds)
        _sync(dev)
        times.append(time.perf_counter() - start)
    return times


def time_stages(pipe: ReferencePipeline, duration: float, steps: int, runs: int):
    _, inputs = _inputs(pipe, duration, seed=1)
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    totals = []
    for run in range(runs + 1):  # run 0 warms up
        seen: dict[str, float] = {}

        def on_stage(name: str, sec: float, seen=seen) -> None:
            _sync(pipe.device)
            seen[name] = sec

        _sync(pipe.device)
        start = time.perf_counter()
        pipe.generate(*inputs, duration=duration, seed=run, steps=steps, on_stage=on_stage)
        _sync(pipe.device)
        if run:
            totals.append(time.perf_counter() - start)
            for name in STAGES:
                per_stage[name].append(seen[name])
    return per_stage, totals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="tiny", choices=sorted(VARIANTS))
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--reps", type=int, default=50, help="denoiser-step repetitions")
    ap.add_argument("--runs", type=int, default=3, help="end-to-end runs after one warm-up")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pipe = ReferencePipeline(build_networks(get_config(args.variant), device=device, seed=0))

    step = time_denoiser_step(pipe, args.duration, args.reps)
    per_stage, totals = time_stages(pipe, args.duration, args.steps, args.runs)
    rows = [("denoiser step (B=2)", step)] + [(s, per_stage[s]) for s in STAGES]
    rows.append(("end to end", totals))
    seq = pipe.lengths(args.duration)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    title = (
        f"Reference latency, {args.variant}, {args.duration:g} s (L {seq.latent}), "
        f"{args.steps} steps, CFG 4.5, {gpu or f'CPU x{torch.get_num_threads()} threads'}"
    )
    lines = [f"### {title}", "", "| stage | p50 ms | p95 ms |", "|---|---:|---:|"]
    lines += [
        f"| {name} | {1e3 * statistics.median(xs):.1f} | {1e3 * _pct(xs, 0.95):.1f} |"
        for name, xs in rows
    ]
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"reference_{args.variant}_{device.type}"
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "gpu": gpu,
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "variant": args.variant,
        "duration": args.duration,
        "steps": args.steps,
        "latent": seq.latent,
        "stages_ms": {
            name: {"p50": 1e3 * statistics.median(xs), "p95": 1e3 * _pct(xs, 0.95), "n": len(xs)}
            for name, xs in rows
        },
    }
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table + f"\n\nCommand: `{record['command']}`\n")


if __name__ == "__main__":
    main()
