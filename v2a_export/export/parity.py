"""The parity gate: every exported graph against the PyTorch fp32 network it came from.

Per component: onnxruntime (CPU) and the wrapper module run the same seeded inputs
(:meth:`Descriptor.sample_inputs`) at each case of a :class:`ParityPlan` — two or more
durations and batch sizes, none of them the traced export size — and every output is compared:
max / median / p99 absolute error, relative L2 error ``‖got − ref‖ / ‖ref‖``, cosine, and a
NaN/Inf check on both sides. A graph that cannot run at a size (a silently specialised dim) is a
failure with onnxruntime's message, not a crash.

End to end: the runtime pipeline (``v2a_runtime.pipeline``: ONNX graphs, numpy Euler, batched
CFG) against :class:`v2a_export.reference.ReferencePipeline` on the same frames, prompt and x0;
the final waveform's relative L2 error is gated.

Thresholds (fp32): rel L2 ≤ 1e-5 per output at every size, max abs ≤ 1e-4·max(1, max|ref|)
(the fixtures' single-pass bounds), no NaN/Inf; end to end rel L2 ≤ 1e-3.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from v2a_runtime.backends import BackendError, Session
from v2a_runtime.config import COMPONENTS, DEFAULT_SAMPLER
from v2a_runtime.sequence import Rates

from v2a_export.export.descriptors import Descriptor, dim_sizes


@dataclass(frozen=True)
class Metrics:
    max_abs: float
    median_abs: float
    p99_abs: float
    rel_l2: float
    cosine: float
    ref_max_abs: float
    finite: bool  # no NaN/Inf in the graph's output
    ref_finite: bool

    @classmethod
    def of(cls, got: np.ndarray, ref: np.ndarray) -> Metrics:
        got = np.asarray(got, dtype=np.float64).ravel()
        ref = np.asarray(ref, dtype=np.float64).ravel()
        finite, ref_finite = bool(np.isfinite(got).all()), bool(np.isfinite(ref).all())
        if not (finite and ref_finite) or got.size == 0:
            nan = float("nan")
            return cls(nan, nan, nan, nan, nan, nan, finite, ref_finite)
        err = np.abs(got - ref)
        ref_norm, got_norm = float(np.linalg.norm(ref)), float(np.linalg.norm(got))
        rel = float(np.linalg.norm(got - ref)) / ref_norm if ref_norm > 0 else float(err.max())
        denom = ref_norm * got_norm
        cosine = float(got @ ref) / denom if denom > 0 else (1.0 if rel == 0 else 0.0)
        return cls(
            max_abs=float(err.max()),
            median_abs=float(np.median(err)),
            p99_abs=float(np.percentile(err, 99)),
            rel_l2=rel,
            cosine=cosine,
            ref_max_abs=float(np.abs(ref).max()),
            finite=finite,
            ref_finite=ref_finite,
        )


@dataclass(frozen=True)
class Threshold:
    rel_l2: float = 1e-5
    max_abs_scale: float | None = 1e-4  # max_abs <= scale * max(1, max|ref|); None = unchecked

    def failures(self, m: Metrics) -> tuple[str, ...]:
        out = []
        if not m.ref_finite:
            out.append("the PyTorch reference has NaN/Inf")
        if not m.finite:
            out.append("NaN/Inf in the ONNX output")
        if out:
            return tuple(out)
        if not m.rel_l2 <= self.rel_l2:
            out.append(f"rel_l2 {m.rel_l2:.2e} > {self.rel_l2:.0e}")
        if self.max_abs_scale is not None:
            bound = self.max_abs_scale * max(1.0, m.ref_max_abs)
            if not m.max_abs <= bound:
                out.append(f"max_abs {m.max_abs:.2e} > {bound:.2e}")
        return tuple(out)


FP32 = Threshold()
# One threshold per component (fp32 export); the precision pass brings its own.
FP32_THRESHOLDS = dict.fromkeys(COMPONENTS, FP32)
END_TO_END = Threshold(rel_l2=1e-3, max_abs_scale=None)


@dataclass(frozen=True)
class ParityPlan:
    """Sizes to test. Case i runs ``durations[i]`` seconds with batch ``batches[i % n]``; the
    video encoders (unbatched, the costliest for full-size models) use ``encoder_durations``
    when given. The export traces ``export_duration`` / ``export_batch``; the default cases use
    other sizes on every axis."""

    durations: tuple[float, ...] = (2.0, 9.0)
    batches: tuple[int, ...] = (3, 1)
    encoder_durations: tuple[float, ...] | None = None
    export_duration: float = 3.0
    export_batch: int = 2
    seed: int = 0
    # end to end
    e2e_duration: float | None = 2.0  # None skips the end-to-end check
    e2e_steps: int = 25
    e2e_cfg: float = DEFAULT_SAMPLER.cfg
    e2e_prompt: str = "a dog barks twice, then footsteps on gravel"
    e2e_negative: str = ""

    def __post_init__(self) -> None:
        if len(self.durations) < 2 or len(set(self.durations)) < 2:
            raise ValueError(f"parity needs >= 2 different durations, got {self.durations}")
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"batches must be >= 1, got {self.batches}")
        if self.encoder_durations is not None and len(set(self.encoder_durations)) < 2:
            raise ValueError(
                f"encoder parity needs >= 2 different durations, got {self.encoder_durations}"
            )

    def cases(self, descriptor: Descriptor) -> list[tuple[float, int]]:
        durations = self.durations
        if descriptor.name in ("clip_visual", "sync_visual") and self.encoder_durations:
            durations = self.encoder_durations
        return [(d, self.batches[i % len(self.batches)]) for i, d in enumerate(durations)]

    def export_sizes(self, rates: Rates) -> dict[str, int]:
        return dim_sizes(rates, self.export_duration, self.export_batch)


@dataclass(frozen=True)
class OutputCheck:
    name: str
    shape: tuple[int, ...]
    metrics: Metrics
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class CaseCheck:
    duration: float
    batch: int
    sizes: dict[str, int]  # the input dims of this case
    outputs: tuple[OutputCheck, ...]
    error: str | None = None  # onnxruntime could not run this size

    @property
    def passed(self) -> bool:
        return self.error is None and all(o.passed for o in self.outputs)


@dataclass(frozen=True)
class ComponentParity:
    component: str
    threshold: Threshold
    export_sizes: dict[str, int]
    cases: tuple[CaseCheck, ...]

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    def worst(self, metric: str) -> float:
        values = [getattr(o.metrics, metric) for c in self.cases for o in c.outputs]
        if not values or any(math.isnan(v) for v in values):
            return float("nan")
        return max(values)

    def summary(self) -> dict:
        """The compact per-component entry of the manifest's parity section."""
        return jsonable(
            {
                "passed": self.passed,
                "sizes_tested": len(self.cases),
                "worst_rel_l2": self.worst("rel_l2"),
                "worst_max_abs": self.worst("max_abs"),
                "min_cosine": self.min_cosine(),
                "threshold_rel_l2": self.threshold.rel_l2,
            }
        )

    def min_cosine(self) -> float:
        values = [o.metrics.cosine for c in self.cases for o in c.outputs]
        if not values or any(math.isnan(v) for v in values):
            return float("nan")
        return min(values)

    @property
    def failures(self) -> list[str]:
        out = []
        for c in self.cases:
            where = f"{c.duration:g} s, batch {c.batch}"
            if c.error:
                out.append(f"{where}: {c.error}")
            out += [f"{where}: {o.name}: {'; '.join(o.failures)}" for o in c.outputs if o.failures]
        return out


