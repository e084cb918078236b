"""Optimization profiles of a bundle's engines, derived from the component descriptors.

A profile gives every engine input a min / opt / max shape. They come from one request: the
window durations the engines must serve (min / opt / max seconds) and the soundtracks per call
(``--tracks K``: min / opt / max). :meth:`Descriptor.profile` turns that into sizes through the
sequence rules, so the engines cover exactly the shapes the runtime pipeline feeds:

- the video encoders see F frames / S segments of one window (no batch);
- ``text`` always sees 2 rows ([prompt; negative prompt]), 1..2 in the profile;
- ``conditioner`` sees one video (batch 1; it makes the [cond; uncond] rows itself);
- ``denoiser`` sees 2K rows with classifier-free guidance ([cond × K; uncond × K]) and K rows
  with cfg = 1, so its batch runs from 1 to 2·max tracks, opt 2·opt tracks;
- ``vae_decoder`` and ``vocoder`` see K rows.

Defaults: durations from the manifest — min = one sync segment (``Manifest.rates``),
opt = ``sequence.trained_duration`` (long videos are cut into windows of that length, so it is
the most common size), max = ``sequence.max_duration``; tracks 1 / 1 / 4.

Memory: TensorRT reserves a context's activation memory for the profile *maximum*
(``device_memory_size_v2``), and the runtime's I/O buffers are sized for it too, so ``max``
sets the memory an engine holds while ``opt`` sets which shapes get the fastest kernels. A
narrower range (e.g. ``--max-duration 8 --batch 1``) means less reserved memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from v2a_runtime.backends.tensorrt.cache import BuildRequest, InputProfile
from v2a_runtime.config import COMPONENTS, Manifest

from v2a_export.export.descriptors import DurationRange, TrackRange, descriptors_from_manifest

DEFAULT_TRACKS = TrackRange(1, 1, 4)


@dataclass(frozen=True)
class ProfileRequest:
    """Window durations (seconds) and soundtracks per call the engines must serve."""

    durations: DurationRange
    tracks: TrackRange = DEFAULT_TRACKS

    @classmethod
    def default(cls, manifest: Manifest) -> ProfileRequest:
        q = manifest.sequence
        return cls(DurationRange(manifest.rates.min_duration, q.trained_duration, q.max_duration))

    @classmethod
    def of(
        cls,
        manifest: Manifest,
        *,
        min_duration: float | None = None,
        opt_duration: float | None = None,
        max_duration: float | None = None,
        tracks: TrackRange | None = None,
    ) -> ProfileRequest:
        """The default request with the given fields replaced; ValueError naming the bad value
        and the bundle's allowed range."""
        d = cls.default(manifest).durations
        lo = d.min if min_duration is None else min_duration
        hi = d.max if max_duration is None else max_duration
        opt = opt_duration if opt_duration is not None else min(max(d.opt, lo), hi)
        q, shortest = manifest.sequence, manifest.rates.min_duration
        for label, value in (("min", lo), ("opt", opt), ("max", hi)):
            if not shortest - 1e-9 <= value <= q.max_duration + 1e-9:
                raise ValueError(
                    f"--{label}-duration {value:g} s is outside the bundle's window range "
                    f"{shortest:g}..{q.max_duration:g} s (one sync segment .. "
                    "sequence.max_duration; longer videos run in windows)"
                )
        return cls(DurationRange(lo, opt, hi), DEFAULT_TRACKS if tracks is None else tracks)

    def build_request(self) -> BuildRequest:
        d, t = self.durations, self.tracks
        return BuildRequest((d.min, d.opt, d.max), (t.min, t.opt, t.max))


def parse_tracks(text: str) -> TrackRange:
    """``"4"`` (max; min = opt = 1) or ``"1,2,4"`` (min, opt, max); ValueError otherwise."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError as e:
        raise ValueError(f"--batch takes MAX or MIN,OPT,MAX integers, got {text!r}") from e
    if len(values) == 1:
        return TrackRange(1, 1, values[0])
    if len(values) == 3:
        return TrackRange(*values)
    raise ValueError(f"--batch takes MAX or MIN,OPT,MAX integers, got {text!r}")


def engine_profiles(
    manifest: Manifest, request: ProfileRequest, components: tuple[str, ...] = COMPONENTS
) -> dict[str, tuple[InputProfile, ...]]:
    """One profile (a tuple of :class:`InputProfile`, graph input order) per component."""
    descs = descriptors_from_manifest(manifest)
    out = {}
    for name in components:
        ranges = descs[name].profile(manifest.rates, request.durations, request.tracks)
        out[name] = tuple(InputProfile(n, r.min, r.opt, r.max) for n, r in ranges.items())
    return out


__all__ = [
    "DEFAULT_TRACKS",
    "ProfileRequest",
    "engine_profiles",
    "parse_tracks",
]
