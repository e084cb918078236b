"""``v2a generate``: soundtracks for one or many videos, muxed into them or written as audio.

    v2a generate VIDEO... [--from-list FILE] [-o OUT | --out-dir DIR] [--out-ext EXT]
                 [-p PROMPT] [-n NEGATIVE] [--bundle DIR] [--steps N] [--solver S]
                 [--sampler NAME] [--cfg W] [--seed N] [--tracks K] [--loudness LUFS|off]
                 [--true-peak DBTP] [--json] ...

Every output is checked before any decoding (path rules, a one-second dry run of the muxer,
free space); the model is loaded once for all inputs. Outputs are written to a temporary file
and renamed, so nothing partial is ever left behind, and the inputs are only read. Memory is
bounded by one window, not by the video: the generated tracks wait in hidden temporary files
next to the output (4 bytes per sample and track; the loudness rounds 8) and are measured,
normalised, watermarked and encoded block by block (``Pipeline.stream``).

One input: any problem is one ``error:`` line and exit status 2. Several inputs (arguments, a
directory's videos, ``--from-list``): a failed input gets its ``error:`` line and the batch goes
on; the exit status is 1 when any input failed, 0 when all succeeded. ``--json`` prints one
JSON object per input on stdout (JSON lines); notes, warnings and progress go to stderr.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from .. import sampling
from ..backends import BACKENDS
from ..loudness import Loudness
from ..media import AUDIO_FORMATS, VIDEO_CONTAINERS, probe
from ..media.files import AUDIO_CODECS, check_input
from ..outputs import check_outputs, default_output, save
from ..pipeline import STAGES, GenerateResult, Pipeline, StreamResult
from ..sequence import min_duration
from .common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    Failure,
    ProgressBar,
    notes,
    one_line_errors,
    setup_logging,
)
from .serve import check_server_flags, served_result, served_summary

EXIT_SOME_FAILED = 1
# What a directory argument contributes: files with these extensions (any FFmpeg reads more).
VIDEO_EXTENSIONS = (*VIDEO_CONTAINERS, ".ogv", ".ts", ".mts", ".m2ts", ".flv", ".mpg", ".mpeg",
                    ".3gp", ".wmv")  # fmt: skip
DEFAULT_LOUDNESS = Loudness().target  # EBU R128, for video outputs


@click.command()
@click.argument("videos", nargs=-1, type=click.Path(path_type=Path))
@click.option("--from-list", type=click.Path(path_type=Path), default=None,
              help="A text file of input videos, one per line (# comments); relative paths "
              "are relative to the list's directory.")  # fmt: skip
@click.option("-p", "--prompt", default="", help="What the soundtrack should contain.")
@click.option("-n", "--negative", "negative_prompt", default="", help="What it should not.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="OUT.mp4/.mov/.m4v/.mkv/.webm/.avi (mux) or OUT.flac/.wav (audio only); one input "
    "only. [default: VIDEO's name + .v2a + VIDEO's container if it can carry the new audio, "
    "else .mkv]",
)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the default-named outputs here. [default: beside each input]")
@click.option("--out-ext", default=None,
              help="Extension of the default-named outputs, e.g. .mkv or .flac.")  # fmt: skip
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
@click.option(
    "--sampler",
    default=None,
    help="A named sampler of the bundle (v2a info lists them) instead of --solver/--steps/"
    "--grid. [default: the bundle's]",
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
@click.option("--loudness", "loudness_arg", default=None, metavar="LUFS|off",
              help="Integrated loudness target (EBU R128, measured per ITU-R BS.1770-4). "
              "[default: -23 for video outputs, off for audio files]")  # fmt: skip
@click.option("--true-peak", type=float, default=Loudness().true_peak, show_default=True,
              help="True-peak ceiling in dBTP when a loudness target is set.")  # fmt: skip
@click.option("--audio-codec", type=click.Choice(list(AUDIO_CODECS)), default=None,
              help="Codec of the generated tracks in a video output. [default: aac for "
              ".mp4/.m4v/.mov, opus for .mkv/.webm, pcm for .avi]")  # fmt: skip
@click.option("--audio-bitrate", type=str, default=None, metavar="BITS",
              help="Bitrate per track for aac/opus, e.g. 128k. [default: 96k per channel]")
@click.option("--sample-rate", type=click.IntRange(8000, 192000), default=None,
              help="Output sample rate in Hz (resampled). [default: the model's]")
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
@click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per input on stdout instead of the summary line.")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress, no notes, no warnings.")
@click.option("--log-level", type=click.Choice(["error", "warning", "info", "debug"]),
              default=None, help="Library log lines on stderr. [default: warning]")  # fmt: skip
@click.option("-v", "--verbose", count=True,
              help="More library log lines: -v is --log-level info, -vv debug.")
@click.option(
    "--server",
    default=None,
    metavar="URL",
    help="Generate on a v2a Triton server (http://HOST:8000 or grpc://HOST:8001) instead of "
    "locally; see v2a serve.",
)
def generate(
    videos: tuple[Path, ...],
    from_list: Path | None,
    output: Path | None,
    out_dir: Path | None,
    out_ext: str | None,
    bundle: Path | None,
    backend: str,
    threads: int | None,
    key_file: Path | None,
    keep_original_audio: bool,
    force: bool,
    as_json: bool,
    quiet: bool,
    log_level: str | None,
    verbose: int,
    loudness_arg: str | None,
    true_peak: float,
    audio_codec: str | None,
    audio_bitrate: str | None,
    sample_rate: int | None,
    server: str | None,
    **request,
) -> None:
    """Generate a soundtrack for each VIDEO (files, or directories of videos) and write it
    (muxed into the video, or as audio)."""
    setup_logging(quiet=quiet, level=log_level, verbose=verbose)
    with one_line_errors():
        inputs = _inputs(videos, from_list)
        _check_destination(inputs, output, out_dir, out_ext)
        loudness = _loudness(loudness_arg, true_peak)
        if server is not None:
            check_server_flags(bundle=bundle, backend=backend, threads=threads, key_file=key_file)
            if isinstance(loudness, Loudness):
                raise Failure("--loudness is applied before the watermark, where the audio is "
                              "generated; with --server use --loudness off (or run locally)")
            loudness = None
            if request.get("sampler") is not None:
                raise Failure("--sampler (a named sampler of a local bundle) is not sent to a "
                              "server; use --steps/--solver with --server")
        batch = Batch(inputs, as_json=as_json, quiet=quiet)
        encoding = Encoding(audio_codec, _bitrate(audio_bitrate), sample_rate)
        settings = Settings(output, out_dir, out_ext, keep_original_audio, force, loudness,
                            encoding, request)  # fmt: skip
        pipe = None
        for item in batch.items:  # every check that needs no model, before loading it
            batch.attempt(item, lambda item=item: _plan(item, settings))
        if server is None and any(item.plan is not None for item in batch.items):
            pipe = Pipeline.load(bundle, backend, threads=threads, key_file=key_file)
            if not quiet:
                notes(pipe)
    if pipe is not None or server is not None:
        for item in batch.items:
            if item.plan is not None:
                batch.attempt(item, lambda item=item: _run(pipe or server, item, settings, batch))
    sys.exit(batch.finish())


# --- inputs and outputs -----------------------------------------------------------------


def _inputs(videos: tuple[Path, ...], from_list: Path | None) -> list[Path]:
    """The arguments (a directory: its video files, sorted) and the list's lines, in order."""
    paths: list[Path] = []
    for v in videos:
        if v.is_dir():
            found = sorted(p for p in v.iterdir()
                           if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                           and ".v2a." not in p.name)  # fmt: skip
            if not found:
                raise Failure(f"{v}: no video files (by extension) in this directory")
            paths.extend(found)
        else:
            paths.append(v)
    if from_list is not None:
        check_input(from_list)
        base = from_list.parent
        for line in from_list.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line).expanduser()
                paths.append(p if p.is_absolute() else base / p)
    if not paths:
        raise Failure("no input: give VIDEO... or --from-list FILE")
    return paths


