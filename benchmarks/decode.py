"""Decoding a span of a long video costs about as much as decoding a file of the span's length.

``read_frames`` seeks to the keyframe before the span and stops demuxing when both frame
streams are complete, so an 8 s span in the middle of a 60 s file should cost about as much as
a whole 8 s file (target: at most 1.3x). The extra work is the frames between the keyframe and
the span start, which are decoded but never converted.

Both files are 1080p25 H.264 (libx264 veryfast, CRF 23, yuv420p, a keyframe every 2 s, about
7 Mbit/s) with the same moving-texture content generator, so the content rate is the same. Both
reads produce the official streams: CLIP 8 fps at 384 px and Synchformer 25 fps at 224 px
(64 + 200 frames). Runs alternate between the two cases; the table gives p50 and p95 of
``--runs`` timed runs after one warm-up each.

Usage::

    python benchmarks/decode.py [--runs 7] [--workdir /tmp/v2a_decode_bench]

The generated videos are cached in ``--workdir`` (about 2 minutes to encode the first time).
It prints a markdown table and writes ``benchmarks/results/decode.{json,md}`` with the machine,
library versions and the command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import av
import numpy as np
from v2a_runtime.media import read_frames

RESULTS = Path(__file__).resolve().parent / "results"
WIDTH, HEIGHT, FPS, GOP = 1920, 1080, 25, 50
SPAN = 8.0
LONG = 60.0
STARTS = (26.0, 27.0)  # the middle (on a keyframe) and mid-GOP (1 s of extra decoding)


def make_video(path: Path, seconds: float) -> Path:
    """Moving low-contrast block texture: realistic bitrate, cheap to generate."""
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    blocks = rng.integers(100, 156, (2 * HEIGHT // 6 + 8, 2 * WIDTH // 6 + 8), dtype=np.uint8)
    texture = np.repeat(np.repeat(blocks, 6, axis=0), 6, axis=1)  # (2H+, 2W+)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "g": str(GOP),
                          "keyint_min": str(GOP), "sc_threshold": "0"}  # fmt: skip
        for i in range(int(seconds * FPS)):
            dy, dx = (3 * i) % HEIGHT, (5 * i) % WIDTH
            frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
            frame.planes[0].update(np.ascontiguousarray(texture[dy : dy + HEIGHT, dx : dx + WIDTH]))
            u = texture[dx // 4 : dx // 4 + HEIGHT // 2, dy // 2 : dy // 2 + WIDTH // 2] // 2 + 64
            v = texture[dy // 2 + 5 : dy // 2 + 5 + HEIGHT // 2, dx // 2 : dx // 2 + WIDTH // 2]
            frame.planes[1].update(np.ascontiguousarray(u))
            frame.planes[2].update(np.ascontiguousarray(v // 2 + 64))
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    tmp.rename(path)
    return path


def timed(path: Path, start: float) -> float:
    t = time.perf_counter()
    frames = read_frames(path, start=start, duration=SPAN)
    elapsed = time.perf_counter() - t
    assert frames.clip.shape == (64, 384, 384, 3) and frames.sync.shape == (200, 224, 224, 3)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/v2a_decode_bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    short = make_video(args.workdir / f"short_{SPAN:g}s.mp4", SPAN)
    long = make_video(args.workdir / f"long_{LONG:g}s.mp4", LONG)

    cases = {"8 s file, whole": (short, 0.0)}
    cases.update({f"60 s file, {s:g}-{s + SPAN:g} s": (long, s) for s in STARTS})
    times = {name: [] for name in cases}
    for path, start in cases.values():
        timed(path, start)  # warm-up (page cache, libraries)
    for _ in range(args.runs):
        for name, (path, start) in cases.items():
            times[name].append(timed(path, start))

    base = float(np.median(times["8 s file, whole"]))
    rows = []
    for name, samples in times.items():
        p50 = float(np.median(samples))
        rows.append({"case": name, "p50_s": p50, "p95_s": float(np.percentile(samples, 95)),
                     "ratio_p50": p50 / base, "runs": samples})  # fmt: skip
    table = ["| case | p50 (s) | p95 (s) | ratio to the 8 s file (p50) |", "|---|---|---|---|"]
    table += [f"| {r['case']} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | {r['ratio_p50']:.2f}x |"
              for r in rows]  # fmt: skip
    command = "python benchmarks/decode.py " + " ".join(sys.argv[1:])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())  # the machine may be shared
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs visible ({platform.platform()}), "
               f"load average after the runs {load}")  # fmt: skip
    ffmpeg = {k: ".".join(map(str, v)) for k, v in av.library_versions.items()}
    versions = {"python": platform.python_version(), "av": av.__version__,
                "numpy": np.__version__, "ffmpeg": ffmpeg}  # fmt: skip
    header = [
        f"Decode benchmark ({datetime.date.today()}): 8 s span, CLIP 8 fps @384 + sync 25 fps "
        f"@224, 1080p25 H.264, keyframe every {GOP // FPS} s, {args.runs} runs.",
        f"Machine: {machine}; PyAV {av.__version__}. Command: `{command.strip()}`",
        "",
    ]
    text = "\n".join([*header, *table]) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "decode.md").write_text(text)
    record = {"command": command.strip(), "date": str(datetime.date.today()),
              "machine": machine, "versions": versions, "span_s": SPAN, "long_s": LONG,
              "gop_frames": GOP, "rows": rows}  # fmt: skip
    (RESULTS / "decode.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
