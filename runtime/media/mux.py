"""Muxing generated audio into a copy of the input video, without re-encoding the picture.

The output container follows the output extension (see ``files.VIDEO_CONTAINERS``): the video
packets are copied unchanged (same bytes, same timestamps, display matrix kept; into another
container than the input's, FFmpeg may repackage the bitstream, e.g. H.264 start codes from
MPEG-TS into MP4's length prefixes, but never re-encodes); each generated
track is encoded (AAC for .mp4/.m4v/.mov, Opus for .mkv/.webm, 16-bit PCM for .avi), cut or
padded to the video's duration and started at the video's first frame. Track order: the
generated tracks first (the first one is the default track), then, with
``keep_original_audio``, the input's audio streams, copied unchanged. Generated tracks carry
``title`` (and ``handler_name``, which MP4/MOV players show) in their metadata; the container's
``comment`` says which tracks were generated. Subtitle, data and attachment streams are not
copied. H.264/HEVC from MP4-style files (length-prefixed NAL units) goes through FFmpeg's
``*_mp4toannexb`` bitstream filter into AVI, which needs start codes (still no re-encoding).

``preflight`` runs the same muxer for the first second with silent tracks into a scratch file
beside the output (deleted after): every problem the output can have -- a codec the container
cannot hold, a bitstream it refuses, a directory that cannot be written -- shows before any
generation work, as one MediaError naming the output and the cause.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..signals import Track
from .audio import BITRATE_PER_CHANNEL, as_track, check_rate, encode_track, fitted_chunks
from .files import (
    AUDIO_CODECS,
    LOSSLESS,
    VIDEO_CONTAINERS,
    Container,
    MediaError,
    atomic_output,
    check_input,
    check_output,
    scratch_output,
)
from .probe import ffmpeg_reason, open_input, start_time, stream_duration, video_stream

log = logging.getLogger(__name__)

# Keys the muxer writes itself; copying them from the input would be stale or wrong.
MUXER_OWNED = {"major_brand", "minor_version", "compatible_brands", "encoder", "duration"}
# Containers that need Annex B start codes, and the filter per codec of MP4-style input.
ANNEX_B = {"avi"}
TO_ANNEX_B = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}
PREFLIGHT_SECONDS = 1.0


def mux(
    video_path: str | os.PathLike,
    out_path: str | os.PathLike,
    tracks: np.ndarray | list[np.ndarray] | list[Track],
    sample_rate: int,
    *,
    start: float = 0.0,
    keep_original_audio: bool = False,
    title: str = "v2a generated",
    overwrite: bool = False,
    audio_codec: str | None = None,
    bitrate: int | None = None,
) -> None:
    """Write ``out_path``: the input's video packets plus one audio stream per track.

    ``tracks``: a (K, W) array (K mono tracks, e.g. ``GenerateResult.audio``) or a list of K
    arrays (W,) or (C, W), float at ``sample_rate``, or a list of K
    :class:`~v2a_runtime.signals.Track` (``StreamResult.tracks``: encoded block by block as
    the video packets are copied, so nothing is held for the whole file; arrays go the same
    way). The audio starts ``start`` seconds after the video's first frame (silence before:
    ``GenerateResult.start`` for a span that does not begin at 0). Atomic: nothing is left at
    ``out_path`` on failure; an existing file is replaced only with ``overwrite=True``.
    ``audio_codec`` (a key of ``AUDIO_CODECS``: aac, opus, flac, pcm; default: the
    container's) and ``bitrate`` (bits/s per track; default 96 kb/s per channel; lossy codecs
    only) choose how the tracks are encoded.
    """
    video_path = check_input(video_path)
    out_path = check_output(
        out_path, input_path=video_path, overwrite=overwrite, allowed=tuple(VIDEO_CONTAINERS)
    )
    if isinstance(tracks, np.ndarray) and tracks.ndim != 2:
        raise ValueError(f"a tracks array must be (K, W), got shape {tracks.shape}")
    if len(tracks) == 0:
        raise ValueError("tracks must be a (K, W) array or a non-empty list of (W,) / (C, W)")
    if not (isinstance(start, (int, float)) and math.isfinite(start) and start >= 0):
        raise ValueError(f"start must be a finite number of seconds >= 0, got {start!r}")
    check_rate(sample_rate)
    lead = round(start * sample_rate)  # samples of silence before the generated audio
    job = _Job(
        spec=_spec(out_path, audio_codec, bitrate),
        tracks=tuple(as_track(t, f"track {k}") for k, t in enumerate(tracks)),
        lead=lead,
        sample_rate=int(sample_rate),
        title=title,
        keep_original_audio=keep_original_audio,
        out_path=out_path,
    )
    with atomic_output(out_path) as tmp:
        _run(video_path, tmp, job)


def preflight(
    video_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    tracks: int = 1,
    sample_rate: int = 16000,
    keep_original_audio: bool = False,
    overwrite: bool = False,
    audio_codec: str | None = None,
    bitrate: int | None = None,
) -> Path:
    """Check that ``mux`` can write ``out_path`` from ``video_path`` (path rules, then a one
    second dry run into a scratch file beside it); returns the checked path. MediaError, naming
    the output and the cause, when it cannot."""
    video_path = check_input(video_path)
    out_path = check_output(
        out_path, input_path=video_path, overwrite=overwrite, allowed=tuple(VIDEO_CONTAINERS)
    )
    check_rate(sample_rate)
    silence = np.zeros((1, round(PREFLIGHT_SECONDS * sample_rate)), np.float32)
    spec = _spec(out_path, audio_codec, bitrate)
    job = _Job(spec, (Track.from_array(silence),) * tracks, 0, int(sample_rate), "preflight",
               keep_original_audio, out_path, PREFLIGHT_SECONDS)  # fmt: skip
    with scratch_output(out_path) as tmp:
        _run(video_path, tmp, job)
    return out_path


def _spec(out_path: Path, audio_codec: str | None, bitrate: int | None) -> Container:
    """The container's way of writing, with the codec and bitrate asked for."""
    spec = VIDEO_CONTAINERS[out_path.suffix.lower()]
    if audio_codec is not None:
        if audio_codec not in AUDIO_CODECS:
            raise ValueError(f"audio_codec must be one of {', '.join(AUDIO_CODECS)}, got "
                             f"{audio_codec!r}")  # fmt: skip
        spec = replace(spec, audio_codec=AUDIO_CODECS[audio_codec])
    if bitrate is not None:
        if isinstance(bitrate, bool) or not isinstance(bitrate, int) or not (
            6_000 <= bitrate <= 1_536_000
        ):
            raise ValueError(f"bitrate must be an int in [6000, 1536000] bits/s, got {bitrate!r}")
        if spec.audio_codec in LOSSLESS:
            raise ValueError(f"{out_path}: a bitrate applies to aac or opus, not to lossless "
                             f"{spec.audio_codec}")  # fmt: skip
        spec = replace(spec, bitrate=bitrate)
    return spec