def _check_destination(inputs: list[Path], output: Path | None, out_dir: Path | None,
                       out_ext: str | None) -> None:  # fmt: skip
    if output is not None and len(inputs) > 1:
        raise Failure(f"-o names one output but there are {len(inputs)} inputs; use --out-dir "
                      "(and --out-ext) for a batch")  # fmt: skip
    if output is not None and (out_dir is not None or out_ext is not None):
        raise Failure("give either -o or --out-dir/--out-ext, not both")
    if out_dir is not None and not out_dir.is_dir():
        raise Failure(f"{out_dir}: --out-dir does not exist")
    if out_ext is not None:
        ext = out_ext.lower() if out_ext.startswith(".") else "." + out_ext.lower()
        known = (*VIDEO_CONTAINERS, *AUDIO_FORMATS)
        if ext not in known:
            raise Failure(f"--out-ext {out_ext!r}: use one of {', '.join(known)}")
    stems = [p.stem for p in inputs]
    if out_dir is not None and len(set(stems)) < len(stems):
        twice = sorted({n for n in stems if stems.count(n) > 1})[0]
        raise Failure(f"--out-dir: two inputs would both write {out_dir / twice}.v2a.*")


def _loudness(arg: str | None, true_peak: float) -> Loudness | None | str:
    """None: off; "auto": the default (video outputs only); else the target."""
    if arg is None:
        return "auto"
    if arg.strip().lower() == "off":
        return None
    try:
        target = float(arg)
    except ValueError:
        raise Failure(
            f"--loudness must be a number of LUFS (e.g. -23) or 'off', got {arg!r}"
        ) from None
    return Loudness(target, true_peak)


