"""The sampling loop on TensorRT: the host loop (:class:`~v2a_runtime.backends.host.HostSampler`)
with the denoiser's conditions resident on the device for the whole window
(:meth:`TrtSession.resident`), so each evaluation uploads only x and t."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..base import SampleRequest
from ..host import HostSampler
from .session import TrtSession


@dataclass(frozen=True)
class TrtSampler:
    """:class:`~v2a_runtime.backends.base.Sampler` for a TensorRT denoiser."""

    denoiser: TrtSession

    def __call__(self, r: SampleRequest) -> tuple[np.ndarray, int]:
        with self.denoiser.resident(r.conditions):  # the host loop then feeds x and t only
            return HostSampler(self.denoiser)(replace(r, conditions={}))


__all__ = ["TrtSampler"]
