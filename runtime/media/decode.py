"""Decoding the two frame streams (CLIP and Synchformer) in one pass over a span of the video.

Frame selection follows MMAudio (spec/mmaudio.md §1.2), sample-and-hold: target k of a stream at
``fps`` has the time ``tau_k = start + k / fps`` and receives the **first decoded frame whose
timestamp is >= tau_k** (a frame may fill several targets; a frame between targets fills none).
Times are the frames' own timestamps (``frame.time``), never frame counts, so variable frame
rate input is handled; they are measured from the video stream's start time (0 for almost every
file, and then identical to MMAudio). Timestamps within 1 µs of a target count as reaching it
(``pts * time_base`` in floating point can land one ulp below an exact target).

Differences from MMAudio, all on purpose:
- a non-zero ``start`` seeks to the keyframe before it instead of decoding from the beginning,
  and demuxing stops as soon as both streams are complete (MMAudio decodes the rest of the file);
- frames are resized by FFmpeg's scaler (``VideoFrame.reformat``, bicubic) straight to the
  target size, instead of torchvision's antialiased bicubic on full-size frames: no per-pixel
  float work in Python; the centre crop is a numpy slice;
- the display matrix is honoured (a portrait phone video gives upright frames);
- packets that fail to decode are skipped (like faster-whisper's ``_ignore_invalid_frames``).

At the end of the stream the demo reader has no frame for the targets after the last frame's
timestamp, so a 40 s video at 5 fps (last frame at 39.8 s) covers only 39.84 s at 25 fps. With
``hold_last=True`` (what ``v2a generate`` uses) the last frame is shown for its duration
(``frame.duration``, else one period of the average frame rate), as FFmpeg's fps filter of the
training extraction holds it: the targets before its end receive it, and such a file covers its
whole length. Like MMAudio, a span longer than the video is clamped to the
available length (a warning is logged): when a stream runs out of frames before its last
target, the duration becomes
``min(requested, filled clip targets / clip_fps, filled sync targets / sync_fps)``; both streams
are then cut to ``int(fps * duration)`` frames, the lengths ``v2a_runtime.sequence`` uses.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..sequence import SEGMENT_FRAMES, SEGMENT_STRIDE, min_duration
from .files import MediaError
from .probe import (
    ffmpeg_reason,
    open_input,
    quarter_turns,
    start_time,
    stream_duration,
    video_stream,
)

if TYPE_CHECKING:  # PyAV is imported where it is used (see media/__init__.py)
    import av

log = logging.getLogger(__name__)

TIME_EPS = 1e-6  # seconds; see the module docstring
INTERPOLATION = "BICUBIC"  # like the reference's torchvision Resize(BICUBIC)


@dataclass(frozen=True)
class Frames:
    """Both frame streams of one span, uint8 RGB, channels last."""

    clip: np.ndarray  # uint8 (F, Hc, Hc, 3), squash resize, F = int(clip_fps * duration)
    sync: np.ndarray  # uint8 (Fs, Hs, Hs, 3), short side -> Hs, centre crop, Fs = int(sync_fps * d)
    start: float  # seconds from the start of the video
    duration: float  # seconds actually covered (clamped to the video)


def read_frames(
    path: str | os.PathLike,
    *,
    start: float = 0.0,
    duration: float | None = None,
    clip_fps: float = 8.0,
    clip_size: int = 384,
    sync_fps: float = 25.0,
    sync_size: int = 224,
    hold_last: bool = False,
) -> Frames:
    """Decode ``duration`` seconds (None = to the end) from ``start`` into both streams;
    ``hold_last``: the stream's last frame fills the targets until its end (see above)."""
    _check_args(start, duration, clip_fps, clip_size, sync_fps, sync_size)
    path = Path(path)
    with open_input(path) as container:
        stream = video_stream(container, path)
        stream.thread_type = "AUTO"
        t0 = start_time(stream)
        known = stream_duration(container, stream)
        if duration is None:
            expected = None if known is None else max(known - start, 0.0)
        else:
            expected = duration
        targets = [
            _Target(clip_fps, start, duration, expected, squash(clip_size)),
            _Target(sync_fps, start, duration, expected, short_side_crop(sync_size)),
        ]
        last = None
        for frame, t in _frames_from(container, stream, t0, start, path):
            for target in targets:
                target.offer(frame, t)
            last = frame, t
            if all(target.complete for target in targets):
                break  # the rest of the file is never demuxed
        else:  # the stream ended: its last frame is shown for its duration
            if hold_last and last is not None:
                end = last[1] + _frame_duration(last[0], stream)
                for target in targets:
                    target.offer(last[0], end - 2 * TIME_EPS)  # targets before its end
    clip, sync = targets
    if clip.filled == 0 or sync.filled == 0:
        if start > 0 and known is not None and start >= known:
            raise MediaError(
                f"{path}: start {start:g} s is past the end of the video ({known:.2f} s)"
            )
        after = f" from {start:g} s" if start > 0 else ""
        raise MediaError(f"{path}: no decodable video frames{after}")
    available = min(t.available for t in targets)  # inf when both streams are complete
    span = available if duration is None else min(duration, available)
    if duration is not None and span < duration:
        log.warning(
            "%s: only %.3f s of video from %.3f s; using %.3f s instead of %.3f s",
            path,
            available,
            start,
            span,
            duration,
        )
    if span < min_duration(sync_fps) - 1e-9:
        raise MediaError(
            f"{path}: only {span:.2f} s of video from {start:g} s, shorter than one sync "
            f"segment ({min_duration(sync_fps):.2f} s = {SEGMENT_FRAMES} frames at "
            f"{sync_fps:g} fps)"
        )
    return Frames(
        clip=clip.frames(int(clip_fps * span)),
        sync=sync.frames(int(sync_fps * span)),
        start=float(start),
        duration=float(span),
    )


