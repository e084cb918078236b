"""Rebuild the bundle shipped inside v2a_runtime (runtime/default_bundle/), so that
``v2a generate VIDEO`` works right after ``pip install``.

    python scripts/build_default_bundle.py                    # random weights (seed 0)
    python scripts/build_default_bundle.py --weights DIR      # trained tiny weights

It runs the real exporter (``v2a-export export --variant tiny``) with the parity gate and the
end-to-end check, and refuses to replace the shipped bundle if the gate fails. ``--weights DIR``
takes one file per network (``flow.safetensors``, ``vae.safetensors``, ``vocoder...``,
``synchformer...``, ``clip...``; see v2a_export.export.weights). Without it the networks get
seeded random weights: the manifest says ``weights: random`` and the CLI notes it on every run.

The bundle uses the CLIP vocabulary packaged with v2a_runtime (``tokenizer.file: null``) instead
of a second 1.3 MB copy. Needs torch: ``pip install -e ".[export]"``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runtime" / "default_bundle"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="directory of trained tiny weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--out", type=Path, default=OUT, help=f"default: {OUT}")
    parser.add_argument("--note", help="weights_note for the manifest (e.g. the training command)")
    args = parser.parse_args(argv)

    from v2a_export.export.bundle import ExportOptions, export_bundle, replace_dir
    from v2a_export.export.weights import WeightSource
    from v2a_export.models.configs import get_config

    if args.weights is not None:
        source = WeightSource(directory=args.weights)
    else:
        source = WeightSource(seed=args.seed)
    options = ExportOptions(packaged_tokenizer=True, weights_note=args.note)
    staging = args.out.parent / f".{args.out.name}.staging"
    result = export_bundle(get_config("tiny"), source, staging, options)
    print(result.report.summary())
    if not result.report.passed:
        print(f"parity gate FAILED; {args.out} left unchanged (see {staging})", file=sys.stderr)
        return 1
    replace_dir(staging, args.out)
    size = sum(r.bytes for r in result.exports.values())
    print(f"{args.out}: {result.weights} weights, {size:,} bytes of ONNX")
    return 0


if __name__ == "__main__":
    sys.exit(main())
