"""Opening inputs with PyAV and describing them (``probe``).

PyAV bundles the FFmpeg libraries, so any container and codec FFmpeg reads is accepted, with no
system dependency. Every FFmpeg failure on open becomes a :class:`MediaError` naming the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .files import MediaError, check_input

if TYPE_CHECKING:  # PyAV is imported where it is used (see media/__init__.py)
    import av

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` found. Sizes are the display size (after rotation)."""

    path: str
    container: str  # FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    duration: float  # seconds of the video stream
    width: int
    height: int
    rotation: int  # degrees counter-clockwise applied for display: 0, 90, 180 or 270
    fps: float  # average frame rate (0.0 when the container does not say)
    video_codec: str
    has_audio: bool
    audio_codec: str | None  # first audio stream's codec


@contextlib.contextmanager
def open_input(path: str | os.PathLike) -> Iterator[av.container.InputContainer]:
    """``av.open`` for reading, with FFmpeg's open errors turned into MediaError."""
    import av
    path = check_input(path)
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: not a readable video ({ffmpeg_reason(e)})") from e
    with container:
        yield container


def video_stream(container, path) -> av.video.stream.VideoStream:
    """The first video stream (attached cover pictures are not video)."""
    import av
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise MediaError(f"{path}: no video stream")


def quarter_turns(rotation: float) -> int:
    """Display rotation (counter-clockwise degrees, FFmpeg's ``av_display_rotation_get``) as
    a number of counter-clockwise quarter turns, 0..3 (``np.rot90``'s ``k``)."""
    turns = round(rotation / 90.0)
    if abs(rotation - 90.0 * turns) > 1.0:
        log.warning(
            "display rotation %.1f° is not a multiple of 90°; using %d°", rotation, 90 * turns
        )
    return turns % 4


def stream_duration(container, stream) -> float | None:
    """Length of the video stream in seconds from the headers, or None if they do not say."""
    import av
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:  # Matroska writes "HH:MM:SS.nnnnnnnnn" per stream
        with contextlib.suppress(ValueError):
            h, m, s = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(s)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def start_time(stream) -> float:
    """Time of the stream's first frame in seconds (targets are counted from here)."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Describe a video. Decodes only up to its first frame (for the rotation)."""
    path = Path(path)
    with open_input(path) as container:
        stream = video_stream(container, path)
        first = _first_frame(container, stream, path)
        turns = quarter_turns(first.rotation)
        width, height = (
            (first.width, first.height) if turns % 2 == 0 else (first.height, first.width)
        )
        duration = stream_duration(container, stream)
        if duration is None:
            duration = _scan_duration(container, stream)
        rate = stream.average_rate or stream.guessed_rate
        audio = container.streams.audio
        return VideoInfo(
            path=str(path),
            container=container.format.name,
            duration=duration,
            width=width,
            height=height,
            rotation=90 * turns,
            fps=float(rate) if rate else 0.0,
            video_codec=stream.codec_context.name,
            has_audio=bool(audio),
            audio_codec=audio[0].codec_context.name if audio else None,
        )


def _first_frame(container, stream, path):
    import av
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                continue
            if frames:
                return frames[0]
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: corrupt video stream ({ffmpeg_reason(e)})") from e
    raise MediaError(f"{path}: no decodable video frames")


def _scan_duration(container, stream) -> float:
    """Headers without a duration (raw elementary streams): read the packet timestamps."""
    container.seek(0)
    end = 0.0
    for packet in container.demux(stream):
        if packet.pts is not None and packet.time_base is not None:
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    return max(end - start_time(stream), 0.0)


def ffmpeg_reason(error: Exception) -> str:
    """FFmpeg's message without the path PyAV appends to it."""
    return getattr(error, "strerror", None) or str(error)
