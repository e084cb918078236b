"""Sound synthesis of the world at 16 kHz: modal impacts and ambiences (no recordings).

**Impacts** (one per event, starting exactly at the event's sample): a sum of exponentially
decaying sinusoids (modal synthesis) at the object's fundamental ``f0`` times the material's
partial ratios, each partial decaying faster the higher it is
(``tau_k = decay / ratio_k ** decay_slope``), plus a short low-passed noise burst (the
contact "click"), which makes every attack sharp and broadband. Per event, the pitch varies by
about 1 %, the decay by about 8 % and the phases are random. Loudness follows the impact
speed: the peak gain is ``0.35 * (speed / 6 m/s) ** 0.9`` (about −23 dBFS at 1 m/s,
−9 dBFS at 6 m/s), and faster impacts are also a little brighter.

**Ambiences** (one stem per clip, normalised to the ambience's RMS level):

- wind: white noise band-passed to 40–300 Hz, with slow gusts (0.08–0.4 Hz modulation);
- rain: about 800 drops per second (impulses with ±4 dB random level) band-passed to
  6–7.8 kHz, plus a broadband (0.8–7.8 kHz) hiss 30 dB lower;
- crickets: one or two crickets, each a 4.3–4.8 kHz carrier pulsed at 40–60 Hz in chirps
  that fill about 70 % of a 0.3–0.45 s period;
- none: faint low-passed room tone at −72 dBFS (also added under the other three).

Each ambience is dense or periodic enough that its energy in its own band, measured per 64 ms
frame, is steady (the prompt-control metric takes the median over frames).

All randomness comes from generators seeded by ``(scene seed, stream, index)``, so the
audio of a scene is reproducible bit for bit and independent of what else was rendered.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import signal

from .scene import Scene
from .spec import AMBIENCES, SAMPLE_RATE, check_ambience, check_material

_IMPACT_STREAM = 0x1A9AC7
_AMBIENCE_STREAM = 0xA7B1E
REF_SPEED = 6.0  # m/s
REF_GAIN = 0.35  # peak gain at REF_SPEED
SPEED_EXPONENT = 0.9


@dataclass(frozen=True)
class AudioStems:
    """The two stems of a clip's soundtrack, float32 (W,) each, W = round(duration * rate)."""

    impacts: np.ndarray
    ambience: np.ndarray
    sample_rate: int

    @property
    def mix(self) -> np.ndarray:
        return np.clip(self.impacts + self.ambience, -1.0, 1.0).astype(np.float32)


def impact_gain(speed: float) -> float:
    """Peak gain of an impact at ``speed`` m/s."""
    return REF_GAIN * (max(speed, 0.0) / REF_SPEED) ** SPEED_EXPONENT


