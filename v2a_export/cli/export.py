"""``v2a-export export`` and ``v2a-export validate``.

    v2a-export export --variant NAME --out DIR [--weights DIR | --weights-file F] [--seed N]
                      [--config JSON] [--max-duration S] [--components a,b] ...
    v2a-export validate DIR [--weights DIR | --weights-file F]

Progress goes to stderr (one bar per component: export, then each parity size), the summary
table to stdout. Bad input (unknown variant, missing weights, an output that is a file or a
foreign directory, too little disk space) is one ``Error:`` line and exit status 2; a parity
gate that fails exits 1 after writing the bundle and its report. A graph TensorRT's parser
would refuse (:mod:`.trt`) stops the export before its gate, writes nothing and exits 1 (with
``--allow-trt-incompatible``: a warning); ``validate`` checks the bundle's graphs the same way.
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    EXIT_FAILED,
    Bars,
    InputError,
    fmt,
    parity_options,
    parity_plan,
    print_report,
    source_and_plan,
    weight_options,
    weight_source,
)
from .options import make_calibration, make_policy, precision_options
from .trt import allow_trt_option, check_bundle_or_fail, refused, warn_incompatible


@click.command("export")
@click.option("--variant", help="A registered variant: tiny, small_16k, ..., large_44k_v2.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="A custom model config (JSON of ModelConfig) instead of --variant.",
)
@weight_options
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the random weights (no --weights) and of the parity inputs.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle directory.")
@click.option("--max-duration", type=float, default=10.0, show_default=True)
@click.option(
    "--components",
    multiple=True,
    help="Export only these (comma-separated or repeated); the rest are kept from OUT.",
)
@click.option("--model-id", type=int, help="0..255, carried in the watermark payload.")
@click.option("--packaged-tokenizer", is_flag=True, help="Use v2a_runtime's own vocabulary copy.")
@parity_options
@precision_options()
@allow_trt_option
@click.option("-f", "--force", is_flag=True,
              help="Replace an earlier bundle or export in OUT (a full export).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def export_cmd(
    variant, config_file, weights_dir, weights_file, seed, out, max_duration, components,
    model_id, packaged_tokenizer, parity_durations, parity_batches, encoder_durations,
    e2e_duration, e2e_steps, threads, precision, io_dtype, calibration_durations,
    calibration_steps, keep_fp32, allow_trt_incompatible, force, quiet,
) -> None:  # fmt: skip
    """Export every component of a model to ONNX, gate each against PyTorch, write a bundle.
    With --precision fp16|bf16 the gated fp32 bundle is then converted in place (measured fp32
    islands, docs/precision.md) and gated again against PyTorch fp32."""
    from v2a_runtime.config import COMPONENTS

    from v2a_export.export.bundle import ExportOptions, export_bundle
    from v2a_export.export.onnx_export import ExportError
    from v2a_export.export.trt_compat import TensorRTIncompatible

    config = _config(variant, config_file)
    source = weight_source(weights_dir, weights_file, seed)
    names = tuple(c.strip() for group in components for c in group.split(",") if c.strip())
    earlier = out.is_dir() and any((out / f).exists() for f in ("manifest.json", "reports"))
    if earlier and not force and (not names or set(names) == set(COMPONENTS)):
        raise InputError(f"{out}: holds an earlier bundle or export; pass --force to replace it "
                         "(or --components to re-export some of its components)")  # fmt: skip
    policy = None
    if precision == "int8":
        raise InputError(
            "--precision int8 is gated against the fp32 graphs: export fp32, then run "
            "v2a-export convert-precision BUNDLE --precision int8 --out DIR"
        )
    if precision != "fp32":
        policy = make_policy(precision, io_dtype, keep_fp32)
        calibration = make_calibration(calibration_durations, calibration_steps, seed)
        if names and set(names) != set(COMPONENTS):
            raise InputError(
                f"--precision {precision} calibrates on the whole pipeline: export all "
                "components (or convert a finished bundle with v2a-export convert-precision)"
            )
    options = ExportOptions(
        components=names or COMPONENTS,
        max_duration=max_duration,
        plan=parity_plan(
            parity_durations, parity_batches, encoder_durations, e2e_duration, e2e_steps, seed
        ),  # fmt: skip
        packaged_tokenizer=packaged_tokenizer,
        model_id=model_id,
        threads=threads,
        allow_trt_incompatible=allow_trt_incompatible,
    )
    bars = Bars(quiet)
    try:
        result = export_bundle(config, source, out, options, callback=bars)
    except TensorRTIncompatible as e:
        bars.close()
        raise refused(e) from e
    except ExportError as e:
        raise click.ClickException(str(e).splitlines()[0]) from e
    except (ValueError, OSError) as e:
        raise InputError(" ".join(str(e).split())) from e
    finally:
        bars.close()
    _print_summary(result)
    warn_incompatible(result.trt_violations)
    if not result.report.passed:
        click.echo("parity gate FAILED (see reports/parity.json)", err=True)
        raise SystemExit(EXIT_FAILED)
    if policy is not None:
        from .precision import convert_and_validate

        passed = convert_and_validate(
            out, out, policy, calibration, source=source, plan=options.plan, threads=threads,
            validate=True, quiet=quiet, allow_trt_incompatible=allow_trt_incompatible,
        )  # fmt: skip
        if not passed:
            click.echo(f"{precision} parity gate FAILED (see reports/parity.json)", err=True)
            raise SystemExit(EXIT_FAILED)


@click.command("validate")
@click.argument("bundle", type=click.Path(path_type=Path))
@weight_options
@parity_options
@click.option("--components", multiple=True, help="Validate only these (comma-separated).")
@click.option("--no-write", is_flag=True, help="Do not update reports/parity.json and manifest.")
@allow_trt_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def validate_cmd(
    bundle, weights_dir, weights_file, parity_durations, parity_batches, encoder_durations,
    e2e_duration, e2e_steps, threads, components, no_write, allow_trt_incompatible, quiet,
) -> None:  # fmt: skip
    """Re-run the parity gate of BUNDLE against the PyTorch networks (random-weight bundles are
    rebuilt from their recorded seed; otherwise pass the weights), and check its graphs against
    TensorRT's parser rules."""
    from v2a_export.export.bundle import validate_bundle

    source, plan = source_and_plan(weights_dir, weights_file, parity_durations, parity_batches,
                                   encoder_durations, e2e_duration, e2e_steps)  # fmt: skip
    names = tuple(c.strip() for group in components for c in group.split(",") if c.strip())
    if _precisions(bundle) & {"int8"}:
        raise InputError(
            f"{bundle} has int8 graphs: they are gated when made, against the fp32 graphs on "
            "held-out real inputs (v2a-export convert-precision --precision int8; "
            "reports/precision.json)"
        )
    if _precisions(bundle) & {"fp16", "bf16"}:  # fp16/bf16 graphs: precision-aware gate
        from v2a_export.export.precision.bundle import validate_precision_bundle

        validate_bundle = validate_precision_bundle  # noqa: F811
    bars = Bars(quiet)
    try:
        report = validate_bundle(
            bundle,
            source,
            plan=plan,
            threads=threads,
            write=not no_write,
            callback=bars,
            **({"components": names} if names else {}),
        )
    except (ValueError, OSError) as e:
        raise InputError(" ".join(str(e).split())) from e
    finally:
        bars.close()
    print_report(report)
    parses = check_bundle_or_fail(bundle, allow_trt_incompatible)
    if not report.passed or not parses:
        raise SystemExit(EXIT_FAILED)