@dataclass(frozen=True)
class EndToEnd:
    duration: float
    steps: int
    cfg: float
    seed: int
    prompt: str
    samples: int
    metrics: Metrics
    threshold: Threshold
    failures: tuple[str, ...]

    @classmethod
    def of(cls, plan: ParityPlan, samples: int, metrics: Metrics, threshold, failures) -> EndToEnd:
        """The record of one end-to-end check run with ``plan``'s request."""
        return cls(plan.e2e_duration, plan.e2e_steps, plan.e2e_cfg, plan.seed, plan.e2e_prompt,
                   samples, metrics, threshold, tuple(failures))  # fmt: skip

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class ParityReport:
    components: dict[str, ComponentParity]
    end_to_end: EndToEnd | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        e2e = self.end_to_end is None or self.end_to_end.passed
        return e2e and all(c.passed for c in self.components.values())

    def summary(self) -> str:
        ok = [n for n, c in self.components.items() if c.passed]
        bad = [n for n, c in self.components.items() if not c.passed]
        worst = max((c.worst("rel_l2") for c in self.components.values()), default=float("nan"))
        text = f"{len(ok)}/{len(self.components)} components pass (worst rel_l2 {worst:.1e})"
        if bad:
            text += f"; FAILED: {', '.join(bad)}"
        if self.end_to_end is not None:
            e = self.end_to_end
            text += (
                f"; end to end {e.duration:g} s, {e.steps} Euler steps, cfg {e.cfg:g}: "
                f"waveform rel_l2 {e.metrics.rel_l2:.1e} ({'pass' if e.passed else 'FAIL'})"
            )
        return text

    def to_dict(self) -> dict:
        """The full report (reports/parity.json)."""
        return jsonable(
            {
                "passed": self.passed,
                "summary": self.summary(),
                "components": {
                    n: {"summary": c.summary(), "failures": c.failures, **asdict(c)}
                    for n, c in self.components.items()
                },
                "end_to_end": None if self.end_to_end is None else asdict(self.end_to_end),
                "notes": list(self.notes),
            }
        )

    def manifest_summary(self) -> dict:
        """The compact parity section of manifest.json."""
        e = self.end_to_end
        e2e = None
        if e is not None:
            e2e = {
                "passed": e.passed,
                "duration": e.duration,
                "steps": e.steps,
                "cfg": e.cfg,
                "waveform_rel_l2": e.metrics.rel_l2,
                "waveform_max_abs": e.metrics.max_abs,
                "threshold_rel_l2": e.threshold.rel_l2,
            }
        return jsonable(
            {
                "passed": self.passed,
                "summary": self.summary(),
                "backend": "onnxruntime CPU vs PyTorch fp32",
                "components": {n: c.summary() for n, c in self.components.items()},
                "end_to_end": e2e,
                "report": "reports/parity.json",
            }
        )


