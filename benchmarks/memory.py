"""Peak memory of ``v2a generate`` and ``v2a watermark embed/verify`` against input length.

Each command runs in a fresh process under a small Python that reports its child's peak
resident set (``os.wait4`` → ``ru_maxrss``; Linux carries a parent's high-water mark into a
child, hence the extra process). Inputs are synthetic and written here: videos are 320×240
H.264 at 25 fps with a keyframe every 2 s (moving noise, so the decoder does real work), audio
is 16 kHz mono noise plus a tone, written as 32-bit float WAV.

Usage::

    python benchmarks/memory.py [--bundle DIR] [--generate 8 60 600] [--gen-ext .mp4|.flac]
        [--embed 60 600 3600] [--verify 60 600] [--steps N] [--workdir /tmp/v2a_memory_bench]

``--generate`` / ``--embed`` / ``--verify``: lengths in seconds (an empty list skips the
command). Prints a markdown table (peak RSS in MB, and the ratio to the shortest input of the
same command) and writes ``benchmarks/results/memory.{json,md}`` with the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

RESULTS = Path(__file__).resolve().parent / "results"
MEASURE = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
           "_, status, usage = os.wait4(p.pid, 0); "
           "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)")


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of ``v2a ARGS`` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("V2A_WATERMARK_KEY")}
    command = [sys.executable, "-c", MEASURE, sys.executable, "-m", "v2a_runtime.cli", *args]
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    status, kilobytes = map(int, done.stdout.split()[-2:])
    if status not in (0, 1):  # verify: 1 = not marked, still a measurement
        raise SystemExit(f"v2a {' '.join(args)} failed ({status}): {done.stderr[-500:]}")
    return kilobytes / 1024, time.perf_counter() - t0


def write_video(path: Path, seconds: int, size=(320, 240), fps: int = 25) -> Path:
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "30"}
        stream.codec_context.gop_size = 2 * fps
        stream.codec_context.time_base = Fraction(1, fps)
        base = rng.integers(0, 255, (size[1] * 2, size[0] * 2, 3), dtype=np.uint8)
        for i in range(seconds * fps):
            y, x = (3 * i) % size[1], (5 * i) % size[0]
            frame = av.VideoFrame.from_ndarray(base[y : y + size[1], x : x + size[0]], "rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    tmp.rename(path)
    return path


def write_wav(path: Path, seconds: int, rate: int = 16000) -> Path:
    if path.exists():
        return path
    rng = np.random.default_rng(1)
    with sf.SoundFile(path, "w", rate, 1, "FLOAT") as f:
        for start in range(0, seconds * rate, 60 * rate):
            n = min(60 * rate, seconds * rate - start)
            t = (start + np.arange(n)) / rate
            f.write((0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * 330 * t))
                    .astype(np.float32))  # fmt: skip
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default=None, help="bundle for generate (default: shipped)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps for generate")
    parser.add_argument("--generate", type=int, nargs="*", default=[8, 60, 600])
    parser.add_argument("--gen-ext", default=".mp4",
                        help="generate's output: .mp4 (muxed, loudness -23 LUFS: the default "
                             "path) or an audio file (.flac: no loudness)")  # fmt: skip
    parser.add_argument("--embed", type=int, nargs="*", default=[60, 600, 3600])
    parser.add_argument("--verify", type=int, nargs="*", default=[60, 600])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/v2a_memory_bench"))
    parser.add_argument("--out", default="memory", help="results/NAME.{json,md}")
    a = parser.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    rows = []

    def measure(command: str, seconds: int, args: list[str], record: bool = True) -> None:
        mb, wall = peak_rss_mb(args)
        if record:
            rows.append({"command": command, "seconds": seconds, "peak_rss_mb": round(mb, 1),
                         "wall_s": round(wall, 1)})  # fmt: skip
            print(f"{command} {seconds} s: {mb:.0f} MB ({wall:.0f} s)", flush=True)

    for s in a.generate:
        video = write_video(a.workdir / f"video{s}.mp4", s)
        args = ["generate", str(video), "-o", str(a.workdir / f"gen{s}{a.gen_ext}"), "-f", "-q"]
        args += ["--bundle", a.bundle] if a.bundle else []
        args += ["--steps", str(a.steps)] if a.steps else []
        measure("generate", s, args)
    for s in sorted(set(a.embed) | set(a.verify)):  # verify reads what embed wrote
        wav, marked = write_wav(a.workdir / f"audio{s}.wav", s), a.workdir / f"marked{s}.wav"
        embed = ["watermark", "embed", str(wav), str(marked), "--payload", "1", "--force"]
        measure("watermark embed", s, embed, record=s in a.embed)
        if s in a.verify:
            measure("watermark verify", s, ["watermark", "verify", str(marked)])
    rows.sort(key=lambda r: (r["command"], r["seconds"]))
    lines = ["| command | input | peak RSS (MB) | × shortest | wall (s) |",
             "|---|---:|---:|---:|---:|"]
    for command in dict.fromkeys(r["command"] for r in rows):
        mine = [r for r in rows if r["command"] == command]
        for r in mine:
            ratio = r["peak_rss_mb"] / mine[0]["peak_rss_mb"]
            lines.append(f"| `v2a {command}` | {r['seconds']} s | {r['peak_rss_mb']:.0f} | "
                         f"{ratio:.2f}× | {r['wall_s']:.0f} |")  # fmt: skip
    cmd = "python benchmarks/memory.py " + " ".join(sys.argv[1:])
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.out}.json").write_text(json.dumps(
        {"command": cmd, "machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows},
        indent=1))  # fmt: skip
    (RESULTS / f"{a.out}.md").write_text(f"# Peak memory vs input length\n\n`{cmd}`\n\n{table}\n")


if __name__ == "__main__":
    main()
