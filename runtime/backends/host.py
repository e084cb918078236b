"""The sampling loop on the host, for any :class:`~v2a_runtime.backends.base.Session`: the numpy
solver of :mod:`v2a_runtime.sampling` with the guided velocity as its ``velocity_fn`` (one
batched denoiser run per evaluation)."""

from __future__ import annotations

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
        guided, evaluations = is_guided(r.cfg), []

        def velocity(x: np.ndarray, t: float) -> np.ndarray:
            xb = np.concatenate([x, x]) if guided else x  # (2K, L, C)
            tb = np.full(xb.shape[0], t, dtype=np.float32)  # (2K,)
            v = self.denoiser.run({"x": xb, "t": tb, **r.conditions})["velocity"]  # (2K, L, C)
            evaluations.append(t)
            return combine(v, r.cfg) if guided else v  # (K, L, C)

        x = sampling.get_solver(r.solver)(velocity, r.x, r.ts, callback=r.callback)
        return x, len(evaluations)


__all__ = ["HostSampler"]