def _bitrate(text: str | None) -> int | None:
    """'128k', '128000' or '1.5M' -> bits/s."""
    if text is None:
        return None
    scale = {"k": 1_000, "m": 1_000_000}.get(text.strip()[-1:].lower(), 1)
    digits = text.strip()[:-1] if scale > 1 else text.strip()
    try:
        value = round(float(digits) * scale)
    except ValueError:
        raise Failure(f"--audio-bitrate must be bits/s like 128k or 96000, got {text!r}") from None
    if not 6_000 <= value <= 1_536_000:
        raise Failure(f"--audio-bitrate must be between 6k and 1536k, got {text!r}")
    return value


# --- one input --------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoding:
    """How the generated audio is written (None: the defaults)."""

    codec: str | None  # a key of AUDIO_CODECS; video outputs only
    bitrate: int | None  # bits/s per track, aac/opus only
    sample_rate: int | None  # resampled to this


@dataclass(frozen=True)
class Settings:
    output: Path | None
    out_dir: Path | None
    out_ext: str | None
    keep_original_audio: bool
    force: bool
    loudness: Loudness | None | str  # "auto" = -23 LUFS for video outputs
    encoding: Encoding
    request: dict


@dataclass(frozen=True)
class Plan:
    """What one input will produce, checked before any decoding."""

    output: Path  # OUT as given (K tracks into audio files: OUT-1 ... OUT-K)
    outputs: list[Path]
    duration: float  # seconds the video has from --start
    is_video: bool
    loudness: Loudness | None
    notes: tuple[str, ...]


@dataclass
class Item:
    video: Path
    index: int
    plan: Plan | None = None
    record: dict = field(default_factory=dict)


def _plan(item: Item, s: Settings) -> None:
    video, request = check_input(item.video), s.request
    info = probe(video)  # not a video / no video stream / unreadable: MediaError
    start, duration = request["start"], request["duration"]
    span = info.duration - start
    if span < min_duration() - 1e-9:
        raise Failure(
            f"{video}: {max(span, 0.0):.2f} s of video from {start:g} s is "
            f"shorter than one sync segment ({min_duration():.2f} s); nothing to generate"
        )
    said = []
    if duration is not None and duration > span + 1e-6:
        said.append(f"--duration {duration:g} s is longer than the video from {start:g} s; "
                    f"generating its {span:.2f} s")  # fmt: skip
    output = s.output
    if output is None:
        output = default_output(video, out_dir=s.out_dir, ext=s.out_ext, tracks=request["tracks"],
                                keep_original_audio=s.keep_original_audio)  # fmt: skip
    is_video = output.suffix.lower() in VIDEO_CONTAINERS
    enc = s.encoding
    if not is_video and (enc.bitrate is not None or enc.codec not in (
            None, {".flac": "flac", ".wav": "pcm"}.get(output.suffix.lower()))):  # fmt: skip
        raise Failure(f"{output}: --audio-codec/--audio-bitrate apply to video outputs; an "
                      f"audio file's extension sets its codec (.flac, .wav: 16-bit)")  # fmt: skip
    if s.keep_original_audio and not is_video:
        said.append(f"--keep-original-audio has no effect on an audio file ({output.name})")
    elif s.keep_original_audio and not info.has_audio:
        said.append(f"--keep-original-audio: {video.name} has no audio to keep")
    loudness = s.loudness
    if loudness == "auto":
        loudness = Loudness() if is_video else None
    covered = span if duration is None else min(duration, span)
    outputs = check_outputs(video, output, tracks=request["tracks"],
                            sample_rate=enc.sample_rate or 48_000, duration=covered,
                            keep_original_audio=s.keep_original_audio, overwrite=s.force,
                            audio_codec=enc.codec if is_video else None,
                            bitrate=enc.bitrate)  # fmt: skip
    item.plan = Plan(output, outputs, covered, is_video, loudness, tuple(said))


