"""``v2a-export convert-precision``, and the precision steps of ``export`` / ``validate``.

    v2a-export convert-precision BUNDLE --out DIR [--precision fp16|bf16] [--io-dtype fp32|native]
                      [--calibration-durations 2,8] [--calibration-steps 8] [--keep-fp32 NODE]
                      [--no-validate] [--weights DIR | --weights-file F] [parity options]
    v2a-export convert-precision BUNDLE --out DIR --precision int8 [--calibration-video V ...]
                      [--int8-weights u8|s8-7bit|s8] [--int8-budget 0.05] [--int8-conv]
                      [--no-speed-check] [--components C,...] [--held-out-duration 8]
    v2a-export export ... --precision fp16        (fp32 export + gate, then this, in place)

int8 is gated at conversion against the fp32 graphs it was made from, on held-out real inputs
(docs/precision.md); its table lists per component the decision and the held-out numbers. An
int8 bundle is for onnxruntime on CPUs: its dynamic int8 nodes are outside what TensorRT
imports, so the TensorRT parser check does not gate it (``check-trt`` lists them).

The conversion table (per component: float nodes, nodes in the target type, fp32 nodes by
reason, Casts added, the worst output error measured on the calibration inputs) goes to stdout,
then the precision-aware parity table. Exit 1 when the gate fails or a converted graph breaks a
TensorRT parser rule (nothing written; ``--allow-trt-incompatible``: a warning), 2 on bad input.
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    EXIT_FAILED,
    Bars,
    InputError,
    parity_options,
    print_report,
    source_and_plan,
    weight_options,
)
from .options import int8_options, make_calibration, make_int8, make_policy, precision_options
from .trt import allow_trt_option, refused, warn_incompatible


def convert_and_validate(
    src: Path, out: Path, policy, calibration, *, source, plan, threads, validate, quiet,
    allow_trt_incompatible=False,
) -> bool:  # fmt: skip
    """Convert, print the conversion table, validate (optional), print the gate; True if the
    gate passed (or was skipped)."""
    from v2a_export.export.precision.bundle import convert_bundle, validate_precision_bundle
    from v2a_export.export.precision.convert import PrecisionError
    from v2a_export.export.trt_compat import TensorRTIncompatible

    bars = Bars(quiet)
    try:
        result = convert_bundle(
            src, out, policy, calibration, threads=threads, callback=bars,
            allow_trt_incompatible=allow_trt_incompatible,
        )  # fmt: skip
    except TensorRTIncompatible as e:
        bars.close()
        raise refused(e) from e
    except PrecisionError as e:
        raise click.ClickException(str(e)) from e
    except (ValueError, OSError) as e:
        raise InputError(" ".join(str(e).split())) from e
    finally:
        bars.close()
    print_conversion(result)
    warn_incompatible(result.trt_violations)
    if not validate:
        click.echo("not validated (--no-validate): run v2a-export validate on the bundle")
        return True
    bars = Bars(quiet)
    try:
        report = validate_precision_bundle(
            out, source, plan=plan, threads=threads, write=True, callback=bars
        )
    except (ValueError, OSError) as e:
        raise InputError(" ".join(str(e).split())) from e
    finally:
        bars.close()
    print_report(report)
    return report.passed


def print_conversion(result) -> None:
    p = result.policy
    click.echo(
        f"\n{result.root}: {p.target.value} with fp32 islands (I/O {p.io.value}, range limit "
        f"{p.limit:g}), calibrated on {', '.join(f'{d:g}' for d in result.calibration.durations)}"
        f" s of rendered video ({result.seconds:.0f} s)"
    )
    click.echo(
        f"  {'component':<12} {'float':>6} {p.target.value:>6} {'fp32':>5} {'casts':>6} "
        f"{'rel_l2*':>8}  fp32 nodes by reason"
    )
    for name, r in result.components.items():
        worst = max((e.rel_l2 for e in r.outputs.values()), default=float("nan"))
        reasons = ", ".join(f"{k} {v}" for k, v in r.counts().items()) or "-"
        click.echo(
            f"  {name:<12} {r.float_nodes:>6} {r.low_nodes:>6} {len(r.fp32_nodes):>5} "
            f"{r.casts:>6} {worst:>8.1e}  {reasons}"
        )
        if r.refined:
            click.echo(f"      final projection kept fp32 (measured): {', '.join(r.refined)}")
    click.echo("  * worst graph output vs fp32 on the calibration inputs (emulated rounding)")


@click.command("convert-precision")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New bundle directory.")
@precision_options("fp16")
@int8_options
@click.option("--no-validate", is_flag=True, help="Skip the parity gate against PyTorch.")
@weight_options
@parity_options
@allow_trt_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def convert_precision_cmd(
    bundle, out, precision, io_dtype, calibration_durations, calibration_steps, keep_fp32,
    calibration_videos, int8_weights, int8_budget, int8_conv, no_speed_check, components,
    held_out_duration, held_out_steps, encoder_frames, no_validate, weights_dir, weights_file,
    parity_durations, parity_batches, encoder_durations, e2e_duration, e2e_steps, threads,
    allow_trt_incompatible, quiet,
) -> None:  # fmt: skip
    """Convert the fp32 BUNDLE to fp16/bf16 with measured fp32 islands, then gate it against the
    PyTorch fp32 networks (random-weight bundles are rebuilt from their seed); or to int8 with
    measured float islands, gated against the fp32 graphs on held-out real inputs."""
    if precision == "fp32":
        raise InputError("--precision fp32 converts nothing; choose fp16, bf16 or int8")
    if not (bundle / "manifest.json").is_file():
        raise InputError(f"{bundle}: not a bundle (no manifest.json)")
    if precision == "int8":
        policy, held_out = make_int8(int8_weights, int8_budget, int8_conv, not no_speed_check,
                                     keep_fp32, held_out_duration, held_out_steps,
                                     encoder_frames)  # fmt: skip
        calibration = make_calibration(calibration_durations, calibration_steps,
                                       videos=calibration_videos,
                                       encoder_items=encoder_frames)  # fmt: skip
        names = tuple(c.strip() for group in components for c in group.split(",") if c.strip())
        if not quantize_int8(bundle, out, policy, calibration, held_out, names, threads, quiet):
            click.echo("int8 end-to-end gate FAILED (see reports/precision.json)", err=True)
            raise SystemExit(EXIT_FAILED)
        return
    int8_only = {"--calibration-video": calibration_videos, "--components": components,
                 "--int8-conv": int8_conv, "--no-speed-check": no_speed_check}  # fmt: skip
    given = [flag for flag, value in int8_only.items() if value]
    if given:
        raise InputError(f"{given[0]} applies to --precision int8 only")
    policy = make_policy(precision, io_dtype, keep_fp32)
    calibration = make_calibration(calibration_durations, calibration_steps)
    source, plan = source_and_plan(weights_dir, weights_file, parity_durations, parity_batches,
                                   encoder_durations, e2e_duration, e2e_steps)  # fmt: skip
    passed = convert_and_validate(
        bundle, out, policy, calibration, source=source, plan=plan, threads=threads,
        validate=not no_validate, quiet=quiet, allow_trt_incompatible=allow_trt_incompatible,
    )  # fmt: skip
    if not passed:
        click.echo(f"{precision} parity gate FAILED (see reports/parity.json)", err=True)
        raise SystemExit(EXIT_FAILED)


def quantize_int8(src, out, policy, calibration, held_out, names, threads, quiet) -> bool:
    """Quantize, print the int8 table; True if the end-to-end gate passed."""
    import onnxruntime
    from v2a_runtime.config import COMPONENTS

    from v2a_export.export.precision.int8 import convert_bundle_int8

    onnxruntime.set_default_logger_severity(3)  # the quantizer's own sessions: errors only
    bars = Bars(quiet)
    try:
        result = convert_bundle_int8(
            src, out, policy, calibration, held_out, components=names or COMPONENTS,
            threads=threads, callback=bars,
        )  # fmt: skip
    except (ValueError, OSError) as e:
        raise InputError(" ".join(str(e).split())) from e
    finally:
        bars.close()
    print_int8(result)
    return result.passed


def print_int8(result) -> None:
    p = result.policy
    source = "your videos" if result.calibration.videos else "rendered video"
    click.echo(
        f"\n{result.root}: int8 ({p.weights.value} weights, budget rel L2 {p.budget:g}), "
        f"calibrated on {source}, gated on a held-out {result.held_out.duration:g} s clip "
        f"({result.seconds:.0f} s)"
    )
    if p.weights_reason:
        click.echo(f"  int8 weights: {p.weights_reason}")
    click.echo(
        f"  {'component':<12} {'result':<6} {'int8':>5} {'float':>5} {'rel_l2':>8} {'cosine':>8} "
        f"{'feat.cos':>8}  reason"
    )
    for name, d in result.decisions.items():
        r = result.components[name]
        w = d.worst()
        feat = f"{w['feature_cosine']:.5f}" if "feature_cosine" in w else "-"
        rel = f"{w['rel_l2']:.1e}" if w else "-"
        cos = f"{w['cosine']:.5f}" if w else "-"
        click.echo(
            f"  {name:<12} {d.precision:<6} {len(r.int8_nodes):>5} {len(r.fp32_nodes):>5} "
            f"{rel:>8} {cos:>8} {feat:>8}  {d.reason}"
        )
    if result.mel is not None:
        m = result.mel
        click.echo(
            f"  end to end vs the fp32 bundle: log-mel error mean {m.mean_db:.3f} dB, p99 "
            f"{m.p99_db:.3f} dB, max {m.max_db:.3f} dB"
        )
    if any(d.precision == "int8" for d in result.decisions.values()):
        click.echo(
            "  int8 graphs run on onnxruntime's CPU kernels (DynamicQuantizeLinear, MatMulInteger):"
            " a bundle for CPUs; TensorRT does not import them (v2a-export check-trt)"
        )


__all__ = [
    "convert_and_validate",
    "convert_precision_cmd",
    "print_conversion",
    "print_int8",
    "quantize_int8",
]
