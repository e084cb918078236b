"""Sequence lengths as a function of duration (MMAudio's ``SequenceConfig``, written once).

Every length the networks see follows from the duration ``d`` (seconds) and four rates:

- latent frames  ``L  = ceil(d * sample_rate / hop / 2)``   (the VAE halves the mel rate)
- clip frames    ``Lc = int(d * clip_fps)``                 (8 fps for MMAudio)
- sync frames    ``Fs = int(d * sync_fps)``                 (25 fps)
- sync segments  ``S  = (d * sync_fps - 16) // 8 + 1``       (16-frame windows, stride 8)
- sync tokens    ``Ls = 8 * S``                              (one token per 2-frame patch)
- waveform       ``W  = L * 2 * hop``                        (not trimmed to ``d``)

These mirror ``mmaudio/model/sequence_config.py`` (spec/mmaudio.md §1.6) including its float
arithmetic, so that for example 8 s at 44.1 kHz gives L = 345 and W = 353 280.

Which sync token each latent frame reads is the bundle's *sync alignment*
(:data:`SYNC_ALIGNMENTS`): ``nearest`` is MMAudio's (:func:`sync_index`, a resize of the ``Ls``
tokens to ``L`` that assumes they tile the window evenly, which they do not: the segments
overlap by half, so a latent frame can read a token whose frames lie up to 0.3 s away);
``frames`` reads the token whose own frames show the latent frame's instant
(:func:`frame_sync_index`; the default ``tiny`` model is trained with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SEGMENT_FRAMES = 16  # sync frames per Synchformer segment
SEGMENT_STRIDE = 8  # sync frames between segment starts
TOKENS_PER_SEGMENT = 8  # one token per 2-frame temporal patch
TEXT_TOKENS = 77  # CLIP context length
SYNC_ALIGNMENTS = ("nearest", "frames")  # how latent frames read sync tokens (module docstring)


@dataclass(frozen=True)
class SequenceLengths:
    """All lengths for one duration. Dims use the glossary names of docs/contract.md."""

    duration: float
    latent: int  # L
    clip_frames: int  # Lc (= F of clip_visual)
    sync_frames: int  # frames of the 25 fps stream that are used (16 + 8 * (S - 1))
    sync_segments: int  # S
    sync_tokens: int  # Ls = 8 * S
    mel_frames: int  # M = 2 * L
    samples: int  # W = 2 * L * hop


@dataclass(frozen=True)
class Rates:
    """The four rates that turn a duration into every length (a bundle's ``Manifest.rates``,
    the exporter's ``ModelConfig.rates``)."""

    sample_rate: int
    hop_length: int
    clip_fps: float = 8.0
    sync_fps: float = 25.0
    sync_alignment: str = "nearest"  # one of SYNC_ALIGNMENTS

    def __post_init__(self) -> None:
        if self.sync_alignment not in SYNC_ALIGNMENTS:
            raise ValueError(f"sync_alignment {self.sync_alignment!r} is not one of "
                             f"{', '.join(SYNC_ALIGNMENTS)}")

    @property
    def min_duration(self) -> float:
        """The shortest window: one sync segment."""
        return min_duration(self.sync_fps)

    @property
    def latent_rate(self) -> float:
        """Latent frames per second: the VAE halves the mel frame rate (31.25 at 16 kHz)."""
        return self.sample_rate / self.hop_length / 2

    def sync_index(self, sync_tokens: int, latent: int) -> np.ndarray:
        """(L,) int64: the sync token each latent frame reads, under :attr:`sync_alignment`."""
        if self.sync_alignment == "frames":
            return frame_sync_index(sync_tokens, latent, self.latent_rate, self.sync_fps)
        return sync_index(sync_tokens, latent)

    def lengths(self, duration: float) -> SequenceLengths:
        """Every length for ``duration`` seconds (:func:`sequence_lengths`)."""
        return sequence_lengths(
            duration,
            sample_rate=self.sample_rate,
            hop_length=self.hop_length,
            clip_fps=self.clip_fps,
            sync_fps=self.sync_fps,
        )


def min_duration(sync_fps: float = 25.0) -> float:
    """Shortest duration with one sync segment: 16 frames at 25 fps = 0.64 s."""
    return SEGMENT_FRAMES / sync_fps


def sequence_lengths(
    duration: float,
    *,
    sample_rate: int,
    hop_length: int,
    clip_fps: float = 8.0,
    sync_fps: float = 25.0,
) -> SequenceLengths:
    """Lengths for ``duration`` seconds. Raises ValueError below one sync segment."""
    if not duration >= min_duration(sync_fps) - 1e-9:
        raise ValueError(
            f"duration {duration!r} s is shorter than one sync segment "
            f"({min_duration(sync_fps):.2f} s = {SEGMENT_FRAMES} frames at {sync_fps:g} fps)"
        )
    latent = math.ceil(duration * sample_rate / hop_length / 2)
    segments = int((duration * sync_fps - SEGMENT_FRAMES) // SEGMENT_STRIDE + 1)
    return SequenceLengths(
        duration=float(duration),
        latent=latent,
        clip_frames=int(duration * clip_fps),
        sync_frames=SEGMENT_FRAMES + SEGMENT_STRIDE * (segments - 1),
        sync_segments=segments,
        sync_tokens=TOKENS_PER_SEGMENT * segments,
        mel_frames=2 * latent,
        samples=2 * latent * hop_length,
    )


def sync_index(sync_tokens: int, latent: int) -> np.ndarray:
    """(L,) int64: the sync token each latent frame takes (``sync_cond[:, i] = sync[:, idx[i]]``).

    Matches PyTorch's CPU ``F.interpolate(mode='nearest-exact')`` from ``Ls`` to ``L`` tokens
    (checked against PyTorch 2.13 for Ls = 8, 16, …, 992 and L = 1, 4, …, 1498). Ideally
    ``floor((i + 0.5)·Ls/L)``;
    PyTorch rounds through float32 as follows, which moves some exact ties (e.g. Ls 8, L 428,
    i 53) and must be copied exactly:

        s   = float32(Ls) / float32(L)                      # float32 division
        r   = float32((i + 0.5) * float64(s) - 0.5)         # float64 arithmetic, one rounding
        idx = min(floor(float32(float64(r) + 0.5)), Ls - 1)
    """
    if sync_tokens < 1 or latent < 1:
        raise ValueError(f"sync_tokens {sync_tokens} and latent {latent} must both be >= 1")
    scale = np.float64(np.float32(sync_tokens) / np.float32(latent))
    real = ((np.arange(latent, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    idx = np.floor((real.astype(np.float64) + 0.5).astype(np.float32)).astype(np.int64)
    return np.minimum(idx, sync_tokens - 1)


def frame_sync_index(sync_tokens: int, latent: int, latent_rate: float, sync_fps: float
                     ) -> np.ndarray:
    """(L,) int64 under the ``frames`` alignment: latent frame i (its centre
    ``(i + 0.5) / latent_rate`` s, frame position ``f`` at ``sync_fps``) reads the token whose two
    frames show that instant, from the segment in which the instant lies nearest the centre.

    Token j of segment s shows frames ``8s + 2j`` and ``8s + 2j + 1`` (frame k at ``k / sync_fps``)
    and stands for frame positions ``[8s + 2j - 0.5, 8s + 2j + 1.5)``; segment s spans frames
    ``8s .. 8s + 15`` (centre ``8s + 7.5``) and every instant lies in two segments, so
    ``s = round((f - 7.5) / 8)`` and ``j = floor((f + 0.5 - 8s) / 2)``, both clipped to the window.
    """
    if sync_tokens < TOKENS_PER_SEGMENT or sync_tokens % TOKENS_PER_SEGMENT or latent < 1:
        raise ValueError(f"sync_tokens {sync_tokens} must be a positive multiple of "
                         f"{TOKENS_PER_SEGMENT} and latent {latent} >= 1")
    segments = sync_tokens // TOKENS_PER_SEGMENT
    f = (np.arange(latent, dtype=np.float64) + 0.5) / latent_rate * sync_fps  # (L,) frames
    s = np.clip(np.floor((f - 7.5) / SEGMENT_STRIDE + 0.5), 0, segments - 1)  # (L,)
    j = np.clip(np.floor((f + 0.5 - SEGMENT_STRIDE * s) / 2), 0, TOKENS_PER_SEGMENT - 1)
    return (TOKENS_PER_SEGMENT * s + j).astype(np.int64)
