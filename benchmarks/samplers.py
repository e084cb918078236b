"""Few-step flow-matching solvers: final-latent error against evaluations, solver × grid.

Two problems, the same measurement:

- **analytic** (always): data from a Gaussian mixture, x_t = (1 − t)·x₀ + t·x₁, so the
  marginal velocity E[x₁ − x₀ | x_t] has a closed form
  (:class:`v2a_runtime.oracles.flow.GaussianMixture`). The reference is a float64 RK4 solve
  with 2000 steps; the solvers run in float32, as in the runtime.
- **network** (``--bundle DIR``): the exported conditioner and denoiser of a bundle
  (docs/contract.md) through onnxruntime, classifier-free guidance 4.5 on the batch
  [cond; uncond], seeded random features as conditions. The reference is a 200-step ``abm3``
  solve of the same seed, cross-checked by a 200-step ``midpoint`` solve.

The error is ‖x − x_ref‖₂ / ‖x_ref‖₂ over the whole final latent (B, L, C). The currency is
evaluations (velocity_fn calls = batched denoiser passes), not steps: each solver gets the
most steps that fit the budget (``steps_for_evaluations``), and a cell shows the count it
used in parentheses when that is below the budget.

- **held out** (``--held-out N --bundle DIR``): the question of issue 14, tuned samplers
  (``v2a-export tune-sampler``) against fixed grids. N conditions never used in tuning: held-out
  scenes of the procedural world from scene 1 000 000 on (the quality benchmark's; tuning uses
  1 005 000… and its gate 1 006 000…) through the bundle's encoders and conditioner for trained
  weights, seeded random encoder features (seed 1000 + ``--seed``; tuning uses 0 and 1) for
  random weights. Reference: Heun with ``--reference-steps`` steps, checked against half as
  many (:mod:`v2a_runtime.tuning.reference`). Every fixed solver × grid and every named sampler
  of the bundle is run on the same noise; the table per budget shows 25-step Euler, the best
  fixed choice and the tuned sampler, errors relative to 25-step Euler's.

Usage::

    python benchmarks/samplers.py                                # analytic problems
    python benchmarks/samplers.py --bundle DIR [--threads 2]     # + the network
    python benchmarks/samplers.py --problems --bundle DIR --held-out 8 --budgets 4 6 8 12

It prints markdown tables and writes ``benchmarks/results/samplers_<tag>.{json,md}`` with the
machine, library versions and the command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from v2a_runtime import guidance, sampling
from v2a_runtime.config import DEFAULT_SAMPLER
from v2a_runtime.oracles.flow import PROBLEMS, random_mixture, relative_error, rk4

RESULTS = Path(__file__).resolve().parent / "results"
BUDGETS = (4, 6, 8, 12, 16, 25, 50)
GRID_SPECS = ("uniform", "shifted", "shifted:shift=3", "logit_normal")

# --- the measurement ----------------------------------------------------------------------


def parse_grid(spec: str) -> tuple[str, dict[str, float]]:
    """'shifted:shift=0.5' -> ('shifted', {'shift': 0.5})."""
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        params[key] = float(value)
    sampling.time_grid(name, 1, **params)  # validates name and parameters
    return name, params


def accuracy_rows(
    velocity_fn: Callable,
    x0: np.ndarray,
    reference: np.ndarray,
    *,
    solvers: Sequence[str] = tuple(sampling.SOLVERS),
    grids: Sequence[str] = GRID_SPECS,
    budgets: Sequence[int] = BUDGETS,
) -> list[dict]:
    """One row per (solver, grid, budget): steps, evaluations used, error vs reference."""
    rows = []
    for solver in solvers:
        for spec in grids:
            name, params = parse_grid(spec)
            for budget in budgets:
                steps = sampling.steps_for_evaluations(solver, budget)
                counted = _Counted(velocity_fn)
                ts = sampling.time_grid(name, steps, **params)
                x = sampling.SOLVERS[solver](counted, x0, ts)
                assert counted.calls == sampling.evaluations(solver, steps)
                rows.append(
                    {
                        "solver": solver,
                        "grid": spec,
                        "budget": budget,
                        "steps": steps,
                        "evaluations": counted.calls,
                        "error": relative_error(x, reference),
                    }
                )
    return rows


class _Counted:
    """A velocity_fn wrapper that counts calls (benchmark bookkeeping only)."""

    def __init__(self, fn: Callable):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


def loop_overhead_us(shape: tuple[int, ...], steps: int = 25, repeats: int = 20) -> dict:
    """Solver time per evaluation (µs) with a free velocity_fn: the loop's own cost."""
    x0 = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    v = -0.5 * x0

    def free(x, t):  # noqa: ARG001 (the contract's signature)
        return v

    out = {}
    for solver, fn in sampling.SOLVERS.items():
        ts = sampling.time_grid("uniform", steps)
        best = min(_timed(fn, free, x0, ts) for _ in range(repeats))
        out[solver] = 1e6 * best / sampling.evaluations(solver, steps)
    return out


