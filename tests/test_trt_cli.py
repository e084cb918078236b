"""The TensorRT parser check on the command line: ``check-trt`` alone, and inside ``export`` and
``convert-precision``, which refuse to write a graph TensorRT would not parse (exit 1, every
violation on stderr, nothing written) unless ``--allow-trt-incompatible`` (a warning)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")

from click.testing import CliRunner  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from v2a_export.cli import main as cli  # noqa: E402
from v2a_export.export.trt_compat import Violation  # noqa: E402

TEST_BUNDLE = Path(__file__).parent / "data" / "test_bundle"


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _transpose_first(path: Path) -> Path:
    """The old encoder pattern: a Transpose reads the uint8 input, then the Cast."""
    nodes = [
        helper.make_node("Transpose", ["frames"], ["t"], name="node_permute", perm=[0, 3, 1, 2]),
        helper.make_node("Cast", ["t"], ["y"], name="node_cast", to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["F", 8, 8, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["F", 3, 8, 8])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_check_trt_passes_the_test_bundle():
    code, out, _ = _run("check-trt", TEST_BUNDLE)
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[:7] == [
        f"{TEST_BUNDLE}: {c}: ok"
        for c in ("clip_visual", "sync_visual", "text", "conditioner", "denoiser",
                  "vae_decoder", "vocoder")
    ]  # fmt: skip
    assert lines[7].startswith("TensorRT 10.1 and 10.15 parser, 11 rules (")
    assert lines[7].endswith("): 7/7 graph(s) pass")


def test_check_trt_reports_each_violation_and_exits_1(tmp_path):
    graph = _transpose_first(tmp_path / "enc.onnx")
    code, out, _ = _run("check-trt", graph)
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[0] == f"{graph}: 2 violation(s)"
    assert lines[1].startswith(
        "  node 'node_permute' (Transpose): uint8: reads the uint8 graph input 'frames'; fix: "
    )
    assert lines[2].startswith(
        "  node 'node_permute' (Transpose): uint8: makes the uint8 tensor 't'; fix: "
    )
    assert lines[3].endswith("): 0/1 graph(s) pass")


@pytest.mark.parametrize(
    ("target", "words"),
    [("nope", "does not exist"), (".", "is not a bundle"), ("README.md", "not an ONNX model")],
)
def test_check_trt_bad_input_is_one_line(target, words):
    path = Path(__file__).parents[1] / target if target != "nope" else Path("/nope")
    code, out, err = _run("check-trt", path)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err


def test_export_refuses_a_graph_tensorrt_would_not_parse(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from v2a_export.export import onnx_export

    monkeypatch.setattr(onnx_export, "cast_inputs_first", lambda _model: 0)  # undo the fix
    out = tmp_path / "b"
    args = ["export", "--variant", "tiny", "--components", "clip_visual", "--out", out,
            "--parity-durations", "1,1.5", "--e2e-duration", "none", "-q"]  # fmt: skip
    code, stdout, stderr = _run(*args)
    assert code == 1, stdout + stderr
    assert not out.exists()  # stopped before the gate, nothing written
    lines = stderr.splitlines()
    assert len(lines) == 2  # the Cast comes first in the network: only the exporter's Shape
    assert lines[0] == (
        "  clip_visual: node 'node_Shape_0' (Shape): uint8: reads the uint8 graph input "
        "'frames'; fix: cast the input first (x.float()) and read only the cast tensor; export "
        "runs cast_inputs_first for Shape nodes"
    )
    assert lines[-1] == (
        "error: clip_visual: TensorRT 10.1 and 10.15 would not parse this graph: node "
        "'node_Shape_0' (Shape): uint8: reads the uint8 graph input 'frames'; fix: cast the "
        "input first (x.float()) and read only the cast tensor; export runs cast_inputs_first "
        "for Shape nodes; nothing was written (--allow-trt-incompatible writes it anyway)"
    )
    code, stdout, stderr = _run(*args, "--allow-trt-incompatible")
    assert code == 0, stdout + stderr
    assert (out / "onnx" / "clip_visual.onnx").is_file()
    assert (
        "WARNING: 1 TensorRT parser rule violation(s): TensorRT will not build clip_visual "
        "(written anyway: --allow-trt-incompatible)\n  clip_visual: node 'node_Shape_0'"
    ) in stderr


def test_convert_precision_refuses_then_warns(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from v2a_export.export.precision import bundle as precision_bundle

    bad = Violation("uint8", "node_permute", "Transpose", "reads the uint8 graph input", "cast")

    def check_file(path):
        return (bad,) if Path(path).name == "sync_visual.onnx" else ()

    monkeypatch.setattr(precision_bundle, "check_file", check_file)
    out = tmp_path / "fp16"
    args = ["convert-precision", TEST_BUNDLE, "--out", out, "--no-validate",
            "--calibration-durations", "1", "--calibration-steps", "2", "-q"]  # fmt: skip
    code, stdout, stderr = _run(*args)
    assert code == 1, stdout + stderr
    assert not out.exists()
    assert stderr.splitlines() == [
        "  sync_visual: node 'node_permute' (Transpose): uint8: reads the uint8 graph input; "
        "fix: cast",
        "error: sync_visual: TensorRT 10.1 and 10.15 would not parse this graph: node "
        "'node_permute' (Transpose): uint8: reads the uint8 graph input; fix: cast; nothing was "
        "written (--allow-trt-incompatible writes it anyway)",
    ]
    code, stdout, stderr = _run(*args, "--allow-trt-incompatible")
    assert code == 0, stdout + stderr
    assert (out / "manifest.json").is_file()
    assert "WARNING: 1 TensorRT parser rule violation(s)" in stderr


def test_validate_reports_the_check(tmp_path, capsys):
    from v2a_export.cli.trt import check_bundle_or_fail

    assert check_bundle_or_fail(TEST_BUNDLE, allow=False)
    assert capsys.readouterr().out == "  TensorRT parser check: every graph passes\n"
    bundle = tmp_path / "b"
    shutil.copytree(TEST_BUNDLE, bundle)
    _transpose_first(bundle / "onnx" / "clip_visual.onnx")  # sha256 is not verified here
    assert not check_bundle_or_fail(bundle, allow=False)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "  TensorRT parser check FAILED: clip_visual"
    assert len(out) == 3 and out[1].startswith("    clip_visual: node 'node_permute'")
    assert check_bundle_or_fail(bundle, allow=True)  # a warning instead
    assert "WARNING: 2 TensorRT parser rule violation(s)" in capsys.readouterr().err


def test_parse_first_dry_run_lists_every_graph_with_its_trtexec_command(tmp_path):
    """scripts/trt_parse_first.py (run first by scripts/verify_tensorrt.sh) without TensorRT."""
    import json
    import subprocess
    import sys

    out = tmp_path / "parse.json"
    script = Path(__file__).parents[1] / "scripts" / "trt_parse_first.py"
    r = subprocess.run(
        [sys.executable, str(script), "--dry-run", str(TEST_BUNDLE), "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    rows = json.loads(out.read_text())["graphs"]
    assert [row["graph"] for row in rows] == [
        f"test_bundle/{c}"
        for c in ("clip_visual", "sync_visual", "text", "conditioner", "denoiser",
                  "vae_decoder", "vocoder")
    ]  # fmt: skip
    assert all(row["static_violations"] == [] for row in rows)
    clip = rows[0]["trtexec"]
    assert "--stronglyTyped" in clip and "--minShapes=frames:5x64x64x3" in clip  # 0.64 s x 8 fps
