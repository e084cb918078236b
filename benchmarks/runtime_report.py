"""The markdown table of a benchmarks/runtime.py record (JSON in, text out)."""

from __future__ import annotations

ORDER = ("decode", "encoders", "conditions", "sampling", "vae", "vocoder", "watermark")


def markdown(r: dict) -> str:
    q, m, p = r["request"], r["machine"], r["pipeline"]
    v = r["versions"]
    load0, load1 = m["load_average_start"][0], m["load_average_end"][0]
    lines = [
        f"### Runtime vs PyTorch reference: {r['variant']}, {q['duration']:g} s "
        f"(L {q['latent']}), Euler {q['steps']} steps, CFG {q['cfg']:g}",
        "",
        f"`{r['command']}`  ",
        f"{m['cpu']}, {m['cores']} cores (shared; 1-min load average {load0:g} at start, "
        f"{load1:g} at end), {r['threads']['torch_intra_op']} threads each (torch intra-op / "
        f"onnxruntime intra-op), torch {v['torch']}, onnxruntime {v['onnxruntime']}; "
        f"{r['weights']} weights on both paths; {r['method']['runs']} timed round(s) after a "
        f"parity round and {r['method']['warmup']} warm-up round(s), interleaved, order "
        "alternating.",
        "",
        f"Mode: {p['mode']}.",
        "",
        "| stage | runtime p50 ms | runtime p95 ms | reference p50 ms | reference p95 ms | "
        "runtime / reference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stage in (*ORDER, "end_to_end"):
        row = p["stages"].get(stage)
        if row is not None:
            lines.append(_row(stage.replace("_", " "), row.get("runtime"), row.get("reference"),
                              row.get("ratio_p50")))  # fmt: skip
    h = p["headline"]
    name = " + ".join(h["stages"])
    row = _row(f"**headline: {name}**", h["runtime"], h["reference"], h["ratio_p50"], bold=True)
    lines.append(row[: -len(" |")] + f" (paired {h['ratio_paired_median']:.2f}) |")
    par = p["parity"]
    mem = p["memory_mb"]
    lines += [
        "",
        f"Parity: {par['what']}: rel L2 {par['rel_l2']:.1e} (bound {par['bound_rel_l2']:.0e}), "
        f"max abs {par['max_abs']:.1e}, {'pass' if par['passed'] else 'FAIL'}.  ",
        f"Memory: loading took {mem['load_runtime']:.0f} MB (runtime sessions) and "
        f"{mem['load_reference']:.0f} MB (PyTorch networks); peak RSS during a run "
        f"{mem.get('peak_runtime', 0):.0f} MB (runtime) / {mem.get('peak_reference', 0):.0f} MB "
        "(reference), the process high-water mark with both paths' weights resident.",
    ]
    units = r.get("encoders_per_unit")
    if units:
        lines += [
            "",
            f"Encoders per unit (full clip = unit × count for {q['duration']:g} s):",
            "",
            "| encoder | unit | runtime p50 ms | runtime p95 ms | reference p50 ms | "
            "reference p95 ms | runtime / reference | units per clip | per clip: runtime s / "
            "reference s | rel L2 |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, u in units.items():
            n = u["units_per_clip"]
            rt, ref = u["runtime"], u["reference"]
            lines.append(
                f"| {name} | {u['unit']} | {rt['p50_ms']:.1f} | {rt['p95_ms']:.1f} | "
                f"{ref['p50_ms']:.1f} | {ref['p95_ms']:.1f} | {u['ratio_p50']:.2f} | "
                f"{n} | {n * rt['p50_ms'] / 1e3:.1f} / {n * ref['p50_ms'] / 1e3:.1f} | "
                f"{u['parity']['rel_l2']:.1e} |"
            )
    cli = r.get("cli")
    if cli:
        g, inside, ver = cli["generate"], cli["inside_command"], cli["version"]
        lines += [
            "",
            f"CLI: `{cli['command']}` ({cli['output']}): process wall time p50 "
            f"{g['p50_ms'] / 1e3:.2f} s, p95 {g['p95_ms'] / 1e3:.2f} s over {g['n']} runs "
            f"after one warm-up; includes {cli['includes']}."
            + (
                f" The command's own summary total (after imports) p50 "
                f"{inside['p50_ms'] / 1e3:.2f} s;"
                if inside
                else ""
            )
            + f" `v2a --version` (interpreter + imports) p50 {ver['p50_ms'] / 1e3:.2f} s.",
        ]
    return "\n".join(lines) + "\n"


def _row(name: str, rt: dict | None, ref: dict | None, ratio, bold: bool = False) -> str:
    def ms(s, key):
        return "-" if s is None else f"{s[key]:.1f}"

    r = "-" if ratio is None else (f"**{ratio:.2f}**" if bold else f"{ratio:.2f}")
    return (
        f"| {name} | {ms(rt, 'p50_ms')} | {ms(rt, 'p95_ms')} | {ms(ref, 'p50_ms')} | "
        f"{ms(ref, 'p95_ms')} | {r} |"
    )
