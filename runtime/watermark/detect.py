"""Detection: is this key's mark in the audio, with what payload, and how sure are we.

For one alignment the pilot statistic is ``z = Σ cᵢAᵢ / sqrt(Σ Aᵢ²)`` over the folded pilot
cells A. The chips c are ±1, keyed and independent of the audio, so for audio without this
key's mark (Hoeffding) ``P(z ≥ t) ≤ exp(−t²/2)`` whatever the content; over K alignments the
union bound gives ``p ≤ K·exp(−z²/2)`` and the threshold ``z* = sqrt(2 ln(K/α))``
(spec/watermark.md §5.5). K = 8 sub-hop offsets × 32 phases = 256 for the offset search; the
speed/tempo search adds ``search.n_hypotheses()``. In ``"auto"`` mode each stage gets α/2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

from .analysis import SUB_HOP_STEPS, Alignment, Analysis, best_alignment, seconds_z
from .coding import decode_soft, split_payload
from .embed import as_channels
from .features import resample
from .keys import WatermarkKey
from .layout import DEFAULT_CONFIG, Layout, WatermarkConfig, make_layout
from .null import empirical_p_value, null_scores, null_secrets
from .search import Found, n_hypotheses, search

ALPHA = 1e-6  # shipped false-positive bound per file
SEARCH_MODES = ("auto", "offset", "full")


def threshold_z(alpha: float, n_hypotheses: int) -> float:
    """Smallest z whose union bound K·exp(−z²/2) is ≤ alpha."""
    if not 0 < alpha < 1 or n_hypotheses < 1:
        raise ValueError(f"need 0 < alpha < 1 and n_hypotheses ≥ 1, got {alpha}, "
                         f"{n_hypotheses}")
    return math.sqrt(2 * math.log(n_hypotheses / alpha))


def p_value_bound(z: float, n_hypotheses: int) -> float:
    """Hoeffding + union bound on P(max z ≥ z) for audio without the mark, capped at 1."""
    if z <= 0:
        return 1.0
    return min(1.0, n_hypotheses * math.exp(-z * z / 2))


@dataclass(frozen=True)
class Detection:
    """What ``detect`` found. ``payload``/``model_id``/``generation_id`` are set only when the
    mark is present and its CRC matches."""

    present: bool
    z: float  # pilot statistic at the best alignment
    p_value_bound: float  # P(z this high | no mark with this key) ≤ this, for any audio
    threshold_z: float  # present ⇔ z ≥ threshold_z (⇔ p_value_bound ≤ alpha)
    payload: int | None
    crc_ok: bool
    model_id: int | None
    generation_id: int | None
    offset_samples: int | None  # input sample where a layout block starts (0 ≤ offset < block)
    speed: float  # resampling factor found (1.0 = none)
    tempo: float  # time-stretch factor found (1.0 = none; a pitch shift p is speed p, tempo 1/p)
    per_second_z: tuple[float, ...]  # pilot z of each second of the input
    search: str  # the stage that decided: "offset" or "speed/tempo"
    n_hypotheses: int  # K of the bound
    key_id: str
    p_value_empirical: float | None = None  # offset-search z vs N random keys (null_keys=N)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_second_z"] = [round(v, 2) for v in self.per_second_z]
        d["payload_hex"] = None if self.payload is None else f"{self.payload:08x}"
        return d


def _to_mono16(audio: np.ndarray, sample_rate: int, config: WatermarkConfig) -> np.ndarray:
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz, got {sample_rate}")
    mono = as_channels(audio).mean(axis=0)  # (W,)
    if not np.all(np.isfinite(mono)):
        raise ValueError("audio contains NaN or infinite samples")
    return resample(mono, sample_rate, config.sample_rate)


@dataclass(frozen=True)
class InputInfo:
    """What the report needs to know of the input."""

    layout: Layout
    key: WatermarkKey
    sample_rate: int
    config: WatermarkConfig
    n_seconds: int  # the input's length in seconds, rounded up


def _result(a: Alignment, found: Found | None, threshold: float, n_hyp: int, bound_scale: int,
            stage: str, inp: InputInfo, start: int = 0) -> Detection:
    """The report of alignment ``a``; ``start``: the analysed excerpt's first sample in the
    16 kHz mono signal (> 0 only for a search on an excerpt of a long file)."""
    config, sample_rate = inp.config, inp.sample_rate
    kind = found.kind if found is not None else None
    # a pitch shift p is a speed change p followed by a tempo change 1/p
    speed = found.factor if kind in ("speed", "pitch") else 1.0
    tempo = found.factor if kind == "tempo" else 1.0 / found.factor if kind == "pitch" else 1.0
    # analysed sample n ↔ input seconds n / (16000 · speed) (speed and pitch were resampled)
    rate = config.sample_rate * speed
    to_seconds = lambda n: (np.asarray(n) + start * speed) / rate  # noqa: E731
    present = a.z >= threshold
    payload, crc_ok = decode_soft(a.soft) if present else (None, False)
    first = (-a.phase) % config.block_frames  # first frame at block position 0
    offset = None
    if first < len(a.starts):
        offset = float(to_seconds(a.starts[first])) * sample_rate
        if start > 0:  # the first block start of the file, not of the excerpt
            grid_tempo = found.analysis.grid.tempo if found is not None else 1.0
            offset %= config.block_frames * config.hop * grid_tempo / rate * sample_rate
        offset = int(round(offset))
    per_second = seconds_z(a.pilot_num, a.pilot_den, a.starts, config, to_seconds,
                           inp.n_seconds)
    if start > 0:  # seconds outside the excerpt: 0.0
        per_second += [0.0] * (inp.n_seconds - len(per_second))
    accepted = payload if crc_ok else None
    ids = split_payload(accepted) if accepted is not None else (None, None)
    return Detection(
        present=bool(present), z=float(a.z),
        p_value_bound=min(1.0, bound_scale * p_value_bound(a.z, n_hyp)),
        threshold_z=float(threshold), payload=accepted, crc_ok=bool(crc_ok),
        model_id=ids[0], generation_id=ids[1], offset_samples=offset, speed=speed, tempo=tempo,
        per_second_z=tuple(per_second), search=stage, n_hypotheses=n_hyp,
        key_id=inp.key.key_id)


def decide(a: Alignment, run_search: Callable[[], tuple[Alignment, Found, int] | None],
           search: str, alpha: float, inp: InputInfo) -> tuple[Detection, Found | None]:
    """The verdict from the offset stage's best alignment ``a`` and, as ``search`` asks, the
    speed/tempo stage (``run_search()``: its best alignment, what it found and the excerpt's
    first sample, or None); also the search's find when it decided."""
    k_offset = SUB_HOP_STEPS * inp.config.block_frames
    k_search = n_hypotheses(inp.config)
    if search == "offset":
        return _result(a, None, threshold_z(alpha, k_offset), k_offset, 1, "offset", inp), None
    if search == "auto":
        t0 = threshold_z(alpha / 2, k_offset)
        if a.z >= t0:
            return _result(a, None, t0, k_offset, 2, "offset", inp), None
        k, scale, t, stage = k_search, 2, threshold_z(alpha / 2, k_search), "speed/tempo"
    else:
        k = k_offset + k_search
        scale, t, stage = 1, threshold_z(alpha, k), "full"
    hit = run_search()
    if hit is None or hit[0].z <= a.z:
        return _result(a, None, t, k, scale, stage, inp), None
    best, found, start = hit
    return _result(best, found, t, k, scale, stage, inp, start), found


