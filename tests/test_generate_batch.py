"""``v2a generate`` as production engineers use it, on videos written here with PyAV and the
committed test bundle (real onnxruntime sessions): batches with per-input results where a failed
input does not stop the others, one JSON object per input, EBU R128 loudness measured on the
decoded outputs with pyloudnorm (the watermark still verifies), outputs checked before any
decoding (incompatible codecs, the default container of an Ogg input, H.264 from MP4 into AVI),
and the notes for inputs that would otherwise be ignored silently."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from click.testing import CliRunner
from media_videos import audio_streams, video_packets, write_video
from scipy.signal import resample_poly
from v2a_runtime.cli import main
from v2a_runtime.outputs import save
from v2a_runtime.pipeline import STAGES, Pipeline
from v2a_runtime.watermark import detect, load_key, read_audio

TEST_BUNDLE = Path(__file__).parent / "data" / "test_bundle"


def v2a(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def run(*args):
    return v2a("generate", "--bundle", TEST_BUNDLE, "--steps", 2, *args)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {
        "mp4": write_video(root / "a.mp4", fps=25, frames=50, audio="aac"),  # H.264, 2 s
        "mkv": write_video(root / "b.mkv", fps=25, frames=40),  # 1.6 s
        "ogv": write_video(root / "c.ogv", codec="libvpx", fps=25, frames=40),  # VP8 in Ogg
    }


def lufs(samples: np.ndarray, rate: int) -> float:
    return pyloudnorm.Meter(rate).integrated_loudness(np.asarray(samples, np.float64).T)


def dbtp(samples: np.ndarray) -> float:
    up = resample_poly(np.asarray(samples, np.float64), 8, 1, axis=-1)
    return 20 * math.log10(np.abs(up).max())


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- batches ------------------------------------------------------------------------------


def test_batch_goes_on_past_failed_inputs_with_one_json_object_each(clips, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 50)
    result = run(clips["mp4"], tmp_path / "missing.mp4", bad, clips["mkv"],
                 "--out-dir", out, "--json")  # fmt: skip
    assert result.exit_code == 1, result.stderr  # some failed
    records = json_lines(result.stdout)
    assert [r["status"] for r in records] == ["error", "error", "ok", "ok"]  # checks come first
    assert "missing.mp4: no such file" in records[0]["error"]
    assert "not a readable video" in records[1]["error"]
    ok = {Path(r["input"]).name: r for r in records if r["status"] == "ok"}
    assert sorted(p.name for p in out.iterdir()) == ["a.v2a.mp4", "b.v2a.mkv"]  # no temporaries
    assert ok["a.mp4"]["outputs"] == [str(out / "a.v2a.mp4")]
    assert video_packets(out / "b.v2a.mkv") == video_packets(clips["mkv"])
    assert result.stderr.count("random, untrained weights") == 1  # the model is loaded once
    assert "batch: 2 of 4 inputs done, 2 failed" in result.stderr


def test_directory_and_list_inputs(clips, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(clips["mp4"], folder / "one.mp4")
    shutil.copy(clips["mkv"], folder / "two.mkv")
    (folder / "readme.txt").write_text("not an input")
    listing = tmp_path / "jobs.txt"
    listing.write_text(f"# tonight's jobs\n\nin/two.mkv\n{clips['mp4']}\n")
    out = tmp_path / "out"
    out.mkdir()
    result = run(folder, "--out-dir", out, "--out-ext", ".flac", "-q")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["one.v2a.flac", "two.v2a.flac"]
    assert result.stdout.count("wrote ") == 2 and result.stdout.startswith("[1/2] ")
    for p in out.iterdir():
        p.unlink()
    result = run("--from-list", listing, "--out-dir", out, "--out-ext", "wav", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    inputs = [Path(r["input"]) for r in json_lines(result.stdout)]
    assert inputs == [folder / "two.mkv", clips["mp4"]]  # relative to the list, in order
    assert sorted(p.name for p in out.iterdir()) == ["a.v2a.wav", "two.v2a.wav"]


@pytest.mark.parametrize("args, message", [
    (["-o", "x.mp4"], r"-o names one output but there are 2 inputs"),
    (["--out-dir", "nowhere"], r"nowhere: --out-dir does not exist"),
    (["--out-ext", ".ogg"], r"--out-ext '.ogg': use one of"),
    (["--loudness", "loud"], r"--loudness must be a number of LUFS"),
])  # fmt: skip
def test_batch_usage_errors_are_one_line(clips, tmp_path, args, message):
    result = run(clips["mp4"], clips["mkv"], *[a.replace("x.mp4", str(tmp_path / "x.mp4"))
                                               for a in args])  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message.split(r"\(")[0] in (
        lines[0].replace("\\", "")
    )  # fmt: skip


# --- machine-readable output --------------------------------------------------------------


def test_json_record_matches_the_written_file(clips, tmp_path):
    out = tmp_path / "j.mp4"
    result = run(clips["mp4"], "-o", out, "--json", "--seed", 3, "--tracks", 2)
    assert result.exit_code == 0, result.stderr
    (record,) = json_lines(result.stdout)
    assert record["status"] == "ok" and record["outputs"] == [str(out)]
    assert record["seeds"] == [3, 4] and record["tracks"] == 2 and record["sample_rate"] == 16000
    assert record["sampler"] == {"name": None, "solver": "euler", "steps": 2, "grid": "uniform",
                                 "cfg": 4.5}
    assert record["bundle"]["variant"] == "test" and record["bundle"]["weights"] == "random"
    assert set(record["seconds"]) == {*STAGES, "write", "total"}
    assert record["windows"] == [[0.0, 2.0]] and record["evaluations"] == 2
    audio, rate = read_audio(out)  # the first track, through AAC
    found = detect(audio, rate, load_key())
    assert found.present and f"{found.payload:08x}" == record["watermarks"][0]["payload"]
    levels = record["loudness"]
    assert levels["target_lufs"] == -23.0 and len(levels["tracks"]) == 2


# --- loudness -----------------------------------------------------------------------------


def test_muxed_output_is_broadcast_loud_and_still_marked(clips, tmp_path):
    loud, raw = tmp_path / "loud.mkv", tmp_path / "raw.mkv"
    assert run(clips["mp4"], "-o", loud, "-q").exit_code == 0  # default: -23 LUFS, -1 dBTP
    assert run(clips["mp4"], "-o", raw, "-q", "--loudness", "off").exit_code == 0
    (track,) = audio_streams(loud)
    (plain,) = audio_streams(raw)
    assert lufs(track["samples"], track["rate"]) == pytest.approx(-23.0, abs=0.5)  # Opus
    assert dbtp(track["samples"]) <= -1.0 + 0.5
    assert abs(lufs(plain["samples"], plain["rate"]) + 23.0) > 1.0  # off: as sampled
    for path in (loud, raw):
        audio, rate = read_audio(path)
        assert detect(audio, rate, load_key()).present


def test_audio_file_loudness_is_exact_and_off_by_default(clips, tmp_path):
    default, target = tmp_path / "d.flac", tmp_path / "t.flac"
    assert run(clips["mp4"], "-o", default, "-q").exit_code == 0
    result = run(clips["mp4"], "-o", target, "-q", "--loudness", "-18", "--true-peak", "-2")
    assert result.exit_code == 0, result.stderr
    a, rate = sf.read(target, dtype="float64")
    assert lufs(a, rate) == pytest.approx(-18.0, abs=0.1)  # lossless 16-bit
    assert dbtp(a) <= -2.0 + 0.05
    b, _ = sf.read(default, dtype="float64")
    assert abs(lufs(b, rate) + 18.0) > 1.0
    assert detect(a.astype(np.float32), rate, load_key()).present


def test_save_writes_what_the_cli_writes(clips, tmp_path):
    cli = tmp_path / "cli.flac"
    assert run(clips["mkv"], "-o", cli, "-q", "--seed", 9, "--threads", 1).exit_code == 0
    pipe = Pipeline.load(TEST_BUNDLE, threads=1)
    result = pipe.generate(clips["mkv"], steps=2, seed=9)
    (api,) = save(result, tmp_path / "api.flac", clips["mkv"], title="v2a generated (test)")
    assert np.array_equal(sf.read(api, dtype="int16")[0], sf.read(cli, dtype="int16")[0])


# --- outputs checked before any decoding ---------------------------------------------------


def test_h264_from_mp4_into_avi(clips, tmp_path):
    out = tmp_path / "a.avi"
    result = run(clips["mp4"], "-o", out, "-q")
    assert result.exit_code == 0, result.stderr
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) == 50  # every picture decodes (Annex B)
    (track,) = audio_streams(out)
    assert track["codec"] == "pcm_s16le" and track["samples"].shape[1] == 32000


def test_incompatible_output_fails_before_decoding(clips, tmp_path):
    out = tmp_path / "x.webm"
    result = run(clips["mp4"], "-o", out)  # not quiet: any progress would show
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()  # no notes: the model was not even loaded
    assert line.startswith("error: ") and "webm container cannot hold the input's h264" in line
    assert list(tmp_path.iterdir()) == []


def test_ogg_input_defaults_to_matroska(clips, tmp_path):
    source = tmp_path / "film.ogv"
    shutil.copy(clips["ogv"], source)
    result = run(source, "-q")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["film.ogv", "film.v2a.mkv"]
    assert video_packets(tmp_path / "film.v2a.mkv") == video_packets(source)


# --- notes instead of silently ignored inputs ----------------------------------------------


def test_ignored_inputs_get_a_note(clips, tmp_path):
    result = run(clips["mkv"], "-o", tmp_path / "n.flac", "--duration", 100000,
                 "--keep-original-audio", "-p", "rain " * 90)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert any("--duration 100000 s is longer than the video from 0 s; generating its 1.60 s"
               in n for n in notes)  # fmt: skip
    assert any("--keep-original-audio has no effect on an audio file" in n for n in notes)
    assert any("-p: the prompt is 92 tokens; the text encoder reads the first 77" in n
               for n in notes)  # fmt: skip
    assert "wrote" in result.stdout and "1.60 s" in result.stdout
    quiet = run(clips["mkv"], "-o", tmp_path / "q.flac", "--duration", 100000, "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""  # -q: no notes, no warnings


def test_plain_progress_lines_outside_a_terminal(clips, tmp_path):
    result = run(clips["mkv"], "-o", tmp_path / "p.flac")
    assert result.exit_code == 0
    stages = [line.split(" (")[0] for line in result.stderr.splitlines() if "(window" in line]
    assert stages == ["decode", "encode", "condition", "sample", "vae", "vocoder", "loudness",
                      "watermark"]  # fmt: skip


def test_usage_errors_are_one_error_line_in_both_clis():
    from v2a_export.cli import main as export_main

    cases = [(main, ["generate", "--bogus"], "No such option '--bogus'"),
             (main, ["generate", "--tracks", "0", "x.mp4"], "Invalid value for '--tracks'"),
             (main, ["nosuch"], "No such command 'nosuch'"),
             (export_main, ["export", "--bogus"], "No such option '--bogus'")]  # fmt: skip
    for cli, args, words in cases:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, args
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and words in line and "--help" in line, line


def _truncated_mp4(path: Path) -> Path:
    """A 10 s H.264 MP4 with its index at the front (faststart), cut at 40 % of its bytes: the
    header still says 10 s, about 2.4 s decode."""
    from media_videos import index_image

    full = path.with_name("full.mp4")
    with av.open(str(full), "w", options={"movflags": "+faststart"}) as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
        v.options = {"crf": "16", "preset": "veryfast"}
        for i in range(250):
            out.mux(v.encode(av.VideoFrame.from_ndarray(index_image(i, 160, 120), format="rgb24")))
        out.mux(v.encode(None))
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.4)])
    return path


def test_truncated_file_generates_what_decodes_and_says_so(tmp_path):
    source = _truncated_mp4(tmp_path / "cut.mp4")
    out = tmp_path / "cut.flac"
    result = run(source, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    (record,) = json_lines(result.stdout)
    real = record["duration"]
    assert 1.0 < real < 5.0  # not the header's 10 s
    assert any("truncated video" in n and "10.00 s its header gives" in n
               for n in record["notes"])  # fmt: skip
    audio, rate = sf.read(out, dtype="float32")
    assert audio.shape[0] == round(real * rate)  # no silent tail standing in for the rest
    assert np.sqrt(np.mean(audio[-rate // 4 :] ** 2)) > 1e-3
    warnings = [line for line in result.stderr.splitlines() if "only" in line]
    assert warnings and all(line.startswith("warning: ") for line in warnings)
    text = run(source, "-o", tmp_path / "q.flac", "-q")
    assert text.stderr == "" and "(truncated video: header 10.00 s)" in text.stdout


# --- output encoding ----------------------------------------------------------------------


@pytest.mark.parametrize("name, codec, args, want", [
    ("o.mp4", "opus", ["--audio-bitrate", "64k", "--sample-rate", "48000"], ("opus", 48000)),
    ("o.mkv", "flac", ["--sample-rate", "44100"], ("flac", 44100)),
    ("o.mp4", "aac", [], ("aac", 16000)),
])  # fmt: skip
def test_audio_codec_bitrate_and_rate(clips, tmp_path, name, codec, args, want):
    out = tmp_path / name
    result = run(clips["mp4"], "-o", out, "--audio-codec", codec, "--json", "-q", *args)
    assert result.exit_code == 0, result.stderr
    (record,) = json_lines(result.stdout)
    (track,) = audio_streams(out)
    assert (track["codec"], track["rate"]) == want and record["sample_rate"] == want[1]
    assert abs(track["samples"].shape[1] / want[1] - 2.0) < 0.07  # the clip, within a frame
    if "--audio-bitrate" in args:
        with av.open(str(out)) as c:
            assert 56_000 < c.streams.audio[0].bit_rate < 72_000
    audio, rate = read_audio(out)
    assert detect(audio, rate, load_key()).present  # the mark survives the resampling


def test_resampled_audio_file_and_refused_encodings(clips, tmp_path):
    out = tmp_path / "r.wav"
    assert run(clips["mp4"], "-o", out, "-q", "--sample-rate", "44100").exit_code == 0
    info = sf.info(out)
    assert (info.samplerate, info.frames) == (44100, 88200)
    for args, words in [
        (["-o", tmp_path / "x.wav", "--audio-codec", "aac"], "apply to video outputs"),
        (["-o", tmp_path / "x.avi", "--audio-codec", "opus"], "avi container cannot hold opus"),
        (["-o", tmp_path / "x.mov", "--audio-codec", "opus"], "mov muxer refused h264 video "
                                                               "with opus audio"),
        (["-o", tmp_path / "x.mkv", "--audio-codec", "flac", "--audio-bitrate", "64k"],
         "applies to aac or opus"),
    ]:  # fmt: skip
        result = run(clips["mp4"], *args)
        assert result.exit_code == 2, args
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and words in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.wav"]


def test_sigterm_unwinds_like_ctrl_c(tmp_path):
    """SIGTERM in a command of either CLI (OneLineGroup) raises SystemExit(143) where it lands,
    so cleanup in ``finally`` blocks runs (v2a-export's ``.OUT.partial-PID``, v2a's temporary
    files); the handler is restored afterwards."""
    import os
    import signal

    import click
    from v2a_runtime.cli.common import OneLineGroup

    work = tmp_path / ".bundle.partial-1"

    @click.group(cls=OneLineGroup)
    def cli():
        pass

    @cli.command()
    def export():
        work.mkdir()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("not reached")
        finally:
            shutil.rmtree(work)

    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(cli, ["export"])
    assert result.exit_code == 143 and not work.exists()
    assert result.stderr.strip() == "error: terminated; no output was written"
    assert signal.getsignal(signal.SIGTERM) == before


def test_export_refuses_an_existing_bundle_without_force(tmp_path):
    from v2a_export.cli import main as export_main

    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    result = CliRunner().invoke(export_main, ["export", "--variant", "tiny", "--out", str(out)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line == f"error: {out}: holds an earlier bundle or export; pass --force to replace " \
                   "it (or --components to re-export some of its components)"  # fmt: skip
    assert [p.name for p in out.iterdir()] == ["manifest.json"]


def test_unwritable_directory_and_no_space_are_named_up_front(clips, tmp_path):
    import os

    from v2a_runtime.media import MediaError
    from v2a_runtime.media.files import check_space

    with pytest.raises(MediaError, match=r"not enough free space in .* MB free, about"):
        check_space(tmp_path / "out.mp4", 1 << 62)  # an estimate no disk holds
    check_space(tmp_path / "out.mp4", 1)
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories; the rest needs a plain user")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for name in ("x.flac", "x.mp4"):
            result = run(clips["mkv"], "-o", locked / name)
            assert result.exit_code == 2
            (line,) = result.stderr.strip().splitlines()
            assert line == f"error: {locked / name}: directory {str(locked)!r} is not writable"
    finally:
        locked.chmod(0o755)
