"""Tune a bundle's samplers: reference → grid search → fitted weights → held-out gate.

:func:`tune` takes a denoiser session and two condition sets (:mod:`.calibration`), the
calibration set and a held-out set of other conditions and other noise, and returns named
samplers for the requested evaluation budgets:

1. the reference trajectory of the calibration set (:func:`.reference.reference`), and 25-step
   Euler (MMAudio's sampler) on it, for scale;
2. for every budget K and solver family (Euler, AB2), the K-step grid of least summed local
   error by dynamic programming over the stored trajectory (:mod:`.search`), run for real on
   the calibration set (K evaluations) to measure its error;
3. on each of those grids, multistep weights fitted by least squares (:mod:`.fit`; K
   evaluations, which also give the fitted sampler's error);
4. per budget, the candidate with the least calibration error is kept;
5. the gate: the held-out set's own reference, 25-step Euler on it, and every kept sampler run
   on it. A sampler passes when its held-out error is at most 25-step Euler's. The passing
   sampler with the fewest evaluations (at most ``max_default_evaluations``) becomes the
   bundle's default.

The reference must be converged: its change when the step is halved must stay below
:data:`.reference.CONVERGED` times the smallest error it judges (the kept samplers' and
25-step Euler's), or :class:`NotConverged` is raised. Deterministic: no randomness beyond the
condition sets' noise, every reduction in a fixed order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .. import named_sampler, sampling
from ..backends import Session
from ..backends.host import guided_velocity
from ..bundle import Manifest
from ..named_sampler import MULTISTEP, Calibration, NamedSampler
from . import fit, search
from .calibration import ConditionSet
from .reference import CONVERGED, Reference, reference, relative_error

FAMILIES = search.FAMILIES


class NotConverged(ValueError):
    """The reference trajectory is not accurate enough to judge the candidates."""


@dataclass(frozen=True)
class TuneOptions:
    evaluations: tuple[int, ...] = (4, 6, 8)
    families: tuple[str, ...] = FAMILIES
    fit: bool = True  # also fit multistep weights on every searched grid
    points: int = 128  # fine-grid intervals the search chooses from
    reference_steps: int = 1024  # Heun steps of the reference (checked against half)
    cfg: float = 4.5
    max_default_evaluations: int = 8
    prefix: str = "tuned"  # samplers are named f"{prefix}-{evaluations}"

    def __post_init__(self) -> None:
        if not self.evaluations or min(self.evaluations) < 2:
            raise ValueError(f"evaluation budgets must be >= 2, got {self.evaluations}")
        if max(self.evaluations) > self.points:
            raise ValueError(
                f"the largest budget ({max(self.evaluations)}) exceeds the fine grid "
                f"({self.points} intervals)"
            )
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown or not self.families:
            raise ValueError(f"unknown solver families {unknown}; known: {', '.join(FAMILIES)}")


@dataclass(frozen=True)
class Progress:
    """A progress event: ``stage`` with ``done`` of ``total`` network evaluations."""

    stage: str
    done: int
    total: int


@dataclass(frozen=True)
class Candidate:
    """One sampler tried on the calibration set."""

    evaluations: int
    method: str  # "euler grid", "ab2 grid", "ab2 grid + fitted weights", ...
    solver: str  # a sampling.SOLVERS name or "multistep"
    times: tuple[float, ...]
    weights: np.ndarray | None  # (K, K) for multistep
    error: float  # on the calibration set
    held_out_error: float | None = None


@dataclass(frozen=True)
class TuneResult:
    samplers: dict[str, NamedSampler]  # sealed, ready for the manifest
    default: str | None  # the name that passed the gate with the fewest evaluations
    candidates: tuple[Candidate, ...]  # everything tried, with calibration errors
    calibration_reference: Reference
    held_out_reference_change: float
    euler25_error: float
    held_out_euler25_error: float
    evaluations: int  # network evaluations of the whole run
    seconds: float


def tune(
    denoiser: Session,
    calibration: ConditionSet,
    held_out: ConditionSet,
    options: TuneOptions = TuneOptions(),
    *,
    callback: Callable[[Progress], None] | None = None,
) -> TuneResult:
    """Search, fit and gate samplers for ``options.evaluations`` on ``denoiser``."""
    started = time.perf_counter()
    counter = _Counter(callback)
    w = options.cfg
    cal_v = guided_velocity(denoiser, calibration.feeds_for(w), w, on_call=counter.tick)
    held_v = guided_velocity(denoiser, held_out.feeds_for(w), w, on_call=counter.tick)

    counter.stage("reference", _reference_cost(options))
    ref = reference(cal_v, calibration.x0, steps=options.reference_steps, points=options.points)
    counter.stage("euler-25", 25)
    e25 = _euler25(cal_v, calibration.x0, ref.endpoint)
    _check_converged(ref.change, [e25], options)  # early: the same check runs at the end

    budgets = sorted(set(options.evaluations))
    counter.stage("search", len(options.families) * (2 if options.fit else 1) * sum(budgets))
    candidates = _search(ref, cal_v, calibration.x0, budgets, options)
    kept = {k: min((c for c in candidates if c.evaluations == k), key=_rank) for k in budgets}

    counter.stage("held-out reference", _reference_cost(options))
    held_ref = reference(held_v, held_out.x0, steps=options.reference_steps, points=2)
    counter.stage("gate", 25 + sum(budgets))
    held_e25 = _euler25(held_v, held_out.x0, held_ref.endpoint)
    for k, c in kept.items():
        x = _sampler(c, options.cfg).run(held_v, held_out.x0)
        kept[k] = replace(c, held_out_error=relative_error(x, held_ref.endpoint))
    judged = [e25, held_e25, *(e for c in kept.values() for e in (c.error, c.held_out_error))]
    _check_converged(max(ref.change, held_ref.change), judged, options)

    record = Calibration(
        method="",
        source=calibration.source,
        conditions=calibration.size,
        seed=calibration.seed,
        duration=calibration.duration,
        evaluations=0,
        reference=ref.describe(),
        reference_change=max(ref.change, held_ref.change),
        error=0.0,
        euler25_error=e25,
        held_out_conditions=held_out.size,
        held_out_error=0.0,
        held_out_euler25_error=held_e25,
        tuning_evaluations=counter.total,
        tuning_seconds=round(time.perf_counter() - started, 1),
    )
    samplers = {f"{options.prefix}-{k}": _named(c, record, options.cfg) for k, c in kept.items()}
    passing = [
        name
        for name, s in samplers.items()
        if s.passed_gate and s.evaluations <= options.max_default_evaluations
    ]
    return TuneResult(
        samplers=samplers,
        default=passing[0] if passing else None,  # budgets ascend: the fewest evaluations
        candidates=tuple(candidates),
        calibration_reference=ref,
        held_out_reference_change=held_ref.change,
        euler25_error=e25,
        held_out_euler25_error=held_e25,
        evaluations=counter.total,
        seconds=record.tuning_seconds,
    )


def _search(ref: Reference, velocity_fn, x0, budgets, options: TuneOptions) -> list[Candidate]:
    """Every family's DP grid for every budget, run as is and with fitted weights."""
    g = search.gram(ref.times, ref.states, ref.velocities)
    candidates = []
    for family in options.families:
        paths = search.shortest_paths(family, g, max(budgets))
        for k in budgets:
            candidates += _candidates(family, paths[k], ref, velocity_fn, x0, options.fit)
    return candidates


