"""``v2a-export export|validate``: bad input is one ``Error:`` line, exit status 2, and nothing
is written. None of these cases gets as far as exporting a graph."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from v2a_export.cli import main as cli  # noqa: E402
from v2a_export.export import bundle as bundle_module  # noqa: E402
from v2a_export.export.bundle import estimate_bytes  # noqa: E402
from v2a_export.models.configs import TINY, VARIANTS  # noqa: E402

TEST_BUNDLE = Path(__file__).parent / "data" / "test_bundle"


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def _one_line_error(code: int, out: str, *words: str) -> None:
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert "Traceback" not in out
    for w in words:
        assert w in lines[0], (w, out)


def test_unknown_variant(tmp_path):
    code, out = _run("export", "--variant", "huge", "--out", tmp_path / "b")
    _one_line_error(code, out, "unknown variant 'huge'", "small_16k")
    assert not (tmp_path / "b").exists()


def test_variant_or_config_required(tmp_path):
    code, out = _run("export", "--out", tmp_path / "b")
    _one_line_error(code, out, "--variant", "--config")


def test_bad_config_file(tmp_path):
    config = tmp_path / "model.json"
    config.write_text(json.dumps({**TINY.to_dict(), "flow": {"depth": 3}}))
    code, out = _run("export", "--config", config, "--out", tmp_path / "b")
    _one_line_error(code, out, f"model config {config}: flow: missing fields", "latent_dim")


def test_missing_weights(tmp_path):
    code, out = _run(
        "export", "--variant", "small_16k", "--weights", tmp_path / "nope", "--out", tmp_path / "b"
    )
    _one_line_error(code, out, "--weights", "does not exist")
    code, out = _run(
        "export", "--variant", "tiny", "--weights-file", tmp_path / "w.pth", "--out", tmp_path / "b"
    )
    _one_line_error(code, out, "--weights-file", "is not a file")


def test_weights_directory_without_the_files(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "flow.safetensors").write_bytes(b"")  # only one of five networks
    code, out = _run(
        "export", "--variant", "small_16k", "--weights", weights, "--out", tmp_path / "b"
    )
    _one_line_error(code, out, "no file for clip, synchformer, vae, vocoder", "v1-16.pth")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b*"))


def test_output_that_is_a_file(tmp_path):
    target = tmp_path / "bundle"
    target.write_text("not a directory")
    code, out = _run("export", "--variant", "tiny", "--out", target)
    _one_line_error(code, out, "is a file")
    assert target.read_text() == "not a directory"


def test_output_that_is_someone_elses_directory(tmp_path):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "cat.jpg").write_bytes(b"\xff\xd8")
    code, out = _run("export", "--variant", "tiny", "--out", target)
    _one_line_error(code, out, "holds no v2a-export output")
    assert [p.name for p in target.iterdir()] == ["cat.jpg"]


def test_unknown_component_and_bad_durations(tmp_path):
    code, out = _run("export", "--variant", "tiny", "--out", tmp_path / "b", "--components", "unet")
    _one_line_error(code, out, "unknown component", "denoiser")
    code, out = _run(
        "export", "--variant", "tiny", "--out", tmp_path / "b", "--parity-durations", "2"
    )
    _one_line_error(code, out, ">= 2 different durations")
    code, out = _run(
        "export", "--variant", "tiny", "--out", tmp_path / "b", "--max-duration", "0.5"
    )
    _one_line_error(code, out, "--max-duration")


def test_no_disk_space(tmp_path, monkeypatch):
    # A full disk cannot be made for real in a test: the free-space probe reports 1 MB.
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(bundle_module.shutil, "disk_usage", lambda _p: usage(10**9, 10**9, 10**6))
    code, out = _run("export", "--variant", "tiny", "--out", tmp_path / "b")
    _one_line_error(code, out, "not enough disk space", "GB free")
    assert not (tmp_path / "b").exists()


def test_space_estimate_tracks_the_model():
    tiny = estimate_bytes(TINY, ("denoiser",))
    large = estimate_bytes(VARIANTS["large_44k_v2"], ("denoiser", "conditioner"))
    assert 4 * 10**6 < tiny < 30 * 10**6
    assert 4 * 10**9 < large < 6 * 10**9  # ~1.03 B flow parameters in fp32


def test_validate_needs_weights_for_a_trained_bundle(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(TEST_BUNDLE, bundle)
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    data["model"]["weights"] = "trained"
    data["model"]["variant"] = "tiny"
    data["video"]["clip_fps"] = 25.0  # tiny's (the placeholder bundle keeps 8 fps)
    path.write_text(json.dumps(data))
    code, out = _run("validate", bundle)
    _one_line_error(code, out, "trained weights", "--weights")
    data["video"]["clip_fps"] = 8.0  # a bundle whose facts disagree with its variant
    path.write_text(json.dumps(data))
    code, out = _run("validate", bundle)
    _one_line_error(code, out, "disagree with variant 'tiny'", "re-export")
    code, out = _run("validate", tmp_path / "missing")
    _one_line_error(code, out, "does not exist")
