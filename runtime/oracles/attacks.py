"""The attacks of spec/watermark.md §6.4, with PyAV (codecs, FFmpeg filters) and numpy/scipy.

Every attack maps a mono float32 clip to a mono float32 clip at the same sample rate (lengths
may change). ``ATTACKS`` lists them by name with the detector search mode they need:
time-scale attacks need the speed/tempo search ("auto"), the rest use the offset search.
"""

# ruff: noqa: ARG005  (every attack has the signature (x, sr, ctx); many ignore some of it)
from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from math import gcd
from typing import Callable

import av
import numpy as np
from scipy import signal


@dataclass(frozen=True)
class Context:
    rng: np.random.Generator
    other: np.ndarray  # an unmarked clip of the same rate and length (background, mix)
    original: np.ndarray  # the unmarked version of the attacked clip (splice)


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x
    g = gcd(int(sr_in), int(sr_out))
    return signal.resample_poly(x, int(sr_out) // g, int(sr_in) // g)


def _frame(x: np.ndarray, sr: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x, np.float32)[None], format="flt",
                                       layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = sr, 0, Fraction(1, sr)
    return frame


def _decode_all(container, sr: int) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
    chunks = []
    for frame in container.decode(container.streams.audio[0]):
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def codec(x: np.ndarray, sr: int, fmt: str, name: str, kbps: int | None,
          rate: int | None = None) -> np.ndarray:
    """Encode with PyAV into an in-memory ``fmt`` container and decode back to ``sr``."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(name, rate=rate or sr, layout="mono")
        if kbps:
            stream.bit_rate = kbps * 1000
        for packet in stream.encode(_frame(np.clip(x, -1, 1), sr)):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buf.seek(0)
    with av.open(buf) as inp:
        return _decode_all(inp, sr)


def ffilter(x: np.ndarray, sr: int, *chain: tuple[str, str]) -> np.ndarray:
    """Run an FFmpeg filter chain (av.filter.Graph) over the clip."""
    graph = av.filter.Graph()
    node = graph.add_abuffer(format="flt", sample_rate=sr, layout="mono",
                             time_base=Fraction(1, sr))
    for name, args in (*chain, ("aformat", "sample_fmts=flt")):
        nxt = graph.add(name, args)
        node.link_to(nxt)
        node = nxt
    sink = graph.add("abuffersink")
    node.link_to(sink)
    graph.configure()
    graph.push(_frame(x, sr))
    graph.push(None)
    out = []
    while True:
        try:
            out.append(graph.pull().to_ndarray().reshape(-1))
        except (av.BlockingIOError, av.EOFError):
            break
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def mp3(x, sr, kbps):
    rate = sr if sr in (16000, 22050, 24000, 32000, 44100, 48000) else 44100
    return codec(x, sr, "mp3", "libmp3lame", kbps, rate)


def aac(x, sr, kbps, fmt="adts"):
    return codec(x, sr, fmt, "aac", kbps)


def opus(x, sr, kbps, fmt="ogg"):
    return codec(x, sr, fmt, "libopus", kbps, 48000)


def butter(x, sr, kind, freq):
    sos = signal.butter(8, freq, btype=kind, fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def noise_at_snr(x, snr_db, noise):
    p_sig = np.mean(x ** 2) + 1e-20
    noise = noise[: len(x)]
    return x + noise * np.sqrt(p_sig / (np.mean(noise ** 2) + 1e-20) / 10 ** (snr_db / 10))


def pink(n, rng):
    spec = np.fft.rfft(rng.normal(size=n))
    f = np.arange(len(spec))
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    return np.fft.irfft(spec, n)


def echo(x, sr, delay, volume):
    d = int(delay * sr)
    y = np.concatenate([x, np.zeros(d)])
    y[d:] += volume * x
    y = y[: len(x)]
    return y * (np.max(np.abs(x)) / (np.max(np.abs(y)) + 1e-12))


def reverb(x, sr, rt60, rng):
    n = int(rt60 * sr)
    rir = rng.normal(size=n) * np.exp(-6.9 * np.arange(n) / (rt60 * sr))
    wet = signal.fftconvolve(x, rir)[: len(x)]
    wet *= np.sqrt(np.mean(x ** 2) / (np.mean(wet ** 2) + 1e-20))
    return x + wet


def quantise(x, levels):
    lo, hi = x.min(), x.max()
    step = (hi - lo) / (levels - 1)
    return np.round((x - lo) / step) * step + lo


def speed(x, factor):
    """Play ``factor``× faster (pitch and tempo change): resample and keep the rate."""
    r = Fraction(factor).limit_denominator(200)
    return signal.resample_poly(x, r.denominator, r.numerator)


def crop(x, sr, seconds, rng):
    n = int(seconds * sr)
    if n >= len(x):
        return x
    start = int(rng.integers(1, len(x) - n))
    return x[start: start + n]


def splice(x, sr, original):
    """Marked 3 s + unmarked 5 s + marked 2 s (proportionally on shorter clips)."""
    a, b = int(3 * sr), int(8 * sr)
    if len(x) < int(10 * sr):
        a, b = int(0.3 * len(x)), int(0.8 * len(x))
    return np.concatenate([x[:a], original[a:b], x[b:]])


def peq(x, sr, f0, gain_db, q=1.0):
    """RBJ peaking biquad."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / sr
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a]
    den = [1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a]
    return signal.lfilter(b, den, x)


