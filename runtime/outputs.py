"""Where a generated soundtrack goes: output names, checks before any work, and ``save``.

    default_output(video, *, out_dir=None, ext=None, tracks=1, keep_original_audio=False)
        -> Path: VIDEO's name + ``.v2a`` + the input's own container when a dry run shows it
        can carry the new audio, else ``.mkv`` (Matroska holds nearly every video codec).
    check_outputs(video, output, *, tracks, sample_rate, duration, keep_original_audio,
                  overwrite, audio_codec=None, bitrate=None) -> list[Path]
        the path rules, a one-second dry run of the muxer (video outputs) and free space for
        the estimated size; one output, or OUT-1.flac ... OUT-K.flac for K tracks into audio
        files. MediaError (one line naming the output and the cause) before any decoding.
    save(result, output, video=None, *, keep_original_audio=False, overwrite=False,
         title=..., audio_codec=None, bitrate=None, sample_rate=None) -> list[Path]
        what ``v2a generate`` writes (a GenerateResult, or a StreamResult block by block):
        muxed into a copy of ``video`` (the picture's packets copied; ``audio_codec``
        aac|opus|flac|pcm, ``bitrate`` in bits/s), or one 16-bit FLAC/WAV per track;
        ``sample_rate`` resamples first (polyphase, scipy; a StreamResult block by block, from
        a spool file next to the output); all files or none (atomic).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import numpy as np

from .media import AUDIO_FORMATS, VIDEO_CONTAINERS, MediaError, check_output, mux, preflight
from .media.audio import BITRATE_PER_CHANNEL, check_rate, write_audio_file
from .media.files import atomic_output, check_space
from .pipeline import GenerateResult, StreamResult
from .signals import Resampled, Track, blocks, spooled_track

FALLBACK = ".mkv"  # Matroska carries nearly every video codec, and Opus
MARGIN = 1.1  # free-space estimate: 10 % over the payload for container overhead


def default_output(
    video: str | os.PathLike,
    *,
    out_dir: str | os.PathLike | None = None,
    ext: str | None = None,
    tracks: int = 1,
    keep_original_audio: bool = False,
) -> Path:
    """``out_dir``/VIDEO.v2a.EXT; without ``ext``, the input's container if it can hold the
    new audio (checked by a dry run), else ``.mkv``."""
    video = Path(video)
    folder = video.parent if out_dir is None else Path(out_dir)
    if ext is not None:
        return folder / f"{video.stem}.v2a{ext if ext.startswith('.') else '.' + ext}"
    own = video.suffix.lower()
    if own in VIDEO_CONTAINERS and own != FALLBACK:
        candidate = folder / f"{video.stem}.v2a{own}"
        try:
            preflight(video, candidate, tracks=tracks, keep_original_audio=keep_original_audio,
                      overwrite=True)  # fmt: skip
            return candidate
        except MediaError:
            pass  # e.g. a codec the MP4 muxer cannot copy: fall back to Matroska
    return folder / f"{video.stem}.v2a{FALLBACK}"


def track_paths(output: Path, tracks: int) -> list[Path]:
    """One path for a video output or a single track; OUT-1.ext ... OUT-K.ext otherwise."""
    if tracks == 1 or output.suffix.lower() not in AUDIO_FORMATS:
        return [output]
    return [output.with_name(f"{output.stem}-{k + 1}{output.suffix}") for k in range(tracks)]


def check_outputs(
    video: str | os.PathLike,
    output: str | os.PathLike,
    *,
    tracks: int,
    sample_rate: int,
    duration: float,
    keep_original_audio: bool = False,
    overwrite: bool = False,
    audio_codec: str | None = None,
    bitrate: int | None = None,
) -> list[Path]:
    """Every check that can be made before decoding (see the module docstring)."""
    video, output = Path(video), Path(output)
    is_video = output.suffix.lower() in VIDEO_CONTAINERS
    check_output(output, input_path=video, overwrite=overwrite or tracks > 1 and not is_video)
    paths = [check_output(p, input_path=video, overwrite=overwrite)
             for p in track_paths(output, tracks)]  # fmt: skip
    if is_video:
        preflight(video, output, tracks=tracks, sample_rate=sample_rate,
                  keep_original_audio=keep_original_audio, overwrite=overwrite,
                  audio_codec=audio_codec, bitrate=bitrate)  # fmt: skip
        per_track = 2 * 8 * sample_rate if audio_codec in ("flac", "pcm") else (
            bitrate or BITRATE_PER_CHANNEL)  # fmt: skip
        audio = tracks * per_track / 8 * duration
        check_space(output, int(MARGIN * (os.path.getsize(video) + audio)))
    else:
        check_space(output, int(MARGIN * tracks * 2 * sample_rate * duration))  # 16-bit PCM
    return paths


def save(
    result: GenerateResult | StreamResult,
    output: str | os.PathLike,
    video: str | os.PathLike | None = None,
    *,
    keep_original_audio: bool = False,
    overwrite: bool = False,
    title: str = "v2a generated",
    audio_codec: str | None = None,
    bitrate: int | None = None,
    sample_rate: int | None = None,
) -> list[Path]:
    """Write ``result`` as ``v2a generate`` does; returns the paths written. A
    :class:`StreamResult` (inside its ``with`` block) is written block by block; with
    ``sample_rate`` set its tracks are first joined in memory (the in-memory path)."""
    output = Path(output)
    with ExitStack() as scratch:
        if isinstance(result, StreamResult):
            audio, rate = _resampled(result, sample_rate, output.parent, scratch)
        else:
            audio, rate = resample(result.audio, result.sample_rate, sample_rate)
        return _write(audio, rate, output, video, keep_original_audio=keep_original_audio,
                      overwrite=overwrite, title=title, audio_codec=audio_codec,
                      bitrate=bitrate, start=result.start)  # fmt: skip


def _write(audio, rate: int, output: Path, video, *, keep_original_audio: bool, overwrite: bool,
           title: str, audio_codec: str | None, bitrate: int | None, start: float) -> list[Path]:
    paths = track_paths(output, len(audio))
    if output.suffix.lower() in VIDEO_CONTAINERS:
        if video is None:
            raise ValueError(f"{output}: a video output needs the input video (video=...)")
        mux(video, output, audio, rate, start=start, keep_original_audio=keep_original_audio,
            title=title, overwrite=overwrite, audio_codec=audio_codec, bitrate=bitrate)  # fmt: skip
        return paths
    checked = [check_output(p, input_path=video, overwrite=overwrite, allowed=tuple(AUDIO_FORMATS))
               for p in paths]  # fmt: skip
    with ExitStack() as stack:  # every file renamed into place only when all are written
        temps = [stack.enter_context(atomic_output(p)) for p in checked]
        for path, temp, track in zip(checked, temps, audio, strict=True):
            write_audio_file(temp, track, rate, title=title, name=path)
    return checked


def _resampled(result: StreamResult, to: int | None, directory: Path,
               scratch: ExitStack) -> tuple[list[Track], int]:
    """The streamed tracks at ``to`` Hz, block by block: each rendered once into a spool file
    in ``directory`` (removed with ``scratch``) and resampled per block with its context,
    equal to :func:`resample` on the whole track."""
    if to is None or to == result.sample_rate:
        return list(result.tracks), result.sample_rate
    check_rate(to)
    out = []
    for track in result.tracks:
        spool = scratch.enter_context(spooled_track(track, result.sample_rate, directory))
        signal = Resampled(spool, int(to), exact=True)
        out.append(Track(track.channels, signal.length, partial(_clipped, signal)))
    return out, int(to)


def _clipped(signal: Resampled) -> Iterator[np.ndarray]:
    return (np.clip(b, -1.0, 1.0).astype(np.float32) for b in blocks(signal))


def resample(audio: np.ndarray, rate: int, to: int | None) -> tuple[np.ndarray, int]:
    """(K, W) float audio at ``rate`` -> at ``to`` (polyphase, scipy; None or equal: as is)."""
    if to is None or to == rate:
        return audio, rate
    check_rate(to)
    from scipy.signal import resample_poly

    g = math.gcd(int(to), int(rate))
    out = resample_poly(np.asarray(audio, np.float64), to // g, rate // g, axis=-1)
    return np.clip(out, -1.0, 1.0).astype(np.float32), int(to)


__all__ = ["check_outputs", "default_output", "resample", "save", "track_paths"]