def _run(pipe: Pipeline | str, item: Item, s: Settings, batch: Batch) -> None:
    """Generate one input (locally, or on the server whose URL ``pipe`` is) and write it."""
    plan, started = item.plan, time.perf_counter()
    served = isinstance(pipe, str)
    extra = [] if served else _prompt_notes(pipe, s.request)
    for line in (*plan.notes, *extra):
        batch.note(item, line)
    enc = s.encoding

    def write(result, variant: str) -> float:
        t0 = time.perf_counter()
        save(result, plan.output, item.video, keep_original_audio=s.keep_original_audio,
             overwrite=s.force, title=f"v2a generated ({variant})",
             audio_codec=enc.codec if plan.is_video else None, bitrate=enc.bitrate,
             sample_rate=enc.sample_rate)  # fmt: skip
        return time.perf_counter() - t0

    if served:
        result, variant = served_result(pipe, item.video, s.request)
        write_s = write(result, variant)
    else:
        variant = pipe.bundle.manifest.model.variant
        # Streamed (memory bounded by a window; the tracks wait in hidden spool files next to
        # the output).
        with ProgressBar(enabled=not batch.quiet, prefix=batch.prefix(item)) as bar, pipe.stream(
            item.video, callback=bar.update, spool=plan.outputs[0].parent,
            loudness=plan.loudness, **s.request,
        ) as result:  # fmt: skip
            bar.stage("write")
            write_s = write(result, variant)  # includes rendering the watermark
    total_s = time.perf_counter() - started
    said = [*plan.notes, *extra]
    if result.duration < plan.duration - 0.01:  # a truncated file: what decodes counts
        said.append(f"truncated video: {result.duration:.2f} s decode of the {plan.duration:.2f}"
                    " s its header gives; generated only those")  # fmt: skip
    rate = enc.sample_rate or result.sample_rate
    item.record = _record(pipe, item, result, write_s, total_s, said, rate, variant)
    if served:
        batch.done(item, served_summary(plan.outputs, result, pipe, variant))
        return
    summary = _summary(plan.outputs, result, write_s, total_s, rate)
    if result.duration < plan.duration - 0.01:
        summary = summary.replace(" | seconds:", f" (truncated video: header {plan.duration:.2f}"
                                  " s) | seconds:", 1)  # fmt: skip
    batch.done(item, summary)


def _prompt_notes(pipe: Pipeline, request: dict) -> list[str]:
    """A note per prompt longer than the text encoder's context (the rest is not read)."""
    out, tokenizer = [], pipe.tokenizer
    for flag, text in (("-p", request["prompt"]), ("-n", request["negative_prompt"])):
        n = len(tokenizer.encode(text)) + 2  # start and end tokens
        if n > tokenizer.context_length:
            kept = tokenizer.decode(tokenizer.encode(text)[: tokenizer.context_length - 2])
            out.append(f"{flag}: the prompt is {n} tokens; the text encoder reads the first "
                       f"{tokenizer.context_length} (up to {kept[-30:]!r})")  # fmt: skip
    return out


# --- reporting --------------------------------------------------------------------------


