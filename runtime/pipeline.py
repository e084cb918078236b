"""The generate pipeline: video (file, frames or pixels) + prompts -> watermarked soundtracks.

``Pipeline.load(bundle_dir, backend="cpu")`` does all the I/O (bundle validation, one session
per component, tokenizer, watermark key); ``Pipeline.generate(video, ...)`` then runs, per
window of the video (one window up to the model's trained duration, DESIGN.md §3):

1. decode: both frame streams of the window (PyAV, seek + stop early);
2. encode: ``clip_visual`` once, ``sync_visual`` once (all segments in one batch);
   ``text`` runs once per call for [prompt; negative prompt];
3. condition: ``conditioner`` once, for [cond; uncond];
4. sample: x₀ ~ N(0, I) per track, then one ``denoiser`` call per solver evaluation on the
   batch [cond × K; uncond × K] (K = tracks), v = w·v_cond + (1 − w)·v_uncond;
5. decode audio: un-normalise (``latent_std``, ``latent_mean``), ``vae_decoder``, ``vocoder``.

Windows are cross-faded (equal power, :mod:`v2a_runtime.windows`), the result is trimmed to the
video span, and every track gets the keyed watermark (payload: model id + generation id).

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import sampling
from .backends import Session, load_session
from .bundle import COMPONENTS, Bundle, check_io, load_bundle
from .frames import VideoArray, frame_source
from .media import Frames, sync_segments
from .sequence import sequence_lengths, sync_index
from .tokenizer import Tokenizer
from .watermark import WatermarkKey, embed, load_key, make_payload
from .windows import Window, crossfade, plan_windows

_LOGGER = logging.getLogger(__name__)

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "default_bundle"
STAGES = ("decode", "text", "encode", "condition", "sample", "vae", "vocoder", "watermark")


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
    cfg: float | None = None  # classifier-free guidance weight w
    overlap: float = 1.0  # seconds of cross-fade between windows of a long video
    watermark: bool = True  # embed the keyed watermark in every track
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
    duration: float  # seconds of video covered
    seeds: tuple[int, ...]  # one per track
    windows: tuple[Window, ...]
    timings: dict[str, float]  # seconds per stage (STAGES), summed over windows, plus "total"
    evaluations: int  # denoiser calls
    watermarks: tuple[TrackMark, ...]  # empty when options.watermark is False
    options: GenerateOptions  # with the bundle's defaults filled in


@dataclass(frozen=True)
class Pipeline:
    """A loaded bundle on one backend. Build with :meth:`load`; reusable for many videos."""

    bundle: Bundle
    sessions: dict[str, Session]
    tokenizer: Tokenizer
    key: WatermarkKey
    backend: str = "cpu"

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
        if backend == "tensorrt":  # the bundle's engines (engines/engines.json), keys checked
            from .backends.tensorrt import load_engines

            sessions = load_engines(bundle, verify=verify)
        else:
            sessions = {
                n: load_session(bundle.path(n), backend, threads=threads) for n in COMPONENTS
            }
        for name in COMPONENTS:
            check_io(name, bundle.manifest.components[name], sessions[name])
        tokenizer = Tokenizer.load(
            bundle.tokenizer_path, context_length=bundle.manifest.tokenizer.context_length
        )
        return cls(bundle, sessions, tokenizer, load_key(key_file), backend)

    def resolve(self, options: GenerateOptions | None = None, **overrides) -> GenerateOptions:
        """``options`` with ``overrides`` applied, bundle defaults filled in, and checked."""
        opts = replace(options or GenerateOptions(), **overrides)
        default = self.bundle.manifest.sampler
        opts = replace(
            opts,
            steps=default.steps if opts.steps is None else opts.steps,
            solver=default.solver if opts.solver is None else opts.solver,
            grid=default.grid if opts.grid is None else opts.grid,
            cfg=default.cfg if opts.cfg is None else opts.cfg,
        )
        _check_options(opts)
        return opts

    def generate(
        self,
        video: str | Path | Frames | VideoArray,
        options: GenerateOptions | None = None,
        *,
        callback: Callable[[Progress], None] | None = None,
        **overrides,
    ) -> GenerateResult:
        """Soundtracks for ``video``: a file path, :class:`Frames` at the bundle's rates and
        sizes, or :class:`VideoArray` pixels. Keyword overrides set GenerateOptions fields."""
        opts = self.resolve(options, **overrides)
        m = self.bundle.manifest
        timer = _Timer()
        started = time.perf_counter()
        with timer("decode"):
            source = frame_source(video, m.video, start=opts.start, duration=opts.duration)
        windows = plan_windows(
            source.duration,
            m.sequence.trained_duration,
            overlap=opts.overlap,
            max_duration=m.sequence.max_duration,
        )
        with timer("text"):
            text = self._encode_text(opts.prompt, opts.negative_prompt)
        seeds = tuple(opts.seed + k for k in range(opts.tracks))
        rngs = [np.random.default_rng(s) for s in seeds]
        run = _Run(opts, windows, timer, callback)
        parts, offsets, digest = [], [], b""
        for i, window in enumerate(windows):
            run.progress("decode", i)
            with timer("decode"):
                frames = source.window(window.start, window.duration)
            digest = digest or hashlib.blake2b(frames.clip.tobytes(), digest_size=16).digest()
            parts.append(self._generate_window(frames, text, rngs, run, i))
            offsets.append(round(window.start * m.audio.sample_rate))
        total = round(source.duration * m.audio.sample_rate)
        audio = np.clip(crossfade(parts, offsets, total), -1.0, 1.0)  # (K, W)
        run.progress("watermark", len(windows) - 1)
        with timer("watermark"):
            audio, marks = self._watermark(audio, opts, seeds, digest)
        timer.seconds["total"] = time.perf_counter() - started
        return GenerateResult(
            audio=audio,
            sample_rate=m.audio.sample_rate,
            duration=source.duration,
            seeds=seeds,
            windows=windows,
            timings=dict(timer.seconds),
            evaluations=run.evaluations,
            watermarks=marks,
            options=opts,
        )

    # --- stages ---------------------------------------------------------------------------

    def _encode_text(self, prompt: str, negative: str) -> np.ndarray:
        """(2, 77, Dt) text features of [prompt; negative prompt] in one call."""
        ids = self.tokenizer([prompt, negative])  # (2, 77) int64
        return self.sessions["text"].run({"token_ids": ids})["text_features"]

    def _generate_window(
        self, frames: Frames, text: np.ndarray, rngs: list, run: _Run, i: int
    ) -> np.ndarray:
        """float32 (K, n) audio of one window, n = round(window duration * sample rate)."""
        m = self.bundle.manifest
        lengths = sequence_lengths(
            frames.duration,
            sample_rate=m.audio.sample_rate,
            hop_length=m.audio.hop_length,
            clip_fps=m.video.clip_fps,
            sync_fps=m.video.sync_fps,
        )
        run.progress("encode", i)
        with run.timer("encode"):
            clip, sync = self._encode_video(frames)
        run.progress("condition", i)
        with run.timer("condition"):
            conds = self._condition(clip, sync, text, lengths.latent)
        noise = np.stack(
            [
                rng.standard_normal((lengths.latent, m.audio.latent_channels), dtype=np.float32)
                for rng in rngs
            ]
        )  # (K, L, C)
        run.progress("sample", i)
        with run.timer("sample"):
            x = self._sample(noise, conds, run, i)
        audio = self._decode_audio(x, run, i)  # (K, W)
        return audio[:, : round(frames.duration * m.audio.sample_rate)]

    def _encode_video(self, frames: Frames) -> tuple[np.ndarray, np.ndarray]:
        """clip (1, Lc, Dc) and sync (1, Ls, Ds) features; one call per encoder."""
        clip = self.sessions["clip_visual"].run({"frames": np.ascontiguousarray(frames.clip)})
        segments = np.ascontiguousarray(sync_segments(frames.sync))  # (S, 16, Hs, Hs, 3)
        sync = self.sessions["sync_visual"].run({"segments": segments})["sync_features"]
        s, tokens, width = sync.shape  # (S, 8, Ds)
        return clip["clip_features"][None], sync.reshape(1, s * tokens, width)  # (1, Ls, Ds)

    def _condition(
        self, clip: np.ndarray, sync: np.ndarray, text: np.ndarray, latent: int
    ) -> dict[str, np.ndarray]:
        """The conditioner's outputs for [cond; uncond] (2 rows each), once per window."""
        return self.sessions["conditioner"].run(
            {
                "clip_features": clip,
                "sync_features": sync,
                "text_features": text[:1],
                "negative_text_features": text[1:],
                "sync_index": sync_index(sync.shape[1], latent),
            }
        )

    def _sample(self, x: np.ndarray, conds: dict, run: _Run, i: int) -> np.ndarray:
        """Integrate from noise (t = 0) to data (t = 1); one denoiser call per evaluation."""
        opts, k = run.options, x.shape[0]
        guided = opts.cfg != 1.0  # w = 1 is the conditional branch alone: skip the other half
        rows = np.array([0] * k + [1] * k if guided else [0] * k)  # [cond × K; uncond × K]
        feeds = {n: (v if n.endswith("_rope") else v[rows]) for n, v in conds.items()}
        denoiser, w = self.sessions["denoiser"], opts.cfg
        device = getattr(denoiser, "device_sampler", None)  # backends.cuda.loop: x stays there
        if device is not None:
            x, n = device(
                x,
                feeds,
                sampling.time_grid(opts.grid, opts.steps),
                cfg=w if guided else None,
                solver=opts.solver,
                callback=lambda n, _t, _x: run.progress("sample", i, step=n + 1),
            )
            run.evaluations += n
            return x

        def velocity(x: np.ndarray, t: float) -> np.ndarray:
            xb = np.concatenate([x, x]) if guided else x  # (2K, L, C)
            tb = np.full(xb.shape[0], t, dtype=np.float32)  # (2K,)
            v = denoiser.run({"x": xb, "t": tb, **feeds})["velocity"]  # (2K, L, C)
            run.evaluations += 1
            return w * v[:k] + (1.0 - w) * v[k:] if guided else v  # (K, L, C)

        def step(n: int, _t: float, _x: np.ndarray) -> None:
            run.progress("sample", i, step=n + 1)

        return sampling.sample(
            velocity, x, solver=opts.solver, grid=opts.grid, steps=opts.steps, callback=step
        )

    def _decode_audio(self, x: np.ndarray, run: _Run, i: int) -> np.ndarray:
        """(K, L, C) normalised latent -> float32 (K, W) waveform."""
        a = self.bundle.manifest.audio
        mean = np.asarray(a.latent_mean, dtype=np.float32)
        std = np.asarray(a.latent_std, dtype=np.float32)
        latent = np.ascontiguousarray((x * std + mean).transpose(0, 2, 1))  # (K, C, L)
        run.progress("vae", i)
        with run.timer("vae"):
            mel = self.sessions["vae_decoder"].run({"latent": latent})["mel"]  # (K, n_mels, M)
        run.progress("vocoder", i)
        with run.timer("vocoder"):
            wave = self.sessions["vocoder"].run({"mel": mel})["waveform"]  # (K, 1, W)
        return wave[:, 0]  # (K, W)

    def _watermark(
        self, audio: np.ndarray, opts: GenerateOptions, seeds: tuple[int, ...], digest: bytes
    ) -> tuple[np.ndarray, tuple[TrackMark, ...]]:
        if not opts.watermark:
            return audio, ()
        model_id = self.bundle.manifest.model.model_id
        sr = self.bundle.manifest.audio.sample_rate
        out, marks = np.empty_like(audio), []
        for k, seed in enumerate(seeds):
            gid = (
                _generation_id(opts, seed, digest)
                if opts.generation_id is None
                else (opts.generation_id)
            )
            payload = make_payload(model_id, gid)
            out[k] = embed(audio[k], sr, self.key, payload)
            marks.append(TrackMark(k, payload, model_id, gid, self.key.key_id, self.key.is_demo))
        return out, tuple(marks)


