"""Reading audio for the watermark CLI: any file soundfile reads, else the audio tracks of
anything PyAV opens (MP4, MKV, WebM, MOV, MP3, AAC, Opus, ...): the first one in memory
(``read_audio``), or any one (``count_audio_tracks``) decoded block by block into a temporary
file (``spool_audio``); writing atomically, optionally checking the written file before it is
renamed into place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..media.files import atomic_output
from ..signals import Spool, Track

BLOCK = 1 << 16  # sample frames per decoded block


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode ``path`` → ``(audio (channels, W) float32, sample_rate)``.

    Raises ValueError with a one-line reason when the file cannot be read or has no audio.
    """
    rate, channels, decoded = _decode(Path(path))
    audio = np.concatenate([np.zeros((channels, 0), np.float32), *decoded], axis=1)
    if audio.shape[1] == 0:
        raise ValueError(f"{path}: the audio track is empty")
    return audio, rate


def spool_audio(path: str | os.PathLike, directory: str | os.PathLike | None = None,
                track: int = 0) -> Spool:
    """Decode audio track ``track`` of ``path`` block by block into a
    :class:`~v2a_runtime.signals.Spool` (a temporary float32 file in ``directory``; close it
    when done): the same samples as ``read_audio``, without holding them in memory."""
    rate, channels, decoded = _decode(Path(path), track)
    spool = Spool(channels, rate, directory)
    try:
        for block in decoded:
            spool.append(block)
        if spool.length == 0:
            which = "the audio track" if track == 0 else f"audio track {track + 1}"
            raise ValueError(f"{path}: {which} is empty")
    except BaseException:
        spool.close()
        raise
    return spool


def count_audio_tracks(path: str | os.PathLike) -> int:
    """Audio tracks of ``path`` (an audio file: one); ValueError if it has none."""
    import av

    p = Path(path)
    if _soundfile_info(p) is not None:
        return 1
    try:
        with av.open(str(p)) as container:
            count = len(container.streams.audio)
    except av.FFmpegError as e:
        raise ValueError(f"{p}: cannot decode ({e.strerror or e})") from e
    if count == 0:
        raise ValueError(f"{p}: no audio track")
    return count


def _soundfile_info(p: Path):
    """soundfile's info on ``p``, or None when libsndfile cannot read it."""
    import soundfile as sf

    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    try:
        return sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None  # not a format libsndfile knows: try FFmpeg


def _decode(p: Path, track: int = 0) -> tuple[int, int, Iterator[np.ndarray]]:
    """(rate, channels, float32 (channels, n) blocks) of audio track ``track``: soundfile for
    the formats libsndfile reads (one track), else FFmpeg (PyAV)."""
    import av
    import soundfile as sf

    info = _soundfile_info(p)
    if info is not None:
        if track != 0:
            raise ValueError(f"{p}: has one audio track, not {track + 1}")
        blocks = sf.blocks(str(p), blocksize=BLOCK, dtype="float32", always_2d=True)
        return int(info.samplerate), int(info.channels), (b.T for b in blocks)  # (channels, n)
    try:
        with av.open(str(p)) as container:
            if len(container.streams.audio) <= track:
                raise ValueError(f"{p}: no audio track" if track == 0 else
                                 f"{p}: no audio track {track + 1}")
            stream = container.streams.audio[track]
            rate = stream.codec_context.sample_rate
            channels = stream.codec_context.layout.nb_channels
    except av.FFmpegError as e:
        raise ValueError(f"{p}: cannot decode ({e.strerror or e})") from e
    return int(rate), int(channels), _decode_av(p, track)


def _decode_av(p: Path, track: int = 0) -> Iterator[np.ndarray]:
    import av

    try:
        with av.open(str(p)) as container:
            stream = container.streams.audio[track]
            layout = stream.codec_context.layout
            rate = stream.codec_context.sample_rate
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
            for frame in container.decode(stream):
                yield from (f.to_ndarray() for f in resampler.resample(frame))  # (channels, n)
            yield from (f.to_ndarray() for f in resampler.resample(None))
    except av.FFmpegError as e:
        raise ValueError(f"{p}: cannot decode ({e.strerror or e})") from e


def write_audio_atomic(path: str | os.PathLike, audio: np.ndarray | Track, sample_rate: int,
                       subtype: str | None = None,
                       check: Callable[[Path], None] | None = None) -> None:
    """Write (channels, W) or (W,) audio, or a :class:`~v2a_runtime.signals.Track` block by
    block, with soundfile (format from the extension) through a temporary file in the same
    directory and a rename: never a partial file at ``path``. ``check(temporary path)`` runs
    on the written file before the rename; if it raises, nothing is written."""
    import soundfile as sf

    p = Path(path)
    fmt = p.suffix.lstrip(".").upper()
    if fmt not in sf.available_formats() or fmt in ("RAW", "MP3"):
        raise ValueError(f"{p}: cannot write '{p.suffix}' audio; use .wav, .flac or .ogg")
    if subtype is not None and not sf.check_format(fmt, subtype):
        subtype = None
    if not isinstance(audio, Track):
        a = np.asarray(audio)
        audio = Track.from_array(a if a.ndim == 2 else a[None])
    with atomic_output(p) as tmp:
        with sf.SoundFile(tmp, "w", sample_rate, audio.channels, subtype, format=fmt) as f:
            for block in audio.blocks():
                f.write(np.asarray(block).T)  # (n, channels)
        if check is not None:
            check(tmp)  # the file complete and closed


def audio_subtype(path: str | os.PathLike) -> str | None:
    """The soundfile subtype of ``path`` (e.g. 'PCM_16'), or None if soundfile cannot read it."""
    import soundfile as sf

    try:
        return sf.info(str(path)).subtype
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
