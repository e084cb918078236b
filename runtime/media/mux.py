"""Muxing generated audio into a copy of the input video, without re-encoding the picture.

The output container follows the output extension (see ``files.VIDEO_CONTAINERS``): the video
packets are copied unchanged (same bytes, same timestamps, display matrix kept); each generated
track is encoded (AAC for .mp4/.m4v/.mov, Opus for .mkv/.webm, 16-bit PCM for .avi), cut or
padded to the video's duration and started at the video's first frame. Track order: the
generated tracks first (the first one is the default track), then, with
``keep_original_audio``, the input's audio streams, copied unchanged. Generated tracks carry
``title`` (and ``handler_name``, which MP4/MOV players show) in their metadata; the container's
``comment`` says which tracks were generated. Subtitle, data and attachment streams are not
copied.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import av
import numpy as np

from .audio import BITRATE_PER_CHANNEL, _check_rate, as_channels, encode_track, fit_length
from .files import VIDEO_CONTAINERS, MediaError, atomic_output, check_input, check_output
from .probe import _reason, open_input, start_time, stream_duration, video_stream

log = logging.getLogger(__name__)

# Keys the muxer writes itself; copying them from the input would be stale or wrong.
MUXER_OWNED = {"major_brand", "minor_version", "compatible_brands", "encoder", "duration"}


def mux(
    video_path: str | os.PathLike,
    out_path: str | os.PathLike,
    tracks: list[np.ndarray],
    sample_rate: int,
    *,
    keep_original_audio: bool = False,
    title: str = "v2a generated",
    overwrite: bool = False,
) -> None:
    """Write ``out_path``: the input's video packets plus one audio stream per track.

    ``tracks``: K arrays (W,) or (C, W) float at ``sample_rate``. Atomic: nothing is left at
    ``out_path`` on failure; an existing file is replaced only with ``overwrite=True``.
    """
    video_path = check_input(video_path)
    out_path = check_output(
        out_path, input_path=video_path, overwrite=overwrite, allowed=tuple(VIDEO_CONTAINERS)
    )
    if isinstance(tracks, np.ndarray) or not tracks:
        raise ValueError("tracks must be a non-empty list of (W,) or (C, W) arrays")
    tracks = [as_channels(t, f"track {k}") for k, t in enumerate(tracks)]
    _check_rate(sample_rate)
    spec = VIDEO_CONTAINERS[out_path.suffix.lower()]
    with open_input(video_path) as source:
        video = video_stream(source, video_path)
        originals = list(source.streams.audio) if keep_original_audio else []
        t0 = start_time(video)
        length = stream_duration(source, video)
        if length is None:
            length = _packet_span(source, video)
            source.seek(0)
        with atomic_output(out_path) as tmp:
            try:
                _write(
                    source,
                    video,
                    originals,
                    tmp,
                    out_path,
                    spec,
                    tracks,
                    sample_rate,
                    t0,
                    length,
                    title,
                )
            except av.error.FFmpegError as e:
                raise MediaError(f"{out_path}: cannot write {spec.format} ({_reason(e)})") from e


def _write(source, video, originals, tmp, out_path, spec, tracks, sample_rate, t0, length, title):
    options = {"movflags": "+faststart"} if spec.format in ("mp4", "mov") else {}
    with av.open(str(tmp), mode="w", format=spec.format, options=options) as out:
        _check_codecs(out, [video, *originals], out_path, spec)
        out_video = out.add_stream_from_template(video)
        if video.language:
            out_video.metadata["language"] = video.language
        out.metadata.update(
            {k: v for k, v in source.metadata.items() if k.lower() not in MUXER_OWNED}
        )
        names = [
            title if len(tracks) == 1 else f"{title} {k + 1}/{len(tracks)}"
            for k in range(len(tracks))
        ]
        generated = [
            _add_track(out, spec, sample_rate, t.shape[0], n, k == 0)
            for k, (t, n) in enumerate(zip(tracks, names, strict=True))
        ]
        copies = {s.index: _add_copy(out, s) for s in originals}
        copies[video.index] = out_video
        kept = f"; original audio kept as track {len(tracks) + 1}" if originals else ""
        out.metadata["comment"] = f"audio tracks 1-{len(tracks)}: {title}{kept}"

        samples = round(length * sample_rate)
        first = round(t0 * sample_rate)
        pending = []  # encoded generated packets, in time order
        for stream, audio in zip(generated, tracks, strict=True):
            pending.extend(encode_track(stream, fit_length(audio, samples), sample_rate, first))
        pending.sort(key=_packet_time)
        _interleave(out, source, copies, pending)


def _interleave(out, source, copies, pending) -> None:
    """Copy the input's packets in file order, slipping each generated packet in before the
    first copied packet that is later than it (MP4, Matroska and AVI readers stream better
    from interleaved files)."""
    i = 0
    for packet in source.demux(*(source.streams[index] for index in copies)):
        if packet.size == 0:  # demuxer's flush packets
            continue
        t = _packet_time(packet)
        while i < len(pending) and _packet_time(pending[i]) <= t:
            out.mux(pending[i])
            i += 1
        packet.stream = copies[packet.stream_index]
        out.mux(packet)
    out.mux(pending[i:])


def _add_track(out, spec, sample_rate, channels, name, default):
    rate = spec.audio_rate or _encoder_rate(spec.audio_codec, sample_rate)
    stream = out.add_stream(spec.audio_codec, rate=rate)
    stream.layout = "mono" if channels == 1 else "stereo"
    if spec.audio_codec != "pcm_s16le":
        stream.bit_rate = BITRATE_PER_CHANNEL * channels
    stream.metadata["title"] = name
    stream.metadata["handler_name"] = name
    stream.disposition = av.stream.Disposition.default if default else av.stream.Disposition(0)
    return stream


def _add_copy(out, stream):
    copy = out.add_stream_from_template(stream)
    for key in ("language", "title", "handler_name"):
        if key in stream.metadata:
            copy.metadata[key] = stream.metadata[key]
    copy.disposition = av.stream.Disposition(0)
    return copy


def _encoder_rate(codec: str, rate: int) -> int:
    """Opus only runs at 8/12/16/24/48 kHz: other rates are resampled to 48 kHz."""
    if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
        return 48000
    return rate


def _check_codecs(out, streams, out_path: Path, spec) -> None:
    supported = out.supported_codecs
    for stream in streams:
        name = stream.codec_context.name
        if name not in supported:
            raise MediaError(
                f"{out_path}: the {spec.format} container cannot hold the input's {name} "
                f"{stream.type} stream, which is copied without re-encoding; use an output "
                f"extension of a container that can (e.g. the input's own)"
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
