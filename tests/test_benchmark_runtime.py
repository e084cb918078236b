"""benchmarks/runtime.py in its smallest mode: the shipped tiny bundle, 2 s, one timed round.

Checks the record (fields, stage sets per path, the arithmetic of ratios and headline) and
that the ONNX runtime and the PyTorch reference agree within the end-to-end parity bound on
the same weights, video, tokens and noise. No timing assertions (benchmarks are not tests).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "runtime" / "default_bundle"
WEIGHTS = REPO / "weights" / "tiny"  # the shipped bundle's trained weights


def _benchmark(*argv: str) -> subprocess.CompletedProcess:
    """``python benchmarks/runtime.py ARGV`` from the repository root, as its docs run it."""
    return subprocess.run([sys.executable, "benchmarks/runtime.py", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


def _run(tmp_path, *extra: str) -> dict:
    argv = ["--bundle", str(BUNDLE), "--weights", str(WEIGHTS), "--duration", "2", "--steps", "10"]
    argv += ["--runs", "1"]
    argv += ["--warmup", "0", "--threads", "2", "--out", str(tmp_path), "--name", "r", *extra]
    proc = _benchmark(*argv)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # 0: every parity check passed
    record = json.loads((tmp_path / "r.json").read_text())
    assert (tmp_path / "r.md").read_text().startswith("### Runtime vs PyTorch reference: tiny")
    return record


def _check_summary(p: dict, headline: list[str]) -> None:
    for row in p["stages"].values():
        if row["ratio_p50"] is not None:
            want = row["runtime"]["p50_ms"] / row["reference"]["p50_ms"]
            assert row["ratio_p50"] == pytest.approx(want)
    h = p["headline"]
    assert h["stages"] == headline
    for path in ("runtime", "reference"):  # the headline is the per-run sum of its stages
        total = sum(p["stages"][s][path]["runs_ms"][0] for s in headline)
        assert h[path]["runs_ms"][0] == pytest.approx(total, abs=0.01 * len(headline))
        assert h[path]["n"] == 1
    assert h["ratio_p50"] == pytest.approx(h["runtime"]["p50_ms"] / h["reference"]["p50_ms"])
    par = p["parity"]
    assert par["passed"] and par["rel_l2"] <= par["bound_rel_l2"] == 1e-3
    assert par["max_abs"] > 0  # two different computations, not one output compared to itself
    assert par["cosine"] > 0.999


@pytest.mark.slow
def test_end_to_end_from_video_and_encoder_units(tmp_path):
    r = _run(tmp_path, "--encoders-per-unit", "--unit-runs", "1", "--cli-runs", "1")
    assert r["benchmark"] == "runtime" and r["variant"] == "tiny" and r["passed"]
    assert r["weights"] == f"trained ({WEIGHTS})"
    assert (
        r["request"] | {"duration": 2.0, "steps": 10, "cfg": 4.5, "solver": "euler"}
        == (r["request"])
    )
    assert r["request"]["latent"] == 63  # ceil(2 * 16000 / 256 / 2)
    assert r["threads"] == {
        "torch_intra_op": 2,
        "onnxruntime_intra_op": 2,
        "onnxruntime_inter_op": 1,
    }
    m = r["machine"]
    assert len(m["load_average_start"]) == 3 and len(m["load_average_end"]) == 3
    assert {"torch", "onnxruntime", "onnx", "numpy", "av"} <= set(r["versions"])
    assert r["command"].startswith("python benchmarks/runtime.py --bundle")

    p = r["pipeline"]
    assert p["mode"] == "end to end from the video file"
    stages = p["stages"]
    runtime_only = {"watermark"}
    both = {"decode", "encoders", "conditions", "sampling", "vae", "vocoder", "end_to_end"}
    assert set(stages) == both | runtime_only
    assert all("runtime" in stages[s] and "reference" in stages[s] for s in both)
    assert "reference" not in stages["watermark"] and stages["watermark"]["ratio_p50"] is None
    _check_summary(p, ["encoders", "conditions", "sampling", "vae", "vocoder"])
    assert set(p["cold_round_ms"]) == {"runtime", "reference"}
    assert {"load_runtime", "load_reference", "peak_runtime", "peak_reference"} == set(
        p["memory_mb"]
    )
    assert p["memory_mb"]["peak_runtime"] > 0

    units = r["encoders_per_unit"]
    assert set(units) == {"clip_visual", "sync_visual", "text"}
    # 2 s: 50 clip frames at 25 fps, (50 - 16) // 8 + 1 = 5 segments, one prompt pair
    assert {n: u["units_per_clip"] for n, u in units.items()} == {
        "clip_visual": 50,
        "sync_visual": 5,
        "text": 1,
    }
    assert [units[n]["unit"] for n in ("clip_visual", "sync_visual", "text")] == [
        "frame",
        "segment",
        "prompt pair",
    ]
    for u in units.values():
        assert u["parity"]["passed"] and u["parity"]["rel_l2"] <= 1e-5
        assert u["runtime"]["n"] == u["reference"]["n"] == 1
        assert math.isfinite(u["ratio_p50"])

    cli = r["cli"]
    assert cli["command"].startswith("v2a generate $TMP/clip.mp4 -o $TMP/out.mp4 --bundle")
    assert cli["generate"]["n"] == 1 and cli["version"]["n"] == 1
    assert cli["inside_command"]["n"] == 1  # parsed from the summary line's "total"
    assert "euler 10 steps cfg 4.5" in cli["last_summary"]


@pytest.mark.slow
def test_flow_chain_on_fixed_features(tmp_path):
    r = _run(tmp_path, "--stages", "sampling", "vae", "vocoder", "--seed", "3")
    p = r["pipeline"]
    assert p["mode"] == "flow chain, fixed encoder features"
    assert set(p["stages"]) == {"conditions", "sampling", "vae", "vocoder", "end_to_end"}
    _check_summary(p, ["sampling", "vae", "vocoder"])
    assert r["request"]["seed"] == 3
    assert "encoders_per_unit" not in r and "cli" not in r


def test_bad_arguments_are_refused():
    assert _benchmark("--runs", "0", "--no-write").returncode != 0
    proc = _benchmark("--bundle", str(BUNDLE), "--no-write")  # trained: needs its weights
    assert proc.returncode != 0
    assert "not a random-weight bundle; give --weights DIR" in proc.stderr
    proc = _benchmark("--bundle", str(BUNDLE), "--weights", str(WEIGHTS), "--variant",
                      "small_16k", "--no-write")  # fmt: skip
    assert proc.returncode != 0 and "holds tiny, not --variant small_16k" in proc.stderr
