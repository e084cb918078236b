"""The generate pipeline on the committed test bundle (real onnxruntime sessions, no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from v2a_runtime import sampling
from v2a_runtime.backends.recording import RecordingSession
from v2a_runtime.frames import VideoArray, frames_from_array
from v2a_runtime.media import MediaError, read_frames
from v2a_runtime.pipeline import Pipeline, Progress
from v2a_runtime.watermark import detect
from v2a_runtime.windows import crossfade, plan_windows

TEST_BUNDLE = Path(__file__).parent / "data" / "test_bundle"
SR = 16000


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return Pipeline.load(TEST_BUNDLE)


def counting(pipe: Pipeline) -> Pipeline:
    return pipe.with_sessions(**{n: RecordingSession(s) for n, s in pipe.sessions.items()})


def moving_video(seconds: float, fps: float = 25.0, size=(48, 80), seed: int = 0) -> VideoArray:
    """A bright bar sweeping over noise: every frame differs."""
    rng = np.random.default_rng(seed)
    n = round(seconds * fps)
    h, w = size
    pixels = rng.integers(0, 120, (n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        pixels[i, :, (3 * i) % w] = 255
    return VideoArray(pixels, fps)


def test_same_seed_same_bits_different_seed_different_audio(pipe):
    video = moving_video(2.0)
    a = pipe.generate(video, prompt="rain", steps=6, watermark=False)
    b = pipe.generate(video, prompt="rain", steps=6, watermark=False)
    c = pipe.generate(video, prompt="rain", steps=6, seed=7, watermark=False)
    assert a.audio.shape == (1, 2 * SR) and a.audio.dtype == np.float32
    assert np.array_equal(a.audio, b.audio)
    assert np.sqrt(np.mean((a.audio - c.audio) ** 2)) > 0.1 * np.sqrt(np.mean(a.audio**2))
    assert a.seeds == (42,) and c.seeds == (7,)


def test_prompt_negative_prompt_cfg_and_video_change_the_output(pipe):
    video = moving_video(2.0)
    base = pipe.generate(video, prompt="rain", steps=4, watermark=False).audio
    for change in (
        {"prompt": "wind"},
        {"negative_prompt": "rain"},
        {"cfg": 1.0},
    ):
        other = pipe.generate(video, **{"prompt": "rain", **change}, steps=4, watermark=False)
        assert not np.allclose(other.audio, base, atol=1e-3), change
    other_video = pipe.generate(moving_video(2.0, seed=1), prompt="rain", steps=4, watermark=False)
    assert not np.allclose(other_video.audio, base, atol=1e-3)


def test_tracks_differ_and_track_k_equals_a_run_with_seed_plus_k(pipe):
    video = moving_video(1.6)
    many = pipe.generate(video, steps=5, seed=10, tracks=3, watermark=False)
    assert many.audio.shape == (3, round(1.6 * SR)) and many.seeds == (10, 11, 12)
    for j in range(3):
        for k in range(j + 1, 3):
            assert not np.allclose(many.audio[j], many.audio[k], atol=1e-3)
    single = pipe.generate(video, steps=5, seed=12, watermark=False)
    # the same numbers up to float rounding between batch sizes 6 and 2
    np.testing.assert_allclose(many.audio[2], single.audio[0], atol=2e-5)


def test_stage_call_counts_and_batches(pipe):
    p = counting(pipe)
    k, steps = 2, 5
    r = p.generate(moving_video(3.0), steps=steps, tracks=k, watermark=False)
    calls = {n: s.shapes() for n, s in p.sessions.items()}
    assert len(calls["clip_visual"]) == len(calls["sync_visual"]) == 1  # encoders once
    assert calls["clip_visual"][0]["frames"] == (24, 64, 64, 3)  # 3 s at 8 fps
    assert calls["sync_visual"][0]["segments"] == (8, 16, 64, 64, 3)  # (75 - 16) // 8 + 1
    assert calls["text"] == [{"token_ids": (2, 77)}]  # prompt and negative prompt together
    assert len(calls["conditioner"]) == 1
    assert calls["conditioner"][0]["sync_index"] == (94,)  # ceil(3 · 16000 / 256 / 2)
    assert len(calls["denoiser"]) == steps == r.evaluations  # one call per evaluation
    assert all(c["x"] == (2 * k, 94, 8) and c["t"] == (2 * k,) for c in calls["denoiser"])
    assert calls["vae_decoder"] == [{"latent": (k, 8, 94)}]
    assert calls["vocoder"] == [{"mel": (k, 80, 188)}]


def test_second_order_solver_and_cfg_one(pipe):
    p = counting(pipe)
    r = p.generate(moving_video(1.0), solver="heun", steps=4, cfg=1.0, watermark=False)
    denoiser = p.sessions["denoiser"].shapes()
    assert len(denoiser) == r.evaluations == sampling.evaluations("heun", 4)
    assert all(c["x"][0] == 1 for c in denoiser)  # w = 1: the conditional branch alone


def test_long_video_windows_and_crossfade(pipe):
    p = counting(pipe)
    video = moving_video(20.0, size=(32, 32))
    long = p.generate(video, steps=3, watermark=False)
    assert [(w.start, w.duration) for w in long.windows] == [(0, 8), (6, 8), (12, 8)]
    assert len(p.sessions["conditioner"].shapes()) == 3  # conditioned per window
    assert len(p.sessions["denoiser"].shapes()) == 3 * 3
    assert long.audio.shape == (1, 20 * SR)
    # Window 0 is the first 8 s generated alone (same frames, first noise draw of the seed).
    first = pipe.generate(video, steps=3, duration=8.0, watermark=False).audio[0]
    np.testing.assert_array_equal(long.audio[0, : 6 * SR], first[: 6 * SR])
    # In the overlap [6 s, 8 s) window 0 fades out with cos: the residual is window 1 · sin.
    ramp = (np.arange(2 * SR) + 0.5) / (2 * SR) * np.pi / 2
    rest = long.audio[0, 6 * SR : 8 * SR] - first[6 * SR :] * np.cos(ramp)
    assert np.all(np.abs(rest) <= np.sin(ramp) * 1.0 + 1e-6)  # |window 1| <= 1
    # Continuity: no silent gap and no loudness jump at the seams (0.25 s blocks).
    rms = np.sqrt(np.mean(long.audio[0].reshape(80, -1) ** 2, axis=1))
    assert rms.min() > 0.5 * np.median(rms) and rms.max() < 2.0 * np.median(rms)


def test_crossfade_is_equal_power():
    n, total = 1000, 2500
    ones, zeros = np.ones((1, n), np.float32), np.zeros((1, n), np.float32)
    out_a = crossfade([ones, zeros, zeros], [0, 800, 1500], total)[0]  # part 0 fades out
    out_b = crossfade([zeros, ones, zeros], [0, 800, 1500], total)[0]  # part 1 fades in/out
    assert np.all(out_a[:800] == 1) and np.all(out_b[1000:1500] == 1)
    overlap = slice(800, 1000)
    np.testing.assert_allclose(out_a[overlap] ** 2 + out_b[overlap] ** 2, 1.0, atol=1e-6)
    assert np.all(np.diff(out_a[overlap]) < 0) and np.all(np.diff(out_b[overlap]) > 0)


@pytest.mark.parametrize(
    "duration, expected",
    [
        (3.0, [(0, 3.0)]),
        (8.5, [(0, 8.5)]),
        (9.0, [(0, 9.0)]),  # up to max_duration: one window, not two of 8 s
        (10.0, [(0, 10.0)]),
        (10.5, [(0, 8), (2, 8.5)]),
        (15.0, [(0, 8), (7, 8)]),
        (23.7, [(0, 8), (5, 8), (10, 8), (15, 8.7)]),
    ],
)
def test_plan_windows(duration, expected):
    windows = plan_windows(duration, 8.0, overlap=1.0, max_duration=10.0)
    assert [(w.start, pytest.approx(w.duration)) for w in windows] == expected
    for a, b in zip(windows[:-1], windows[1:], strict=True):
        assert a.start + a.duration - b.start >= 1.0  # at least the overlap
    assert windows[-1].start + windows[-1].duration == pytest.approx(duration)


def test_raw_frames_file_and_frames_inputs_agree(pipe, tmp_path):
    import av

    video = moving_video(2.0, size=(64, 96))
    path = tmp_path / "v.avi"  # MJPEG at high quality: close to the raw pixels
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuvj444p"
        stream.options = {"qmin": "1", "qmax": "1"}
        for pixels in video.pixels:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode(None))
    from_file = pipe.generate(path, steps=4, watermark=False)
    frames = read_frames(path, clip_size=64, sync_size=64)
    from_frames = pipe.generate(frames, steps=4, watermark=False)
    np.testing.assert_array_equal(from_file.audio, from_frames.audio)
    from_pixels = pipe.generate(video, steps=4, watermark=False)
    assert from_pixels.audio.shape == from_file.audio.shape
    corr = np.corrcoef(from_pixels.audio[0], from_file.audio[0])[0, 1]
    assert corr > 0.9  # same video up to JPEG loss


def test_frames_from_array_selects_frames_by_time(pipe):
    # Frame i is a flat grey of value 4·i; 30 fps -> 8 fps takes frame ceil(k · 30 / 8).
    n = 60
    pixels = np.repeat((np.arange(n, dtype=np.uint8) * 4)[:, None, None, None], 3, axis=3)
    pixels = np.ascontiguousarray(np.broadcast_to(pixels, (n, 36, 50, 3)))
    frames = frames_from_array(VideoArray(pixels, 30.0), pipe.bundle.manifest.video)
    assert frames.clip.shape == (16, 64, 64, 3) and frames.sync.shape == (50, 64, 64, 3)
    clip_values = frames.clip[:, 32, 32, 0].astype(int)
    expected = [4 * int(np.ceil(k * 30 / 8 - 1e-6)) for k in range(16)]
    assert np.all(np.abs(clip_values - expected) <= 1)  # the scaler's rounding
    assert frames.duration == 2.0


def test_watermark_carries_model_and_generation_id(pipe):
    r = pipe.generate(moving_video(3.0), steps=4, tracks=2)
    assert len(r.watermarks) == 2
    for k, mark in enumerate(r.watermarks):
        assert mark.model_id == pipe.bundle.manifest.mark_id and mark.demo_key
        found = detect(r.audio[k], SR, pipe.key)
        assert found.present and found.payload == mark.payload
    assert r.watermarks[0].generation_id != r.watermarks[1].generation_id


def test_progress_events_and_timings(pipe):
    events: list[Progress] = []
    r = pipe.generate(moving_video(1.0), steps=3, watermark=False, callback=events.append)
    samples = [(e.step, e.steps) for e in events if e.stage == "sample" and e.step]
    assert samples == [(1, 3), (2, 3), (3, 3)]
    assert {"decode", "encode", "condition", "vae", "vocoder"} <= {e.stage for e in events}
    assert set(r.timings) >= {"decode", "encode", "sample", "vocoder", "total"}
    assert all(v >= 0 for v in r.timings.values())


@pytest.mark.parametrize(
    "override, message",
    [
        ({"solver": "rk45"}, r"unknown solver 'rk45'"),
        ({"tracks": 0}, r"tracks must be an integer >= 1"),
        ({"cfg": -1.0}, r"cfg must be a finite number >= 0"),
        ({"seed": -3}, r"seed must be an integer"),
        ({"duration": 0.5}, r"shorter than one sync segment"),
        ({"start": 1.8}, r"only 0.20 s of video from 1.8 s"),
    ],
)
def test_bad_options_are_value_errors(pipe, override, message):
    with pytest.raises(ValueError, match=message):
        pipe.generate(moving_video(2.0), **override)


def test_too_short_video_is_a_media_error(pipe):
    with pytest.raises(MediaError, match=r"shorter than one sync segment \(0.64 s"):
        pipe.generate(moving_video(0.5))


def test_long_file_is_decoded_per_window_like_slices(pipe, tmp_path):
    from media_videos import write_video

    path = write_video(tmp_path / "long.avi", codec="mjpeg", pix_fmt="yuvj420p", frames=300,
                       size=(48, 32), gop=25)  # fmt: skip
    from_file = pipe.generate(path, steps=2, watermark=False)  # windows decoded with a seek
    assert [(w.start, w.duration) for w in from_file.windows] == [(0, 8), (4, 8)]
    frames = read_frames(path, clip_size=64, sync_size=64)  # decoded once, sliced
    from_frames = pipe.generate(frames, steps=2, watermark=False)
    np.testing.assert_array_equal(from_file.audio, from_frames.audio)
    assert from_file.audio.shape == (1, 12 * SR)


def test_generate_with_start_and_mux_put_the_sound_where_the_span_begins(pipe, tmp_path):
    from media_videos import audio_streams, write_video
    from v2a_runtime.media import mux

    video = write_video(tmp_path / "in.avi", codec="mjpeg", pix_fmt="yuvj420p", frames=100,
                        size=(64, 48))  # fmt: skip  # 4 s at 25 fps
    result = pipe.generate(video, start=2.0, steps=2, watermark=False)
    assert result.start == 2.0 and result.audio.shape == (1, 2 * SR)
    mux(video, tmp_path / "out.avi", result.audio, SR, start=result.start)
    (track,) = audio_streams(tmp_path / "out.avi")
    samples = track["samples"][0]
    assert track["rate"] == SR and np.abs(samples[: 2 * SR]).max() == 0  # before the span
    np.testing.assert_allclose(samples[2 * SR : 4 * SR], result.audio[0], atol=1 / 32768)
