"""Load test of a v2a Triton server: do concurrent requests' denoiser steps share executions?

Writes a repository from a bundle (``v2a-export triton``'s writer; default: the shipped tiny
model), starts ``v2a serve`` on loopback ports, and runs closed-loop clients: at each level
(default 1, 2, 4, 8 clients at once) every client sends ``--requests`` requests back to back
(bounded by ``--level-seconds``), the span of each request cycling through ``--durations`` so
that sequence lengths differ. One untimed round at the highest level warms the v2a instances.

Per level: p50/p95 latency of the requests, throughput (requests/s and seconds of audio per
second), errors, and from the server — Triton's statistics of the ``denoiser`` model (requests
= denoiser evaluations of all requests, executions = model executions; fewer executions than
requests means steps of different requests ran in one batch) and the model's own counters on
the metrics endpoint (backend calls after grouping by sequence length, rows per call).

Usage::

    python benchmarks/serve.py [--bundle DIR] [--levels 1 2 4 8] [--requests 4]
        [--durations 1 2 4] [--max-queue-delay-us 2000] [--steps N] [--out NAME]

Prints a markdown table; writes ``benchmarks/results/<NAME>.{json,md}`` (default
``serve_<variant>``) with the machine (and its load, since CPU numbers on a shared machine are
noise), versions and the command. Needs the serving install (README's test command).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from machine_info import machine
from v2a_runtime import __version__
from v2a_runtime.pipeline import DEFAULT_BUNDLE, GenerateOptions
from v2a_runtime.serve.client import ServerClient, ServerRequestError, network_counters
from v2a_runtime.serve.repository import RepositoryOptions, write_repository

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = ("a ball bounces on wood", "glass clinks", "rain on metal", "wind and a door")


def make_video(path: Path, seconds: float, fps: int = 25) -> Path:
    """A moving gradient, H.264 in MP4 (the request's file)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        ys, xs = np.mgrid[0:120, 0:160]
        for i in range(int(seconds * fps)):
            rgb = np.stack([(xs + 4 * i) % 256, (ys + 2 * i) % 256, (xs + ys) % 256], -1)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_server(repo: Path, log: Path) -> tuple[subprocess.Popen, str, str]:
    http, grpc, metrics = free_ports(3)
    cmd = [sys.executable, "-c", "from v2a_runtime.cli import main; main()", "serve", str(repo),
           "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
           "--exit-timeout", "5"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http}"
    client = ServerClient.connect(url)
    deadline = time.monotonic() + 600
    while not client.ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"v2a serve did not start; its log: {log}")
        time.sleep(0.5)
    client.close()
    return proc, url, f"http://127.0.0.1:{metrics}/metrics"


def run_level(url, video, clients, requests, durations, steps, budget) -> dict:
    """``clients`` threads, each sending up to ``requests`` requests until ``budget`` s."""
    deadline = time.monotonic() + budget

    def client_loop(c: int) -> list[dict]:
        out = []
        client = ServerClient.connect(url)
        try:
            for r in range(requests):
                if time.monotonic() > deadline:
                    break
                k = c * requests + r
                options = GenerateOptions(
                    prompt=PROMPTS[k % len(PROMPTS)],
                    seed=1000 + k,
                    duration=durations[k % len(durations)],
                    steps=steps,
                )
                t0 = time.perf_counter()
                try:
                    result = client.generate(video, options)
                    audio = result.audio.shape[1] / result.sample_rate
                    out.append({"seconds": time.perf_counter() - t0, "audio": audio})
                except (ServerRequestError, OSError) as e:
                    out.append({"seconds": time.perf_counter() - t0, "error": str(e)})
        finally:
            client.close()
        return out

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        done = [r for rs in pool.map(client_loop, range(clients)) for r in rs]
    return {"wall": time.perf_counter() - started, "requests": done}


def denoiser_counters(url: str, metrics_url: str) -> dict:
    client = ServerClient.connect(url)
    try:
        stats = client.stats("denoiser")
    finally:
        client.close()
    runs, rows = network_counters(metrics_url).get("denoiser", (0, 0))
    return {"requests": stats.requests, "executions": stats.executions,
            "inferences": stats.inferences, "runs": runs, "rows": rows}  # fmt: skip


