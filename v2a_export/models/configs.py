"""Model configurations: one frozen dataclass per network, composed per variant.

Networks take explicit scalars (whisper style); only the top-level builders read these
configs. ``VARIANTS`` maps a variant name to its :class:`ModelConfig`. Official values come
from spec/mmaudio.md (§0, §2) and the key manifests in fixtures/mmaudio/keys/.
``tiny`` is our own member of the family: small widths, 16 kHz, small frames, fast on a CPU;
it is the embedded default model once trained.

The media facts are the runtime's schema (:mod:`v2a_runtime.config`): the frame streams are a
:class:`~v2a_runtime.config.VideoSpec`, the sequence rates a :class:`~v2a_runtime.sequence.Rates`.
Custom configs round-trip through JSON with :meth:`ModelConfig.from_dict` / ``to_dict`` (the
runtime's one parser); a bundle records a custom one in its manifest without the facts the
manifest states elsewhere (:meth:`ModelConfig.manifest_config`, :meth:`from_manifest`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from v2a_runtime.config import BundleError, Manifest, VideoSpec, parse
from v2a_runtime.sequence import Rates


@dataclass(frozen=True)
class FlowConfig:
    """The MMAudio flow network (``mmaudio/model/networks.py:MMAudio``)."""

    latent_dim: int  # C
    clip_dim: int  # clip feature width (1024 official)
    sync_dim: int  # sync feature width (768 official)
    text_dim: int  # text feature width (1024 official)
    hidden_dim: int  # H = 64 * num_heads in the official nets
    depth: int  # joint + fused blocks
    fused_depth: int  # fused (latent-only) blocks; joint blocks = depth - fused_depth
    num_heads: int
    mlp_ratio: float = 4.0
    text_seq_len: int = 77
    v2: bool = False  # SiLU instead of SELU, shifted Sequential indices, t-embed F = H

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def joint_depth(self) -> int:
        return self.depth - self.fused_depth


@dataclass(frozen=True)
class VAEConfig:
    """The 1-D mel VAE (``mmaudio/ext/autoencoder/vae.py:VAE``); ch_mult (1, 2, 4)."""

    data_dim: int  # n_mels
    embed_dim: int  # latent channels C
    hidden_dim: int  # C0


@dataclass(frozen=True)
class BigVGANConfig:
    """BigVGAN (16 kHz, Make-An-Audio 2) or BigVGAN-v2; resblock type '1', snakebeta."""

    num_mels: int
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    use_tanh_at_final: bool = True  # False in v2 44k: clamp(-1, 1) instead
    use_bias_at_final: bool = True  # False in v2 44k

    @property
    def hop_length(self) -> int:
        out = 1
        for r in self.upsample_rates:
            out *= r
        return out


@dataclass(frozen=True)
class SynchformerConfig:
    """The Synchformer visual branch (MotionFormer divided space-time + spatial aggregator)."""

    img_size: int = 224
    patch_size: int = 16
    num_frames: int = 16  # frames per segment
    temporal_patch: int = 2  # frames per token -> 8 tokens per segment
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class CLIPVisionConfig:
    """open_clip VisionTransformer (QuickGELU)."""

    image_size: int  # the model's size (378 official); the input may be larger (384)
    patch_size: int
    width: int
    layers: int
    head_width: int
    embed_dim: int  # output of ``proj``
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class CLIPTextConfig:
    """open_clip text transformer (causal, QuickGELU); output = all tokens after ln_final."""

    width: int
    heads: int
    layers: int
    context_length: int = 77
    vocab_size: int = 49408
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class MelConfig:
    """Mel front-end facts (``mmaudio/ext/mel_converter.py``)."""

    sample_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int
    fmin: float
    fmax: float
    log: str  # "log10" (16 kHz) or "ln" (44.1 kHz)


@dataclass(frozen=True)
class ModelConfig:
    """One complete variant: every network plus the media facts."""

    name: str
    flow: FlowConfig
    vae: VAEConfig
    vocoder: BigVGANConfig
    synchformer: SynchformerConfig
    clip_vision: CLIPVisionConfig
    clip_text: CLIPTextConfig
    mel: MelConfig
    streams: VideoSpec  # the two video frame streams

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def latent_rate(self) -> float:
        """Latent frames per second (31.25 at 16 kHz, 43.066 at 44.1 kHz)."""
        return self.rates.latent_rate

    @property
    def rates(self) -> Rates:
        """The rates that turn a duration into every sequence length."""
        s = self.streams
        return Rates(self.mel.sample_rate, self.mel.hop_length, s.clip_fps, s.sync_fps,
                     s.sync_alignment)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "model config") -> ModelConfig:
        """The config in ``d`` (JSON values), checked field by field; ValueError naming the
        field (``where`` prefixes it, e.g. the file it came from)."""
        try:
            return parse(cls, d, where)
        except BundleError as e:
            raise ValueError(str(e)) from None

    def manifest_config(self) -> dict[str, Any] | None:
        """What a bundle's ``model.config`` records: None for a registered variant, else the
        config without the facts the manifest's audio and video sections state."""
        if VARIANTS.get(self.name) == self:
            return None
        d = self.to_dict()
        del d["name"], d["streams"]
        for key in _MANIFEST_MEL:
            del d["mel"][key]
        return d

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> ModelConfig:
        """The config a bundle was exported from: its registered variant, or the recorded
        custom config completed by the manifest's audio and video facts. ValueError when the
        variant is unknown or disagrees with the manifest."""
        variant, recorded = manifest.model.variant, manifest.model.config
        a = manifest.audio
        if recorded is None:
            config = get_config(variant)
        else:
            mel = {**recorded.get("mel", {}), "sample_rate": a.sample_rate,
                   "hop_length": a.hop_length, "n_mels": a.n_mels}  # fmt: skip
            data = {**recorded, "name": variant, "mel": mel, "streams": asdict(manifest.video)}
            config = cls.from_dict(data)
        stated = (a.sample_rate, a.hop_length, a.n_mels, a.latent_channels, manifest.video)
        own = (config.mel.sample_rate, config.mel.hop_length, config.mel.n_mels,
               config.flow.latent_dim, config.streams)  # fmt: skip
        if stated != own:
            raise ValueError(
                f"the bundle's audio/video sections {stated} disagree with variant {variant!r} "
                f"{own}; re-export the bundle"
            )
        return config

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read model config {path}: {e}") from e
        return cls.from_dict(data, where=f"model config {path}")


