"""A real Triton server on CPU: ``v2a serve`` on a repository that ``v2a-export triton`` writes
from the shipped default bundle, driven with tritonclient.

One server for the module (started once, stopped by the last test with SIGTERM). Checked:
health and readiness; one request equal to local generation (audio, payload, files written by
``v2a generate --server`` vs ``v2a generate``); the bad requests (corrupt video, unknown input,
wrong dtype, steps 0, cfg NaN, duration over the limit) answered with one line while the server
keeps serving; concurrent requests whose denoiser steps the dynamic batcher merged (Triton's
statistics: fewer executions than requests) and whose audio equals the same request served
alone; a tampered repository that refuses to load; a clean stop on SIGTERM.

The server comes from ``nvidia-pytriton`` (README's test command installs it and the NumPy 1.x
its stubs need); without it these tests skip, except in CI, where they fail.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from media_videos import write_video
from v2a_runtime.pipeline import DEFAULT_BUNDLE, GenerateOptions, Pipeline
from v2a_runtime.serve.repository import RepositoryOptions, write_repository
from v2a_runtime.serve.server import ServerError, find_tritonserver, stub_packages

pytest.importorskip("tritonclient.http")

START_TIMEOUT = 300  # seconds; loading 8 Python models on a busy 2-core machine takes ~30 s
# The test repository: 4 requests in flight, and a batcher that waits up to 30 ms for more
# rows, so that concurrent requests' steps meet even when the CPU is shared.
OPTIONS = RepositoryOptions(concurrency=4, max_queue_delay_us=30_000, max_duration=4.0,
                            max_tracks=2, warmup_duration=1.0)  # fmt: skip


def _require_server() -> None:
    try:
        stub_packages(find_tritonserver())
    except ServerError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the serving tests: {e}")
        pytest.skip(str(e))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start(repo: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, list[int]]:
    ports = _free_ports(3)
    cmd = [sys.executable, "-c", "from v2a_runtime.cli import main; main()", "serve", str(repo),
           "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
           "--metrics-port", str(ports[2]), *extra]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    return proc, ports


class Server:
    def __init__(self, proc: subprocess.Popen, ports: list[int], log: Path, repo: Path) -> None:
        self.proc, self.log, self.repo = proc, log, repo
        self.url = f"http://127.0.0.1:{ports[0]}"
        self.grpc_url = f"grpc://127.0.0.1:{ports[1]}"
        self.metrics_url = f"http://127.0.0.1:{ports[2]}/metrics"
        self.clients: list = []

    def client(self, url: str | None = None):
        """A client, closed before the server stops (an open HTTP connection would make
        Triton wait out its exit timeout)."""
        from v2a_runtime.serve.client import ServerClient

        self.clients.append(ServerClient.connect(url or self.url))
        return self.clients[-1]

    def raw(self):
        import tritonclient.http as http

        self.clients.append(http.InferenceServerClient(self.url.removeprefix("http://")))
        return self.clients[-1]

    def stop(self) -> int:
        for c in self.clients:
            c.close()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=90)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _require_server()
    tmp = tmp_path_factory.mktemp("serve")
    repo = write_repository(DEFAULT_BUNDLE, tmp / "repo", OPTIONS)
    proc, ports = _start(repo, tmp / "server.log")
    s = Server(proc, ports, tmp / "server.log", repo)
    client = s.client()
    deadline = time.monotonic() + START_TIMEOUT
    while not client.ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"v2a serve did not become ready:\n{s.output()[-3000:]}")
        time.sleep(0.5)
    yield s
    if proc.poll() is None:
        s.stop()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("videos")
    return {
        "2s": write_video(tmp / "two.mp4", frames=50),
        "long": write_video(tmp / "long.mp4", frames=130),  # 5.2 s: over the 4 s limit
    }


@pytest.fixture(scope="module")
def local():
    return Pipeline.load()


def test_health_ready_and_the_models(server):
    raw = server.raw()
    assert raw.is_server_live() and raw.is_server_ready()
    index = {m["name"]: m["state"] for m in raw.get_model_repository_index()}
    assert index == dict.fromkeys(
        ["clip_visual", "conditioner", "denoiser", "sync_visual", "text", "v2a", "vae_decoder",
         "vocoder"], "READY")  # fmt: skip
    meta = raw.get_model_metadata("v2a")
    inputs = {t["name"]: t["datatype"] for t in meta["inputs"]}
    assert inputs["video"] == "BYTES" and inputs["seed"] == "INT64" and inputs["cfg"] == "FP32"
    assert {t["name"] for t in meta["outputs"]} == {
        "audio", "sample_rate", "watermark_payload", "muxed"}  # fmt: skip
    deadline = time.monotonic() + 30  # v2a serve's own poller says it too
    while "v2a serve: ready at http://127.0.0.1:" not in server.output():
        assert time.monotonic() < deadline, server.output()[-2000:]
        time.sleep(0.2)


def test_one_request_equals_local_generation(server, videos, local):
    options = GenerateOptions(prompt="a ball bounces on wood", negative_prompt="wind", seed=11,
                              duration=1.5, cfg=3.7)  # fmt: skip
    served = server.client().generate(videos["2s"], options, container="mp4")
    alone = local.generate(videos["2s"], options)
    assert served.sample_rate == alone.sample_rate == 16000
    assert served.audio.shape == alone.audio.shape == (1, 24000)
    np.testing.assert_allclose(served.audio, alone.audio, rtol=0, atol=1e-6)
    assert served.payloads == tuple(m.payload for m in alone.watermarks)
    # The muxed file: the input's video plus one generated audio track.
    import io

    import av

    with av.open(io.BytesIO(served.muxed)) as f:
        assert len(f.streams.video) == 1 and len(f.streams.audio) == 1
    # gRPC is served too, with the same result.
    over_grpc = server.client(server.grpc_url).generate(videos["2s"], options)
    np.testing.assert_array_equal(over_grpc.audio, served.audio)


def test_generate_server_writes_files_like_local_generation(server, videos, tmp_path):
    from v2a_runtime.cli import main

    common = ["-p", "rain on a tin roof", "--seed", "5", "--duration", "1.2", "--tracks", "2"]
    local = CliRunner().invoke(main, ["generate", str(videos["2s"]), "-o",
                                      str(tmp_path / "local.flac"), *common, "-q"])  # fmt: skip
    assert local.exit_code == 0, local.output
    served = CliRunner().invoke(main, ["generate", str(videos["2s"]), "-o",
                                       str(tmp_path / "served.flac"), *common,
                                       "--server", server.url])  # fmt: skip
    assert served.exit_code == 0, served.output
    assert f"served by {server.url} (tiny)" in served.output
    for k in (1, 2):
        a, rate_a = sf.read(tmp_path / f"local-{k}.flac", dtype="int16")
        b, rate_b = sf.read(tmp_path / f"served-{k}.flac", dtype="int16")
        assert rate_a == rate_b == 16000 and a.shape == b.shape == (19200,)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    a1, _ = sf.read(tmp_path / "served-1.flac")
    a2, _ = sf.read(tmp_path / "served-2.flac")
    assert np.abs(a1 - a2).max() > 0.01  # two tracks, two seeds


def _raw_infer(server, *extra):
    """A v2a request built by hand with tritonclient (names and types as a user may get
    them wrong)."""
    import tritonclient.http as http

    def tensor(name, value, kind):
        t = http.InferInput(name, list(value.shape), kind)
        t.set_data_from_numpy(value)
        return t

    raw = server.raw()
    video = np.array([b"\x00\x00\x00 ftyp but not a video"], dtype=np.object_)
    base = [tensor("video", video, "BYTES"),
            tensor("prompt", np.array([b"rain"], dtype=np.object_), "BYTES")]  # fmt: skip
    return raw.infer("v2a", base + [tensor(*e) for e in extra])


def test_bad_requests_get_one_line_errors_and_the_server_keeps_serving(server, videos, local):
    from tritonclient.utils import InferenceServerException
    from v2a_runtime.serve.client import ServerRequestError

    client = server.client()
    cases = {
        "corrupt video": (b"\x1a\x45\xdf\xa3 truncated", {}, "video: not a readable video"),
        "steps 0": (videos["2s"], dict(steps=0), "steps must be an integer >= 1, got 0"),
        "cfg NaN": (videos["2s"], dict(cfg=float("nan")), "cfg must be a finite number"),
        "duration over the limit": (videos["2s"], dict(duration=9.0),
                                    "duration 9 s exceeds this server's limit of 4 s"),
        "whole video over the limit": (videos["long"], {},
                                       "the video runs 5.20 s from 0 s, over this server's"),
    }  # fmt: skip
    for case, (video, options, message) in cases.items():
        with pytest.raises(ServerRequestError) as err:
            client.generate(video, GenerateOptions(prompt="x", **options))
        text = str(err.value)
        assert message in text, case
        assert "\n" not in text and "Traceback" not in text, case
    for extra, message in (
        (("bogus", np.array([1], np.int32), "INT32"), "unexpected inference input 'bogus'"),
        (("seed", np.array([1.5], np.float32), "FP32"), "'seed' data-type is 'FP32', but"),
    ):
        with pytest.raises(InferenceServerException, match=message):
            _raw_infer(server, extra)
    assert client.ready()
    options = GenerateOptions(prompt="after the errors", seed=3, duration=1.0)
    served = client.generate(videos["2s"], options)
    np.testing.assert_allclose(served.audio, local.generate(videos["2s"], options).audio,
                               rtol=0, atol=1e-6)  # fmt: skip


def test_concurrent_requests_share_denoiser_executions_and_keep_their_audio(server, videos):
    from v2a_runtime.serve.client import network_counters

    requests = [GenerateOptions(prompt=p, seed=20 + i, duration=1.5)
                for i, p in enumerate(["rain", "glass", "metal", "wood"])]  # fmt: skip
    client = server.client()
    alone = [client.generate(videos["2s"], o) for o in requests]
    before, runs_before = client.stats("denoiser"), network_counters(server.metrics_url)

    def one(options):
        return server.client().generate(videos["2s"], options)

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(one, requests))
    after, runs_after = client.stats("denoiser"), network_counters(server.metrics_url)
    calls = after.requests - before.requests
    executions = after.executions - before.executions
    runs = runs_after["denoiser"][0] - runs_before["denoiser"][0]
    rows = runs_after["denoiser"][1] - runs_before["denoiser"][1]
    assert calls == 4 * 12  # 4 requests x 12 ab2 evaluations, each [cond; uncond] = 2 rows
    assert after.inferences - before.inferences == rows == 2 * calls
    assert executions < calls, (executions, calls)  # steps of different requests merged
    assert runs == executions  # one duration: one shape bucket per execution
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        np.testing.assert_allclose(b.audio, a.audio, rtol=0, atol=1e-5, err_msg=f"request {i}")
        assert b.payloads == a.payloads
    assert len({a.payloads for a in alone}) == 4
    assert min(np.abs(alone[i].audio - alone[j].audio).max()
               for i in range(4) for j in range(i)) > 1e-3  # a swap would show  # fmt: skip


def test_bench_against_the_server(server, videos, local, tmp_path):
    """``v2a bench --server``: every sample LoadGen counted is a request the server counted."""
    import json

    from v2a_runtime.cli import main

    client = server.client()
    before = client.stats("v2a")
    out = tmp_path / "report"
    r = CliRunner().invoke(main, [
        "bench", "--server", server.url, "--video", str(videos["2s"]), "--duration", "1",
        "--steps", "2", "--solver", "euler", "--min-queries", "4", "--min-seconds", "0.3", "-q",
        "--report", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    after = client.stats("v2a")
    record = json.loads((out / "bench.json").read_text())
    (test,) = record["tests"]
    samples = len(test["latencies_ns"])
    assert samples == test["loadgen"]["query_count"] == len(test["service_s"]) >= 4
    assert after.requests - before.requests == samples + 1  # and the one warm-up request
    assert after.failures == before.failures
    assert record["bundles"][0]["variant"] == local.bundle.manifest.model.variant
    # each LoadGen latency encloses one round trip to the server
    assert all(x / 1e9 >= s - 1e-6 for x, s in zip(sorted(test["latencies_ns"]),
                                                    sorted(test["service_s"]), strict=True))
    assert set(test["stages"]) == {"total"}


def test_bench_multi_stream_against_the_server(server, videos, tmp_path):
    """``v2a bench --server --scenario multi-stream --instances 2``: queries of 2 requests sent
    by 2 worker threads (one client each) at once; every one reaches the server and succeeds,
    and LoadGen's per-query figures are those of its trace."""
    import json

    from v2a_runtime.bench.loadgen import read_detail, read_query_latencies
    from v2a_runtime.bench.stats import percentile
    from v2a_runtime.cli import main

    client = server.client()
    before = client.stats("v2a")
    out = tmp_path / "report"
    r = CliRunner().invoke(main, [
        "bench", "--server", server.url, "--video", str(videos["2s"]), "--duration", "1",
        "--steps", "2", "--solver", "euler", "--min-queries", "3", "--min-seconds", "0.3", "-q",
        "--scenario", "multi-stream", "--samples-per-query", "2", "--instances", "2",
        "--report", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    after = client.stats("v2a")
    (test,) = json.loads((out / "bench.json").read_text())["tests"]
    log_dir = out / "loadgen" / test["log_dir"]
    queries = read_query_latencies(log_dir / "mlperf_log_trace.json")
    detail = read_detail(log_dir / "mlperf_log_detail.txt")
    samples = len(test["latencies_ns"])
    assert samples == 2 * len(queries) == 2 * detail["result_query_count"] >= 6
    assert after.requests - before.requests == samples + 1  # and the one warm-up request
    assert after.failures == before.failures
    assert 1 <= test["peak_in_flight"] <= 2  # 2 here (6 samples): both clients at once
    assert detail["result_50.00_percentile_per_query_latency_ns"] == percentile(queries, 0.5)
    assert detail["result_max_query_latency_ns"] == max(queries)


def test_tampered_repository_refuses_to_load(server, tmp_path):
    import shutil

    bad = shutil.copytree(server.repo, tmp_path / "bad")
    graph = bad / "denoiser" / "1" / "bundle" / "onnx" / "denoiser.onnx"
    data = bytearray(graph.read_bytes())
    data[-100] ^= 0x01
    graph.write_bytes(bytes(data))
    log = tmp_path / "bad.log"
    # Load only the denoiser: the refusal is the point, not the other seven models.
    proc, ports = _start(bad, log, "--", "--model-control-mode=explicit", "--load-model=denoiser")
    ready = f"http://127.0.0.1:{ports[0]}/v2/health/ready"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            assert not _answers(ready), "the server loaded a tampered model"
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
    rc = proc.wait()
    text = log.read_text(errors="replace")
    assert rc != 0, text[-2000:]
    lines = [ln for ln in text.splitlines() if "v2a: model denoiser refuses to load:" in ln]
    assert lines, text[-3000:]
    assert "denoiser.onnx: sha256" in lines[0] and "regenerate the repository" in lines[0]
    assert "error: tritonserver exited with status" in text


def test_sigterm_stops_the_server_cleanly(server):
    """Last test of the module: it stops the shared server."""
    started = time.monotonic()
    assert server.stop() == 0, server.output()[-2000:]
    assert time.monotonic() - started < 20  # idle: no exit timeout to wait out
    assert "Signal (15) received" in server.output()
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _runs(p, server.repo)]
    assert not left, "a tritonserver or stub outlived v2a serve"


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def _runs(proc_dir: Path, repo: Path) -> bool:
    try:
        return str(repo) in (proc_dir / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
