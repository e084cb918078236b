"""Long audio read in blocks, so that no step needs a whole track in memory.

A :class:`Signal` is ``channels`` × ``length`` samples at ``rate`` that can be read back in any
range, as often as needed (``read(start, stop) -> float64 (channels, stop - start)``, zeros
outside ``[0, length)``). Three kinds:

- :class:`ArraySignal`: an array already in memory;
- :class:`Spool`: float32 samples appended once to a temporary file, then read back (the
  generated tracks of a long video, a decoded audio track), deleted on :meth:`Spool.close`
  (:class:`MemorySpool`: the same in memory, for callers that want the whole array anyway);
- :class:`MonoMix`: the mean of another signal's channels;
- :class:`Resampled`: another signal at another rate, computed per block with
  ``scipy.signal.resample_poly`` on the block and enough context on each side; block
  boundaries are aligned to the polyphase period, so a block equals the same range of the
  whole signal resampled at once (tested bit for bit).

:func:`blocks` walks a signal in order; the watermark's multi-pass embedder
(:mod:`v2a_runtime.watermark.stream`) reads signals; the muxer and the audio writers take a
:class:`Track` (blocks in order, read once) or an array.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy.signal import resample_poly

BLOCK = 1 << 18  # samples per block when a signal is walked (16 s at 16 kHz)


class Signal(Protocol):
    rate: int
    channels: int
    length: int  # samples per channel

    def read(self, start: int, stop: int) -> np.ndarray:
        """float64 (channels, stop - start); zeros outside [0, length)."""
        ...


def blocks(signal: Signal, block: int = BLOCK) -> Iterator[np.ndarray]:
    """``signal`` from start to end in (channels, ≤ block) float64 pieces."""
    for start in range(0, signal.length, block):
        yield signal.read(start, min(start + block, signal.length))


def _window(data, length: int, start: int, stop: int, read) -> np.ndarray:
    """Rows [start, stop) of a (channels, length) source with zeros outside it."""
    if stop < start:
        raise ValueError(f"read({start}, {stop}): stop < start")
    lo, hi = max(start, 0), min(stop, length)
    if lo == start and hi == stop:
        return read(lo, hi)
    out = np.zeros((data, stop - start))
    if hi > lo:
        out[:, lo - start : hi - start] = read(lo, hi)
    return out


@dataclass(frozen=True)
class ArraySignal:
    data: np.ndarray  # (channels, length)
    rate: int

    @property
    def channels(self) -> int:
        return self.data.shape[0]

    @property
    def length(self) -> int:
        return self.data.shape[1]

    def read(self, start: int, stop: int) -> np.ndarray:
        return _window(self.channels, self.length, start, stop,
                       lambda a, b: self.data[:, a:b].astype(np.float64))  # fmt: skip

    def channel(self, k: int) -> ChannelOf:
        return ChannelOf(self, k)


class Spool:
    """float32 (channels, length) kept in a temporary file: append blocks, then read them.

    The file holds frames of ``channels`` interleaved samples (4 bytes each; 8 with
    ``dtype=np.float64``, for intermediate results that must stay exact); the data lives
    on disk, not in this process's memory. Use as a context manager (the file is removed on
    exit)."""

    def __init__(self, channels: int, rate: int, directory: str | os.PathLike | None = None,
                 dtype=np.float32):
        self.channels, self.rate, self.length = int(channels), int(rate), 0
        self.dtype = np.dtype(dtype)  # float32 (4 bytes a sample) or float64 (exact)
        suffix = f".f{8 * self.dtype.itemsize}"
        fd, name = tempfile.mkstemp(prefix=".v2a-spool-", suffix=suffix, dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(fd, "w+b")

    def append(self, block: np.ndarray) -> None:
        """Add (channels, n) samples at the end."""
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, n) samples, got {block.shape}")
        self._file.seek(0, os.SEEK_END)
        self._file.write(np.ascontiguousarray(block.T, dtype=self.dtype).tobytes())
        self.length += block.shape[1]

    def read(self, start: int, stop: int) -> np.ndarray:
        return _window(self.channels, self.length, start, stop, self._read)

    def _read(self, start: int, stop: int) -> np.ndarray:
        size = self.channels * self.dtype.itemsize
        self._file.seek(start * size)
        raw = self._file.read((stop - start) * size)
        frames = np.frombuffer(raw, self.dtype).reshape(stop - start, self.channels)
        return frames.T.astype(np.float64)

    def channel(self, k: int) -> ChannelOf:
        return ChannelOf(self, k)

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MemorySpool:
    """:class:`Spool` in memory (float32 blocks, joined on the first read)."""

    def __init__(self, channels: int, rate: int, dtype=np.float32):
        self.channels, self.rate, self.length = int(channels), int(rate), 0
        self.dtype = np.dtype(dtype)
        self._blocks: list[np.ndarray] = []

    def append(self, block: np.ndarray) -> None:
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, n) samples, got {block.shape}")
        self._blocks.append(block.astype(self.dtype))
        self.length += block.shape[1]

    def read(self, start: int, stop: int) -> np.ndarray:
        if len(self._blocks) != 1:
            empty = np.zeros((self.channels, 0), self.dtype)
            self._blocks = [np.concatenate([empty, *self._blocks], axis=1)]
        data = self._blocks[0]
        return _window(self.channels, self.length, start, stop,
                       lambda a, b: data[:, a:b].astype(np.float64))  # fmt: skip

    def channel(self, k: int) -> ChannelOf:
        return ChannelOf(self, k)

    def close(self) -> None:
        self._blocks = []

    def __enter__(self) -> MemorySpool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def spooled(signal: Signal, directory: str | os.PathLike | None = "", dtype=np.float32,
            block: int = BLOCK):
    """``signal`` written, block by block, into a :class:`Spool` in ``directory`` ("" = the
    system's temporary directory; None = a :class:`MemorySpool`), removed on exit (a context
    manager)."""
    track = Track(signal.channels, signal.length, lambda: blocks(signal, block))
    return spooled_track(track, signal.rate, directory, dtype)


@contextmanager
def spooled_track(track: Track, rate: int, directory: str | os.PathLike | None = "",
                  dtype=np.float32) -> Iterator[Spool | MemorySpool]:
    """:func:`spooled` for a :class:`Track` (its blocks, read once) at ``rate``."""
    store = (MemorySpool(track.channels, rate, dtype) if directory is None
             else Spool(track.channels, rate, directory or None, dtype))  # fmt: skip
    with store:
        for b in track.blocks():
            store.append(b)
        yield store


@dataclass(frozen=True)
class Track:
    """Audio for a writer: ``channels`` × ``length`` samples as float (channels, n) blocks,
    in order, from ``blocks()`` (a fresh iterator per call)."""

    channels: int
    length: int
    blocks: Callable[[], Iterator[np.ndarray]]

    @classmethod
    def of(cls, signal: Signal, dtype=np.float32) -> Track:
        return cls(signal.channels, signal.length,
                   lambda: (b.astype(dtype) for b in blocks(signal)))  # fmt: skip

    @classmethod
    def from_array(cls, audio: np.ndarray, block: int = BLOCK) -> Track:
        """A (channels, W) array in blocks (views, no copy)."""
        n = audio.shape[1]
        return cls(audio.shape[0], n,
                   lambda: (audio[:, a : a + block] for a in range(0, n, block)))  # fmt: skip


@dataclass(frozen=True)
class Derived:
    """A signal computed from ``signal`` sample for sample (subclasses add their parameters
    and ``read``): the same rate, channels and length."""

    signal: Signal

    @property
    def rate(self) -> int:
        return self.signal.rate

    @property
    def channels(self) -> int:
        return self.signal.channels

    @property
    def length(self) -> int:
        return self.signal.length


@dataclass(frozen=True)
class OneChannel(Derived):
    """A one-channel signal computed from ``signal`` (same rate and length)."""

    @property
    def channels(self) -> int:
        return 1


@dataclass(frozen=True)
class ChannelOf(OneChannel):
    """Channel ``k`` of a signal as a one-channel signal (track k of a K-track spool)."""

    k: int

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.signal.read(start, stop)[self.k : self.k + 1]


@dataclass(frozen=True)
class MonoMix(OneChannel):
    """The mean of a signal's channels as a one-channel signal (float64, channel by channel
    in order: every range equals the same range of the whole array's ``mean(axis=0)``)."""

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.signal.read(start, stop).mean(axis=0, keepdims=True)  # (1, n)