def jsonable(x):
    """NaN/Inf -> None (JSON has no NaN); tuples -> lists; numpy scalars -> Python; dict keys
    -> str; dataclass dicts already plain."""
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


# --- per component ---------------------------------------------------------------------------


@torch.no_grad()
def check_component(
    module: nn.Module,
    descriptor: Descriptor,
    session: Session,
    rates: Rates,
    plan: ParityPlan,
    *,
    threshold: Threshold = FP32,
    on_case: Callable[[int, int], None] | None = None,
) -> ComponentParity:
    """Run ``module`` (PyTorch) and ``session`` (the exported graph) on every case of ``plan``."""
    cases = []
    planned = plan.cases(descriptor)
    for i, (duration, batch) in enumerate(planned):
        sizes = dim_sizes(rates, duration, batch)
        inputs = descriptor.sample_inputs(sizes, seed=plan.seed + i)
        cases.append(_check_case(module, descriptor, session, inputs, duration, batch, threshold))
        if on_case is not None:
            on_case(i + 1, len(planned))
    dims = set(descriptor.input_dims())
    export_sizes = {k: v for k, v in plan.export_sizes(rates).items() if k in dims}
    return ComponentParity(descriptor.name, threshold, export_sizes, tuple(cases))


def _check_case(
    module: nn.Module,
    descriptor: Descriptor,
    session: Session,
    inputs: Mapping[str, np.ndarray],
    duration: float,
    batch: int,
    threshold: Threshold,
) -> CaseCheck:
    dims = {}
    for t in descriptor.inputs:
        shape = inputs[t.name].shape
        dims.update({d: shape[i] for i, d in enumerate(t.shape) if isinstance(d, str)})
    ref = module(*(torch.from_numpy(inputs[n]) for n in descriptor.input_names))
    ref = ref if isinstance(ref, tuple) else (ref,)
    try:
        got = session.run(dict(inputs))
    except BackendError as e:
        return CaseCheck(duration, batch, dims, (), error=str(e))
    outputs = []
    for spec, r in zip(descriptor.outputs, ref, strict=True):
        r = r.numpy()
        g = got[spec.name]
        if g.shape != r.shape:
            m = Metrics.of(np.zeros(1), np.zeros(1))
            fail = (f"shape {g.shape}, PyTorch gives {r.shape}",)
            outputs.append(OutputCheck(spec.name, tuple(g.shape), m, fail))
            continue
        m = Metrics.of(g, r)
        outputs.append(OutputCheck(spec.name, tuple(g.shape), m, threshold.failures(m)))
    return CaseCheck(duration, batch, dims, tuple(outputs))


# --- end to end ------------------------------------------------------------------------------