def _run(video_path: Path, tmp: Path, job: _Job) -> None:
    import av

    with open_input(video_path) as source:
        video = video_stream(source, video_path)
        try:
            _write(source, video, tmp, job)
        except av.error.FFmpegError as e:
            reason = ffmpeg_reason(e)
            if isinstance(e, (PermissionError, av.error.PermissionError)):
                reason = f"directory {str(job.out_path.parent)!r} is not writable: {reason}"
                raise MediaError(f"{job.out_path}: cannot write ({reason})") from e
            audio = {"libopus": "opus"}.get(job.spec.audio_codec, job.spec.audio_codec)
            raise MediaError(
                f"{job.out_path}: the {job.spec.format} muxer refused {video.codec_context.name}"
                f" video with {audio} audio (FFmpeg: {reason}); choose another output "
                "extension or --audio-codec"
            ) from e


@dataclass(frozen=True)
class _Job:
    spec: Container
    tracks: tuple[Track, ...]  # (C, n) float blocks each
    lead: int  # samples of silence before each track
    sample_rate: int
    title: str
    keep_original_audio: bool
    out_path: Path  # for messages; the data goes to a temporary file
    limit: float | None = None  # preflight: seconds of the video to write


def _write(source, video, tmp: Path, job: _Job) -> None:
    import av
    originals = list(source.streams.audio) if job.keep_original_audio else []
    length = stream_duration(source, video)
    if length is None:
        length = _packet_span(source, video)
        source.seek(0)
    if job.limit is not None:
        length = min(length, job.limit)
    options = {"movflags": "+faststart"} if job.spec.format in ("mp4", "mov") else {}
    with av.open(str(tmp), mode="w", format=job.spec.format, options=options) as out:
        _check_codecs(out, [video, *originals], job)
        copies = {video.index: _add_copy(out, video)}  # stream order: video, generated,
        generated = _add_tracks(out, job)  # then the original audio
        copies.update({s.index: _add_copy(out, s) for s in originals})
        filters = _annex_b_filters(video, copies[video.index], job)
        out.metadata.update(
            {k: v for k, v in source.metadata.items() if k.lower() not in MUXER_OWNED}
        )
        kept = f"; original audio kept as track {len(generated) + 1}" if originals else ""
        out.metadata["comment"] = f"audio tracks 1-{len(generated)}: {job.title}{kept}"
        samples = round(length * job.sample_rate)
        first = round(start_time(video) * job.sample_rate)  # audio starts with the picture
        encoded = []  # per generated track: its packets in time order, encoded when pulled
        for stream, track in zip(generated, job.tracks, strict=True):
            if job.lead + track.length < samples - 0.1 * job.sample_rate:
                log.warning(
                    "%s: a track is %.2f s long, the video %.2f s; padding with silence",
                    job.out_path,
                    (job.lead + track.length) / job.sample_rate,
                    length,
                )
            chunks = fitted_chunks(track, job.lead, samples)
            encoded.append(encode_track(stream, chunks, job.sample_rate, first))
        end = None if job.limit is None else start_time(video) + job.limit
        pending = heapq.merge(*encoded, key=_packet_time)
        _interleave(out, source, copies, pending, filters, end)


