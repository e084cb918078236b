"""Multistep weights fitted by least squares on reference trajectories (forward only).

Bespoke solvers (Shaul et al., ICLR 2024, arXiv 2310.19075) and their non-stationary successor
BNS (Shaul et al., ICML 2024) learn a few per-step coefficients of a solver by gradient descent
through the sampling loop. With an explicit linear multistep method (:func:`v2a_runtime.sampling.
multistep`) on a fixed grid, step i is linear in its weights,

    x_{i+1} = x_i + Σ_{m ≤ i} w_{i,m}·v_m,      v_m = v(x_m, t_m),

so, step after step, the weights that bring x_{i+1} closest to the reference state x*(t_{i+1})
of the same noise are a least-squares problem with at most i + 1 unknowns over all latent
values of the calibration set: no gradients, one batched network evaluation per step. A small
ridge term pulls the weights toward the base solver's (Euler or AB2 on the same grid), which
keeps a step well posed when two velocities are nearly parallel.
"""

from __future__ import annotations

import numpy as np

from .. import sampling

RIDGE = 1e-4  # relative to the mean squared velocity norm of the step's history


def fit_weights(
    velocity_fn: sampling.VelocityFn,
    x0: np.ndarray,
    ts: np.ndarray,
    targets: np.ndarray,
    base: np.ndarray,
    *,
    ridge: float = RIDGE,
    callback=None,
) -> tuple[np.ndarray, np.ndarray]:
    """The (N, N) lower-triangular weight table for the grid ``ts`` (N + 1 points), and the
    final state of ``x0`` under it (the same arithmetic as :func:`sampling.multistep`).

    ``x0`` (B, L, C) noise; ``targets`` (N + 1, B, L, C) the reference states at ``ts``;
    ``base`` (N, N) the table the ridge term pulls toward (:func:`sampling.multistep_weights`).
    ``callback(i)`` after each of the N evaluations.
    """
    t = [float(s) for s in np.asarray(ts, dtype=np.float64)]
    n = len(t) - 1
    table = np.zeros((n, n))
    x, history = x0, []
    for i in range(n):
        history.append(velocity_fn(x, t[i]))
        a = np.stack([v.ravel() for v in history], axis=1).astype(np.float64)  # (D, i + 1)
        r = targets[i + 1].ravel().astype(np.float64) - x.ravel()  # (D,)
        gram = a.T @ a
        lam = ridge * float(np.trace(gram)) / (i + 1)
        w = np.linalg.solve(gram + lam * np.eye(i + 1), a.T @ r + lam * base[i, : i + 1])
        table[i, : i + 1] = w
        x = x + sum(float(w[m]) * history[m] for m in range(i + 1))  # as sampling.multistep
        if callback is not None:
            callback(i)
    return table, x
