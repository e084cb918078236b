"""Time grids by dynamic programming over a stored reference trajectory (GITS / OSS style).

The reference trajectory is the states x*(τ_i) of the ODE on a fine grid τ_0 = 0 < … < τ_N = 1
and the velocities v*_i = v(x*(τ_i), τ_i) the network gives there (:mod:`.reference`). A solver
step from τ_i to τ_j started *on* the trajectory has the local error

    e(i → j) = x*(τ_i) + Σ_m a_m·v*_{p_m} − x*(τ_j)

(Euler: a = τ_j − τ_i on v*_i; two-step Adams–Bashforth also uses v* at the previous grid
point). Chen et al. (GITS, ICML 2024, arXiv 2405.11326) take the sum of such local errors
along a path of K steps through the fine grid as its cost and find the cheapest path by
dynamic programming: it needs no network evaluation beyond the reference itself. Every error
here is a linear combination of stored vectors, so its squared norm is a quadratic form in their
Gram matrix (:func:`gram`), and a cost table costs O(N²) (Euler) or O(N³) (AB2) scalar
operations instead of as many passes over the latents.

Costs are relative: divided by ‖x*(1)‖, so one number means the same for every calibration set.
Pure numpy, deterministic (ties go to the lowest index), no network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAMILIES = ("euler", "ab2")  # one evaluation per step; v* at on-trajectory points suffices


@dataclass(frozen=True)
class Gram:
    """Inner products of the stored trajectory, flattened per time, float64.

    ``xx[i, j] = ⟨x*_i, x*_j⟩`` (N+1, N+1), ``xv[i, j] = ⟨x*_i, v*_j⟩`` (N+1, N),
    ``vv[i, j] = ⟨v*_i, v*_j⟩`` (N, N); ``times`` (N+1,).
    """

    times: np.ndarray
    xx: np.ndarray
    xv: np.ndarray
    vv: np.ndarray

    @property
    def points(self) -> int:
        """N + 1 fine-grid points."""
        return len(self.times)


def gram(times: np.ndarray, states: np.ndarray, velocities: np.ndarray) -> Gram:
    """The :class:`Gram` of ``states`` (N+1, ...) and ``velocities`` (N, ...) on ``times``,
    scaled so that ‖x*(1)‖ = 1 (costs are then relative errors)."""
    times = np.asarray(times, dtype=np.float64)
    n = len(times) - 1
    x = np.asarray(states, dtype=np.float64).reshape(n + 1, -1)  # (N+1, D)
    v = np.asarray(velocities, dtype=np.float64).reshape(n, -1)  # (N, D)
    if n < 1 or not np.all(np.diff(times) > 0) or times[0] != 0.0 or times[-1] != 1.0:
        raise ValueError("the fine grid must increase strictly from 0 to 1")
    scale = 1.0 / np.linalg.norm(x[-1])
    x, v = x * scale, v * scale
    return Gram(times=times, xx=x @ x.T, xv=x @ v.T, vv=v @ v.T)


def _ab2_coefficients(h: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variable-step AB2 weights on (v_i, v_prev): h after a step k (sampling._ab2_weights)."""
    return h * (1.0 + h / (2.0 * k)), -h * h / (2.0 * k)


def euler_costs(g: Gram) -> np.ndarray:
    """(N+1, N+1): ‖e(i → j)‖ of an Euler step on the trajectory; inf unless i < j."""
    n = g.points
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n), indexing="ij")  # (N, N+1)
    h = g.times[j] - g.times[i]
    sq = (
        g.xx[i, i] - 2.0 * g.xx[i, j] + g.xx[j, j]
        + 2.0 * h * (g.xv[i, i] - g.xv[j, i])
        + h * h * g.vv[i, i]
    )  # fmt: skip
    out = np.full((n, n), np.inf)
    out[:-1] = np.where(j > i, np.sqrt(np.maximum(sq, 0.0)), np.inf)
    return out


