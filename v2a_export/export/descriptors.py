"""One frozen descriptor per exported component: the data the exporter, the parity gate and the
engine builder all read (DESIGN.md §4, docs/contract.md "Graphs").

A :class:`Descriptor` holds the graph's input and output :class:`~v2a_runtime.config.TensorInfo`
(contract name, numpy dtype, symbolic shape over the glossary dims) and which network it wraps.
Sizes come from a duration and a track count through the runtime's
:class:`~v2a_runtime.sequence.Rates` (:func:`dim_sizes`) and the pipeline's batch rule
(:func:`v2a_runtime.guidance.batch`); :meth:`Descriptor.profile` turns a
:class:`DurationRange` and a :class:`TrackRange` into min/opt/max shapes per input;
:meth:`Descriptor.sample_inputs` draws seeded inputs of the right shapes, dtypes and value
ranges.

This module imports no torch: the engine builder may read descriptors from a bundle's manifest
(:func:`descriptors_from_manifest`) on a machine that has only the runtime installed.

Glossary dims (docs/contract.md): B batch, F clip frames, S sync segments, L latent frames,
Lc clip tokens, Ls sync tokens, M mel frames, W waveform samples; "2B" is the conditioner's
[cond; uncond] output rows. T (77 text tokens) is static.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from v2a_runtime import guidance
from v2a_runtime.config import COMPONENTS, NETWORK_OF, Dim, Manifest, TensorInfo
from v2a_runtime.sequence import SEGMENT_FRAMES, TEXT_TOKENS, TOKENS_PER_SEGMENT, Rates, sync_index

from v2a_export.models.configs import ModelConfig

DIMS = ("B", "2B", "F", "S", "L", "Lc", "Ls", "M", "W")
ROPE_THETA = 10000.0  # docs/contract.md: f_i = 1 / 10000^(2i/hd)
SOT, EOT, VOCAB = 49406, 49407, 49408  # CLIP BPE specials and vocabulary size


def dim_sizes(rates: Rates, duration: float, batch: int = 1) -> dict[str, int]:
    """Every glossary dim for ``duration`` seconds and batch ``batch``."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    n = rates.lengths(duration)
    return {
        "B": batch,
        "2B": 2 * batch,
        "F": n.clip_frames,
        "S": n.sync_segments,
        "L": n.latent,
        "Lc": n.clip_frames,
        "Ls": n.sync_tokens,
        "M": n.mel_frames,
        "W": n.samples,
    }


@dataclass(frozen=True)
class DurationRange:
    """Seconds per window the graphs must serve: min / opt (the common case) / max."""

    min: float
    opt: float
    max: float

    def __post_init__(self) -> None:
        if not 0 < self.min <= self.opt <= self.max:
            raise ValueError(
                f"durations must satisfy 0 < min <= opt <= max, got {self.min}/{self.opt}/"
                f"{self.max}"
            )


@dataclass(frozen=True)
class TrackRange:
    """Soundtracks per call (``--tracks K``): min / opt / max."""

    min: int = 1
    opt: int = 1
    max: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"tracks must satisfy 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}"
            )


