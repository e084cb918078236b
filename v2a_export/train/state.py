"""Resumable step loops: per-step randomness, EMA, atomic checkpoints.

Every step draws its randomness from generators seeded with (recipe seed, stage, step), never
from a running generator, and the learning rate is a function of the step. A checkpoint
(modules, optimizer moments, EMA, the next step) therefore fully determines the rest of a
stage: resuming gives the same bits as running through (same torch build, one thread).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from v2a_runtime.media.files import atomic_output

from .recipe import STAGES

_STREAM = 0x7A1


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


def step_seed(seed: int, stage: str, step: int) -> int:
    """A 63-bit seed for (recipe seed, stage, step)."""
    ss = np.random.SeedSequence([seed, _STREAM, STAGES.index(stage), step])
    return int(ss.generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def step_generators(seed: int, stage: str, step: int) -> tuple[np.random.Generator,
                                                                torch.Generator]:
    s = step_seed(seed, stage, step)
    return np.random.default_rng(s), torch.Generator().manual_seed(s)


def warmup_cosine(step: int, total: int, lr: float, warmup: int, decay_from: float) -> float:
    """Linear warm-up, constant, then cosine to lr/10 from ``decay_from * total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    start = int(decay_from * total)
    if step < start or total <= start:
        return lr
    p = (step - start) / max(total - start, 1)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, max_norm: float,
                   *, groups: Sequence[Sequence[torch.Tensor]] = ()) -> None:
    """One update: clear the gradients, back-propagate ``loss``, clip ``params``' gradient norm
    to ``max_norm`` — or, with ``groups``, each group's norm on its own (networks trained by one
    loss sum, so one network's large early gradients do not stall the others) — step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    for group in groups or (params,):
        torch.nn.utils.clip_grad_norm_(group, max_norm)
    opt.step()


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


class EMA:
    """Exponential moving average of a module's floating parameters and buffers."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()
                       if v.is_floating_point()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v, 1.0 - self.decay)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}

    def copy_to(self, module: nn.Module) -> nn.Module:
        module.load_state_dict({**module.state_dict(), **self.shadow})
        return module


def save_atomic(obj: Any, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


StepFn = Callable[[int], Mapping[str, float]]
LogFn = Callable[[str, int, int, Mapping[str, float]], None]


def run_loop(
    stage: str,
    checkpoint: Path,
    total: int,
    objects: Mapping[str, Stateful],
    step_fn: StepFn,
    *,
    checkpoint_seconds: float,
    on_step: LogFn | None = None,
) -> int:
    """Run ``step_fn(step)`` for the steps not yet done, checkpointing ``objects`` (and the
    next step) at most every ``checkpoint_seconds`` and after the last step. Returns the
    number of steps run now. ``on_step(stage, step, total, logs)`` runs after each step's
    checkpoint (an exception there leaves a resumable checkpoint behind)."""
    start = 0
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False)
        for name, obj in objects.items():
            obj.load_state_dict(saved[name])
        start = int(saved["step"])
    last = time.monotonic()
    for step in range(start, total):
        logs = step_fn(step)
        now = time.monotonic()
        if step + 1 == total or now - last >= checkpoint_seconds:
            save_atomic({"step": step + 1, **{k: o.state_dict() for k, o in objects.items()}},
                        checkpoint)
            last = now
        if on_step is not None:
            on_step(stage, step, total, logs)
    return total - start
