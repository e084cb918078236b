"""Embedding in blocks of frames: memory bounded by the block, not by the length of the audio.

The mark of a clip depends on a few statistics of the whole clip: the loud-frame level (95th
percentile of the frame levels: which frames are active), the SNR cap, the closed loop's
per-direction responses, the whitening predictor and per-cell level of the features, and the
final SNR hold. Each is a sum over frames (or, for the percentile, one float per frame), so the
embedder walks the signal in passes, each over blocks of ``block_frames`` frames computed with
``MARGIN`` frames of context on either side, and keeps only those statistics between passes:

1. frame levels and host energies;  2. the SNR cap;  3-5. per closed-loop pass: the marked
signal's per-cell level, the predictor's normal equations, the per-direction responses;
6. the rendered mark's energy (the SNR hold);  7. the output, block by block.

Every per-frame and per-sample step is the one of the whole-clip code (``embed.py``,
``features.py``, ``shaping.py``) run on the block with its context, so a block equals the same
frames of the whole clip computed at once, except for the summation order of the statistics
(and of running-sum filters), which moves the output by float rounding only (the tests hold
the output of today's whole-clip embedder to 1e-6 and its verdict and payload exactly).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..signals import ArraySignal, Resampled, Signal
from .coding import CODED_BITS, encode_payload
from .embed import SCALE_RANGE, as_channels, cell_signs, gate, render
from .features import (
    active_frames,
    cell_power,
    frame_count,
    frame_levels_db,
    log_energy,
    neighbours,
    predictor_sums,
    solve_predictor,
    stft_frames,
    whitened,
)
from .keys import WatermarkKey
from .layout import DEFAULT_CONFIG, WatermarkConfig, make_layout
from .shaping import cap_factor, gain_limits, mark_energy
from .spans import Span, spans

BLOCK_FRAMES = 256  # frames per block: 8.2 s at the 16 kHz analysis rate
MARGIN = 8  # frames of context on each side; the chain's longest reach is 5
OUTPUT_BLOCK = 1 << 17  # output samples per yielded block


def embed(audio: np.ndarray, sample_rate: int, key: WatermarkKey, payload: int, *,
          config: WatermarkConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Watermark ``audio`` ((W,) mono or (channels, W), float in [-1, 1]) with ``payload``.

    Returns a new array of the same shape and dtype, clipped to [-1, 1]; the input is untouched.
    """
    signal = ArraySignal(as_channels(audio), int(sample_rate))
    out = np.concatenate(list(embed_blocks(signal, key, payload, config=config)), axis=1)
    return out.reshape(np.shape(audio)).astype(np.asarray(audio).dtype)