@dataclass(frozen=True)
class ShapeRange:
    """min / opt / max concrete shape of one input (a TensorRT optimization profile entry)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class Descriptor:
    """One exported component."""

    name: str  # one of v2a_runtime.config.COMPONENTS
    network: str  # the Networks member it wraps (v2a_runtime.config.NETWORK_OF)
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def input_dims(self) -> tuple[str, ...]:
        """The dynamic dims of the inputs, in first-seen order."""
        seen: list[str] = []
        for t in self.inputs:
            seen += [d for d in t.shape if isinstance(d, str) and d not in seen]
        return tuple(seen)

    def batch(self, tracks: int, *, cfg: bool = True) -> int:
        """The B this component sees when the runtime makes ``tracks`` soundtracks (the
        pipeline's own rule, :func:`v2a_runtime.guidance.batch`)."""
        return guidance.batch(self.name, tracks, guided=cfg)

    def sizes(self, rates: Rates, duration: float, tracks: int = 1) -> dict[str, int]:
        return dim_sizes(rates, duration, self.batch(tracks))

    def shapes(self, sizes: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
        """Concrete input shapes for ``sizes``."""
        return {t.name: t.concrete(sizes) for t in self.inputs}

    def profile(
        self, rates: Rates, durations: DurationRange, tracks: TrackRange = TrackRange()
    ) -> dict[str, ShapeRange]:
        """min/opt/max input shapes for a duration range and a track range.

        Every size grows with the duration, so the extremes are the sizes at the extreme
        durations. The batch is the pipeline's (:meth:`batch`): the fewest rows are
        ``tracks.min`` without guidance (cfg = 1), the most ``tracks.max`` with it.
        """
        lo = dim_sizes(rates, durations.min, self.batch(tracks.min, cfg=False))
        opt = dim_sizes(rates, durations.opt, self.batch(tracks.opt))
        hi = dim_sizes(rates, durations.max, self.batch(tracks.max))
        return {
            t.name: ShapeRange(t.concrete(lo), t.concrete(opt), t.concrete(hi)) for t in self.inputs
        }

    def sample_inputs(self, sizes: Mapping[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded inputs of the contract's dtypes and shapes with realistic value ranges:
        uint8 pixels, CLIP-style token rows, L2-normalised features, valid RoPE tables and
        sync index maps, t in [0, 1], log-mel around the data mean."""
        rng = np.random.default_rng(seed)
        out = {}
        for t in self.inputs:
            shape = t.concrete(sizes)
            out[t.name] = _sample(t.name, t.dtype, shape, sizes, rng)
        return out


def _sample(
    name: str, dtype: str, shape: tuple[int, ...], sizes: Mapping[str, int], rng
) -> np.ndarray:
    if dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if name == "token_ids":
        return _token_rows(shape[0], shape[1], rng)
    if name == "sync_index":
        return sync_index(sizes["Ls"], sizes["L"])
    if name == "latent_rope":
        return rope_table(shape[0], 2 * shape[1], 1.0)
    if name == "clip_rope":
        return rope_table(shape[0], 2 * shape[1], np.float32(sizes["L"]) / np.float32(shape[0]))
    if name == "t":
        return rng.uniform(0.0, 1.0, shape).astype(np.float32)
    if name == "mel":
        return (rng.standard_normal(shape) - 2.5).astype(np.float32)  # log-mel-like
    x = rng.standard_normal(shape).astype(np.float32)
    if name in ("clip_features", "text_features", "negative_text_features"):
        x /= np.linalg.norm(x, axis=-1, keepdims=True)  # the encoders L2-normalise
    return x


def _token_rows(batch: int, length: int, rng) -> np.ndarray:
    """int64 (B, 77): SOT, a few random BPE ids, EOT, zero padding (the tokenizer's layout)."""
    out = np.zeros((batch, length), dtype=np.int64)
    for row in range(batch):
        n = int(rng.integers(0, min(20, length - 2) + 1))
        ids = [SOT, *rng.integers(1, SOT, n).tolist(), EOT]
        out[row, : len(ids)] = ids
    return out


def rope_table(length: int, head_dim: int, scale: float) -> np.ndarray:
    """(length, hd/2, 2) float32 (cos, sin)(n · f_i · scale) as docs/contract.md defines it."""
    freqs = (1.0 / ROPE_THETA ** (np.arange(0, head_dim, 2) / head_dim)).astype(np.float32)
    angle = np.arange(length, dtype=np.float32)[:, None] * (freqs * np.float32(scale))[None]
    return np.stack([np.cos(angle), np.sin(angle)], axis=-1).astype(np.float32)


# --- the seven descriptors -------------------------------------------------------------------


@dataclass(frozen=True)
class Widths:
    """The static per-model widths of docs/contract.md."""

    C: int  # latent channels
    H: int  # flow hidden width
    hd: int  # head dim
    Dc: int  # clip feature width
    Ds: int  # sync feature width
    Dt: int  # text feature width
    n_mels: int
    Hc: int  # clip frame size
    Hs: int  # sync frame size

    @classmethod
    def of(cls, config: ModelConfig) -> Widths:
        f = config.flow
        return cls(
            C=f.latent_dim,
            H=f.hidden_dim,
            hd=f.head_dim,
            Dc=f.clip_dim,
            Ds=f.sync_dim,
            Dt=f.text_dim,
            n_mels=config.vae.data_dim,
            Hc=config.streams.clip_size,
            Hs=config.streams.sync_size,
        )


def descriptors(config: ModelConfig) -> dict[str, Descriptor]:
    """The seven descriptors of ``config``, keyed by component name (contract order)."""
    return build_descriptors(Widths.of(config))


def build_descriptors(w: Widths) -> dict[str, Descriptor]:
    f32, u8, i64 = "float32", "uint8", "int64"
    T, hr = TEXT_TOKENS, w.hd // 2

    def spec(name: str, dtype: str, *shape: Dim) -> TensorInfo:
        return TensorInfo(name, dtype, tuple(shape))

    conditions = (
        spec("clip_tokens", f32, "B", "Lc", w.H),
        spec("text_tokens", f32, "B", T, w.H),
        spec("global_cond", f32, "B", w.H),
        spec("sync_cond", f32, "B", "L", w.H),
        spec("latent_rope", f32, "L", hr, 2),
        spec("clip_rope", f32, "Lc", hr, 2),
    )
    doubled = tuple(
        TensorInfo(c.name, c.dtype, tuple("2B" if d == "B" else d for d in c.shape))
        for c in conditions
    )
    table = [
        (
            "clip_visual",
            (spec("frames", u8, "F", w.Hc, w.Hc, 3),),
            (spec("clip_features", f32, "F", w.Dc),),
        ),
        (
            "sync_visual",
            (spec("segments", u8, "S", SEGMENT_FRAMES, w.Hs, w.Hs, 3),),
            (spec("sync_features", f32, "S", TOKENS_PER_SEGMENT, w.Ds),),
        ),
        ("text", (spec("token_ids", i64, "B", T),), (spec("text_features", f32, "B", T, w.Dt),)),
        (
            "conditioner",
            (
                spec("clip_features", f32, "B", "Lc", w.Dc),
                spec("sync_features", f32, "B", "Ls", w.Ds),
                spec("text_features", f32, "B", T, w.Dt),
                spec("negative_text_features", f32, "B", T, w.Dt),
                spec("sync_index", i64, "L"),
            ),
            doubled,
        ),
        (
            "denoiser",
            (spec("x", f32, "B", "L", w.C), spec("t", f32, "B"), *conditions),
            (spec("velocity", f32, "B", "L", w.C),),
        ),
        (
            "vae_decoder",
            (spec("latent", f32, "B", w.C, "L"),),
            (spec("mel", f32, "B", w.n_mels, "M"),),
        ),
        ("vocoder", (spec("mel", f32, "B", w.n_mels, "M"),), (spec("waveform", f32, "B", 1, "W"),)),
    ]
    out = {name: Descriptor(name, NETWORK_OF[name], ins, outs) for name, ins, outs in table}
    assert tuple(out) == COMPONENTS
    return out


def descriptors_from_manifest(manifest: Manifest) -> dict[str, Descriptor]:
    """The descriptors a bundle declares (its I/O as written by the exporter)."""
    return {
        name: Descriptor(name, NETWORK_OF[name], c.inputs, c.outputs)
        for name, c in manifest.components.items()
    }


__all__ = [
    "DIMS",
    "Descriptor",
    "DurationRange",
    "ShapeRange",
    "TrackRange",
    "Widths",
    "build_descriptors",
    "descriptors",
    "descriptors_from_manifest",
    "dim_sizes",
    "rope_table",
]