_MANIFEST_MEL = ("sample_rate", "hop_length", "n_mels")  # stated by the manifest's audio


# --- official building blocks -------------------------------------------------------------

MEL_16K = MelConfig(16000, 1024, 256, 1024, 80, 0.0, 8000.0, "log10")
MEL_44K = MelConfig(44100, 2048, 512, 2048, 128, 0.0, 22050.0, "ln")

VAE_16K = VAEConfig(data_dim=80, embed_dim=20, hidden_dim=384)
VAE_44K = VAEConfig(data_dim=128, embed_dim=40, hidden_dim=512)

BIGVGAN_16K = BigVGANConfig(
    num_mels=80,
    upsample_rates=(4, 4, 2, 2, 2, 2),
    upsample_kernel_sizes=(8, 8, 4, 4, 4, 4),
    upsample_initial_channel=1536,
)
BIGVGAN_V2_44K = BigVGANConfig(
    num_mels=128,
    upsample_rates=(8, 4, 2, 2, 2, 2),
    upsample_kernel_sizes=(16, 8, 4, 4, 4, 4),
    upsample_initial_channel=1536,
    use_tanh_at_final=False,
    use_bias_at_final=False,
)

SYNCHFORMER = SynchformerConfig()
CLIP_VISION_H14_378 = CLIPVisionConfig(
    image_size=378, patch_size=14, width=1280, layers=32, head_width=80, embed_dim=1024
)
CLIP_TEXT_H14 = CLIPTextConfig(width=1024, heads=16, layers=24)
STREAMS = VideoSpec()  # MMAudio's: 8 fps 384 px, 25 fps 224 px


