"""Export benchmark: time, file size and parity of every component's ONNX export.

    python benchmarks/export.py --variant tiny
    python benchmarks/export.py --variant small_16k --encoder-durations 0.64,1
    python benchmarks/export.py --variant large_44k_v2 --encoder-durations 0.64,1 \\
        --e2e-duration none --keep /tmp/large_bundle

Runs ``v2a_export.export.bundle.export_bundle`` (random weights, seed 0) and records per
component: export seconds (torch.export + ONNX translation + constant folding + save), parity
seconds (PyTorch and onnxruntime at every parity size), file size (with external data), node
count, worst rel L2 / max abs error, plus weight materialisation, the end-to-end check and the
peak resident memory of the process. Writes ``benchmarks/results/export_<variant>.json`` and a
markdown table beside it, and prints the table.

Times on a shared CPU are only indicative (the JSON records the load average); sizes, node
counts and errors are exact.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

from machine_info import machine  # a sibling module: this script's folder is sys.path[0]

RESULTS = Path(__file__).resolve().parent / "results"


def _floats(text: str | None):
    return None if text is None else tuple(float(x) for x in text.split(",") if x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="tiny")
    p.add_argument("--components", help="comma-separated subset (default: all seven)")
    p.add_argument("--parity-durations", default="2,9")
    p.add_argument("--parity-batches", default="3,1")
    p.add_argument("--encoder-durations", help="seconds for the video encoders' parity cases")
    p.add_argument("--e2e-duration", default="2", help="seconds, or 'none'")
    p.add_argument("--e2e-steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads")
    p.add_argument("--keep", type=Path, help="write the bundle here (default: a temp dir)")
    p.add_argument("--name", help="results file stem (default: export_<variant>)")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the other components' rows of an earlier result (a model exported in parts "
        "with --components into the same --keep directory)",
    )
    args = p.parse_args(argv)

    import torch

    from v2a_export.export.bundle import ExportOptions, export_bundle, library_versions
    from v2a_export.export.parity import ParityPlan
    from v2a_export.export.weights import WeightSource
    from v2a_export.models.configs import get_config

    if args.threads:
        torch.set_num_threads(args.threads)
    config = get_config(args.variant)
    e2e = None if args.e2e_duration.lower() == "none" else float(args.e2e_duration)
    plan = ParityPlan(
        durations=_floats(args.parity_durations),
        batches=tuple(int(x) for x in args.parity_batches.split(",")),
        encoder_durations=_floats(args.encoder_durations),
        e2e_duration=e2e,
        e2e_steps=args.e2e_steps,
    )
    kwargs = {"plan": plan, "threads": args.threads}
    if args.components:
        kwargs["components"] = tuple(args.components.split(","))
    stages: dict[str, float] = {}  # wall seconds per stage
    cpu: dict[str, float] = {}  # CPU seconds of this process (all threads) per stage
    clock = {"t": time.perf_counter(), "c": time.process_time(), "key": None}

    def on_event(e) -> None:  # time between events, attributed to the stage that ended
        now, now_cpu = time.perf_counter(), time.process_time()
        if clock["key"] is not None:
            stages[clock["key"]] = stages.get(clock["key"], 0.0) + now - clock["t"]
            cpu[clock["key"]] = cpu.get(clock["key"], 0.0) + now_cpu - clock["c"]
        clock["t"], clock["c"] = now, now_cpu
        clock["key"] = None if e.done >= e.total else f"{e.component}.{e.stage}"
        if e.stage == "export" and e.done == 1:
            clock["key"] = f"{e.component}.parity"

    load = os.getloadavg()
    cpu_start = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "bundle"
        result = export_bundle(
            config, WeightSource(seed=0), out, ExportOptions(**kwargs), callback=on_event
        )
        record_file = json.loads((out / "reports" / "export.json").read_text())
        stages["weights.load"] = sum(record_file.get("weights_load_seconds", {}).values())
    rows = []
    for name, r in result.exports.items():
        parity = result.report.components[name]
        rows.append(
            {
                "component": name,
                "bytes": r.bytes,
                "external_data": r.external_data is not None,
                "nodes": r.nodes,
                "export_s": round(r.seconds, 2),
                "export_cpu_s": round(cpu.get(f"{name}.export", float("nan")), 2),
                "parity_s": round(stages.get(f"{name}.parity", float("nan")), 2),
                "parity_cpu_s": round(cpu.get(f"{name}.parity", float("nan")), 2),
                "parity_sizes": [c.sizes for c in parity.cases],
                "worst_rel_l2": parity.worst("rel_l2"),
                "worst_max_abs": parity.worst("max_abs"),
                "passed": parity.passed,
            }
        )
    e2e_result = result.report.end_to_end
    record = {
        "benchmark": "export",
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]]),
        "variant": args.variant,
        "weights": "random (seed 0)",
        "machine": machine(load_average_at_start=load),
        "versions": library_versions(),
        "plan": {k: v for k, v in vars(plan).items()},
        "weights_load_s": round(stages.get("weights.load", float("nan")), 2),
        "components": rows,
        "end_to_end": None
        if e2e_result is None
        else {
            "duration": e2e_result.duration,
            "steps": e2e_result.steps,
            "cfg": e2e_result.cfg,
            "waveform_rel_l2": e2e_result.metrics.rel_l2,
            "seconds": round(stages.get("end_to_end.parity", float("nan")), 2),
            "cpu_seconds": round(cpu.get("end_to_end.parity", float("nan")), 2),
            "passed": e2e_result.passed,
        },
        "total_s": round(result.seconds, 1),
        "total_cpu_s": round(time.process_time() - cpu_start, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "passed": result.report.passed,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = args.name or f"export_{args.variant}"
    if args.merge and (RESULTS / f"{stem}.json").is_file():
        record = merge(json.loads((RESULTS / f"{stem}.json").read_text()), record)
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    table = markdown(record)
    (RESULTS / f"{stem}.md").write_text(table)
    print(table)
    return 0 if result.report.passed else 1


def merge(old: dict, new: dict) -> dict:
    """``new`` plus the component rows of ``old`` it did not re-export, in contract order."""
    from v2a_runtime.config import COMPONENTS

    rows = {r["component"]: r for r in old.get("components", [])}
    rows.update({r["component"]: r for r in new["components"]})
    return {
        **new,
        "command": [*_as_list(old.get("command")), new["command"]],
        "components": [rows[c] for c in COMPONENTS if c in rows],
        "weights_load_s": (old.get("weights_load_s") or 0) + (new["weights_load_s"] or 0),
        "total_s": (old.get("total_s") or 0) + new["total_s"],
        "total_cpu_s": (old.get("total_cpu_s") or 0) + (new.get("total_cpu_s") or 0),
        "peak_rss_gb": max(old.get("peak_rss_gb") or 0, new["peak_rss_gb"]),
        "end_to_end": new["end_to_end"] or old.get("end_to_end"),
        "passed": bool(old.get("passed", True)) and new["passed"],
    }


def _as_list(x) -> list:
    return [] if x is None else x if isinstance(x, list) else [x]


def _f(x, digits: int = 1) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def markdown(r: dict) -> str:
    def e(x):
        return "-" if x is None or x != x else f"{x:.1e}"

    lines = [
        f"### Export: {r['variant']} ({r['weights']})",
        "",
        *(f"`{c}`  " for c in _as_list(r["command"])),
        f"{r['machine']['cpu']}, {r['machine']['cores']} cores (shared; load average "
        f"{r['machine']['load_average_at_start'][0]} at start), torch {r['versions']['torch']}, "
        f"onnxruntime {r['versions']['onnxruntime']}, {r['versions']['exporter']}",
        "",
        "| component | file MB | external data | nodes | export s (CPU s) | parity s (CPU s) "
        "| sizes | worst rel L2 | worst max abs | gate |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in r["components"]:
        lines.append(
            f"| {c['component']} | {c['bytes'] / 1e6:.1f} | {'yes' if c['external_data'] else 'no'}"
            f" | {c['nodes']} | {c['export_s']:.1f} ({_f(c.get('export_cpu_s'))}) | "
            f"{c['parity_s']:.1f} ({_f(c.get('parity_cpu_s'))}) | "
            f"{len(c['parity_sizes'])} | {e(c['worst_rel_l2'])} | {e(c['worst_max_abs'])} | "
            f"{'pass' if c['passed'] else 'FAIL'} |"
        )
    total_mb = sum(c["bytes"] for c in r["components"]) / 1e6
    lines += [
        "",
        f"Total ONNX {total_mb:.1f} MB; weights materialised in {r['weights_load_s']:.1f} s; "
        f"whole export {r['total_s']:.0f} s ({_f(r.get('total_cpu_s'), 0)} CPU s); peak RSS "
        f"{r['peak_rss_gb']:.1f} GB. Export s: torch.export + ONNX translation + folding + save "
        "(wall); CPU s: this process's CPU time for the stage, weights included (robust to the "
        "machine's load).",
    ]
    if r["end_to_end"]:
        x = r["end_to_end"]
        lines.append(
            f"End to end ({x['duration']:g} s, {x['steps']} Euler steps, CFG {x['cfg']:g}, ONNX "
            f"runtime pipeline vs PyTorch reference): waveform rel L2 {e(x['waveform_rel_l2'])} "
            f"({'pass' if x['passed'] else 'FAIL'}, {x['seconds']:.0f} s, "
            f"{_f(x.get('cpu_seconds'), 0)} CPU s)."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
