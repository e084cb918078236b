"""Training data of the default ``tiny`` model, drawn from the procedural world.

A training set is a list of world seeds (all ``< HELD_OUT_SEED_BASE``, so evaluation never sees
one). Each clip has two soundtracks: its own, and the same impacts over a second ambience
(``alt_ambience``, drawn per seed), which the flow stage uses to teach the prompt to override
the picture's ambience. Frames are rendered on demand (cheaper than storing them): both
streams at the instants the runtime's decoder shows (:func:`world.decoded_times`), at the
model's sizes. Audio is stored as log-mels (float16, a few hundred MB for thousands of clips).

Everything here is deterministic in the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from v2a_runtime import world
from v2a_runtime.world.spec import AMBIENCE_NAMES, HELD_OUT_SEED_BASE, MATERIAL_NAMES

from v2a_export.models.configs import ModelConfig

_ALT_STREAM = 0xA17
N_MAT, N_AMB = len(MATERIAL_NAMES), len(AMBIENCE_NAMES)


@dataclass(frozen=True)
class ClipRecord:
    """What the trainer needs to know about one training clip (JSON-ready via ``to_dict``)."""

    seed: int
    ambience: str  # the picture's (and the first soundtrack's) ambience
    alt_ambience: str  # the second soundtrack's ambience (always different)
    materials: tuple[str, ...]  # sounding materials in order of first event
    event_times: tuple[float, ...]  # s
    event_materials: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "ambience": self.ambience,
            "alt_ambience": self.alt_ambience,
            "materials": list(self.materials),
            "event_times": list(self.event_times),
            "event_materials": list(self.event_materials),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ClipRecord:
        return cls(
            int(d["seed"]), d["ambience"], d["alt_ambience"], tuple(d["materials"]),
            tuple(float(t) for t in d["event_times"]), tuple(d["event_materials"]),
        )


def training_seeds(count: int, first: int = 0) -> range:
    """``count`` training seeds from ``first``; ValueError if any would be held out."""
    if count < 1 or first < 0 or first + count > HELD_OUT_SEED_BASE:
        raise ValueError(
            f"training seeds [{first}, {first + count}) must lie in [0, {HELD_OUT_SEED_BASE})"
        )
    return range(first, first + count)


def alt_ambience(seed: int, ambience: str) -> str:
    """The second soundtrack's ambience of ``seed``: uniform over the other three."""
    others = [a for a in AMBIENCE_NAMES if a != ambience]
    rng = np.random.default_rng([seed, _ALT_STREAM])
    return others[int(rng.integers(len(others)))]


def clip_record(seed: int, duration: float) -> tuple[ClipRecord, world.Scene]:
    scene = world.make_scene(seed, duration)
    rec = ClipRecord(
        seed=seed,
        ambience=scene.ambience,
        alt_ambience=alt_ambience(seed, scene.ambience),
        materials=scene.materials,
        event_times=tuple(float(e.time) for e in scene.events),
        event_materials=tuple(e.material for e in scene.events),
    )
    return rec, scene


def soundtracks(rec: ClipRecord, duration: float) -> np.ndarray:
    """float32 (2, W): the clip's own soundtrack and the one over ``alt_ambience``."""
    own = world.render_audio(world.make_scene(rec.seed, duration))
    alt = world.render_audio(world.make_scene(rec.seed, duration, ambience=rec.alt_ambience))
    return np.stack([own, alt])


@dataclass(frozen=True)
class StreamFrames:
    clip: np.ndarray  # uint8 (F, Hc, Hc, 3)
    sync: np.ndarray  # uint8 (Fs, Hs, Hs, 3)
    clip_times: np.ndarray  # (F,) s, the instants shown
    sync_times: np.ndarray  # (Fs,) s


def render_streams(scene: world.Scene, config: ModelConfig) -> StreamFrames:
    """Both frame streams of ``scene`` as the runtime decodes them from a 25 fps video."""
    s, d = config.streams, scene.duration
    clip_t = world.decoded_times(d, s.clip_fps)
    sync_t = world.decoded_times(d, s.sync_fps)
    clip = world.render_frames(scene, clip_t, size=s.clip_size)
    if s.sync_fps == s.clip_fps and s.sync_size == s.clip_size:
        sync = clip  # square views: the two streams are the same pictures
    else:
        sync = world.render_frames(scene, sync_t, size=s.sync_size)
    return StreamFrames(clip, sync, clip_t, sync_t)


