"""Command-line options of the precision pass, shared by ``export`` and ``convert-precision``
(a module of its own so that the export command can use them without importing the converter).
"""

from __future__ import annotations

import click
from v2a_runtime.config import PRECISIONS

from .common import InputError


def precision_options(default: str = "fp32"):
    """Decorator adding --precision (default ``default``), --io-dtype and the calibration
    options."""
    options = [
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            default=default,
            show_default=True,
            help="Numeric format of the graphs: fp16/bf16 with measured fp32 islands.",
        ),
        click.option(
            "--io-dtype",
            type=click.Choice(["fp32", "native"]),
            default="fp32",
            show_default=True,
            help="Graph input/output type of low-precision graphs (native = fp16 I/O).",
        ),
        click.option(
            "--calibration-durations",
            default="2,8",
            show_default=True,
            help="Seconds of rendered video the fp32 bundle is calibrated on.",
        ),
        click.option("--calibration-steps", type=int, default=8, show_default=True),
        click.option("--keep-fp32", multiple=True, help="Node name to keep in fp32 (repeatable)."),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def make_policy(precision: str, io_dtype: str, keep_fp32: tuple[str, ...]):
    from v2a_export.export.precision.policy import PrecisionPolicy

    try:
        return PrecisionPolicy(target=precision, io=io_dtype, keep_fp32=tuple(keep_fp32))
    except ValueError as e:
        raise InputError(str(e)) from e


def make_calibration(durations: str, steps: int, seed: int = 0):
    from v2a_export.export.precision.calibrate import CalibrationPlan

    try:
        seconds = tuple(float(x) for x in durations.split(",") if x.strip())
        return CalibrationPlan(durations=seconds, steps=steps, seed=seed)
    except ValueError as e:
        raise InputError(f"--calibration-durations {durations!r}: {e}") from e


__all__ = ["make_calibration", "make_policy", "precision_options"]
