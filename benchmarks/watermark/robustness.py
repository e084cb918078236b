"""Watermark robustness benchmark: the protocol of spec/watermark.md §6.4.

    python benchmarks/watermark/robustness.py --bundle default   # the recorded run (hours, 2 cores)
    python benchmarks/watermark/robustness.py --quick            # a few clips and attacks, minutes

Per sample rate it makes ``--clips`` host clips itself (half 5 s, half 10 s; a quarter each
speech (espeak-ng) and synthesized music, the other half V2A-like sound: runtime generations
with ``--bundle``, foley/ambience synthesized here), embeds a random payload with a fixed
benchmark key and detects on every attacked marked clip (positives).

The cost is budgeted (2 shared CPU cores): the ``CORE`` attacks (the targets of §6.2) run on
every clip; the other §6.4 attacks on the first ``--extra-clips`` clips of each duration; the
time-scale attacks (speed, atempo, pitch: they need the speed/tempo/pitch search, ~0.4 s per
second of audio) on the first ``--search-clips``. Negatives: every unmarked clip with the real
key ("none"), and for every attack the attacked unmarked clip on the first ``--neg-clips``
clips of each duration (plus the clip marked with another key for a few attacks). The null:
every unmarked clip's features are computed once and correlated with ``--null-keys`` random
keys (10⁵ trials at the defaults). Writes results JSON, a markdown table and a calibration
plot to benchmarks/results/ (per-clip records to ``<name>.records.jsonl``, resumable).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import metrics as M  # benchmarks/watermark/metrics.py (this script's folder is on sys.path)
import numpy as np
import report
from v2a_runtime.oracles import attacks, clips
from v2a_runtime.watermark import WatermarkKey, embed, make_payload
from v2a_runtime.watermark.analysis import decode
from v2a_runtime.watermark.detect import detect_analysis
from v2a_runtime.watermark.features import resample
from v2a_runtime.watermark.layout import DEFAULT_CONFIG, make_layout
from v2a_runtime.watermark.null import null_scores, null_secrets

KEY = WatermarkKey.from_secret(hashlib.sha256(b"v2a watermark benchmark key").digest())
OTHER_KEY = WatermarkKey.from_secret(hashlib.sha256(b"v2a watermark benchmark key 2").digest())
CROSS_KEY_ATTACKS = ("none", "mp3_64k", "aac_128k", "resample_2x", "crop_4s")
CORE = ("none", "mp3_16k", "mp3_32k", "mp3_64k", "aac_64k", "opus_16k", "opus_32k",
        "resample_2x", "resample_8k", "resample_48k", "lowpass_500", "highpass_1500",
        "bandpass_500_5000", "white_snr20", "gain_0.1", "gain_10_clip", "polarity",
        "shift_1234", "crop_2s", "echo_0.5_0.5", "smooth_40", "eq_peaks_6db",
        "compressor_8to1")
QUICK_ATTACKS = ("none", "mp3_32k", "aac_64k", "opus_32k", "highpass_1500", "white_snr20",
                 "crop_2s", "speed_0.9", "atempo_1.1")


@dataclass(frozen=True)
class ClipSpec:
    index: int
    kind: str
    seed: int
    sample_rate: int
    duration: float
    attacks: tuple[str, ...]  # the attacks this clip gets
    negatives: bool  # also score the attacked unmarked clip (and cross-key) for every attack
    null_keys: int
    bundle: str | None


def clip_audio(spec: ClipSpec) -> np.ndarray:
    if spec.kind != "v2a":
        return clips.make_clip(spec.kind, spec.seed, spec.sample_rate, spec.duration)
    return _runtime_clip(spec)


def _runtime_clip(spec: ClipSpec) -> np.ndarray:
    """A runtime generation (watermark off) for a procedural scene, at the clip's rate."""
    import tempfile

    from v2a_runtime import world
    from v2a_runtime.pipeline import Pipeline

    pipe = Pipeline.load(None if spec.bundle == "default" else spec.bundle, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        scene = world.make_scene(spec.seed, spec.duration)
        video = world.write_video(scene, Path(tmp) / "scene.mp4")
        r = pipe.generate(video, prompt=scene.caption, watermark=False, seed=spec.seed)
    audio = resample(r.audio[0], r.sample_rate, spec.sample_rate)[: int(spec.duration
                                                                        * spec.sample_rate)]
    return clips.normalise(audio, np.random.default_rng(spec.seed))


def quality(x: np.ndarray, y: np.ndarray, spec: ClipSpec) -> dict:
    q = {"snr": M.snr_db(x, y), "si_snr": M.si_snr_db(x, y),
         "seg_snr": M.seg_snr_db(x, y, spec.sample_rate), "lsd": M.lsd_db(x, y, spec.sample_rate)}
    if spec.kind == "speech":
        x16, y16 = (resample(v, spec.sample_rate, 16000) for v in (x, y))
        q["pesq_wb"] = M.pesq_wb(x16, y16)
        q["stoi"] = M.stoi(x, y, spec.sample_rate)
    return q


def null_z(x: np.ndarray, spec: ClipSpec) -> list[float]:
    """Best z over the 256 offset alignments for ``null_keys`` random keys (features once)."""
    x16 = resample(x, spec.sample_rate, DEFAULT_CONFIG.sample_rate)
    keys = null_secrets(spec.null_keys, f"benchmark {spec.sample_rate} {spec.index}")
    return null_scores(x16, keys, DEFAULT_CONFIG).tolist()


def _detect(audio, sr, key, mode, payload=None) -> dict:
    t0 = time.perf_counter()
    d, a = detect_analysis(audio, sr, key, search=mode)
    rec = {"z": d.z, "present": d.present, "seconds": time.perf_counter() - t0,
           "stage": d.search}
    if payload is not None:
        decoded, _ = decode(a, make_layout(key.secret, DEFAULT_CONFIG), DEFAULT_CONFIG)
        rec["bit_acc"] = M.bit_accuracy(decoded, payload)
        rec["msg_ok"] = bool(d.present and d.crc_ok and d.payload == payload)
        rec["false_accept"] = bool(d.present and d.crc_ok and d.payload != payload)
    return rec


def run_clip(spec: ClipSpec) -> dict:
    sr = spec.sample_rate
    x = clip_audio(spec)
    other = clips.make_clip("music", spec.seed + 7919, sr, spec.duration)
    payload = make_payload(int(spec.seed % 256), int(spec.seed * 2654435761 % (1 << 24)))
    t0 = time.perf_counter()
    y = embed(x, sr, KEY, payload)
    embed_s = time.perf_counter() - t0
    y_other = embed(x, sr, OTHER_KEY, payload ^ 0x5A5A5A5A)
    rec = {"index": spec.index, "kind": spec.kind, "duration": spec.duration,
           "embed_seconds": embed_s, "quality": quality(x, y, spec), "attacks": {}}
    for i, name in enumerate(spec.attacks):
        fn_mode = attacks.ATTACKS[name][1]
        seed = spec.seed * 1000 + i
        ctx = attacks.Context(np.random.default_rng(seed), other, x)
        ya = attacks.apply(name, y, sr, ctx)
        xa = (attacks.apply(name, x, sr, attacks.Context(np.random.default_rng(seed),
                                                                other, x))
              if spec.negatives or name == "none" else None)
        pos = _detect(ya, sr, KEY, fn_mode, payload)
        pos["attack_snr"] = M.snr_db(y, ya) if len(ya) == len(y) else None
        r = {"pos": pos}
        if spec.negatives or name == "none":
            r["neg"] = _detect(xa, sr, KEY, fn_mode)
        if spec.negatives and name in CROSS_KEY_ATTACKS:
            yo = attacks.apply(name, y_other, sr, attacks.Context(
                np.random.default_rng(seed), other, x))
            r["cross"] = _detect(yo, sr, KEY, fn_mode)
        rec["attacks"][name] = r
    rec["null_z"] = null_z(x, spec)
    return rec


def _wanted(attack: str, rank: int, args) -> bool:
    """Does the ``rank``-th clip of its duration get ``attack``?"""
    if attacks.ATTACKS[attack][1] != "offset":
        return rank < args.search_clips
    return attack in CORE or rank < args.extra_clips


def clip_specs(args, sr: int) -> list[ClipSpec]:
    """Kinds cycle so that each duration gets the same mix: a quarter speech and music each,
    the other half V2A-like (runtime generations with --bundle, else foley and ambience)."""
    pattern = (["speech", "music", "v2a", "foley", "speech", "music", "v2a", "ambience"]
               if args.bundle else ["speech", "music", "foley", "ambience"])
    specs, per_dur = [], {}
    durations = [float(d) for d in args.durations.split(",")]
    for i in range(args.clips):
        dur = durations[i % len(durations)]
        n = per_dur.get(dur, 0)  # this clip's rank among the clips of its duration
        per_dur[dur] = n + 1
        kind = pattern[(i // len(durations)) % len(pattern)]
        wanted = tuple(a for a in args.attacks if _wanted(a, n, args))
        specs.append(ClipSpec(i, kind, sr * 100003 + i, sr, dur, wanted,
                              n < args.neg_clips, args.null_keys, args.bundle))
    return specs


def _bundle_weights(bundle: str | None) -> str | None:
    if bundle is None:
        return None
    from v2a_runtime.bundle import load_bundle
    from v2a_runtime.pipeline import DEFAULT_BUNDLE

    model = load_bundle(DEFAULT_BUNDLE if bundle == "default" else bundle).manifest.model
    return f"{model.variant}, {model.weights} weights"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=200, help="clips per sample rate")
    ap.add_argument("--rates", default="16000,44100")
    ap.add_argument("--durations", default="5,10")
    ap.add_argument("--attacks", default="all", help="comma list or 'all'")
    ap.add_argument("--extra-clips", type=int, default=25,
                    help="clips per (rate, duration) that get the non-core offset attacks")
    ap.add_argument("--search-clips", type=int, default=8,
                    help="clips per (rate, duration) that get the time-scale attacks")
    ap.add_argument("--neg-clips", type=int, default=12,
                    help="clips per (rate, duration) scored unmarked under every attack")
    ap.add_argument("--null-keys", type=int, default=250, help="random keys per clip")
    ap.add_argument("--bundle", default=None, help="runtime bundle for V2A clips ('default')")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--resume", action="store_true", help="keep the clips already recorded")
    ap.add_argument("--report-only", action="store_true",
                    help="only aggregate the clips already recorded (e.g. of a running job)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results"))
    ap.add_argument("--name", default="watermark")
    args = ap.parse_args(argv)
    if args.quick:
        args.clips, args.search_clips, args.null_keys = 8, 2, 50
        args.extra_clips, args.neg_clips = 4, 4
        args.attacks = ",".join(QUICK_ATTACKS) if args.attacks == "all" else args.attacks
        args.name = args.name + "_quick"
    args.attacks = (list(attacks.ATTACKS) if args.attacks == "all"
                    else args.attacks.split(","))
    unknown = sorted(set(args.attacks) - set(attacks.ATTACKS))
    if unknown:
        ap.error(f"unknown attacks {unknown}; known: {sorted(attacks.ATTACKS)}")
    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"{args.name}.records.jsonl"  # one line per finished clip: resumable
    done = {}
    if args.resume or args.report_only:
        for line in log.read_text().splitlines() if log.exists() else []:
            rec = json.loads(line)
            done[(rec["sample_rate"], rec["index"])] = rec
    elif log.exists():
        log.unlink()
    per_rate = {}
    for sr in (int(r) for r in args.rates.split(",")):
        specs = [] if args.report_only else [
            s for s in clip_specs(args, sr) if (sr, s.index) not in done]
        records = [r for (rate, _), r in sorted(done.items()) if rate == sr]
        with ProcessPoolExecutor(args.jobs) as pool, log.open("a") as sink:
            for rec in pool.map(run_clip, specs):
                rec["sample_rate"] = sr
                sink.write(json.dumps(rec) + "\n")
                sink.flush()
                records.append(rec)
                print(f"[{time.time() - started:7.0f}s] {sr} Hz clip {rec['index'] + 1}/"
                      f"{args.clips} ({rec['kind']}, {rec['duration']:g} s)", flush=True)
        if records:
            per_rate[sr] = records
    meta = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "seconds": time.time() - started,
            "key_id": KEY.key_id, "v2a_clips": "runtime generations from bundle "
            f"{args.bundle}" if args.bundle else "foley/ambience synthesized (no bundle)",
            "bundle_weights": _bundle_weights(args.bundle),
            "partial_report": args.report_only,
            "clips_per_duration": {"extra_attacks": args.extra_clips,
                                   "time_scale_attacks": args.search_clips,
                                   "negatives": args.neg_clips},
            "core_attacks": list(CORE), "null_keys_per_clip": args.null_keys}
    report.write(per_rate, meta, out, args.name)


if __name__ == "__main__":
    main()
