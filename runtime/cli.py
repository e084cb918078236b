"""``v2a``: the runtime's command line (the only place that prints or draws progress).

    v2a generate VIDEO [-p PROMPT] [-n NEGATIVE] [--bundle DIR] [--steps N] [--solver S]
                 [--cfg W] [--seed N] [--tracks K] [-o OUT] [--force] ...
    v2a info [BUNDLE] [--json]
    v2a watermark embed|verify ...

Failure policy (DESIGN.md §8): every user mistake -- a missing or unreadable input, no video
stream, a video shorter than one sync segment, an unknown output extension, the output equal to
the input, an existing output without ``--force``, an unreadable or modified bundle -- prints
one line ``error: ...`` on stderr and exits with status 2, before any output exists. Outputs
are written to a temporary file and renamed, so nothing partial is ever left behind, and the
input is only read.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import numpy as np

from . import __version__, sampling
from .backends import BACKENDS
from .bundle import load_bundle
from .media import AUDIO_FORMATS, VIDEO_CONTAINERS, check_output, mux, probe, write_audio
from .media.files import check_input
from .pipeline import DEFAULT_BUNDLE, STAGES, GenerateResult, Pipeline, Progress
from .sequence import min_duration

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class _Failure(Exception):
    """A user-facing failure: one line, exit status 2."""


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Turn library errors (ValueError subclasses: MediaError, BundleError, BackendError, bad
    options) and OS errors into one ``error:`` line and exit status 2; never a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo("error: interrupted; no output was written", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except (ValueError, OSError, _Failure) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        click.echo(f"error: {message}", err=True)
        sys.exit(EXIT_ERROR)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="v2a")
def main() -> None:
    """Generate synchronized soundtracks for videos (torch-free runtime of v2a-export)."""


@main.command()
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
    **request,
) -> None:
    """Generate a soundtrack for VIDEO and write it (muxed into the video, or as audio)."""
    with _one_line_errors():
        started = time.perf_counter()
        check_input(video)
        outputs = _outputs(video, output, request["tracks"], force)
        info = probe(video)  # not a video / no video stream / unreadable: MediaError
        span = info.duration - request["start"]
        if span < min_duration() - 1e-9:
            raise _Failure(
                f"{video}: {max(span, 0.0):.2f} s of video from {request['start']:g} s is "
                f"shorter than one sync segment ({min_duration():.2f} s); nothing to generate"
            )
        pipe = Pipeline.load(bundle, backend, threads=threads, key_file=key_file)
        if not quiet:
            _notes(pipe)
        with _ProgressBar(enabled=not quiet) as bar:
            result = pipe.generate(video, callback=bar.update, **request)
        t0 = time.perf_counter()
        title = f"v2a generated ({pipe.bundle.manifest.model.variant})"
        _write(
            video,
            outputs,
            result,
            keep_original_audio=keep_original_audio,
            force=force,
            title=title,
        )
        write_seconds = time.perf_counter() - t0
    click.echo(_summary(outputs, result, write_seconds, time.perf_counter() - started))


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def info(bundle: Path | None, as_json: bool) -> None:
    """Describe BUNDLE (default: the shipped bundle) after checking every file's sha256."""
    with _one_line_errors():
        b = load_bundle(DEFAULT_BUNDLE if bundle is None else bundle)
    m = b.manifest
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
        return
    s, a, v, q = m.sampler, m.audio, m.video, m.sequence
    click.echo(f"bundle      {b.root}  (schema {m.schema_version}, all files verified)")
    click.echo(
        f"model       {m.model.family} {m.model.variant}, weights {m.model.weights}"
        + (f" ({m.model.weights_note})" if m.model.weights_note else "")
    )
    click.echo(
        f"audio       {a.sample_rate} Hz, {a.n_mels} mels, hop {a.hop_length}, "
        f"latent {a.latent_channels} ch at {a.latent_rate:g}/s"
    )
    click.echo(
        f"video       clip {v.clip_fps:g} fps {v.clip_size} px, "
        f"sync {v.sync_fps:g} fps {v.sync_size} px"
    )
    click.echo(
        f"durations   {q.min_duration:g}-{q.max_duration:g} s per window, "
        f"trained {q.trained_duration:g} s"
    )
    click.echo(f"sampler     {s.solver}, {s.steps} steps, {s.grid} grid, cfg {s.cfg:g}")
    for name, c in m.components.items():
        click.echo(
            f"  {name:<12} {c.file:<24} {c.precision:<5} opset {c.opset or '-':<3} "
            f"{c.bytes:>12,d} B  sha256 {c.sha256[:12]}"
        )
    if m.parity is not None:
        click.echo(f"parity      {m.parity.get('summary', m.parity)}")


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
    result: GenerateResult,
    *,
    keep_original_audio: bool,
    force: bool,
    title: str,
) -> None:
    """Mux into one video, or write one audio file per track; all or nothing."""
    tracks = list(result.audio)  # K arrays (W,)
    if outputs[0].suffix.lower() in VIDEO_CONTAINERS:
        # The muxed track starts with the video; a span from --start begins that much later.
        lead = np.zeros(round(result.options.start * result.sample_rate), dtype=np.float32)
        tracks = [np.concatenate([lead, t]) for t in tracks]
        mux(
            video,
            outputs[0],
            tracks,
            result.sample_rate,
            keep_original_audio=keep_original_audio,
            title=title,
            overwrite=force,
        )
        return
    temps = [p.with_name(f".{p.stem}.{secrets.token_hex(4)}.part{p.suffix}") for p in outputs]
    try:
        for temp, audio in zip(temps, tracks, strict=True):
            write_audio(temp, audio, result.sample_rate, title=title)
        for temp, path in zip(temps, outputs, strict=True):
            os.replace(temp, path)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


def _notes(pipe: Pipeline) -> None:
    model = pipe.bundle.manifest.model
    if model.weights == "random":
        click.echo(
            f"note: the {model.variant!r} bundle has random, untrained weights: the "
            "output is noise, not a real soundtrack",
            err=True,
        )
    if pipe.key.is_demo:
        click.echo(
            "note: watermarking with the public demo key (anyone can verify or forge "
            "it); set V2A_WATERMARK_KEY or --key-file",
            err=True,
        )


def _summary(outputs: list[Path], r: GenerateResult, write_s: float, total_s: float) -> str:
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


class _ProgressBar:
    """One click progress bar over all sampling steps of all windows (stderr)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.done = 0

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.render_finish()

    def update(self, event: Progress) -> None:
        if not self.enabled or event.stage != "sample" or event.step == 0:
            return
        if self.bar is None:
            self.bar = click.progressbar(
                length=event.windows * event.steps, label="sampling", file=sys.stderr, show_pos=True
            )
            self.bar.render_progress()
        done = event.window * event.steps + event.step
        self.bar.update(done - self.done)
        self.done = done


from .cli_demo import demo  # noqa: E402  (the demo reuses this module's helpers)

main.add_command(demo)

from .cli_watermark import watermark  # noqa: E402

main.add_command(watermark)

__all__ = ["main"]


if __name__ == "__main__":
    main()
