"""Blocks of analysis frames with their context, shared by the block-wise embedder
(:mod:`.stream`) and detector (:mod:`.scan`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A block of frames [f0, f1) computed on [e0, e1) (the block and its context)."""

    f0: int
    f1: int
    e0: int
    e1: int

    @property
    def rows(self) -> slice:
        return slice(self.f0 - self.e0, self.f1 - self.e0)


def spans(n_frames: int, block: int, margin: int) -> Iterator[Span]:
    """Blocks of ``block`` frames covering [0, n_frames), each with ``margin`` frames of
    context on both sides (cut at the ends)."""
    for f0 in range(0, n_frames, block):
        f1 = min(n_frames, f0 + block)
        yield Span(f0, f1, max(0, f0 - margin), min(n_frames, f1 + margin))


__all__ = ["Span", "spans"]
