"""Classifier-free guidance and the batches the pipeline feeds each graph (DESIGN.md §3, 2–4).

One text call encodes [prompt; negative prompt] (:data:`TEXT_ROWS`). The conditioner runs once
per window on one video and returns two rows per batched condition, [cond; uncond]. With K
tracks, the denoiser runs on 2K rows, [cond × K; uncond × K] (:func:`condition_rows`), and the
guided velocity is

    v = w·v_cond + (1 − w)·v_uncond        (:func:`combine`; w = 1 is v_cond alone: K rows)

Which conditions are batched (one row per batch item) and which are shared (RoPE tables) is
read from the manifest's symbolic shapes (:meth:`ComponentSpec.batched_inputs`), and the batch
each graph sees is :func:`batch`, which the engine profiles read too, so an engine built for
the pipeline's batches stays built for them.

The sampling loops that use these (:mod:`v2a_runtime.backends`) are one per backend: the host
loop for any session, the device-resident one of the CUDA backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

TEXT_ROWS = 2  # [prompt; negative prompt]


def is_guided(cfg: float) -> bool:
    """w = 1 is the conditional branch alone: the unconditional half is not computed."""
    return cfg != 1.0


def condition_rows(tracks: int, guided: bool) -> np.ndarray:
    """(2K,) or (K,) int: the conditioner row (0 cond, 1 uncond) each denoiser row reads."""
    return np.array([0] * tracks + [1] * tracks if guided else [0] * tracks)


def batch(component: str, tracks: int, *, guided: bool = True) -> int:
    """The batch B graph ``component`` sees when the pipeline makes ``tracks`` soundtracks
    (the video encoders have no batch axis: they see one window's frames or segments)."""
    if component == "text":
        return TEXT_ROWS
    if component == "conditioner":
        return 1  # one video; the graph itself makes the [cond; uncond] rows
    if component == "denoiser":
        return len(condition_rows(tracks, guided))
    return tracks  # vae_decoder, vocoder (and the unbatched encoders)


def batch_conditions(
    conditions: Mapping[str, np.ndarray], batched: tuple[str, ...], rows: np.ndarray
) -> dict[str, np.ndarray]:
    """The denoiser's condition feeds: batched conditions take ``rows`` (2 -> 2K rows), shared
    ones (no batch axis) pass as they are."""
    return {n: (v[rows] if n in batched else v) for n, v in conditions.items()}


def stack_conditions(
    conditions: Sequence[Mapping[str, np.ndarray]], batched: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """N conditioner outputs ([cond; uncond], 2 rows each: N videos or prompts of one window
    length) -> the denoiser's condition feeds for N rows of x, [cond₁ … cond_N; uncond₁ …
    uncond_N]; shared conditions (not in ``batched``) are the first's (they depend only on the
    window's length). The sampler tuner's batch of calibration conditions."""
    return {
        name: np.concatenate([c[name][b : b + 1] for b in (0, 1) for c in conditions])
        if name in batched
        else first
        for name, first in conditions[0].items()
    }


def combine(v: np.ndarray, cfg: float) -> np.ndarray:
    """(2K, L, C) velocities of [cond × K; uncond × K] -> the guided (K, L, C)."""
    k = v.shape[0] // 2
    return cfg * v[:k] + (1.0 - cfg) * v[k:]  # (K, L, C)


__all__ = [
    "TEXT_ROWS",
    "batch",
    "batch_conditions",
    "combine",
    "condition_rows",
    "is_guided",
    "stack_conditions",
]