@torch.no_grad()
def check_end_to_end(
    nets,
    bundle_dir: str | Path,
    plan: ParityPlan,
    *,
    threads: int | None = None,
    config=None,
) -> EndToEnd:
    """The runtime pipeline on the bundle vs the PyTorch reference pipeline (same frames, prompt,
    seed and x0).

    ``nets`` is a :class:`Networks`, or a callable returning one together with ``config``: then
    the runtime pipeline runs (and is released) before the networks are built, so the ONNX
    sessions and the PyTorch weights are never in memory together (a full-size model holds
    several GB of each)."""
    from v2a_runtime.pipeline import Pipeline

    if plan.e2e_duration is None:
        raise ValueError("plan.e2e_duration is None: no end-to-end check planned")
    config = config if callable(nets) else nets.config
    pipe = Pipeline.load(bundle_dir, threads=threads)
    got = runtime_audio(pipe, config, plan)
    del pipe
    gc.collect()
    want = reference_audio(nets() if callable(nets) else nets, plan, got.shape[0])
    m = Metrics.of(got, want)
    return EndToEnd.of(plan, int(got.shape[0]), m, END_TO_END, END_TO_END.failures(m))


def end_to_end_audio(nets, pipe, plan: ParityPlan) -> tuple[np.ndarray, np.ndarray]:
    """(runtime waveform, reference waveform), both (W,) float32 and clipped to [-1, 1]: the
    loaded runtime pipeline ``pipe`` and the PyTorch reference on the same random frames,
    prompt, seed and x0 (Euler, uniform grid, ``plan``'s steps and cfg, no watermark)."""
    got = runtime_audio(pipe, nets.config, plan)
    return got, reference_audio(nets, plan, got.shape[0])


def _e2e_inputs(config, plan: ParityPlan):
    """The random frames (clip, sync), the prompt ids and x0 of the end-to-end check."""
    from v2a_runtime.tokenizer import Tokenizer

    d, s = plan.e2e_duration, config.streams
    n = dim_sizes(config.rates, d)
    rng = np.random.default_rng(plan.seed)
    clip = rng.integers(0, 256, (n["F"], s.clip_size, s.clip_size, 3), dtype=np.uint8)
    sync = rng.integers(0, 256, (int(d * s.sync_fps), s.sync_size, s.sync_size, 3), np.uint8)
    ids = Tokenizer.load()([plan.e2e_prompt, plan.e2e_negative])  # (2, 77)
    # v2a_runtime.pipeline draws track k's noise as default_rng(seed + k).standard_normal
    x0 = np.random.default_rng(plan.seed).standard_normal(
        (n["L"], config.flow.latent_dim), dtype=np.float32
    )
    return clip, sync, ids, x0


def runtime_audio(pipe, config, plan: ParityPlan) -> np.ndarray:
    """(W,) float32: the runtime pipeline's waveform for the end-to-end inputs."""
    from v2a_runtime.media import Frames

    clip, sync, _ids, _x0 = _e2e_inputs(config, plan)
    result = pipe.generate(
        Frames(clip=clip, sync=sync, start=0.0, duration=float(plan.e2e_duration)),
        prompt=plan.e2e_prompt,
        negative_prompt=plan.e2e_negative,
        seed=plan.seed,
        steps=plan.e2e_steps,
        solver="euler",
        grid="uniform",
        cfg=plan.e2e_cfg,
        watermark=False,
    )
    return result.audio[0]  # (W,)


@torch.no_grad()
def reference_audio(nets, plan: ParityPlan, samples: int) -> np.ndarray:
    """(samples,) float32: the PyTorch reference's waveform, clipped like the runtime's."""
    from v2a_export.reference import ReferencePipeline

    clip, sync, ids, x0 = _e2e_inputs(nets.config, plan)
    ids = torch.from_numpy(ids)
    ref = ReferencePipeline(nets).generate(
        torch.from_numpy(clip),
        torch.from_numpy(sync),
        ids[:1],
        ids[1:],
        duration=plan.e2e_duration,
        x0=torch.from_numpy(x0)[None],
        steps=plan.e2e_steps,
        cfg=plan.e2e_cfg,
    )
    return ref.waveform[0, :samples].clamp(-1.0, 1.0).numpy()


__all__ = [
    "END_TO_END",
    "FP32",
    "FP32_THRESHOLDS",
    "CaseCheck",
    "ComponentParity",
    "EndToEnd",
    "Metrics",
    "OutputCheck",
    "ParityPlan",
    "ParityReport",
    "Threshold",
    "check_component",
    "check_end_to_end",
    "end_to_end_audio",
    "reference_audio",
    "runtime_audio",
]