def ratio(rate_from: int, rate_to: int) -> tuple[int, int]:
    """(up, down) of a rate change, as the watermark's ``resample`` uses it."""
    r = Fraction(rate_to, rate_from).limit_denominator(1024)
    return r.numerator, r.denominator


@dataclass(frozen=True)
class Resampled:
    """``signal`` at ``rate``: equal to ``resample_poly(whole, up, down)`` on every range,
    its length ``ceil(length · up / down)`` (zeros after it, as a whole-array resample's
    consumers pad)."""

    signal: Signal
    rate: int
    exact: bool = False  # the ratio in lowest terms (the writers' resample), not limited to
    # denominators <= 1024 (the watermark's)

    @property
    def channels(self) -> int:
        return self.signal.channels

    @property
    def ratio(self) -> tuple[int, int]:
        if self.exact:
            g = math.gcd(self.signal.rate, self.rate)
            return self.rate // g, self.signal.rate // g
        return ratio(self.signal.rate, self.rate)

    @property
    def length(self) -> int:
        up, down = self.ratio
        return -(-self.signal.length * up // down)

    def read(self, start: int, stop: int) -> np.ndarray:
        return _window(self.channels, self.length, start, stop, self._read)

    def _read(self, start: int, stop: int) -> np.ndarray:
        up, down = self.ratio
        if up == down == 1:
            return self.signal.read(start, stop)
        a, b = start // up * up, -(-stop // up) * up  # output range on the polyphase period
        half = 10 * max(up, down)  # resample_poly's filter half length (upsampled samples)
        margin = (math.ceil(half / up / down) + 1) * down  # input samples, whole periods
        x = self.signal.read(a // up * down - margin, b // up * down + margin)
        y = resample_poly(x, up, down, axis=-1)
        skip = margin // down * up
        return y[:, skip + start - a : skip + stop - a]