def augment_frames(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Decoder-like perturbation of rendered frames (N, H, W, 3) uint8: a random mild blur
    (FFmpeg's bicubic downscale of an H.264 picture is softer than the direct render) and
    noise of about 2 levels. Measured: decoded vs direct renders differ by 2-4 levels on
    average (more on starry skies)."""
    x = frames.astype(np.float32)
    a = float(rng.uniform(0.0, 0.25))  # weight of each 4-neighbour in a separable blur
    if a > 0:
        x = (1 - 2 * a) * x + a * (np.roll(x, 1, 1) + np.roll(x, -1, 1))
        x = (1 - 2 * a) * x + a * (np.roll(x, 1, 2) + np.roll(x, -1, 2))
    x += rng.normal(0.0, float(rng.uniform(0.5, 2.5)), size=x.shape).astype(np.float32)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


# --- auxiliary targets for the encoders -------------------------------------------------

PROXIMITY_S = 0.025  # s, width of the per-frame event-proximity target


def frame_targets(rec: ClipRecord, times: np.ndarray) -> np.ndarray:
    """float32 (N, 4): per frame and material, ``exp(-(dt / 25 ms)^2)`` of the nearest event
    of that material (0 when none): how close the picture is to a sounding contact."""
    out = np.zeros((len(times), len(MATERIAL_NAMES)), dtype=np.float32)
    for t, m in zip(rec.event_times, rec.event_materials, strict=True):
        k = MATERIAL_NAMES.index(m)
        out[:, k] = np.maximum(out[:, k], np.exp(-(((times - t) / PROXIMITY_S) ** 2)))
    return out


def token_targets(rec: ClipRecord, sync_times: np.ndarray, segments: int) -> np.ndarray:
    """float32 (S, 8, 5): per sync token (its own two frames, ±half a frame) and material,
    whether an event falls inside, plus the event's position in the token's span in [0, 1]
    (the earliest one; 0 when none)."""
    step = float(sync_times[1] - sync_times[0]) if len(sync_times) > 1 else 0.04
    out = np.zeros((segments, 8, len(MATERIAL_NAMES) + 1), dtype=np.float32)
    for s in range(segments):
        for j in range(8):
            lo = sync_times[8 * s + 2 * j] - step / 2
            hi = lo + 2 * step
            for t, m in zip(rec.event_times, rec.event_materials, strict=True):
                if lo <= t < hi:
                    out[s, j, MATERIAL_NAMES.index(m)] = 1.0
                    if out[s, j, -1] == 0:
                        out[s, j, -1] = (t - lo) / (hi - lo)
    return out


# Relative gains of the parts of the clip tower's target (before L2 normalisation): the
# per-material proximity, the ambience's one-hot, and a constant that keeps the norm away from 0
CLIP_TARGET_GAINS = (1.0, 0.5, 0.5)


def clip_targets(rec: ClipRecord, times: np.ndarray, width: int) -> np.ndarray:
    """float32 (N, width), unit rows: what the clip tower is trained to emit per frame,
    ``normalise([g0 · frame_targets (4), g1 · one-hot ambience (4), g2, 0, ...])``. The flow then
    reads contact proximity, material and ambience from fixed directions of the features."""
    g_prox, g_amb, g_const = CLIP_TARGET_GAINS
    out = np.zeros((len(times), width), dtype=np.float32)
    out[:, :N_MAT] = g_prox * frame_targets(rec, times)
    out[:, N_MAT + ambience_index(rec.ambience)] = g_amb
    out[:, N_MAT + N_AMB] = g_const
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def sync_targets(rec: ClipRecord, sync_times: np.ndarray, segments: int, width: int
                 ) -> np.ndarray:
    """float32 (S, 8, width): :func:`token_targets` in the first five channels, 0 elsewhere;
    the sync tower is trained to emit it, so with the ``frames`` sync alignment every latent
    frame reads whether (and where in its 80 ms) a contact of each material sounds."""
    out = np.zeros((segments, 8, width), dtype=np.float32)
    out[..., : N_MAT + 1] = token_targets(rec, sync_times, segments)
    return out


def ambience_index(name: str) -> int:
    return AMBIENCE_NAMES.index(name)


def material_hot(materials: tuple[str, ...] | list[str]) -> np.ndarray:
    out = np.zeros(len(MATERIAL_NAMES), dtype=np.float32)
    for m in materials:
        out[MATERIAL_NAMES.index(m)] = 1.0
    return out
