"""The runtime never imports torch: a fresh interpreter in which torch cannot be imported (an
import hook refuses it and records every attempt) imports every v2a_runtime module, runs a full
generate and the ``v2a generate`` CLI, and no module even tried to import torch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys

    attempts = []

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith(("torch.", "torchaudio", "torchvision")):
                attempts.append(name)
                raise ImportError(f"torch is blocked in this test: {name}")
            return None

    # First on the meta path: every `import torch...` fails. (Not `sys.modules["torch"] = None`:
    # scipy's array_api_compat reads sys.modules["torch"].Tensor whenever the key exists.)
    sys.meta_path.insert(0, BlockTorch())
    assert "torch" not in sys.modules

    import v2a_runtime
    names = [m.name for m in pkgutil.walk_packages(v2a_runtime.__path__, "v2a_runtime.")]
    for name in names:
        importlib.import_module(name)

    import numpy as np
    from v2a_runtime.frames import VideoArray
    from v2a_runtime.pipeline import Pipeline

    bundle, tests, tmp = sys.argv[1], sys.argv[2], sys.argv[3]
    pipe = Pipeline.load(bundle)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 36, 52, 3), dtype=np.uint8)
    result = pipe.generate(VideoArray(pixels, 25.0), prompt="rain", steps=3, tracks=2)
    assert result.audio.shape == (2, 25600) and np.abs(result.audio).max() > 0.01
    assert len(result.watermarks) == 2

    from media_videos import write_video  # tests/ is on PYTHONPATH
    from click.testing import CliRunner
    from v2a_runtime.cli import main

    video = write_video(__import__("pathlib").Path(tmp) / "in.mp4", frames=40, audio="aac")
    out = f"{tmp}/out.mp4"
    run = CliRunner().invoke(main, ["generate", str(video), "--bundle", bundle, "-o", out,
                                    "--steps", "2"])
    assert run.exit_code == 0, run.output + run.stderr

    loaded = sorted(k for k, v in sys.modules.items()
                    if v is not None and k.split(".")[0] in ("torch", "torchaudio", "torchvision"))
    assert not loaded, loaded
    print("modules", len(names), "attempts", attempts)
    """
)


def test_runtime_runs_with_torch_unimportable(tmp_path):
    bundle = TESTS / "data" / "test_bundle"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(bundle), str(TESTS), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = proc.stdout.split()
    assert first[0] == "modules" and int(first[1]) >= 10  # every module was imported
    assert "attempts []" in proc.stdout, proc.stdout  # nothing even tried to import torch
    assert (tmp_path / "out.mp4").is_file()
