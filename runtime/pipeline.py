"""The generate pipeline: video (file, frames or pixels) + prompts -> watermarked soundtracks.

``Pipeline.load(bundle_dir, backend="cpu")`` does all the I/O (bundle validation, one session
per component on the backend, tokenizer, watermark key); ``Pipeline.generate(video, ...)`` then
runs the steps of DESIGN.md §3, per window of the video (one window up to the model's trained
duration):

1. decode: both frame streams of the window (PyAV, seek + stop early);
2. encode: ``clip_visual`` once, ``sync_visual`` once (all segments in one batch);
   ``text`` runs once per call for [prompt; negative prompt];
3. condition: ``conditioner`` once, for [cond; uncond];
4. sample: x₀ ~ N(0, I) per track, then the backend's sampler: one ``denoiser`` call per
   solver evaluation on the batch [cond × K; uncond × K] (K = tracks), v = w·v_cond +
   (1 − w)·v_uncond (:mod:`v2a_runtime.guidance`), over one time grid built per call (or
   the bundle's named sampler: its stored grid and weights, :mod:`v2a_runtime.named_sampler`);
5. decode audio: un-normalise (:func:`unnormalise`), ``vae_decoder``, ``vocoder``;
6. watermark: windows cross-faded (equal power, :mod:`v2a_runtime.windows`) as they
   complete, trimmed to the span; with ``loudness`` set, each track is brought to the
   integrated-loudness target under the true-peak ceiling (:mod:`v2a_runtime.loudness`, EBU
   R128); then every track gets the keyed watermark (payload: model id + generation id),
   after the gain so that it survives, and a last static trim keeps the true peak under the
   ceiling.

Step 7 (write) belongs to the caller: :func:`v2a_runtime.media.mux` with the result's
``start`` places the audio where the span starts in the video.

Memory is bounded by one window: the joined audio goes, window after window, to a spool (a
temporary float32 file; :mod:`v2a_runtime.signals`), the watermark's passes read it in blocks
(:mod:`v2a_runtime.watermark.stream`), and :meth:`Pipeline.stream` hands the marked tracks to
the writer block by block. :meth:`Pipeline.generate` reads them into one array.

Seeds: track k draws its noise from ``np.random.default_rng(seed + k)``, window after window,
so track k of a K-track run equals a 1-track run with seed ``seed + k`` (up to float rounding
differences between batch sizes in the backend). Same seed, same backend, same input -> the
same bits. The generation id is a 24-bit hash of the request (seed, prompts, sampler, span and
the first window's clip frames), so it is reproducible too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from . import guidance, sampling
from .backends import Backend, Sampler, SampleRequest, Session, load_backend
from .bundle import Bundle, load_bundle
from .config import AudioSpec
from .frames import VideoArray, frame_source
from .loudness import Loudness, LoudnessReport, integrated, normalized, signal_true_peak, trimmed
from .media import Frames, sync_segments
from .named_sampler import NamedSampler
from .signals import MemorySpool, Signal, Spool, Track, spooled, spooled_track
from .tokenizer import Tokenizer
from .watermark import WatermarkKey, load_key, make_payload, mark
from .windows import Crossfader, Window, plan_windows

_LOGGER = logging.getLogger(__name__)

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "default_bundle"
TRUNCATED = 1e-3  # seconds a window may decode short before the file counts as truncated
STAGES = (
    "decode", "text", "encode", "condition", "sample", "vae", "vocoder", "loudness", "watermark",
)  # fmt: skip


@dataclass(frozen=True)
class GenerateOptions:
    """One generate request. ``None`` sampler fields take the bundle's defaults."""

    prompt: str = ""
    negative_prompt: str = ""  # the unconditional branch's text ("" = the empty string)
    start: float = 0.0  # seconds into the video
    duration: float | None = None  # seconds; None = to the end of the video
    seed: int = 42  # MMAudio's demo default; track k uses seed + k
    tracks: int = 1  # K different soundtracks in one batched run
    steps: int | None = None
    solver: str | None = None  # a name from v2a_runtime.sampling.SOLVERS
    grid: str | None = None  # a name from v2a_runtime.sampling.GRIDS
    sampler: str | None = None  # a named sampler of the bundle (instead of solver/steps/grid)
    cfg: float | None = None  # classifier-free guidance weight w
    overlap: float = 1.0  # seconds of cross-fade between windows of a long video
    watermark: bool = True  # embed the keyed watermark in every track
    loudness: Loudness | None = None  # EBU R128 target and true-peak ceiling; None = as sampled
    generation_id: int | None = None  # 24-bit id in the payload; None = hash of the request