def check_search(search: str) -> None:
    if search not in SEARCH_MODES:
        raise ValueError(f"search must be one of {SEARCH_MODES}, got {search!r}")


def too_short(n16: int, config: WatermarkConfig) -> ValueError:
    return ValueError(f"audio too short to analyse: {n16 / config.sample_rate:.3f} s "
                      f"(need ≥ {(config.n_fft + config.hop) / config.sample_rate:.3f} s)")


def detect(audio: np.ndarray, sample_rate: int, key: WatermarkKey, *, search: str = "auto",
           alpha: float = ALPHA, null_keys: int = 0,
           config: WatermarkConfig = DEFAULT_CONFIG) -> Detection:
    """Look for ``key``'s mark in ``audio`` ((W,) or (channels, W) float).

    ``search``: ``"offset"`` tries sub-hop offsets and block phases only (fast: crops, shifts,
    codecs, filters); ``"full"`` also tries speed and tempo 0.8–1.25; ``"auto"`` runs the
    speed/tempo search only when the offset search finds nothing (each stage at alpha/2).
    ``null_keys`` > 0 adds ``p_value_empirical``: the offset-search z of ``key`` ranked among
    the z of that many random keys on the same audio (a cross-check of the bound; ~3 ms/key).
    The whole signal is analysed in memory; ``detect_signal`` (``watermark.detect_stream``)
    gives the same verdict in bounded memory, block by block.
    """
    d, _ = detect_analysis(audio, sample_rate, key, search=search, alpha=alpha, config=config)
    if null_keys <= 0:
        return d
    x16 = _to_mono16(audio, sample_rate, config)
    null = null_scores(x16, null_secrets(null_keys, key.key_id), config)
    z0 = best_alignment(x16, make_layout(key.secret, config), config).z
    return replace(d, p_value_empirical=empirical_p_value(z0, null))


def detect_analysis(audio: np.ndarray, sample_rate: int, key: WatermarkKey, *,
                    search: str = "auto", alpha: float = ALPHA,
                    config: WatermarkConfig = DEFAULT_CONFIG) -> tuple[Detection, Analysis]:
    """``detect`` plus the winning ``Analysis`` (for benchmarks: bits decoded even when the
    mark is absent)."""
    check_search(search)
    x16 = _to_mono16(audio, sample_rate, config)
    layout = make_layout(key.secret, config)
    a = best_alignment(x16, layout, config)
    if a is None:
        raise too_short(len(x16), config)
    n_seconds = math.ceil(as_channels(audio).shape[1] / sample_rate - 1e-6)
    inp = InputInfo(layout, key, sample_rate, config, n_seconds)

    def run_search() -> tuple[Alignment, Found, int] | None:
        found = search_fn(x16, layout, config)
        return None if found is None else (Alignment.of(found.analysis, layout, config), found, 0)

    d, found = decide(Alignment.of(a, layout, config), run_search, search, alpha, inp)
    return d, (a if found is None else found.analysis)


search_fn = search  # the search stage; the name ``search`` is the keyword argument above