def _timed(fn, velocity_fn, x0, ts) -> float:
    start = time.perf_counter()
    fn(velocity_fn, x0, ts)
    return time.perf_counter() - start


def run_analytic(name: str, *, batch=(256, 16), reference_steps=2000, **table) -> dict:
    seed, components, dims, std_range = PROBLEMS[name]
    mix = random_mixture(seed, components, dims, std_range)
    x0 = np.random.default_rng(seed + 1).standard_normal((*batch, dims), dtype=np.float32)
    reference = rk4(mix.velocity, x0, reference_steps)
    check = rk4(mix.velocity, x0, reference_steps // 2)
    ref200 = sampling.abm3(mix.velocity, x0, sampling.time_grid("uniform", 200))
    return {
        "problem": name,
        "description": (
            f"Gaussian mixture, K={components}, C={dims}, stds log-uniform in {std_range}, "
            f"seed {seed}; x0 (B, L, C) = {x0.shape} float32"
        ),
        "reference": f"float64 RK4, {reference_steps} steps",
        "reference_error": relative_error(check, reference),
        "abm3_200_error": relative_error(ref200, reference),
        "rows": accuracy_rows(mix.velocity, x0, reference, **table),
    }


# --- the network problem ------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """A denoiser plus its CFG conditions: everything a network velocity_fn needs."""

    name: str  # "tiny bundle (random weights)", ...
    denoise: Callable[[dict], np.ndarray]  # feeds -> velocity (2B, L, C)
    conditions: dict  # conditioner outputs (contract names), batch 2B = [cond; uncond]
    x0: np.ndarray  # (B, L, C) float32 noise


def condition_features(rng, tracks: int, lengths, widths: dict) -> dict:
    """Seeded conditioner inputs with the encoders' normalisation (clip and text vectors are
    L2-normalised, spec/mmaudio.md §1.3, §1.5), so no video or tokenizer is needed."""
    from v2a_runtime.sequence import sync_index

    def unit(shape):
        f = rng.standard_normal(shape, dtype=np.float32)
        return f / np.linalg.norm(f, axis=-1, keepdims=True)

    return {
        "clip_features": unit((tracks, lengths.clip_frames, widths["clip_features"])),
        "sync_features": rng.standard_normal(
            (tracks, lengths.sync_tokens, widths["sync_features"]), dtype=np.float32
        ),
        "text_features": unit((tracks, 77, widths["text_features"])),
        "negative_text_features": unit((tracks, 77, widths["negative_text_features"])),
        "sync_index": sync_index(lengths.sync_tokens, lengths.latent),
    }


def bundle_network(bundle: Path, *, duration, tracks, seed, threads) -> Network:
    """The conditioner and denoiser graphs of a bundle (docs/contract.md) on onnxruntime CPU."""
    import onnxruntime as ort
    from v2a_runtime.bundle import load_bundle

    loaded = load_bundle(bundle, verify=False)
    manifest = loaded.manifest
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads

    def session(component):
        path = loaded.path(component)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    conditioner, denoiser = session("conditioner"), session("denoiser")
    lengths = manifest.rates.lengths(duration)
    rng = np.random.default_rng(seed)
    widths = {i.name: i.shape[-1] for i in conditioner.get_inputs()}
    names = [o.name for o in conditioner.get_outputs()]
    outputs = conditioner.run(names, condition_features(rng, tracks, lengths, widths))
    shape = (tracks, lengths.latent, manifest.audio.latent_channels)
    model = manifest.model
    return Network(
        name=f"{model.variant} bundle ({model.weights} weights), {duration:g} s",
        denoise=lambda feeds: denoiser.run(["velocity"], feeds)[0],
        conditions=dict(zip(names, outputs, strict=True)),
        x0=rng.standard_normal(shape, dtype=np.float32),
    )


def torch_network(variant: str, *, duration, tracks, seed, threads) -> Network:
    """The project's PyTorch flow network with seeded random weights, called through the same
    two entry points the exported graphs are made from (``conditioner``, ``denoiser``)."""
    import torch

    from v2a_export.models.build import build_module, randomize_
    from v2a_export.models.configs import get_config

    if threads:
        torch.set_num_threads(threads)
    config = get_config(variant)
    flow = randomize_(build_module(config, "flow"), seed).eval()
    lengths = config.rates.lengths(duration)
    widths = {
        "clip_features": config.flow.clip_dim,
        "sync_features": config.flow.sync_dim,
        "text_features": config.flow.text_dim,
        "negative_text_features": config.flow.text_dim,
    }
    rng = np.random.default_rng(seed)
    feeds = condition_features(rng, tracks, lengths, widths)
    names = ("clip_tokens", "text_tokens", "global_cond", "sync_cond", "latent_rope", "clip_rope")
    with torch.no_grad():
        outputs = flow.conditioner(*(torch.from_numpy(a) for a in feeds.values()))

    @torch.no_grad()
    def denoise(feed):
        args = [torch.from_numpy(feed[k]) for k in ("x", "t", *names)]
        return flow.denoiser(*args).numpy()

    shape = (tracks, lengths.latent, config.flow.latent_dim)
    return Network(
        name=f"{variant} torch (random weights, seed {seed}), {duration:g} s",
        denoise=denoise,
        conditions={k: o.numpy() for k, o in zip(names, outputs, strict=True)},
        x0=rng.standard_normal(shape, dtype=np.float32),
    )


def cfg_velocity(net: Network, cfg: float, timings: list[float]) -> Callable:
    """velocity_fn(x, t): one denoiser pass on [x; x] with [cond; uncond], then
    v = w·v_cond + (1 − w)·v_uncond (spec/mmaudio.md §1.7)."""
    tracks = net.x0.shape[0]

    def velocity_fn(x, t):
        start = time.perf_counter()
        feed = {"x": np.concatenate([x, x]), "t": np.full(2 * tracks, t, dtype=np.float32)}
        v = net.denoise({**feed, **net.conditions})  # (2B, L, C)
        out = guidance.combine(v, cfg)  # (B, L, C)
        timings.append(time.perf_counter() - start)
        return out

    return velocity_fn


def run_network(net: Network, *, cfg: float, reference_steps: int = 200, **table) -> dict:
    timings: list[float] = []
    velocity_fn, x0 = cfg_velocity(net, cfg, timings), net.x0
    reference = sampling.abm3(velocity_fn, x0, sampling.time_grid("uniform", reference_steps))
    # The half-step solve's error bounds the reference's (3rd order: about 8x smaller).
    half = sampling.abm3(velocity_fn, x0, sampling.time_grid("uniform", reference_steps // 2))
    eval_ms = 1e3 * float(np.median(timings))
    # How fast v changes in t: a field that changes a lot over Δt = 1e-3 cannot be resolved
    # by any solver at these step sizes (random v2 time embeddings reach frequency 1e4).
    v_t = velocity_fn(x0, 0.5)
    roughness = relative_error(velocity_fn(x0, 0.501), v_t)
    return {
        "problem": f"network: {net.name}",
        "velocity_change_dt_1e-3": roughness,
        "description": f"CFG {cfg:g}, x0 (B, L, C) = {tuple(x0.shape)}",
        "reference": f"abm3, {reference_steps} uniform steps",
        "reference_error": relative_error(half, reference),
        "evaluation_ms": eval_ms,
        "x0_shape": list(x0.shape),
        "rows": accuracy_rows(velocity_fn, x0, reference, **table),
    }


# --- held-out conditions: tuned against fixed ------------------------------------------------

BENCH_FEATURE_SEED = 1000  # random-feature conditions: far from the tuning seeds (0, 1)


def held_out_conditions(pipe, n: int, *, duration: float, seed: int):
    """``n`` benchmark conditions (never used by tune-sampler) as a ConditionSet."""
    from v2a_runtime.tuning import encode_items, random_features

    if pipe.bundle.manifest.model.weights == "random":
        return random_features(pipe, n, duration=duration, seed=BENCH_FEATURE_SEED + seed)
    from v2a_runtime.tuning.calibration import world_items, world_source

    items = world_items(pipe.bundle.manifest.video, n, 0, duration)
    return encode_items(pipe, items, duration=duration, seed=BENCH_FEATURE_SEED + seed,
                        source=world_source(0, n))  # fmt: skip


def run_held_out(bundle: Path, *, n, duration, seed, threads, cfg, reference_steps, **table):
    """Fixed solvers × grids and the bundle's named samplers on ``n`` held-out conditions."""
    from v2a_runtime.pipeline import Pipeline

    pipe = Pipeline.load(bundle, threads=threads)
    m = pipe.bundle.manifest
    duration = m.sequence.trained_duration if duration is None else duration
    conditions = held_out_conditions(pipe, n, duration=duration, seed=seed)
    result = compare_samplers(pipe.sessions["denoiser"], conditions, m.samplers, cfg=cfg,
                              reference_steps=reference_steps, **table)  # fmt: skip
    result["problem"] = f"held out: {m.model.variant} bundle ({m.model.weights} weights)"
    result["default_sampler"] = m.sampler.name
    return result


def run_tuned_graphs(graphs: Path, variant: str, *, n, duration, seed, threads, cfg,
                     reference_steps, tune_args, **table):  # fmt: skip
    """Tune on a conditioner + denoiser pair (``v2a-export export --components
    conditioner,denoiser``, no bundle needed) with random-feature conditions, then compare on
    ``n`` other ones. For random-weight variants whose encoders would see nothing anyway."""
    from v2a_runtime.backends import load_session
    from v2a_runtime.tuning import TuneOptions, batched_inputs, random_conditions, tune

    from v2a_export.models.configs import get_config

    config = get_config(variant)
    session = {c: load_session(graphs / "onnx" / f"{c}.onnx", threads=threads)
               for c in ("conditioner", "denoiser")}  # fmt: skip
    def conditions(count, s):
        return random_conditions(session["conditioner"], config.rates, duration, count,
                                 channels=config.flow.latent_dim,
                                 batched=batched_inputs(session["denoiser"]), seed=s)  # fmt: skip

    cal = conditions(tune_args["calibration"], seed)
    gate = conditions(tune_args["held_out"], seed + 1)
    options = TuneOptions(
        evaluations=tuple(tune_args["evaluations"]),
        cfg=cfg,
        points=tune_args["points"],
        reference_steps=tune_args["reference_steps"],
    )
    result = tune(session["denoiser"], cal, gate, options)
    held = conditions(n, BENCH_FEATURE_SEED + seed)
    out = compare_samplers(session["denoiser"], held, result.samplers, cfg=cfg,
                           reference_steps=reference_steps, **table)  # fmt: skip
    out["problem"] = f"held out: {variant} graphs (random weights), tuned here"
    out["tuning"] = {"evaluations": result.evaluations, "seconds": result.seconds,
                     "calibration_reference_change": result.calibration_reference.change,
                     "gate_reference_change": result.held_out_reference_change,
                     "default": result.default,
                     "candidates": [{"evaluations": c.evaluations, "method": c.method,
                                     "error": c.error} for c in result.candidates]}  # fmt: skip
    return out


def compare_samplers(denoiser, conditions, samplers: dict, *, cfg, reference_steps, **table):
    """Every fixed solver × grid, 25-step Euler and ``samplers`` on ``conditions``, against a
    converged Heun reference of the same noise."""
    from v2a_runtime.backends.host import guided_velocity
    from v2a_runtime.tuning.reference import reference

    feeds = conditions.feeds_for(cfg)
    velocity_fn = guided_velocity(denoiser, feeds, cfg)
    x0 = conditions.x0
    start = time.perf_counter()
    ref = reference(velocity_fn, x0, steps=reference_steps, points=2)
    ref_seconds = time.perf_counter() - start
    rows = accuracy_rows(velocity_fn, x0, ref.endpoint, **table)
    rows += accuracy_rows(velocity_fn, x0, ref.endpoint, solvers=["euler"], grids=["uniform"],
                          budgets=[25])  # fmt: skip
    for name, s in samplers.items():
        x = s.run(velocity_fn, x0)
        rows.append({"solver": s.solver, "grid": f"named:{name}", "budget": s.evaluations,
                     "steps": s.steps, "evaluations": s.evaluations,
                     "error": relative_error(x, ref.endpoint)})  # fmt: skip
    return {
        "problem": "held out",
        "description": f"{conditions.source}, {conditions.duration:g} s, CFG {cfg:g}, noise "
        f"seed {conditions.seed}, x0 (B, L, C) = {tuple(x0.shape)}",
        "reference": ref.describe(),
        "reference_error": ref.change,
        "evaluation_ms": 1e3 * ref_seconds / ref.evaluations,
        "x0_shape": list(x0.shape),
        "samplers": {n: asdict(s) for n, s in samplers.items()},
        "rows": rows,
    }


def tuned_table(result: dict) -> str:
    """Per budget: 25-step Euler, the best fixed solver × grid, the tuned sampler (× Euler-25)."""
    from v2a_runtime.tuning.reference import CONVERGED

    rows = result["rows"]
    (base,) = [r for r in rows if (r["solver"], r["grid"], r["budget"]) == ("euler", "uniform", 25)]
    e25 = base["error"]
    fixed = [r for r in rows if not r["grid"].startswith("named:") and r["budget"] != 25]
    named = [r for r in rows if r["grid"].startswith("named:")]
    lines = [f"25-step Euler (uniform; MMAudio's sampler): {e25:.3e}.", ""]
    smallest = min(r["error"] for r in rows)
    if result["reference_error"] > CONVERGED * smallest:  # the tuner's own rule
        lines += [f"**The reference is not converged**: halving its step moves the endpoint by "
                  f"{result['reference_error']:.1e}, more than {CONVERGED:g} x the smallest error "
                  f"here ({smallest:.1e}); differences of that size are not resolved. Raise "
                  "--reference-steps.", ""]  # fmt: skip
    lines += ["| evaluations | best fixed (solver, grid) | error (x euler-25) | tuned | "
             "error (x euler-25) |", "|---|---|---|---|---|"]  # fmt: skip
    for b in sorted({r["budget"] for r in fixed} | {r["budget"] for r in named}):
        fits = [r for r in fixed if r["budget"] == b]
        cells = ["-", "-"]
        if fits:
            f = min(fits, key=lambda r: r["error"])
            used = "" if f["evaluations"] == b else f", {f['evaluations']} used"
            cells = [f"{f['solver']}, {f['grid']}{used}",
                     f"{f['error']:.3e} ({f['error'] / e25:.2f}x)"]  # fmt: skip
        tuned = [r for r in named if r["budget"] == b]
        for t in tuned or [None]:
            tc = ["-", "-"] if t is None else [
                f"{t['grid'][6:]} ({t['solver']})", f"{t['error']:.3e} ({t['error'] / e25:.2f}x)"
            ]  # fmt: skip
            lines.append(f"| {b} | {cells[0]} | {cells[1]} | {tc[0]} | {tc[1]} |")
    return "\n".join(lines)


# --- reporting ----------------------------------------------------------------------------


def markdown_table(result: dict) -> str:
    rows = [r for r in result["rows"] if not r["grid"].startswith("named:")]
    budgets = sorted({r["budget"] for r in rows})
    head = f"| solver | grid | {' | '.join(str(b) for b in budgets)} |"
    lines = [head, "|" + "---|" * (len(budgets) + 2)]
    keys = list(dict.fromkeys((r["solver"], r["grid"]) for r in rows))
    for solver, grid in keys:
        cells = []
        for b in budgets:
            hit = [r for r in rows if (r["solver"], r["grid"], r["budget"]) == (solver, grid, b)]
            if not hit:
                cells.append("-")
                continue
            r = hit[0]
            used = "" if r["evaluations"] == b else f" ({r['evaluations']})"
            cells.append(f"{r['error']:.2e}{used}")
        lines.append(f"| {solver} | {grid} | {' | '.join(cells)} |")
    return "\n".join(lines)


def summary(result: dict) -> str:
    """Bullets: the best solver × grid at 8 and 12 evaluations, and the default sampler, each
    against MMAudio's 25-step Euler on the uniform grid."""
    rows = result["rows"]

    def find(solver, grid, evaluations):
        hits = [
            r
            for r in rows
            if (r["solver"], r["grid"], r["evaluations"]) == (solver, grid, evaluations)
        ]
        return hits[0] if hits else None

    base = find("euler", "uniform", 25)

    def versus(r):
        if base is None:
            return ""
        verdict = "not worse" if r["error"] <= base["error"] else "WORSE"
        return (
            f" vs 25-step euler {base['error']:.2e}: {verdict} ({r['error'] / base['error']:.2f}x)"
        )

    lines = []
    for budget in (8, 12):
        fits = [r for r in rows if r["budget"] == budget]
        if fits:
            best = min(fits, key=lambda r: r["error"])
            lines.append(
                f"- best at {budget} evaluations: {best['solver']} on {best['grid']} "
                f"({best['evaluations']} used), {best['error']:.2e}{versus(best)}"
            )
    solver, grid, steps = sampling.DEFAULT_SOLVER, sampling.DEFAULT_GRID, sampling.DEFAULT_STEPS
    default = find(solver, grid, sampling.evaluations(solver, steps))
    if default is not None:
        lines.append(
            f"- default ({solver}, {grid}, {steps} steps = {default['evaluations']} evaluations): "
            f"{default['error']:.2e}{versus(default)}"
        )
    return "\n".join(lines)


def environment() -> dict:
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "versions": versions,
        "git_commit": commit,
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", nargs="*", default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument("--bundle", type=Path, help="bundle directory for the network problem")
    ap.add_argument(
        "--torch-variant", help="also run the PyTorch flow network of this variant, random weights"
    )
    ap.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds (network problems) [8; --held-out: the bundle's window]",
    )
    ap.add_argument(
        "--held-out",
        type=int,
        default=None,
        metavar="N",
        help="tuned vs fixed on N held-out conditions of --bundle",
    )
    ap.add_argument("--cfg", type=float, default=DEFAULT_SAMPLER.cfg)
    ap.add_argument(
        "--tune-graphs",
        type=Path,
        default=None,
        metavar="DIR",
        help="tune on DIR/onnx/{conditioner,denoiser}.onnx of --variant, then compare "
        "on --held-out N other conditions (random features)",
    )
    ap.add_argument("--variant", default=None, help="with --tune-graphs")
    ap.add_argument("--tune-calibration", type=int, default=8)
    ap.add_argument("--tune-held-out", type=int, default=4)
    ap.add_argument("--tune-evaluations", nargs="*", type=int, default=[4, 6, 8, 12])
    ap.add_argument("--tune-points", type=int, default=128)
    ap.add_argument("--tune-reference-steps", type=int, default=512)
    ap.add_argument("--tracks", type=int, default=1, help="noise seeds per run (batch B)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads")
    ap.add_argument("--reference-steps", type=int, default=200, help="network reference steps")
    ap.add_argument("--solvers", nargs="*", default=list(sampling.SOLVERS))
    ap.add_argument("--grids", nargs="*", default=list(GRID_SPECS))
    ap.add_argument("--budgets", nargs="*", type=int, default=list(BUDGETS))
    ap.add_argument("--tag", default="analytic", help="results file tag")
    args = ap.parse_args(argv)
    for s in args.solvers:
        sampling.get_solver(s)
    table = {"solvers": args.solvers, "grids": args.grids, "budgets": args.budgets}
    if args.held_out is not None and args.bundle is None and args.tune_graphs is None:
        ap.error("--held-out needs --bundle or --tune-graphs")
    setup = {
        "duration": 8.0 if args.duration is None else args.duration,
        "tracks": args.tracks,
        "seed": args.seed,
        "threads": args.threads,
    }
    nets = []
    if args.bundle is not None and args.held_out is None:
        nets.append(bundle_network(args.bundle, **setup))
    if args.torch_variant is not None:
        nets.append(torch_network(args.torch_variant, **setup))

    results = [run_analytic(p, **table) for p in args.problems]
    if args.tune_graphs is not None:
        tune_args = {"calibration": args.tune_calibration, "held_out": args.tune_held_out,
                     "evaluations": args.tune_evaluations, "points": args.tune_points,
                     "reference_steps": args.tune_reference_steps}  # fmt: skip
        results.append(
            run_tuned_graphs(args.tune_graphs, args.variant, n=args.held_out or 4,
                             duration=args.duration or 1.0, seed=args.seed, threads=args.threads,
                             cfg=args.cfg, reference_steps=args.reference_steps,
                             tune_args=tune_args, **table)
        )  # fmt: skip
    elif args.held_out is not None:
        results.append(
            run_held_out(args.bundle, n=args.held_out, duration=args.duration, seed=args.seed,
                         threads=args.threads, cfg=args.cfg,
                         reference_steps=args.reference_steps, **table)
        )  # fmt: skip
    for net in nets:
        results.append(
            run_network(net, cfg=args.cfg, reference_steps=args.reference_steps, **table)
        )
    shape = tuple(nets[0].x0.shape) if nets else (1, 250, 8)
    overhead = loop_overhead_us(shape)

    md = [f"# Sampler accuracy ({environment()['date']})", ""]
    for r in results:
        md += [
            f"## {r['problem']}: {r['description']}",
            "",
            f"Reference: {r['reference']} (difference to half its steps {r['reference_error']:.1e}"
            + (f"; abm3 with 200 steps: {r['abm3_200_error']:.1e}" if "abm3_200_error" in r else "")
            + ").",
            "",
            *(
                [
                    "Smoothness in t: ‖v(x₀, 0.501) − v(x₀, 0.5)‖ / ‖v(x₀, 0.5)‖ = "
                    f"{r['velocity_change_dt_1e-3']:.1e}.",
                    "",
                ]
                if "velocity_change_dt_1e-3" in r
                else []
            ),
            "Relative L2 error of the final latent; columns are evaluation budgets, "
            "(n) = evaluations used when fewer.",
            "",
            markdown_table(r),
            "",
            summary(r),
            "",
            *([tuned_table(r), ""] if r["problem"].startswith("held out") else []),
        ]
    md += [
        f"Solver loop overhead per evaluation, x {shape} float32 (µs): "
        + ", ".join(f"{k} {v:.1f}" for k, v in overhead.items())
    ]
    for r in results:
        if "evaluation_ms" in r:
            md[-1] += f"; one evaluation of {r['problem']}: {r['evaluation_ms']:.1f} ms"
    env = environment()
    md += [
        "",
        f"Command: `{env['command']}`; machine: {env['machine']}; versions: "
        f"{env['versions']}; commit {env['git_commit']}.",
    ]
    text = "\n".join(md) + "\n"
    print(text)

    tag = args.tag
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {**env, "results": results, "loop_overhead_us": overhead, "shape": list(shape)}
    (RESULTS / f"samplers_{tag}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (RESULTS / f"samplers_{tag}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