@dataclass(frozen=True)
class Progress:
    """A progress event for ``callback``: a stage started, or a sampling step finished."""

    stage: str  # one of STAGES
    window: int  # 0-based
    windows: int
    step: int = 0  # sampling steps done in this window (stage "sample")
    steps: int = 0  # sampling steps per window


@dataclass(frozen=True)
class TrackMark:
    """The watermark embedded in one track."""

    track: int
    payload: int
    model_id: int
    generation_id: int
    key_id: str
    demo_key: bool


@dataclass(frozen=True)
class GenerateResult:
    audio: np.ndarray  # float32 (K, W), W = round(duration * sample_rate)
    sample_rate: int
    start: float  # seconds into the video where the span (and the audio) begins
    duration: float  # seconds of video covered
    seeds: tuple[int, ...]  # one per track
    windows: tuple[Window, ...]
    timings: dict[str, float]  # seconds per stage (STAGES), summed over windows, plus "total"
    evaluations: int  # denoiser calls
    watermarks: tuple[TrackMark, ...]  # empty when options.watermark is False
    options: GenerateOptions  # with the bundle's defaults filled in
    loudness: tuple[LoudnessReport, ...] = ()  # per track, measured on the final audio


@dataclass(frozen=True)
class StreamResult:
    """:class:`GenerateResult` with the audio as tracks read in blocks (:meth:`Pipeline.stream`);
    valid inside the ``with`` block only."""

    tracks: tuple[Track, ...]  # per track: (1, n) float32 blocks, W samples in all
    sample_rate: int
    start: float
    duration: float
    seeds: tuple[int, ...]
    windows: tuple[Window, ...]
    timings: dict[str, float]  # the watermark's rendering happens as the tracks are read
    evaluations: int
    watermarks: tuple[TrackMark, ...]
    options: GenerateOptions
    loudness: tuple[LoudnessReport, ...] = ()  # per track, measured on the final audio


