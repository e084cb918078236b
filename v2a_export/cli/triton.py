"""``v2a-export triton``: a Triton model repository for a bundle.

    v2a-export triton BUNDLE --out REPO [--backend cpu|cuda|tensorrt] [--instances N]
        [--concurrency C] [--max-batch B] [--max-queue-delay-us D] [--max-duration S]
        [--max-tracks K] [--threads T] [--warmup-duration S] [--version V] [--force]

The writer is the runtime's (v2a_runtime.serve.repository: it needs no torch); this command is
its place in the exporter's workflow, after ``export`` / ``convert-precision`` /
``build-engines``. Serve the result with ``v2a serve REPO`` or NVIDIA's Triton container
(docs/serving.md). Bad input: one ``Error:`` line, exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from v2a_runtime.bundle import BundleError
from v2a_runtime.serve.repository import (
    BLS_MODEL,
    REPOSITORY_FILE,
    RepositoryError,
    RepositoryOptions,
    write_repository,
)

from .common import InputError

_DEFAULTS = RepositoryOptions()


@click.command("triton")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="REPO dir.")
@click.option(
    "--backend",
    type=click.Choice(["cpu", "cuda", "tensorrt"]),
    default=_DEFAULTS.backend,
    show_default=True,
    help="Runtime backend of the network models (tensorrt: the bundle's engines).",
)
@click.option(
    "--instances",
    type=int,
    default=_DEFAULTS.instances,
    show_default=True,
    help="Instances of each network model.",
)
@click.option(
    "--concurrency",
    type=int,
    default=_DEFAULTS.concurrency,
    show_default=True,
    help="Instances of the v2a model: requests in flight at once.",
)
@click.option(
    "--max-batch",
    type=int,
    default=_DEFAULTS.max_batch,
    show_default=True,
    help="Rows per execution of a batched network (a request's denoiser call has 2 per track).",
)
@click.option(
    "--max-queue-delay-us",
    type=int,
    default=_DEFAULTS.max_queue_delay_us,
    show_default=True,
    help="How long the dynamic batcher waits for more rows.",
)
@click.option("--max-duration", type=float, default=_DEFAULTS.max_duration, show_default=True,
              help="Longest span of video a request may ask for (s).")  # fmt: skip
@click.option("--max-tracks", type=int, default=_DEFAULTS.max_tracks, show_default=True,
              help="Most soundtracks a request may ask for.")  # fmt: skip
@click.option("--threads", type=int, default=None,
              help="CPU threads per onnxruntime session. [default: all cores]")  # fmt: skip
@click.option("--warmup-duration", type=float, default=None,
              help="Seconds of zeros each network runs at load (0: none). [default: the "
              "bundle's trained window]")  # fmt: skip
@click.option("--version", "version", type=int, default=_DEFAULTS.version, show_default=True,
              help="Version directory of every model.")  # fmt: skip
@click.option("-f", "--force", is_flag=True, help="Replace an existing REPO.")
def triton_cmd(bundle: Path, out: Path, force: bool, **options) -> None:
    """Write a Triton model repository that serves BUNDLE: one model per network (dynamic
    batching of the denoiser's steps across requests) and the BLS model v2a."""
    try:
        repo = write_repository(bundle, out, RepositoryOptions(**options), overwrite=force)
    except (BundleError, RepositoryError, OSError) as e:
        raise InputError(" ".join(str(e).split())) from None
    record = json.loads((repo / REPOSITORY_FILE).read_text())
    for name, model in record["models"].items():
        batching = (
            f"dynamic batching, max_batch_size {model['max_batch_size']}"
            if model["batched"]
            else "one request per call"
        )
        if name == BLS_MODEL:
            batching = f"BLS, {options['concurrency']} request(s) in flight"
        click.echo(f"  {name:<12} {batching}")
    click.echo(f"wrote {repo} ({record['variant']}, {options['backend']}); serve: v2a serve {repo}")