def bark_geq(x, sr, rng, depth_db=0.75):
    edges = [100, 200, 300, 400, 510, 630, 770, 920, 1080, 1270, 1480, 1720, 2000, 2320,
             2700, 3150, 3700, 4400, 5300, 6400]
    for f in edges:
        if f < 0.45 * sr:
            x = peq(x, sr, f, rng.uniform(-depth_db, depth_db), q=2.0)
    return x


def mix(x, other, level_db):
    scale = np.sqrt(np.mean(x ** 2) / (np.mean(other ** 2) + 1e-20)) * 10 ** (level_db / 20)
    return x + scale * other[: len(x)]


def pitch(x, sr, semitones):
    ratio = 2 ** (semitones / 12)
    return ffilter(x, sr, ("asetrate", str(round(sr * ratio))), ("aresample", str(sr)),
                   ("atempo", f"{1 / ratio:.6f}"))


def combo(x, sr, rng):
    y = noise_at_snr(mp3(x, sr, 64), 30, rng.normal(size=len(x) + 8192))
    return crop(0.7 * y, sr, 4, rng)


Attack = Callable[[np.ndarray, int, Context], np.ndarray]


def _table() -> dict[str, tuple[Attack, str]]:
    """name → (attack(x, sr, ctx), detector search mode)."""
    t: dict[str, tuple[Attack, str]] = {"none": (lambda x, sr, c: x, "offset")}

    def add(name, fn, mode="offset"):
        t[name] = (fn, mode)

    for k in (8, 16, 32, 64, 128):
        add(f"mp3_{k}k", partial(lambda x, sr, c, k: mp3(x, sr, k), k=k))
    for k in (24, 64, 128):
        add(f"aac_{k}k", partial(lambda x, sr, c, k: aac(x, sr, k), k=k))
    for k in (8, 16, 32, 64):
        add(f"opus_{k}k", partial(lambda x, sr, c, k: opus(x, sr, k), k=k))
    add("flac", lambda x, sr, c: codec(x, sr, "flac", "flac", None))
    add("ac3_192k", lambda x, sr, c: codec(x, sr, "ac3", "ac3", 192,
                                           sr if sr in (32000, 44100, 48000) else 48000))
    add("mp2_128k", lambda x, sr, c: codec(x, sr, "mp2", "mp2", 128))
    add("mp3_128k_aac_64k", lambda x, sr, c: aac(mp3(x, sr, 128), sr, 64))
    add("mp3_32k_aac_24k", lambda x, sr, c: aac(mp3(x, sr, 32), sr, 24))
    add("mp4_aac_128k", lambda x, sr, c: aac(x, sr, 128, "mp4"))
    add("webm_opus_96k", lambda x, sr, c: opus(x, sr, 96, "webm"))
    add("resample_2x", lambda x, sr, c: _resample(_resample(x, sr, 2 * sr), 2 * sr, sr))
    for mid in (8000, 16000, 48000):
        add(f"resample_{mid // 1000}k",
            partial(lambda x, sr, c, m: _resample(_resample(x, sr, m), m, sr), m=mid))
    for f in (500, 1500, 3500, 5000):
        add(f"lowpass_{f}", partial(lambda x, sr, c, f: butter(x, sr, "lowpass", f), f=f))
    for f in (100, 500, 1500):
        add(f"highpass_{f}", partial(lambda x, sr, c, f: butter(x, sr, "highpass", f), f=f))
    add("bandpass_300_3400", lambda x, sr, c: butter(x, sr, "bandpass", [300, 3400]))
    add("bandpass_500_5000", lambda x, sr, c: butter(x, sr, "bandpass", [500, 5000]))
    for s in (40, 30, 20, 10, 5):
        add(f"white_snr{s}",
            partial(lambda x, sr, c, s: noise_at_snr(x, s, c.rng.normal(size=len(x))), s=s))
    for s in (0.001, 0.01, 0.05):
        add(f"white_std{s}", partial(lambda x, sr, c, s: x / (np.max(np.abs(x)) + 1e-12)
                                     + s * c.rng.normal(size=len(x)), s=s))
    for s in (20, 10):
        add(f"pink_snr{s}",
            partial(lambda x, sr, c, s: noise_at_snr(x, s, pink(len(x), c.rng)), s=s))
        add(f"background_snr{s}", partial(lambda x, sr, c, s: noise_at_snr(x, s, c.other), s=s))
    for g in (0.1, 0.5):
        add(f"gain_{g}", partial(lambda x, sr, c, g: g * x, g=g))
    for g in (2, 10):
        add(f"gain_{g}_clip", partial(lambda x, sr, c, g: np.clip(g * x, -1, 1), g=g))
    add("polarity", lambda x, sr, c: -x)
    add("dc_0.01", lambda x, sr, c: x + 0.01)
    add("delay_1ms", lambda x, sr, c: np.concatenate([np.zeros(sr // 1000), x]))
    add("shift_1234", lambda x, sr, c: np.concatenate([np.zeros(1234), x]))
    for d, v in ((0.1, 0.4), (0.5, 0.5), (0.9, 0.4)):
        add(f"echo_{d}_{v}", partial(lambda x, sr, c, d, v: echo(x, sr, d, v), d=d, v=v))
    for rt in (0.3, 0.8):
        add(f"reverb_{rt}", partial(lambda x, sr, c, rt: reverb(x, sr, rt, c.rng), rt=rt))
    for w in (10, 22, 40):
        add(f"smooth_{w}", partial(lambda x, sr, c, w: np.convolve(x, np.ones(w) / w, "same"),
                                   w=w))
    add("quant_8bit", lambda x, sr, c: np.round(x * 127) / 127)
    add("quant_64", lambda x, sr, c: quantise(x, 64))
    add("quant_16", lambda x, sr, c: quantise(x, 16))
    for r in (0.8, 0.9, 1.1, 1.25):
        add(f"atempo_{r}", partial(lambda x, sr, c, r: ffilter(x, sr, ("atempo", str(r))), r=r),
            "auto")
    for r in (0.8, 0.9, 1.05, 1.25):
        add(f"speed_{r}", partial(lambda x, sr, c, r: speed(x, r), r=r), "auto")
    for st in (-2, 2):
        add(f"pitch_{st:+d}", partial(lambda x, sr, c, st: pitch(x, sr, st), st=st), "auto")
    for s in (1, 2, 4):
        add(f"crop_{s}s", partial(lambda x, sr, c, s: crop(x, sr, s, c.rng), s=s))
    add("drop_first_0.1pct", lambda x, sr, c: x[len(x) // 1000:])
    add("splice", lambda x, sr, c: splice(x, sr, c.original))
    add("eq_peaks_6db", lambda x, sr, c: peq(peq(x, sr, 1000, 6), sr, 3000, -6))
    add("eq_bark_0.75db", lambda x, sr, c: bark_geq(x, sr, c.rng))
    add("compressor_8to1", lambda x, sr, c: ffilter(
        x, sr, ("acompressor", "threshold=0.05:ratio=8:attack=5:release=50")))
    add("limiter_-18db", lambda x, sr, c: ffilter(x, sr, ("alimiter", "limit=0.126:level=0")))
    add("loudnorm_-23", lambda x, sr, c: ffilter(x, sr, ("loudnorm", "I=-23"),
                                                 ("aresample", str(sr))))
    add("denoise_afftdn", lambda x, sr, c: ffilter(x, sr, ("afftdn", "nr=20")))
    add("denoise_anlmdn", lambda x, sr, c: ffilter(x, sr, ("anlmdn", "")))
    add("mix_music_0db", lambda x, sr, c: mix(x, c.other, 0))
    add("mix_music_-6db", lambda x, sr, c: mix(x, c.other, -6))
    add("combo", lambda x, sr, c: combo(x, sr, c.rng))
    return t


ATTACKS = _table()


def apply(name: str, x: np.ndarray, sr: int, ctx: Context) -> np.ndarray:
    fn, _ = ATTACKS[name]
    return np.asarray(fn(np.asarray(x, np.float64), sr, ctx), dtype=np.float32)