@dataclass(frozen=True)
class Pipeline:
    """A loaded bundle on one backend. Build with :meth:`load`; reusable for many videos."""

    bundle: Bundle
    backend: Backend
    tokenizer: Tokenizer
    key: WatermarkKey

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path | None = None,
        backend: str = "cpu",
        *,
        threads: int | None = None,
        key_file: str | Path | None = None,
        verify: bool = True,
    ) -> Pipeline:
        """Load and check ``bundle_dir`` (None = the bundle shipped with v2a_runtime)."""
        bundle = load_bundle(DEFAULT_BUNDLE if bundle_dir is None else bundle_dir, verify=verify)
        tokenizer = Tokenizer.load(
            bundle.tokenizer_path, context_length=bundle.manifest.tokenizer.context_length
        )
        loaded = load_backend(bundle, backend, threads=threads, verify=verify)
        return cls(bundle, loaded, tokenizer, load_key(key_file))

    @property
    def sessions(self) -> Mapping[str, Session]:
        return self.backend.sessions

    def with_sessions(self, **sessions: Session) -> Pipeline:
        """This pipeline with some components' sessions replaced (e.g. wrapped to record their
        feeds); the backend's sampler factory then runs the new denoiser."""
        return replace(self, backend=replace(self.backend, sessions={**self.sessions, **sessions}))

    def resolve(self, options: GenerateOptions | None = None, **overrides) -> GenerateOptions:
        """``options`` with ``overrides`` applied, bundle defaults filled in, and checked.

        A named sampler (``sampler``, or the bundle's named default when none of solver,
        steps and grid is given) fixes solver and steps (``grid`` stays None: its times are
        the sampler's own); its cfg is the default guidance weight."""
        opts = replace(options or GenerateOptions(), **overrides)
        default = self.bundle.manifest.sampler
        fixed = (opts.solver, opts.steps, opts.grid) != (None, None, None)
        name = default.name if opts.sampler is None and not fixed else opts.sampler
        if name is not None:
            if fixed:
                raise ValueError(
                    f"sampler {name!r} fixes the solver, steps and grid; give either the "
                    "sampler or solver/steps/grid"
                )
            entry = self.named_sampler(name)
            cfg = entry.cfg if opts.cfg is None else opts.cfg
            opts = replace(opts, sampler=name, solver=entry.solver, steps=entry.steps, cfg=cfg)
        else:
            opts = replace(
                opts,
                steps=default.steps if opts.steps is None else opts.steps,
                solver=default.solver if opts.solver is None else opts.solver,
                grid=default.grid if opts.grid is None else opts.grid,
                cfg=default.cfg if opts.cfg is None else opts.cfg,
            )
        _check_options(opts)
        return opts

    def named_sampler(self, name: str) -> NamedSampler:
        """The bundle's sampler ``name``; ValueError naming the ones it has otherwise."""
        samplers = self.bundle.manifest.samplers
        if name not in samplers:
            known = ", ".join(samplers) or "none (v2a-export tune-sampler adds them)"
            raise ValueError(f"bundle {self.bundle.root} has no sampler {name!r}; it has: {known}")
        return samplers[name]

    def solve_plan(self, opts: GenerateOptions) -> tuple[np.ndarray, np.ndarray | None]:
        """The time grid and the multistep weight table (None for a named solver) of resolved
        ``opts``: a named sampler's own, or ``time_grid(grid, steps)``."""
        if opts.sampler is not None:
            entry = self.named_sampler(opts.sampler)
            return entry.grid(), entry.table()
        return sampling.time_grid(opts.grid, opts.steps), None

    def generate(
        self,
        video: str | Path | Frames | VideoArray,
        options: GenerateOptions | None = None,
        *,
        callback: Callable[[Progress], None] | None = None,
        **overrides,
    ) -> GenerateResult:
        """Soundtracks for ``video``: a file path, :class:`Frames` at the bundle's rates and
        sizes, or :class:`VideoArray` pixels. Keyword overrides set GenerateOptions fields.
        The whole result in memory; :meth:`stream` hands it over in blocks instead."""
        started = time.perf_counter()
        with self.stream(video, options, callback=callback, spool=None, **overrides) as s:
            t0 = time.perf_counter()  # the watermark is rendered while the tracks are read
            audio = np.concatenate([_join(t) for t in s.tracks], axis=0)  # (K, W)
            timings = dict(s.timings)
            timings["watermark"] += time.perf_counter() - t0
        timings["total"] = time.perf_counter() - started
        fields = {f: getattr(s, f) for f in StreamResult.__dataclass_fields__ if f != "tracks"}
        return GenerateResult(audio=audio, **{**fields, "timings": timings})

    @contextmanager
    def stream(
        self,
        video: str | Path | Frames | VideoArray,
        options: GenerateOptions | None = None,
        *,
        callback: Callable[[Progress], None] | None = None,
        spool: str | Path | None = "",
        **overrides,
    ) -> Iterator[StreamResult]:
        """:meth:`generate` for long inputs: memory bounded by one window, not by the video.

        Each window's audio is cross-faded and appended, as it completes, to a temporary
        float32 file in the directory ``spool`` ("" = the system's temporary directory; None =
        in memory), removed when the ``with`` block ends; the watermark's analysis passes read
        that file, and ``result.tracks`` render the marked tracks block by block for a writer
        (:func:`v2a_runtime.media.mux`, :func:`~v2a_runtime.media.write_audio`).

        A truncated file stops at the last window that decodes (the cross-fade ends there).
        With ``loudness`` set, each track is measured and brought to the target in passes over
        the spool (:func:`v2a_runtime.loudness.normalized`: the limiter's rounds write float64
        spools, 8 bytes/sample, one at a time), the result written to a float32 spool that the
        watermark reads, and the marked track rendered once into another for the final
        true-peak trim; all of them are removed when the ``with`` block ends."""
        opts = self.resolve(options, **overrides)
        m, started = self.bundle.manifest, time.perf_counter()
        plan = self.solve_plan(opts)  # the one time grid (and weights) of this call
        run = _Run(opts, callback)
        with run.stage("decode"):  # 1. the span's frame source (a file is decoded per window)
            source = frame_source(video, m.video, start=opts.start, duration=opts.duration)
        run.windows = plan_windows(source.duration, m.sequence.trained_duration,
                                   overlap=opts.overlap, max_duration=m.sequence.max_duration)
        # 2. encode the prompts, once per call
        with run.stage("text", 0):
            text = self.encode_text(opts.prompt, opts.negative_prompt)
        seeds = tuple(opts.seed + k for k in range(opts.tracks))
        rngs = [np.random.default_rng(s) for s in seeds]  # track k: seed + k, window after window
        sr = m.audio.sample_rate
        offsets = [round(w.start * sr) for w in run.windows]
        joiner = Crossfader(offsets, round(source.duration * sr), opts.tracks)
        span = source.duration  # what the header says; a truncated file decodes less
        store = (MemorySpool(opts.tracks, sr) if spool is None
                 else Spool(opts.tracks, sr, spool or None))  # fmt: skip
        with store, ExitStack() as scratch:  # scratch: the loudness steps' spools
            sampler, digest, done = self.backend.sampler(), b"", 0
            for i, window in enumerate(run.windows):
                # 1. decode the window's frames
                with run.stage("decode", i):
                    frames = source.window(window.start, window.duration)
                digest = digest or hashlib.blake2b(frames.clip.tobytes(), digest_size=16).digest()
                part = self._window(frames, text, plan, sampler, rngs, run, i)  # steps 2-5
                done = i + 1
                if frames.duration < window.duration - TRUNCATED:
                    span = window.start + frames.duration  # the video ends here (decode warned)
                    joiner.end_at(round(span * sr))  # this part is the last one
                store.append(np.clip(joiner.add(part), -1.0, 1.0))  # 6. joined as they come
                if span < source.duration:
                    break
            store.append(np.clip(joiner.finish(), -1.0, 1.0))  # (K, W) in all, trimmed to the span
            last, signals = len(run.windows) - 1, [store.channel(k) for k in range(opts.tracks)]
            with run.stage("loudness", last):  # nothing to do without a target
                signals, levels = self._loudness(signals, opts.loudness, spool, scratch)
            with run.stage("watermark", last):  # 6. every track, rendered as it is read
                tracks, marks = self._watermark(signals, opts, seeds, digest)
            if opts.loudness is not None:
                with run.stage("loudness"):
                    tracks, levels = self._final_levels(tracks, opts.loudness, levels, spool,
                                                        scratch)  # fmt: skip
            run.seconds["total"] = time.perf_counter() - started
            yield StreamResult(
                tracks=tracks, sample_rate=sr, start=float(opts.start), duration=span,
                seeds=seeds, windows=run.windows[:done], timings=dict(run.seconds),
                evaluations=run.evaluations, watermarks=marks, options=opts, loudness=levels,
            )  # fmt: skip

    def _window(
        self, frames: Frames, text: np.ndarray, plan: tuple[np.ndarray, np.ndarray | None],
        sampler: Sampler, rngs: list, run: _Run, i: int,
    ) -> np.ndarray:  # fmt: skip
        """Steps 2-5 for one window: float32 (K, n) audio, n = round(duration * sample rate)."""
        m, opts = self.bundle.manifest, run.options
        latent = m.rates.lengths(frames.duration).latent
        with run.stage("encode", i):  # 2. the video encoders, once per window
            clip, sync = self.encode_video(frames)
        with run.stage("condition", i):  # 3. [cond; uncond], once per window
            conditions = self.condition(clip, sync, text, latent)
        noise = np.stack([
            rng.standard_normal((latent, m.audio.latent_channels), dtype=np.float32)
            for rng in rngs
        ])  # fmt: skip  # (K, L, C)
        with run.stage("sample", i):  # 4. x0 -> x1 with the backend's sampler
            x, evaluations = self.sample(
                noise, conditions, plan[0], cfg=opts.cfg, solver=opts.solver, weights=plan[1],
                sampler=sampler, callback=lambda n, _t, _x: run.progress("sample", i, step=n + 1),
            )  # fmt: skip
        run.evaluations += evaluations
        latents = unnormalise(x, m.audio)  # 5. decode the audio
        with run.stage("vae", i):
            mel = self.sessions["vae_decoder"].run({"latent": latents})["mel"]  # (K, n_mels, M)
        with run.stage("vocoder", i):
            wave = self.sessions["vocoder"].run({"mel": mel})["waveform"]  # (K, 1, W)
        return wave[:, 0, : round(frames.duration * m.audio.sample_rate)]  # (K, n)

    # --- the steps, one graph (or the sampler) each --------------------------------------

    def encode_text(self, prompt: str, negative: str) -> np.ndarray:
        """(2, 77, Dt) text features of [prompt; negative prompt] in one call."""
        ids = self.tokenizer([prompt, negative])  # (2, 77) int64
        return self.sessions["text"].run({"token_ids": ids})["text_features"]

    def encode_video(self, frames: Frames) -> tuple[np.ndarray, np.ndarray]:
        """clip (1, Lc, Dc) and sync (1, Ls, Ds) features; one call per encoder."""
        clip = self.sessions["clip_visual"].run({"frames": np.ascontiguousarray(frames.clip)})
        segments = np.ascontiguousarray(sync_segments(frames.sync))  # (S, 16, Hs, Hs, 3)
        sync = self.sessions["sync_visual"].run({"segments": segments})["sync_features"]
        s, tokens, width = sync.shape  # (S, 8, Ds)
        return clip["clip_features"][None], sync.reshape(1, s * tokens, width)  # (1, Ls, Ds)

    def condition(
        self, clip: np.ndarray, sync: np.ndarray, text: np.ndarray, latent: int
    ) -> dict[str, np.ndarray]:
        """The conditioner's outputs for [cond; uncond] (2 rows each), once per window."""
        return self.sessions["conditioner"].run(
            {
                "clip_features": clip,
                "sync_features": sync,
                "text_features": text[:1],
                "negative_text_features": text[1:],
                "sync_index": self.bundle.manifest.rates.sync_index(sync.shape[1], latent),
            }
        )

    def conditions(
        self,
        video: str | Path | Frames | VideoArray,
        prompt: str = "",
        negative_prompt: str = "",
        *,
        duration: float,
    ) -> dict[str, np.ndarray]:
        """The conditioner's outputs ([cond; uncond], 2 rows each) for the first ``duration``
        seconds of ``video`` as one window, as generate computes them (steps 1-3): for callers
        that drive the denoiser themselves (the sampler tuner, :mod:`v2a_runtime.tuning`)."""
        source = frame_source(video, self.bundle.manifest.video, duration=duration)
        if source.duration < duration - 1e-6:
            raise ValueError(
                f"{_name(video)} has {source.duration:.2f} s of video, {duration:g} s are needed"
            )
        frames = source.window(0.0, duration)
        clip, sync = self.encode_video(frames)
        text = self.encode_text(prompt, negative_prompt)
        latent = self.bundle.manifest.rates.lengths(duration).latent
        return self.condition(clip, sync, text, latent)

    def sample(
        self,
        noise: np.ndarray,
        conditions: dict[str, np.ndarray],
        ts: np.ndarray,
        *,
        cfg: float,
        solver: str,
        weights: np.ndarray | None = None,
        sampler: Sampler | None = None,
        callback=None,
    ) -> tuple[np.ndarray, int]:
        """x₀ = ``noise`` (K, L, C) to x₁ over the grid ``ts``: the conditions batched for
        [cond × K; uncond × K] (only the inputs the manifest gives a batch axis), then the
        backend's sampler (or ``sampler``). ``weights``: the table of the multistep solver
        (a named sampler's). Returns (x₁ normalised, denoiser evaluations)."""
        batched = self.bundle.manifest.components["denoiser"].batched_inputs()
        rows = guidance.condition_rows(noise.shape[0], guidance.is_guided(cfg))
        feeds = guidance.batch_conditions(conditions, batched, rows)
        sampler = sampler or self.backend.sampler()
        return sampler(SampleRequest(noise, feeds, ts, cfg, solver, callback, weights))

    def _loudness(
        self, signals: list[Signal], target: Loudness | None, spool, scratch: ExitStack
    ) -> tuple[list[Signal], tuple[LoudnessReport, ...]]:
        """Every track brought to ``target`` (none: unchanged, no reports), each written to a
        float32 spool (``spool`` as in :meth:`stream`) that lives as long as ``scratch``."""
        if target is None:
            return signals, ()
        out, reports = [], []
        for signal in signals:
            with normalized(signal, target, spool=spool) as (gained, report):
                out.append(scratch.enter_context(spooled(gained, spool)))
            reports.append(report)
        return out, tuple(reports)

    def _final_levels(
        self, tracks: tuple[Track, ...], target: Loudness, reports: tuple[LoudnessReport, ...],
        spool, scratch: ExitStack,
    ) -> tuple[tuple[Track, ...], tuple[LoudnessReport, ...]]:  # fmt: skip
        """After the watermark: each marked track rendered once into a spool, its true peak
        trimmed back under the ceiling (float32 arithmetic, as on the array), and its loudness
        and true peak measured on the audio as returned."""
        sr = self.bundle.manifest.audio.sample_rate
        out, final = [], []
        for track, r in zip(tracks, reports, strict=True):
            marked = scratch.enter_context(spooled_track(track, sr, spool))
            trimmed_signal, _ = trimmed(marked, target.true_peak, dtype="float32")
            after = integrated(trimmed_signal)
            gain = after - r.before if math.isfinite(r.before) else 0.0
            peak = signal_true_peak(trimmed_signal)
            final.append(replace(r, after=after, true_peak=peak, gain_db=gain))
            out.append(Track.of(trimmed_signal))
        return tuple(out), tuple(final)

    def _watermark(
        self, signals: list[Signal], opts: GenerateOptions, seeds: tuple[int, ...], digest: bytes
    ) -> tuple[tuple[Track, ...], tuple[TrackMark, ...]]:
        """Per track (a one-channel signal each): the watermark's analysis passes now, the
        marked blocks when read."""
        if not opts.watermark:
            return tuple(Track.of(s) for s in signals), ()
        model_id = self.bundle.manifest.mark_id  # this bundle's weights, not its variant
        tracks, marks = [], []
        for k, seed in enumerate(seeds):
            gid = (
                _generation_id(opts, seed, digest)
                if opts.generation_id is None
                else opts.generation_id
            )
            payload = make_payload(model_id, gid)
            marked = mark(signals[k], self.key, payload)
            tracks.append(Track(1, signals[k].length, partial(_float32, marked.blocks)))
            marks.append(TrackMark(k, payload, model_id, gid, self.key.key_id, self.key.is_demo))
        return tuple(tracks), tuple(marks)


