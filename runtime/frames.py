"""Where a generate call gets its frames: a video file, decoded frames, or raw pixels.

Three inputs, one interface (a span ``duration`` and ``window(start, duration) -> Frames``,
times relative to the span: :class:`FileSource`, :class:`ArraySource`):

- a **file path**: each window is decoded on its own with :func:`v2a_runtime.media.read_frames`
  (seek to the window, stop at its end), so memory is bounded by one window even for a
  10-minute film;
- :class:`~v2a_runtime.media.Frames` already at the bundle's frame rates and sizes (what
  ``read_frames`` returns): windows are slices;
- :class:`VideoArray`: uint8 RGB pixels at any size and frame rate, e.g. straight from a video
  generator, converted once with the same frame selection (sample-and-hold) and the same
  scaler as decoding, then sliced.

Window starts are whole seconds (:mod:`v2a_runtime.windows`), so a slice starts exactly on a
frame of both streams and equals the window decoded on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import VideoSpec
from .media import Frames, MediaError, probe, read_frames
from .media.decode import short_side_crop, squash
from .sequence import SEGMENT_FRAMES, min_duration

_EPS = 1e-6  # seconds: a frame within 1 µs of a target time reaches it (as media.decode)


@dataclass(frozen=True)
class VideoArray:
    """Raw video pixels handed over without a file."""

    pixels: np.ndarray  # uint8 (N, H, W, 3) RGB, channels last
    fps: float  # frames per second of ``pixels``


@dataclass(frozen=True)
class FileSource:
    path: Path
    video: VideoSpec
    start: float  # of the span, in the file
    duration: float

    def window(self, start: float, duration: float) -> Frames:
        return read_frames(
            self.path,
            start=self.start + start,
            duration=duration,
            clip_fps=self.video.clip_fps,
            clip_size=self.video.clip_size,
            sync_fps=self.video.sync_fps,
            sync_size=self.video.sync_size,
            hold_last=True,  # a low-frame-rate file covers its whole length
        )


@dataclass(frozen=True)
class ArraySource:
    frames: Frames  # the whole span, at the bundle's rates and sizes
    video: VideoSpec

    @property
    def duration(self) -> float:
        return self.frames.duration

    def window(self, start: float, duration: float) -> Frames:
        return _slice(self.frames, self.video, start, duration)


def frame_source(
    video: str | Path | Frames | VideoArray,
    spec: VideoSpec,
    *,
    start: float = 0.0,
    duration: float | None = None,
) -> FileSource | ArraySource:
    """The :class:`FrameSource` for ``video``; ValueError (MediaError for files) if unusable."""
    if isinstance(video, (str, Path)):
        path = Path(video)
        info = probe(path)
        span = _span(str(path), info.duration, start, duration, spec)
        return FileSource(path, spec, float(start), span)
    if isinstance(video, VideoArray):
        video = frames_from_array(video, spec)
    if isinstance(video, Frames):
        _check_frames(video, spec)
        span = _span("frames", video.duration, start, duration, spec)
        return ArraySource(_slice(video, spec, start, span), spec)
    raise TypeError(f"video must be a path, Frames or VideoArray, got {type(video).__name__}")


def frames_from_array(video: VideoArray, spec: VideoSpec) -> Frames:
    """Both streams from raw pixels: target k of a stream at ``fps`` gets the first frame whose
    time ``i / video.fps`` is >= k / fps (sample-and-hold), resized by FFmpeg's scaler."""
    import av
    pixels, fps = video.pixels, video.fps
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(
            f"VideoArray pixels must be uint8 (N, H, W, 3), got {pixels.dtype} {pixels.shape}"
        )
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"VideoArray fps must be > 0, got {fps!r}")
    duration = pixels.shape[0] / fps
    streams = []
    for target_fps, size, convert in (
        (spec.clip_fps, spec.clip_size, squash(spec.clip_size)),
        (spec.sync_fps, spec.sync_size, short_side_crop(spec.sync_size)),
    ):
        n = int(target_fps * duration)
        k = np.arange(n, dtype=np.float64)
        index = np.ceil((k / target_fps - _EPS) * fps).astype(np.int64)  # (n,)
        converted = {}
        for i in np.unique(index):
            converted[i] = convert(av.VideoFrame.from_ndarray(pixels[i], format="rgb24"))
        empty = np.zeros((0, size, size, 3), np.uint8)
        streams.append(np.stack([converted[i] for i in index]) if n else empty)
    return Frames(clip=streams[0], sync=streams[1], start=0.0, duration=float(duration))


def _span(name: str, available: float, start: float, duration: float | None, spec) -> float:
    if not (isinstance(start, (int, float)) and math.isfinite(start) and start >= 0):
        raise ValueError(f"start must be a finite number of seconds >= 0, got {start!r}")
    if duration is not None and not (isinstance(duration, (int, float)) and duration > 0):
        raise ValueError(f"duration must be None or a number of seconds > 0, got {duration!r}")
    span = available - start if duration is None else min(duration, available - start)
    shortest = min_duration(spec.sync_fps)
    if span < shortest - 1e-9:
        raise MediaError(
            f"{name}: only {max(span, 0.0):.2f} s of video from {start:g} s, shorter than one "
            f"sync segment ({shortest:.2f} s = {SEGMENT_FRAMES} frames at {spec.sync_fps:g} fps)"
        )
    return float(span)


def _check_frames(frames: Frames, spec: VideoSpec) -> None:
    for name, array, size in (
        ("clip", frames.clip, spec.clip_size),
        ("sync", frames.sync, spec.sync_size),
    ):
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (size, size, 3):
            raise ValueError(
                f"Frames.{name} must be uint8 (N, {size}, {size}, 3) for this bundle, "
                f"got {array.dtype} {array.shape}"
            )


def _slice(frames: Frames, spec: VideoSpec, start: float, duration: float) -> Frames:
    """The frames of [start, start + duration) of ``frames`` (start on the streams' grid)."""
    c0, s0 = round(start * spec.clip_fps), round(start * spec.sync_fps)
    clip = frames.clip[c0 : c0 + int(duration * spec.clip_fps)]  # as media.read_frames counts
    sync = frames.sync[s0 : s0 + int(duration * spec.sync_fps)]
    return Frames(clip=clip, sync=sync, start=frames.start + start, duration=float(duration))
