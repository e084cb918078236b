"""Long inputs in bounded memory (issue 21): the block-wise pieces equal their whole-array
originals, a long file is generated window by window and streamed to the output, and peak RSS
of ``v2a generate`` / ``v2a watermark embed`` does not grow with the length of the input
(measured with ``os.wait4`` on a subprocess). Videos are real PyAV files, small and at 5 fps
so that minutes of video encode in about a second."""

from __future__ import annotations

import os
import subprocess
from contextlib import ExitStack
from fractions import Fraction
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from make_watermark_golden import KEY, PAYLOAD
from make_watermark_golden import hosts as golden_hosts
from media_videos import (
    audio_streams,
    expected_indices,
    frame_times,
    read_index,
    squash_box,
    write_video,
)
from scipy.signal import resample_poly
from v2a_runtime.frames import frame_source
from v2a_runtime.loudness import Loudness, integrated_loudness, normalize, trim_peak
from v2a_runtime.media import mux, write_audio
from v2a_runtime.pipeline import Pipeline, unnormalise
from v2a_runtime.signals import ArraySignal, Resampled, Spool, Track, blocks, ratio
from v2a_runtime.watermark import DEFAULT_CONFIG, demo_key, detect, embed, mark
from v2a_runtime.watermark.features import resample
from v2a_runtime.windows import Crossfader, crossfade, plan_windows

DATA = Path(__file__).parent / "data"
TEST_BUNDLE = DATA / "test_bundle"
SR = 16000
RSS_BOUND = 1.25  # peak RSS of a long input / peak RSS of a short one (the target)


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return Pipeline.load(TEST_BUNDLE)


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    """64×48 H.264 at 5 fps, a keyframe every 5 s: 8 s, 40 s and 3 minutes."""
    root = tmp_path_factory.mktemp("films")
    return {
        s: write_video(root / f"film{s}.mp4", fps=5, frames=5 * s, size=(64, 48), gop=25)
        for s in (8, 40, 180)
    }


# --- block-wise pieces equal their whole-array versions ---------------------------------------


@pytest.mark.parametrize("rates", [(44100, 16000), (16000, 44100), (48000, 16000), (16000, 16000)])
def test_resampled_blocks_equal_the_whole_resample(rates):
    rate_in, rate_out = rates
    x = np.random.default_rng(1).standard_normal((2, 3 * rate_in + 17))
    whole = resample(x, rate_in, rate_out)
    up, down = ratio(rate_in, rate_out)
    if up != down:
        np.testing.assert_array_equal(whole, resample_poly(x, up, down, axis=-1))
    signal = Resampled(ArraySignal(x, rate_in), rate_out)
    assert signal.length == whole.shape[1]
    np.testing.assert_array_equal(np.concatenate(list(blocks(signal, 10007)), axis=1), whole)
    tail = signal.read(signal.length - 50, signal.length + 30)  # zeros after the end
    np.testing.assert_array_equal(tail[:, :50], whole[:, -50:])
    assert not tail[:, 50:].any()


def test_spool_round_trip_and_removal(tmp_path):
    x = np.random.default_rng(2).standard_normal((3, 1000)).astype(np.float32)
    with Spool(3, SR, tmp_path) as spool:
        spool.append(x[:, :300])
        spool.append(x[:, 300:])
        assert spool.path.parent == tmp_path and spool.length == 1000
        got = spool.read(-5, 1005)
        np.testing.assert_array_equal(got[:, 5:1005], x)
        assert not got[:, :5].any() and not got[:, 1005:].any()
        np.testing.assert_array_equal(spool.channel(1).read(10, 20)[0], x[1, 10:20])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("duration", [8.0, 8.5, 15.0, 23.7, 100.3])
