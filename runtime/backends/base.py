"""The one small protocol every backend implements, and the metadata it exposes.

A :class:`Session` runs one exported graph: ``run(feeds) -> outputs`` with numpy arrays keyed
by the contract's tensor names (docs/contract.md). ``inputs``/``outputs`` describe the graph as
the backend sees it, so the bundle reader can compare them with the manifest. Device-resident
variants (onnxruntime IO binding, TensorRT bindings) are added by backends that have them; the
pipeline only relies on ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

Dim = str | int  # a glossary symbol ("B", "L", ...) or a static size


@dataclass(frozen=True)
class TensorInfo:
    """Name, numpy dtype name and symbolic shape of one graph input or output."""

    name: str
    dtype: str  # numpy name: "float32", "int64", "uint8", ...
    shape: tuple[Dim, ...]


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
