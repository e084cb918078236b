"""``v2a watermark`` as a production user meets it: verify reports every audio track of a file
(and counts seconds right), embed refuses to claim a mark that cannot be read back, keygen
names the missing directory."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from click.testing import CliRunner
from v2a_runtime.cli import main
from v2a_runtime.oracles import clips
from v2a_runtime.watermark import embed, load_key, make_payload

RATE = 44100


def _run(*args):
    return CliRunner().invoke(main, ["watermark", *map(str, args)])


def _two_track_mkv(path: Path, tracks: list[np.ndarray]) -> Path:
    """A 5 s MKV: a picture and one FLAC track per (W,) array (lossless, so the test is about
    tracks, not codecs)."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        streams = [c.add_stream("flac", rate=RATE, layout="mono") for _ in tracks]
        for i in range(50):
            img = np.full((48, 64, 3), (i * 5) % 255, np.uint8)
            c.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(v.encode(None))
        for stream, audio in zip(streams, tracks, strict=True):
            frame = av.AudioFrame.from_ndarray(audio[None].astype(np.float32), format="fltp",
                                               layout="mono")  # fmt: skip
            frame.sample_rate, frame.pts, frame.time_base = RATE, 0, Fraction(1, RATE)
            c.mux(stream.encode(frame))
            c.mux(stream.encode(None))
    return path


def test_verify_reports_every_audio_track(tmp_path):
    host = clips.make_clip("foley", 5, RATE, 5.0)
    marked = embed(host, RATE, load_key(None), make_payload(3, 0x123456))
    video = _two_track_mkv(tmp_path / "two.mkv", [host, marked])  # the mark in track 2 only
    res = _run("verify", video, "--json", "--search", "offset")
    assert res.exit_code == 0, res.output  # marked: one of its tracks carries the mark
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(r["track"], r["tracks"], r["present"]) for r in rows] == [
        (1, 2, False), (2, 2, True)]  # fmt: skip
    assert rows[1]["payload"] == make_payload(3, 0x123456)
    text = _run("verify", video, "--search", "offset").stdout.splitlines()
    assert text[0].startswith(f"{video} [track 1/2]: not marked")
    assert text[1].startswith(f"{video} [track 2/2]: MARKED")


def test_an_8_second_file_has_8_seconds(tmp_path):
    host = clips.make_clip("foley", 7, 16000, 8.0)
    assert host.shape == (128000,)
    path = tmp_path / "eight.flac"
    sf.write(path, embed(host, 16000, load_key(None), make_payload(1, 5)), 16000)
    res = _run("verify", path)
    assert res.exit_code == 0 and res.stdout.rstrip().endswith("8/8 s with z ≥ 3"), res.stdout


def test_embed_refuses_a_mark_that_cannot_be_read_back(tmp_path):
    rng = np.random.default_rng(0)
    inputs = {"silence.wav": np.zeros(5 * RATE),  # nothing to hide a mark in
              "hiss.wav": 3e-5 * rng.standard_normal(5 * RATE)}  # ±1 LSB of 16-bit  # fmt: skip
    for name, audio in inputs.items():
        sf.write(tmp_path / name, audio, RATE, subtype="PCM_16")
        res = _run("embed", tmp_path / name, tmp_path / f"out-{name}")
        assert res.exit_code == 2, (name, res.output)
        line = res.stderr.strip().splitlines()[-1]
        assert line.startswith("error: ") and "would not be recoverable" in line
        assert "nothing was written" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(inputs)  # nothing left behind
    sf.write(tmp_path / "foley.wav", clips.make_clip("foley", 3, RATE, 5.0), RATE)
    res = _run("embed", tmp_path / "foley.wav", tmp_path / "ok.flac")
    assert res.exit_code == 0 and "verified in the written file" in res.stdout


def test_keygen_into_a_missing_directory_is_one_clear_line(tmp_path):
    res = _run("keygen", tmp_path / "nodir" / "x.key")
    assert res.exit_code == 2
    (line,) = res.stderr.strip().splitlines()
    assert line == (f"error: {tmp_path / 'nodir' / 'x.key'}: cannot create the key file "
                    f"(directory {str(tmp_path / 'nodir')!r}: does not exist)")  # fmt: skip
    assert "Errno" not in line


def test_payload_names_the_bundle_that_made_the_file(tmp_path):
    """Two bundles of the same variant with different weights carry different model ids, and
    verify --bundle says which one made a file."""
    import shutil

    from v2a_runtime.bundle import load_bundle

    test_bundle = Path(__file__).parent / "data" / "test_bundle"
    other = tmp_path / "other_bundle"
    shutil.copytree(test_bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["components"]["vocoder"]["sha256"] = "0" * 64  # other weights (as far as ids go)
    (other / "manifest.json").write_text(json.dumps(manifest))
    ours = load_bundle(test_bundle).manifest
    theirs = load_bundle(other, verify=False).manifest
    assert ours.model == theirs.model  # same variant, same declared model_id ...
    assert ours.mark_id != theirs.mark_id  # ... but not the same payload id
    out = tmp_path / "made.flac"
    video = tmp_path / "v.mkv"
    from media_videos import write_video

    write_video(video, fps=25, frames=40)
    res = CliRunner().invoke(main, ["generate", str(video), "--bundle", str(test_bundle),
                                    "-o", str(out), "--steps", "2", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    res = _run("verify", out, "--bundle", test_bundle, "--bundle", other, "--search", "offset")
    assert res.exit_code == 0 and res.stdout.rstrip().endswith(f"made by {test_bundle}")
    res = _run("verify", out, "--bundle", other, "--json", "--search", "offset")
    row = json.loads(res.stdout)
    assert row["model_id"] == ours.mark_id and row["bundles"] == []
    res = _run("verify", out, "--bundle", other, "--search", "offset")
    assert res.stdout.rstrip().endswith("made by none of the given bundles")
