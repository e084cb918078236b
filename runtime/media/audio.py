"""Audio arrays: validation, writing FLAC/WAV (soundfile) and encoding tracks for ``mux``."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from .files import AUDIO_FORMATS, MediaError, atomic_output, check_output

SUBTYPE = "PCM_16"  # FLAC and WAV are written as 16-bit PCM (what every player reads)
ENCODE_CHUNK = 1024  # samples per AudioFrame handed to an encoder
BITRATE_PER_CHANNEL = 96_000  # AAC and Opus, bits/s per channel


def as_channels(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    """(W,) or (C, W) float -> (C, W) float32 with 1 or 2 channels, finite values."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[None]  # (1, W)
    if audio.ndim != 2 or audio.shape[0] not in (1, 2) or audio.shape[1] == 0:
        raise ValueError(f"{name} must be (W,) or (C, W) with C in (1, 2), got {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"{name} must be floating point in [-1, 1], got dtype {audio.dtype}")
    if not np.isfinite(audio).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return audio.astype(np.float32, copy=False)


def write_audio(
    path: str | os.PathLike,
    audio: np.ndarray,
    sample_rate: int,
    *,
    overwrite: bool = False,
    title: str = "v2a generated",
) -> None:
    """Write (W,) or (C, W) float audio to .flac/.wav (16-bit), atomically.

    Samples are clipped to [-1, 1]; ``title`` goes into the file's tags. An existing file is
    replaced only with ``overwrite=True``.
    """
    path = check_output(path, overwrite=overwrite, allowed=tuple(AUDIO_FORMATS))
    with atomic_output(path) as tmp:
        write_audio_file(tmp, audio, sample_rate, title=title, name=path)


def write_audio_file(
    path: Path, audio: np.ndarray, sample_rate: int, *, title: str, name: Path | None = None
) -> None:
    """Write ``path`` directly (a temporary path of ``atomic_output``); the format goes by its
    extension; ``name``: the final path, for messages."""
    import soundfile as sf

    data = np.clip(as_channels(audio), -1.0, 1.0).T  # (W, C), soundfile's layout
    check_rate(sample_rate)
    fmt = AUDIO_FORMATS[Path(path).suffix.lower()]
    try:
        with sf.SoundFile(path, "w", sample_rate, data.shape[1], SUBTYPE, format=fmt) as f:
            f.title = title
            f.write(data)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise MediaError(f"{name or path}: cannot write {fmt} ({_reason(path, e)})") from e


def _reason(path: Path, error: Exception) -> str:
    """libsndfile says "System error." for OS failures; name the directory's state instead."""
    folder = Path(path).parent
    if not os.access(folder, os.W_OK):
        return f"directory {str(folder)!r} is not writable"
    return " ".join(str(error).replace(str(path), "").split()) or type(error).__name__


def encode_track(stream, audio: np.ndarray, sample_rate: int, first_sample: int) -> list:
    """Encode (C, W) float32 into packets of the output audio ``stream`` (already configured).

    ``first_sample`` is the start time in samples (the video's first frame). The encoder's own
    resampler converts sample format, and rate where the codec needs another one (Opus).
    """
    import av
    packets = []
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    for offset in range(0, audio.shape[1], ENCODE_CHUNK):
        chunk = np.ascontiguousarray(audio[:, offset : offset + ENCODE_CHUNK])  # (C, n)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.time_base = Fraction(1, sample_rate)
        frame.pts = first_sample + offset
        packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))  # flush
    return packets


def fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Cut (C, W) to ``samples``, or pad it with silence (the model's W is not trimmed to the
    video; a track from a clamped span may be a little short)."""
    if audio.shape[1] >= samples:
        return audio[:, :samples]
    return np.pad(audio, ((0, 0), (0, samples - audio.shape[1])))


def check_rate(sample_rate) -> None:
    if not (isinstance(sample_rate, (int, np.integer)) and 1000 <= sample_rate <= 384_000):
        raise ValueError(f"sample_rate must be an int in [1000, 384000] Hz, got {sample_rate!r}")
