"""Long videos in overlapping windows, and the equal-power cross-fade that joins them.

A span no longer than the model's ``max_duration`` (what its graphs accept; the trained duration
plus one ``unit`` when not given) is one window: a 9 s clip costs one 9 s window, not two of
8 s. A longer span is covered by windows of the trained duration (the last one up to one
``unit`` longer, so the windows end
exactly at the end of the span) whose starts are whole multiples of ``unit`` (1 s): at the
model's frame rates (8 and 25 fps) and sample rates, a whole second is a whole number of clip
frames, sync frames and audio samples, so a window cut from decoded frames is exactly the
window decoded on its own. Consecutive windows overlap by at least ``overlap`` seconds and are
spaced evenly; only neighbours overlap.

In each overlap the outgoing window fades out with cos and the incoming one fades in with sin
of the same ramp (equal power: cos² + sin² = 1), which keeps the loudness of two independent
generations constant across the seam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UNIT = 1.0  # seconds; window starts are multiples of this


@dataclass(frozen=True)
class Window:
    start: float  # seconds from the start of the span
    duration: float  # seconds


def plan_windows(
    duration: float,
    window: float,
    *,
    overlap: float = 1.0,
    max_duration: float | None = None,
    unit: float = UNIT,
) -> tuple[Window, ...]:
    """Windows covering ``[0, duration)``; one window when ``duration <= max_duration``."""
    if not duration > 0:
        raise ValueError(f"duration must be > 0 s, got {duration!r}")
    if not 0 <= overlap <= window - unit:
        raise ValueError(
            f"overlap must be between 0 and window - {unit:g} s = {window - unit:g} s, "
            f"got {overlap!r}"
        )
    max_duration = window + unit if max_duration is None else max_duration
    if duration <= max(window, max_duration) + 1e-9:
        return (Window(0.0, float(duration)),)
    last = math.floor((duration - window) / unit + 1e-9)  # in units
    if duration - last * unit > max_duration + 1e-9:
        last += 1  # the last window would be too long: start it later, make it shorter
    if last == 0:
        return (Window(0.0, float(duration)),)  # at most one unit longer than a window
    step = max(1, math.floor((window - overlap) / unit + 1e-9))  # longest spacing, in units
    n = 1 + math.ceil(last / step)
    starts = [round(i * last / (n - 1)) * unit for i in range(n)]
    windows = [Window(float(s), float(window)) for s in starts[:-1]]
    windows.append(Window(float(starts[-1]), float(duration - starts[-1])))
    for a, b in zip(windows[:-2], windows[2:], strict=True):
        assert a.start + a.duration <= b.start + 1e-9, f"windows {a} and {b} overlap"
    return tuple(windows)


def crossfade(parts: list[np.ndarray], offsets: list[int], total: int) -> np.ndarray:
    """Join ``parts`` (each float32 (K, n_i), placed at sample ``offsets[i]``) into (K, total).

    Where part i and part i+1 overlap, part i fades out (cos) and part i+1 fades in (sin).
    Samples beyond ``total`` are dropped; a gap (none with :func:`plan_windows`) stays silent.
    """
    if len(parts) != len(offsets) or not parts:
        raise ValueError(f"need one offset per part, got {len(parts)} parts, {len(offsets)}")
    joiner = Crossfader(offsets, total, parts[0].shape[0])
    return np.concatenate([joiner.add(part) for part in parts] + [joiner.finish()], axis=1)


class Crossfader:
    """:func:`crossfade` as the parts come: :meth:`add` takes part i (its offset is
    ``offsets[i]``) and returns the samples that no later part touches, (K, n) float32 in
    order; :meth:`finish` returns the rest up to ``total``. Only the overlap with the next part
    is kept in between, and the result equals :func:`crossfade` bit for bit."""

    def __init__(self, offsets: list[int], total: int, channels: int):
        if any(b < a for a, b in zip(offsets[:-1], offsets[1:], strict=True)):
            raise ValueError(f"offsets must not decrease, got {offsets}")
        self.offsets, self.total = list(offsets), total
        self.done = 0  # samples returned so far
        self.pending = np.zeros((channels, 0), np.float32)  # samples [done, done + n)
        self.end = None  # where the previous part ended
        self.i = 0

    def add(self, part: np.ndarray) -> np.ndarray:
        if self.i >= len(self.offsets):
            raise ValueError(f"more parts than offsets ({len(self.offsets)})")
        i, offset = self.i, self.offsets[self.i]
        end = offset + part.shape[1]
        gain = np.ones(part.shape[1], dtype=np.float32)
        if self.end is not None and self.end > offset:  # fade in over the previous overlap
            n = min(self.end - offset, part.shape[1])
            gain[:n] *= np.sin(_ramp(n))
        nxt = self.offsets[i + 1] if i + 1 < len(self.offsets) else None
        if nxt is not None and end > nxt:  # fade out before the next part
            n = min(end - nxt, part.shape[1])
            gain[part.shape[1] - n :] *= np.cos(_ramp(n))
        stop = min(end, self.total)
        self._grow(stop)
        if stop > offset:
            cut = offset - self.done
            self.pending[:, cut : cut + stop - offset] += part[:, : stop - offset] * gain[
                : stop - offset
            ]  # (K, n)
        self.end, self.i = end, i + 1
        return self._take(self.total if nxt is None else min(nxt, self.total))

    def end_at(self, total: int) -> None:
        """The next part is the last one and the result ends at ``total`` samples (a truncated
        file): as if :func:`crossfade` had been given only the parts up to it."""
        self.offsets, self.total = self.offsets[: self.i + 1], total

    def finish(self) -> np.ndarray:
        self._grow(self.total)
        return self._take(self.total)

    def _grow(self, stop: int) -> None:
        have = self.done + self.pending.shape[1]
        if stop > have:
            pad = np.zeros((self.pending.shape[0], stop - have), np.float32)
            self.pending = np.concatenate([self.pending, pad], axis=1)

    def _take(self, stop: int) -> np.ndarray:
        self._grow(stop)
        n = max(stop - self.done, 0)
        out, self.pending = self.pending[:, :n], self.pending[:, n:]
        self.done += n
        return out


def _ramp(n: int) -> np.ndarray:
    """n angles rising from 0 to pi/2, centred in each sample: (j + 0.5) / n * pi / 2."""
    return ((np.arange(n, dtype=np.float64) + 0.5) / n * (np.pi / 2)).astype(np.float32)
