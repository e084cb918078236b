"""Rebuild the bundle shipped inside v2a_runtime (runtime/default_bundle/), so that
``v2a generate VIDEO`` works right after ``pip install``.

    python scripts/build_default_bundle.py            # needs torch (pip install -e ".[export]")

Until the exporter (v2a_export.export) and the trained ``tiny`` model exist, the shipped
bundle holds the placeholder networks of tests/make_test_bundle.py: the contract's exact
I/O at the ``tiny`` widths with random weights. Its manifest says so (``weights: random``),
and the CLI prints a note on every run. The ONNX files are byte-identical to the test
bundle's (same generator, same seed), so git stores them once.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runtime" / "default_bundle"
NOTE = (
    "placeholder networks with the contract's I/O at the tiny widths and random weights "
    "(scripts/build_default_bundle.py); not the MMAudio architecture; the output is noise"
)


def main() -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from make_test_bundle import build

    if OUT.exists():
        shutil.rmtree(OUT)
    print(build(OUT, variant="placeholder", weights_note=NOTE))


if __name__ == "__main__":
    main()
