"""``v2a generate``: a soundtrack for a video, muxed into it or written as audio files.

    v2a generate VIDEO [-p PROMPT] [-n NEGATIVE] [--bundle DIR] [--steps N] [--solver S]
                 [--cfg W] [--seed N] [--tracks K] [-o OUT] [--force] ...

Outputs are written to a temporary file and renamed, so nothing partial is ever left behind,
and the input is only read. Memory is bounded by one window, not by the video: the generated
tracks wait in a hidden temporary file next to the output (4 bytes per sample and track) and
are watermarked and encoded block by block (``Pipeline.stream``).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import click

from .. import sampling
from ..backends import BACKENDS
from ..media import AUDIO_FORMATS, VIDEO_CONTAINERS, check_output, mux, probe, write_audio
from ..media.files import atomic_output, check_input
from ..pipeline import STAGES, GenerateResult, Pipeline, StreamResult
from ..sequence import min_duration
from .common import Failure, ProgressBar, notes, one_line_errors
from .serve import check_server_flags, served_result, served_summary


@click.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option("-p", "--prompt", default="", help="What the soundtrack should contain.")
@click.option("-n", "--negative", "negative_prompt", default="", help="What it should not.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="OUT.mp4/.mov/.m4v/.mkv/.webm/.avi (mux) or OUT.flac/.wav (audio only). "
    "[default: VIDEO's name + .v2a + VIDEO's extension]",
)
@click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle directory. [default: the bundle shipped with v2a_runtime]",
)
@click.option("--steps", type=int, default=None, help="Solver steps. [default: the bundle's]")
@click.option(
    "--solver",
    type=click.Choice(list(sampling.SOLVERS)),
    default=None,
    help="ODE solver. [default: the bundle's]",
)
@click.option(
    "--grid",
    type=click.Choice(list(sampling.GRIDS)),
    default=None,
    help="Time grid. [default: the bundle's]",
)
@click.option("--cfg", type=float, default=None, help="Guidance weight. [default: the bundle's]")
@click.option(
    "--seed", type=int, default=42, show_default=True, help="Noise seed; track k uses SEED + k."
)
@click.option(
    "--tracks",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="K different soundtracks in one batched run: K audio streams in a video "
    "output, or OUT-1.flac ... OUT-K.flac.",
)
@click.option("--start", type=float, default=0.0, show_default=True, help="Seconds to skip.")
@click.option("--duration", type=float, default=None, help="Seconds to cover. [default: all]")
@click.option("--backend", type=click.Choice(BACKENDS), default="cpu", show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads per graph. [default: all cores]",
)
@click.option(
    "--key-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Watermark key file. [default: $V2A_WATERMARK_KEY(_FILE), else the public demo key]",
)
@click.option("--keep-original-audio", is_flag=True, help="Keep the input's audio as well.")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no notes.")
@click.option(
    "--server",
    default=None,
    metavar="URL",
    help="Generate on a v2a Triton server (http://HOST:8000 or grpc://HOST:8001) instead of "
    "locally; see v2a serve.",
)
def generate(
    video: Path,
    output: Path | None,
    bundle: Path | None,
    backend: str,
    threads: int | None,
    key_file: Path | None,
    keep_original_audio: bool,
    force: bool,
    quiet: bool,
    server: str | None,
    **request,
) -> None:
    """Generate a soundtrack for VIDEO and write it (muxed into the video, or as audio)."""
    with one_line_errors():
        started = time.perf_counter()
        check_input(video)
        outputs = _outputs(video, output, request["tracks"], force)
        info = probe(video)  # not a video / no video stream / unreadable: MediaError
        span = info.duration - request["start"]
        if span < min_duration() - 1e-9:
            raise Failure(
                f"{video}: {max(span, 0.0):.2f} s of video from {request['start']:g} s is "
                f"shorter than one sync segment ({min_duration():.2f} s); nothing to generate"
            )
        if server is None:
            pipe = Pipeline.load(bundle, backend, threads=threads, key_file=key_file)
            if not quiet:
                notes(pipe)
            title = f"v2a generated ({pipe.bundle.manifest.model.variant})"
            spool = outputs[0].parent  # the generated tracks wait on disk, next to the output
            with ProgressBar(enabled=not quiet) as bar, pipe.stream(
                video, callback=bar.update, spool=spool, **request
            ) as result:
                t0 = time.perf_counter()
                _write(video, outputs, list(result.tracks), result, keep=keep_original_audio,
                       force=force, title=title)  # fmt: skip
                write_seconds = time.perf_counter() - t0  # includes rendering the watermark
        else:
            check_server_flags(bundle=bundle, backend=backend, threads=threads, key_file=key_file)
            result, variant = served_result(server, video, request)
            _write(video, outputs, list(result.audio), result, keep=keep_original_audio,
                   force=force, title=f"v2a generated ({variant})")  # fmt: skip
    if server is not None:
        click.echo(served_summary(outputs, result, server, variant))
        return
    click.echo(_summary(outputs, result, write_seconds, time.perf_counter() - started))


def _outputs(video: Path, output: Path | None, tracks: int, force: bool) -> list[Path]:
    """The output path(s), checked before any work: one file, or K audio files."""
    if output is None:
        ext = video.suffix.lower() if video.suffix.lower() in VIDEO_CONTAINERS else ".mp4"
        output = video.with_name(f"{video.stem}.v2a{ext}")
    if tracks == 1 or output.suffix.lower() not in AUDIO_FORMATS:
        return [check_output(output, input_path=video, overwrite=force)]
    check_output(output, input_path=video, overwrite=True)  # extension and directory
    paths = [output.with_name(f"{output.stem}-{k + 1}{output.suffix}") for k in range(tracks)]
    return [check_output(p, input_path=video, overwrite=force) for p in paths]


def _write(
    video: Path,
    outputs: list[Path],
    tracks: list,
    result: StreamResult | GenerateResult,
    *,
    keep: bool,
    force: bool,
    title: str,
) -> None:
    """Mux ``tracks`` (Tracks or arrays) into one video, or write one audio file per track;
    all or nothing. ``result`` gives the rate and where the span starts."""
    if outputs[0].suffix.lower() in VIDEO_CONTAINERS:
        mux(
            video,
            outputs[0],
            tracks,  # placed where the span starts
            result.sample_rate,
            start=result.start,
            keep_original_audio=keep,
            title=title,
            overwrite=force,
        )
        return
    with ExitStack() as stack:  # every file renamed into place only when all are written
        temps = [stack.enter_context(atomic_output(p)) for p in outputs]
        for temp, audio in zip(temps, tracks, strict=True):
            write_audio(temp, audio, result.sample_rate, title=title)


def _summary(outputs: list[Path], r: StreamResult, write_s: float, total_s: float) -> str:
    o = r.options
    names = outputs[0] if len(outputs) == 1 else f"{outputs[0]} … {outputs[-1].name}"
    tracks = f"{len(r.seeds)} track" + ("s" if len(r.seeds) > 1 else "")
    times = ", ".join(f"{s} {r.timings[s]:.2f}" for s in STAGES)
    ids = ",".join(f"{m.generation_id:06x}" for m in r.watermarks) or "none"
    return (
        f"wrote {names}: {tracks}, {r.duration:.2f} s at {r.sample_rate} Hz, seed {o.seed}, "
        f"{o.solver} {o.steps} steps cfg {o.cfg:g}, {len(r.windows)} window(s), "
        f"watermark id {ids} | seconds: {times}, write {write_s:.2f}, total {total_s:.2f}"
    )
