"""Decoding: exact sample-and-hold frame selection on real files made with PyAV.

Every test video shows its frame index (tests/media_videos.py), so each output frame is read
back and compared with the index the rule "target tau_k = start + k/fps gets the first frame
whose timestamp >= tau_k" gives for the file's actual timestamps.
"""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest
import soundfile as sf
from media_videos import (
    expected_indices,
    frame_times,
    index_image,
    read_index,
    squash_box,
    write_video,
)
from v2a_runtime.media import MediaError, probe, read_frames, sync_segments
from v2a_runtime.sequence import sequence_lengths

SIZE = 64  # clip and sync frame size of the tiny model
# variable frame rate: gaps from 5 ms to 200 ms, presentation times in ms
VFR_MS = [
    int(t)
    for t in """0 30 100 110 200 260 400 405 410 600 700 760 900 950
    1000 1200 1210 1300 1500 1700 1740""".split()
]

VIDEOS = {
    # name: (file name, write_video arguments, display size)
    "h264_mp4_30fps": ("a.mp4", dict(fps=30, frames=60), (160, 120)),
    "vp9_webm_24fps": ("b.webm", dict(codec="libvpx-vp9", fps=24, frames=48), (160, 120)),
    "mjpeg_avi_25fps": ("c.avi", dict(codec="mjpeg", pix_fmt="yuvj420p"), (160, 120)),
    # a phone video: landscape-coded pictures, display matrix -90 (shown turned clockwise)
    "phone_portrait_mov": ("d.mov", dict(size=(120, 160), rotation=-90), (120, 160)),
    "rotated_90_mp4": ("e.mp4", dict(size=(120, 160), rotation=90), (120, 160)),
    "rotated_180_mkv": ("f.mkv", dict(rotation=180), (160, 120)),
    "native_portrait_mp4": ("g.mp4", dict(size=(120, 160), fps=24, frames=48), (120, 160)),
    # odd sizes cannot be 4:2:0; H.264 High 4:4:4 stores them as they are
    "odd_321x239_mp4": ("h.mp4", dict(size=(321, 239), pix_fmt="yuv444p"), (321, 239)),
    "vfr_mkv": ("i.mkv", dict(times_ms=VFR_MS), (160, 120)),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    return {key: write_video(root / name, **kwargs) for key, (name, kwargs, _) in VIDEOS.items()}


def _check_selection(path, display, frames, start):
    times = frame_times(path)
    width, height = display
    clip = [read_index(x, squash_box(width, height, SIZE)) for x in frames.clip]
    sync = [read_index(x, (0, 0, SIZE, SIZE)) for x in frames.sync]
    assert clip == expected_indices(times, start, 8.0, len(clip))
    assert sync == expected_indices(times, start, 25.0, len(sync))


@pytest.mark.parametrize("key", list(VIDEOS))
@pytest.mark.parametrize("start", [0.0, 0.7])
def test_sample_and_hold_selection(videos, key, start):
    path, display = videos[key], VIDEOS[key][2]
    frames = read_frames(path, start=start, clip_size=SIZE, sync_size=SIZE)
    assert frames.start == start
    assert frames.clip.dtype == np.uint8 and frames.sync.dtype == np.uint8
    assert frames.clip.shape == (int(8 * frames.duration), SIZE, SIZE, 3)
    assert frames.sync.shape == (int(25 * frames.duration), SIZE, SIZE, 3)
    # clamped to the last target each stream can fill (MMAudio's rule)
    last = float(frame_times(path)[-1]) - start
    assert frames.duration == min((int(last * 8 + 1e-6) + 1) / 8, (int(last * 25 + 1e-6) + 1) / 25)
    _check_selection(path, display, frames, start)


def test_span_in_the_middle(videos):
    path = videos["vfr_mkv"]
    frames = read_frames(path, start=0.35, duration=1.0, clip_size=SIZE, sync_size=SIZE)
    assert (frames.duration, len(frames.clip), len(frames.sync)) == (1.0, 8, 25)
    _check_selection(path, VIDEOS["vfr_mkv"][2], frames, 0.35)


def test_probe(videos):
    info = probe(videos["phone_portrait_mov"])
    assert (info.width, info.height, info.rotation) == (120, 160, 270)
    assert info.duration == pytest.approx(2.0) and info.fps == 25.0
    assert (info.video_codec, info.has_audio, info.audio_codec) == ("h264", False, None)
    assert info.container.startswith("mov")
    info = probe(videos["vp9_webm_24fps"])
    assert (info.width, info.height, info.rotation, info.fps) == (160, 120, 0, 24.0)
    assert info.video_codec == "vp9" and info.container.startswith("matroska")
    assert probe(videos["rotated_180_mkv"]).rotation == 180


def test_probe_audio_track(tmp_path):
    info = probe(write_video(tmp_path / "a.mp4", frames=25, audio="aac"))
    assert info.has_audio and info.audio_codec == "aac"


def test_colours_survive_conversion(tmp_path):
    # a flat colour must come out as itself (colour matrix and range right) within coding error
    path = tmp_path / "flat.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"crf": "10"}
        picture = np.empty((64, 96, 3), np.uint8)
        picture[:] = (200, 100, 50)
        for _ in range(20):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(stream.encode(None))
    frames = read_frames(path, clip_size=32, sync_size=32)
    for stream_frames in (frames.clip, frames.sync):
        mean = stream_frames.reshape(-1, 3).mean(axis=0)  # (3,)
        assert np.abs(mean - (200, 100, 50)).max() <= 3, mean


def test_sync_segments_view(videos):
    frames = read_frames(videos["h264_mp4_30fps"], clip_size=SIZE, sync_size=SIZE)
    segments = sync_segments(frames.sync)
    lengths = sequence_lengths(frames.duration, sample_rate=16000, hop_length=256)
    assert segments.shape == (lengths.sync_segments, 16, SIZE, SIZE, 3)
    assert np.shares_memory(segments, frames.sync)
    for s in (0, 1, len(segments) - 1):
        np.testing.assert_array_equal(segments[s], frames.sync[8 * s : 8 * s + 16])
    with pytest.raises(ValueError, match="Fs >= 16"):
        sync_segments(frames.sync[:15])


def test_requested_duration_longer_than_video_is_clamped(videos, caplog):
    with caplog.at_level(logging.WARNING, logger="v2a_runtime.media"):
        frames = read_frames(
            videos["mjpeg_avi_25fps"], duration=5.0, clip_size=SIZE, sync_size=SIZE
        )
    assert frames.duration == 2.0 and len(frames.sync) == 50 and len(frames.clip) == 16
    assert "only 2.000 s of video" in caplog.text


def _corrupt_packets(src, dst, predicate):
    """Copy ``src`` with the payload of every video packet whose time satisfies ``predicate``
    zeroed (container structure intact: each payload is located by its bytes)."""
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as container:
        for p in container.demux(video=0):
            if p.size and predicate(float(p.pts * p.time_base)):
                offset = data.index(bytes(p), max(p.pos - 64, 0))
                data[offset : offset + p.size] = bytes(p.size)
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def long_mjpeg(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    return write_video(root / "long.avi", codec="mjpeg", pix_fmt="yuvj420p", frames=100)


def test_stops_at_the_end_of_the_span(long_mjpeg, tmp_path, caplog):
    # the second half is undecodable: a span in the first half never touches it
    path = _corrupt_packets(long_mjpeg, tmp_path / "bad_end.avi", lambda t: t >= 2.0)
    with caplog.at_level(logging.WARNING, logger="v2a_runtime.media"):
        frames = read_frames(path, duration=1.5, clip_size=SIZE, sync_size=SIZE)
    assert frames.duration == 1.5 and "undecodable" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="v2a_runtime.media"):
        frames = read_frames(path, clip_size=SIZE, sync_size=SIZE)  # to the end: skips them
    assert frames.duration == 2.0 and "skipped 50 undecodable" in caplog.text


def test_seeks_to_the_start(long_mjpeg, tmp_path, caplog):
    # the first half is undecodable: a span in the second half must be reached by seeking
    path = _corrupt_packets(long_mjpeg, tmp_path / "bad_start.avi", lambda t: t < 2.0)
    with caplog.at_level(logging.WARNING, logger="v2a_runtime.media"):
        frames = read_frames(path, start=2.5, duration=1.0, clip_size=SIZE, sync_size=SIZE)
    assert "undecodable" not in caplog.text
    _check_selection(path, (160, 120), frames, 2.5)


def test_skips_corrupt_packets_and_holds(long_mjpeg, tmp_path):
    # frames 10..19 broken: their targets get frame 20, the next decodable one
    path = _corrupt_packets(long_mjpeg, tmp_path / "hole.avi", lambda t: 0.39 < t < 0.79)
    frames = read_frames(path, duration=1.0, clip_size=SIZE, sync_size=SIZE)
    sync = [read_index(x, (0, 0, SIZE, SIZE)) for x in frames.sync]
    assert sync == [*range(10), *[20] * 11, *range(21, 25)]


def test_errors(tmp_path, long_mjpeg):
    def fails(path, match, **kwargs):
        with pytest.raises(MediaError, match=match) as info:
            read_frames(path, clip_size=SIZE, sync_size=SIZE, **kwargs)
        assert "\n" not in str(info.value) and str(path) in str(info.value)

    fails(tmp_path / "missing.mp4", "no such file")
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    fails(tmp_path / "notes.mp4", "not a readable video")
    sf.write(tmp_path / "tone.wav", np.zeros(16000, np.float32), 16000)
    fails(tmp_path / "tone.wav", "no video stream")
    fails(
        _corrupt_packets(long_mjpeg, tmp_path / "dead.avi", lambda _: True),
        "no decodable video frames",
    )
    fails(write_video(tmp_path / "short.mp4", frames=10), r"only 0\.38 s of video.*0\.64 s")
    fails(long_mjpeg, r"start 9 s is past the end of the video \(4\.00 s\)", start=9.0)
    with pytest.raises(ValueError, match="start must be"):
        read_frames(long_mjpeg, start=-1.0)
    with pytest.raises(ValueError, match="duration must be"):
        read_frames(long_mjpeg, duration=0.0)


def test_index_pattern_round_trip():
    # the helper itself: every index reads back from a full-size picture (grid at x 20..140)
    for i in (0, 1, 255, 4095, 40000):
        assert read_index(index_image(i, 160, 120), (0, 20, 120, 140)) == i


def test_resize_matches_reference_bicubic(tmp_path):
    # The reference resizes full frames with torchvision's antialiased bicubic; we use
    # FFmpeg's bicubic scaler. Same decoded picture in, |difference| <= 8/255, mean <= 0.5.
    torch = pytest.importorskip("torch")
    width, height = 640, 360
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 128 + 100 * np.sin(xx / 23 + yy / 31)
    green = 128 + 100 * np.cos(xx / 17 - yy / 29)
    picture = np.stack([red, green, 128 + 80 * np.sin((xx + yy) / 41)], axis=-1)  # (H, W, 3)
    picture += np.random.default_rng(0).normal(0, 20, picture.shape)  # fine detail
    picture[100:200, 300:310] = 255  # a hard edge
    picture = picture.clip(0, 255).astype(np.uint8)  # (H, W, 3)
    path = tmp_path / "smooth.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for _ in range(17):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(stream.encode(None))
    with av.open(str(path)) as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")  # (H, W, 3)
    frames = read_frames(path, clip_size=384, sync_size=224)

    def reference(size):
        x = torch.from_numpy(decoded).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        y = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True)
        return y.round().clamp(0, 255)[0].permute(1, 2, 0).numpy()  # (h, w, 3)

    new_w = int(224 * width / height)  # short side 224, then the centre crop
    left = int(round((new_w - 224) / 2))
    for ours, ref in ((frames.clip[0], reference((384, 384))),
                      (frames.sync[0], reference((224, new_w))[:, left : left + 224])):  # fmt: skip
        diff = np.abs(ours.astype(np.float32) - ref)
        assert diff.max() <= 8 and diff.mean() <= 0.5, (diff.max(), diff.mean())


def test_hold_last_shows_the_last_frame_for_its_duration(tmp_path):
    """8 s at 5 fps: the demo reader's rule stops at the last frame's time (7.84 s of sync
    targets); ``hold_last`` (generate's windows) holds it for its 0.2 s, covering 8 s."""
    path = write_video(tmp_path / "five.mp4", fps=5, frames=40)
    plain = read_frames(path, duration=8.0, clip_size=SIZE, sync_size=SIZE)
    held = read_frames(path, duration=8.0, clip_size=SIZE, sync_size=SIZE, hold_last=True)
    assert plain.duration == pytest.approx(7.84) and held.duration == 8.0
    assert (len(held.clip), len(held.sync)) == (64, 200)
    np.testing.assert_array_equal(held.sync[: len(plain.sync)], plain.sync)
    np.testing.assert_array_equal(held.clip[: len(plain.clip)], plain.clip)
    assert all(np.array_equal(f, held.sync[195]) for f in held.sync[196:])  # 39th frame held
    # a span past the end is still clamped, at the end of the last frame
    longer = read_frames(path, duration=9.0, clip_size=SIZE, sync_size=SIZE, hold_last=True)
    assert longer.duration == 8.0
