"""Train the default ``tiny`` model on the procedural world, stage by stage, resumably.

    from v2a_export.train.train import train
    train("runs/tiny", TrainRecipe())          # or: python -m v2a_export.train --out runs/tiny

``OUT/`` holds ``recipe.json`` (written first; a resumed run must use the same recipe), the
data and feature caches, one checkpoint per stage (``<stage>.pt``), ``times.json`` (CPU and
wall seconds per stage) and, at the end, ``weights/``: one safetensors file per network in the
official key layout (``clip``, ``synchformer``, ``flow``, ``vae``, ``vocoder``; raw weight-norm
parameters stored as float16, buffers as float32) plus ``training.json`` (recipe, command,
times, versions).
``v2a_export.checkpoints.load_networks`` loads them strictly.

Stages run in :data:`~v2a_export.train.recipe.STAGES` order; a stage whose checkpoint
says it is complete is skipped, an interrupted one resumes from its last checkpoint. ``stages``
restricts a call to some stages (e.g. the vocoder in a second process: it depends only on
``data``). The library is silent: progress goes to ``on_step(stage, step, total, logs)``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from v2a_export.models.configs import get_config

from .recipe import STAGES, TrainRecipe
from .stages import data as stages_data
from .stages import encoders as stages_encoders
from .stages import features as stages_features
from .stages import flow as stages_flow
from .stages import vae as stages_vae
from .stages import vocoder as stages_vocoder

_LOGGER = logging.getLogger(__name__)


class RecipeMismatch(ValueError):
    """``OUT`` was started with a different recipe."""


def _check_recipe(out: Path, recipe: TrainRecipe, resume: bool) -> None:
    path = out / "recipe.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if not resume:
            raise RecipeMismatch(f"{out} already holds a training run; pass resume to continue "
                                 "it or choose an empty directory")
        if saved != json.loads(json.dumps(recipe.to_dict())):
            raise RecipeMismatch(f"{out} was started with a different recipe ({path}); "
                                 "resume it with the same recipe or use a new directory")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")


def _done(checkpoint: Path, total: int) -> bool:
    return checkpoint.exists() and torch.load(checkpoint, weights_only=False)["step"] >= total


class _Times:
    def __init__(self, out: Path):
        self.path = out / "times.json"
        self.data: dict = {}

    def add(self, stage: str, cpu: float, wall: float) -> None:
        # re-read: a second process may be running another stage in the same directory
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}
        old = self.data.get(stage, {"cpu_s": 0.0, "wall_s": 0.0})
        self.data[stage] = {"cpu_s": round(old["cpu_s"] + cpu, 1),
                            "wall_s": round(old["wall_s"] + wall, 1)}
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")


def train(
    out: str | Path,
    recipe: TrainRecipe | None = None,
    *,
    resume: bool = False,
    stages: Sequence[str] | None = None,
    command: str | None = None,
    on_step: Callable[[str, int, int, dict], None] | None = None,
) -> Path | None:
    """Run (or resume) the recipe in ``out``; returns ``out/weights`` once every stage is done."""
    recipe = recipe or TrainRecipe()
    out = Path(out)
    unknown = sorted(set(stages or ()) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stages {unknown}; known: {', '.join(STAGES)}")
    _check_recipe(out, recipe, resume)
    config = get_config(recipe.variant)
    times = _Times(out)
    ck = recipe.checkpoint_seconds
    d = recipe.data.duration
    for stage in stages or STAGES:
        t0, c0 = time.monotonic(), time.process_time()
        if stage == "data":
            if not (stages_data.data_dir(out) / "mel_stats.json").exists():
                stages_data.run_data(out, recipe.data, config, on_step)
        elif stage == "vae":
            if not _done(stages_vae.checkpoint_path(out), recipe.vae.steps):
                stages_vae.run_vae(out, recipe.vae, config, recipe.seed,
                                   checkpoint_seconds=ck, on_step=on_step)
        elif stage == "vocoder":
            if not _done(stages_vocoder.checkpoint_path(out), recipe.vocoder.steps):
                stages_vocoder.run_vocoder(out, recipe.vocoder, config, recipe.seed,
                                           checkpoint_seconds=ck, on_step=on_step)
        elif stage == "encoders":
            if not _done(stages_encoders.checkpoint_path(out), recipe.encoders.steps):
                stages_encoders.run_encoders(out, recipe.encoders, config, recipe.seed, d,
                                             checkpoint_seconds=ck, on_step=on_step)
        elif stage == "features":
            if not (stages_features.features_dir(out) / "latent_stats.json").exists():
                clip, sync = stages_encoders.load_trained_encoders(out, config)
                vae = stages_vae.load_trained_vae(out, config)
                stages_features.run_features(out, config, recipe.seed, d, clip, sync, vae,
                                             on_step)
        elif stage == "flow":
            if not _done(stages_flow.checkpoint_path(out), recipe.flow.steps):
                clip, _ = stages_encoders.load_trained_encoders(out, config)
                stages_flow.run_flow(out, recipe.flow, config, recipe.seed, d, clip,
                                     checkpoint_seconds=ck, on_step=on_step)
        times.add(stage, time.process_time() - c0, time.monotonic() - t0)
    if all(_complete(out, recipe, s) for s in STAGES):
        return export_weights(out, recipe, command=command)
    return None


def _complete(out: Path, recipe: TrainRecipe, stage: str) -> bool:
    if stage == "data":
        return (stages_data.data_dir(out) / "mel_stats.json").exists()
    if stage == "features":
        return (stages_features.features_dir(out) / "latent_stats.json").exists()
    module = {"vae": stages_vae, "vocoder": stages_vocoder, "encoders": stages_encoders,
              "flow": stages_flow}[stage]
    return _done(module.checkpoint_path(out), getattr(recipe, stage).steps)


def trained_modules(out: Path, recipe: TrainRecipe) -> dict[str, torch.nn.Module]:
    """The five trained networks (unfolded: raw weight-norm parameters), by file name."""
    config = get_config(recipe.variant)
    clip, sync = stages_encoders.load_trained_encoders(out, config)
    return {
        "clip": clip,
        "synchformer": sync,
        "flow": stages_flow.load_trained_flow(out, config),
        "vae": stages_vae.load_trained_vae(out, config),
        "vocoder": stages_vocoder.load_trained_vocoder(out, config),
    }


def export_weights(out: Path, recipe: TrainRecipe, *, command: str | None = None) -> Path:
    """Write ``out/weights/<network>.safetensors`` (float16 storage) and ``training.json``."""
    dest = Path(out) / "weights"
    dest.mkdir(exist_ok=True)
    for name, module in trained_modules(out, recipe).items():
        params = {k for k, _ in module.named_parameters()}
        sd = {k: (v.detach().half() if k in params else v.detach()).contiguous()
              for k, v in module.state_dict().items()}
        # one metadata key: safetensors writes the metadata map in hash order, so two keys
        # would make byte-identical weights differ between runs
        save_file(sd, str(dest / f"{name}.safetensors"),
                  metadata={"v2a_network": f"{recipe.variant}/{name}"})
    times = json.loads((Path(out) / "times.json").read_text())
    info = {
        "variant": recipe.variant,
        "command": command,
        "recipe": recipe.to_dict(),
        "times": times,
        "cpu_minutes": round(sum(t["cpu_s"] for t in times.values()) / 60, 1),
        "torch": torch.__version__,
        "storage": "parameters float16, buffers float32 (networks load as float32)",
    }
    (dest / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    _LOGGER.info("weights written to %s", dest)
    return dest
