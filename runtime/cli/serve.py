"""``v2a serve`` and the client side of ``v2a generate --server`` (docs/serving.md).

    v2a serve REPO [--host H] [--http-port P] [--grpc-port G] [--metrics-port M]
              [--exit-timeout S] [--tritonserver PATH] [--stub-packages DIR]
              [-- TRITONSERVER ARGS...]
    v2a generate VIDEO --server http://HOST:8000 [-p ...] [-o OUT] ...

``serve`` runs a real ``tritonserver`` on a repository written by ``v2a-export triton``, in the
foreground, until Ctrl-C or SIGTERM (then it stops the server cleanly and exits 0).
``generate --server`` (:mod:`.generate`) sends the video and options to a server
(:func:`served_result`) and writes the result with the same code as local generation.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..pipeline import GenerateOptions, GenerateResult, TrackMark
from ..serve.server import (
    ServeOptions,
    ServerError,
    check_repository,
    find_tritonserver,
    run_server,
)
from ..watermark.coding import split_payload
from .common import Failure, one_line_errors


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("repository", type=click.Path(path_type=Path))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface).",
)
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True)
@click.option(
    "--exit-timeout",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="Seconds a stopping server waits for in-flight requests (and open connections).",
)
@click.option(
    "--tritonserver",
    "binary",
    type=click.Path(path_type=Path),
    default=None,
    help="The server binary. [default: nvidia-pytriton's, else tritonserver on PATH]",
)
@click.option(
    "--stub-packages",
    type=click.Path(path_type=Path),
    default=None,
    help="NumPy 1.x for nvidia-pytriton's stubs when this environment has NumPy 2. "
    "[default: $V2A_TRITON_STUB_PACKAGES, else <venv>/triton-stub]",
)
@click.argument("triton_args", nargs=-1, type=click.UNPROCESSED)
def serve(
    repository: Path,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    exit_timeout: int,
    binary: Path | None,
    stub_packages: Path | None,
    triton_args: tuple[str, ...],
) -> None:
    """Serve REPOSITORY (from v2a-export triton) with Triton, in the foreground."""
    options = ServeOptions(
        host,
        http_port,
        grpc_port,
        metrics_port,
        exit_timeout=exit_timeout,
        extra_args=triton_args,
        stub_packages=stub_packages,
    )
    with one_line_errors():
        try:
            repo = check_repository(repository)
            install = find_tritonserver(binary)
        except ServerError as e:
            raise Failure(str(e)) from None
    click.echo(f"v2a serve: tritonserver {install.binary} on {repo}", err=True)

    def ready(url: str) -> None:
        click.echo(
            f"v2a serve: ready at {url} (gRPC port {grpc_port}, metrics {url.rsplit(':', 1)[0]}:"
            f"{metrics_port}/metrics); Ctrl-C stops",
            err=True,
        )

    with one_line_errors():
        try:
            rc = run_server(repo, options, install=install, on_ready=ready)
        except ServerError as e:
            raise Failure(str(e)) from None
    if rc != 0:
        click.echo(f"error: tritonserver exited with status {rc} (its log is above)", err=True)
    sys.exit(rc)


def served_result(url: str, video: Path, request: dict) -> tuple[GenerateResult, str]:
    """Generate on the server at ``url``: the result as a GenerateResult (what a local run
    returns, less its timings and windows) and the served bundle's variant."""
    from ..serve.client import ServerClient

    started = time.perf_counter()
    options = GenerateOptions(**request)
    try:
        client = ServerClient.connect(url)
    except ImportError as e:
        raise Failure(str(e)) from None
    try:
        served = client.generate(video, options)
        variant = client.variant()
    finally:
        client.close()
    k, samples = served.audio.shape
    marks = tuple(
        TrackMark(i, p, *split_payload(p), key_id="server", demo_key=False)
        for i, p in enumerate(served.payloads)
    )
    result = GenerateResult(
        audio=served.audio,
        sample_rate=served.sample_rate,
        start=float(options.start),
        duration=samples / served.sample_rate,
        seeds=tuple(options.seed + i for i in range(k)),
        windows=(),
        timings={"total": time.perf_counter() - started},
        evaluations=0,
        watermarks=marks,
        options=options,
    )
    return result, variant


def served_summary(outputs: list[Path], r: GenerateResult, url: str, variant: str) -> str:
    names = outputs[0] if len(outputs) == 1 else f"{outputs[0]} … {outputs[-1].name}"
    k = len(r.seeds)
    ids = ",".join(f"{m.generation_id:06x}" for m in r.watermarks) or "none"
    return (
        f"wrote {names}: {k} track{'s' if k > 1 else ''}, {r.duration:.2f} s at "
        f"{r.sample_rate} Hz, seed {r.options.seed}, served by {url} ({variant}), watermark "
        f"id {ids} | seconds: generate {r.timings['total']:.2f}"
    )


def check_server_flags(*, bundle, backend: str, threads, key_file) -> None:
    """Options that choose the local model mean nothing with --server."""
    local = {
        "--bundle": bundle is not None,
        "--backend": backend != "cpu",
        "--threads": threads is not None,
        "--key-file": key_file is not None,
    }
    given = [flag for flag, set_ in local.items() if set_]
    if given:
        raise Failure(
            f"{', '.join(given)} choose(s) the local model; with --server the server's "
            "repository decides (see v2a-export triton)"
        )