def _interleave(out, source, copies, pending: Iterator, filters, end: float | None) -> None:
    """Copy the input's packets in file order, slipping each generated packet (``pending``,
    in time order, produced as they are needed) in before the first copied packet that is
    later than it (MP4, Matroska and AVI readers stream better from interleaved files).
    ``filters``: a bitstream filter per input stream index; ``end``: stop copying after this
    time (preflight)."""
    nxt = next(pending, None)
    for packet in source.demux(*(source.streams[index] for index in copies)):
        if packet.size == 0:  # demuxer's flush packets
            continue
        t = _packet_time(packet)
        if end is not None and t > end:
            break
        while nxt is not None and _packet_time(nxt) <= t:
            out.mux(nxt)
            nxt = next(pending, None)
        stream, bsf = copies[packet.stream_index], filters.get(packet.stream_index)
        for p in bsf.filter(packet) if bsf is not None else (packet,):
            p.stream = stream
            out.mux(p)
    for index, bsf in filters.items():
        for p in bsf.filter(None):
            p.stream = copies[index]
            out.mux(p)
    while nxt is not None:
        out.mux(nxt)
        nxt = next(pending, None)


def _annex_b_filters(video, copy, job: _Job) -> dict:
    """{input index: filter} for MP4-style H.264/HEVC (extradata starts with version 1)
    going into a container that needs start codes; {} otherwise."""
    name = TO_ANNEX_B.get(video.codec_context.name)
    extradata = video.codec_context.extradata or b""
    if job.spec.format not in ANNEX_B or name is None or extradata[:1] != b"\x01":
        return {}
    try:
        from av.bitstream import BitStreamFilterContext  # PyAV >= 14
    except ImportError as e:
        raise MediaError(
            f"{job.out_path}: copying MP4-style {video.codec_context.name} into "
            f"{job.spec.format} needs PyAV >= 14 (bitstream filters); use .mkv or .mp4"
        ) from e
    return {video.index: BitStreamFilterContext(name, video, copy)}


def _add_tracks(out, job: _Job) -> list:
    """One output stream per generated track; the first is the default track."""
    import av
    streams = []
    for k, audio in enumerate(job.tracks):
        name = job.title if len(job.tracks) == 1 else f"{job.title} {k + 1}/{len(job.tracks)}"
        rate = job.spec.audio_rate or _encoder_rate(job.spec.audio_codec, job.sample_rate)
        stream = out.add_stream(job.spec.audio_codec, rate=rate)
        stream.layout = "mono" if audio.channels == 1 else "stereo"
        if job.spec.audio_codec not in LOSSLESS:
            stream.bit_rate = job.spec.bitrate or BITRATE_PER_CHANNEL * audio.channels
        stream.metadata["title"] = name
        stream.metadata["handler_name"] = name  # what MP4/MOV players show
        default = av.stream.Disposition.default
        stream.disposition = default if k == 0 else av.stream.Disposition(0)
        streams.append(stream)
    return streams


def _add_copy(out, stream):
    """An output stream that takes the input stream's packets unchanged."""
    import av
    copy = out.add_stream_from_template(stream)
    for key in ("language", "title", "handler_name"):
        if key in stream.metadata:
            copy.metadata[key] = stream.metadata[key]
    if stream.type == "audio":
        copy.disposition = av.stream.Disposition(0)  # the generated track is the default
    return copy


def _encoder_rate(codec: str, rate: int) -> int:
    """Opus only runs at 8/12/16/24/48 kHz: other rates are resampled to 48 kHz."""
    if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
        return 48000
    return rate


def _check_codecs(out, streams, job: _Job) -> None:
    supported = out.supported_codecs
    generated = {"libopus": "opus"}.get(job.spec.audio_codec, job.spec.audio_codec)
    if generated not in supported:
        raise MediaError(
            f"{job.out_path}: the {job.spec.format} container cannot hold {generated} audio; "
            f"choose another --audio-codec or output extension"
        )
    for stream in streams:
        name = stream.codec_context.name
        if name not in supported:
            raise MediaError(
                f"{job.out_path}: the {job.spec.format} container cannot hold the input's "
                f"{name} {stream.type} stream, which is copied without re-encoding; use an "
                f"output extension of a container that can (e.g. the input's own)"
            )


def _packet_time(packet) -> float:
    ts = packet.dts if packet.dts is not None else packet.pts
    return float(ts * packet.time_base) if ts is not None else float("-inf")


def _packet_span(container, stream) -> float:
    """Video length from packet timestamps, for headers without a duration."""
    first, end = None, 0.0
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        t = float(packet.pts * packet.time_base)
        first = t if first is None else min(first, t)
        end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    if first is None:
        raise MediaError(f"{container.name}: no video packets")
    return end - first
