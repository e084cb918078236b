"""``v2a watermark embed|verify|keygen`` on WAV files and on an MP4 made with PyAV: exit codes
0/1/2, ``--json`` fields, one-line errors, inputs never modified, outputs written atomically."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from v2a_runtime.cli import main
from v2a_runtime.oracles import clips

FIELDS = {"file", "present", "z", "p_value_bound", "threshold_z", "payload", "crc_ok",
          "model_id", "generation_id", "offset_samples", "speed", "tempo", "per_second_z",
          "search", "n_hypotheses", "key_id", "payload_hex", "p_value_empirical", "track",
          "tracks"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(*args):
    return CliRunner().invoke(main, ["watermark", *map(str, args)])


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("V2A_WATERMARK_KEY", raising=False)
    monkeypatch.delenv("V2A_WATERMARK_KEY_FILE", raising=False)
    x = clips.make_clip("foley", 31, 44100, 5.0)
    wav = tmp_path / "in.wav"
    sf.write(wav, np.stack([x, 0.8 * x], axis=1), 44100, subtype="PCM_16")
    key = tmp_path / "op.key"
    res = _run("keygen", key)
    assert res.exit_code == 0 and key.exists()
    return tmp_path, wav, key


def test_embed_and_verify_wav(env):
    tmp, wav, key = env
    digest = _sha(wav)
    out = tmp / "out.wav"
    res = _run("embed", wav, out, "--key-file", key, "--payload", "01ABCDEF")
    assert res.exit_code == 0, res.output
    assert "01abcdef" in res.stdout and "DEMO" not in res.stderr
    assert _sha(wav) == digest, "the input must not change"
    assert sorted(p.name for p in tmp.iterdir()) == ["in.wav", "op.key", "out.wav"]
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.subtype) == (44100, 2, "PCM_16")

    res = _run("verify", out, "--key-file", key)
    assert res.exit_code == 0 and "MARKED" in res.stdout and "01abcdef" in res.stdout
    res = _run("verify", wav, "--key-file", key)
    assert res.exit_code == 1 and "not marked" in res.stdout
    res = _run("verify", out, wav, "--key-file", key, "--json")
    assert res.exit_code == 1
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["present"] for r in rows] == [True, False]
    assert set(rows[0]) == FIELDS
    assert rows[0]["payload"] == 0x01ABCDEF and rows[0]["crc_ok"]
    assert (rows[0]["model_id"], rows[0]["generation_id"]) == (1, 0xABCDEF)
    assert rows[0]["z"] >= rows[0]["threshold_z"] and rows[0]["p_value_bound"] < 1e-6
    assert len(rows[0]["per_second_z"]) == 5 and rows[1]["payload"] is None


def test_demo_key_is_announced_and_wrong_key_fails(env):
    tmp, wav, key = env
    out = tmp / "demo.flac"
    res = _run("embed", wav, out, "--model-id", "9", "--generation-id", "77")
    assert res.exit_code == 0 and "PUBLIC DEMO" in res.stderr
    assert "model 9, generation 77" in res.stdout
    res = _run("verify", out)
    assert res.exit_code == 0 and "PUBLIC DEMO" in res.stderr
    assert _run("verify", out, "--key-file", key).exit_code == 1


def _write_mp4(path: Path, audio: np.ndarray, sr: int) -> None:
    """A 5 s MP4: an MPEG-4 video stream and the (channels, W) audio as AAC 128 kbps."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=sr, layout="stereo")
        a.bit_rate = 128000
        for i in range(50):
            img = np.full((48, 64, 3), (i * 5) % 255, np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, np.float32),
                                           format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = sr, 0, Fraction(1, sr)
        for stream, item in ((a, frame), (a, None), (v, None)):
            for p in stream.encode(item):
                c.mux(p)


def test_verify_reads_the_audio_track_of_a_video(env):
    tmp, wav, key = env
    marked = tmp / "marked.wav"
    assert _run("embed", wav, marked, "--key-file", key, "--payload", "cafe").exit_code == 0
    audio, sr = sf.read(marked, dtype="float32", always_2d=True)
    video = tmp / "clip.mp4"
    _write_mp4(video, audio.T, sr)
    res = _run("verify", video, "--key-file", key, "--json")
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)
    assert row["present"] and row["payload_hex"] == "0000cafe" and row["file"] == str(video)
    # embed also takes a video's audio track as IN
    out = tmp / "from_video.wav"
    assert _run("embed", video, out, "--key-file", key, "--payload", "1").exit_code == 0
    assert _run("verify", out, "--key-file", key).exit_code == 0


def test_one_line_errors_exit_2(env):
    tmp, wav, key = env
    silent_video = tmp / "silent.mp4"
    with av.open(str(silent_video), "w") as c:
        v = c.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for p in v.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8),
                                                     format="rgb24")):
            c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    (tmp / "junk.wav").write_bytes(b"RIFF not really audio")
    cases = [
        (["verify", tmp / "missing.wav"], "no such file"),
        (["verify", silent_video], "no audio track"),
        (["verify", tmp / "junk.wav"], "cannot decode"),
        (["embed", wav, tmp / "o.wav", "--payload", "xyz"], "1-8 hex digits"),
        (["embed", wav, tmp / "o.wav", "--payload", "123456789"], "1-8 hex digits"),
        (["embed", wav, tmp / "o.mp3"], "cannot write"),
        (["embed", wav, wav], "must differ"),
        (["embed", wav, tmp / "o.wav", "--model-id", "300"], "model_id"),
        (["verify", wav, "--key-file", wav], "watermark key"),
    ]
    for args, message in cases:
        res = _run(*args)
        assert res.exit_code == 2, (args, res.output)
        lines = res.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1], (args, res.stderr)
        assert "Traceback" not in res.output
    assert not any(p.name.startswith(("o.", ".o.")) for p in tmp.iterdir())
    (tmp / "exists.wav").write_bytes(b"x")
    res = _run("embed", wav, tmp / "exists.wav")
    assert res.exit_code == 2 and "--force" in res.stderr
    assert (tmp / "exists.wav").read_bytes() == b"x"
    # an error on one file still reports the others, and the status is 2
    res = _run("verify", tmp / "missing.wav", wav, "--key-file", key, "--json")
    assert res.exit_code == 2
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert "error" in rows[0] and rows[1]["present"] is False
