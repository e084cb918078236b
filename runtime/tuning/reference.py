"""Reference trajectories: the ODE solved finely enough to measure few-step samplers against.

:func:`reference` solves dx/dt = v(x, t) from the calibration noise x₀ with Heun's method on a
uniform grid of ``steps`` steps and keeps, on every (steps / points)-th grid point τ_i, the state
x*(τ_i) and the velocity v(x*(τ_i), τ_i) (Heun's first evaluation of the step, so it costs
nothing extra): the stored trajectory the grid search works on (:mod:`.search`).

Convergence is measured, not assumed: the same solve with half the steps gives a second
endpoint, and their relative difference (``change``) bounds the reference's own error (for a
second-order method, that error is about change / 3). The tuner refuses a reference whose
change is not far below the errors it is meant to judge (:data:`CONVERGED`).

Why Heun: its error is O(h²), it evaluates the network exactly on the stored states, and it
tolerates a velocity that is rough in t. The v2 time embedding of MMAudio-family networks has
frequencies up to 1e4, and a trained network keeps some of that: on the trained tiny model,
v(x, t) at fixed x wiggles by ~1 % over Δt = 1e-3 (docs/samplers.md), which makes third-order
correctors amplify rather than cancel errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import sampling

CONVERGED = 0.1  # the reference change must be below this fraction of every candidate's error


@dataclass(frozen=True)
class Reference:
    """A stored trajectory on ``points`` + 1 fine-grid times, for a batch (B, L, C)."""

    times: np.ndarray  # (N + 1,) float64, 0 … 1
    states: np.ndarray  # (N + 1, B, L, C) float32: x*(τ_i); states[-1] is the reference endpoint
    velocities: np.ndarray  # (N, B, L, C) float32: v(x*(τ_i), τ_i)
    steps: int  # Heun steps of the solve
    change: float  # ‖x_steps(1) − x_{steps/2}(1)‖ / ‖x_steps(1)‖

    @property
    def endpoint(self) -> np.ndarray:
        return self.states[-1]

    @property
    def evaluations(self) -> int:
        """Network evaluations spent: both solves."""
        return sampling.evaluations("heun", self.steps) + sampling.evaluations(
            "heun", self.steps // 2
        )

    def describe(self) -> str:
        return f"heun, {self.steps} uniform steps (change at {self.steps // 2}: {self.change:.1e})"


def reference(
    velocity_fn: sampling.VelocityFn,
    x0: np.ndarray,
    *,
    steps: int,
    points: int,
    callback: Callable[[int, int], None] | None = None,
) -> Reference:
    """Solve from ``x0`` (B, L, C) with ``steps`` Heun steps, store ``points`` + 1 states.

    ``steps`` must be an even multiple of ``points``. ``callback(done, total)`` counts
    evaluations of both solves.
    """
    if points < 1 or steps % points or steps % 2:
        raise ValueError(
            f"reference steps ({steps}) must be even and a multiple of the fine-grid points "
            f"({points})"
        )
    total = sampling.evaluations("heun", steps) + sampling.evaluations("heun", steps // 2)
    done = 0
    states, velocities = [x0], []
    stride = steps // points

    def counted(x: np.ndarray, t: float) -> np.ndarray:
        nonlocal done
        v = velocity_fn(x, t)
        done += 1
        if callback is not None:
            callback(done, total)
        return v

    def keep(i: int, _t: float, x: np.ndarray) -> None:
        if (i + 1) % stride == 0:
            states.append(x)

    def recording(x: np.ndarray, t: float) -> np.ndarray:
        v = counted(x, t)
        # Heun evaluates at each grid point first, then at the predicted next point: the
        # first evaluation at a stored grid time is v(x*(τ_i), τ_i).
        if len(velocities) < len(states) and abs(t - fine[len(velocities)]) < 0.5 / steps:
            velocities.append(v)
        return v

    grid = sampling.time_grid("uniform", steps)
    fine = np.asarray(grid[::stride], dtype=np.float64)
    end = sampling.heun(recording, x0, grid, callback=keep)
    half = sampling.heun(counted, x0, sampling.time_grid("uniform", steps // 2))
    assert len(states) == points + 1 and len(velocities) == points
    change = float(np.linalg.norm(_f64(half) - _f64(end)) / np.linalg.norm(_f64(end)))
    return Reference(
        times=fine,
        states=np.stack(states),
        velocities=np.stack(velocities),
        steps=steps,
        change=change,
    )


def relative_error(x: np.ndarray, ref: np.ndarray) -> float:
    """‖x − ref‖₂ / ‖ref‖₂ over the whole batch, in float64."""
    return float(np.linalg.norm(_f64(x) - _f64(ref)) / np.linalg.norm(_f64(ref)))


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)
