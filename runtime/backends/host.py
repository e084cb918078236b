"""The sampling loop on the host, for any :class:`~v2a_runtime.backends.base.Session`: the numpy
solver of :mod:`v2a_runtime.sampling` with the guided velocity as its ``velocity_fn`` (one
batched denoiser run per evaluation)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .. import sampling
from ..guidance import combine, is_guided
from .base import SampleRequest, Session


@dataclass(frozen=True)
class HostSampler:
    """:class:`~v2a_runtime.backends.base.Sampler` over any session; x stays in numpy."""

    denoiser: Session

    def __call__(self, r: SampleRequest) -> tuple[np.ndarray, int]:
        evaluations = []
        velocity = guided_velocity(self.denoiser, r.conditions, r.cfg,
                                   on_call=lambda: evaluations.append(1))  # fmt: skip
        x = sampling.integrate(velocity, r.x, r.ts, solver=r.solver, weights=r.weights,
                               callback=r.callback)  # fmt: skip
        return x, len(evaluations)


def guided_velocity(
    denoiser: Session,
    conditions: Mapping[str, np.ndarray],
    cfg: float,
    *,
    on_call: Callable[[], None] | None = None,
) -> sampling.VelocityFn:
    """``velocity_fn(x (K, L, C), t)`` of ``denoiser`` with its condition feeds (batched for
    [cond × K; uncond × K], or K rows when ``cfg`` is 1): one pass over [x; x] and
    v = w·v_cond + (1 − w)·v_uncond (:func:`~v2a_runtime.guidance.combine`). ``on_call()``
    after each pass. The host loop's velocity, and the sampler tuner's."""
    guided = is_guided(cfg)

    def velocity(x: np.ndarray, t: float) -> np.ndarray:
        xb = np.concatenate([x, x]) if guided else x  # (2K, L, C)
        tb = np.full(xb.shape[0], t, dtype=np.float32)  # (2K,)
        v = denoiser.run({"x": xb, "t": tb, **conditions})["velocity"]  # (2K, L, C)
        if on_call is not None:
            on_call()
        return combine(v, cfg) if guided else v  # (K, L, C)

    return velocity


__all__ = ["HostSampler", "guided_velocity"]