def impact_sound(material: str, speed: float, f0: float, decay: float,
                 rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One impact, float64 (n,), starting at sample 0 with its full attack."""
    spec = check_material(material)
    f0 = f0 * float(np.exp(rng.normal(0.0, 0.01)))
    decay = decay * float(np.exp(rng.normal(0.0, 0.08)))
    ratios = np.asarray(spec.ratios) * (1.0 + rng.normal(0.0, 0.004, len(spec.ratios)))
    freqs = f0 * ratios  # (P,)
    keep = freqs < 0.45 * sample_rate
    freqs, ratios = freqs[keep], ratios[keep]
    bright = np.clip(speed / 3.0, 0.5, 2.0) ** (0.25 * np.arange(len(freqs)))
    amps = np.asarray(spec.amplitudes)[keep] * bright  # (P,)
    taus = decay / ratios ** spec.decay_slope  # (P,)
    n = int(min(6.9 * taus.max(), 3.0) * sample_rate) + 1  # to -60 dB, at most 3 s
    t = np.arange(n) / sample_rate  # (n,)
    phases = rng.uniform(0.0, 2.0 * np.pi, len(freqs))
    modes = (amps[:, None] * np.exp(-t[None, :] / taus[:, None])
             * np.sin(2.0 * np.pi * freqs[:, None] * t[None, :] + phases[:, None]))  # (P, n)
    modes = modes.sum(axis=0) / amps.sum()
    m = min(n, int(0.008 * spec.click_ms * sample_rate) + 1)  # 8 time constants
    burst = rng.standard_normal(m) * np.exp(-np.arange(m) / (spec.click_ms * 1e-3 * sample_rate))
    a = np.exp(-2.0 * np.pi * spec.click_cutoff / sample_rate)
    burst = signal.lfilter([1.0 - a], [1.0, -a], burst)
    burst /= max(np.abs(burst).max(), 1e-9)
    modes[:m] += spec.click_gain * burst
    return impact_gain(speed) * modes / max(np.abs(modes).max(), 1e-9)


def render_stems(scene: Scene, sample_rate: int = SAMPLE_RATE) -> AudioStems:
    """Impacts and ambience of ``scene``, float32 (W,) each."""
    n = int(round(scene.duration * sample_rate))
    impacts = np.zeros(n, dtype=np.float64)
    for k, e in enumerate(scene.events):
        obj = scene.objects[e.object]
        rng = np.random.default_rng([scene.seed, _IMPACT_STREAM, k])
        snd = impact_sound(e.material, e.speed, obj.f0, obj.decay, rng, sample_rate)
        start = int(round(e.time * sample_rate))
        stop = min(start + len(snd), n)
        if start < n:
            impacts[start:stop] += snd[: stop - start]
    rng = np.random.default_rng([scene.seed, _AMBIENCE_STREAM])
    ambience = ambience_sound(scene.ambience, n, rng, sample_rate)
    return AudioStems(impacts.astype(np.float32), ambience.astype(np.float32), sample_rate)


def render_audio(scene: Scene, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The soundtrack of ``scene``: float32 (W,) in [-1, 1]."""
    return render_stems(scene, sample_rate).mix


def ambience_sound(ambience: str, n: int, rng: np.random.Generator,
                   sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``n`` samples of ``ambience`` at its RMS level (float64)."""
    spec = check_ambience(ambience)
    synth = {"wind": _wind, "rain": _rain, "crickets": _crickets, "none": _room_tone}[spec.name]
    x = synth(n, rng, sample_rate)
    x *= 10.0 ** (spec.level_db / 20.0) / max(np.sqrt(np.mean(x * x)) if n else 0.0, 1e-12)
    if spec.name != "none":  # the same faint room tone under every ambience: no digital zeros
        x += _room_tone(n, rng, sample_rate) * 10.0 ** (AMBIENCES["none"].level_db / 20.0)
    return x


def _bandpass(lo: float, hi: float, order: int, sample_rate: int) -> np.ndarray:
    return np.array(_bandpass_design(lo, hi, order, sample_rate))  # scipy wants it writable


@lru_cache(maxsize=16)
def _bandpass_design(lo: float, hi: float, order: int, sample_rate: int) -> tuple:
    sos = signal.butter(order, [lo, hi], btype="bandpass", fs=sample_rate, output="sos")
    return tuple(map(tuple, sos))


def _wind(n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    lo, hi = AMBIENCES["wind"].band
    x = signal.sosfilt(_bandpass(lo, hi, 4, sample_rate), rng.standard_normal(n))
    t = np.arange(n) / sample_rate
    freqs = rng.uniform(0.08, 0.4, 3)
    phases = rng.uniform(0.0, 2.0 * np.pi, 3)
    gust = np.sin(2.0 * np.pi * freqs[:, None] * t[None, :] + phases[:, None]).mean(axis=0)
    return x * (0.6 + 0.4 * gust)


def _rain(n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    lo, hi = AMBIENCES["rain"].band
    drops = np.zeros(n)
    k = rng.poisson(800.0 * n / sample_rate)
    drops[rng.integers(0, max(n, 1), k)] += 10.0 ** (rng.normal(0.0, 4.0, k) / 20.0)
    x = signal.sosfilt(_bandpass(lo, hi, 6, sample_rate), drops)
    x /= max(np.sqrt(np.mean(x * x)), 1e-12)
    hiss = signal.sosfilt(_bandpass(800.0, 7800.0, 2, sample_rate), rng.standard_normal(n))
    hiss /= max(np.sqrt(np.mean(hiss * hiss)), 1e-12)
    return x + 10.0 ** (-30.0 / 20.0) * hiss


def _crickets(n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    t = np.arange(n) / sample_rate
    out = np.zeros(n)
    for level in [1.0, 0.5][: int(rng.integers(1, 3))]:
        carrier = rng.uniform(4300.0, 4800.0)
        rate = rng.uniform(40.0, 60.0)
        period = rng.uniform(0.3, 0.45)
        phase = rng.uniform(0.0, period)
        pulses = np.sin(np.pi * rate * t) ** 2  # AM at `rate` Hz, smooth pulses
        pos = np.mod(t + phase, period) / period  # position in the chirp period
        chirp = np.clip(np.minimum(pos, 0.7 - pos) / 0.03, 0.0, 1.0)  # 70 % on, soft edges
        out += level * chirp * pulses * np.sin(2.0 * np.pi * carrier * t)
    return out


def _room_tone(n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Low-passed (500 Hz) noise at unit RMS."""
    a = np.exp(-2.0 * np.pi * 500.0 / sample_rate)
    x = signal.lfilter([1.0 - a], [1.0, -a], rng.standard_normal(n))
    return x / max(np.sqrt(np.mean(x * x)) if n else 0.0, 1e-12)