def embed_blocks(signal: Signal, key: WatermarkKey, payload: int, *,
                 config: WatermarkConfig = DEFAULT_CONFIG,
                 block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """The marked ``signal``, (channels, n) float64 blocks in order, clipped to [-1, 1]."""
    return mark(signal, key, payload, config=config, block_frames=block_frames).blocks()


def mark(signal: Signal, key: WatermarkKey, payload: int, *,
         config: WatermarkConfig = DEFAULT_CONFIG, block_frames: int = BLOCK_FRAMES) -> Marked:
    """Run the analysis passes (the signal is read once per pass); ``.blocks()`` then renders
    the marked signal, as often as asked."""
    if signal.rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz, got {signal.rate}")
    if signal.length == 0 or not 1 <= signal.channels <= 16:
        raise ValueError(f"audio must have shape (W,) or (channels, W) with 1-16 channels, "
                         f"got ({signal.channels}, {signal.length})")
    marked = Marked(signal, key, payload, config, block_frames)
    if marked.n_frames > 0:
        marked.analyse()
    return marked


class Marked:
    """A signal and the statistics of its mark (after :meth:`analyse`)."""

    def __init__(self, signal: Signal, key: WatermarkKey, payload: int,
                 config: WatermarkConfig, block_frames: int):
        self.signal, self.config, self.block = signal, config, block_frames
        self.x16 = Resampled(signal, config.sample_rate)
        self.n16 = self.x16.length
        self.n_frames = frame_count(self.n16, config)
        layout = make_layout(key.secret, config)
        self.sign_block, self.dir_block = cell_signs(layout, encode_payload(payload))  # (T, C)

    # --- per block ---------------------------------------------------------------------------

    def spans(self) -> Iterator[Span]:
        return spans(self.n_frames, self.block, MARGIN)

    def samples(self, lo: int, hi: int) -> tuple[int, int]:
        """Sample range of frames [lo, hi) of the block's context, cut at the signal's end
        when ``hi`` is the last frame (where the whole-clip filters see the end)."""
        stop = (hi + 1) * self.config.hop
        return lo * self.config.hop, min(stop, self.n16) if hi == self.n_frames else stop

    def host(self, s: Span) -> tuple[np.ndarray, np.ndarray]:
        """(channels, n) 16 kHz host of the context and its mono (n,) mix."""
        a, b = self.samples(s.e0, s.e1)
        x = self.x16.read(a, b)
        return x, x.mean(axis=0)

    def spec(self, x: np.ndarray, s: Span) -> np.ndarray:
        """(e1 - e0, bins) spectrum of a context signal (zero-padded like ``stft``)."""
        n = s.e1 - s.e0
        padded = np.zeros(max((n + 1) * self.config.hop, self.config.n_fft, len(x)))
        padded[: len(x)] = x
        return stft_frames(padded, n, self.config)

    def tiles(self, s: Span) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(s.e0, s.e1) % len(self.sign_block)
        return self.sign_block[rows], self.dir_block[rows]

    def limits(self, spec: np.ndarray, s: Span) -> tuple[np.ndarray, np.ndarray]:
        power = cell_power(spec, self.config)
        return power, gain_limits(power, self.active[s.e0: s.e1], self.config)

    def render(self, spec: np.ndarray, gain: np.ndarray, n: int) -> np.ndarray:
        return render(spec, gain, n, self.config)

    def marked_log_energy(self, s: Span, scale: np.ndarray) -> tuple[np.ndarray, ...]:
        """The mono host with the mark of ``scale`` added: its log energies (context rows)
        and the block's signs and directions."""
        _, mono = self.host(s)
        spec = self.spec(mono, s)
        _, limits = self.limits(spec, s)
        sign, direction = self.tiles(s)
        gain = np.clip(limits * self.cap * sign * scale[direction], -self.config.max_cell_db,
                       self.config.max_cell_db)
        y = mono + self.render(spec, gain, len(mono))
        log_e = log_energy(cell_power(self.spec(y, s), self.config))
        return log_e, sign, direction

    def delta(self, s: Span) -> tuple[np.ndarray, int]:
        """The gated mark of the context at 16 kHz, (channels, n), and its first sample."""
        x, mono = self.host(s)
        spec = self.spec(mono, s)
        _, limits = self.limits(spec, s)
        sign, direction = self.tiles(s)
        gain = np.clip(limits * self.cap * sign * self.scale[direction],
                       -self.config.max_cell_db, self.config.max_cell_db)
        if len(x) == 1:
            deltas = self.render(spec, gain, x.shape[1])[None]
        else:  # the same gain field on every channel: any downmix carries the mark
            deltas = np.stack([self.render(self.spec(ch, s), gain, x.shape[1]) for ch in x])
        return gate(deltas, x), self.samples(s.e0, s.e1)[0]

    # --- the passes ----------------------------------------------------------------------------

    def analyse(self) -> None:
        c, n_dir = self.config, CODED_BITS + 1
        levels, host_mono, host_all = np.empty(self.n_frames), 0.0, 0.0
        for s in self.spans():  # 1. frame levels, host energies
            x, mono = self.host(s)
            if not np.all(np.isfinite(x)):
                raise ValueError("audio contains NaN or infinite samples")
            levels[s.f0: s.f1] = frame_levels_db(self.spec(mono, s)[s.rows], c)
            a, b = self.samples(s.f0, s.f1)
            b = self.n16 if s.f1 == self.n_frames else b - c.hop  # a partition of the samples
            cut = slice(a - s.e0 * c.hop, b - s.e0 * c.hop)
            host_mono += float(np.sum(mono[cut] ** 2))
            host_all += float(np.sum(x[:, cut] ** 2))
        self.active = active_frames(levels)
        energy = 0.0
        for s in self.spans():  # 2. the SNR cap
            power, limits = self.limits(self.spec(self.host(s)[1], s), s)
            energy += mark_energy(limits[s.rows], power[s.rows], c)
        self.cap = cap_factor(energy, host_mono, c)
        scale, weight, per_db = np.ones(n_dir), np.zeros(n_dir), None
        enough = self.active.sum() >= 3  # features() is all zeros otherwise
        for _ in range(c.closed_loop_iters):  # 3-5. the closed loop
            level, count = np.zeros(c.n_cells), 0
            for s in self.spans():
                log_e, sign, direction = self.marked_log_energy(s, scale)
                if per_db is None:
                    _, limits = self.limits(self.spec(self.host(s)[1], s), s)
                    base = (limits * self.cap * sign)[s.rows]
                    weight += np.bincount(direction[s.rows].ravel(), np.abs(base).ravel(),
                                          minlength=n_dir)
                act = self.active[s.f0: s.f1]
                level += log_e[s.rows][act].sum(axis=0)
                count += int(act.sum())
            resp = np.zeros(n_dir)
            if enough:
                level /= count
                sums = 0.0
                for s in self.spans():
                    log_e = self.marked_log_energy(s, scale)[0] - level
                    sums = sums + predictor_sums(log_e[s.rows], neighbours(log_e)[s.rows],
                                                 self.active[s.f0: s.f1])
                coef = solve_predictor(sums)
                for s in self.spans():
                    log_e, sign, direction = self.marked_log_energy(s, scale)
                    log_e = log_e - level
                    feats = whitened(log_e[s.rows], neighbours(log_e)[s.rows], coef,
                                     self.active[s.f0: s.f1])
                    resp += np.bincount(direction[s.rows].ravel(),
                                        (feats * sign[s.rows]).ravel(), minlength=n_dir)
            if per_db is None:
                per_db = resp[1:].sum() / max(weight[1:].sum(), 1e-9)
                if per_db <= 0:
                    break
            host = resp - per_db * weight * scale  # each direction's host projection
            scale = np.clip((per_db * weight - host) / np.maximum(per_db * weight, 1e-9),
                            *SCALE_RANGE)
            scale[0] = max(scale[0], 1.0)
        self.scale = scale
        energy = 0.0
        for s in self.spans():  # 6. the SNR hold
            deltas, first = self.delta(s)
            a, b = self.samples(s.f0, s.f1)
            b = self.n16 if s.f1 == self.n_frames else b - c.hop
            energy += float(np.sum(deltas[:, a - first: b - first] ** 2))
        allowed = host_all * 10 ** (-c.target_snr_db / 10)
        self.hold = float(np.sqrt(allowed / energy)) if energy > allowed else None

    def blocks(self, block: int = OUTPUT_BLOCK) -> Iterator[np.ndarray]:
        """7. The marked signal, (channels, n) float64 blocks in order, clipped to [-1, 1]."""
        delta = None if self.n_frames == 0 else Resampled(_Mark(self), self.signal.rate)
        for start in range(0, self.signal.length, block):
            stop = min(start + block, self.signal.length)
            x = self.signal.read(start, stop)
            yield np.clip(x if delta is None else x + delta.read(start, stop), -1.0, 1.0)


@dataclass(frozen=True)
class _Mark:
    """The final mark at 16 kHz as a :class:`Signal` (computed per block on demand)."""

    e: Marked

    @property
    def rate(self) -> int:
        return self.e.config.sample_rate

    @property
    def channels(self) -> int:
        return self.e.signal.channels

    @property
    def length(self) -> int:
        return self.e.n16

    def read(self, start: int, stop: int) -> np.ndarray:
        hop, out = self.e.config.hop, np.zeros((self.channels, stop - start))
        lo, hi = max(start, 0), min(stop, self.length)
        while lo < hi:  # blocks of frames that cover [lo, hi)
            f0 = min(lo // hop, self.e.n_frames - 1)
            f1 = min(self.e.n_frames, f0 + self.e.block)
            span = Span(f0, f1, max(0, f0 - MARGIN), min(self.e.n_frames, f1 + MARGIN))
            deltas, first = self.e.delta(span)
            end = hi if f1 == self.e.n_frames else min(hi, f1 * hop)
            out[:, lo - start: end - start] = deltas[:, lo - first: end - first]
            lo = end
        return out if self.e.hold is None else out * self.e.hold