def ab2_costs(g: Gram) -> np.ndarray:
    """(N+1, N+1, N+1): ‖e(k → i → j)‖ of an AB2 step from τ_i to τ_j after the step from τ_k;
    inf unless k < i < j."""
    n = g.points
    k, i, j = np.meshgrid(np.arange(n - 1), np.arange(n - 1), np.arange(n), indexing="ij")
    valid = (k < i) & (i < j)
    k, i, j = np.where(valid, k, 0), np.where(valid, i, 1), np.where(valid, j, 2)
    a, b = _ab2_coefficients(g.times[j] - g.times[i], g.times[i] - g.times[k])
    # e = (x_i − x_j) + a·v_i + b·v_k
    sq = (
        g.xx[i, i] - 2.0 * g.xx[i, j] + g.xx[j, j]
        + a * a * g.vv[i, i] + b * b * g.vv[k, k] + 2.0 * a * b * g.vv[i, k]
        + 2.0 * a * (g.xv[i, i] - g.xv[j, i])
        + 2.0 * b * (g.xv[i, k] - g.xv[j, k])
    )  # fmt: skip
    out = np.full((n, n, n), np.inf)
    out[:-1, :-1] = np.where(valid, np.sqrt(np.maximum(sq, 0.0)), np.inf)
    return out


@dataclass(frozen=True)
class Path:
    """The cheapest path of ``steps`` steps: fine-grid indices (steps + 1,) from 0 to N."""

    indices: tuple[int, ...]
    cost: float  # sum of the steps' relative local errors

    @property
    def steps(self) -> int:
        return len(self.indices) - 1


def shortest_paths(family: str, g: Gram, max_steps: int) -> dict[int, Path]:
    """For every K in 1..max_steps, the K-step path 0 → N of least total local error."""
    if family not in FAMILIES:
        raise ValueError(f"unknown solver family {family!r}; known: {', '.join(FAMILIES)}")
    if not 1 <= max_steps < g.points:
        raise ValueError(f"steps must be in 1..{g.points - 1} for this fine grid, got {max_steps}")
    if family == "euler":
        return _paths_markov(euler_costs(g), max_steps)
    return _paths_pairs(euler_costs(g)[0], ab2_costs(g), max_steps)


def _paths_markov(cost: np.ndarray, max_steps: int) -> dict[int, Path]:
    """DP over the current point: best[k][j] = min_i best[k−1][i] + cost[i, j]."""
    n = cost.shape[0]
    best = np.full(n, np.inf)
    best[0] = 0.0
    parents, out = [], {}
    for k in range(1, max_steps + 1):
        total = best[:, None] + cost  # (i, j)
        arg = np.argmin(total, axis=0)  # first minimum: deterministic ties
        best = total[arg, np.arange(n)]
        parents.append(arg)
        if np.isfinite(best[-1]):
            path = [n - 1]
            for p in reversed(parents):
                path.append(int(p[path[-1]]))
            out[k] = Path(tuple(reversed(path)), float(best[-1]))
    return out


def _paths_pairs(first: np.ndarray, cost: np.ndarray, max_steps: int) -> dict[int, Path]:
    """DP over (previous, current) points for two-step methods; the first step is ``first``
    (N+1,) from point 0, later steps cost[k, i, j]."""
    n = len(first)
    best = np.full((n, n), np.inf)  # (previous i, current j) after one step
    best[0] = first
    parents, out = [], {}
    if np.isfinite(first[-1]):
        out[1] = Path((0, n - 1), float(first[-1]))
    for steps in range(2, max_steps + 1):
        total = best[:, :, None] + cost  # (k, i, j)
        arg = np.argmin(total, axis=0)  # (i, j): best k
        best = np.take_along_axis(total, arg[None], axis=0)[0]
        parents.append(arg)
        i = int(np.argmin(best[:, -1]))
        if np.isfinite(best[i, -1]):
            path = [n - 1, i]
            for p in reversed(parents):
                path.append(int(p[path[-1], path[-2]]))
            out[steps] = Path(tuple(reversed(path)), float(best[i, -1]))
    return out
