"""int8 bundles: quantize an fp32 bundle where measurement says it pays, gate it, write it.

:func:`convert_bundle_int8` follows :func:`.bundle.convert_bundle` and reuses its parts:

1. **calibrate** (:func:`.calibrate.calibration_inputs`): the runtime pipeline on the fp32
   bundle, on rendered world scenes or the user's own videos; every component's real feeds;
2. **hold out**: the same pipeline on another scene (other seed, prompt, noise), recording
   the feeds the gate uses and the fp32 soundtrack the end-to-end check compares with;
3. per component, **quantize** (:func:`.quantize.quantize_graph`: measured float islands under
   the error budget), **gate** the int8 graph against its fp32 graph on the held-out feeds
   (:func:`.gate.int8_checks`) and, with ``policy.require_speedup``, **time** both on one
   held-out feed (a video encoder on one frame or segment; interleaved, best of
   :data:`TIMING_REPS`, always at one thread and in process CPU time, whatever ``threads``
   the gate runs with: on a shared machine a call's wall time mostly says when it got a core).
   A component is int8 only if it has int8 nodes, passes the gate and (when required) is
   ``policy.min_speedup`` times as fast; otherwise it stays fp32 and the reason is recorded: a
   bundle may be mixed (int8 encoders, fp32 vocoder);
4. **end to end**: the runtime pipeline on the new bundle against the fp32 soundtrack of the
   held-out clip, log-mel error gated at :data:`.gate.MEL_DB_GATE`; while it fails, the int8
   component with the largest held-out error goes back to fp32.

The manifest says each component's ``precision`` (``int8`` or ``fp32``) and lists the heavy
nodes an int8 graph keeps float as ``"<node>: <reason>"``; its parity section keeps the fp32
bundle's record (the fp32 graphs against PyTorch) and adds ``int8``: per component the
decision, the reason and the held-out numbers, and the end-to-end error.
``reports/precision.json`` has everything (policy, calibration and held-out plans, every
node's measured error, the timing).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from v2a_runtime.bundle import load_bundle, write_manifest
from v2a_runtime.config import COMPONENTS, check_components

from v2a_export.export.bundle import Event, replace_dir, write_json
from v2a_export.export.parity import jsonable
from v2a_export.export.precision.bundle import (
    PRECISION_REPORT,
    Callback,
    copy_component,
    load_fp32_bundle,
    save_component,
)
from v2a_export.export.precision.calibrate import (
    CalibrationPlan,
    Clip,
    calibration_inputs,
    cpu_session,
    record_pipeline,
    rendered_frames,
)
from v2a_export.export.precision.gate import (
    MEL_DB_GATE,
    Int8Check,
    MelError,
    int8_checks,
    mel_error_db,
)
from v2a_export.export.precision.policy import Int8Policy
from v2a_export.export.precision.quantize import Int8Graph, quantize_graph

TIMING_REPS = 3
HELD_OUT_SEED = 1_000_500  # a world scene no calibration plan and no quality benchmark uses
HELD_OUT_PROMPT = ("a metal pan clatters on a stone floor, then rain", "wind noise")


@dataclass(frozen=True)
class HeldOutPlan:
    """The clip the gate runs on: a world scene no calibration used, another prompt and
    noise. ``duration`` also sets the end-to-end check's length."""

    duration: float = 8.0
    steps: int = 8  # Euler steps
    cfg: float = 4.5
    seed: int = HELD_OUT_SEED
    prompt: tuple[str, str] = HELD_OUT_PROMPT
    max_feeds: int = 4  # per component, spread over the recorded calls
    encoder_items: int | None = 8  # frames (clip) / segments (sync) gated; None: the clip's all

    def __post_init__(self) -> None:
        if not self.duration > 0 or self.steps < 1 or self.max_feeds < 1:
            raise ValueError(
                f"held-out plan needs duration > 0, steps >= 1 and max_feeds >= 1, got "
                f"{self.duration}/{self.steps}/{self.max_feeds}"
            )


@dataclass(frozen=True)
class Decision:
    """Why a component ended int8 or fp32, with the held-out numbers."""

    precision: str  # "int8" | "fp32"
    reason: str
    checks: tuple[Int8Check, ...] = ()
    fp32_ms: float | None = None
    int8_ms: float | None = None

    def worst(self) -> dict:
        if not self.checks:
            return {}
        rows = [c.row_cosine for c in self.checks if c.row_cosine is not None]
        return {
            "rel_l2": max(c.rel_l2 for c in self.checks),
            "cosine": min(c.cosine for c in self.checks),
            **({"feature_cosine": min(rows)} if rows else {}),
        }


@dataclass(frozen=True)
class Int8Result:
    root: Path
    policy: Int8Policy
    components: dict[str, Int8Graph]
    decisions: dict[str, Decision]
    mel: MelError | None
    calibration: CalibrationPlan
    held_out: HeldOutPlan
    seconds: float

    @property
    def passed(self) -> bool:
        return self.mel is None or self.mel.mean_db <= MEL_DB_GATE