def test_crossfader_equals_crossfade(duration):
    rate, rng = 100, np.random.default_rng(3)
    windows = plan_windows(duration, 8.0, overlap=1.0, max_duration=10.0)
    parts = [rng.standard_normal((2, round(w.duration * rate))).astype(np.float32)
             for w in windows]  # fmt: skip
    offsets = [round(w.start * rate) for w in windows]
    total = round(duration * rate)
    joiner = Crossfader(offsets, total, 2)
    pieces = [joiner.add(p) for p in parts]
    assert all(p.shape[1] <= q.shape[1] for p, q in zip(pieces, parts, strict=True))  # bounded
    joined = np.concatenate([*pieces, joiner.finish()], axis=1)
    np.testing.assert_array_equal(joined, crossfade(parts, offsets, total))
    # crossfade() by hand: each part times its ramps, added where it lies
    expected = np.zeros((2, total), np.float32)
    for i, (part, offset) in enumerate(zip(parts, offsets, strict=True)):
        gain = np.ones(part.shape[1], np.float32)
        if i > 0:
            n = offsets[i - 1] + parts[i - 1].shape[1] - offset
            gain[:n] *= np.sin(((np.arange(n) + 0.5) / n * np.pi / 2).astype(np.float32))
        if i + 1 < len(parts):
            n = offset + part.shape[1] - offsets[i + 1]
            gain[-n:] *= np.cos(((np.arange(n) + 0.5) / n * np.pi / 2).astype(np.float32))
        expected[:, offset : offset + part.shape[1]] += part * gain
    np.testing.assert_allclose(joined, expected, atol=1e-6)


def test_crossfader_end_at_equals_crossfade_of_the_decoded_parts():
    """A truncated file: the window that decodes short is the last part, and the stream ends
    where it ends, as crossfade() of the parts up to it (main's in-memory stop)."""
    rate, rng = 100, np.random.default_rng(6)
    windows = plan_windows(30.0, 8.0, overlap=1.0, max_duration=10.0)
    offsets, cut = [round(w.start * rate) for w in windows], 2  # window 2 decodes 7.5 s
    parts = [rng.standard_normal((1, round(w.duration * rate))).astype(np.float32)
             for w in windows[:cut]]  # fmt: skip
    parts.append(rng.standard_normal((1, 750)).astype(np.float32))  # past the next start
    total = offsets[cut] + 750
    joiner = Crossfader(offsets, 30 * rate, 1)
    pieces = [joiner.add(p) for p in parts[:cut]]
    joiner.end_at(total)
    pieces += [joiner.add(parts[cut]), joiner.finish()]
    joined = np.concatenate(pieces, axis=1)
    assert len(windows) > cut + 1 and joined.shape == (1, total)
    np.testing.assert_array_equal(joined, crossfade(parts, offsets[: cut + 1], total))


def test_watermark_in_blocks_equals_the_whole_clip_embedder():
    """``tests/data/watermark_golden.npz``: the in-memory embedder before streaming
    (``python tests/make_watermark_golden.py``): the block-wise one gives the same mark
    (here bit for bit; float summation order allows 1e-6), verdict, z and payload."""
    golden = np.load(DATA / "watermark_golden.npz")
    for name, (x, rate) in golden_hosts().items():
        y = embed(x, rate, KEY, PAYLOAD)
        assert y.dtype == np.float32 and y.shape == x.shape
        np.testing.assert_allclose(y.reshape(-1)[::53], golden[f"{name}_strided"], atol=1e-6)
        signal = ArraySignal(np.atleast_2d(x).astype(np.float64), rate)
        small = mark(signal, KEY, PAYLOAD, block_frames=16).blocks(5000)  # 0.5 s blocks
        small = np.concatenate(list(small), axis=1)
        np.testing.assert_allclose(small.astype(np.float32).reshape(y.shape), y, atol=1e-6)
        d = detect(y, rate, KEY, search="offset")
        assert d.present and d.payload == int(golden[f"{name}_payload"][0]) == PAYLOAD
        assert d.z == pytest.approx(float(golden[f"{name}_z"][0]), rel=1e-6)
        np.testing.assert_allclose(d.per_second_z, golden[f"{name}_per_second"], rtol=1e-6)


# --- generate: window by window, streamed ------------------------------------------------------


