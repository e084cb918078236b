"""benchmarks/cpu.py in its smallest mode, and the FLOP count its profile section rests on.

The script runs on the shipped tiny bundle with ``--int8`` pointing at the fp32 bundle itself,
so every component is quantized by the benchmark (every candidate, ungated): the record must
hold the three paths of a unit (sync_visual), the measured int8 error, and a denoiser profile
whose int8 graph runs integer kernels. About 10 s of CPU. No timing assertions (benchmarks are
not tests).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime.quantization")

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "runtime" / "default_bundle"
WEIGHTS = REPO / "weights" / "tiny"
sys.path.insert(0, str(REPO / "benchmarks"))

import cpu  # noqa: E402


def test_node_flops_counts_multiply_adds_from_profiled_shapes():
    def shapes(*xs):
        return [{"float": list(x)} for x in xs]

    matmul = {"input_type_shape": shapes((2, 250, 64), (64, 256)),
              "output_type_shape": shapes((2, 250, 256))}  # fmt: skip
    assert cpu.node_flops("MatMul", matmul) == 2 * 2 * 250 * 256 * 64
    assert cpu.node_flops("DynamicQuantizeMatMul", matmul) == 2 * 2 * 250 * 256 * 64
    conv = {"input_type_shape": shapes((1, 80, 256), (128, 80, 7), (128,)),
            "output_type_shape": shapes((1, 128, 256))}  # fmt: skip
    assert cpu.node_flops("Conv", conv) == 2 * 128 * 256 * 80 * 7
    assert cpu.node_flops("Softmax", matmul) == 0.0


def test_units_and_profile_of_the_tiny_bundle(tmp_path):
    argv = ["--bundle", BUNDLE, "--int8", BUNDLE, "--weights", WEIGHTS,
            "--sections", "units", "profile", "--components", "sync_visual",
            "--threads", "1", "--runs", "1", "--duration", "2", "--out", tmp_path,
            "--name", "c"]  # fmt: skip
    proc = subprocess.run([sys.executable, "benchmarks/cpu.py", *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((tmp_path / "c.json").read_text())
    assert (tmp_path / "c.md").read_text().startswith("## CPU: fp32 vs int8 vs PyTorch, tiny")
    unit = record["units"]["sync_visual"]
    assert unit["int8_source"].startswith("forced")
    assert set(unit["threads"]["1"]) == {"fp32", "int8", "torch"}
    errors = unit["int8_error"]
    # forced (ungated) int8 of the shipped weights: 0.29 rel L2 for the retrained sync tower
    # (the gate keeps it fp32); a wrong scale or zero point gives ~1 and a cosine near 0
    assert errors and all(0 < e["rel_l2"] < 0.5 and e["cosine"] > 0.9 for e in errors)
    profile = record["profile"]["1"]
    assert "MatMul" in profile["fp32"]["by_op"]
    assert set(profile["int8"]["by_op"]) & {"MatMulInteger", "DynamicQuantizeMatMul"}
    # the same products, counted from the int8 graph's integer kernels
    assert math.isclose(profile["int8"]["gflop"], profile["fp32"]["gflop"], rel_tol=0.05)
    assert profile["fp32"]["gflop"] > 0 and profile["fp32"]["gflops_heavy_ops"] > 0
