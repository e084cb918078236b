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


@dataclass(frozen=True)
class SampleRequest:
    """One integration of the flow from t = 0 (noise) to t = 1 (data)."""

    x: np.ndarray  # float32 (K, L, C): x₀
    # the denoiser's condition inputs, batched for the guided rows [cond × K; uncond × K]
    # (K rows when cfg is 1, v2a_runtime.guidance.is_guided)
    conditions: Mapping[str, np.ndarray]
    ts: np.ndarray  # the time grid, 0 … 1 (v2a_runtime.sampling.time_grid)
    cfg: float  # w in v = w·v_cond + (1 − w)·v_uncond
    solver: str  # a name from v2a_runtime.sampling.SOLVERS, or sampling.MULTISTEP
    callback: StepCallback | None = None  # after step i: (i, t, x), x None if on the device
    # the (N, N) weight table of the multistep solver (a tuned named sampler's), else None
    weights: np.ndarray | None = None


class Sampler(Protocol):
    """Runs a :class:`SampleRequest`; returns (x at t = 1, denoiser evaluations)."""

    def __call__(self, request: SampleRequest) -> tuple[np.ndarray, int]: ...


@dataclass(frozen=True)
class Backend:
    """A bundle's graphs loaded on one backend. Build with :func:`v2a_runtime.backends.load`."""

    name: str  # one of BACKENDS
    sessions: Mapping[str, Session]  # one per component
    sampler_factory: Callable[[Session], Sampler]  # the denoiser's session -> its sampler

    def sampler(self) -> Sampler:
        """The sampling loop for this backend's denoiser."""
        return self.sampler_factory(self.sessions["denoiser"])


__all__ = ["Backend", "BackendError", "SampleRequest", "Sampler", "Session", "StepCallback"]
