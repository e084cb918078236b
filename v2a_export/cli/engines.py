"""``v2a-export build-engines`` .

    v2a-export build-engines BUNDLE [--precision auto|fp32|tf32|fp16|bf16]
        [--min-duration S] [--opt-duration S] [--max-duration S] [--batch MAX | MIN,OPT,MAX]
        [--timing-cache FILE] [--opt-level N] [--workspace GB] [--components a,b]
        [--force] [--check] [-v]

Builds a TensorRT engine per component for the GPU and TensorRT version of this machine, into
BUNDLE/engines/, and records each with its key in engines/engines.json. Engines whose key
matches are kept ("up to date"); changed graphs, profiles, precision or options rebuild.

Output: the profile table and one line per engine on stdout, a line per build start on stderr.
Exit status: 0 done (or ``--check``: everything up to date), 1 a build failed (or ``--check``:
something must be built), 2 bad input or a machine without TensorRT / cuda-python / a GPU (one
``Error:`` line saying what to install or where to run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from v2a_runtime.config import ENGINE_PRECISIONS

from .common import EXIT_FAILED, InputError


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f}"


@click.command("build-engines")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--precision",
    type=click.Choice(["auto", *ENGINE_PRECISIONS]),
    default="auto",
    show_default=True,
    help="Engine precision. auto = each graph's own (fp32/fp16/bf16 graphs); tf32 = fp32 "
    "graphs with TF32 matmuls. fp16/bf16 need graphs exported with that precision.",
)
@click.option("--min-duration", type=float, help="Shortest window, s. [bundle min_duration]")
@click.option("--opt-duration", type=float, help="Most common window, s. [trained_duration]")
@click.option("--max-duration", type=float, help="Longest window, s. [bundle max_duration]")
@click.option(
    "--batch",
    default="1,1,4",
    show_default=True,
    help="Soundtracks per call (--tracks): MAX or MIN,OPT,MAX. With CFG the denoiser sees twice "
    "as many rows.",
)
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read and update this TensorRT timing cache (speeds up rebuilds on this GPU).",
)
@click.option("--opt-level", type=int, default=3, show_default=True, help="Builder level 0..5.")
@click.option("--workspace", type=float, help="Builder scratch limit in GB. [TensorRT's]")
@click.option("--components", multiple=True, help="Only these (comma-separated or repeated).")
@click.option("--force", is_flag=True, help="Rebuild even engines that are up to date.")
@click.option("--check", is_flag=True, help="Build nothing; exit 1 if any engine is stale.")
@click.option("-v", "--verbose", is_flag=True, help="Keep TensorRT's verbose messages in logs.")
def build_engines_cmd(
    bundle, precision, min_duration, opt_duration, max_duration, batch, timing_cache, opt_level,
    workspace, components, force, check, verbose,
) -> None:  # fmt: skip
    """Build TensorRT engines for BUNDLE on this machine's GPU (only those that changed)."""
    from v2a_runtime.backends import BackendError
    from v2a_runtime.backends.tensorrt.env import require_tensorrt
    from v2a_runtime.bundle import load_bundle
    from v2a_runtime.config import COMPONENTS

    from v2a_export.engines.build import BuildOptions, build_engines, prepare, resolve
    from v2a_export.engines.builder import BuildError
    from v2a_export.engines.profiles import ProfileRequest, parse_tracks

    try:
        b = load_bundle(bundle)
        names = tuple(c.strip() for group in components for c in group.split(",") if c.strip())
        request = ProfileRequest.of(
            b.manifest,
            min_duration=min_duration,
            opt_duration=opt_duration,
            max_duration=max_duration,
            tracks=parse_tracks(batch),
        )
        options = BuildOptions(
            request=request,
            precision=None if precision == "auto" else precision,
            components=names or COMPONENTS,
            opt_level=opt_level,
            workspace_bytes=None if workspace is None else int(workspace * 2**30),
            timing_cache=timing_cache,
            force=force,
            verbose=verbose,
        )
        resolved = resolve(b, options)  # every option checked before the machine is
        stack = require_tensorrt("v2a-export build-engines")
        _print_profiles(resolved.request, resolved.profiles)
        prepared = prepare(b, options, stack.platform)
    except (ValueError, OSError) as e:  # BundleError, BackendError, bad options
        raise InputError(" ".join(str(e).split())) from e
    click.echo(f"platform: {stack.platform.describe()}")
    for p in prepared.planned:
        click.echo(f"  {p.component:<12} {'build' if p.build else 'keep':<6} {p.reason}")
    if check:
        raise SystemExit(EXIT_FAILED if prepared.to_build else 0)

    def progress(event) -> None:
        if not event.done:
            click.echo(f"building {event.component} ({event.index}/{event.total}) ...", err=True)
            return
        e = event.entry
        click.echo(
            f"  {e.component:<12} built in {e.build_seconds:7.1f} s, plan {_mb(e.bytes):>8} MB, "
            f"scratch {_mb(e.device_memory_bytes):>8} MB, {event.warnings} warning(s), log {e.log}"
        )

    try:
        build_engines(b, prepared, stack.trt, options, callback=progress)
    except BuildError as e:
        click.echo(f"Error: {' '.join(str(e).split())}", err=True)
        raise SystemExit(EXIT_FAILED) from e
    except (BackendError, OSError) as e:
        raise InputError(" ".join(str(e).split())) from e
    _print_memory(b.root, stack.platform, options.components)


def _print_profiles(request, profiles) -> None:
    d, t = request.durations, request.tracks
    click.echo(
        f"profiles: windows {d.min:g} / {d.opt:g} / {d.max:g} s (min / opt / max), tracks "
        f"{t.min} / {t.opt} / {t.max}; max sets the memory each engine reserves"
    )
    for name, profile in profiles.items():
        shapes = ", ".join(f"{p.name} {_dims(p)}" for p in profile)
        click.echo(f"  {name:<12} {shapes}")


def _dims(p) -> str:
    """(1..8, 20..250..313, 8): one entry per axis, static axes as a single number."""
    parts = []
    for lo, o, hi in zip(p.min, p.opt, p.max, strict=True):
        parts.append(str(lo) if lo == hi else f"{lo}..{o}..{hi}")
    return "(" + ", ".join(parts) + ")"


def _print_memory(root, platform, components) -> None:
    from v2a_runtime.backends.tensorrt.cache import read_index

    index = read_index(root)
    entries = [index.find(c, platform) for c in components]
    scratch = max((e.device_memory_bytes for e in entries if e is not None), default=0)
    plans = sum(e.bytes for e in entries if e is not None)
    click.echo(
        f"engines: {plans / 1e6:.1f} MB of plans; the runtime shares one {scratch / 1e6:.1f} MB "
        "scratch allocation (the largest engine's, at its profile maximum)"
    )
    sys.stdout.flush()


__all__ = ["build_engines_cmd"]