def test_long_file_windows_decode_the_right_frames(pipe, films):
    """Each window gets the frames sample-and-hold gives; the last window reaches the end of
    the last frame (at 5 fps: 179.8 s + 0.2 s), so a 3-minute file covers 180 s."""
    path = films[180]
    source = frame_source(path, pipe.bundle.manifest.video)
    windows = plan_windows(source.duration, 8.0, overlap=1.0, max_duration=10.0)
    assert len(windows) == 26
    times = frame_times(path)
    end = times[-1] + Fraction(1, 5)
    for w in (windows[0], windows[13], windows[-1]):
        frames = source.window(w.start, w.duration)
        assert frames.duration == w.duration
        clip = [read_index(x, squash_box(64, 48, 64)) for x in frames.clip]
        sync = [read_index(x, (0, 0, 64, 64)) for x in frames.sync]
        assert clip == expected_indices(times, w.start, 8.0, len(clip), end)
        assert sync == expected_indices(times, w.start, 25.0, len(sync), end)
    assert sync[-4:] == [len(times) - 1] * 4  # 179.84 … 179.96 s: the last frame, held


def test_stream_equals_window_by_window_generation(pipe, films, tmp_path):
    path, steps, m = films[40], 2, pipe.bundle.manifest
    with pipe.stream(path, steps=steps, spool=tmp_path, watermark=False) as s:
        assert len(list(tmp_path.iterdir())) == 1  # the spool, next to where outputs go
        streamed = np.concatenate(list(s.tracks[0].blocks()), axis=1)
        windows = s.windows
    assert list(tmp_path.iterdir()) == []  # removed with the with block
    assert len(windows) == 6 and streamed.shape == (1, round(s.duration * SR))
    # each window by hand through the public steps, then crossfade() of all of them
    source = frame_source(path, m.video)
    text = pipe.encode_text("", "")
    rng, parts = np.random.default_rng(42), []
    from v2a_runtime.sampling import time_grid

    for w in windows:
        frames = source.window(w.start, w.duration)
        latent = m.rates.lengths(frames.duration).latent
        conditions = pipe.condition(*pipe.encode_video(frames), text, latent)
        noise = rng.standard_normal((latent, m.audio.latent_channels), dtype=np.float32)[None]
        x, _ = pipe.sample(noise, conditions, time_grid(m.sampler.grid, steps), cfg=m.sampler.cfg,
                           solver=m.sampler.solver)  # fmt: skip
        mel = pipe.sessions["vae_decoder"].run({"latent": unnormalise(x, m.audio)})["mel"]
        wave = pipe.sessions["vocoder"].run({"mel": mel})["waveform"][:, 0]
        parts.append(wave[:, : round(frames.duration * SR)])
    offsets = [round(w.start * SR) for w in windows]
    expected = np.clip(crossfade(parts, offsets, streamed.shape[1]), -1.0, 1.0)
    np.testing.assert_array_equal(streamed, expected)
    # with the watermark: the streamed tracks equal generate()'s array and carry the mark
    result = pipe.generate(path, steps=steps, tracks=2)
    with pipe.stream(path, steps=steps, tracks=2, spool=tmp_path) as s:
        marked = [np.concatenate(list(t.blocks()), axis=1) for t in s.tracks]
    np.testing.assert_array_equal(np.concatenate(marked), result.audio)
    assert result.watermarks == s.watermarks
    np.testing.assert_array_equal(result.audio[0], embed(expected[0], SR, pipe.key,
                                                         s.watermarks[0].payload))  # fmt: skip


