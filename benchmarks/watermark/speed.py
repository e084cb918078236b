"""Real-time factors of the watermark on this CPU: CPU seconds per second of audio.

    python benchmarks/watermark/speed.py [--clips 6] [--duration 10]

CPU time (``time.process_time``) rather than wall time, because the benchmark machine is
shared (wall time there measures the other jobs); numpy's FFT and scipy's resampling run on
one core, so this is the single-core cost. Writes benchmarks/results/watermark_rtf.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from v2a_runtime.oracles import clips
from v2a_runtime.watermark import demo_key, detect, embed


def _cpu(fn, repeats: int, *args, **kwargs) -> float:
    t0 = time.process_time()
    for _ in range(repeats):
        fn(*args, **kwargs)
    return (time.process_time() - t0) / repeats


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results"))
    args = ap.parse_args(argv)
    key = demo_key()
    rows = []
    for sr, channels in ((16000, 1), (44100, 1), (44100, 2)):
        emb, det, full = [], [], []
        for i in range(args.clips):
            kind = clips.KINDS[i % len(clips.KINDS)]
            x = clips.make_clip(kind, 900 + i, sr, args.duration)
            x = x if channels == 1 else np.stack([x, 0.7 * x])
            y = embed(x, sr, key, 1)
            emb.append(_cpu(embed, 3, x, sr, key, 1) / args.duration)
            det.append(_cpu(detect, 3, y, sr, key, search="offset") / args.duration)
            if i < 2:
                full.append(_cpu(detect, 1, y, sr, key, search="full") / args.duration)
        rows.append({"sample_rate": sr, "channels": channels, "duration": args.duration,
                     "embed_rtf": float(np.median(emb)), "detect_rtf": float(np.median(det)),
                     "detect_full_search_rtf": float(np.median(full))})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join(["benchmarks/watermark/speed.py", *(argv or sys.argv[1:])]),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version()}
    (out / "watermark_rtf.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Watermark real-time factors ({meta['command']})", "",
             "CPU seconds per second of audio (median over clips; one core).", "",
             "| rate | channels | embed | detect (offset search) | detect (+ speed/tempo/pitch "
             "search) |", "|---|---|---|---|---|"]
    lines += [f"| {r['sample_rate']} | {r['channels']} | {r['embed_rtf']:.4f} | "
              f"{r['detect_rtf']:.4f} | {r['detect_full_search_rtf']:.3f} |" for r in rows]
    (out / "watermark_rtf.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