def _flow(latent_dim: int, hidden: int, depth: int, fused: int, v2: bool = False) -> FlowConfig:
    return FlowConfig(
        latent_dim=latent_dim,
        clip_dim=1024,
        sync_dim=768,
        text_dim=1024,
        hidden_dim=hidden,
        depth=depth,
        fused_depth=fused,
        num_heads=hidden // 64,
        v2=v2,
    )


def _official(name: str, flow: FlowConfig, k44: bool) -> ModelConfig:
    return ModelConfig(
        name=name,
        flow=flow,
        vae=VAE_44K if k44 else VAE_16K,
        vocoder=BIGVGAN_V2_44K if k44 else BIGVGAN_16K,
        synchformer=SYNCHFORMER,
        clip_vision=CLIP_VISION_H14_378,
        clip_text=CLIP_TEXT_H14,
        mel=MEL_44K if k44 else MEL_16K,
        streams=STREAMS,
    )


TINY = ModelConfig(
    name="tiny",
    flow=FlowConfig(
        latent_dim=8,
        clip_dim=32,
        sync_dim=64,
        text_dim=32,
        hidden_dim=64,
        depth=4,
        fused_depth=2,
        num_heads=2,
        v2=True,
    ),
    vae=VAEConfig(data_dim=80, embed_dim=8, hidden_dim=32),
    # an 8 kHz stage before the last: partials up to ~3.5 kHz (glass) form below a stage's
    # Nyquist instead of as images of a 4 kHz stage (measured: (8, 8, 4) never learned them)
    vocoder=BigVGANConfig(
        num_mels=80,
        upsample_rates=(8, 8, 2, 2),
        upsample_kernel_sizes=(16, 16, 4, 4),
        upsample_initial_channel=64,
    ),
    synchformer=SynchformerConfig(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=4),
    clip_vision=CLIPVisionConfig(
        image_size=64, patch_size=16, width=64, layers=2, head_width=16, embed_dim=32
    ),
    clip_text=CLIPTextConfig(width=32, heads=4, layers=2),
    mel=MEL_16K,
    # MMAudio's sync tokens reach the latent frames through a length interpolation that runs up
    # to 0.32 s away from the frames the tokens saw (segments overlap by half, the resize
    # assumes they tile). The "frames" alignment (v2a_runtime.sequence) reads the token whose
    # own frames show each instant instead: with oracle sync features a 2000-step flow lands
    # 0.83 of the onsets within ±40 ms (docs/default_model.md). tiny is trained with it;
    # MMAudio's checkpoints keep "nearest".
    streams=VideoSpec(clip_fps=25.0, clip_size=64, sync_size=64, sync_alignment="frames"),
)

VARIANTS: dict[str, ModelConfig] = {
    "tiny": TINY,
    "small_16k": _official("small_16k", _flow(20, 448, 12, 8), k44=False),
    "small_44k": _official("small_44k", _flow(40, 448, 12, 8), k44=True),
    "medium_44k": _official("medium_44k", _flow(40, 896, 12, 8), k44=True),
    "large_44k": _official("large_44k", _flow(40, 896, 21, 14), k44=True),
    "large_44k_v2": _official("large_44k_v2", _flow(40, 896, 21, 14, v2=True), k44=True),
}


def get_config(name: str) -> ModelConfig:
    """The registered variant ``name``; ValueError naming the known variants otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None


__all__ = [
    "BigVGANConfig",
    "CLIPTextConfig",
    "CLIPVisionConfig",
    "FlowConfig",
    "MelConfig",
    "ModelConfig",
    "SynchformerConfig",
    "VAEConfig",
    "VARIANTS",
    "get_config",
    "replace",
]
