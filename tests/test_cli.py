"""``v2a`` end to end on videos made with PyAV, and every case of the failure policy.

Generation runs the committed test bundle (real onnxruntime sessions). For each output the
video packets must be byte-identical to the input's, each generated audio track as long as the
video within one audio frame and not silent; the input must be unchanged. Every user mistake
must give exit status 2, one ``error:`` line on stderr, no traceback and no file left behind.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from media_videos import audio_streams, video_duration, video_packets, write_video
from v2a_runtime.cli import main

TEST_BUNDLE = Path(__file__).parent / "data" / "test_bundle"
FRAME = {"aac": 1024, "opus": 960, "pcm_s16le": 1024}  # samples per audio frame

VIDEOS = {
    # name: (file, write_video arguments)
    "h264_mp4_25fps_audio": ("a.mp4", dict(fps=25, frames=50, audio="aac")),
    "vp9_webm_24fps": ("b.webm", dict(codec="libvpx-vp9", fps=24, frames=48)),
    "mjpeg_avi_30fps": ("c.avi", dict(codec="mjpeg", pix_fmt="yuvj420p", fps=30, frames=60)),
    "portrait_phone_mov": ("d.mov", dict(size=(120, 160), rotation=-90, frames=40)),
    "odd_size_mkv": ("e.mkv", dict(size=(321, 239), pix_fmt="yuv444p", fps=30, frames=45)),
}
OUTPUTS = [
    ("h264_mp4_25fps_audio", "out.mp4", 1),
    ("vp9_webm_24fps", "out.webm", 1),
    ("mjpeg_avi_30fps", "out.avi", 1),
    ("portrait_phone_mov", "out.mov", 2),
    ("odd_size_mkv", "out.mkv", 1),
]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def v2a(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {key: write_video(root / name, **kwargs) for key, (name, kwargs) in VIDEOS.items()}


def generate(video: Path, out: Path, *extra):
    return v2a("generate", video, "--bundle", TEST_BUNDLE, "-o", out, "--steps", 3, *extra)


@pytest.mark.parametrize("key, name, tracks", OUTPUTS)
def test_generate_muxes_into_the_video(videos, tmp_path, key, name, tracks):
    source = videos[key]
    before = digest(source)
    out = tmp_path / name
    result = generate(source, out, "-p", "rain on a roof", "--tracks", tracks)
    assert result.exit_code == 0, result.output + result.stderr
    assert digest(source) == before  # the input is only read
    assert video_packets(out) == video_packets(source)  # the picture is copied, not re-encoded
    generated = [s for s in audio_streams(out)][:tracks]
    assert len(audio_streams(out)) == tracks  # the input's own audio is replaced
    for info in generated:
        seconds = info["samples"].shape[1] / info["rate"]
        frame = FRAME[info["codec"]] / info["rate"]
        assert abs(seconds - video_duration(out)) <= frame + 1e-3
        assert np.sqrt(np.mean(info["samples"] ** 2)) > 0.01  # not silent
    if tracks == 2:
        a, b = (info["samples"][0] for info in generated)
        assert not np.allclose(a, b, atol=1e-2)  # two different soundtracks
    assert result.stdout.startswith(f"wrote {out}: {tracks} track")
    assert "seconds: decode" in result.stdout and "total" in result.stdout


@pytest.mark.parametrize("ext", [".flac", ".wav"])
def test_generate_audio_files(videos, tmp_path, ext):
    source = videos["h264_mp4_25fps_audio"]
    single = tmp_path / f"one{ext}"
    assert generate(source, single, "--seed", 5).exit_code == 0
    audio, rate = sf.read(single, dtype="float32")
    assert rate == 16000 and audio.shape == (32000,)  # 2 s at the model's rate
    assert np.sqrt(np.mean(audio**2)) > 0.01
    many = tmp_path / f"many{ext}"
    result = generate(source, many, "--seed", 5, "--tracks", 2)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [single.name, f"many-1{ext}", f"many-2{ext}"]
    )  # K files with a suffix, no temporary files left
    first, _ = sf.read(tmp_path / f"many-1{ext}", dtype="float32")
    second, _ = sf.read(tmp_path / f"many-2{ext}", dtype="float32")
    np.testing.assert_allclose(first, audio, atol=1e-3)  # track 1 = the single run, same seed
    assert not np.allclose(first, second, atol=1e-2)


def test_default_output_name_and_notes(videos, tmp_path):
    source = tmp_path / "clip.webm"
    shutil.copy(videos["vp9_webm_24fps"], source)
    result = v2a("generate", source, "--bundle", TEST_BUNDLE, "--steps", 2)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "clip.v2a.webm").is_file()
    assert "random, untrained weights" in result.stderr
    assert "public demo key" in result.stderr


def test_force_overwrites(videos, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"old")
    result = generate(videos["h264_mp4_25fps_audio"], out, "--force")
    assert result.exit_code == 0 and video_packets(out)


def test_info():
    result = v2a("info", TEST_BUNDLE)
    assert result.exit_code == 0
    assert "all files verified" in result.stdout and "denoiser" in result.stdout
    result = v2a("info", TEST_BUNDLE, "--json")
    assert json.loads(result.stdout)["model"]["variant"] == "test"


def test_shipped_default_bundle_works(videos, tmp_path):
    result = v2a("info")
    assert result.exit_code == 0 and "all files verified" in result.stdout
    out = tmp_path / "default.wav"
    result = v2a("generate", videos["mjpeg_avi_30fps"], "-o", out, "--steps", 2, "-q")
    assert result.exit_code == 0 and out.is_file() and result.stderr == ""


# --- the failure policy ---------------------------------------------------------------------


def _corrupt_jpegs(source: Path, path: Path) -> Path:
    """Zero the scan data of every JPEG in an MJPEG AVI; the container stays readable."""
    data = bytearray(source.read_bytes())
    start = 0
    while (i := data.find(b"\xff\xd8\xff", start)) >= 0:
        data[i + 2 : i + 600] = bytes(598)
        start = i + 600
    path.write_bytes(bytes(data))
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        wave = np.zeros((1, 16000), np.float32)
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
        frame.sample_rate = 16000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _bad_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "modified_bundle"
    shutil.copytree(TEST_BUNDLE, bundle)
    weights = bundle / "onnx" / "denoiser.onnx"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    return bundle


FAILURES = {
    # case: (make the input: (videos, tmp dir) -> path, extra args, expected message)
    "missing file": (lambda _v, d: d / "missing.mp4", [], r"missing.mp4: no such file"),
    "not a video": (
        lambda _v, d: (d / "notes.mp4").write_text("hello\n" * 100) and d / "notes.mp4",
        [],
        r"notes.mp4: not a readable video",
    ),
    "no video stream": (lambda _v, d: _audio_only(d / "tone.m4a"), [], r"no video stream"),
    "corrupt stream": (
        lambda v, d: _corrupt_jpegs(v["mjpeg_avi_30fps"], d / "corrupt.avi"),
        [],
        r"corrupt.avi: .*(no decodable video|not a readable video)",
    ),
    "shorter than one sync segment": (
        lambda _v, d: write_video(d / "short.mp4", frames=12),
        [],
        r"short.mp4: .*shorter than one sync segment \(0.64 s\)",
    ),
    "unknown output extension": (
        lambda v, _d: v["h264_mp4_25fps_audio"],
        ["-o", "{tmp}/out.ogg"],
        r"out.ogg: unknown output extension '.ogg'; use one of .mp4",
    ),
    "output equal to input": (
        lambda v, d: shutil.copy(v["h264_mp4_25fps_audio"], d / "in.mp4") and d / "in.mp4",
        ["-o", "{tmp}/in.mp4"],
        r"in.mp4: output path is the input file",
    ),
    "existing output without --force": (
        lambda v, d: (d / "taken.mp4").write_bytes(b"precious") and v["h264_mp4_25fps_audio"],
        ["-o", "{tmp}/taken.mp4"],
        r"taken.mp4: already exists \(use --force to overwrite\)",
    ),
    "existing track file without --force": (
        lambda v, d: (d / "m-2.flac").write_bytes(b"precious") and v["h264_mp4_25fps_audio"],
        ["-o", "{tmp}/m.flac", "--tracks", "2"],
        r"m-2.flac: already exists \(use --force to overwrite\)",
    ),
    "input is a directory without videos": (
        lambda _v, d: d, [], r"work: no video files \(by extension\) in this directory"
    ),
    "unreadable bundle": (
        lambda v, _d: v["h264_mp4_25fps_audio"],
        ["--bundle", "{tmp}"],
        r"has no manifest.json; it is not a v2a bundle",
    ),
    "bundle hash mismatch": (
        lambda v, d: _bad_bundle(d) and v["h264_mp4_25fps_audio"],
        ["--bundle", "{tmp}/modified_bundle"],
        r"sha256 mismatch for onnx/denoiser.onnx.*re-export the bundle",
    ),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failure_policy(videos, tmp_path, case):
    make, extra, message = FAILURES[case]
    work = tmp_path / "work"
    work.mkdir()
    source = make(videos, work)
    args = [a.replace("{tmp}", str(work)) for a in extra]
    if "-o" not in args:
        args += ["-o", str(work / "out.mp4")]
    if "--bundle" not in args:
        args += ["--bundle", str(TEST_BUNDLE)]
    before = {p.name: digest(p) for p in work.rglob("*") if p.is_file()}
    input_digest = digest(source) if source.is_file() else None
    result = v2a("generate", source, *args, "--steps", 2)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    after = {p.name: digest(p) for p in work.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing changed (an existing output included)
    if input_digest is not None:
        assert digest(source) == input_digest


def test_span_from_start_lands_at_its_time_in_the_video(videos, tmp_path):
    out = tmp_path / "span.mp4"
    result = generate(videos["h264_mp4_25fps_audio"], out, "--start", 1.0, "--duration", 0.8)
    assert result.exit_code == 0, result.stderr
    (track,) = audio_streams(out)
    samples, rate = track["samples"][0], track["rate"]
    assert abs(samples.shape[0] / rate - video_duration(out)) <= 1024 / rate + 1e-3

    def rms(a, b):
        return np.sqrt(np.mean(samples[int(a * rate) : int(b * rate)] ** 2))

    assert rms(0.0, 0.9) < 1e-3 and rms(1.9, 2.0) < 1e-3  # silence outside [1.0, 1.8)
    assert rms(1.1, 1.7) > 0.01


def test_keep_original_audio(videos, tmp_path):
    source = videos["h264_mp4_25fps_audio"]  # has a 440 Hz tone track
    out = tmp_path / "both.mp4"
    assert generate(source, out, "--keep-original-audio").exit_code == 0
    generated, original = audio_streams(out)
    assert generated["metadata"]["handler_name"] == "v2a generated (test)"  # MP4: handler name
    spectrum = np.abs(np.fft.rfft(original["samples"][0]))
    assert np.argmax(spectrum) * original["rate"] / original["samples"].shape[1] == pytest.approx(
        440, abs=3
    )


def test_output_carries_the_watermark_printed_in_the_summary(videos, tmp_path):
    from v2a_runtime.watermark import detect, load_key, read_audio

    out = tmp_path / "marked.mp4"
    result = generate(videos["h264_mp4_25fps_audio"], out)
    assert result.exit_code == 0, result.stderr
    printed = re.search(r"watermark id ([0-9a-f]{6})", result.stdout).group(1)
    audio, rate = read_audio(out)  # through AAC
    found = detect(audio, rate, load_key())
    from v2a_runtime.bundle import load_bundle

    assert found.present and found.model_id == load_bundle(TEST_BUNDLE).manifest.mark_id
    assert f"{found.generation_id:06x}" == printed