def _euler25(velocity_fn, x0, endpoint) -> float:
    """MMAudio's sampler (Euler, 25 uniform steps): the scale every error is judged on."""
    return relative_error(
        sampling.euler(velocity_fn, x0, sampling.time_grid("uniform", 25)), endpoint
    )


def _check_converged(change: float, judged: list[float], options: TuneOptions) -> None:
    if change > CONVERGED * min(judged):
        raise NotConverged(
            f"the reference is not converged: halving its step changes the endpoint by "
            f"{change:.1e}, more than {CONVERGED:g} x the smallest error it judges "
            f"({min(judged):.1e}); raise the reference steps (now {options.reference_steps})"
        )


def _named(c: Candidate, record: Calibration, cfg: float) -> NamedSampler:
    """The sealed sampler of a kept candidate with its own entries in the shared record."""
    own = replace(
        record,
        method=c.method,
        evaluations=c.evaluations,
        error=c.error,
        held_out_error=c.held_out_error,
    )
    return named_sampler.sealed(replace(_sampler(c, cfg), calibration=own))


def _candidates(family, path, ref: Reference, velocity_fn, x0, with_fit: bool) -> list[Candidate]:
    """The searched grid run as is, and with fitted weights."""
    idx = list(path.indices)
    ts = ref.times[idx].astype(np.float32)
    times = tuple(float(t) for t in ts)
    k = path.steps
    x = sampling.get_solver(family)(velocity_fn, x0, ts)
    out = [
        Candidate(k, f"{family} on a GITS grid", family, times, None,
                  relative_error(x, ref.endpoint))
    ]  # fmt: skip
    if with_fit:
        base = sampling.multistep_weights(family, ts)
        table, x = fit.fit_weights(velocity_fn, x0, ts, ref.states[idx], base)
        out.append(
            Candidate(k, f"{family} GITS grid + least-squares multistep weights", MULTISTEP,
                      times, table, relative_error(x, ref.endpoint))
        )  # fmt: skip
    return out


def _rank(c: Candidate) -> tuple[float, int]:
    return (c.error, 0 if c.weights is None else 1)  # equal errors: the simpler sampler


def _sampler(c: Candidate, cfg: float) -> NamedSampler:
    weights = None if c.weights is None else named_sampler.weight_rows(c.weights)
    return NamedSampler(solver=c.solver, times=c.times, cfg=cfg, weights=weights)


def _reference_cost(options: TuneOptions) -> int:
    s = options.reference_steps
    return sampling.evaluations("heun", s) + sampling.evaluations("heun", s // 2)


class _Counter:
    """Counts network evaluations and reports progress per stage."""

    def __init__(self, callback):
        self.callback, self.total, self.name, self.done, self.size = callback, 0, "", 0, 0

    def stage(self, name: str, size: int) -> None:
        self.name, self.done, self.size = name, 0, size
        self._report()

    def tick(self) -> None:
        self.total += 1
        self.done += 1
        self._report()

    def _report(self) -> None:
        if self.callback is not None:
            self.callback(Progress(self.name, self.done, self.size))


def with_samplers(manifest: Manifest, result: TuneResult, *, set_default: bool = True) -> Manifest:
    """``manifest`` with ``result``'s samplers added (same names replaced) and, when
    ``set_default``, the gate's pick as the default sampler. A default that named a replaced
    sampler and has no passing successor goes back to the fixed solver/steps/grid."""
    samplers = {**manifest.samplers, **result.samplers}
    default = manifest.sampler
    if set_default and result.default is not None:
        default = replace(default, name=result.default, cfg=samplers[result.default].cfg)
    elif default.name in result.samplers:
        default = replace(default, name=None)
    return replace(manifest, samplers=samplers, sampler=default)