def sync_segments(sync: np.ndarray) -> np.ndarray:
    """(Fs, H, W, 3) -> (S, 16, H, W, 3) overlapping windows, stride 8; a view, no copy.

    S = (Fs - 16) // 8 + 1, the same count as ``sequence_lengths(duration).sync_segments`` for
    Fs = int(sync_fps * duration).
    """
    if sync.ndim != 4 or sync.shape[0] < SEGMENT_FRAMES:
        raise ValueError(
            f"sync frames must be (Fs >= {SEGMENT_FRAMES}, H, W, 3), got shape {sync.shape}"
        )
    windows = np.lib.stride_tricks.sliding_window_view(sync, SEGMENT_FRAMES, axis=0)
    windows = windows[::SEGMENT_STRIDE]  # (S, H, W, 3, 16)
    return np.moveaxis(windows, -1, 1)  # (S, 16, H, W, 3)


class _Target:
    """One output stream: its target times, its frames and how a source frame is converted."""

    def __init__(self, fps, start, duration, expected, convert):
        self.fps = fps
        self.start = start
        self.limit = None if duration is None else int(fps * duration)
        self.convert = convert
        capacity = self.limit if self.limit is not None else int(fps * (expected or 0.0)) + 2
        self._buffer: np.ndarray | None = None
        self._capacity = max(capacity, 1)
        self.filled = 0

    @property
    def complete(self) -> bool:
        return self.limit is not None and self.filled >= self.limit

    @property
    def available(self) -> float:
        """Seconds this stream covers, when the video ended before the span did."""
        return math.inf if self.complete else self.filled / self.fps

    def offer(self, frame: av.VideoFrame, t: float) -> None:
        """Fill every pending target time reached by this frame's time ``t``."""
        image = None
        while not self.complete and t >= self.start + self.filled / self.fps - TIME_EPS:
            if image is None:
                image = self.convert(frame)  # (H, W, 3), once per source frame
            self._store(image)

    def _store(self, image: np.ndarray) -> None:
        if self._buffer is None:
            self._buffer = np.empty((self._capacity, *image.shape), np.uint8)  # (N, H, W, 3)
        if self.filled == len(self._buffer):  # duration=None and the headers underestimated
            grown = np.empty((len(self._buffer) * 3 // 2 + 8, *image.shape), np.uint8)
            grown[: self.filled] = self._buffer
            self._buffer = grown
        self._buffer[self.filled] = image
        self.filled += 1

    def frames(self, count: int) -> np.ndarray:
        assert count <= self.filled, (count, self.filled)
        return self._buffer[:count]


def _frame_duration(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> float:
    """Seconds ``frame`` is shown: its own duration, else one period of the average rate,
    else 0."""
    base = frame.time_base or stream.time_base
    if frame.duration and base:
        return float(frame.duration * base)
    rate = stream.average_rate or stream.guessed_rate
    return float(1 / rate) if rate else 0.0


def _frames_from(container, stream, t0, start, path) -> Iterator[tuple[av.VideoFrame, float]]:
    """Decoded frames at or after ``start`` with their times from the stream start.

    Seeks to the keyframe at or before ``start``; if the demuxer lands after it (an inexact
    index), decodes from the beginning instead so no target is skipped.
    """
    import av
    if start > 0:
        try:
            container.seek(int(math.floor((t0 + start) / stream.time_base)), stream=stream)
        except av.error.FFmpegError as e:
            log.info("%s: seek to %.3f s failed (%s); decoding from the start", path, start, e)
            container.seek(0)
    frames = _timed(_decoded(_packets(container, stream, path)), t0, stream)
    first = True
    for frame, t in frames:
        if first and start > 0 and t > start + TIME_EPS:
            log.info(
                "%s: seek landed at %.3f s, after %.3f s; decoding from the start", path, t, start
            )
            frames.close()
            container.seek(0)
            frames = _timed(_decoded(_packets(container, stream, path)), t0, stream)
            yield from ((f, t) for f, t in frames if t >= start - TIME_EPS)
            return
        first = False
        if t >= start - TIME_EPS:  # frames before start only prime the decoder
            yield frame, t


def _packets(container, stream, path) -> Iterator[av.Packet]:
    """Demuxed packets; a demuxer error ends the stream (what was decoded so far is kept)."""
    import av
    try:
        yield from container.demux(stream)
    except av.error.FFmpegError as e:
        log.warning("%s: demuxing stopped early: %s", path, ffmpeg_reason(e))


def _decoded(packets: Iterator[av.Packet]) -> Iterator[av.VideoFrame]:
    """Decode packets, skipping those the decoder rejects; the final empty packets flush it."""
    import av
    skipped = 0
    try:
        for packet in packets:
            try:
                yield from packet.decode()
            except av.error.InvalidDataError:
                skipped += 1
    finally:  # also when the consumer stops early
        if skipped:
            log.warning("skipped %d undecodable video packet(s)", skipped)


def _timed(frames: Iterator[av.VideoFrame], t0: float, stream) -> Iterator[tuple]:
    """Attach each frame's time in seconds from the stream start. A frame without a timestamp
    (rare; raw streams) is placed one average frame period after the previous one."""
    rate = stream.average_rate or stream.guessed_rate
    period = 1.0 / float(rate) if rate else 0.04
    previous = None
    for frame in frames:
        t = frame.time
        t = (previous + period if previous is not None else 0.0) if t is None else t - t0
        previous = t
        yield frame, t


def squash(size: int):
    """Squash resize to size x size (aspect ratio ignored, as the reference)."""

    def convert(frame: av.VideoFrame) -> np.ndarray:
        turns = quarter_turns(frame.rotation)
        image = frame.reformat(size, size, "rgb24", interpolation=INTERPOLATION).to_ndarray()
        return np.rot90(image, turns)  # (size, size, 3), upright

    return convert


def short_side_crop(size: int):
    """Short side to ``size`` (long side ``int(size * long / short)`` as torchvision), then the
    centre ``size`` x ``size`` crop (offsets ``int(round((n - size) / 2))``)."""

    def convert(frame: av.VideoFrame) -> np.ndarray:
        turns = quarter_turns(frame.rotation)
        width, height = frame.width, frame.height
        if turns % 2:
            width, height = height, width  # display size
        if width <= height:
            new_w, new_h = size, int(size * height / width)
        else:
            new_w, new_h = int(size * width / height), size
        coded_w, coded_h = (new_w, new_h) if turns % 2 == 0 else (new_h, new_w)
        image = frame.reformat(coded_w, coded_h, "rgb24", interpolation=INTERPOLATION)
        image = np.rot90(image.to_ndarray(), turns)  # (new_h, new_w, 3), upright
        top = int(round((new_h - size) / 2.0))
        left = int(round((new_w - size) / 2.0))
        return image[top : top + size, left : left + size]  # (size, size, 3)

    return convert


def _check_args(start, duration, clip_fps, clip_size, sync_fps, sync_size) -> None:
    if not (isinstance(start, (int, float)) and math.isfinite(start) and start >= 0):
        raise ValueError(f"start must be a finite number of seconds >= 0, got {start!r}")
    if duration is not None and not (
        isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0
    ):
        raise ValueError(f"duration must be None or a number of seconds > 0, got {duration!r}")
    for name, value in (("clip_fps", clip_fps), ("sync_fps", sync_fps)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be > 0, got {value!r}")
    for name, value in (("clip_size", clip_size), ("sync_size", sync_size)):
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
