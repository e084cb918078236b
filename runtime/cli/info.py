"""``v2a info``: what a bundle holds, after checking every file's sha256.

    v2a info [BUNDLE] [--json]
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..bundle import load_bundle
from ..pipeline import DEFAULT_BUNDLE
from .common import one_line_errors


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def info(bundle: Path | None, as_json: bool) -> None:
    """Describe BUNDLE (default: the shipped bundle) after checking every file's sha256."""
    with one_line_errors():
        b = load_bundle(DEFAULT_BUNDLE if bundle is None else bundle)
    m = b.manifest
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
        return
    s, a, v, q = m.sampler, m.audio, m.video, m.sequence
    click.echo(f"bundle      {b.root}  (schema {m.schema_version}, all files verified)")
    click.echo(
        f"model       {m.model.family} {m.model.variant}, weights {m.model.weights}"
        + (f" ({m.model.weights_note})" if m.model.weights_note else "")
    )
    click.echo(
        f"audio       {a.sample_rate} Hz, {a.n_mels} mels, hop {a.hop_length}, "
        f"latent {a.latent_channels} ch at {a.latent_rate:g}/s"
    )
    click.echo(
        f"video       clip {v.clip_fps:g} fps {v.clip_size} px, "
        f"sync {v.sync_fps:g} fps {v.sync_size} px"
    )
    click.echo(
        f"durations   {m.rates.min_duration:g}-{q.max_duration:g} s per window, "
        f"trained {q.trained_duration:g} s"
    )
    if s.name is None:
        click.echo(f"sampler     {s.solver}, {s.steps} steps, {s.grid} grid, cfg {s.cfg:g}")
    else:
        click.echo(f"sampler     {s.name} (named, below), cfg {s.cfg:g}")
    for name, n in m.samplers.items():
        c = n.calibration
        gate = "" if c is None else (
            f", held-out error {c.held_out_error / c.held_out_euler25_error:.2f}x 25-step "
            f"euler ({c.held_out_conditions} conditions), tuned on {c.conditions}: {c.source}"
        )  # fmt: skip
        mark = "*" if name == s.name else " "
        times = " ".join(f"{t:.3f}" for t in n.times)
        click.echo(f"  {mark} {name:<10} {n.solver} {n.evaluations} evaluations{gate}")
        click.echo(f"    {'':<10} t = {times}")
    for name, c in m.components.items():
        click.echo(
            f"  {name:<12} {c.file:<24} {c.precision:<5} opset {c.opset or '-':<3} "
            f"{c.bytes:>12,d} B  sha256 {c.sha256[:12]}"
        )
    if m.parity is not None:
        click.echo(f"parity      {m.parity.get('summary', m.parity)}")
