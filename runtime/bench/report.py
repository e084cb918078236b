"""A benchmark's report: the JSON record, the markdown tables, the plots, the report folder.

The headline table has one row per bundle (the median over rounds of each LoadGen figure) and
each figure's ratio to the first bundle's (MultiStream: per-query latencies, a query being N
samples); the stage table breaks a query sample down (mean seconds per stage, the sampler's
time per denoiser evaluation) next to the process's peak memory.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from .runner import BenchReport, TestResult, latency_summary
from .stats import machine, percentile

_PCTS = ("50.00", "90.00", "99.00")


def to_dict(report: BenchReport, command: list[str] | None = None) -> dict:
    """Everything, JSON-ready: machine, versions, command, settings, bundles, every test
    (LoadGen's results, its per-sample latencies, our per-query service times and stages)."""
    return {
        "tool": "v2a bench",
        "command": command,
        "machine": machine(load_average=os.getloadavg()) if hasattr(os, "getloadavg")
        else machine(),
        "versions": _versions(report),
        "config": asdict(report.config),
        "requests": [{"name": r.name, "video": str(r.path), "prompt": r.prompt}
                     for r in report.requests],
        "bundles": [asdict(b) for b in report.bundles],
        "tests": [_test_record(t) for t in report.tests],
        "summary": rows(report),
        "seconds": report.seconds,
    }


def _test_record(t: TestResult) -> dict:
    out = {**asdict(t), "latency_ms": latency_summary(t)}
    if t.scenario == "multi-stream":
        out["query_latency_ms"] = latency_summary(t, per_query=True)
    return out


def _versions(report: BenchReport) -> dict:
    import numpy
    import onnxruntime

    return {"v2a_runtime": __version__, "mlperf_loadgen": report.loadgen_version,
            "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def metric(test: TestResult) -> tuple[str, float, str]:
    """The scenario's headline figure: (name, value, unit)."""
    lg = test.loadgen
    if test.scenario == "offline":
        return "samples/s", float(lg.get("samples_per_second", 0.0)), "/s"
    if test.scenario == "server":
        return "completed/s", float(lg.get("completed_samples_per_sec", 0.0)), "/s"
    # single- and multi-stream: the latency at the judged percentile, per sample / per query
    # (LoadGen logs six percentiles; another one is recomputed from its trace, same rule)
    multi = test.scenario == "multi-stream"
    p = lg.get("effective_target_latency_percentile", 0.99 if multi else 0.9)
    key = f"{p * 100:.2f}_percentile{'_per_query' if multi else ''}_latency_ns"
    ns = test.query_latencies_ns if multi else test.latencies_ns
    value = lg[key] if key in lg else (percentile(ns, p) if ns else 0)
    return f"{'query ' if multi else ''}p{p * 100:g} ms", float(value) / 1e6, "ms"


def rows(report: BenchReport) -> list[dict]:
    """One row per (bundle, offered rate): medians over rounds, ratios to the first bundle."""
    groups: dict[tuple, list[TestResult]] = {}
    for t in report.tests:
        groups.setdefault((t.bundle, t.target_qps), []).append(t)
    out = []
    for (bundle, qps), tests in groups.items():
        lg = [t.loadgen for t in tests]
        row = {
            "bundle": bundle, "scenario": tests[0].scenario, "target_qps": qps,
            "rounds": len(tests),
            "valid": [x.get("validity") == "VALID" for x in lg],
            "samples": [len(t.latencies_ns) for t in tests],
            "metric": metric(tests[0])[0],
            "value": statistics.median(metric(t)[1] for t in tests),
            **{f"p{p[:2]}_ms": statistics.median(x[f"{p}_percentile_latency_ns"] / 1e6
                                                 for x in lg) for p in _PCTS},
            "mean_ms": statistics.median(x["mean_latency_ns"] / 1e6 for x in lg),
            "qps": statistics.median(_qps(t) for t in tests),
            "stages_s": {s: statistics.median(t.stages[s] for t in tests)
                         for s in tests[0].stages},
            "evaluations": tests[0].evaluations,
            "peak_rss_mb": max(t.peak_rss_mb for t in tests),
        }
        if tests[0].scenario == "server":
            row["bound_held"] = [bool(x.get("perf_constraints_met")) for x in lg]
        if tests[0].scenario == "multi-stream":
            row["samples_per_query"] = lg[0].get("generated_samples_per_query")
            row["queries"] = [len(t.query_latencies_ns) for t in tests]
            row.update({f"query_p{p[:2]}_ms": statistics.median(
                x[f"{p}_percentile_per_query_latency_ns"] / 1e6 for x in lg) for p in _PCTS})
            row["query_mean_ms"] = statistics.median(x["mean_query_latency_ns"] / 1e6 for x in lg)
        out.append(row)
    firsts = {}
    for row in out:
        first = firsts.setdefault(row["target_qps"], row)
        row["ratio"] = {k: (row[k] / first[k] if first[k] else None)
                        for k in ("value", "p50_ms", "p90_ms", "qps", "query_p50_ms")
                        if k in row}
    return out


def verdicts(report: BenchReport) -> list[str]:
    """One line per test: LoadGen's verdict and, when INVALID, which of its rules failed."""
    out = []
    for t in report.tests:
        lg = t.loadgen
        rate = "" if t.target_qps is None else f" at {t.target_qps:g} QPS"
        line = f"{t.bundle}{rate}, round {t.round + 1}: LoadGen {lg.get('validity', '?')}"
        failed = [name for key, name in (
            ("min_duration_met", "min duration"), ("min_queries_met", "min queries"),
            ("early_stopping_met", "early stopping"), ("perf_constraints_met", "latency bound"),
        ) if lg.get(key) is False]  # fmt: skip
        if failed:
            line += f" (not met: {', '.join(failed)})"
        name, value, _unit = metric(t)
        out.append(f"{line}; {name} {value:.4g}")
    return out


def _qps(t: TestResult) -> float:
    lg = t.loadgen
    if t.scenario == "multi-stream":  # LoadGen logs no rate: N samples per mean query latency
        mean = lg.get("mean_query_latency_ns", 0)
        return lg.get("generated_samples_per_query", 0) * 1e9 / mean if mean else 0.0
    for key in ("samples_per_second", "completed_samples_per_sec",
                "qps_with_loadgen_overhead"):
        if key in lg:
            return float(lg[key])
    return 0.0


def markdown(report: BenchReport, command: list[str] | None = None) -> str:
    c = report.config
    lines = [f"# v2a bench: {c.scenario}", ""]
    if command:
        lines += ["```", " ".join(command), "```", ""]
    m = machine()
    lines += [f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, LoadGen "
              f"{report.loadgen_version}; {len(report.requests)} request(s), "
              f"{c.input} input, {c.instances} instance(s), {c.rounds} round(s)"
              + (f", {c.multi_stream_samples} samples per query" if c.scenario == "multi-stream"
                 else "") + ".", ""]
    lines += table(report) + [""] + stage_table(report) + [""] + verdicts(report) + [""]
    lines += [f"LoadGen's logs: `loadgen/<test>/` ({len(report.tests)} tests).", ""]
    return "\n".join(lines)


def table(report: BenchReport) -> list[str]:
    if report.config.scenario == "multi-stream":
        return _multi_stream_table(report)
    head = ["bundle", "valid", "samples", "p50 ms", "p90 ms", "p99 ms", "QPS", "vs first"]
    server = report.config.scenario == "server"
    if server:
        head[1:1] = ["offered QPS", "bound held"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows(report):
        ratio = r["ratio"]["p50_ms" if report.config.scenario == "single-stream" else "qps"]
        cells = [r["bundle"], _yn(r["valid"]), "/".join(map(str, r["samples"])),
                 f"{r['p50_ms']:.0f}", f"{r['p90_ms']:.0f}", f"{r['p99_ms']:.0f}",
                 f"{r['qps']:.3g}", "—" if ratio is None else f"{ratio:.2f}×"]
        if server:
            cells[1:1] = [f"{r['target_qps']:g}", _yn(r["bound_held"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _multi_stream_table(report: BenchReport) -> list[str]:
    """Per-query latencies (a query ends with its last sample), the per-sample median, samples/s
    (N per mean query latency), and the headline (the judged percentile per query) vs first."""
    head = ["bundle", "valid", "queries × N", "query p50 ms", "query p90 ms", "query p99 ms",
            "sample p50 ms", "samples/s", "vs first"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows(report):
        ratio = r["ratio"]["value"]
        lines.append("| " + " | ".join([
            r["bundle"], _yn(r["valid"]),
            "/".join(f"{q}×{r['samples_per_query']}" for q in r["queries"]),
            f"{r['query_p50_ms']:.0f}", f"{r['query_p90_ms']:.0f}", f"{r['query_p99_ms']:.0f}",
            f"{r['p50_ms']:.0f}", f"{r['qps']:.3g}", "—" if ratio is None else f"{ratio:.2f}×",
        ]) + " |")  # fmt: skip
    return lines


def stage_table(report: BenchReport) -> list[str]:
    """Mean seconds per query sample (one request) of each stage, the sampler per evaluation,
    peak memory."""
    rs = rows(report)
    stages = list(dict.fromkeys(s for r in rs for s in r["stages_s"]))
    head = ["bundle", *stages, "per eval", "peak MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rs:
        st = r["stages_s"]
        per_eval = st.get("sample", 0.0) / r["evaluations"] if r["evaluations"] else 0.0
        lines.append("| " + " | ".join([r["bundle"], *(f"{st.get(s, 0.0):.3f}" for s in stages),
                                        f"{per_eval:.4f}", f"{r['peak_rss_mb']:.0f}"]) + " |")
    return lines


def _yn(flags: list[bool]) -> str:
    return "/".join("yes" if f else "no" for f in flags)


def plots(report: BenchReport, out: Path) -> list[str]:
    """PNG plots into ``out``: latency distribution per bundle (MultiStream: per query and per
    sample); for Server, latency vs offered rate. Returns the file names (none when matplotlib
    is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names = []
    multi = report.config.scenario == "multi-stream"  # per query (solid) and per sample (dashed)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, bundle in enumerate(dict.fromkeys(t.bundle for t in report.tests)):
        tests = [t for t in report.tests if t.bundle == bundle]
        for field, style, label in ((("query_latencies_ns", "-", f"{bundle} per query"),
                                     ("latencies_ns", "--", f"{bundle} per sample")) if multi
                                    else (("latencies_ns", "-", bundle),)):
            lat = sorted(x / 1e6 for t in tests for x in getattr(t, field))
            if lat:
                ax.plot(lat, [(k + 1) / len(lat) for k in range(len(lat))], style,
                        color=f"C{i}", label=label)  # one colour per bundle
    ax.set_xlabel("latency (ms, LoadGen)")
    ax.set_ylabel("fraction of queries / samples" if multi else "fraction of samples")
    ax.set_title(f"{report.config.scenario}: latency distribution")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=100)
    plt.close(fig)
    names.append("latency.png")
    if report.config.scenario == "server":
        fig, ax = plt.subplots(figsize=(7, 4))
        for bundle in dict.fromkeys(r["bundle"] for r in rows(report)):
            rs = [r for r in rows(report) if r["bundle"] == bundle]
            for key, style in (("p50_ms", "o--"), ("p99_ms", "o-")):
                ax.plot([r["target_qps"] for r in rs], [r[key] for r in rs], style,
                        label=f"{bundle} {key[:3]}")
        ax.axhline(report.config.latency_bound_ms, color="k", lw=0.8, label="bound")
        ax.set_xlabel("offered rate (queries/s)")
        ax.set_ylabel("latency (ms)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "server_rate.png", dpi=100)
        plt.close(fig)
        names.append("server_rate.png")
    return names


def finish(report: BenchReport, staging: Path, command: list[str] | None) -> dict:
    """Write bench.json, bench.md and the plots into ``staging`` (which holds ``loadgen/``)."""
    record = to_dict(report, command)
    record["plots"] = plots(report, staging)
    (staging / "bench.md").write_text(markdown(report, command))
    (staging / "bench.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def replace_dir(staging: Path, target: Path) -> None:
    """Move the finished ``staging`` folder to ``target`` (an old one removed only now)."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


__all__ = ["finish", "markdown", "metric", "plots", "replace_dir", "rows", "stage_table",
           "table", "to_dict", "verdicts"]
