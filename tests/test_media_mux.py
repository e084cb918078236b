"""Muxing and audio files, end to end on videos made with PyAV.

For every container: the output's video packets are byte-identical to the input's (payload and
presentation time), the generated track lasts as long as the video within one audio frame, it
is our tone (not silence), it is titled, and the input file is unchanged. Failures leave no file.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile as sf
from media_videos import audio_streams, video_duration, video_packets, write_video
from v2a_runtime.media import MediaError, check_output, mux, probe, write_audio

CASES = {
    # name: (input file, write_video arguments, output extension, generated rate, channels)
    "h264_mp4_aac": ("a.mp4", dict(fps=30, frames=60, audio="aac"), ".mp4", 16000, 1),
    "vp9_webm": ("b.webm", dict(codec="libvpx-vp9", fps=24, frames=48), ".webm", 44100, 1),
    "mjpeg_avi_pcm": (
        "c.avi",
        dict(codec="mjpeg", pix_fmt="yuvj420p", audio="pcm_s16le"),
        ".avi",
        16000,
        1,
    ),
    "phone_portrait_mov": ("d.mov", dict(size=(120, 160), rotation=-90), ".mov", 44100, 2),
    "odd_size_mkv_opus": (
        "e.mkv",
        dict(size=(321, 239), pix_fmt="yuv444p", audio="libopus"),
        ".mkv",
        16000,
        1,
    ),
    "portrait_24fps_to_m4v": ("f.mp4", dict(size=(120, 160), fps=24, frames=48), ".m4v", 16000, 1),
}
CODEC = {".mp4": "aac", ".m4v": "aac", ".mov": "aac", ".webm": "opus", ".mkv": "opus",
         ".avi": "pcm_s16le"}  # fmt: skip
FRAME = {"aac": 1024, "opus": 960, "pcm_s16le": 1}  # samples per audio frame, at the stream rate


def tone(freq: float, rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    wave = 0.3 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)
    return np.tile(wave.astype(np.float32), (channels, 1)).squeeze(0 if channels == 1 else None)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples[0]))
    return float(np.argmax(spectrum) * rate / len(samples[0]))


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mux_in")
    return {key: write_video(root / name, **kwargs) for key, (name, kwargs, *_) in CASES.items()}


def _check_generated(info, out, freq):
    """Codec of the container, as long as the video within one audio frame, our tone."""
    assert info["codec"] == CODEC[out.suffix]
    seconds = info["samples"].shape[1] / info["rate"]
    assert abs(seconds - video_duration(out)) <= FRAME[info["codec"]] / info["rate"] + 1e-3
    assert np.sqrt(np.mean(info["samples"] ** 2)) > 0.1  # a 0.3 sine has RMS 0.21: not silent
    assert peak_hz(info["samples"], info["rate"]) == pytest.approx(freq, abs=3)


@pytest.mark.parametrize("key", list(CASES))
def test_mux_copies_video_and_adds_audio(inputs, tmp_path, key):
    source = inputs[key]
    _, _, ext, rate, channels = CASES[key]
    before = digest(source)
    out = tmp_path / f"out{ext}"
    # 2.5 s of audio for a 2 s video: cut to the video
    mux(source, out, [tone(500, rate, 2.5, channels)], rate)
    assert video_packets(out) == video_packets(source)
    (info,) = audio_streams(out)
    _check_generated(info, out, 500)
    if ext != ".avi":  # AVI has no track titles in FFmpeg's reader
        assert "v2a generated" in (info["metadata"].get("title"), info["metadata"].get("name"))
    assert probe(out).rotation == probe(source).rotation
    assert digest(source) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left


@pytest.mark.parametrize("key", ["h264_mp4_aac", "mjpeg_avi_pcm", "odd_size_mkv_opus"])
def test_keep_original_audio_as_second_track(inputs, tmp_path, key):
    source = inputs[key]
    _, _, ext, rate, _ = CASES[key]
    out = tmp_path / f"out{ext}"
    short = tone(700, rate, 1.5)  # shorter than the video: padded with silence
    mux(source, out, [short], rate, keep_original_audio=True)
    generated, original = audio_streams(out)
    (reference,) = audio_streams(source)
    _check_generated(generated, out, 700)
    np.testing.assert_array_equal(original["samples"], reference["samples"])  # copied as is
    assert original["codec"] == reference["codec"]
    if ext != ".avi":
        assert generated["disposition"].name == "default" and not original["disposition"]
    assert video_packets(out) == video_packets(source)


def test_several_tracks(inputs, tmp_path):
    out = tmp_path / "out.mkv"
    mux(inputs["odd_size_mkv_opus"], out, [tone(400, 16000, 2), tone(900, 16000, 2)], 16000)
    first, second = audio_streams(out)
    assert first["metadata"]["title"] == "v2a generated 1/2"
    assert second["metadata"]["title"] == "v2a generated 2/2"
    assert peak_hz(first["samples"], first["rate"]) == pytest.approx(400, abs=3)
    assert peak_hz(second["samples"], second["rate"]) == pytest.approx(900, abs=3)


def test_mux_failures_leave_nothing(inputs, tmp_path):
    source = inputs["h264_mp4_aac"]
    before = digest(source)
    track = [tone(500, 16000, 2)]

    def fails(out, match, **kwargs):
        with pytest.raises(MediaError, match=match) as info:
            mux(source, out, track, 16000, **kwargs)
        assert "\n" not in str(info.value)

    fails(tmp_path / "out.gif", r"unknown output extension '\.gif'; use one of \.mp4")
    fails(tmp_path / "out", "unknown output extension '\\(none\\)'")
    fails(tmp_path / "out.flac", "unknown output extension")  # audio files: write_audio
    fails(source, "output path is the input file")
    fails(tmp_path / "missing_dir" / "out.mp4", "does not exist")
    # H.264 cannot go into WebM: the video is copied, never re-encoded
    fails(tmp_path / "out.webm", "webm container cannot hold the input's h264 video")
    with pytest.raises(MediaError, match="no such file"):
        mux(tmp_path / "nope.mp4", tmp_path / "out.mp4", track, 16000)
    assert list(tmp_path.iterdir()) == []
    assert digest(source) == before

    existing = tmp_path / "out.mp4"
    existing.write_bytes(b"keep me")
    fails(existing, r"already exists \(use --force to overwrite\)")
    assert existing.read_bytes() == b"keep me"
    mux(source, existing, track, 16000, overwrite=True)
    assert video_packets(existing) == video_packets(source)


def test_mux_rejects_bad_tracks(inputs, tmp_path):
    source = inputs["h264_mp4_aac"]
    with pytest.raises(ValueError, match="non-empty list"):
        mux(source, tmp_path / "o.mp4", [], 16000)
    with pytest.raises(ValueError, match="C in \\(1, 2\\)"):
        mux(source, tmp_path / "o.mp4", [np.zeros((3, 100), np.float32)], 16000)
    with pytest.raises(ValueError, match="NaN or Inf"):
        mux(source, tmp_path / "o.mp4", [np.full(100, np.nan, np.float32)], 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        mux(source, tmp_path / "o.mp4", [np.zeros(100, np.float32)], 0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ext", [".flac", ".wav"])
def test_write_audio_round_trip(tmp_path, ext):
    path = tmp_path / f"a{ext}"
    stereo = tone(440, 16000, 1.0, channels=2)
    stereo[1] *= 0.5
    stereo[0, :10] = 4.0  # clipped to full scale
    write_audio(path, stereo, 16000)
    data, rate = sf.read(path, dtype="float32", always_2d=True)  # (W, C)
    assert rate == 16000 and data.shape == (16000, 2)
    expected = np.clip(stereo, -1, 1).T
    np.testing.assert_allclose(data, expected, atol=1.0 / 32768 + 1e-7)
    assert sf.info(path).subtype == "PCM_16"
    with sf.SoundFile(path) as f:
        assert f.title == "v2a generated"
    write_audio(path, tone(440, 16000, 0.5), 16000, overwrite=True)  # mono replaces it
    assert sf.info(path).channels == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_write_audio_failures(tmp_path):
    with pytest.raises(MediaError, match="unknown output extension '.mp3'"):
        write_audio(tmp_path / "a.mp3", np.zeros(100, np.float32), 16000)
    (tmp_path / "a.wav").write_bytes(b"old")
    with pytest.raises(MediaError, match="already exists"):
        write_audio(tmp_path / "a.wav", np.zeros(100, np.float32), 16000)
    assert (tmp_path / "a.wav").read_bytes() == b"old"
    with pytest.raises(ValueError, match="floating point"):
        write_audio(tmp_path / "b.wav", np.zeros(100, np.int16), 16000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


def test_check_output_for_the_cli(tmp_path, inputs):
    source = inputs["vp9_webm"]
    assert check_output(tmp_path / "x.MP4", input_path=source) == tmp_path / "x.MP4"
    (tmp_path / "d.mkv").mkdir()
    with pytest.raises(MediaError, match="is a directory"):
        check_output(tmp_path / "d.mkv", overwrite=True)
    # a different spelling of the input path is still the input
    alias = source.parent / "." / source.name
    with pytest.raises(MediaError, match="output path is the input file"):
        check_output(alias, input_path=source, overwrite=True)


def test_mux_places_the_audio_at_start_and_takes_a_tracks_array(inputs, tmp_path):
    """``start`` seconds of silence come first (a span that begins later in the video), and a
    (K, W) array is K mono tracks (``GenerateResult.audio``)."""
    out = tmp_path / "late.avi"  # 16-bit PCM: the samples come back exactly
    tracks = np.stack([tone(500, 16000, 1.0), tone(800, 16000, 1.0)])  # (2, W)
    mux(inputs["mjpeg_avi_pcm"], out, tracks, 16000, start=0.5)
    first, second = audio_streams(out)
    lead = round(0.5 * first["rate"])
    assert np.abs(first["samples"][0, :lead]).max() < 1e-4  # silence before the span
    assert np.abs(first["samples"][0, lead : lead + 16000]).max() > 0.25
    np.testing.assert_allclose(first["samples"][0, lead : lead + 16000], tracks[0], atol=1e-4)
    assert peak_hz(second["samples"][:, lead:], second["rate"]) == pytest.approx(800, abs=3)
    with pytest.raises(ValueError, match="start must be a finite number"):
        mux(inputs["mjpeg_avi_pcm"], tmp_path / "x.avi", tracks, 16000, start=-1.0)
    with pytest.raises(ValueError, match=r"a tracks array must be \(K, W\)"):
        mux(inputs["mjpeg_avi_pcm"], tmp_path / "x.avi", tracks[0], 16000)
