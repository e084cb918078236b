"""A :class:`~v2a_runtime.backends.base.Session` that records what it is fed: calibration of the
mixed-precision pass, the GPU benchmark's inputs and the tests read the real feeds of a
pipeline run through it (``Pipeline.with_sessions``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import TensorInfo
from .base import Session


@dataclass
class RecordingSession:
    """Runs ``session`` and keeps a copy of every feed, in call order."""

    session: Session
    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self.session.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self.session.outputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.feeds.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self.session.run(feeds)

    def shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """The shape of every input of every call."""
        return [{k: v.shape for k, v in f.items()} for f in self.feeds]


__all__ = ["RecordingSession"]
