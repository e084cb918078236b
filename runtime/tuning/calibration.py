"""Calibration sets: N conditions and their noise, encoded once, batched for the denoiser.

A :class:`ConditionSet` is what the tuner integrates: the denoiser's condition feeds for N
conditions in one batch ([cond × N; uncond × N], :func:`v2a_runtime.guidance.stack_conditions`)
and N seeded noise latents x₀ (N, L, C). Every condition covers the same ``duration`` (one window),
so they share one latent length L. Two ways to make one:

- :func:`encode_items`: videos (paths, :class:`~v2a_runtime.media.Frames` or pixels) with a
  prompt and a negative prompt each, through the bundle's own encoders and conditioner, exactly
  as ``v2a generate`` conditions a window. The default model's calibration uses held-out scenes
  of the procedural world (:func:`world_items`); a user passes their own videos and prompts.
- :func:`random_features`: seeded random encoder features (unit-norm CLIP and text vectors,
  Gaussian sync features) through the conditioner. For random-weight bundles, whose encoders
  see nothing in any video; it needs only the conditioner.

A set that cannot be used raises :class:`CalibrationError` with one line that says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import world
from ..backends import Session
from ..config import VideoSpec
from ..frames import VideoArray
from ..guidance import is_guided, stack_conditions
from ..media import Frames
from ..pipeline import Pipeline
from ..sequence import TEXT_TOKENS, Rates

MIN_CONDITIONS = 2
# Held-out world scene numbers (offsets from world.HELD_OUT_SEED_BASE): calibration 1 005 000 …,
# gate 1 006 000 …; the benchmarks' scenes start at 1 000 000 (quality, samplers).
WORLD_CALIBRATION_START = 5000
WORLD_GATE_START = 6000
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")


class CalibrationError(ValueError):
    """The calibration set cannot be used; the message says why and what would work."""


@dataclass(frozen=True)
class Item:
    """One calibration condition: a video and its prompts."""

    video: str | Path | Frames | VideoArray
    prompt: str = ""
    negative_prompt: str = ""


@dataclass(frozen=True)
class ConditionSet:
    """N conditions with their noise, ready for
    :func:`v2a_runtime.backends.host.guided_velocity` (:meth:`feeds_for`)."""

    feeds: dict[str, np.ndarray]  # the denoiser's condition inputs, batch 2N = [cond; uncond]
    x0: np.ndarray  # (N, L, C) float32 noise
    source: str  # what the conditions are, for the calibration record
    duration: float  # seconds per condition
    seed: int  # of the noise
    batched: tuple[str, ...]  # the feeds with a batch axis (the others are shared)

    def feeds_for(self, cfg: float) -> dict[str, np.ndarray]:
        """The feeds for guidance weight ``cfg``: all 2N rows, or the N cond rows at w = 1."""
        if is_guided(cfg):
            return self.feeds
        return {n: (v[: self.size] if n in self.batched else v) for n, v in self.feeds.items()}

    @property
    def size(self) -> int:
        return self.x0.shape[0]


def check_size(n: int, what: str) -> None:
    if n < MIN_CONDITIONS:
        raise CalibrationError(
            f"{what}: {n} condition(s) is too few to tune on; give at least {MIN_CONDITIONS} "
            "(a grid fitted to one condition does not carry over)"
        )


def noise(n: int, latent: int, channels: int, seed: int) -> np.ndarray:
    """(n, L, C) float32 x₀ from ``default_rng(seed)``, one draw per condition in order."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [rng.standard_normal((latent, channels), dtype=np.float32) for _ in range(n)]
    )  # (N, L, C)


def encode_items(
    pipe: Pipeline,
    items: Sequence[Item],
    *,
    duration: float,
    seed: int,
    source: str,
    callback: Callable[[int, int], None] | None = None,
) -> ConditionSet:
    """Encode ``items`` (their first ``duration`` seconds) with the bundle's encoders and
    conditioner; ``callback(done, total)`` after each item."""
    check_size(len(items), source)
    m = pipe.bundle.manifest
    if not duration >= m.rates.min_duration:
        raise CalibrationError(
            f"{source}: duration {duration:g} s is shorter than one sync segment "
            f"({m.rates.min_duration:.2f} s)"
        )
    conditions = []
    for k, item in enumerate(items):
        try:
            conds = pipe.conditions(
                item.video, item.prompt, item.negative_prompt, duration=duration
            )
        except ValueError as e:  # MediaError, a video too short, ...
            raise CalibrationError(f"{source}: condition {k + 1}: {e}") from e
        conditions.append(conds)
        if callback is not None:
            callback(k + 1, len(items))
    latent = m.rates.lengths(duration).latent
    batched = m.components["denoiser"].batched_inputs()
    return ConditionSet(
        feeds=stack_conditions(conditions, batched),
        x0=noise(len(items), latent, m.audio.latent_channels, seed),
        source=source,
        duration=duration,
        seed=seed,
        batched=batched,
    )


