"""``v2a bench``: short real LoadGen tests of the real pipeline on the test bundle (CPU).

LoadGen (``mlcommons-loadgen``) times the queries and writes its logs; the checks compare what
it reports with what the runtime did: as many samples as generate calls served, its percentiles
equal to the ones recomputed from its own per-sample trace (and ordered), each LoadGen latency
(scheduled time to completion) no shorter than the generate call it encloses, the evaluations
per query known from the solver, the Server bound verdict consistent with the logged tail.
Never asserts on time. Nonsense settings: one ``error:`` line, exit 2, nothing written.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from click.testing import CliRunner
from media_videos import write_video
from v2a_runtime.bench.loadgen import read_detail, read_latencies, read_query_latencies
from v2a_runtime.bench.stats import percentile
from v2a_runtime.cli import main

pytest.importorskip("mlperf_loadgen")

TEST_BUNDLE = Path(__file__).parent / "data" / "test_bundle"
# 1 s of a 2 s clip, decoded once (frames input), 2 Euler steps, no watermark: a query is a
# few ms of graph time, so a LoadGen test of 6 queries and 0.3 s runs in about a second. Two
# warm-up queries: the best one sets LoadGen's expected-latency hint, and a process's first
# call (30-70+ ms, 20-40x a steady 2 ms one) made it so high that LoadGen ran out of queries
# before 0.3 s now and then ("Ending early: Ran out of generated queries": 1 of 3 runs here).
QUICK = ("--input", "frames", "--duration", 1, "--solver", "euler", "--steps", 2,
         "--no-watermark", "--min-queries", 6, "--min-seconds", 0.3, "--warmup", 2, "-q")
PCTS = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")


def v2a(*args):
    result = CliRunner().invoke(main, ["bench", *(str(a) for a in args)])
    return result


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("bench") / "clip.mp4", fps=25, frames=50)


def check_test(test: dict, log_root: Path, min_queries: int) -> None:
    """One test's record against LoadGen's own logs and our served queries."""
    lg, log_dir = test["loadgen"], log_root / test["log_dir"]
    assert (log_dir / "mlperf_log_summary.txt").is_file()
    latencies = read_latencies(log_dir / "mlperf_log_trace.json")
    detail = read_detail(log_dir / "mlperf_log_detail.txt")
    assert list(latencies) == test["latencies_ns"]
    samples = detail["result_query_count"] * detail["generated_samples_per_query"]
    # every sample LoadGen counted was one generate call we served, and it logged them all
    assert len(latencies) == len(test["service_s"]) == samples >= min_queries
    # LoadGen's statistics are those of its logged per-sample latencies, and ordered
    reported = [lg["min_latency_ns"]] + [lg[f"{p}_percentile_latency_ns"] for p in PCTS]
    assert reported == sorted(reported) and reported[-1] <= lg["max_latency_ns"]
    assert lg["min_latency_ns"] == min(latencies) and lg["max_latency_ns"] == max(latencies)
    assert lg["mean_latency_ns"] == pytest.approx(sum(latencies) / len(latencies), abs=1)
    for p in PCTS:
        assert lg[f"{p}_percentile_latency_ns"] == percentile(latencies, float(p) / 100), p
    assert test["latency_ms"]["p90"] == lg["90.00_percentile_latency_ns"] / 1e6
    # each LoadGen latency encloses one generate call: sorted, they dominate ours
    ours = sorted(test["service_s"])
    assert all(x / 1e9 >= s - 1e-6 for x, s in zip(sorted(latencies), ours, strict=True))
    # the stage breakdown is of those calls: 2 Euler steps = 2 denoiser evaluations each
    stages = test["stages"]
    assert test["evaluations"] == 2
    assert sum(v for k, v in stages.items() if k != "total") <= stages["total"] + 1e-9
    assert stages["total"] <= sum(ours) / len(ours) + 1e-9


def test_single_stream_report(clip, tmp_path):
    out, js = tmp_path / "report", tmp_path / "bench.json"
    r = v2a(TEST_BUNDLE, "--video", clip, *QUICK, "--report", out, "--json", js)
    assert r.exit_code == 0, r.output
    record = json.loads((out / "bench.json").read_text())
    assert json.loads(js.read_text()) == record
    assert sorted(p.name for p in out.iterdir()) == [
        "bench.json", "bench.md", "latency.png", "loadgen"]
    assert not list(tmp_path.glob(".*"))  # no staging folder or temp file left
    (test,) = record["tests"]
    assert test["scenario"] == "single-stream" and test["bundle"] == "test_bundle"
    check_test(test, out / "loadgen", 6)
    assert test["loadgen"]["effective_scenario"] == "SingleStream"
    assert test["loadgen"]["effective_min_query_count"] == 6
    (row,) = record["summary"]
    assert row["samples"] == [len(test["latencies_ns"])]
    assert row["p90_ms"] == test["loadgen"]["90.00_percentile_latency_ns"] / 1e6
    assert row["ratio"]["p50_ms"] == 1.0
    assert record["bundles"][0]["options"]["steps"] == 2
    assert record["machine"]["cores"] >= 1 and record["versions"]["mlperf_loadgen"]
    table_row = next(line for line in r.output.splitlines() if line.startswith("| test_bundle"))
    assert f"| {row['p50_ms']:.0f} |" in table_row
    assert table_row in (out / "bench.md").read_text()


def test_offline_two_bundles_interleaved(clip, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(TEST_BUNDLE, other)
    out = tmp_path / "report"
    r = v2a(TEST_BUNDLE, other, "--video", clip, *QUICK, "--scenario", "offline",
            "--target-qps", 10, "--rounds", 2, "--report", out)  # 10/s x 0.3 s < 6 queries
    assert r.exit_code == 0, r.output
    record = json.loads((out / "bench.json").read_text())
    order = [t["bundle"] for t in record["tests"]]
    assert order == ["test_bundle", "copy", "test_bundle", "copy"]  # interleaved rounds
    assert [t["log_dir"][:2] for t in record["tests"]] == ["01", "02", "03", "04"]
    for test in record["tests"]:
        check_test(test, out / "loadgen", 6)
        assert test["loadgen"]["query_count"] == 1  # offline: one query of all samples
        assert len(test["latencies_ns"]) == 6  # max(min queries, expected rate x min seconds)
    first, second = record["summary"]
    assert first["rounds"] == second["rounds"] == 2
    assert second["ratio"]["qps"] == pytest.approx(second["qps"] / first["qps"])


def test_server_bound_verdict_file_to_file(clip, tmp_path):
    out = tmp_path / "report"
    r = v2a(TEST_BUNDLE, "--video", clip, *QUICK, "--scenario", "server", "--target-qps", 5,
            "--latency-bound", 60000, "--percentile", 0.9, "--report", out,
            "--input", "file", "--mux")  # the last --input wins: decode and mux in each query
    assert r.exit_code == 0, r.output
    record = json.loads((out / "bench.json").read_text())
    (test,) = record["tests"]
    check_test(test, out / "loadgen", 6)
    lg = test["loadgen"]
    assert lg["effective_target_qps"] == 5 and lg["effective_target_latency_ns"] == 60 * 10**9
    tail = percentile(test["latencies_ns"], 0.9)
    assert lg["perf_constraints_met"] is (tail <= 60 * 10**9) is True
    assert record["summary"][0]["bound_held"] == [True]
    assert "server_rate.png" in record["plots"] and (out / "server_rate.png").is_file()
    assert test["stages"]["decode"] > 0 and test["stages"]["mux"] > 0
    assert record["bundles"][0]["options"]["input"] == "file"


def check_multi_stream(test: dict, log_root: Path, n: int, instances: int) -> None:
    """A MultiStream test: queries of ``n`` samples, LoadGen's per-query statistics those of
    the per-query latencies in its trace (a query ends with its last sample), each query issued
    only once the previous one completed, at most ``instances`` samples served at once."""
    lg, log_dir = test["loadgen"], log_root / test["log_dir"]
    trace = (log_dir / "mlperf_log_trace.json").read_text()
    queries = read_query_latencies(log_dir / "mlperf_log_trace.json")
    assert list(queries) == test["query_latencies_ns"]
    assert lg["effective_scenario"] == "MultiStream"
    assert lg["generated_samples_per_query"] == lg["effective_samples_per_query"] == n
    # every query is n samples, all served by us: query count x n = samples = generate calls
    begins = [(int(q), float(ts), int(c)) for ts, q, c in re.findall(
        r'"name":"Sample".*"ph":"b".*"ts":([\d.]+),.*"query_seq":(\d+),.*"complete_ns":(\d+)',
        trace)]  # fmt: skip
    per_query = Counter(q for q, _ts, _c in begins)
    assert set(per_query.values()) == {n} and len(per_query) == lg["query_count"]
    assert len(queries) * n == len(test["latencies_ns"]) == len(test["service_s"])
    # per-query statistics recomputed from the trace, exact to the nanosecond
    reported = [lg["min_query_latency_ns"]] + [
        lg[f"{p}_percentile_per_query_latency_ns"] for p in PCTS] + [lg["max_query_latency_ns"]]
    assert reported == sorted(reported)
    assert lg["min_query_latency_ns"] == min(queries)
    assert lg["max_query_latency_ns"] == max(queries)
    assert lg["mean_query_latency_ns"] == pytest.approx(sum(queries) / len(queries), abs=1)
    for p in PCTS:
        assert lg[f"{p}_percentile_per_query_latency_ns"] == percentile(queries, float(p) / 100), p
    assert test["query_latency_ms"]["p99"] == lg["99.00_percentile_per_query_latency_ns"] / 1e6
    # a query is as long as its slowest sample
    assert max(queries) == lg["max_latency_ns"] and min(queries) >= lg["min_latency_ns"]
    by_query: dict[int, list[int]] = {}
    scheduled: dict[int, float] = {}
    for q, ts, c in begins:
        by_query.setdefault(q, []).append(c)
        scheduled[q] = ts * 1000  # the trace's microseconds (to the ns) -> ns
    assert [max(by_query[q]) for q in sorted(by_query)] == list(queries)
    # the next query is scheduled when the whole previous one completed
    order = sorted(scheduled)
    assert all(scheduled[b] >= scheduled[a] + max(by_query[a]) - 1
               for a, b in pairwise(order))  # fmt: skip
    # the SUT's instances: never more samples in service at once
    assert 1 <= test["peak_in_flight"] <= instances


def test_multi_stream_report(clip, tmp_path):
    out, js = tmp_path / "report", tmp_path / "bench.json"
    r = v2a(TEST_BUNDLE, "--video", clip, *QUICK, "--scenario", "multi-stream",
            "--samples-per-query", 3, "--instances", 2, "--percentile", 0.9,
            "--min-queries", 64, "--report", out, "--json", js)  # 64 queries: p90 early stopping
    assert r.exit_code == 0, r.output
    record = json.loads((out / "bench.json").read_text())
    assert json.loads(js.read_text()) == record
    (test,) = record["tests"]
    lg = test["loadgen"]
    assert test["scenario"] == "multi-stream" and lg["validity"] == "VALID", lg
    assert lg["effective_target_latency_percentile"] == 0.9
    check_test(test, out / "loadgen", 64 * 3)  # the per-sample figures, as for the others
    check_multi_stream(test, out / "loadgen", 3, 2)
    assert test["peak_in_flight"] == 2  # 3 samples at once on 2 workers (over 64 queries)
    (row,) = record["summary"]
    assert row["metric"] == "query p90 ms"
    assert row["value"] == row["query_p90_ms"] == lg["90.00_percentile_per_query_latency_ns"] / 1e6
    assert row["queries"] == [lg["query_count"]] and row["samples_per_query"] == 3
    assert row["qps"] == pytest.approx(3e9 / lg["mean_query_latency_ns"])
    assert record["config"]["samples_per_query"] == 3
    table_row = next(line for line in r.output.splitlines() if line.startswith("| test_bundle"))
    assert f"| yes | {lg['query_count']}×3 | {row['query_p50_ms']:.0f} |" in table_row
    assert table_row in (out / "bench.md").read_text()
    assert "latency.png" in record["plots"]


def test_multi_stream_two_bundles_interleaved(clip, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(TEST_BUNDLE, other)
    out = tmp_path / "report"
    r = v2a(TEST_BUNDLE, other, "--video", clip, *QUICK, "--scenario", "multi-stream",
            "--rounds", 2, "--report", out)  # LoadGen's defaults: 8 samples a query, p99
    assert r.exit_code == 0, r.output
    record = json.loads((out / "bench.json").read_text())
    assert [t["bundle"] for t in record["tests"]] == ["test_bundle", "copy"] * 2
    for test in record["tests"]:
        check_multi_stream(test, out / "loadgen", 8, 1)
        assert test["loadgen"]["effective_target_latency_percentile"] == 0.99
    first, second = record["summary"]
    assert first["metric"] == "query p99 ms" and first["rounds"] == second["rounds"] == 2
    for row, tests in ((first, record["tests"][0::2]), (second, record["tests"][1::2])):
        assert row["value"] == statistics.median(
            t["loadgen"]["99.00_percentile_per_query_latency_ns"] / 1e6 for t in tests)
    assert second["ratio"]["value"] == pytest.approx(second["value"] / first["value"])
    assert first["ratio"]["value"] == 1.0


@pytest.mark.parametrize("scenario, name, expected", [
    ("single-stream", "p80 ms", 9.0),  # element int(0.8 * 10) of the sorted samples 1..10 ms
    ("multi-stream", "query p80 ms", 18.0),  # of the queries: each sample's latency x 2
])
def test_headline_at_a_percentile_loadgen_does_not_log(scenario, name, expected):
    """LoadGen logs six percentiles; the headline at another judged one (``--percentile 0.8``)
    is recomputed from the trace's latencies under LoadGen's rule."""
    from v2a_runtime.bench.report import metric
    from v2a_runtime.bench.runner import TestResult

    ms = [10**6 * k for k in range(10, 0, -1)]
    test = TestResult(
        bundle="b", scenario=scenario, round=0, target_qps=None,
        loadgen={"effective_target_latency_percentile": 0.8, "90.00_percentile_latency_ns": 1},
        latencies_ns=tuple(ms), query_latencies_ns=tuple(2 * x for x in ms), service_s=(),
        peak_in_flight=1, stages={}, evaluations=0, peak_rss_mb=0, log_dir="",
    )  # fmt: skip
    assert metric(test) == (name, expected, "ms")


def test_graphs_times_each_component(clip):
    r = v2a(TEST_BUNDLE, "--video", clip, "--graphs", "--runs", 3, "--duration", 1,
            "--steps", 2, "--solver", "euler", "-q")
    assert r.exit_code == 0, r.output
    rows = {line.split("|")[2].strip(): line for line in r.output.splitlines()
            if line.startswith("| test_bundle")}
    assert set(rows) >= {"text", "clip_visual", "sync_visual", "conditioner", "denoiser",
                         "vae_decoder", "vocoder"}
    assert rows["denoiser"].split("|")[4].strip() == "2"  # calls per query: 2 Euler steps


def corrupted_bundle(tmp_path: Path) -> Path:
    bad = tmp_path / "bad_bundle"
    shutil.copytree(TEST_BUNDLE, bad)
    onnx = sorted((bad / "onnx").glob("*.onnx"))[0]
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize("args, says", [
    (("--min-seconds", 0), "min-seconds must be a number > 0"),
    (("--duration", 0), "duration must be a number > 0"),
    (("--scenario", "server"), "needs --target-qps"),
    (("--scenario", "server", "--target-qps", 0, "--latency-bound", 100), "target-qps must"),
    (("--latency-bound", 100), "applies to --scenario server"),
    (("--target-qps", 3), "does not apply to single-stream"),
    (("--instances", 0), "instances must be >= 1"),
    (("--percentile", 90), "percentile must be in (0, 1)"),
    (("--max-seconds", 1, "--min-seconds", 5), "below min-seconds"),
    (("--mux", "--input", "frames"), "--mux needs --input file"),
    (("--samples-per-query", 4), "applies to --scenario multi-stream, not single-stream"),
    (("--scenario", "offline", "--samples-per-query", 2), "applies to --scenario multi-stream"),
    (("--scenario", "multi-stream", "--samples-per-query", 0), "samples-per-query must be >= 1"),
    (("--scenario", "multi-stream", "--target-qps", 3), "does not apply to multi-stream"),
    (("--scenario", "multi-stream", "--latency-bound", 100), "applies to --scenario server"),
    (("--scenario", "server", "--target-qps", 5, "--latency-bound", 0.001, "--duration", 1,
      "--steps", 2), "below test_bundle's single-query latency"),
])
def test_nonsense_refused(clip, tmp_path, args, says):
    out = tmp_path / "report"
    r = v2a(TEST_BUNDLE, "--video", clip, "-q", "--report", out, *args)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    assert says in r.output and "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []  # nothing written, no staging folder left


def test_bad_inputs_refused(clip, tmp_path, monkeypatch):
    out = tmp_path / "exists"
    out.mkdir()
    r = v2a(TEST_BUNDLE, "--video", clip, "--report", out)
    assert r.exit_code == 2 and "already exists (use --force" in r.output
    r = v2a(corrupted_bundle(tmp_path), "--video", clip, "-q", "--duration", 1)
    assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.count("\n") == 1
    assert "sha256" in r.output or "hash" in r.output, r.output
    r = v2a(TEST_BUNDLE, "--video", tmp_path / "missing.mp4")
    assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.count("\n") == 1
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)  # as if the extra were missing
    r = v2a(TEST_BUNDLE, "--video", clip)
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert "pip install 'v2a-export[bench]'" in r.output
