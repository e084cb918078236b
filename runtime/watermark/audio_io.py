"""Reading audio for the watermark CLI: any file soundfile reads, else the audio tracks of
anything PyAV opens (MP4, MKV, WebM, MOV, MP3, AAC, Opus, ...): the first one
(``read_audio``) or every one (``read_audio_tracks``); writing atomically, optionally checking
the written file before it is renamed into place.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..media.files import atomic_output


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode ``path`` → ``(audio (channels, W) float32, sample_rate)``.

    Raises ValueError with a one-line reason when the file cannot be read or has no audio.
    """
    import av
    import soundfile as sf
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)  # (W, channels)
        return np.ascontiguousarray(data.T), int(sr)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass  # not a format libsndfile knows: try FFmpeg
    try:
        return _read_with_av(p)
    except av.FFmpegError as e:
        raise ValueError(f"{p}: cannot decode ({e.strerror or e})") from e


def read_audio_tracks(path: str | os.PathLike) -> list[tuple[np.ndarray, int]]:
    """Every audio track of ``path`` as ``(audio (channels, W) float32, sample_rate)``, in
    stream order (an audio file: its one track)."""
    import av
    import soundfile as sf
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
        return [(np.ascontiguousarray(data.T), int(sr))]
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    try:
        with av.open(str(p)) as container:
            count = len(container.streams.audio)
        if count == 0:
            raise ValueError(f"{p}: no audio track")
        return [_read_with_av(p, k) for k in range(count)]
    except av.FFmpegError as e:
        raise ValueError(f"{p}: cannot decode ({e.strerror or e})") from e


def _read_with_av(p: Path, track: int = 0) -> tuple[np.ndarray, int]:
    import av
    with av.open(str(p)) as container:
        if not container.streams.audio:
            raise ValueError(f"{p}: no audio track")
        stream = container.streams.audio[track]
        rate = stream.codec_context.sample_rate
        layout = stream.codec_context.layout
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks = []
        for frame in container.decode(stream):
            chunks += [f.to_ndarray() for f in resampler.resample(frame)]  # (channels, n)
        chunks += [f.to_ndarray() for f in resampler.resample(None)]
    if not chunks:
        raise ValueError(f"{p}: audio track {track + 1} is empty")
    return np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32), int(rate)


def write_audio_atomic(path: str | os.PathLike, audio: np.ndarray, sample_rate: int,
                       subtype: str | None = None,
                       check: Callable[[Path], None] | None = None) -> None:
    """Write (channels, W) or (W,) audio with soundfile (format from the extension) through a
    temporary file in the same directory and a rename: never a partial file at ``path``.
    ``check(temporary path)`` runs on the written file before the rename; if it raises,
    nothing is written."""
    import soundfile as sf
    p = Path(path)
    fmt = p.suffix.lstrip(".").upper()
    if fmt not in sf.available_formats() or fmt in ("RAW", "MP3"):
        raise ValueError(f"{p}: cannot write '{p.suffix}' audio; use .wav, .flac or .ogg")
    if subtype is not None and not sf.check_format(fmt, subtype):
        subtype = None
    data = np.asarray(audio).T if np.ndim(audio) == 2 else np.asarray(audio)  # (W, channels)
    with atomic_output(p) as tmp:
        sf.write(tmp, data, sample_rate, subtype=subtype, format=fmt)
        if check is not None:
            check(tmp)


def audio_subtype(path: str | os.PathLike) -> str | None:
    """The soundfile subtype of ``path`` (e.g. 'PCM_16'), or None if soundfile cannot read it."""
    import soundfile as sf
    try:
        return sf.info(str(path)).subtype
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