def convert_bundle_int8(
    src: str | Path,
    out: str | Path,
    policy: Int8Policy,
    calibration: CalibrationPlan | None = None,
    held_out: HeldOutPlan | None = None,
    *,
    components: tuple[str, ...] = COMPONENTS,
    threads: int | None = None,
    callback: Callback | None = None,
) -> Int8Result:
    """Quantize ``components`` of the fp32 bundle ``src`` where the gate allows; write ``out``."""
    started = time.perf_counter()
    calibration = calibration or CalibrationPlan()
    held_out = held_out or HeldOutPlan()
    src, out = Path(src), Path(out)
    emit = callback or (lambda _e: None)
    check_components(components)
    bundle = load_fp32_bundle(src, "quantize")
    manifest = bundle.manifest
    if out.exists() and out.resolve() == src.resolve():
        raise ValueError("int8 gates against the fp32 graphs: --out must be a new directory")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output {out} exists and is not empty; choose a new directory")
    emit(Event("calibration", "calibrate", 0, 2))
    feeds = calibration_inputs(src, calibration, threads=threads)
    emit(Event("calibration", "calibrate", 1, 2))
    gate_feeds, fp32_audio, clip = _held_out(src, held_out, threads)
    emit(Event("calibration", "calibrate", 2, 2))
    reports: dict[str, Int8Graph] = {}
    decisions: dict[str, Decision] = {}
    models: dict[str, onnx.ModelProto] = {}
    for name in components:
        emit(Event(name, "quantize", 0, 1))
        fp32 = onnx.load(str(bundle.path(name)))
        model, reports[name] = quantize_graph(fp32, policy, feeds=feeds[name], threads=threads)
        decisions[name] = _decide(name, fp32, model, reports[name], gate_feeds[name], policy,
                                  threads)  # fmt: skip
        if decisions[name].precision == "int8":
            models[name] = model
        emit(Event(name, "quantize", 1, 1))
    work = out.parent / f".{out.name}.int8-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    mel = None
    try:
        shutil.copytree(src, work, ignore=shutil.ignore_patterns("*.onnx", "*.onnx.data"))
        (work / "onnx").mkdir(exist_ok=True)
        while True:
            _write(src, work, manifest, models, reports)
            if not models:
                break
            emit(Event("end_to_end", "gate", 0, 1))
            mel = _end_to_end(work, clip, fp32_audio, held_out, threads)
            emit(Event("end_to_end", "gate", 1, 1))
            if mel.mean_db <= MEL_DB_GATE:
                break
            worst = max(models, key=lambda n: decisions[n].worst()["rel_l2"])
            decisions[worst] = replace(
                decisions[worst],
                precision="fp32",
                reason=f"end-to-end gate: log-mel error {mel.mean_db:.2f} dB > {MEL_DB_GATE:g}"
                " dB with it int8 (largest held-out error)",
            )
            del models[worst]
        result = Int8Result(out, policy, reports, decisions, mel, calibration, held_out,
                            time.perf_counter() - started)  # fmt: skip
        _record(work, manifest, result, feeds, gate_feeds)
        replace_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return replace(result, seconds=time.perf_counter() - started)


def _held_out(src: Path, plan: HeldOutPlan, threads):
    """({component: feeds}, the fp32 soundtrack (W,), the Clip) of the held-out scene."""
    from v2a_runtime.pipeline import Pipeline

    pipe = Pipeline.load(src, threads=threads)
    frames = rendered_frames(plan.seed, plan.duration, pipe.bundle.manifest.video)
    clip = Clip(frames, *plan.prompt, seed=plan.seed)
    feeds, audio = record_pipeline(pipe, [clip], steps=plan.steps, cfg=plan.cfg)
    spread = {n: [_items(n, x, plan.encoder_items) for x in _spread(f, plan.max_feeds)]
              for n, f in feeds.items()}  # fmt: skip
    return spread, audio[0], clip


def _items(name: str, feed: dict, n: int | None) -> dict:
    """The first ``n`` frames (segments) of a video encoder's feed: a full-size encoder costs
    about a TFLOP per frame, and its frames are encoded independently."""
    if name in ("clip_visual", "sync_visual") and n:
        return {k: v[:n] for k, v in feed.items()}  # (F | S, ...)
    return feed


def _spread(feeds: list, n: int) -> list:
    if len(feeds) <= n:
        return feeds
    picks = np.linspace(0, len(feeds) - 1, n).round().astype(int)
    return [feeds[i] for i in sorted(set(picks.tolist()))]