class Batch:
    """Per-input status, notes and the exit status; one input behaves as before batches."""

    def __init__(self, inputs: list[Path], *, as_json: bool, quiet: bool) -> None:
        self.items = [Item(p, i) for i, p in enumerate(inputs)]
        self.as_json, self.quiet = as_json, quiet
        self.single = len(inputs) == 1
        self.failed = 0

    def prefix(self, item: Item) -> str:
        return "" if self.single else f"[{item.index + 1}/{len(self.items)}] {item.video}: "

    def note(self, item: Item, line: str) -> None:
        if not self.quiet:
            click.echo(f"note: {self.prefix(item)}{line}", err=True)

    def attempt(self, item: Item, work) -> None:
        """Run ``work``; a user-facing failure ends this item, not the batch (one input: exit
        status 2 at once, as ``one_line_errors`` does)."""
        try:
            work()
        except KeyboardInterrupt:
            click.echo("error: interrupted; no output was written for the current input",
                       err=True)  # fmt: skip
            sys.exit(EXIT_INTERRUPTED)
        except (ValueError, OSError, Failure) as e:
            message = " ".join(str(e).split()) or type(e).__name__
            item.plan = None
            self.failed += 1
            if self.as_json:
                click.echo(json.dumps({"input": str(item.video), "status": "error",
                                       "error": message}))  # fmt: skip
            click.echo(f"error: {message}", err=True)
            if self.single:
                sys.exit(EXIT_ERROR)

    def done(self, item: Item, summary: str) -> None:
        if self.as_json:
            click.echo(json.dumps(item.record))
        else:
            click.echo(summary if self.single else f"{self.prefix(item)}{summary}")

    def finish(self) -> int:
        if self.single:
            return 0
        ok = len(self.items) - self.failed
        if not self.quiet or self.failed:
            click.echo(f"batch: {ok} of {len(self.items)} inputs done, {self.failed} failed",
                       err=True)  # fmt: skip
        return EXIT_SOME_FAILED if self.failed else 0


def _record(pipe: Pipeline | str, item: Item, r: GenerateResult | StreamResult, write_s: float,
            total_s: float, said: list[str], rate: int, variant: str) -> dict:  # fmt: skip
    """The summary as one JSON object (``pipe``: a URL for a served input)."""
    o = r.options
    if isinstance(pipe, str):
        bundle = {"server": pipe, "variant": variant}
    else:
        m = pipe.bundle.manifest
        bundle = {"root": str(pipe.bundle.root), "variant": m.model.variant,
                  "weights": m.model.weights, "mark_id": m.mark_id}  # fmt: skip
    return {
        "input": str(item.video),
        "status": "ok",
        "outputs": [str(p) for p in item.plan.outputs],
        "start": r.start,
        "duration": round(r.duration, 6),
        "sample_rate": rate,  # of the outputs
        "model_sample_rate": r.sample_rate,
        "tracks": len(r.seeds),
        "seeds": list(r.seeds),
        "sampler": {"name": o.sampler, "solver": o.solver, "steps": o.steps, "grid": o.grid,
                    "cfg": o.cfg},
        "windows": [[round(w.start, 6), round(w.duration, 6)] for w in r.windows],
        "evaluations": r.evaluations,
        "watermarks": [
            {"track": w.track, "payload": f"{w.payload:08x}", "model_id": w.model_id,
             "generation_id": f"{w.generation_id:06x}", "key_id": w.key_id,
             "demo_key": w.demo_key}
            for w in r.watermarks
        ],  # fmt: skip
        "loudness": None if o.loudness is None else {
            "target_lufs": o.loudness.target, "true_peak_ceiling_dbtp": o.loudness.true_peak,
            "tracks": [level.to_dict() for level in r.loudness],
        },  # fmt: skip
        "bundle": bundle,
        "seconds": {**{s: round(r.timings.get(s, 0.0), 4) for s in STAGES},
                    "write": round(write_s, 4), "total": round(total_s, 4)},  # fmt: skip
        "notes": said,
    }


def _summary(
    outputs: list[Path], r: GenerateResult | StreamResult, write_s: float, total_s: float,
    rate: int,
) -> str:
    o = r.options
    names = outputs[0] if len(outputs) == 1 else f"{outputs[0]} … {outputs[-1].name}"
    tracks = f"{len(r.seeds)} track" + ("s" if len(r.seeds) > 1 else "")
    times = ", ".join(f"{s} {r.timings[s]:.2f}" for s in STAGES)
    ids = ",".join(f"{m.generation_id:06x}" for m in r.watermarks) or "none"
    level = ""
    if r.loudness:
        lufs = ",".join(f"{x.after:.1f}" if math.isfinite(x.after) else "silent"
                        for x in r.loudness)  # fmt: skip
        peak = max(x.true_peak for x in r.loudness)
        level = f", loudness {lufs} LUFS, true peak {peak:.1f} dBTP"
    sampler = f"{o.solver} {o.steps} steps" if o.sampler is None else f"sampler {o.sampler}"
    return (
        f"wrote {names}: {tracks}, {r.duration:.2f} s at {rate} Hz, seed {o.seed}, "
        f"{sampler} cfg {o.cfg:g}, {len(r.windows)} window(s), "
        f"watermark id {ids}{level} | seconds: {times}, write {write_s:.2f}, total {total_s:.2f}"
    )
