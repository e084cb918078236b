"""Host clips for the watermark benchmark, made here (nothing is downloaded).

Four kinds, each a pure function of (rng, sample_rate, duration) → float32 (W,):

- ``speech``: espeak-ng sentences (random words, voice variant, rate and pitch), resampled;
- ``music``: synthesized tonal music (chords, melody, bass, harmonic envelopes, some drums);
- ``ambience``: rain, wind, crickets, stream and room-tone textures;
- ``foley``: V2A-like sound effects (impacts, footsteps, engines, whooshes) over a bed.

V2A outputs of a real bundle are added by ``benchmarks/watermark/robustness.py --bundle DIR``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

KINDS = ("speech", "music", "ambience", "foley")
WORDS = ("the quick brown fox jumps over a lazy dog while seven bright stars shine above "
         "quiet rivers and distant mountains remember every careful engineer measures twice "
         "before cutting wooden boards near the old harbour where fishing boats return at "
         "dawn carrying silver nets heavy with morning light and children laugh loudly").split()
VOICES = ("en", "en-us", "en-gb", "en-gb-scotland", "en-029", "en-us-nyc")
VARIANTS = ("", "+f1", "+f2", "+f3", "+f4", "+m1", "+m2", "+m3", "+m4", "+klatt", "+Andy")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x
    g = gcd(sr_in, sr_out)
    return signal.resample_poly(x, sr_out // g, sr_in // g)


def fit(x: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n)
    out[: min(n, len(x))] = x[:n]
    return out


def normalise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Peak at a random level between −18 and −1 dBFS."""
    peak = np.max(np.abs(x)) + 1e-12
    return (x / peak * 10 ** (rng.uniform(-18, -1) / 20)).astype(np.float32)


def speech(rng: np.random.Generator, sr: int, duration: float) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    n = int(sr * duration)
    text = " ".join(rng.choice(WORDS, size=int(3.2 * duration) + 4))
    voice = str(rng.choice(VOICES)) + str(rng.choice(VARIANTS))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-w", str(path), "-v", voice, "-s",
                        str(int(rng.integers(130, 200))), "-p", str(int(rng.integers(25, 75))),
                        text], check=True, capture_output=True)
        x, sr_in = sf.read(path, dtype="float64")
    x = resample(x, sr_in, sr)
    start = int(rng.integers(0, max(1, len(x) - n)))
    return normalise(fit(x[start:], n), rng)