def _decide(name, fp32, model, report: Int8Graph, feeds, policy: Int8Policy, threads) -> Decision:
    if not report.int8_nodes:
        why = "no quantizable node" if not report.node_errors else "no node within the budget"
        return Decision("fp32", why)
    ref, q = cpu_session(fp32, threads), cpu_session(model, threads)
    checks = int8_checks(ref, q, feeds)
    failures = [f for c in checks for f in c.failures()]
    if failures:
        return Decision("fp32", "held-out gate: " + "; ".join(failures), checks)
    if not policy.require_speedup:
        return Decision("int8", "passes the held-out gate (speed not checked)", checks)
    if threads != 1:  # timed at one thread in CPU time (on a shared CPU, wall time is noise)
        ref, q = cpu_session(fp32, 1), cpu_session(model, 1)
    fp32_s, int8_s = time_pair(ref, q, _items(name, feeds[0], 1), threads=1)
    detail = f"{1e3 * int8_s:.1f} ms vs {1e3 * fp32_s:.1f} ms fp32"
    if fp32_s < policy.min_speedup * int8_s:
        return Decision("fp32", f"int8 not faster on this CPU by {policy.min_speedup:g}x: "
                        f"{fp32_s / int8_s:.2f}x ({detail})", checks,
                        1e3 * fp32_s, 1e3 * int8_s)  # fmt: skip
    return Decision("int8", f"passes the held-out gate; {fp32_s / int8_s:.2f}x faster ({detail})",
                    checks, 1e3 * fp32_s, 1e3 * int8_s)  # fmt: skip


def time_pair(a, b, feed, reps: int = TIMING_REPS, *, threads: int | None = None):
    """Best-of-``reps`` seconds of sessions ``a`` and ``b`` on ``feed``, run interleaved (the
    order alternating) after one untimed run each, so load drifts hit both. At one thread the
    process CPU time (onnxruntime computes on the calling thread), else wall time."""
    now = time.process_time if threads == 1 else time.perf_counter
    a.run(None, dict(feed))
    b.run(None, dict(feed))
    times: dict[int, list[float]] = {0: [], 1: []}
    for r in range(reps):
        for k in (0, 1) if r % 2 == 0 else (1, 0):
            session = (a, b)[k]
            start = now()
            session.run(None, dict(feed))
            times[k].append(now() - start)
    return min(times[0]), min(times[1])


def _write(src: Path, work: Path, manifest, models: dict, reports: dict) -> None:
    specs = dict(manifest.components)
    for name, spec in manifest.components.items():
        for stale in (work / spec.file, work / (spec.file + ".data")):
            stale.unlink(missing_ok=True)
        if name in models:
            specs[name] = save_component(work, spec, models[name], "int8",
                                         reports[name].manifest_lines())  # fmt: skip
        else:
            copy_component(src, work, spec)
    write_manifest(work, replace(manifest, components=specs))


def _end_to_end(root: Path, clip: Clip, fp32_audio: np.ndarray, plan: HeldOutPlan, threads):
    from v2a_runtime.pipeline import Pipeline

    pipe = Pipeline.load(root, threads=threads)
    _, audio = record_pipeline(pipe, [clip], steps=plan.steps, cfg=plan.cfg)
    return mel_error_db(audio[0], fp32_audio, pipe.bundle.manifest.audio.sample_rate)


def _record(work: Path, manifest, result: Int8Result, feeds, gate_feeds) -> None:
    """The manifest's parity section (the fp32 record kept, ``int8`` added) and
    reports/precision.json."""
    current = load_bundle(work, verify=False).manifest
    recorded = dict(manifest.parity or {})
    int8 = {
        name: {"precision": d.precision, "reason": d.reason, **d.worst()}
        for name, d in result.decisions.items()
    }
    n8 = sum(d.precision == "int8" for d in result.decisions.values())
    mel = result.mel
    e2e = "no int8 component" if mel is None else (
        f"end to end {result.held_out.duration:g} s, {result.held_out.steps} Euler steps vs the "
        f"fp32 bundle: log-mel error {mel.mean_db:.3f} dB (gate {MEL_DB_GATE:g} dB)"
    )  # fmt: skip
    summary = (
        f"int8: {n8}/{len(result.decisions)} converted components int8 on held-out real "
        f"inputs; {e2e}; fp32 graphs: {recorded.get('summary', 'not recorded')}"
    )
    recorded.update(
        passed=bool(recorded.get("passed", False)) and result.passed,
        summary=summary,
        int8={
            "passed": result.passed,
            "reference": "the fp32 graphs of the source bundle (gated against PyTorch above)",
            "components": int8,
            "end_to_end": None if mel is None else {"duration": result.held_out.duration,
                                                    "steps": result.held_out.steps,
                                                    "mel_error_db": mel.mean_db},
        },
    )  # fmt: skip
    write_manifest(work, replace(current, parity=jsonable(recorded)))
    write_json(work / PRECISION_REPORT, {
        "policy": {**asdict(result.policy), "weights": result.policy.weights.value},
        "calibration": {
            **{k: list(v) if isinstance(v, tuple) else v
               for k, v in asdict(result.calibration).items()},
            "feeds": {n: len(f) for n, f in feeds.items()},
            "source": "v2a_runtime pipeline on the fp32 bundle: "
            + ("the user's videos" if result.calibration.videos else "procedural-world video"),
        },
        "held_out": {**asdict(result.held_out), "feeds": {n: len(f) for n, f in
                                                          gate_feeds.items()}},
        "components": {
            name: {**r.to_dict(), "decision": asdict(result.decisions[name])}
            for name, r in result.components.items()
        },
        "end_to_end": None if mel is None else asdict(mel),
    })  # fmt: skip


__all__ = ["Decision", "HeldOutPlan", "Int8Result", "convert_bundle_int8", "time_pair"]
