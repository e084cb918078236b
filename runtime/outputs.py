"""Where a generated soundtrack goes: output names, checks before any work, and ``save``.

    default_output(video, *, out_dir=None, ext=None, tracks=1, keep_original_audio=False)
        -> Path: VIDEO's name + ``.v2a`` + the input's own container when a dry run shows it
        can carry the new audio, else ``.mkv`` (Matroska holds nearly every video codec).
    check_outputs(video, output, *, tracks, sample_rate, duration, keep_original_audio,
                  overwrite) -> list[Path]
        the path rules, a one-second dry run of the muxer (video outputs) and free space for
        the estimated size; one output, or OUT-1.flac ... OUT-K.flac for K tracks into audio
        files. MediaError (one line naming the output and the cause) before any decoding.
    save(result, output, video=None, *, keep_original_audio=False, overwrite=False,
         title=None) -> list[Path]
        what ``v2a generate`` writes: muxed into a copy of ``video`` (the picture's packets
        copied), or one 16-bit FLAC/WAV per track; all files or none (atomic).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from .media import AUDIO_FORMATS, VIDEO_CONTAINERS, MediaError, check_output, mux, preflight
from .media.audio import BITRATE_PER_CHANNEL, write_audio_file
from .media.files import atomic_output, check_space
from .pipeline import GenerateResult

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
) -> list[Path]:
    """Every check that can be made before decoding (see the module docstring)."""
    video, output = Path(video), Path(output)
    is_video = output.suffix.lower() in VIDEO_CONTAINERS
    check_output(output, input_path=video, overwrite=overwrite or tracks > 1 and not is_video)
    paths = [check_output(p, input_path=video, overwrite=overwrite)
             for p in track_paths(output, tracks)]  # fmt: skip
    if is_video:
        preflight(video, output, tracks=tracks, sample_rate=sample_rate,
                  keep_original_audio=keep_original_audio, overwrite=overwrite)  # fmt: skip
        audio = tracks * BITRATE_PER_CHANNEL / 8 * duration
        check_space(output, int(MARGIN * (os.path.getsize(video) + audio)))
    else:
        check_space(output, int(MARGIN * tracks * 2 * sample_rate * duration))  # 16-bit PCM
    return paths


def save(
    result: GenerateResult,
    output: str | os.PathLike,
    video: str | os.PathLike | None = None,
    *,
    keep_original_audio: bool = False,
    overwrite: bool = False,
    title: str = "v2a generated",
) -> list[Path]:
    """Write ``result`` as ``v2a generate`` does; returns the paths written."""
    output = Path(output)
    paths = track_paths(output, len(result.audio))
    if output.suffix.lower() in VIDEO_CONTAINERS:
        if video is None:
            raise ValueError(f"{output}: a video output needs the input video (video=...)")
        mux(video, output, result.audio, result.sample_rate, start=result.start,
            keep_original_audio=keep_original_audio, title=title, overwrite=overwrite)  # fmt: skip
        return paths
    checked = [check_output(p, input_path=video, overwrite=overwrite, allowed=tuple(AUDIO_FORMATS))
               for p in paths]  # fmt: skip
    with ExitStack() as stack:  # every file renamed into place only when all are written
        temps = [stack.enter_context(atomic_output(p)) for p in checked]
        for path, temp, audio in zip(checked, temps, result.audio, strict=True):
            write_audio_file(temp, audio, result.sample_rate, title=title, name=path)
    return checked


__all__ = ["check_outputs", "default_output", "save", "track_paths"]
