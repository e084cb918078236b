"""The sampling loop on TensorRT: the host loop (:class:`~v2a_runtime.backends.host.HostSampler`)
with the denoiser's conditions resident on the device for the whole window
(:meth:`TrtSession.resident`), so each evaluation uploads only x and t."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..base import StepCallback
from ..host import HostSampler
from .session import TrtSession


@dataclass(frozen=True)
class TrtSampler:
    """:class:`~v2a_runtime.backends.base.Sampler` for a TensorRT denoiser."""

    denoiser: TrtSession

    def __call__(
        self,
        x: np.ndarray,
        conditions: Mapping[str, np.ndarray],
        ts: np.ndarray,
        *,
        cfg: float,
        solver: str,
        callback: StepCallback | None = None,
    ) -> tuple[np.ndarray, int]:
        with self.denoiser.resident(conditions):
            host = HostSampler(self.denoiser)
            return host(x, {}, ts, cfg=cfg, solver=solver, callback=callback)


__all__ = ["TrtSampler"]
