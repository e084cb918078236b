"""``v2a-export check-trt``, and the TensorRT parser check that ``export``, ``convert-precision``
and ``validate`` run on every graph (:mod:`v2a_export.export.trt_compat`).

    v2a-export check-trt BUNDLE|GRAPH.onnx ...

One line per graph (``ok``, or the number of violations and one line each: node, rule, what,
fix), then a summary naming the TensorRT versions and the table's source. Exit 1 when any
graph breaks a rule, 2 on bad input. No TensorRT or GPU needed.
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import EXIT_FAILED, InputError

allow_trt_option = click.option(
    "--allow-trt-incompatible",
    is_flag=True,
    help="Warn instead of failing when a graph breaks a TensorRT parser rule "
    "(v2a-export check-trt; docs/tensorrt.md).",
)


def refused(e) -> click.ClickException:
    """Print every violation of a :class:`TensorRTIncompatible` to stderr; the one-line error
    to raise."""
    from v2a_export.export.trt_compat import describe

    for line in describe(e.violations):
        click.echo(f"  {line}", err=True)
    return click.ClickException(str(e))


def warn_incompatible(violations) -> None:
    """The warning of ``--allow-trt-incompatible``: every violation, on stderr."""
    from v2a_export.export.trt_compat import describe

    if not violations:
        return
    lines = describe(violations)
    click.echo(
        f"WARNING: {len(lines)} TensorRT parser rule violation(s): TensorRT will not build "
        f"{', '.join(violations)} (written anyway: --allow-trt-incompatible)",
        err=True,
    )
    for line in lines:
        click.echo(f"  {line}", err=True)


def check_bundle_or_fail(bundle: Path, allow: bool) -> bool:
    """``validate``'s check: print the result; False when a graph breaks a rule (and not
    ``allow``)."""
    from v2a_runtime.config import BundleError

    from v2a_export.export.trt_compat import check_bundle

    try:
        violations = {k: v for k, v in check_bundle(bundle).items() if v}
    except (BundleError, ValueError, OSError) as e:
        raise InputError(" ".join(str(e).split())) from e
    if not violations:
        click.echo("  TensorRT parser check: every graph passes")
        return True
    if allow:
        warn_incompatible(violations)
        return True
    from v2a_export.export.trt_compat import describe

    click.echo(f"  TensorRT parser check FAILED: {', '.join(violations)}")
    for line in describe(violations):
        click.echo(f"    {line}")
    return False


@click.command("check-trt")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def check_trt_cmd(paths: tuple[Path, ...]) -> None:
    """Check bundles or ONNX files against what TensorRT's ONNX parser (10.1 and 10.15)
    accepts: op types, types and attributes of every node, uint8/int8 and shape-tensor rules.
    No TensorRT or GPU needed."""
    from v2a_runtime.config import MANIFEST, BundleError

    from v2a_export.export import trt_operators
    from v2a_export.export.trt_compat import RULES, check_bundle, check_file

    graphs: dict[str, tuple] = {}
    for path in paths:
        try:
            if path.is_dir() and (path / MANIFEST).is_file():
                graphs.update({f"{path}: {k}": v for k, v in check_bundle(path).items()})
            elif path.is_file():
                graphs[str(path)] = check_file(path)
            else:
                what = "is not a bundle (no manifest.json)" if path.is_dir() else "does not exist"
                raise InputError(f"{path} {what}; give a bundle directory or an .onnx file")
        except (BundleError, ValueError, OSError) as e:
            raise InputError(" ".join(str(e).split())) from e
    for label, violations in graphs.items():
        click.echo(f"{label}: {'ok' if not violations else f'{len(violations)} violation(s)'}")
        for v in violations:
            click.echo(f"  {v}")
    bad = [label for label, v in graphs.items() if v]
    click.echo(
        f"TensorRT {trt_operators.TENSORRT} parser, {len(RULES)} rules "
        f"({trt_operators.SOURCE}): {len(graphs) - len(bad)}/{len(graphs)} graph(s) pass"
    )
    if bad:
        raise SystemExit(EXIT_FAILED)


__all__ = [
    "allow_trt_option",
    "check_bundle_or_fail",
    "check_trt_cmd",
    "refused",
    "warn_incompatible",
]
