"""What the ``v2a-export`` commands share: exit codes, the one-line input error, the weight and
parity options, progress bars and the parity table. Only the commands (this package) use click.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

EXIT_FAILED = 1  # the check ran and did not pass
EXIT_BAD_INPUT = 2  # bad input: unreadable file, unknown network, ...


class InputError(click.ClickException):
    """A user mistake: printed as one ``error:`` line, exit status 2, no traceback."""

    exit_code = EXIT_BAD_INPUT


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise InputError(f"expected comma-separated seconds, got {text!r}") from e


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise InputError(f"expected comma-separated integers, got {text!r}") from e


def parity_plan(parity_durations, parity_batches, encoder_durations, e2e_duration, e2e_steps, seed):
    from v2a_export.export.parity import ParityPlan

    kwargs = {"seed": seed}
    if e2e_steps is not None:
        kwargs["e2e_steps"] = e2e_steps
    if parity_durations is not None:
        kwargs["durations"] = _floats(parity_durations)
    if parity_batches is not None:
        kwargs["batches"] = _ints(parity_batches)
    if encoder_durations is not None:
        kwargs["encoder_durations"] = _floats(encoder_durations)
    if e2e_duration is not None:
        kwargs["e2e_duration"] = None if e2e_duration.lower() == "none" else float(e2e_duration)
    try:
        return ParityPlan(**kwargs)
    except ValueError as e:
        raise InputError(str(e)) from e


class Bars:
    """One click progress bar per component, driven by the library's Event callback."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.key = None

    def __call__(self, event) -> None:
        if self.quiet:
            return
        key = (event.component, event.total)
        if key != self.key:
            self.close()
            self.key = key
            label = f"{event.component:<12}"
            self.bar = click.progressbar(length=event.total, label=label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(event.done - self.bar.pos)
        if event.done >= event.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
        self.bar, self.key = None, None


WEIGHT_OPTIONS = [
    click.option(
        "--weights",
        "weights_dir",
        type=click.Path(path_type=Path),
        help="Directory with one file per network (official names, or flow/vae/vocoder/"
        "synchformer/clip + .safetensors|.pth|...).",
    ),
    click.option(
        "--weights-file",
        type=click.Path(path_type=Path),
        help="One state dict holding every network under 'clip.', 'synchformer.', 'flow.', "
        "'vae.', 'vocoder.'.",
    ),
]


def weight_options(f):
    for option in reversed(WEIGHT_OPTIONS):
        f = option(f)
    return f


def parity_options(f):
    options = [
        click.option("--parity-durations", help="Seconds per parity case, e.g. 2,9."),
        click.option("--parity-batches", help="Batch per parity case (cycled), e.g. 1,3."),
        click.option(
            "--encoder-durations",
            help="Seconds for the video encoders' cases (full-size encoders are slow on a CPU).",
        ),
        click.option(
            "--e2e-duration", help="Seconds of the end-to-end check ('none' skips it). [2]"
        ),
        click.option("--e2e-steps", type=int, help="Euler steps of the end-to-end check. [25]"),
        click.option("--threads", type=int, help="onnxruntime threads for the gate."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def weight_source(weights_dir: Path | None, weights_file: Path | None, seed: int | None):
    from v2a_export.export.weights import WeightSource

    if weights_dir is not None and weights_file is not None:
        raise InputError("give either --weights DIR or --weights-file F, not both")
    if weights_dir is not None:
        if not weights_dir.is_dir():
            what = "is not a directory" if weights_dir.exists() else "does not exist"
            raise InputError(f"--weights {weights_dir} {what}")
        return WeightSource(directory=weights_dir)
    if weights_file is not None:
        if not weights_file.is_file():
            raise InputError(f"--weights-file {weights_file} is not a file")
        return WeightSource(file=weights_file)
    return WeightSource(seed=seed)


def source_and_plan(weights_dir, weights_file, *parity):
    """What a re-run of a bundle's gate compares with: (the weights given, else None: the
    bundle's recorded seed) and (a parity plan from the options given, else None: the bundle's
    recorded plan)."""
    source = None
    if weights_dir is not None or weights_file is not None:
        source = weight_source(weights_dir, weights_file, None)
    plan = parity_plan(*parity, seed=0) if any(x is not None for x in parity) else None
    return source, plan


def fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1e}"


def print_report(report) -> None:
    """The parity table, the report's notes and its one-line summary."""
    click.echo(
        f"  {'component':<12} {'sizes':>5} {'rel_l2':>8} {'max_abs':>8} {'cosine':>10}  parity"
    )
    for name, p in report.components.items():
        click.echo(
            f"  {name:<12} {len(p.cases):>5} {fmt(p.worst('rel_l2')):>8} "
            f"{fmt(p.worst('max_abs')):>8} {p.min_cosine():>10.7f}  "
            f"{'pass' if p.passed else 'FAIL'}"
        )
        for line in p.failures[:3]:
            click.echo(f"      {line}")
    for note in report.notes:
        click.echo(f"  {note}")
    click.echo(report.summary())


__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "Bars",
    "InputError",
    "fmt",
    "parity_options",
    "parity_plan",
    "print_report",
    "source_and_plan",
    "weight_options",
    "weight_source",
]
