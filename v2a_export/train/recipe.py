"""The recipe of the default ``tiny`` model: one frozen dataclass per stage, and their order.

Stages (each resumable, each a pure function of the recipe, the seed and what earlier stages
wrote): ``data`` (render the training set's mels), ``vae``, ``vocoder``, ``encoders``
(auxiliary targets), ``features`` (frozen encoders + VAE posterior means), ``flow``.
The defaults are the shipped model's recipe (about 80 minutes on one shared CPU core).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from v2a_runtime.config import parse

STAGES = ("data", "vae", "vocoder", "encoders", "features", "flow")


@dataclass(frozen=True)
class DataRecipe:
    clips: int = 4000  # training scenes (seeds first_seed ...)
    first_seed: int = 0
    duration: float = 8.0
    audio_pool: int = 768  # clips whose waveforms are kept for the vocoder


@dataclass(frozen=True)
class VAERecipe:
    steps: int = 2400
    batch: int = 8
    crop: int = 256  # mel frames per example (even)
    lr: float = 2e-3
    kl_weight: float = 1e-3


@dataclass(frozen=True)
class VocoderRecipe:
    steps: int = 6000
    batch: int = 8
    crop: int = 16  # mel frames per example (0.26 s)
    lr: float = 2e-3
    event_crops: float = 0.6  # share of crops that start shortly before an impact
    linear_weight: float = 1.0  # relative linear-magnitude L1 in the STFT loss (loud partials)
    # STFT sizes of the multi-resolution loss (hop = n_fft / 4); 64 and 128 (4 and 8 ms) punish
    # energy smeared before an attack, which the mel frames (64 ms windows) cannot show
    resolutions: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    snake_init: tuple[float, float] = (2.0, 30.0)  # SnakeBeta alpha = beta, log-uniform


@dataclass(frozen=True)
class EncoderRecipe:
    steps: int = 2500
    clips: int = 4  # scenes per step
    frames: int = 32  # clip frames per scene per step (half near contacts)
    segments: int = 8  # sync segments per scene per step (half with a contact)
    captions: int = 32  # random captions per step (text tower)
    lr: float = 1e-3
    sync_event_weight: float = 4.0  # loss weight of sync tokens with a contact


@dataclass(frozen=True)
class FlowRecipe:
    steps: int = 2500
    batch: int = 8
    lr: float = 1e-3
    crops: tuple[int, ...] = (8, 12, 16)  # window lengths in sync segments, one drawn per step
    warmup: int = 200
    decay_from: float = 0.6  # cosine decay to lr/10 over the last 40 % of the steps
    ema: float = 0.999
    text_drop: float = 0.1  # caption -> the empty string
    clip_drop: float = 0.1  # clip features -> learned null (independent of sync, as v2)
    sync_drop: float = 0.1
    swap: float = 0.3  # caption names alt_ambience, the target has that ambience
    noun_only: float = 0.1  # caption is the ambience noun alone (a negative prompt's shape)
    event_weight: float = 3.0  # loss weight of latent frames from 50 ms before to 100 ms after
    # a true event (1 elsewhere): onsets are a small part of the frames but all of the sync


@dataclass(frozen=True)
class TrainRecipe:
    seed: int = 0
    variant: str = "tiny"
    data: DataRecipe = field(default_factory=DataRecipe)
    vae: VAERecipe = field(default_factory=VAERecipe)
    vocoder: VocoderRecipe = field(default_factory=VocoderRecipe)
    encoders: EncoderRecipe = field(default_factory=EncoderRecipe)
    flow: FlowRecipe = field(default_factory=FlowRecipe)
    checkpoint_seconds: float = 120.0  # wall time between checkpoints inside a stage

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainRecipe:
        """The recipe in ``d`` (JSON values), checked field by field (the runtime schema's one
        parser); ValueError naming the field."""
        return parse(cls, d, "recipe")


def smoke_recipe(seed: int = 0) -> TrainRecipe:
    """A few steps of every stage on a handful of clips (tests)."""
    return TrainRecipe(
        seed=seed,
        data=DataRecipe(clips=6, duration=2.56, audio_pool=4),
        vae=VAERecipe(steps=12, batch=2, crop=64, lr=3e-3),
        vocoder=VocoderRecipe(steps=6, batch=2, crop=16),
        encoders=EncoderRecipe(steps=16, clips=2, frames=8, segments=2, captions=16, lr=3e-3),
        flow=FlowRecipe(steps=12, batch=2, warmup=2, lr=2e-3, crops=(4, 7)),
        checkpoint_seconds=0.0,
    )
