"""Evaluation metrics on the procedural world: sync, material, prompt control. Torch-free.

**Onsets** (:func:`detect_onsets`). Onset strength is a band-wise spectral flux in dB: the
power of 32 mel-spaced bands (50 Hz – 7.9 kHz) of a 32 ms Hann STFT with a 4 ms hop (levels
floored 70 dB below the clip's loudest band), the rise of each band over the maximum of the
frames 16–24 ms earlier, clipped to 0..20 dB, averaged over the 16 most rising bands.
Because it is a mean of clipped dB rises over half the bands, a stationary ambience (however
loud) contributes a small, steady value and a narrow-band one (a cricket chirp, rain) is
diluted, while an impact rises in many bands; broadband noise (a vocoder's floor) only hides
the bands it covers.
A frame is an onset candidate when its strength is a local maximum within ±28 ms and exceeds
the running median over ±0.25 s by ``ONSET_DELTA_DB``. Each candidate is refined to sample
precision: a 16th-order linear predictor fitted to the 14–70 ms before it whitens whatever was
already sounding (ringing modes, ambience), the squared Hilbert envelope of the prediction
error (0.5 ms smoothing) is searched for its peak 8 ms before to 12 ms after the candidate,
and the onset is where, walking back from that peak, the envelope falls below 15 % of its
rise above the preceding background.

**Sync** (:func:`match_onsets`, :func:`evaluate_clip`). Detected onsets are matched one to
one to the true event times within ±40 ms (``TOLERANCE``), closest pairs first. True events
closer than 50 ms (``CLUSTER_GAP``) to the previous one form one *acoustic onset* (two bodies
that touch sound at the same instant; a landing 10 ms after a wall hit is one onset to the
ear); an onset is hit when any of its events is matched, and its offset is that of its best
match (signed: detected − true, in ms). Unmatched detections are false onsets.

**Material** (:class:`MaterialClassifier`). Five fixed features of the sound after an onset
(:func:`impact_features`: spectral centroid, peak frequency, flatness and low-frequency share
of the first 64 ms with the preceding spectrum subtracted, and the 20–80 ms / 0–20 ms energy
ratio), classified by the nearest class median in robustly scaled features with each
feature's squared score capped at 9. The model is fixed: ``DEFAULT_CLASSIFIER``, whose
constants were fitted on the isolated true impacts of the scenes ``CALIBRATION_SEEDS``
(training range, never evaluation seeds) and are checked by a test that refits them. An
event is scored when it is hit and isolated: no other event within 70 ms before or 150 ms
after it (a simultaneous contact of the same material is allowed); it is classified at its
matched detected onset.

**Prompt control** (:func:`band_level_db`). An ambience's level is the median, over 64 ms
frames (hop 32 ms), of the signal's mean-square power inside the ambience's band, in dB
(a sine of amplitude 1 inside the band reads −3 dB). The median ignores the sparse impacts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy import linalg, ndimage, signal

from .scene import make_scene
from .sound import render_audio
from .spec import AMBIENCES, MATERIAL_NAMES, NAMED_AMBIENCES, SAMPLE_RATE

TOLERANCE = 0.040  # s, a detected onset within ± this of a true event is a hit
CLUSTER_GAP = 0.050  # s, true events closer than this form one acoustic onset
ISOLATION = (0.070, 0.150)  # s, material is scored with no other event this close before/after
ONSET_N_FFT = 512  # 32 ms at 16 kHz
ONSET_HOP = 64  # 4 ms
ONSET_LAG = (4, 6)  # frames: the reference is the max over frames t-6 .. t-4
ONSET_BANDS = 32
ONSET_RANGE = 1e-7  # band levels are floored 70 dB below the clip's loudest
ONSET_RISE_CLIP_DB = 20.0  # per band, so one narrow band cannot make an onset
ONSET_TOP_BANDS = 16  # the strength is the mean rise of the 16 most rising bands
ONSET_DELTA_DB = 5.0  # mean-band dB rise above the running median
ONSET_MEDIAN_S = 0.25  # half-width of the running median
REFINE_LPC_ORDER = 16  # whitening of the 14–70 ms before a candidate
REFINE_FRACTION = 0.15  # the attack starts where the envelope reaches 15 % of its rise
MIN_ONSET_GAP = 0.028  # s, candidates are local maxima within ± this
SPECTRUM_N = 1024  # 64 ms
LEVEL_N = 1024  # 64 ms frames for band levels
CALIBRATION_SEEDS = range(900_000, 900_150)  # training-range scenes, never evaluation seeds
MIN_FEATURE_SCALE = 0.1  # log units; a feature that is nearly constant within classes
FEATURE_NAMES = ("log2_centroid", "log2_peak_hz", "log10_flatness", "log10_low_share",
                 "log10_sustain")


# --- onsets -------------------------------------------------------------------------------

def _frames(x: np.ndarray, n: int, hop: int) -> np.ndarray:
    """Centred frames (T, n) of ``x`` (W,), reflect-padded by n // 2."""
    pad = np.pad(x, n // 2, mode="reflect") if len(x) > n // 2 else np.pad(x, n // 2)
    count = 1 + (len(pad) - n) // hop
    return np.lib.stride_tricks.sliding_window_view(pad, n)[::hop][:count]  # (T, n)


@lru_cache(maxsize=4)
def _band_matrix(n_fft: int, n_bands: int, sample_rate: int) -> np.ndarray:
    """(F, nb) 0/1 matrix of mel-spaced bands over 50 Hz – 7.9 kHz, at least 2 bins each."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)  # (F,)
    mel_lo, mel_hi = _mel(50.0), _mel(min(7900.0, 0.49 * sample_rate))
    edges = 700.0 * (10.0 ** (np.linspace(mel_lo, mel_hi, n_bands + 1) / 2595.0) - 1.0)
    idx = np.searchsorted(freqs, edges)
    for b in range(1, len(idx)):
        idx[b] = max(idx[b], idx[b - 1] + 2)
    m = np.zeros((len(freqs), n_bands))
    for b in range(n_bands):
        m[idx[b]: idx[b + 1], b] = 1.0
    m = m[:, m.sum(axis=0) > 0]
    m.flags.writeable = False  # cached: shared by every caller
    return m


def _mel(f: float) -> float:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def onset_strength(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Onset strength per 4 ms frame (T,), frame t centred at sample ``t * ONSET_HOP``."""
    x = np.asarray(audio, dtype=np.float64)
    frames = _frames(x, ONSET_N_FFT, ONSET_HOP) * np.hanning(ONSET_N_FFT)  # (T, n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (T, F)
    band = power @ _band_matrix(ONSET_N_FFT, ONSET_BANDS, sample_rate)  # (T, nb)
    floor = ONSET_RANGE * band.max(initial=0.0) + 1e-12  # quieter than this counts as silence
    level = 10.0 * np.log10(band + floor)  # (T, nb)
    lo, hi = ONSET_LAG
    ref = np.full_like(level, np.inf)
    ref[hi:] = np.max([level[hi - lag: len(level) - lag] for lag in range(lo, hi + 1)], axis=0)
    rise = np.clip(level - ref, 0.0, ONSET_RISE_CLIP_DB)  # (T, nb); 0 for the first frames
    return np.sort(rise, axis=1)[:, -ONSET_TOP_BANDS:].mean(axis=1)


def detect_onsets(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Onset times in seconds (float64, sorted), refined to the sample."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"audio must be mono (W,), got shape {x.shape}")
    if len(x) < ONSET_N_FFT:
        return np.zeros(0)
    strength = onset_strength(x, sample_rate)  # (T,)
    half = int(round(ONSET_MEDIAN_S * sample_rate / ONSET_HOP))
    floor = ndimage.median_filter(strength, size=2 * half + 1, mode="nearest")
    k = int(round(MIN_ONSET_GAP * sample_rate / ONSET_HOP))
    local_max = ndimage.maximum_filter1d(strength, size=2 * k + 1, mode="nearest")
    cand = np.flatnonzero((strength >= local_max) & (strength > floor + ONSET_DELTA_DB))
    onsets: list[float] = []
    for t in cand:
        s = _refine(x, int(t) * ONSET_HOP, sample_rate)
        if not onsets or s - onsets[-1] >= MIN_ONSET_GAP * sample_rate:
            onsets.append(s)
    return np.array(onsets, dtype=np.float64) / sample_rate


def _refine(x: np.ndarray, centre: int, sample_rate: int) -> float:
    """Sample index of the attack near frame centre ``centre`` (see the module docstring)."""
    ms = sample_rate / 1000.0
    fit = x[max(centre - int(70 * ms), 0): max(centre - int(14 * ms), 0)]
    a = _whitening_filter(fit)
    lo = max(centre - int(40 * ms), 0)
    hi = min(centre + int(16 * ms), len(x))
    pad = min(len(a) - 1, lo)
    resid = signal.lfilter(a, [1.0], x[lo - pad: hi])[pad:]  # (hi - lo,)
    env = np.abs(signal.hilbert(resid)) ** 2
    env = ndimage.uniform_filter1d(env, max(int(0.5 * ms), 1))
    c = centre - lo
    before = env[: max(c - int(14 * ms), 0)]
    search = slice(max(c - int(8 * ms), 0), min(c + int(12 * ms), len(env)))
    p = search.start + int(np.argmax(env[search]))
    background = float(np.median(before)) if before.size else float(env[: p + 1].min())
    threshold = background + REFINE_FRACTION * (env[p] - background)
    k = p
    while k > 0 and env[k - 1] >= threshold:
        k -= 1
    return float(lo + k)


def _whitening_filter(fit: np.ndarray) -> np.ndarray:
    """Prediction-error filter A(z) (order ``REFINE_LPC_ORDER``) of the audio before an onset."""
    p = REFINE_LPC_ORDER
    if len(fit) < 4 * p:
        return np.ones(1)
    w = fit * np.hanning(len(fit))
    r = np.correlate(w, w, mode="full")[len(w) - 1: len(w) + p]  # (p + 1,)
    if r[0] <= 1e-20:
        return np.ones(1)
    r[0] *= 1.0 + 1e-6  # white-noise floor: keeps the system well conditioned
    coef = linalg.solve_toeplitz(r[:p], -r[1: p + 1])
    return np.concatenate([[1.0], coef])


# --- matching and sync ----------------------------------------------------------------------

def match_onsets(detected: np.ndarray, reference: np.ndarray, tolerance: float = TOLERANCE
                 ) -> list[tuple[int, int]]:
    """One-to-one (detected index, reference index) pairs within ``tolerance``, closest first."""
    detected, reference = np.asarray(detected), np.asarray(reference)
    d = np.abs(detected[:, None] - reference[None, :])  # (D, R)
    cand = np.argwhere(d <= tolerance)
    order = np.argsort(d[cand[:, 0], cand[:, 1]], kind="stable")
    used_d, used_r, pairs = set(), set(), []
    for i, j in cand[order]:
        if i not in used_d and j not in used_r:
            used_d.add(int(i))
            used_r.add(int(j))
            pairs.append((int(i), int(j)))
    return sorted(pairs, key=lambda p: p[1])


def clusters(times: np.ndarray, gap: float = CLUSTER_GAP) -> list[list[int]]:
    """Indices of sorted ``times`` grouped into acoustic onsets (consecutive gaps < ``gap``)."""
    groups: list[list[int]] = []
    for i, t in enumerate(np.asarray(times)):
        if groups and t - times[groups[-1][-1]] < gap:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


# --- material -------------------------------------------------------------------------------

def impact_features(audio: np.ndarray, onset: float, sample_rate: int = SAMPLE_RATE
                    ) -> np.ndarray:
    """The five material features (5,) of the sound starting at ``onset`` seconds.

    Spectral features use the 64 ms after the onset, minus the spectrum of the 64 ms before
    it (ending 2 ms before the onset), over 60 Hz – 4 kHz (above that the rain and cricket
    bands make the subtraction noisy): log2 centroid, log2 peak frequency, log10 flatness,
    log10 share of the energy below 1 kHz. The fifth is the log10 ratio of the energy in
    20–80 ms to that in 0–20 ms after the onset, both minus the power of the 16 ms before.
    """
    x = np.asarray(audio, dtype=np.float64)
    ms = sample_rate / 1000.0
    i0 = int(round(onset * sample_rate))
    guard = int(2 * ms)
    win = np.hanning(SPECTRUM_N)
    spec = np.abs(np.fft.rfft(_slice(x, i0, i0 + SPECTRUM_N) * win)) ** 2
    bg_spec = np.abs(np.fft.rfft(_slice(x, i0 - SPECTRUM_N - guard, i0 - guard) * win)) ** 2
    freqs = np.fft.rfftfreq(SPECTRUM_N, 1.0 / sample_rate)
    band = (freqs >= 60.0) & (freqs <= 4000.0)
    s = np.maximum(spec - bg_spec, 0.0)[band] + 1e-12
    f = freqs[band]
    centroid = float((f * s).sum() / s.sum())
    peak = float(f[np.argmax(s)])
    flatness = float(np.exp(np.mean(np.log(s))) / np.mean(s))
    low = float(s[f < 1000.0].sum() / s.sum())
    bg_power = float(np.mean(_slice(x, i0 - int(18 * ms), i0 - guard) ** 2))
    n1, n2 = int(20 * ms), int(80 * ms)
    seg = _slice(x, i0, i0 + n2)
    e1 = max(float(np.sum(seg[:n1] ** 2)) - bg_power * n1, 1e-12)
    e2 = max(float(np.sum(seg[n1:] ** 2)) - bg_power * (n2 - n1), 1e-3 * e1)
    return np.array([np.log2(centroid), np.log2(peak), np.log10(flatness),
                     np.log10(low + 1e-3), np.log10(e2 / e1)])


def _slice(x: np.ndarray, a: int, b: int) -> np.ndarray:
    """x[a:b] with zeros outside the signal."""
    out = np.zeros(max(b - a, 0))
    lo, hi = max(a, 0), min(b, len(x))
    if hi > lo:
        out[lo - a: hi - a] = x[lo:hi]
    return out


@dataclass(frozen=True)
class MaterialClassifier:
    """Nearest class median in features scaled by the pooled robust spread.

    Distance = sum over features of ``min(z^2, 9)`` with ``z = (f - median_m) / scale``, so
    one corrupted feature (an overlapping sound) cannot outvote the others.
    """

    materials: tuple[str, ...]
    centres: tuple[tuple[float, ...], ...]  # (M, 5) per-class medians
    scale: tuple[float, ...]  # (5,), 1.4826 * pooled median absolute deviation, >= 0.1

    @classmethod
    def fit(cls, features: np.ndarray, labels: list[str] | tuple[str, ...]
            ) -> MaterialClassifier:
        labels = np.asarray(labels)
        materials = tuple(m for m in MATERIAL_NAMES if m in set(labels.tolist()))
        centres = np.stack([np.median(features[labels == m], axis=0) for m in materials])
        resid = features - centres[[materials.index(m) for m in labels]]  # (N, 5)
        scale = np.maximum(1.4826 * np.median(np.abs(resid), axis=0), MIN_FEATURE_SCALE)
        return cls(materials, tuple(tuple(round(float(v), 6) for v in c) for c in centres),
                   tuple(round(float(v), 6) for v in scale))

    def predict(self, features: np.ndarray) -> list[str]:
        """Materials for features (N, 5) or (5,)."""
        f = np.atleast_2d(features)  # (N, 5)
        z = (f[:, None, :] - np.array(self.centres)[None]) / np.array(self.scale)  # (N, M, 5)
        dist = np.minimum(z * z, 9.0).sum(axis=2)  # (N, M)
        return [self.materials[k] for k in np.argmin(dist, axis=1)]


def calibration_set(seeds: range | list[int], sample_rate: int = SAMPLE_RATE
                    ) -> tuple[np.ndarray, list[str]]:
    """Features (N, 5) and materials of the isolated true impacts of scenes ``seeds``."""
    feats, labels = [], []
    for seed in seeds:
        scene = make_scene(seed)
        audio = render_audio(scene, sample_rate)
        times = scene.event_times
        materials = [e.material for e in scene.events]
        for j, e in enumerate(scene.events):
            if _isolated(times, materials, j):
                feats.append(impact_features(audio, e.time, sample_rate))
                labels.append(e.material)
    return np.stack(feats), labels


# Fitted by ``MaterialClassifier.fit(*calibration_set(CALIBRATION_SEEDS))``; a test refits it.
DEFAULT_CLASSIFIER = MaterialClassifier(
    materials=("metal", "wood", "glass", "rubber"),
    centres=(
        (9.88686, 9.213712, -8.014155, -0.122901, 0.390273),
        (8.393448, 8.213712, -6.746236, -0.006106, -0.363987),
        (11.122276, 11.125656, -8.524792, -2.997095, 0.302235),
        (6.86163, 6.773139, -6.617116, 0.000415, -0.659293),
    ),
    scale=(0.297872, 0.329719, 0.528747, 0.1, 0.207162),
)


# --- ambience bands ---------------------------------------------------------------------------

def band_level_db(audio: np.ndarray, band: tuple[float, float],
                  sample_rate: int = SAMPLE_RATE) -> float:
    """Median over 64 ms frames of the mean-square power inside ``band`` (Hz), in dB."""
    x = np.asarray(audio, dtype=np.float64)
    win = np.hanning(LEVEL_N)
    frames = _frames(x, LEVEL_N, LEVEL_N // 2) * win  # (T, n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (T, F)
    freqs = np.fft.rfftfreq(LEVEL_N, 1.0 / sample_rate)
    inside = (freqs >= band[0]) & (freqs < band[1])
    ms = 2.0 * power[:, inside].sum(axis=1) / (LEVEL_N * (win * win).sum())  # (T,)
    return float(10.0 * np.log10(np.median(ms) + 1e-12))


def ambience_levels_db(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
    """Band level (dB) of every nameable ambience in ``audio``."""
    return {a: band_level_db(audio, AMBIENCES[a].band, sample_rate) for a in NAMED_AMBIENCES}


# --- per clip and aggregate -----------------------------------------------------------------

@dataclass(frozen=True)
class ClipMetrics:
    """Metrics of one generated (or true) soundtrack against its scene's ground truth."""

    duration: float  # s
    n_events: int  # true events
    n_onsets: int  # true acoustic onsets (clusters of events)
    n_hits: int  # onsets matched within ±TOLERANCE
    offsets_ms: tuple[float, ...]  # per hit onset, signed (detected − true)
    n_detected: int
    n_false: int  # detections matched to no event
    material_correct: int
    material_total: int  # hit, isolated events
    ambience_db: dict[str, float]  # band level of every nameable ambience

    @property
    def hit_rate(self) -> float:
        return self.n_hits / self.n_onsets if self.n_onsets else float("nan")

    @property
    def median_abs_offset_ms(self) -> float:
        return _pct(np.abs(self.offsets_ms), 50)

    @property
    def p95_abs_offset_ms(self) -> float:
        return _pct(np.abs(self.offsets_ms), 95)

    @property
    def false_per_second(self) -> float:
        return self.n_false / self.duration

    @property
    def material_accuracy(self) -> float:
        return self.material_correct / self.material_total if self.material_total else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["offsets_ms"] = [round(o, 3) for o in self.offsets_ms]
        for name in ("hit_rate", "median_abs_offset_ms", "p95_abs_offset_ms",
                     "false_per_second", "material_accuracy"):
            d[name] = getattr(self, name)
        return d


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def evaluate_clip(audio: np.ndarray, truth: dict, sample_rate: int = SAMPLE_RATE,
                  classifier: MaterialClassifier | None = None) -> ClipMetrics:
    """Score ``audio`` (W,) against ``truth`` (``Scene.ground_truth()`` or its JSON)."""
    try:
        events = sorted(truth["events"], key=lambda e: e["time"])
        times = np.array([e["time"] for e in events], dtype=np.float64)
        materials = [e["material"] for e in events]
    except (KeyError, TypeError) as e:
        raise ValueError(f"truth must be a ground-truth dict with events (time, material): "
                         f"{e!r}") from e
    detected = detect_onsets(audio, sample_rate)
    pairs = match_onsets(detected, times)
    det_of = {j: i for i, j in pairs}
    offsets, hits = [], 0
    for group in clusters(times):
        matched = [(detected[det_of[j]] - times[j]) * 1000.0 for j in group if j in det_of]
        if matched:
            hits += 1
            offsets.append(float(min(matched, key=abs)))
    classifier = classifier or DEFAULT_CLASSIFIER
    correct = total = 0
    for j in range(len(times)):
        if j in det_of and _isolated(times, materials, j):
            feats = impact_features(audio, detected[det_of[j]], sample_rate)
            correct += classifier.predict(feats)[0] == materials[j]
            total += 1
    duration = float(truth.get("duration", len(audio) / sample_rate))
    return ClipMetrics(duration, len(times), len(clusters(times)), hits, tuple(offsets),
                       len(detected), len(detected) - len(pairs), int(correct), total,
                       ambience_levels_db(audio, sample_rate))


def _isolated(times: np.ndarray, materials: list[str], j: int) -> bool:
    """No other event near event j, except one at the same instant of the same material."""
    before, after = ISOLATION
    near = np.flatnonzero((times > times[j] - before) & (times < times[j] + after))
    return all(abs(times[k] - times[j]) < 1e-9 and materials[k] == materials[j] for k in near)


@dataclass(frozen=True)
class Summary:
    """Pooled metrics over clips (rates over all onsets/events, not means of clip rates)."""

    n_clips: int
    n_onsets: int
    hit_rate: float
    median_abs_offset_ms: float
    p95_abs_offset_ms: float
    median_offset_ms: float  # signed: positive = generated sound late
    false_per_second: float
    material_accuracy: float
    material_total: int

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(clips: list[ClipMetrics] | tuple[ClipMetrics, ...]) -> Summary:
    """Pool clips: hit rate over all onsets, offsets over all hits, false onsets over the
    total duration, material accuracy over all scored events."""
    if not clips:
        raise ValueError("summarize needs at least one ClipMetrics, got none")
    offsets = np.array([o for c in clips for o in c.offsets_ms])
    onsets = sum(c.n_onsets for c in clips)
    total = sum(c.material_total for c in clips)
    return Summary(
        n_clips=len(clips),
        n_onsets=onsets,
        hit_rate=sum(c.n_hits for c in clips) / onsets if onsets else float("nan"),
        median_abs_offset_ms=_pct(np.abs(offsets), 50),
        p95_abs_offset_ms=_pct(np.abs(offsets), 95),
        median_offset_ms=_pct(offsets, 50),
        false_per_second=sum(c.n_false for c in clips) / sum(c.duration for c in clips),
        material_accuracy=sum(c.material_correct for c in clips) / total if total else
        float("nan"),
        material_total=total,
    )