# --- helpers ------------------------------------------------------------------------------


class _Timer:
    """Accumulates wall-clock seconds per stage for one generate call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {s: 0.0 for s in STAGES}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0


@dataclass
class _Run:
    """Per-call state shared by the stages: options, timer, progress and the call count."""

    options: GenerateOptions
    windows: tuple[Window, ...]
    timer: _Timer
    callback: Callable[[Progress], None] | None
    evaluations: int = field(default=0)

    def progress(self, stage: str, window: int, *, step: int = 0) -> None:
        if self.callback is not None:
            event = Progress(stage, window, len(self.windows), step, self.options.steps or 0)
            self.callback(event)


def _generation_id(opts: GenerateOptions, seed: int, digest: bytes) -> int:
    """24-bit id of one track's request: the options, its seed and the frames' digest."""
    request = {**asdict(opts), "seed": seed, "tracks": None, "generation_id": None}
    h = hashlib.blake2b(json.dumps(request, sort_keys=True).encode(), digest_size=3, key=digest)
    return int.from_bytes(h.digest(), "big")


def _check_options(o: GenerateOptions) -> None:
    sampling.get_solver(o.solver)
    sampling.time_grid(o.grid, o.steps)  # ValueError naming the grids or the bad step count
    if isinstance(o.seed, bool) or not isinstance(o.seed, int) or not 0 <= o.seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {o.seed!r}")
    if isinstance(o.tracks, bool) or not isinstance(o.tracks, int) or o.tracks < 1:
        raise ValueError(f"tracks must be an integer >= 1, got {o.tracks!r}")
    if not (isinstance(o.cfg, (int, float)) and math.isfinite(o.cfg) and o.cfg >= 0):
        raise ValueError(f"cfg must be a finite number >= 0, got {o.cfg!r}")
    if not (isinstance(o.overlap, (int, float)) and o.overlap >= 0):
        raise ValueError(f"overlap must be >= 0 seconds, got {o.overlap!r}")
    if o.generation_id is not None and not 0 <= o.generation_id < 2**24:
        raise ValueError(f"generation_id must be in [0, 2**24), got {o.generation_id!r}")