def _precisions(bundle: Path) -> set[str]:
    """The bundle's component precisions (unreadable: empty, left to the validator)."""
    from v2a_runtime.bundle import load_bundle
    from v2a_runtime.config import BundleError

    try:
        manifest = load_bundle(bundle, verify=False).manifest
    except BundleError:
        return set()
    return {c.precision for c in manifest.components.values()}


def _config(variant: str | None, config_file: Path | None):
    from v2a_export.models.configs import ModelConfig, get_config

    if (variant is None) == (config_file is None):
        raise InputError("give exactly one of --variant NAME or --config JSON")
    try:
        return get_config(variant) if variant is not None else ModelConfig.from_json(config_file)
    except ValueError as e:
        raise InputError(" ".join(str(e).split())) from e


def _print_summary(result) -> None:
    click.echo(f"\n{result.root}  ({result.weights} weights, {result.seconds:.0f} s)")
    click.echo(
        f"  {'component':<12} {'file MB':>8} {'export s':>9} {'nodes':>6} {'sizes':>5} "
        f"{'rel_l2':>8} {'max_abs':>8}  parity"
    )
    for name, r in result.exports.items():
        p = result.report.components[name]
        click.echo(
            f"  {name:<12} {r.bytes / 1e6:>8.2f} {r.seconds:>9.1f} {r.nodes:>6} "
            f"{len(p.cases):>5} {fmt(p.worst('rel_l2')):>8} {fmt(p.worst('max_abs')):>8}  "
            f"{'pass' if p.passed else 'FAIL'}"
        )
        for line in p.failures[:3]:
            click.echo(f"      {line}")
    e = result.report.end_to_end
    if e is not None:
        click.echo(
            f"  end to end: {e.duration:g} s, {e.steps} Euler steps, cfg {e.cfg:g}: waveform "
            f"rel_l2 {fmt(e.metrics.rel_l2)} (<= {e.threshold.rel_l2:.0e}) "
            f"{'pass' if e.passed else 'FAIL'}"
        )
    for note in result.notes:
        click.echo(f"  note: {note}")
    if result.weights == "random":
        click.echo(
            "WARNING: no --weights: RANDOM weights (the manifest says so); this bundle tests the "
            "export and the pipeline, its audio is noise",
            err=True,
        )
