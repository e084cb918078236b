"""Named samplers: a solver, its time grid and fitted weights, stored as data in a bundle.

A bundle's manifest may carry ``samplers: {name: NamedSampler}`` (DESIGN.md §10, "Samplers are
data in the bundle"), made by ``v2a-export tune-sampler`` (:mod:`v2a_runtime.tuning`); one of
them can be the bundle's default (``sampler.name``). Each entry holds everything needed to run
it — the explicit time grid (0 = noise … 1 = data), the solver, the fitted multistep weights if
any, the guidance weight it was tuned for — plus the record of how it was made, and the sha256
of all that (:func:`digest`), which :func:`v2a_runtime.bundle.load_bundle` checks like a file's.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, replace

import numpy as np

from . import sampling

MULTISTEP = sampling.MULTISTEP  # the solver name of a table of fitted weights
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Calibration:
    """How a named sampler was tuned and what it measured (relative L2 errors of the final
    latent against a converged reference solution of the same noise and conditions)."""

    method: str  # e.g. "GITS dynamic programming, ab2, 128-point fine grid"
    source: str  # the calibration conditions, e.g. "world held-out scenes 1005000..1005015"
    conditions: int  # N
    seed: int  # noise seed of the calibration set
    duration: float  # seconds per condition
    evaluations: int  # the budget
    reference: str  # e.g. "heun, 2048 uniform steps"
    reference_change: float  # endpoint change when the reference step is halved
    error: float  # this sampler on the calibration set
    euler25_error: float  # 25-step Euler (MMAudio's sampler) on the calibration set
    held_out_conditions: int  # the gate's conditions, never used in the search
    held_out_error: float
    held_out_euler25_error: float
    tuning_evaluations: int  # network evaluations of the whole tuning run
    tuning_seconds: float


@dataclass(frozen=True)
class NamedSampler:
    """One stored sampler. ``weights`` only for the ``multistep`` solver: row i holds the
    weights of step i on v_0 … v_i (a lower-triangular table, ragged)."""

    solver: str
    times: tuple[float, ...]
    cfg: float
    weights: tuple[tuple[float, ...], ...] | None = None
    calibration: Calibration | None = None
    sha256: str = ""

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    @property
    def evaluations(self) -> int:
        if self.solver == MULTISTEP:
            return self.steps
        return sampling.evaluations(self.solver, self.steps)

    @property
    def passed_gate(self) -> bool:
        c = self.calibration
        return c is not None and c.held_out_error <= c.held_out_euler25_error

    def grid(self) -> np.ndarray:
        """The time grid as float32, as the solvers take it."""
        return np.asarray(self.times, dtype=np.float32)

    def table(self) -> np.ndarray | None:
        """The (N, N) weight table of the multistep solver; None for a named solver."""
        return None if self.weights is None else weight_table(self.weights, self.steps)

    def run(self, velocity_fn, x: np.ndarray, *, callback=None) -> np.ndarray:
        """This sampler's solve of ``velocity_fn`` from ``x`` (t = 0) to t = 1."""
        return sampling.integrate(velocity_fn, x, self.grid(), solver=self.solver,
                                  weights=self.table(), callback=callback)  # fmt: skip


def weight_table(rows, steps: int) -> np.ndarray:
    """Ragged rows (row i has i + 1 entries) -> the (steps, steps) lower-triangular table."""
    table = np.zeros((steps, steps))
    for i, row in enumerate(rows):
        table[i, : len(row)] = row
    return table


def weight_rows(table: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """The (N, N) lower-triangular table as ragged rows of Python floats (JSON-ready)."""
    return tuple(tuple(float(w) for w in table[i, : i + 1]) for i in range(len(table)))


def digest(s: NamedSampler) -> str:
    """sha256 of the sampler's canonical JSON (sorted keys, no spaces), its own hash left out."""
    body = asdict(replace(s, sha256=""))
    del body["sha256"]
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sealed(s: NamedSampler) -> NamedSampler:
    """``s`` with its sha256 filled in."""
    return replace(s, sha256=digest(s))


def check(name: str, s: NamedSampler) -> None:
    """ValueError naming what is wrong with the stored sampler ``name``."""
    where = f"sampler {name!r}"
    if not NAME.fullmatch(name):
        raise ValueError(f"{where}: a name is 1-64 of a-z 0-9 . _ - (starting alphanumeric)")
    if s.solver != MULTISTEP and s.solver not in sampling.SOLVERS:
        known = ", ".join([*sampling.SOLVERS, MULTISTEP])
        raise ValueError(f"{where}: unknown solver {s.solver!r}; known: {known}")
    t = np.asarray(s.times, dtype=np.float64)
    if t.size < 2 or t[0] != 0.0 or t[-1] != 1.0 or not np.all(np.diff(t) > 0):
        raise ValueError(f"{where}: times must increase strictly from 0.0 to 1.0")
    if not np.all(np.diff(s.grid()) > 0):
        raise ValueError(f"{where}: times repeat when rounded to float32")
    if (s.weights is not None) != (s.solver == MULTISTEP):
        raise ValueError(f"{where}: weights are given exactly for the {MULTISTEP} solver")
    if s.weights is not None:
        rows = s.weights
        if len(rows) != s.steps or any(len(r) != i + 1 for i, r in enumerate(rows)):
            raise ValueError(f"{where}: weights need {s.steps} rows, row i with i + 1 values")
        if not all(math.isfinite(w) for r in rows for w in r):
            raise ValueError(f"{where}: weights must be finite")
    if not (math.isfinite(s.cfg) and s.cfg >= 0):
        raise ValueError(f"{where}: cfg must be a finite number >= 0, got {s.cfg!r}")
