"""The ``v2a`` model: one whole generate request, as BLS over the repository's network models.

Each instance holds a :class:`~v2a_runtime.pipeline.Pipeline` whose sessions are
:class:`~.triton.RemoteSession` objects, one per network model of the repository. So a request
runs exactly the local pipeline (decode, encode once, condition once, the sampling loop, VAE,
vocoder, watermark), and every denoiser evaluation is one Triton request to the ``denoiser``
model, where the dynamic batcher merges the steps of concurrent requests. ``instance_group``
count = how many requests are in flight at once.

Request (names fixed; :data:`.repository.BLS_INPUTS`): ``video`` BYTES (the file's contents),
``prompt`` BYTES, optional ``negative_prompt`` BYTES, ``seed`` INT64, ``tracks`` INT32,
``start`` / ``duration`` FP32 (seconds), ``steps`` INT32, ``cfg`` FP32, ``solver`` / ``grid``
BYTES, ``container`` BYTES. Omitted options take the same defaults as ``v2a generate``. FP32
values are read back as the shortest decimal that rounds to them (2.3f -> 2.3), so a request
reproduces the local run of the same decimal options bit for bit, watermark id included.

Response: ``audio`` FP32 (tracks, samples), ``sample_rate`` INT32 (1,), ``watermark_payload``
INT64 (tracks,), ``muxed`` BYTES (1,): the input video with the tracks muxed in, in the
``container`` asked for (mp4, m4v, mov, mkv, webm, avi), else empty.

A request that is wrong (corrupt video, bad option, over this server's limits) gets an
INVALID_ARG error with one line; the instance goes on serving.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backends.base import Backend
from ..backends.host import HostSampler
from ..config import COMPONENTS
from ..media import VIDEO_CONTAINERS, mux, probe
from ..pipeline import GenerateOptions, Pipeline
from ..tokenizer import Tokenizer
from ..watermark import load_key
from .loading import model_context, verify_tokenizer
from .repository import BLS_INPUTS, batch_layout
from .triton import (
    RemoteError,
    RemoteSession,
    error_response,
    one_line,
    pb_utils,
    read_array,
    read_bytes,
    response,
)

TEXT_INPUTS = tuple(name for name, dtype, _ in BLS_INPUTS if dtype == "TYPE_STRING")


@dataclass(frozen=True)
class Limits:
    """What one request may ask of this server (config.pbtxt parameters)."""

    max_duration: float  # seconds of video per request
    max_tracks: int


@dataclass(frozen=True)
class ServeRequest:
    video: bytes
    options: GenerateOptions
    container: str | None  # extension of the muxed output asked for, e.g. ".mp4"


class TritonPythonModel:
    """Triton's Python-backend entry points for the ``v2a`` model."""

    def initialize(self, args: dict[str, str]) -> None:
        try:
            ctx = model_context(args)
            verify_tokenizer(ctx.bundle)
            m = ctx.bundle.manifest
            tokenizer = Tokenizer.load(
                ctx.bundle.tokenizer_path, context_length=m.tokenizer.context_length
            )
            batches = json.loads(ctx.parameters["v2a.networks"])
            sessions = {}
            for name in COMPONENTS:
                spec = m.components[name]
                layout = batch_layout(spec) if batches[name] > 0 else None
                sessions[name] = RemoteSession(name, spec, layout, batches[name])
            key = load_key(None)  # V2A_WATERMARK_KEY(_FILE) of the server's environment
            backend = Backend("triton", sessions, HostSampler)  # the host loop, remote steps
            self.pipeline = Pipeline(ctx.bundle, backend, tokenizer, key)
            self.limits = Limits(
                max_duration=float(ctx.parameters["v2a.max_duration"]),
                max_tracks=int(ctx.parameters["v2a.max_tracks"]),
            )
        except Exception as e:
            message = f"v2a: model {args['model_name']} refuses to load: {one_line(e)}"
            pb_utils().Logger.log_error(message)
            raise RuntimeError(message) from None
        if key.is_demo:
            pb_utils().Logger.log_warn(
                "v2a: watermarking with the public demo key; set V2A_WATERMARK_KEY_FILE in the "
                "server's environment"
            )

    def execute(self, requests: list) -> list:
        return [self._one(request) for request in requests]

    def _one(self, request):
        try:
            values = _read(request)
            asked = parse_request(values, self.limits)
            return response(self._generate(asked))
        except ValueError as e:  # the request's fault: bad video, option or limit
            return error_response(str(e))
        except RemoteError as e:
            return error_response(str(e), internal=True)
        except Exception as e:  # ours: say what, keep serving
            pb_utils().Logger.log_error(f"v2a: request failed: {type(e).__name__}: {e}")
            return error_response(f"internal error: {type(e).__name__}: {e}", internal=True)

    def _generate(self, asked: ServeRequest) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="v2a-request-") as tmp:
            video = Path(tmp) / "video"
            video.write_bytes(asked.video)
            try:
                opts = self.pipeline.resolve(asked.options)
                _check_span(video, opts, self.limits)
                result = self.pipeline.generate(video, opts)
                muxed = b""
                if asked.container is not None:
                    out = Path(tmp) / f"out{asked.container}"
                    muxed = _mux(video, out, result, self.pipeline.bundle.manifest.model.variant)
            except ValueError as e:  # name the input, not the temporary file
                raise ValueError(str(e).replace(str(video), "video")) from None
        payloads = [mark.payload for mark in result.watermarks]
        return {
            "audio": result.audio.astype(np.float32),  # (K, W)
            "sample_rate": np.array([result.sample_rate], dtype=np.int32),
            "watermark_payload": np.array(payloads, dtype=np.int64),  # (K,)
            "muxed": np.array([muxed], dtype=np.object_),
        }


