"""Command-line options of the precision pass, shared by ``export`` and ``convert-precision``
(a module of its own so that the export command can use them without importing the converter).
"""

from __future__ import annotations

from pathlib import Path

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
            help="Numeric format of the graphs: fp16/bf16 with measured fp32 islands; int8 "
            "(convert-precision only) with measured float islands.",
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


def int8_options(f):
    """Decorator adding the options of ``convert-precision --precision int8``."""
    options = [
        click.option(
            "--calibration-video",
            "calibration_videos",
            multiple=True,
            type=click.Path(path_type=Path),
            help="int8: calibrate on this video of yours instead of rendered scenes "
            "(repeatable; up to the longest --calibration-durations of each).",
        ),
        click.option(
            "--int8-weights",
            type=click.Choice(["auto", "u8", "s8-7bit", "s8"]),
            default="auto",
            show_default=True,
            help="int8 weight storage: u8 (U8U8), s8-7bit (U8S8, reduce_range) or s8 (U8S8, "
            "8-bit: saturates on AVX2 without VNNI); auto: s8 where this CPU's u8·s8 kernel "
            "is exact and >= 1.5x u8·u8 (VNNI/AMX), else u8 (measured, recorded).",
        ),
        click.option(
            "--int8-budget",
            type=float,
            default=0.05,
            show_default=True,
            help="Relative L2 error of each graph output a component may spend.",
        ),
        click.option(
            "--int8-conv",
            is_flag=True,
            help="Also quantize Conv (static QDQ, calibrated activation ranges).",
        ),
        click.option(
            "--no-speed-check",
            is_flag=True,
            help="Keep int8 components that pass the gate even if not faster here.",
        ),
        click.option(
            "--components",
            multiple=True,
            help="int8: quantize only these (comma-separated or repeated); the rest stay fp32.",
        ),
        click.option(
            "--held-out-duration",
            type=float,
            default=8.0,
            show_default=True,
            help="int8: seconds of the held-out clip the gate and end-to-end check run on.",
        ),
        click.option("--held-out-steps", type=int, default=8, show_default=True),
        click.option(
            "--encoder-frames",
            type=int,
            default=4,
            show_default=True,
            help="int8: frames (clip) / segments (sync) per calibration feed of the video "
            "encoders; the held-out gate takes twice as many (full-size CLIP: ~1 TFLOP a frame).",
        ),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate(f)


def make_int8(weights: str, budget: float, conv: bool, speed_check: bool, keep_float,
              held_out_duration: float, held_out_steps: int, encoder_frames: int):  # fmt: skip
    """(Int8Policy, HeldOutPlan) from the command line; InputError on bad values."""
    from v2a_export.export.precision.int8 import HeldOutPlan
    from v2a_export.export.precision.policy import Int8Policy

    reason = ""
    if weights == "auto":  # measured on this CPU's kernels (the machine the bundle runs on)
        from v2a_export.export.precision.kernels import choose_weights

        weights, reason = choose_weights()  # printed with the decisions (print_int8)
    try:
        policy = Int8Policy(weights=weights, budget=budget, conv=conv,
                            require_speedup=speed_check, keep_float=tuple(keep_float),
                            weights_reason=reason)  # fmt: skip
        if encoder_frames < 1:
            raise ValueError(f"--encoder-frames must be >= 1, got {encoder_frames}")
        held_out = HeldOutPlan(duration=held_out_duration, steps=held_out_steps,
                               encoder_items=2 * encoder_frames)  # fmt: skip
    except ValueError as e:
        raise InputError(str(e)) from e
    return policy, held_out


def make_policy(precision: str, io_dtype: str, keep_fp32: tuple[str, ...]):
    from v2a_export.export.precision.policy import PrecisionPolicy

    try:
        return PrecisionPolicy(target=precision, io=io_dtype, keep_fp32=tuple(keep_fp32))
    except ValueError as e:
        raise InputError(str(e)) from e


def make_calibration(durations: str, steps: int, seed: int = 0, videos=(), encoder_items=4):
    from v2a_export.export.precision.calibrate import CalibrationPlan

    for video in videos:
        if not Path(video).is_file():
            raise InputError(f"--calibration-video {video}: no such file")
    try:
        seconds = tuple(float(x) for x in durations.split(",") if x.strip())
        return CalibrationPlan(durations=seconds, steps=steps, seed=seed,
                               videos=tuple(str(v) for v in videos),
                               encoder_items=encoder_items)  # fmt: skip
    except ValueError as e:
        raise InputError(f"--calibration-durations {durations!r}: {e}") from e


__all__ = ["int8_options", "make_calibration", "make_int8", "make_policy", "precision_options"]
