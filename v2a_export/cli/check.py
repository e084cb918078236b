"""``v2a-export check-fixture`` and ``v2a-export inspect-weights``.

- ``check-fixture PATH.json ...``: run reference fixtures, print per-array errors, exit 1 on any
  array outside its tolerance; the tokenizer fixture (``tokenizer.json``: prompt -> token ids)
  is checked against the runtime's tokenizer; a fixture that cannot be run is one ``error:``
  line and the others still run (exit 2 at the end);
- ``inspect-weights PATH ...``: say which network and variant a weight file holds and whether it
  loads strictly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from .common import EXIT_BAD_INPUT, EXIT_FAILED, InputError


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2e}"


@click.command("check-fixture")
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--failures-only", is_flag=True, help="Print only the arrays that fail.")
def check_fixture_cmd(paths: tuple[Path, ...], failures_only: bool) -> None:
    """Run reference fixtures (PATH.json beside PATH.safetensors and PATH.npz) with our networks
    and compare every output and intermediate against the fixture's tolerance."""
    from v2a_export.checkpoints import CheckpointError
    from v2a_export.fixtures import FixtureError, check_fixture

    failed, errors = [], 0
    for path in paths:
        try:
            report = _tokens_report(path) or check_fixture(path)
        except (FixtureError, CheckpointError, OSError) as e:
            errors += 1
            click.echo(f"error: {' '.join(str(e).split())}", err=True)
            continue
        except (ValueError, KeyError, RuntimeError, ImportError) as e:
            errors += 1
            msg = f"fixture {path} could not be run: {type(e).__name__}: {e}"
            click.echo(f"error: {msg.splitlines()[0]}", err=True)
            continue
        click.echo(f"{report.name} ({report.kind}, {path})")
        if report.failures or not failures_only:
            click.echo(f"  {'array':<36} {'max_abs':>9} {'bound':>9} {'rel_l2':>9} {'bound':>9}")
        for r in report.results:
            if failures_only and r.ok:
                continue
            status = "ok" if r.ok else "FAIL"
            if r.note:
                status += f" ({r.note})"
            bound = "-" if r.tol.max_abs is None else f"{r.tol.max_abs:.1e}"
            click.echo(
                f"  {r.key:<36} {_fmt(r.max_abs):>9} {bound:>9} {_fmt(r.rel_l2):>9} "
                f"{r.tol.rel_l2:>9.1e}  {status}"
            )
        checked = [r for r in report.results if r.note != "not reproduced"]
        bad = report.failures
        verdict = "PASS" if report.passed else "FAIL"
        click.echo(f"  {verdict}: {len(checked) - len(bad)}/{len(checked)} arrays within tolerance")
        if not report.passed:
            failed.append(report.name)
    if failed:
        click.echo(f"failed: {', '.join(failed)}", err=True)
    if errors:
        raise SystemExit(EXIT_BAD_INPUT)
    if failed:
        raise SystemExit(EXIT_FAILED)


def _tokens_report(path: Path):
    """The tokenizer fixture ({prompt: [77 token ids]}, no reference class) checked against
    v2a_runtime's tokenizer, one exact comparison per prompt; None for any other fixture."""
    import numpy as np
    from v2a_runtime.tokenizer import Tokenizer

    from v2a_export.fixtures import ArrayResult, FixtureReport, Tolerance

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "reference" in data or not all(
        isinstance(v, list) and all(isinstance(i, int) for i in v) for v in data.values()
    ):
        return None
    tokenizer = Tokenizer.load(context_length=max(len(v) for v in data.values()))
    got = tokenizer(list(data))  # (N, T)
    results = []
    for row, (prompt, want) in zip(got, data.items(), strict=True):
        diff = float(np.abs(row[: len(want)] - np.asarray(want)).max())
        tol = Tolerance(max_abs=0.0, rel_l2=0.0)
        key = f"ids[{prompt[:28]!r}]"
        results.append(ArrayResult(key, "output", diff, 0.0 if diff == 0 else 1.0, tol,
                                   diff == 0.0, ""))  # fmt: skip
    return FixtureReport(Path(path).stem, "tokenizer", tuple(results))


@click.command("inspect-weights")
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
def inspect_weights_cmd(paths: tuple[Path, ...], as_json: bool) -> None:
    """Say which network and variant each weight file holds and whether it loads strictly."""
    from dataclasses import asdict

    from v2a_export.checkpoints import CheckpointError, describe_mismatch, inspect_file

    not_loading = []
    for path in paths:
        try:
            info = inspect_file(path)
        except CheckpointError as e:
            raise InputError(str(e)) from e
        found = info.found
        if as_json:
            cfg = found.config
            cfg = [asdict(c) for c in cfg] if isinstance(cfg, tuple) else asdict(cfg)
            click.echo(
                json.dumps(
                    {
                        "path": str(path),
                        "network": found.component,
                        "variant": found.variant,
                        "config": cfg,
                        "tensors": found.num_tensors,
                        "parameters": found.num_params,
                        "dtypes": list(info.dtypes),
                        "ignored_keys": list(info.dropped),
                        "loads": info.loads,
                        "missing": list(info.diff.missing),
                        "unexpected": list(info.diff.unexpected),
                        "wrong_shape": [k for k, _, _ in info.diff.wrong_shape],
                    }
                )
            )
        else:
            click.echo(f"{path}: {found.component} network, variant {found.variant}")
            click.echo(f"  {_describe_config(found.component, found.config)}")
            click.echo(
                f"  {found.num_tensors} tensors, {found.num_params:,} parameters, "
                f"dtype {'/'.join(info.dtypes)}"
            )
            if info.dropped:
                shown = ", ".join(info.dropped[:5]) + (" ..." if len(info.dropped) > 5 else "")
                click.echo(f"  ignored by design: {len(info.dropped)} key(s) ({shown})")
            if info.loads:
                click.echo("  strict load: OK")
            else:
                msg = describe_mismatch(
                    info.diff, path=path, component=found.component, variant=found.variant
                )
                click.echo(f"  strict load: FAILS. {msg}")
        if not info.loads:
            not_loading.append(str(path))
    if not_loading:
        raise SystemExit(EXIT_FAILED)


def _describe_config(component: str, cfg) -> str:
    if component == "flow":
        return (
            f"{'v2' if cfg.v2 else 'v1'}, hidden {cfg.hidden_dim} ({cfg.num_heads} heads), depth "
            f"{cfg.depth} = {cfg.joint_depth} joint + {cfg.fused_depth} fused, latent "
            f"{cfg.latent_dim}, clip/sync/text {cfg.clip_dim}/{cfg.sync_dim}/{cfg.text_dim}"
        )
    if component == "vae":
        return f"n_mels {cfg.data_dim}, latent {cfg.embed_dim}, hidden {cfg.hidden_dim}"
    if component == "vocoder":
        return (
            f"n_mels {cfg.num_mels}, upsample x{cfg.hop_length} {list(cfg.upsample_rates)}, "
            f"initial channels {cfg.upsample_initial_channel}, "
            f"final bias {'yes' if cfg.use_bias_at_final else 'no'}"
        )
    if component == "synchformer":
        return (
            f"{cfg.img_size} px, patch {cfg.patch_size}, width {cfg.embed_dim}, depth {cfg.depth}"
        )
    vision, text = cfg
    return (
        f"vision {vision.image_size} px / patch {vision.patch_size} / width {vision.width} x "
        f"{vision.layers}, text width {text.width} x {text.layers}, embed {vision.embed_dim}"
    )
