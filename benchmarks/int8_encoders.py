"""int8 video encoders of a full-size bundle: speed and accuracy, in bounded memory.

    python benchmarks/int8_encoders.py --bundle B32 [--threads 1 2] [--runs 3] [--frames 4]

``convert-precision --precision int8`` measures every candidate node's error on the graph's
recorded activations, which for full-size CLIP (ViT-H, 2.5 GB of weights, ~1 TFLOP a frame)
needs more than this machine's 24 GB. This script measures what int8 buys the encoders without
that search: every MatMul with a constant weight quantized dynamically (onnxruntime's
``quantize_dynamic`` working on files, per-channel weights in the format
``--int8-weights auto`` picks on this CPU), then, on held-out real frames of a rendered world
scene (``--frames`` CLIP frames, as many sync segments), the feature cosine per frame / token
and the relative L2 against the fp32 graph, and the time of one unit (one CLIP frame, one
16-frame sync segment) fp32 vs int8, interleaved, best of ``--runs``: process CPU time at one
thread, wall time at more. Writes ``benchmarks/results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine_info import machine

RESULTS = Path(__file__).resolve().parent / "results"
ENCODERS = {"clip_visual": ("frames", "clip_features"), "sync_visual": ("segments", "sync_features")}


def quantize(src: Path, out: Path, weights) -> Path:
    """Every constant-weight MatMul of ``src`` dynamically int8, on files (external data)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from v2a_export.export.precision.policy import WeightFormat

    quantize_dynamic(
        str(src), str(out), op_types_to_quantize=["MatMul"], per_channel=True,
        reduce_range=weights is WeightFormat.S8_7BIT,
        weight_type=QuantType.QUInt8 if weights is WeightFormat.U8 else QuantType.QInt8,
        use_external_data_format=True,
        extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True},
    )  # fmt: skip
    return out


def session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def accuracy(ref: np.ndarray, got: np.ndarray) -> dict:
    """Cosine per row (frame / token) and relative L2 of (N, ..., D) features."""
    a = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    b = got.reshape(-1, got.shape[-1]).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(a))
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()), "rel_l2": rel}


def best_times(fns: dict, runs: int, threads: int) -> dict:
    """Interleaved, best of ``runs``: CPU s at one thread, wall s at more."""
    best = dict.fromkeys(fns, float("inf"))
    for r in range(runs):
        for name in (list(fns) if r % 2 == 0 else list(reversed(fns))):
            c0, w0 = time.process_time(), time.perf_counter()
            fns[name]()
            spent = time.process_time() - c0 if threads == 1 else time.perf_counter() - w0
            best[name] = min(best[name], spent)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--frames", type=int, default=4, help="held-out CLIP frames / sync segments")
    p.add_argument("--seed", type=int, default=7, help="the rendered held-out scene")
    p.add_argument("--name", default="int8_encoders")
    args = p.parse_args()
    from v2a_runtime.bundle import load_bundle
    from v2a_runtime.media import read_frames, sync_segments

    from v2a_export.export.precision.kernels import choose_weights

    sys.path.insert(0, str(Path(__file__).parent))
    from runtime import render_video

    bundle = load_bundle(args.bundle, verify=False)
    v = bundle.manifest.video
    weights, reason = choose_weights()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="v2a-int8-enc-") as tmp:
        video = render_video(Path(tmp) / "held_out.mp4", 4.0, args.seed)
        frames = read_frames(video, duration=4.0, clip_fps=v.clip_fps, clip_size=v.clip_size,
                             sync_fps=v.sync_fps, sync_size=v.sync_size)  # fmt: skip
        held = {"clip_visual": np.ascontiguousarray(frames.clip[: args.frames]),
                "sync_visual": np.ascontiguousarray(sync_segments(frames.sync)[: args.frames])}
        for name, (inp, _out) in ENCODERS.items():
            print(f"[int8 encoders] {name}: quantizing", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            q = quantize(bundle.path(name), Path(tmp) / f"{name}_int8.onnx", weights)
            quantize_s = time.perf_counter() - t0
            s32, s8 = session(bundle.path(name), 1), session(q, 1)
            ref = s32.run(None, {inp: held[name]})[0]
            acc = accuracy(ref, s8.run(None, {inp: held[name]})[0])
            unit = {inp: held[name][:1]}  # one frame / one segment
            row = {"quantize_s": round(quantize_s, 1), "held_out_units": len(held[name]),
                   **acc, "threads": {}}  # fmt: skip
            for t in args.threads:
                print(f"[int8 encoders] {name}: timing at {t} thread(s)", file=sys.stderr,
                      flush=True)  # fmt: skip
                a, b = session(bundle.path(name), t), session(q, t)
                times = best_times({"fp32": lambda a=a: a.run(None, unit),
                                    "int8": lambda b=b: b.run(None, unit)}, args.runs, t)
                row["threads"][t] = {"fp32_s": times["fp32"], "int8_s": times["int8"],
                                     "speedup": times["fp32"] / times["int8"]}  # fmt: skip
                del a, b
            rows[name] = row
            del s32, s8
    cmd = "python benchmarks/int8_encoders.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    record = {"command": cmd, "machine": machine(), "bundle": str(args.bundle),
              "weights": weights.value, "weights_reason": reason, "encoders": rows}
    lines = [f"# int8 video encoders: {bundle.manifest.model.variant}", "", f"`{cmd}`", "",
             f"{record['machine']['cpu']}, {record['machine']['cores']} cores; {reason}", "",
             "| encoder | unit | threads | fp32 | int8 | int8 speed-up | held-out min / mean "
             "cosine | rel L2 |", "|---|---|---:|---:|---:|---:|---|---:|"]  # fmt: skip
    for name, r in rows.items():
        unit = "1 frame" if name == "clip_visual" else "1 segment (16 frames)"
        for t, x in r["threads"].items():
            kind = "CPU s" if t == 1 else "wall s"
            lines.append(f"| {name} | {unit} | {t} | {x['fp32_s']:.3f} {kind} | "
                         f"{x['int8_s']:.3f} | {x['speedup']:.2f}× | {r['min_cosine']:.5f} / "
                         f"{r['mean_cosine']:.5f} | {r['rel_l2']:.1e} |")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=1))
    (RESULTS / f"{args.name}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