def _adsr(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    attack = max(1, int(sr * rng.uniform(0.002, 0.08)))
    decay = np.exp(-np.arange(n) / (sr * rng.uniform(0.15, 1.5)))
    env = decay * rng.uniform(0.4, 1.0) + (1 - rng.uniform(0.4, 1.0)) * decay ** 4
    env[:attack] *= np.linspace(0, 1, attack)
    return env


def _note(f0: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    vibrato = 1 + rng.uniform(0, 0.004) * np.sin(2 * np.pi * rng.uniform(4, 7) * t)
    phase = 2 * np.pi * f0 * np.cumsum(vibrato) / sr
    tilt = rng.uniform(0.5, 2.0)
    out = np.zeros(n)
    for h in range(1, 16):
        if f0 * h > 0.45 * sr:
            break
        out += np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h ** tilt
    return out * _adsr(n, sr, rng)


def music(rng: np.random.Generator, sr: int, duration: float) -> np.ndarray:
    n = int(sr * duration)
    out = np.zeros(n + sr)
    beat = 60 / rng.uniform(70, 150)
    root = 110 * 2 ** (rng.integers(0, 12) / 12)
    scale = np.array([0, 2, 4, 5, 7, 9, 11]) if rng.random() < 0.6 else np.array(
        [0, 2, 3, 5, 7, 8, 10])
    degrees = [0, 3, 4, 5, 1, 0, 4, 3]
    t0, bar = 0.0, 0
    while t0 < duration:
        deg = degrees[bar % len(degrees)] if rng.random() < 0.7 else int(rng.integers(0, 7))
        chord = [scale[(deg + k) % 7] + 12 * ((deg + k) // 7) for k in (0, 2, 4)]
        i0, m = int(t0 * sr), int(4 * beat * sr)
        for semis in chord:  # chord, an octave up
            out[i0: i0 + m] += 0.3 * _note(2 * root * 2 ** (semis / 12), m, sr, rng)[
                : len(out) - i0]
        bass = _note(root * 2 ** (chord[0] / 12) / 2, m, sr, rng)
        out[i0: i0 + m] += 0.5 * bass[: len(out) - i0]
        for b in range(int(rng.integers(2, 9))):  # melody
            ts = t0 + b * beat * rng.choice([0.5, 1.0])
            i, k = int(ts * sr), int(beat * sr)
            semis = scale[int(rng.integers(0, 7))] + 24
            if i < len(out):
                out[i: i + k] += 0.35 * _note(root * 2 ** (semis / 12), k, sr, rng)[
                    : len(out) - i]
        if rng.random() < 0.5:  # drums: kick and hat
            for b in range(4):
                i = int((t0 + b * beat) * sr)
                k = int(0.15 * sr)
                tt = np.arange(k) / sr
                kick = np.sin(2 * np.pi * (50 + 80 * np.exp(-tt * 30)) * tt) * np.exp(-tt * 20)
                hat = rng.normal(size=k) * np.exp(-tt * 60) * 0.2
                seg = out[i: i + k]
                seg += (kick + signal.lfilter([1, -1], [1], hat))[: len(seg)]
        t0 += 4 * beat
        bar += 1
    return normalise(out[:n], rng)


def _colored_noise(n: int, rng: np.random.Generator, lo: float, hi: float, sr: int):
    hi = min(hi, 0.45 * sr)
    sos = signal.butter(2, [lo, hi], btype="band", fs=sr, output="sos")
    return signal.sosfilt(sos, rng.normal(size=n))


def ambience(rng: np.random.Generator, sr: int, duration: float) -> np.ndarray:
    n = int(sr * duration)
    t = np.arange(n) / sr
    kind = rng.choice(["rain", "wind", "crickets", "stream", "room"])
    if kind == "rain":
        out = _colored_noise(n, rng, 400, 9000, sr) * 0.3
        drops = rng.random(n) < rng.uniform(20, 200) / sr
        kernel = np.exp(-np.arange(int(0.01 * sr)) / (0.002 * sr))
        out += signal.lfilter([1, -0.9], [1], np.convolve(drops * rng.normal(size=n),
                                                           kernel)[:n])
    elif kind == "wind":
        env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * t + rng.uniform(0, 6))
        out = _colored_noise(n, rng, 60, rng.uniform(600, 2500), sr) * (0.2 + env)
    elif kind == "crickets":
        f = rng.uniform(3500, 5500)
        chirp = (np.sin(2 * np.pi * rng.uniform(2, 6) * t) > 0.3) * (
            0.5 + 0.5 * np.sin(2 * np.pi * 30 * t))
        out = np.sin(2 * np.pi * f * t) * chirp + 0.05 * _colored_noise(n, rng, 100, 3000, sr)
    elif kind == "stream":
        out = _colored_noise(n, rng, 200, 6000, sr) * (1 + 0.3 * _colored_noise(
            n, rng, 1, 8, sr))
    else:
        out = _colored_noise(n, rng, 40, 1500, sr) * 0.2 + 0.05 * np.sin(
            2 * np.pi * rng.choice([50, 60]) * t)
    return normalise(out, rng)


def foley(rng: np.random.Generator, sr: int, duration: float) -> np.ndarray:
    n = int(sr * duration)
    t = np.arange(n) / sr
    out = _colored_noise(n, rng, 80, 4000, sr) * rng.uniform(0.005, 0.05)
    if rng.random() < 0.4:  # engine
        f0 = rng.uniform(30, 90) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t))
        saw = signal.sawtooth(2 * np.pi * np.cumsum(f0) / sr)
        out += 0.3 * signal.sosfilt(signal.butter(2, 1500, fs=sr, output="sos"), saw)
    for _ in range(int(rng.integers(3, 16) * duration / 5)):
        i = int(rng.integers(0, n))
        k = int(sr * rng.uniform(0.05, 0.6))
        tt = np.arange(k) / sr
        burst = rng.normal(size=k) * np.exp(-tt * rng.uniform(8, 60))
        for _ in range(int(rng.integers(1, 4))):  # resonances of the struck object
            f = rng.uniform(150, 4000)
            b, a = signal.iirpeak(f, rng.uniform(5, 40), fs=sr)
            burst = burst + 3 * signal.lfilter(b, a, burst)
        if rng.random() < 0.3:  # whoosh
            burst = _colored_noise(k, rng, 300, 3000, sr) * np.hanning(k)
        seg = out[i: i + k]
        seg += rng.uniform(0.2, 1.0) * burst[: len(seg)]
    return normalise(out, rng)


GENERATORS = {"speech": speech, "music": music, "ambience": ambience, "foley": foley}


def make_clip(kind: str, seed: int, sr: int, duration: float) -> np.ndarray:
    if kind not in GENERATORS:
        raise ValueError(f"unknown clip kind {kind!r}; expected one of {KINDS}")
    return GENERATORS[kind](np.random.default_rng(seed), sr, duration)
