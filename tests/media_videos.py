"""Test videos made with PyAV, whose frames say which source frame they are.

Frame ``i`` shows its index in binary as a 4 x 4 grid of black/white cells (bit 0 top-left,
row-major) over the central square of the picture (side = the short side); the rest is grey.
The central square survives both the squash resize and the short-side centre crop, and the
grid is not symmetric, so a wrong rotation reads as a different index.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

GRID = 4  # cells per side; 16 bits of frame index
AUDIO_RATES = {"aac": 44100, "libopus": 48000, "pcm_s16le": 44100, "libmp3lame": 44100}


def index_image(i: int, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 display image of frame ``i``."""
    image = np.full((height, width, 3), 128, np.uint8)
    side = min(width, height)
    y0, x0 = (height - side) // 2, (width - side) // 2
    edges = np.linspace(0, side, GRID + 1).round().astype(int)
    for bit in range(GRID * GRID):
        r, c = divmod(bit, GRID)
        value = 255 if (i >> bit) & 1 else 0
        image[y0 + edges[r] : y0 + edges[r + 1], x0 + edges[c] : x0 + edges[c + 1]] = value
    return image


def read_index(image: np.ndarray, box: tuple[float, float, float, float]) -> int:
    """Index shown in ``image`` (H, W, 3) whose grid occupies ``box`` = (top, left, bottom,
    right) in pixels; each cell is read from its central half."""
    top, left, bottom, right = box
    ch, cw = (bottom - top) / GRID, (right - left) / GRID
    index = 0
    for bit in range(GRID * GRID):
        r, c = divmod(bit, GRID)
        ya, yb = int(top + (r + 0.25) * ch), int(np.ceil(top + (r + 0.75) * ch))
        xa, xb = int(left + (c + 0.25) * cw), int(np.ceil(left + (c + 0.75) * cw))
        if image[ya:yb, xa:xb].mean() > 128:
            index |= 1 << bit
    return index


def squash_box(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """Where the grid lands after a squash resize of a display (width, height) to size^2."""
    side = min(width, height)
    sx, sy = size / width, size / height
    return (
        (height - side) / 2 * sy,
        (width - side) / 2 * sx,
        (height + side) / 2 * sy,
        (width + side) / 2 * sx,
    )


def write_video(
    path: Path,
    *,
    codec: str = "libx264",
    fps: int = 25,
    frames: int = 50,
    size: tuple[int, int] = (160, 120),
    pix_fmt: str = "yuv420p",
    times_ms: list[int] | None = None,
    rotation: int | None = None,
    audio: str | None = None,
    gop: int | None = None,
) -> Path:
    """Write a test video; ``size`` is the display (width, height).

    ``times_ms``: variable frame rate, one presentation time per frame in milliseconds.
    ``rotation``: display-matrix rotation (counter-clockwise degrees, FFmpeg's convention); the
    pictures are stored rotated the other way, so a player that honours it shows them upright.
    ``audio``: an encoder name for a 440 Hz tone track as long as the video.
    """
    width, height = size
    turns = (rotation or 0) // 90
    coded_w, coded_h = (width, height) if turns % 2 == 0 else (height, width)
    if times_ms is not None:
        frames = len(times_ms)
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = coded_w, coded_h, pix_fmt
        if codec == "libx264":
            video.options = {"crf": "16", "preset": "veryfast"}
        if codec == "libvpx-vp9":
            video.options = {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        if gop is not None:
            video.codec_context.gop_size = gop
        if times_ms is not None:
            video.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            video.set_display_rotation(rotation)
        tone = None
        if audio is not None:
            rate = AUDIO_RATES[audio]
            tone = out.add_stream(audio, rate=rate)
            tone.layout = "mono"
        for i in range(frames):
            picture = np.ascontiguousarray(np.rot90(index_image(i, width, height), -turns))
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if tone is not None:
            seconds = (times_ms[-1] / 1000 + 0.04) if times_ms else frames / fps
            n = int(rate * seconds)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
            for off in range(0, n, 1024):
                chunk = np.ascontiguousarray(wave[None, off : off + 1024])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = rate, off
                frame.time_base = Fraction(1, rate)
                out.mux(tone.encode(frame))
            out.mux(tone.encode(None))
    return path


def frame_times(path: Path) -> list[Fraction]:
    """Exact presentation times (s) of the video stream's packets, sorted, from the file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start, time_base = stream.start_time or 0, stream.time_base  # not after closing
        pts = [p.pts for p in container.demux(stream) if p.size and p.pts is not None]
    return sorted(Fraction(t - start) * time_base for t in pts)


def expected_indices(times: list[Fraction], start: float, fps: float, count: int,
                     end: Fraction | None = None) -> list[int]:
    """Sample-and-hold by hand: target k gets the first frame with time >= start + k / fps;
    with ``end`` (where the last frame stops being shown), targets after the last frame's
    time and before ``end`` get the last frame."""
    result, i = [], 0
    for k in range(count):
        target = Fraction(start) + Fraction(k) / Fraction(fps)
        while i < len(times) and times[i] < target - Fraction(1, 10**6):
            i += 1
        assert i < len(times) or (end is not None and target < end), (k, target)
        result.append(min(i, len(times) - 1))
    return result


def video_packets(path: Path) -> list[tuple[bytes, Fraction | None]]:
    """(payload, presentation time in s) of every packet of the first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [
            (bytes(p), None if p.pts is None else p.pts * stream.time_base)
            for p in container.demux(stream)
            if p.size
        ]


def audio_streams(path: Path) -> list[dict]:
    """Per audio stream: codec, metadata, disposition, rate and decoded float samples (C, W).
    Each stream is decoded from a fresh open (a seek could skip packets before time 0)."""
    with av.open(str(path)) as container:
        result = [
            {
                "index": s.index,
                "codec": s.codec_context.name,
                "metadata": dict(s.metadata),
                "disposition": s.disposition,
                "rate": s.codec_context.sample_rate,
            }
            for s in container.streams.audio
        ]
    for info in result:
        with av.open(str(path)) as container:
            to_float = av.AudioResampler(format="fltp")
            chunks = [
                g.to_ndarray()
                for f in container.decode(container.streams[info["index"]])
                for g in to_float.resample(f)
            ]
        info["samples"] = np.concatenate(chunks, axis=1)  # (C, W) float32
    return result


def video_duration(path: Path) -> float:
    """Length of the video stream from its packets: last end minus first presentation time."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        spans = [
            (p.pts, p.pts + (p.duration or 0))
            for p in container.demux(stream)
            if p.size and p.pts is not None
        ]
    return float((max(e for _, e in spans) - min(s for s, _ in spans)) * stream.time_base)