def random_features(pipe: Pipeline, n: int, *, duration: float, seed: int) -> ConditionSet:
    """:func:`random_conditions` for the bundle of ``pipe`` at ``duration`` seconds."""
    m = pipe.bundle.manifest
    return random_conditions(
        pipe.sessions["conditioner"],
        m.rates,
        duration,
        n,
        channels=m.audio.latent_channels,
        batched=m.components["denoiser"].batched_inputs(),
        text_tokens=m.tokenizer.context_length,
        seed=seed,
    )


def random_conditions(
    conditioner: Session,
    rates: Rates,
    duration: float,
    n: int,
    *,
    channels: int,
    batched: tuple[str, ...],
    text_tokens: int = TEXT_TOKENS,
    seed: int,
) -> ConditionSet:
    """``n`` conditions of ``duration`` seconds from seeded random encoder features through
    ``conditioner`` (only that graph is needed; ``rates`` give the lengths and the sync
    alignment); the noise comes from ``seed`` too (after the features). ``batched``: the
    denoiser's inputs with a batch axis (:func:`batched_inputs` of its session)."""
    lengths = rates.lengths(duration)
    source = f"{n} random feature sets (seed {seed})"
    check_size(n, source)
    widths = {t.name: t.shape[-1] for t in conditioner.inputs}
    rng = np.random.default_rng(seed)

    def unit(shape):  # CLIP and text features are L2-normalised (spec/mmaudio.md §1.3, §1.5)
        f = rng.standard_normal(shape, dtype=np.float32)
        return f / np.linalg.norm(f, axis=-1, keepdims=True)

    conditions = []
    for _ in range(n):
        feats = {
            "clip_features": unit((1, lengths.clip_frames, widths["clip_features"])),
            "sync_features": rng.standard_normal(
                (1, lengths.sync_tokens, widths["sync_features"]), dtype=np.float32
            ),
            "text_features": unit((1, text_tokens, widths["text_features"])),
            "negative_text_features": unit((1, text_tokens, widths["negative_text_features"])),
            "sync_index": rates.sync_index(lengths.sync_tokens, lengths.latent),
        }
        conditions.append(conditioner.run(feats))
    return ConditionSet(
        feeds=stack_conditions(conditions, batched),
        x0=noise(n, lengths.latent, channels, int(rng.integers(2**63))),
        source=source,
        duration=lengths.duration,
        seed=seed,
        batched=batched,
    )


def batched_inputs(denoiser: Session) -> tuple[str, ...]:
    """The inputs of a denoiser session with a batch axis ("B" first), as
    :meth:`~v2a_runtime.config.ComponentSpec.batched_inputs` reads them from a manifest."""
    return tuple(t.name for t in denoiser.inputs if t.shape[:1] == ("B",))


def world_items(video: VideoSpec, n: int, start: int, duration: float) -> list[Item]:
    """``n`` held-out scenes of the procedural world (:mod:`v2a_runtime.world`) from scene
    number ``start``, rendered at the bundle's frame rates and sizes (as the trainer renders
    them), prompted with their captions."""
    items = []
    for seed in world.held_out_seeds(n, start):
        scene = world.make_scene(seed, duration)
        frames = Frames(
            clip=world.render_frames(
                scene, world.decoded_times(duration, video.clip_fps), size=video.clip_size
            ),
            sync=world.render_frames(
                scene, world.decoded_times(duration, video.sync_fps), size=video.sync_size
            ),
            start=0.0,
            duration=duration,
        )
        items.append(Item(frames, scene.caption, ""))
    return items


def world_source(start: int, n: int) -> str:
    """The calibration record's name of :func:`world_items`' scenes."""
    first = world.HELD_OUT_SEED_BASE + start
    return f"world held-out scenes {first}..{first + n - 1}"


def video_items(directory: Path, prompts: Path | None) -> list[Item]:
    """Every video in ``directory`` (sorted by name) with its prompts from ``prompts``."""
    if not directory.is_dir():
        raise CalibrationError(f"--videos {directory} is not a directory")
    videos = sorted(p for p in directory.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise CalibrationError(
            f"--videos {directory} has no videos ({', '.join(VIDEO_SUFFIXES)})"
        )
    table = {} if prompts is None else read_prompts(prompts, {p.name for p in videos})
    return [Item(p, *table.get(p.name, ("", ""))) for p in videos]


def read_prompts(path: Path, names: set[str]) -> dict[str, tuple[str, str]]:
    """``NAME<TAB>prompt[<TAB>negative]`` lines -> {NAME: (prompt, negative)}; every NAME one
    of ``names``."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"--prompts {path}: cannot read it: {e}") from e
    table = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) not in (2, 3) or parts[0] not in names:
            raise CalibrationError(
                f"--prompts {path} line {n}: expected NAME<TAB>prompt[<TAB>negative] with NAME "
                "one of the videos' file names"
            )
        table[parts[0]] = (parts[1], parts[2] if len(parts) == 3 else "")
    return table
