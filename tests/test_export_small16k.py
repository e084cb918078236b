"""small_16k (random weights): the flow graphs and the VAE decoder at official widths.

The conditioner, denoiser (H = 448, 12 blocks) and VAE decoder (16 kHz) are exported and gated
at 2 s and 9 s (batch 3 and 1). The full-size encoders (CLIP ViT-H/14 at 384 px, Synchformer)
and the BigVGAN vocoder are too slow for CI on two CPU cores; their export is the recorded run of
benchmarks/export.py (docs/export.md).
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from v2a_export.export.bundle import ExportOptions, export_bundle  # noqa: E402
from v2a_export.export.parity import ParityPlan  # noqa: E402
from v2a_export.export.weights import WeightSource  # noqa: E402
from v2a_export.models.configs import VARIANTS  # noqa: E402

COMPONENTS = ("conditioner", "denoiser", "vae_decoder")


def test_small_16k_flow_and_vae_pass_the_gate(tmp_path):
    plan = ParityPlan(durations=(2.0, 9.0), batches=(3, 1), e2e_duration=None)
    options = ExportOptions(components=COMPONENTS, plan=plan, threads=2)
    result = export_bundle(VARIANTS["small_16k"], WeightSource(seed=0), tmp_path / "b", options)
    assert result.manifest is None  # a partial export: no manifest until all seven exist
    assert sorted(p.name for p in (tmp_path / "b" / "onnx").iterdir()) == [
        f"{c}.onnx" for c in sorted(COMPONENTS)
    ]
    for name in COMPONENTS:
        parity = result.report.components[name]
        assert parity.passed, (name, parity.failures)
        assert [c.duration for c in parity.cases] == [2.0, 9.0]
        assert parity.worst("rel_l2") <= 1e-5
        assert result.exports[name].external_data is None  # < 2 GB
    den = result.report.components["denoiser"].cases
    assert den[1].sizes == {"B": 1, "L": 282, "Lc": 72}
    assert den[1].outputs[0].shape == (1, 282, 20)
    assert "time frequencies" in result.exports["denoiser"].pinned
