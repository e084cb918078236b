"""Audio arrays and tracks (block by block): validation, writing FLAC/WAV (soundfile) and
encoding tracks for ``mux``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..signals import Track
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
    audio: np.ndarray | Track,
    sample_rate: int,
    *,
    overwrite: bool = False,
    title: str = "v2a generated",
) -> None:
    """Write (W,) or (C, W) float audio, or a :class:`~v2a_runtime.signals.Track` (written
    block by block), to .flac/.wav (16-bit), atomically.

    Samples are clipped to [-1, 1]; ``title`` goes into the file's tags. An existing file is
    replaced only with ``overwrite=True``.
    """
    path = check_output(path, overwrite=overwrite, allowed=tuple(AUDIO_FORMATS))
    with atomic_output(path) as tmp:
        write_audio_file(tmp, audio, sample_rate, title=title, name=path)


def write_audio_file(
    path: Path, audio: np.ndarray | Track, sample_rate: int, *, title: str,
    name: Path | None = None,
) -> None:  # fmt: skip
    """Write ``path`` directly (a temporary path of ``atomic_output``), block by block; the
    format goes by its extension; ``name``: the final path, for messages."""
    import soundfile as sf

    track = as_track(audio)
    check_rate(sample_rate)
    fmt = AUDIO_FORMATS[Path(path).suffix.lower()]
    try:
        with sf.SoundFile(path, "w", sample_rate, track.channels, SUBTYPE, format=fmt) as f:
            f.title = title
            for block in track.blocks():
                f.write(np.clip(checked(block), -1.0, 1.0).T)  # (n, C), soundfile's layout
    except (sf.LibsndfileError, RuntimeError) as e:
        raise MediaError(f"{name or path}: cannot write {fmt} ({_reason(path, e)})") from e


def _reason(path: Path, error: Exception) -> str:
    """libsndfile says "System error." for OS failures; name the directory's state instead."""
    folder = Path(path).parent
    if not os.access(folder, os.W_OK):
        return f"directory {str(folder)!r} is not writable"
    return " ".join(str(error).replace(str(path), "").split()) or type(error).__name__


def as_track(audio: np.ndarray | Track, name: str = "audio") -> Track:
    """A Track as it is (its blocks are checked as they come), or a checked array's blocks."""
    if isinstance(audio, Track):
        if audio.channels not in (1, 2) or audio.length == 0:
            raise ValueError(f"{name} must have 1 or 2 channels and samples, got "
                             f"({audio.channels}, {audio.length})")  # fmt: skip
        return audio
    return Track.from_array(as_channels(audio, name))


def checked(block: np.ndarray, name: str = "audio") -> np.ndarray:
    """A block of a Track as float32, finite."""
    if not np.isfinite(block).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return block.astype(np.float32, copy=False)


def encode_track(stream, chunks: Iterator[np.ndarray], sample_rate: int, first_sample: int):
    """Encode (C, n) float32 chunks into packets of the output audio ``stream`` (already
    configured), lazily: packets come out as the chunks are consumed.

    ``first_sample`` is the start time in samples (the video's first frame). The encoder's own
    resampler converts sample format, and rate where the codec needs another one (Opus).
    """
    import av

    offset = 0
    for chunk in chunks:
        layout = "mono" if chunk.shape[0] == 1 else "stereo"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp",
                                           layout=layout)  # fmt: skip
        frame.sample_rate = sample_rate
        frame.time_base = Fraction(1, sample_rate)
        frame.pts = first_sample + offset
        offset += chunk.shape[1]
        yield from stream.encode(frame)
    yield from stream.encode(None)  # flush


def fitted_chunks(track: Track, lead: int, samples: int, size: int = ENCODE_CHUNK):
    """``lead`` samples of silence, then the track, cut or padded with silence to ``samples``
    in all (the model's W is not trimmed to the video; a track from a clamped span may be a
    little short), as (C, size) float32 chunks (the last one shorter)."""
    channels = track.channels

    def source() -> Iterator[np.ndarray]:
        yield np.zeros((channels, lead), np.float32)
        yield from (checked(b, "track") for b in track.blocks())

    blocks, buf, pos = source(), np.zeros((channels, 0), np.float32), 0
    for done in range(0, samples, size):
        n = min(size, samples - done)
        if buf.shape[1] - pos < n:  # refill: the rest of the buffer and the next blocks
            parts, have = [buf[:, pos:]], buf.shape[1] - pos
            while have < n:
                block = next(blocks, None)
                if block is None:
                    block = np.zeros((channels, n - have), np.float32)
                parts.append(block)
                have += block.shape[1]
            buf, pos = np.concatenate(parts, axis=1), 0
        yield buf[:, pos : pos + n]
        pos += n


def check_rate(sample_rate) -> None:
    if not (isinstance(sample_rate, (int, np.integer)) and 1000 <= sample_rate <= 384_000):
        raise ValueError(f"sample_rate must be an int in [1000, 384000] Hz, got {sample_rate!r}")
