"""Aggregation and output of the watermark benchmark: JSON, markdown table, calibration PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import metrics as M  # benchmarks/watermark/metrics.py
import numpy as np
from v2a_runtime.oracles import attacks

# spec/watermark.md §6.2 / issue 6 "done when": TPR ≥ 0.99 (message accuracy ≥ 0.99 where met);
# the second group is reported honestly with an aim of 0.9
TARGETS_099 = ("none", "mp3_32k", "mp3_64k", "aac_64k", "opus_32k", "resample_2x",
               "resample_8k", "resample_48k", "highpass_1500", "bandpass_500_5000", "gain_0.1",
               "gain_10_clip", "polarity", "shift_1234", "crop_2s", "echo_0.5_0.5", "smooth_40",
               "eq_peaks_6db", "compressor_8to1", "speed_0.8", "speed_0.9", "speed_1.05",
               "speed_1.25", "atempo_0.8", "atempo_0.9", "atempo_1.1", "atempo_1.25")
TARGETS_090 = ("white_snr20", "lowpass_500", "mp3_16k", "opus_16k")
K_OFFSET = 256  # hypotheses of the offset search (8 sub-hop offsets × 32 phases)
ALPHAS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def _q(values, q):
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.quantile(v, q)) if v else None


def attack_stats(recs: list[dict], name: str) -> dict | None:
    rows = [r["attacks"][name] for r in recs if name in r["attacks"]]
    if not rows:
        return None
    pos = [r["pos"] for r in rows]
    neg = [r["neg"] for r in rows if "neg" in r]
    cross = [r["cross"] for r in rows if "cross" in r]
    pz, nz = np.array([p["z"] for p in pos]), np.array([n["z"] for n in neg])
    detected = sum(p["present"] for p in pos)
    by_kind = {}
    for k in sorted({r["kind"] for r in recs}):
        ks = [r["attacks"][name]["pos"]["present"] for r in recs
              if r["kind"] == k and name in r["attacks"]]
        if ks:
            by_kind[k] = float(np.mean(ks))
    return {
        "n": len(rows), "n_negatives": len(neg), "mode": attacks.ATTACKS[name][1],
        "tpr": float(np.mean([p["present"] for p in pos])),
        "tpr_at_1pct_fpr": (float(np.mean(pz > np.quantile(nz, 0.99))) if len(nz) else None),
        "auc": M.auc(pz, nz) if len(nz) else None,
        "bit_acc": float(np.mean([p["bit_acc"] for p in pos])),
        "msg_acc": float(np.mean([p["msg_ok"] for p in pos])),
        "msg_acc_detected": (float(sum(p["msg_ok"] for p in pos) / detected)
                             if detected else None),
        "false_accepts": int(sum(p["false_accept"] for p in pos)),
        "z_median": float(np.median(pz)), "z_p5": float(np.quantile(pz, 0.05)),
        "z_min": float(pz.min()), "neg_z_max": float(nz.max()) if len(nz) else None,
        "neg_false_positives": int(sum(n["present"] for n in neg)),
        "cross_key_n": len(cross),
        "cross_key_false_positives": int(sum(c["present"] for c in cross)),
        "attack_snr_median": _q([p.get("attack_snr") for p in pos], 0.5),
        "detect_seconds_median": float(np.median([p["seconds"] for p in pos])),
        "tpr_by_kind": by_kind,
    }


def quality_stats(recs: list[dict]) -> dict:
    out = {}
    for metric in ("snr", "si_snr", "seg_snr", "lsd"):
        vals = [r["quality"][metric] for r in recs]
        out[metric] = {"median": _q(vals, 0.5), "min": _q(vals, 0.0), "p5": _q(vals, 0.05)}
    for metric in ("pesq_wb", "stoi"):
        vals = [r["quality"][metric] for r in recs if metric in r["quality"]]
        if vals:
            out[metric] = {"median": _q(vals, 0.5), "min": _q(vals, 0.0), "p5": _q(vals, 0.05),
                           "n": len(vals)}
    out["snr_by_kind"] = {k: _q([r["quality"]["snr"] for r in recs if r["kind"] == k], 0.5)
                          for k in sorted({r["kind"] for r in recs})}
    return out


def speed_stats(recs: list[dict]) -> dict:
    embed = [r["embed_seconds"] / r["duration"] for r in recs]
    det = [r["attacks"]["none"]["pos"]["seconds"] / r["duration"] for r in recs
           if "none" in r["attacks"]]
    search = [a["pos"]["seconds"] / r["duration"] for r in recs
              for n, a in r["attacks"].items()
              if attacks.ATTACKS[n][1] != "offset" and a["pos"]["stage"] != "offset"]
    return {"embed_rtf_median": _q(embed, 0.5), "embed_rtf_p95": _q(embed, 0.95),
            "detect_rtf_median": _q(det, 0.5), "detect_rtf_p95": _q(det, 0.95),
            "search_rtf_median": _q(search, 0.5)}


def null_stats(null_z: np.ndarray) -> dict:
    p = np.minimum(1.0, K_OFFSET * np.exp(-null_z ** 2 / 2))
    thr = math.sqrt(2 * math.log(K_OFFSET / 1e-6))
    return {"trials": int(len(null_z)), "z_max": float(null_z.max()),
            "z_p999": float(np.quantile(null_z, 0.999)), "threshold_z": thr,
            "false_positives": int(np.sum(null_z >= thr)),
            "calibration": {f"{a:g}": float(np.mean(p <= a)) for a in ALPHAS}}


def plot(null_z: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = np.minimum(1.0, K_OFFSET * np.exp(-null_z ** 2 / 2))
    alphas = np.logspace(-6, 0, 61)
    emp = np.array([np.mean(p <= a) for a in alphas])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    a1.loglog(alphas, np.maximum(emp, 0.5 / len(p)), "o-", ms=3, label="empirical FPR")
    a1.loglog(alphas, alphas, "k--", label="nominal α (bound)")
    a1.axhline(1 / len(p), color="grey", lw=0.8, ls=":", label=f"1/{len(p)} trials")
    a1.set_xlabel("nominal α (Hoeffding + union bound, K = 256)")
    a1.set_ylabel("fraction of null trials with p-bound ≤ α")
    a1.set_title("Calibration: wrong keys on unmarked clips")
    a1.legend(fontsize=8)
    a2.hist(null_z, bins=80, color="C0")
    a2.axvline(math.sqrt(2 * math.log(K_OFFSET / 1e-6)), color="r", label="threshold z* (α=1e-6)")
    a2.set_yscale("log")
    a2.set_xlabel("best z over 256 alignments")
    a2.set_title(f"Null z, {len(null_z)} trials")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v, spec="{:.2f}"):
    return "–" if v is None else spec.format(v)


def markdown(summary: dict) -> str:
    lines = [f"# Watermark benchmark ({summary['meta']['command']})", "",
             f"V2A clips: {summary['meta']['v2a_clips']}. Threshold z* = "
             f"{summary['null']['threshold_z']:.2f} (α = 1e-6, offset search); the speed/tempo "
             "search rows use their own (higher) z*.", ""]
    n = summary["null"]
    lines += ["## Null (random keys × unmarked clips)", "",
              f"{n['trials']} trials, max z {n['z_max']:.2f}, false positives "
              f"{n['false_positives']}; empirical FPR at α: " + ", ".join(
                  f"{a}: {v:.2e}" for a, v in n["calibration"].items()), ""]
    lines += targets_markdown(summary)
    for sr, r in summary["rates"].items():
        q, s = r["quality"], r["speed"]
        lines += [f"## {sr} Hz ({r['clips']} clips)", "",
                  f"Quality: SNR median {_fmt(q['snr']['median'], '{:.1f}')} dB "
                  f"(min {_fmt(q['snr']['min'], '{:.1f}')}), SI-SNR "
                  f"{_fmt(q['si_snr']['median'], '{:.1f}')}, LSD {_fmt(q['lsd']['median'])} dB"
                  + (f"; speech PESQ-WB median {_fmt(q['pesq_wb']['median'])} (min "
                     f"{_fmt(q['pesq_wb']['min'])}), STOI {_fmt(q['stoi']['median'], '{:.3f}')}"
                     if "pesq_wb" in q else "") + ". SNR by kind: " + ", ".join(
                      f"{k} {_fmt(v, '{:.1f}')}" for k, v in q["snr_by_kind"].items()) + ".",
                  "Wall-clock time / audio time on the shared benchmark machine (CPU-time RTFs "
                  f"are in watermark_rtf.md): embed {_fmt(s['embed_rtf_median'], '{:.4f}')}, "
                  f"detect (offset search) {_fmt(s['detect_rtf_median'], '{:.4f}')}, "
                  f"with speed/tempo search {_fmt(s['search_rtf_median'], '{:.3f}')}.", "",
                  "| attack | n | TPR 5 s | TPR 10 s | msg acc 5/10 s | bit acc | z med 5/10 s "
                  "| z p5 5/10 s | AUC | neg n | neg z max | FP | false msg |", "|" + "---|" * 14]
        for name, by_dur in r["attacks"].items():
            d5, d10 = by_dur.get("5"), by_dur.get("10")
            both = [d for d in (d5, d10) if d]
            negs = [d["neg_z_max"] for d in both if d["neg_z_max"] is not None]
            aucs = [d["auc"] for d in both if d["auc"] is not None]
            lines.append(
                f"| {name} | {sum(d['n'] for d in both)} | {_fmt(d5 and d5['tpr'])} | "
                f"{_fmt(d10 and d10['tpr'])} | {_fmt(d5 and d5['msg_acc'])}/"
                f"{_fmt(d10 and d10['msg_acc'])} | "
                f"{_fmt(np.mean([d['bit_acc'] for d in both]), '{:.3f}')} | "
                f"{_fmt(d5 and d5['z_median'], '{:.1f}')}/{_fmt(d10 and d10['z_median'], '{:.1f}')}"
                f" | {_fmt(d5 and d5['z_p5'], '{:.1f}')}/{_fmt(d10 and d10['z_p5'], '{:.1f}')}"
                f" | {_fmt(min(aucs) if aucs else None, '{:.3f}')} | "
                f"{sum(d['n_negatives'] + d['cross_key_n'] for d in both)} | "
                f"{_fmt(max(negs) if negs else None, '{:.1f}')} | "
                f"{sum(d['neg_false_positives'] + d['cross_key_false_positives'] for d in both)}"
                f" | {sum(d['false_accepts'] for d in both)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def targets_markdown(summary: dict) -> list[str]:
    """One row per target attack: TPR and message accuracy per rate and duration."""
    cols = [(sr, d) for sr in summary["rates"] for d in ("5", "10")]
    head = " | ".join(f"{int(sr) / 1000:g}k {d} s" for sr, d in cols)
    lines = ["## Targets (TPR / message accuracy)", "",
             f"| attack | target | {head} | met |", "|" + "---|" * (len(cols) + 3)]
    for group, goal in ((TARGETS_099, 0.99), (TARGETS_090, 0.90)):
        for name in group:
            cells, met, seen = [], True, False
            for sr, d in cols:
                st = summary["rates"][sr]["attacks"].get(name, {}).get(d)
                if st is None:
                    cells.append("–")
                    continue
                cells.append(f"{st['tpr']:.2f} / {st['msg_acc']:.2f} (n {st['n']})")
                met &= st["tpr"] >= goal
                seen = True
            if seen:
                lines.append(f"| {name} | TPR ≥ {goal:g} | " + " | ".join(cells)
                             + f" | {'yes' if met else 'no'} |")
    return lines + [""]


def write(per_rate: dict, meta: dict, out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary = {"meta": meta, "rates": {}}
    all_null = []
    for sr, recs in per_rate.items():
        per_attack = {}
        names = [n for n in attacks.ATTACKS if any(n in r["attacks"] for r in recs)]
        for a in names:
            per_attack[a] = {}
            for dur in sorted({r["duration"] for r in recs}):
                st = attack_stats([r for r in recs if r["duration"] == dur], a)
                if st:
                    per_attack[a][f"{dur:g}"] = st
        summary["rates"][str(sr)] = {"clips": len(recs), "quality": quality_stats(recs),
                                     "speed": speed_stats(recs), "attacks": per_attack}
        all_null += [z for r in recs for z in r["null_z"]]
    null_z = np.array(all_null)
    summary["null"] = null_stats(null_z)
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown(summary))
    plot(null_z, out / f"{name}_calibration.png")
    print(markdown(summary))