def unnormalise(x: np.ndarray, audio: AudioSpec) -> np.ndarray:
    """(K, L, C) sampled latent -> (K, C, L) VAE decoder input: x·std + mean per channel
    (the flow works on the latent normalised by the training set's statistics)."""
    mean = np.asarray(audio.latent_mean, dtype=np.float32)  # (C,)
    std = np.asarray(audio.latent_std, dtype=np.float32)  # (C,)
    return np.ascontiguousarray((x * std + mean).transpose(0, 2, 1))  # (K, C, L)


# --- helpers ------------------------------------------------------------------------------


@dataclass
class _Run:
    """One generate call's bookkeeping: wall-clock seconds per stage (STAGES, summed over
    windows), progress events and the denoiser evaluations."""

    options: GenerateOptions
    callback: Callable[[Progress], None] | None
    windows: tuple[Window, ...] = ()
    evaluations: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @contextmanager
    def stage(self, name: str, window: int | None = None) -> Iterator[None]:
        """Time ``name``; announce it first when it belongs to a window."""
        if window is not None:
            self.progress(name, window)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0

    def progress(self, stage: str, window: int, *, step: int = 0) -> None:
        if self.callback is not None:
            event = Progress(stage, window, len(self.windows), step, self.options.steps or 0)
            self.callback(event)