def parse_request(values: dict[str, object], limits: Limits) -> ServeRequest:
    """The request's inputs (BYTES as lists of bytes, numbers as arrays) -> options, checked
    against this server's limits; ValueError naming the input otherwise. The pipeline checks
    the rest (solver, grid, steps, seed, cfg) in ``Pipeline.resolve``."""
    video = values["video"][0]
    if not video:
        raise ValueError("video is empty; send the video file's bytes")
    if not _is_container(video):
        raise ValueError(f"video: not a video file this server reads ({CONTAINERS})")
    text = {name: _text(name, values.get(name)) for name in TEXT_INPUTS if name != "video"}
    opts = {
        "prompt": text["prompt"] or "",
        "negative_prompt": text["negative_prompt"] or "",
        "solver": text["solver"],
        "grid": text["grid"],
    }
    for name, kind in (("seed", int), ("tracks", int), ("steps", int)):
        if values.get(name) is not None:
            opts[name] = kind(np.asarray(values[name]).reshape(-1)[0])
    for name in ("start", "duration", "cfg"):
        if values.get(name) is not None:
            opts[name] = _decimal(np.asarray(values[name]).reshape(-1)[0])
    start, duration = opts.get("start", 0.0), opts.get("duration")
    if not (math.isfinite(start) and start >= 0):
        raise ValueError(f"start must be a number of seconds >= 0, got {start!r}")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a number of seconds > 0, got {duration!r}")
    if duration is not None and duration > limits.max_duration:
        raise ValueError(
            f"duration {duration:g} s exceeds this server's limit of {limits.max_duration:g} s "
            "per request"
        )
    tracks = opts.get("tracks", 1)
    if tracks > limits.max_tracks:
        raise ValueError(f"tracks {tracks} exceeds this server's limit of {limits.max_tracks}")
    container = text["container"]
    if container is not None:
        container = "." + container.lower().lstrip(".")
        if container not in VIDEO_CONTAINERS:
            raise ValueError(
                f"container {text['container']!r}: choose from "
                f"{', '.join(c.lstrip('.') for c in VIDEO_CONTAINERS)}"
            )
    return ServeRequest(video, GenerateOptions(**opts), container)


CONTAINERS = "MP4/MOV, Matroska/WebM, AVI, MPEG-TS/PS, FLV, Ogg or ASF"


def _is_container(data: bytes) -> bool:
    """The file starts like one of CONTAINERS. FFmpeg would also probe text formats (HLS
    playlists, concat lists) that name other files or URLs: a server never opens those."""
    return (
        data[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")
        or data.startswith((b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba", b"FLV", b"OggS"))
        or data.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11")  # ASF
        or (data.startswith(b"RIFF") and data[8:12] == b"AVI ")
        or (data[:1] == b"\x47" and (len(data) <= 188 or data[188:189] == b"\x47"))  # TS
    )


def _read(request) -> dict[str, object]:
    values: dict[str, object] = {name: read_bytes(request, name) for name in TEXT_INPUTS}
    for name, dtype, _ in BLS_INPUTS:
        if dtype != "TYPE_STRING":
            values[name] = read_array(request, name)
    return values


def _text(name: str, value: list[bytes] | None) -> str | None:
    if value is None:
        return None
    try:
        return value[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not UTF-8 text") from None


def _decimal(value) -> float:
    """The shortest decimal that rounds to this FP32 value (2.3f -> 2.3; nan stays nan)."""
    return float(str(np.float32(value)))


def _check_span(video: Path, opts: GenerateOptions, limits: Limits) -> None:
    """A request without ``duration`` covers the rest of the video: that must fit the limit."""
    if opts.duration is not None:
        return
    span = probe(video).duration - opts.start
    if span > limits.max_duration:
        raise ValueError(
            f"the video runs {span:.2f} s from {opts.start:g} s, over this server's limit of "
            f"{limits.max_duration:g} s per request; send a duration"
        )


def _mux(video: Path, out: Path, result, variant: str) -> bytes:
    """The input video with the generated tracks, as ``v2a generate`` muxes them."""
    title = f"v2a generated ({variant})"
    mux(video, out, result.audio, result.sample_rate, start=result.start, title=title)
    return out.read_bytes()
