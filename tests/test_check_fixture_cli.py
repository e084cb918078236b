"""``v2a-export check-fixture`` / ``inspect-weights`` end to end (click's in-process runner)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from click.testing import CliRunner  # noqa: E402

from v2a_export.cli import EXIT_BAD_INPUT, EXIT_FAILED, main  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _parity_jsons(fixtures_dir):
    # the README's glob: every network fixture and tokenizer.json (ids for the runtime's
    # tokenizer, checked against it)
    return sorted((fixtures_dir / "parity").glob("*.json"))


def test_every_parity_fixture_passes(fixtures_dir):
    paths = _parity_jsons(fixtures_dir)
    assert len(paths) == 9
    res = CliRunner().invoke(main, ["check-fixture", *map(str, paths)])
    assert res.exit_code == 0, res.output
    assert res.output.count("  PASS: ") == len(paths)
    assert "FAIL" not in res.output
    assert "vae_16k (" in res.output and "vae_44k (" in res.output  # after the tokenizer
    assert "tokenizer (tokenizer, " in res.output


def _copy_fixture(fixtures_dir, tmp_path, name):
    for suffix in (".json", ".safetensors", ".npz"):
        shutil.copy(fixtures_dir / "parity" / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    return tmp_path / f"{name}.json"


def test_tampered_reference_output_fails(fixtures_dir, tmp_path):
    path = _copy_fixture(fixtures_dir, tmp_path, "vae_16k")
    with np.load(path.with_suffix(".npz")) as npz:
        arrays = dict(npz)
    arrays["mel"] = arrays["mel"] + 1e-3 * np.abs(arrays["mel"]).max()  # beyond 1e-4 abs
    np.savez_compressed(path.with_suffix(".npz"), **arrays)
    res = CliRunner().invoke(main, ["check-fixture", "--failures-only", str(path)])
    assert res.exit_code == EXIT_FAILED, res.output
    failing = [ln.split()[0] for ln in res.output.splitlines() if ln.rstrip().endswith("FAIL")]
    assert failing == ["mel"], res.output
    assert "FAIL: 4/5 arrays within tolerance" in res.output


def test_tampered_constructor_is_a_one_line_error(fixtures_dir, tmp_path):
    path = _copy_fixture(fixtures_dir, tmp_path, "flow_v2")
    spec = json.loads(path.read_text())
    spec["constructor"]["latent_dim"] = 24
    path.write_text(json.dumps(spec))
    res = CliRunner().invoke(main, ["check-fixture", str(path)])
    assert res.exit_code == EXIT_BAD_INPUT, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output
    assert "wrongly shaped key(s) (latent_mean: file [1, 1, 20] vs expected [1, 1, 24]" in lines[0]


def test_missing_fixture_files_are_one_line_errors(fixtures_dir, tmp_path):
    path = _copy_fixture(fixtures_dir, tmp_path, "clip")
    path.with_suffix(".npz").unlink()
    for target in (path, tmp_path / "absent.json"):
        res = CliRunner().invoke(main, ["check-fixture", str(target)])
        assert res.exit_code == EXIT_BAD_INPUT, res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
    # an unrunnable fixture does not stop the others: its error line, their reports, exit 2
    tokens = fixtures_dir / "parity" / "tokenizer.json"
    res = CliRunner().invoke(main, ["check-fixture", str(tmp_path / "absent.json"), str(tokens)])
    assert res.exit_code == EXIT_BAD_INPUT
    assert res.stderr.startswith("error: ") and "PASS: 8/8" in res.stdout


def test_inspect_weights_names_network_and_variant(fixtures_dir, tmp_path):
    parity = fixtures_dir / "parity"
    res = CliRunner().invoke(
        main,
        [
            "inspect-weights",
            str(parity / "flow_v1.safetensors"),
            str(parity / "bigvgan_16k.safetensors"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "flow network, variant custom" in res.output
    assert "v1, hidden 64 (2 heads), depth 4 = 2 joint + 2 fused, latent 20" in res.output
    assert "ignored by design: 3 key(s) (clip_rot, latent_rot, t_embed.freqs)" in res.output
    assert "vocoder network" in res.output and res.output.count("strict load: OK") == 2

    # a registered variant is named: the tiny flow network's own state dict
    from v2a_export.models.configs import TINY
    from v2a_export.models.flow import MMAudio

    torch.save(MMAudio.from_config(TINY.flow).state_dict(), tmp_path / "tiny_flow.pth")
    res = CliRunner().invoke(main, ["inspect-weights", "--json", str(tmp_path / "tiny_flow.pth")])
    info = json.loads(res.output)
    assert res.exit_code == 0 and info["variant"] == "tiny" and info["loads"] is True

    # a file that looks like a flow network but lacks a block does not load: exit 1
    sd = torch.load(tmp_path / "tiny_flow.pth")
    del sd["fused_blocks.1.linear1.bias"]
    torch.save(sd, tmp_path / "broken.pth")
    res = CliRunner().invoke(main, ["inspect-weights", str(tmp_path / "broken.pth")])
    assert res.exit_code == EXIT_FAILED, res.output
    assert "strict load: FAILS" in res.output and "fused_blocks.1.linear1.bias" in res.output

    res = CliRunner().invoke(main, ["inspect-weights", str(tmp_path / "nothing.pth")])
    assert res.exit_code == EXIT_BAD_INPUT and res.output.startswith("error: ")