def summarize(clients: int, level: dict, before: dict, after: dict) -> dict:
    ok = [r for r in level["requests"] if "error" not in r]
    latency = np.array([r["seconds"] for r in ok]) if ok else np.array([np.nan])
    delta = {k: after[k] - before[k] for k in before}
    return {
        "clients": clients,
        "requests": len(level["requests"]),
        "errors": len(level["requests"]) - len(ok),
        "error_messages": sorted({r["error"] for r in level["requests"] if "error" in r}),
        "p50_s": float(np.percentile(latency, 50)),
        "p95_s": float(np.percentile(latency, 95)),
        "wall_s": level["wall"],
        "requests_per_s": len(ok) / level["wall"],
        "audio_s_per_s": sum(r["audio"] for r in ok) / level["wall"],
        "denoiser": delta,
        "calls_per_execution": delta["requests"] / max(delta["executions"], 1),
        "rows_per_run": delta["rows"] / max(delta["runs"], 1),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| clients | requests | errors | p50 (s) | p95 (s) | requests/s | audio s/s | denoiser "
        "calls | executions | calls per execution | backend runs | rows per run |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d = r["denoiser"]
        lines.append(
            f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['p50_s']:.2f} | "
            f"{r['p95_s']:.2f} | {r['requests_per_s']:.2f} | {r['audio_s_per_s']:.2f} | "
            f"{d['requests']} | {d['executions']} | {r['calls_per_execution']:.2f} | "
            f"{d['runs']} | {r['rows_per_run']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--requests", type=int, default=4, help="requests per client per level")
    p.add_argument("--durations", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--steps", type=int, default=None, help="solver steps [bundle default]")
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--level-seconds", type=float, default=300.0, help="time bound per level")
    p.add_argument("--out", default=None, help="results name [serve_<variant>]")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="v2a-serve-bench-") as tmp:
        tmp = Path(tmp)
        options = RepositoryOptions(
            concurrency=max(args.levels), max_batch=args.max_batch,
            max_queue_delay_us=args.max_queue_delay_us, warmup_duration=max(args.durations),
        )  # fmt: skip
        repo = write_repository(args.bundle, tmp / "repo", options)
        variant = json.loads((repo / "v2a_repository.json").read_text())["variant"]
        video = make_video(tmp / "clip.mp4", max(args.durations) + 0.5)
        load_before = os.getloadavg()
        proc, url, metrics_url = start_server(repo, tmp / "server.log")
        try:
            top = max(args.levels)
            run_level(url, video, top, 1, [min(args.durations)], args.steps, args.level_seconds)
            rows = []
            for clients in args.levels:
                before = denoiser_counters(url, metrics_url)
                level = run_level(url, video, clients, args.requests, args.durations, args.steps,
                                  args.level_seconds)  # fmt: skip
                rows.append(summarize(clients, level, before, denoiser_counters(url, metrics_url)))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=120)
    write_results(args, options, variant, rows, load_before, os.getloadavg())


def write_results(args, options, variant: str, rows: list[dict], load_before, load_after) -> None:
    """benchmarks/results/<name>.{json,md} and the table on stdout."""
    name = args.out or f"serve_{variant}"
    command = "python benchmarks/serve.py " + " ".join(sys.argv[1:])
    record = {
        "benchmark": "serve",
        "date": datetime.date.today().isoformat(),
        "command": command.strip(),
        "machine": machine(load_before=load_before, load_after=load_after),
        "versions": {"v2a_runtime": __version__, "python": platform.python_version(),
                     "triton": "2.51.0 (nvidia-pytriton 0.7.0), Python backend, CPU"},  # fmt: skip
        "repository": {**options.__dict__, "variant": variant},
        "durations": args.durations,
        "levels": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    m = record["machine"]
    text = (
        f"Serving load test ({record['date']}): {variant} on Triton's Python backend, CPU, "
        f"loopback; closed-loop clients, up to {args.requests} requests each, spans cycling "
        f"{', '.join(f'{d:g}' for d in args.durations)} s; denoiser batcher max "
        f"{args.max_batch} rows, queue delay {args.max_queue_delay_us} µs; "
        f"{max(args.levels)} v2a instances.\n"
        f"Machine: {m['cpu']}, {m['cores']} cores, shared (load average before "
        f"{m['load_before'][0]}, after {m['load_after'][0]}). Command: `{record['command']}`\n\n"
        + table(rows)
        + "\n"
    )
    (RESULTS / f"{name}.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
