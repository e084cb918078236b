"""The grid search of v2a_runtime.tuning.search: known optima and exhaustive search agree."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from v2a_runtime.tuning import search


def _trajectory(fn, dfn, times, dims=3):
    """States x(t) = fn(t)·u and on-trajectory velocities dfn(t)·u, u a fixed unit vector."""
    u = np.linspace(1.0, 2.0, dims)
    u /= np.linalg.norm(u)
    states = np.stack([fn(t) * u for t in times])
    velocities = np.stack([dfn(t) * u for t in times[:-1]])
    return search.gram(times, states, velocities)


def _path_cost(family, g, path):
    euler = search.euler_costs(g)
    if family == "euler":
        return sum(euler[i, j] for i, j in itertools.pairwise(path))
    ab2 = search.ab2_costs(g)
    return euler[path[0], path[1]] + sum(
        ab2[k, i, j] for k, i, j in zip(path, path[1:], path[2:], strict=False)
    )


def test_euler_on_a_parabola_is_optimal_on_the_uniform_grid():
    # x = t² + 1: an Euler step of length h errs by exactly h², and Σh² at fixed Σh is least
    # for equal steps, so the K-step optimum on a uniform fine grid is every (N/K)-th point.
    times = np.linspace(0.0, 1.0, 13)
    g = _trajectory(lambda t: t * t + 1.0, lambda t: 2.0 * t, times)
    paths = search.shortest_paths("euler", g, 6)
    for k in (1, 2, 3, 4, 6):
        assert paths[k].indices == tuple(range(0, 13, 12 // k))
        # relative to ‖x(1)‖ = 2: K steps of h = 1/K cost K·h²/2
        assert paths[k].cost == pytest.approx(1.0 / (2 * k), rel=1e-12)


@pytest.mark.parametrize("family", search.FAMILIES)
def test_dynamic_programming_equals_exhaustive_search(family):
    # A field with a fast and a slow part on a non-uniform fine grid: no obvious optimum.
    times = np.concatenate([[0.0], np.sort(np.random.default_rng(0).uniform(0, 1, 9)), [1.0]])
    fn = lambda t: np.sin(7.0 * t) + 3.0 * t**3 + 0.5  # noqa: E731
    dfn = lambda t: 7.0 * np.cos(7.0 * t) + 9.0 * t**2  # noqa: E731
    g = _trajectory(fn, dfn, times)
    n = len(times) - 1
    paths = search.shortest_paths(family, g, 5)
    for k in range(1, 6):
        best = min(
            ((0, *inner, n) for inner in itertools.combinations(range(1, n), k - 1)),
            key=lambda p: _path_cost(family, g, p),
        )
        assert paths[k].indices == best
        assert paths[k].cost == pytest.approx(_path_cost(family, g, best), rel=1e-9)


def test_costs_equal_the_direct_local_errors():
    rng = np.random.default_rng(1)
    times = np.array([0.0, 0.2, 0.45, 0.7, 1.0])
    x, v = rng.standard_normal((5, 2, 3)), rng.standard_normal((4, 2, 3))
    g = search.gram(times, x, v)
    scale = np.linalg.norm(x[-1])
    e = x[1] + 0.5 * v[1] - x[3]  # Euler 1 -> 3
    assert search.euler_costs(g)[1, 3] == pytest.approx(np.linalg.norm(e) / scale, rel=1e-12)
    h, k = 0.55, 0.25  # AB2 2 -> 4 after 1 -> 2
    a, b = h * (1 + h / (2 * k)), -h * h / (2 * k)
    e = x[2] + a * v[2] + b * v[1] - x[4]
    assert search.ab2_costs(g)[1, 2, 4] == pytest.approx(np.linalg.norm(e) / scale, rel=1e-12)
    assert np.isinf(search.ab2_costs(g)[2, 1, 4]) and np.isinf(search.euler_costs(g)[3, 3])


def test_refuses_unknown_family_and_too_many_steps():
    g = _trajectory(lambda t: t + 1.0, lambda t: 1.0 + 0 * t, np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="unknown solver family 'heun'; known: euler, ab2"):
        search.shortest_paths("heun", g, 2)
    with pytest.raises(ValueError, match="steps must be in 1..4"):
        search.shortest_paths("euler", g, 5)
