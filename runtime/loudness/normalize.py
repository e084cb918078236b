"""Bringing a signal to a loudness target under a true-peak ceiling, block by block.

    with normalized(signal, Loudness(-23, -1), spool="") as (out, report): ...
    trimmed(signal, ceiling_db) -> (signal, factor or None)

The gain that brings the integrated loudness to the target is applied; where that lifts a true
peak above the ceiling the look-ahead limiter (:class:`~.peaks.Limited`) pulls the peaks down
and the loudness is measured again, up to ``PASSES`` rounds; a last static trim guarantees the
ceiling. Each round reads the previous round's result and writes its own to a float64 spool
("" = the system's temporary directory, a directory, or None = memory), so a round costs one
limiter pass however many came before, memory holds one block, and every sample equals what
the same steps give on the whole array (the meter and the limiter are exact per block, see
their modules). Silence (every 400 ms block under -70 LUFS) is returned unchanged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from ..signals import Signal, spooled
from .meter import integrated
from .peaks import BLOCK, Gained, Limited, max_peak, true_peak

PASSES = 4  # gain + limiter rounds
TOLERANCE_LU = 0.1  # stop once the loudness is this close to the target
HEADROOM = 0.999  # the ceiling, a hair lower: float32 and 16-bit rounding


@dataclass(frozen=True)
class Loudness:
    """A loudness target: integrated loudness in LUFS and the true-peak ceiling in dBTP."""

    target: float = -23.0  # EBU R128
    true_peak: float = -1.0  # EBU R128 (lossy delivery: -1 dBTP)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target) and -70.0 < self.target <= 0.0):
            raise ValueError(f"loudness target must be in (-70, 0] LUFS, got {self.target!r}")
        if not (math.isfinite(self.true_peak) and -20.0 <= self.true_peak <= 0.0):
            raise ValueError(f"true-peak ceiling must be in [-20, 0] dBTP, got {self.true_peak!r}")


@dataclass(frozen=True)
class LoudnessReport:
    """What normalisation measured and did to one track."""

    before: float  # integrated loudness of the input, LUFS (-inf: silence)
    after: float  # integrated loudness of the output, LUFS
    true_peak: float  # true peak of the output, dBTP
    gain_db: float  # overall gain (loudness after - before); 0 for silence
    limited: bool  # the peak limiter acted (the target alone would exceed the ceiling)

    def to_dict(self) -> dict:
        def num(x: float) -> float | None:  # JSON has no -inf
            return round(x, 3) if math.isfinite(x) else None

        return {"before_lufs": num(self.before), "after_lufs": num(self.after),
                "true_peak_dbtp": num(self.true_peak), "gain_db": num(self.gain_db),
                "limited": self.limited}  # fmt: skip


@contextmanager
def normalized(
    signal: Signal,
    loudness: Loudness = Loudness(),
    *,
    spool: str | os.PathLike | None = "",
    block: int = BLOCK,
) -> Iterator[tuple[Signal, LoudnessReport]]:
    """``signal`` at ``loudness.target`` LUFS with true peaks at or below
    ``loudness.true_peak`` dBTP (float64, valid inside the ``with`` block), and the report."""
    before = integrated(signal, block)
    if before == -math.inf:
        yield signal, LoudnessReport(before, before, true_peak(signal, block), 0.0, False)
        return
    ceiling = 10 ** (loudness.true_peak / 20) * HEADROOM
    with ExitStack() as rounds:
        y, limited, now = signal, False, before
        for _ in range(PASSES):
            y = Gained(y, 10 ** ((loudness.target - now) / 20))
            if max_peak(y, block) > ceiling:
                y, limited = Limited(y, ceiling), True
            done = ExitStack()
            y = done.enter_context(spooled(y, spool, "float64", block))
            rounds.close()  # the previous round's spool is read no more
            rounds.push(done)
            now = integrated(y, block)
            if abs(now - loudness.target) <= TOLERANCE_LU:
                break
        y, _ = trimmed(y, loudness.true_peak, block)
        after = integrated(y, block)
        yield y, LoudnessReport(before, after, true_peak(y, block), after - before, limited)


def trimmed(signal: Signal, ceiling_db: float, block: int = BLOCK, *,
            dtype: str = "float64") -> tuple[Signal, float | None]:
    """``signal`` scaled down (one static gain, returned; None = unchanged) so that its true
    peak is at most ``ceiling_db`` dBTP (e.g. after a watermark added a little energy); the
    product in ``dtype`` arithmetic (see :class:`~.peaks.Gained`)."""
    peak = true_peak(signal, block)
    limit = ceiling_db + 20 * math.log10(HEADROOM)
    if peak <= limit:
        return signal, None
    factor = 10 ** ((limit - peak) / 20)
    return Gained(signal, factor, dtype), factor


__all__ = ["Loudness", "LoudnessReport", "normalized", "trimmed"]