def test_stream_with_loudness_equals_the_steps_on_arrays(pipe, films, tmp_path):
    """Loudness is streamed too (its passes read spool files, removed at the end); the tracks
    equal the steps done by hand on the unmarked arrays (gain, then the watermark, then the
    true-peak trim)."""
    target = Loudness(-9.0, -1.0)  # loud: the limiter works, the final trim too
    with pipe.stream(films[8], steps=1, tracks=2, loudness=target, spool=tmp_path) as s:
        assert all(p.name.startswith(".v2a-spool-") for p in tmp_path.iterdir())
        audio = np.concatenate([np.concatenate(list(t.blocks()), axis=1) for t in s.tracks])
    assert list(tmp_path.iterdir()) == []
    plain = pipe.generate(films[8], steps=1, tracks=2, watermark=False).audio
    for k, track in enumerate(plain):
        gained, _ = normalize(track, SR, target)
        marked = embed(gained, SR, pipe.key, s.watermarks[k].payload)
        np.testing.assert_array_equal(audio[k], trim_peak(np.ravel(marked), SR, target.true_peak))
    assert len(s.loudness) == 2 and all(abs(r.after - target.target) < 1.0 for r in s.loudness)


def test_mux_and_write_audio_of_tracks_equal_the_array_path(films, tmp_path):
    audio = (0.3 * np.random.default_rng(4).standard_normal((2, 42 * SR))).astype(np.float32)
    tracks = [Track.from_array(a[None], block=7777) for a in audio]
    mux(films[40], tmp_path / "a.mp4", audio, SR, start=0.5)
    mux(films[40], tmp_path / "t.mp4", tracks, SR, start=0.5)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "t.mp4").read_bytes()
    film = write_video(tmp_path / "film.avi", codec="mjpeg", pix_fmt="yuvj420p", fps=5,
                       frames=200, size=(64, 48))  # fmt: skip
    mux(film, tmp_path / "t.avi", tracks, SR, start=0.5)  # 16-bit PCM: exact samples
    for k, stream in enumerate(audio_streams(tmp_path / "t.avi")):
        expected = np.concatenate([np.zeros(SR // 2), audio[k]])[: 40 * SR]  # cut to the video
        np.testing.assert_allclose(stream["samples"][0], np.clip(expected, -1, 1), atol=2 / 32768)
    write_audio(tmp_path / "a.flac", audio[0], SR)
    write_audio(tmp_path / "t.flac", tracks[0], SR)
    np.testing.assert_array_equal(sf.read(tmp_path / "a.flac")[0], sf.read(tmp_path / "t.flac")[0])
    bad = Track(1, 10, lambda: iter([np.full((1, 10), np.nan, np.float32)]))
    with pytest.raises(ValueError, match="NaN"):
        mux(films[40], tmp_path / "bad.mp4", [bad], SR)
    assert not (tmp_path / "bad.mp4").exists()


@pytest.mark.parametrize("rate", [44100, 12345])  # 12345: a ratio past the watermark's limit
def test_streamed_sample_rate_change_equals_the_array_path(pipe, films, tmp_path, rate):
    """``--sample-rate`` on a streamed result: each track spooled, resampled per block with
    its context; the samples equal the whole-array resample, and the spool is removed."""
    from v2a_runtime.outputs import _resampled, resample

    expected, _ = resample(pipe.generate(films[8], steps=1, tracks=2).audio, SR, rate)
    with pipe.stream(films[8], steps=1, tracks=2, spool=tmp_path) as s, ExitStack() as scratch:
        tracks, got_rate = _resampled(s, rate, tmp_path, scratch)
        got = np.concatenate([np.concatenate(list(t.blocks()), axis=1) for t in tracks])
    assert got_rate == rate and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    assert list(tmp_path.iterdir()) == []


# --- peak RSS does not grow with the input ------------------------------------------------------


# A child's ru_maxrss starts at its parent's peak (Linux keeps the high-water mark across fork
# and exec), so the command runs under a fresh, small Python that reports its child's peak.
MEASURE = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
           "_, status, usage = os.wait4(p.pid, 0); "
           "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)")


def _peak_rss_mb(args: list[str], cwd: Path) -> float:
    """Peak resident set of one ``v2a`` run (its own rusage, from wait4), in MB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("V2A_WATERMARK_KEY")}
    command = [sys.executable, "-c", MEASURE, sys.executable, "-m", "v2a_runtime.cli", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    status, kilobytes = map(int, done.stdout.split()[-2:])
    assert status == 0, done.stderr
    return kilobytes / 1024


@pytest.mark.parametrize("ext", [".wav", ".mp4"])
def test_generate_peak_rss_does_not_grow_with_the_input(films, tmp_path, ext):
    """8 s vs 3 min: main before streaming measured 239 vs 629 MB here (2.6×) into .wav, and
    244 vs 675 MB (2.8×) into .mp4 before loudness (the default for video outputs: -23 LUFS)
    was streamed; now ≤ 1.25× both (measured 242 → 265 and 244 → 267 MB)."""
    peaks = {}
    for seconds in (8, 180):
        out = tmp_path / f"out{seconds}{ext}"
        args = ["generate", str(films[seconds]), "--bundle", str(TEST_BUNDLE), "--steps", "1",
                "-o", str(out), "-q"]  # fmt: skip
        peaks[seconds] = _peak_rss_mb(args, tmp_path)
        audio = _decoded(out)
        assert abs(len(audio) - seconds * SR) <= 0.2 * SR and audio.std() > 0
        if ext == ".mp4":  # the default loudness target, reached on the whole track
            assert integrated_loudness(audio, SR) == pytest.approx(-23.0, abs=0.5)
    assert peaks[180] <= RSS_BOUND * peaks[8], peaks
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out180{ext}", f"out8{ext}"]


def _decoded(path: Path) -> np.ndarray:
    """The first audio track of ``path`` as float64 mono at SR."""
    if path.suffix == ".wav":
        audio, rate = sf.read(path)
        assert rate == SR
        return audio
    import av

    with av.open(str(path)) as f:
        stream = f.streams.audio[0]
        resampler = av.AudioResampler(format="dbl", layout="mono", rate=SR)
        parts = [p.to_ndarray()[0] for fr in f.decode(stream) for p in resampler.resample(fr)]
    return np.concatenate(parts)


def test_watermark_embed_peak_rss_does_not_grow_with_the_file(tmp_path):
    """30 s vs 5 min of 16 kHz audio: before streaming about 140 bytes per sample (5 min:
    ~700 MB); now ≤ 1.25× the short file's peak, and the long file's mark verifies."""
    rng, peaks = np.random.default_rng(5), {}
    for seconds in (30, 300):
        n = seconds * SR
        t = np.arange(n) / SR
        host = 0.1 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * 330 * t)
        sf.write(tmp_path / f"in{seconds}.wav", host.astype(np.float32), SR, subtype="FLOAT")
        args = ["watermark", "embed", f"in{seconds}.wav", f"out{seconds}.wav", "--payload", "1"]
        peaks[seconds] = _peak_rss_mb(args, tmp_path)
    assert peaks[300] <= RSS_BOUND * peaks[30], peaks
    marked, rate = sf.read(tmp_path / "out300.wav", dtype="float32", frames=60 * SR)
    d = detect(marked, rate, demo_key(), search="offset")
    assert d.present and d.payload == 1


def test_watermark_verify_peak_rss_does_not_grow_with_the_file(tmp_path):
    """16 s vs 5 min of marked 16 kHz audio (the long file: the short one's marked 16 layout
    blocks 18 times over): the in-memory verify grew by ~1.4 MB per second of audio (60 s →
    10 min: 259 → 1118 MB); now ≤ 1.25× the short file's peak, and both verify."""
    n = 16 * DEFAULT_CONFIG.block_frames * DEFAULT_CONFIG.hop  # 16.384 s: whole layout blocks
    t = np.arange(n) / SR
    host = 0.1 * np.random.default_rng(6).standard_normal(n) + 0.2 * np.sin(2 * np.pi * 330 * t)
    marked = embed(host.astype(np.float32), SR, demo_key(), 1)
    peaks = {}
    for name, audio in (("short", marked), ("long", np.tile(marked, 18))):
        sf.write(tmp_path / f"{name}.wav", audio, SR, subtype="FLOAT")
        peaks[name] = _peak_rss_mb(["watermark", "verify", f"{name}.wav"], tmp_path)  # status 0
    assert peaks["long"] <= RSS_BOUND * peaks["short"], peaks
