"""Paths: the user-facing error type, output-path rules and atomic writes.

Every output is written to a hidden temporary file beside the target and renamed over it only
when complete (``os.replace``), so an interrupted or failed write leaves no partial file, and the
input is only ever opened for reading.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class MediaError(ValueError):
    """A one-line, user-facing message naming the file and what is wrong with it."""


@dataclass(frozen=True)
class Container:
    """How ``mux`` writes one output extension."""

    format: str  # FFmpeg muxer name
    audio_codec: str  # encoder of the generated tracks
    audio_rate: int | None = None  # forced encoder sample rate (None = the model's rate)
    bitrate: int | None = None  # bits/s per generated track (None = 96 kb/s per channel)


# Generated audio per container: AAC where players expect it (MP4 family), Opus for the
# Matroska family (Opus only runs at 48 kHz and below; 44.1 kHz is resampled to 48 kHz), and
# 16-bit PCM for AVI, whose players handle PCM everywhere while AAC-in-AVI is poorly supported.
VIDEO_CONTAINERS = {
    ".mp4": Container("mp4", "aac"),
    ".m4v": Container("mp4", "aac"),
    ".mov": Container("mov", "aac"),
    ".mkv": Container("matroska", "libopus"),
    ".webm": Container("webm", "libopus"),
    ".avi": Container("avi", "pcm_s16le"),
}
AUDIO_FORMATS = {".flac": "FLAC", ".wav": "WAV"}  # soundfile format names
# ``--audio-codec`` names -> FFmpeg encoders for the generated tracks of a video output.
AUDIO_CODECS = {"aac": "aac", "opus": "libopus", "flac": "flac", "pcm": "pcm_s16le"}
LOSSLESS = ("flac", "pcm_s16le")  # no bitrate to set


def check_input(path: str | os.PathLike) -> Path:
    """The input must be an existing regular file."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: not a regular file")
    return path


def check_output(
    path: str | os.PathLike,
    *,
    input_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    allowed: tuple[str, ...] = (*VIDEO_CONTAINERS, *AUDIO_FORMATS),
) -> Path:
    """Validate an output path before any work: known extension, not the input, an existing
    directory, and no existing file unless ``overwrite``. The CLI calls this up front so a run
    fails before generating anything."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in allowed:
        raise MediaError(
            f"{path}: unknown output extension {ext or '(none)'!r}; use one of {', '.join(allowed)}"
        )
    if input_path is not None and _same_file(path, Path(input_path)):
        raise MediaError(f"{path}: output path is the input file; choose another output path")
    if not path.parent.is_dir():
        raise MediaError(f"{path}: directory {str(path.parent)!r} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise MediaError(f"{path}: directory {str(path.parent)!r} is not writable")
    if path.is_dir():
        raise MediaError(f"{path}: is a directory")
    if path.exists() and not overwrite:
        raise MediaError(f"{path}: already exists (use --force to overwrite)")
    return path


def check_space(path: str | os.PathLike, needed: int) -> None:
    """MediaError when the file system of ``path``'s directory has less than ``needed`` bytes
    free (the estimate of what will be written there)."""
    path = Path(path)
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise MediaError(
            f"{path}: not enough free space in {str(path.parent)!r} "
            f"({free / 1e6:.1f} MB free, about {needed / 1e6:.1f} MB needed)"
        )


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that go by the extension
    still work); rename it to ``path`` when the block succeeds, delete it when the block raises
    (including KeyboardInterrupt). The one way this project writes a file atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.part{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def scratch_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) for a dry run; always deleted."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.check{path.suffix}")
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