def _float32(blocks: Callable[[], Iterator[np.ndarray]]) -> Iterator[np.ndarray]:
    return (b.astype(np.float32) for b in blocks())


def _join(track: Track) -> np.ndarray:
    parts = list(track.blocks())
    return np.concatenate(parts, axis=1) if parts else np.zeros((track.channels, 0), np.float32)


def _generation_id(opts: GenerateOptions, seed: int, digest: bytes) -> int:
    """24-bit id of one track's request: the options, its seed and the frames' digest."""
    request = {**asdict(opts), "seed": seed, "tracks": None, "generation_id": None}
    if request["sampler"] is None:  # requests without a named sampler keep their old ids
        del request["sampler"]
    h = hashlib.blake2b(json.dumps(request, sort_keys=True).encode(), digest_size=3, key=digest)
    return int.from_bytes(h.digest(), "big")


def _name(video) -> str:
    return str(video) if isinstance(video, (str, Path)) else type(video).__name__


def _check_options(o: GenerateOptions) -> None:
    if o.sampler is None:  # a named sampler was checked with the bundle
        sampling.get_solver(o.solver)
        sampling.get_grid(o.grid)
        sampling.check_steps(o.steps)
    if isinstance(o.seed, bool) or not isinstance(o.seed, int) or not 0 <= o.seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {o.seed!r}")
    if isinstance(o.tracks, bool) or not isinstance(o.tracks, int) or o.tracks < 1:
        raise ValueError(f"tracks must be an integer >= 1, got {o.tracks!r}")
    if not (isinstance(o.cfg, (int, float)) and math.isfinite(o.cfg) and o.cfg >= 0):
        raise ValueError(f"cfg must be a finite number >= 0, got {o.cfg!r}")
    if not (isinstance(o.overlap, (int, float)) and o.overlap >= 0):
        raise ValueError(f"overlap must be >= 0 seconds, got {o.overlap!r}")
    if o.loudness is not None and not isinstance(o.loudness, Loudness):
        raise ValueError(f"loudness must be a Loudness or None, got {o.loudness!r}")
    if o.generation_id is not None and not 0 <= o.generation_id < 2**24:
        raise ValueError(f"generation_id must be in [0, 2**24), got {o.generation_id!r}")
