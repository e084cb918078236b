"""Measure the world: rendering speed, scene statistics and the metrics on ground truth.

    python benchmarks/world.py [--clips 200] [--json report.json]

Prints the markdown tables of ``docs/world.md``. Clips are 8 s held-out scenes
(seeds from ``HELD_OUT_SEED_BASE``). Timings are the best of three runs in this process, on
whatever CPU runs it; they are wall-clock and vary with the machine's load. This is a command
(it prints); the library modules it measures are silent.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
from v2a_runtime.world import metrics
from v2a_runtime.world.render import frame_times, render_frames, write_video
from v2a_runtime.world.scene import make_scene
from v2a_runtime.world.sound import render_audio
from v2a_runtime.world.spec import AMBIENCE_NAMES, MATERIAL_NAMES, NAMED_AMBIENCES, held_out_seeds

DURATION = 8.0


def _best(fn, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def speed() -> dict:
    """Seconds per operation (best of 3); frames in ms per frame."""
    out: dict = {"frames_ms": {}}
    times = frame_times(DURATION, 25.0)  # 200 frames
    for ambience in AMBIENCE_NAMES:
        scene = make_scene(held_out_seeds(1)[0], DURATION, ambience=ambience)
        out["frames_ms"][ambience] = {
            size: 1000.0 * _best(lambda s=scene, z=size: render_frames(s, times, z)) / len(times)
            for size in (64, 256)
        }
    seeds = list(held_out_seeds(20))
    out["make_scene_s"] = _best(lambda: [make_scene(s, DURATION) for s in seeds]) / len(seeds)
    scenes = [make_scene(s, DURATION) for s in seeds]
    out["render_audio_s"] = _best(lambda: [render_audio(s) for s in scenes]) / len(scenes)
    audio = [(s.ground_truth(), render_audio(s)) for s in scenes]
    out["evaluate_clip_s"] = _best(lambda: [metrics.evaluate_clip(a, gt) for gt, a in audio]) / len(
        audio)
    with TemporaryDirectory() as tmp:
        out["write_video_256_s"] = _best(lambda: write_video(scenes[0], Path(tmp) / "v.mp4"), 1)
    return out


def statistics(scenes: list) -> dict:
    counts = np.array([len(s.events) for s in scenes])
    gaps = np.concatenate([np.diff(s.event_times) for s in scenes])
    events = [e for s in scenes for e in s.events]
    return {
        "clips": len(scenes),
        "events_per_clip": {"min": int(counts.min()), "median": float(np.median(counts)),
                            "mean": float(counts.mean()), "max": int(counts.max())},
        "histogram": {int(k): int(v) for k, v in sorted(Counter(counts.tolist()).items())},
        "materials": {m: sum(e.material == m for e in events) for m in MATERIAL_NAMES},
        "kinds": dict(Counter(e.kind for e in events)),
        "ambiences": {a: sum(s.ambience == a for s in scenes) for a in AMBIENCE_NAMES},
        "near_gap_share": float(np.mean(gaps < metrics.CLUSTER_GAP)) if gaps.size else 0.0,
        "clips_with_resting_object": sum(any(o.role == "rest" for o in s.objects)
                                         for s in scenes),
    }


def quality(scenes: list) -> dict:
    """Summaries of the metrics on the true audio, shifted by +30 ms, and with a noise floor."""
    rng = np.random.default_rng(0)
    rows: dict[str, list] = {"ground truth": [], "shifted +30 ms": [],
                             "white noise -50 dBFS added": []}
    levels: dict[str, list] = {a: [] for a in AMBIENCE_NAMES}
    for s in scenes:
        gt, x = s.ground_truth(), render_audio(s)
        n = int(0.030 * len(x) / s.duration)
        rows["ground truth"].append(metrics.evaluate_clip(x, gt))
        shifted = np.concatenate([np.zeros(n, x.dtype), x[:-n]])
        rows["shifted +30 ms"].append(metrics.evaluate_clip(shifted, gt))
        noisy = x + 10 ** (-50 / 20) * rng.standard_normal(len(x))
        rows["white noise -50 dBFS added"].append(metrics.evaluate_clip(noisy, gt))
        levels[s.ambience].append(rows["ground truth"][-1].ambience_db)
    bands = {}
    for a in NAMED_AMBIENCES:
        own = [lv[a] for lv in levels[a]]
        other = [lv[a] for b in AMBIENCE_NAMES if b != a for lv in levels[b]]
        bands[a] = {"own_median_db": float(np.median(own)), "others_max_db": float(max(other))}
    return {"summaries": {k: metrics.summarize(v).to_dict() for k, v in rows.items()},
            "bands": bands}


def _print(report: dict) -> None:
    sp = report["speed"]
    print("| background | 64 px (ms/frame) | 256 px (ms/frame) |\n|---|---|---|")
    for a, v in sp["frames_ms"].items():
        print(f"| {a} | {v[64]:.2f} | {v[256]:.2f} |")
    print(f"\nper 8 s clip: make_scene {1000 * sp['make_scene_s']:.1f} ms, render_audio "
          f"{1000 * sp['render_audio_s']:.1f} ms, evaluate_clip {1000 * sp['evaluate_clip_s']:.0f}"
          f" ms, write_video 256 px {sp['write_video_256_s']:.2f} s\n")
    st = report["statistics"]
    print(f"events per clip: {st['events_per_clip']}, histogram {st['histogram']}")
    print(f"events by material {st['materials']}, by contact {st['kinds']}")
    print(f"clips by ambience {st['ambiences']}; consecutive events < 50 ms apart: "
          f"{100 * st['near_gap_share']:.1f} %; clips with a resting object: "
          f"{st['clips_with_resting_object']}\n")
    print("| audio | hit rate | median abs offset (ms) | p95 (ms) | median offset (ms) | "
          "false onsets/s | material accuracy (n) |\n|---|---|---|---|---|---|---|")
    for name, s in report["quality"]["summaries"].items():
        print(f"| {name} | {s['hit_rate']:.3f} | {s['median_abs_offset_ms']:.2f} | "
              f"{s['p95_abs_offset_ms']:.2f} | {s['median_offset_ms']:+.2f} | "
              f"{s['false_per_second']:.3f} | {s['material_accuracy']:.3f} "
              f"({s['material_total']}) |")
    print("\n| band | own clips, median (dB) | other clips, max (dB) |\n|---|---|---|")
    for a, b in report["quality"]["bands"].items():
        print(f"| {a} | {b['own_median_db']:.1f} | {b['others_max_db']:.1f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=200, help="held-out 8 s clips to score")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    scenes = [make_scene(s, DURATION) for s in held_out_seeds(args.clips)]
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "command": f"python benchmarks/world.py --clips {args.clips}",
        "speed": speed(),
        "statistics": statistics(scenes),
        "quality": quality(scenes),
    }
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
