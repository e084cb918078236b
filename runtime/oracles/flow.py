"""An analytic flow-matching problem: data from a Gaussian mixture, whose marginal velocity has a
closed form, and the float64 RK4 reference solve. The sampler tests and ``benchmarks/samplers.py``
measure solvers against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# name -> (seed, components K, dims C, std range); "mixture" is the headline problem.
PROBLEMS = {
    "mixture": (0, 8, 8, (0.05, 0.5)),
    "sharp": (0, 8, 8, (0.02, 0.1)),
    "smooth": (0, 8, 8, (0.2, 0.6)),
}


@dataclass(frozen=True)
class GaussianMixture:
    """Data x₁ ~ Σ_k w_k N(μ_k, s_k² I) in C dims; noise x₀ ~ N(0, I); x_t = (1 − t)x₀ + t·x₁.

    Given component k, (x₁, x_t) is jointly Gaussian with Var x_t = (1 − t)² + t²s_k² =: σ_k²,
    so E[x₁ − x₀ | x_t, k] = μ_k + (t·s_k² − (1 − t))/σ_k² · (x_t − t·μ_k), and the marginal
    velocity is that average weighted by the posterior p(k | x_t) ∝ w_k N(x_t; tμ_k, σ_k² I).
    """

    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, C)
    stds: np.ndarray  # (K,)

    @property
    def dims(self) -> int:
        return self.means.shape[1]

    def velocity(self, x: np.ndarray, t: float) -> np.ndarray:
        """The exact marginal velocity at (x, t), in x's dtype. x: (..., C)."""
        post, d, var = self._posterior(np.asarray(x, dtype=np.float64), t)
        coef = (t * self.stds**2 - (1.0 - t)) / var  # (K,)
        v_k = self.means + coef[:, None] * d  # (..., K, C)
        return np.einsum("...k,...kc->...c", post, v_k).astype(x.dtype, copy=False)

    def density(self, x: np.ndarray, t: float) -> np.ndarray:
        """p_t(x), float64. x: (..., C) -> (...)."""
        x = np.asarray(x, dtype=np.float64)
        var = (1.0 - t) ** 2 + t**2 * self.stds**2  # (K,)
        d2 = ((x[..., None, :] - t * self.means) ** 2).sum(-1)  # (..., K)
        norm = (2.0 * np.pi * var) ** (-0.5 * self.dims)
        return (self.weights * norm * np.exp(-0.5 * d2 / var)).sum(-1)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n data points x₁, (n, C) float64."""
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        return self.means[k] + self.stds[k, None] * rng.standard_normal((n, self.dims))

    def _posterior(self, x: np.ndarray, t: float):
        var = (1.0 - t) ** 2 + t**2 * self.stds**2  # (K,)
        d = x[..., None, :] - t * self.means  # (..., K, C)
        logp = np.log(self.weights) - 0.5 * self.dims * np.log(var) - 0.5 * (d**2).sum(-1) / var
        logp -= logp.max(-1, keepdims=True)
        post = np.exp(logp)  # (..., K)
        return post / post.sum(-1, keepdims=True), d, var


def random_mixture(seed: int, components: int, dims: int, std_range=(0.05, 0.5)):
    """A mixture with Dirichlet(3) weights, N(0, 1) means and log-uniform stds."""
    rng = np.random.default_rng(seed)
    lo, hi = std_range
    return GaussianMixture(
        weights=rng.dirichlet(np.full(components, 3.0)),
        means=rng.standard_normal((components, dims)),
        stds=np.exp(rng.uniform(np.log(lo), np.log(hi), components)),
    )


def rk4(velocity_fn: Callable, x0: np.ndarray, steps: int) -> np.ndarray:
    """Classical RK4 on a uniform grid from 0 to 1, in float64 (the analytic reference)."""
    x = np.asarray(x0, dtype=np.float64)
    h = 1.0 / steps
    for i in range(steps):
        t = i * h
        k1 = velocity_fn(x, t)
        k2 = velocity_fn(x + 0.5 * h * k1, t + 0.5 * h)
        k3 = velocity_fn(x + 0.5 * h * k2, t + 0.5 * h)
        k4 = velocity_fn(x + h * k3, t + h)
        x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return x


def relative_error(x: np.ndarray, ref: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(x, dtype=np.float64) - ref) / np.linalg.norm(ref))


__all__ = ["PROBLEMS", "GaussianMixture", "random_mixture", "relative_error", "rk4"]
