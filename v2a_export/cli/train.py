"""``python -m v2a_export.train``: train the default ``tiny`` model (see
:mod:`v2a_export.train.train`).

    python -m v2a_export.train --out runs/tiny [--resume] [--seed N] [--stages a,b]

Prints one progress line per stage every ``--every`` steps (rolling means of the losses, CPU
and wall minutes). Bad input is one ``Error:`` line and exit status 2.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from .common import InputError


class _Progress:
    def __init__(self, every: int):
        self.every, self.sums, self.count = every, {}, 0
        self.t0, self.c0 = time.monotonic(), time.process_time()

    def __call__(self, stage: str, step: int, total: int, logs: dict) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        if (step + 1) % self.every and step + 1 != total:
            return
        means = " ".join(f"{k} {v / self.count:.4f}" for k, v in self.sums.items())
        wall = (time.monotonic() - self.t0) / 60
        cpu = (time.process_time() - self.c0) / 60
        click.echo(f"{stage:<9} {step + 1:>6}/{total:<6} {means}  "
                   f"[{cpu:.1f} cpu-min, {wall:.1f} min]")
        sys.stdout.flush()
        self.sums, self.count = {}, 0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Run directory (caches, checkpoints, weights/).")
@click.option("--resume", is_flag=True, help="Continue the run in --out.")
@click.option("--seed", type=int, default=None, help="Recipe seed (default 0).")
@click.option("--stages", default=None, help="Comma-separated subset of the stages.")
@click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Recipe JSON (default: the shipped model's recipe).")
@click.option("--threads", type=int, default=1, show_default=True,
              help="torch CPU threads (1 is fastest on a busy machine).")
@click.option("--every", type=int, default=50, show_default=True, help="Steps per progress line.")
def main(out, resume, seed, stages, recipe_file, threads, every) -> None:
    """Train the default tiny model on the procedural world (resumable)."""
    import torch

    from v2a_export.train.recipe import TrainRecipe
    from v2a_export.train.train import RecipeMismatch, train

    torch.set_num_threads(threads)
    try:
        recipe = (TrainRecipe.from_dict(json.loads(recipe_file.read_text()))
                  if recipe_file else TrainRecipe())
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"cannot read recipe {recipe_file}: {e}") from e
    if seed is not None:
        recipe = replace(recipe, seed=seed)
    only = [s.strip() for s in stages.split(",") if s.strip()] if stages else None
    command = "python -m v2a_export.train " + shlex.join(sys.argv[1:])
    try:
        weights = train(out, recipe, resume=resume, stages=only, command=command,
                        on_step=_Progress(every))
    except (RecipeMismatch, ValueError) as e:
        raise InputError(str(e)) from e
    click.echo(f"weights: {weights}" if weights else "stages done; run the rest to get weights")


if __name__ == "__main__":
    main()
