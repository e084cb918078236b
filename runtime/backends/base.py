"""The two small protocols every backend implements, and the object a backend loads into.

A :class:`Session` runs one exported graph: ``run(feeds) -> outputs`` with numpy arrays keyed
by the contract's tensor names (docs/contract.md). ``inputs``/``outputs`` describe the graph as
the backend sees it, so the bundle reader can compare them with the manifest.

A :class:`Sampler` integrates the flow over a time grid with the denoiser: the host loop
(:class:`~v2a_runtime.backends.host.HostSampler`) works with any session; a backend that can
keep the loop on the device offers its own. :class:`Backend` holds a bundle's sessions and the
factory of its sampler; the pipeline asks it for one (:meth:`Backend.sampler`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..config import TensorInfo

StepCallback = Callable[[int, float, "np.ndarray | None"], None]  # (step, t, x or None)


class BackendError(ValueError):
    """A backend cannot load or run a graph (missing provider, unreadable file, bad feed)."""


@runtime_checkable
class Session(Protocol):
    """One loaded graph on one device."""

    @property
    def inputs(self) -> tuple[TensorInfo, ...]: ...

    @property
    def outputs(self) -> tuple[TensorInfo, ...]: ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Sampler(Protocol):
    """Integrate x (K, L, C) float32 from t = 0 (noise) to 1 (data) over the grid ``ts``.

    ``conditions``: the denoiser's condition inputs, batched for the guided rows
    [cond × K; uncond × K] (K rows when ``cfg`` is 1, :func:`v2a_runtime.guidance.is_guided`);
    the velocity is v = w·v_cond + (1 − w)·v_uncond. ``callback(i, t, x)`` runs after step i
    (x may be None when it stays on the device). Returns (x at t = 1, denoiser evaluations).
    """

    def __call__(
        self,
        x: np.ndarray,
        conditions: Mapping[str, np.ndarray],
        ts: np.ndarray,
        *,
        cfg: float,
        solver: str,
        callback: StepCallback | None = None,
    ) -> tuple[np.ndarray, int]: ...


@dataclass(frozen=True)
class Backend:
    """A bundle's graphs loaded on one backend. Build with :func:`v2a_runtime.backends.load`."""

    name: str  # one of BACKENDS
    sessions: Mapping[str, Session]  # one per component
    sampler_factory: Callable[[Session], Sampler]  # the denoiser's session -> its sampler

    def sampler(self) -> Sampler:
        """The sampling loop for this backend's denoiser."""
        return self.sampler_factory(self.sessions["denoiser"])


__all__ = ["Backend", "BackendError", "Sampler", "Session", "StepCallback"]
