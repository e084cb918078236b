"""Low-precision bundles: convert an fp32 bundle, and validate one against PyTorch fp32.

:func:`convert_bundle` calibrates on the fp32 bundle (:func:`calibration_inputs`: the runtime
pipeline on a rendered video, several durations), converts every requested component
(:func:`convert_graph`), and writes a new bundle: the converted ``onnx/*.onnx``, a manifest whose
components say their ``precision`` and list ``fp32_nodes`` as ``"<node>: <reason>"``, and
``reports/precision.json`` (policy, calibration plan, per component: counts per reason, every
fp32 node, Casts added, output errors measured on the calibration inputs). The fp32 bundle's
parity section is kept as the record of the weights (seed or source) and marked as not yet
validated at the new precision; :func:`validate_precision_bundle` then runs the precision-aware
gate (:mod:`.gate`) and writes the real parity section.

Everything is written into a sibling temporary directory that replaces ``out`` only when
complete (``out`` may be ``src``: conversion in place), and only when every graph passes the
TensorRT parser check (:mod:`v2a_export.export.trt_compat`) or ``allow_trt_incompatible``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import onnx
from v2a_runtime.backends import load_session
from v2a_runtime.bundle import check_io, describe_file, load_bundle, write_manifest
from v2a_runtime.config import COMPONENTS, ComponentSpec, Manifest, check_components

from v2a_export.export.bundle import (
    PARITY_REPORT,
    TRT_HINT,
    Event,
    bundle_config,
    recorded_plan,
    replace_dir,
    validation_source,
    write_json,
)
from v2a_export.export.descriptors import descriptors
from v2a_export.export.onnx_export import EXTERNAL_DATA_THRESHOLD
from v2a_export.export.parity import (
    FP32_THRESHOLDS,
    CaseCheck,
    EndToEnd,
    Metrics,
    ParityPlan,
    ParityReport,
    check_component,
    end_to_end_audio,
    jsonable,
)
from v2a_export.export.precision.calibrate import CalibrationPlan, calibration_inputs
from v2a_export.export.precision.convert import GraphPrecision, convert_graph
from v2a_export.export.precision.gate import (
    MelError,
    TwinSession,
    end_to_end_threshold,
    is_low,
    mel_error_db,
    threshold_for,
)
from v2a_export.export.precision.policy import PrecisionPolicy
from v2a_export.export.trt_compat import TensorRTIncompatible, Violation, check_file

PRECISION_REPORT = "reports/precision.json"
Callback = Callable[[Event], None]


@dataclass(frozen=True)
class PrecisionResult:
    root: Path
    policy: PrecisionPolicy
    components: dict[str, GraphPrecision]
    calibration: CalibrationPlan
    seconds: float
    # component -> what TensorRT's parser would refuse (only with allow_trt_incompatible)
    trt_violations: dict[str, tuple[Violation, ...]] = field(default_factory=dict)


def convert_bundle(
    src: str | Path,
    out: str | Path,
    policy: PrecisionPolicy,
    calibration: CalibrationPlan | None = None,
    *,
    components: tuple[str, ...] = COMPONENTS,
    threads: int | None = None,
    callback: Callback | None = None,
    allow_trt_incompatible: bool = False,
) -> PrecisionResult:
    """Convert ``components`` of the fp32 bundle ``src`` to ``policy.target``; write to ``out``."""
    started = time.perf_counter()
    calibration = calibration or CalibrationPlan()
    src, out = Path(src), Path(out)
    emit = callback or (lambda _e: None)
    check_components(components)
    bundle = load_fp32_bundle(src, "convert")
    manifest = bundle.manifest
    if out.exists() and out != src and any(out.iterdir()):
        raise ValueError(f"output {out} exists and is not empty; choose a new directory")
    emit(Event("calibration", "calibrate", 0, 1))
    feeds = calibration_inputs(src, calibration, threads=threads)
    emit(Event("calibration", "calibrate", 1, 1))
    work = out.parent / f".{out.name}.precision-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        shutil.copytree(src, work, ignore=shutil.ignore_patterns("*.onnx", "*.onnx.data"))
        (work / "onnx").mkdir(exist_ok=True)
        reports, specs = {}, dict(manifest.components)
        for name in COMPONENTS:
            spec = manifest.components[name]
            if name not in components:
                copy_component(src, work, spec)
                continue
            emit(Event(name, "convert", 0, 1))
            model = onnx.load(str(bundle.path(name)))
            converted, reports[name] = convert_graph(
                model, policy, feeds=feeds[name], threads=threads
            )
            specs[name] = save_component(
                work, spec, converted, policy.target.value, reports[name].manifest_lines()
            )
            emit(Event(name, "convert", 1, 1))
        recorded = dict(manifest.parity or {})
        recorded.update(
            passed=False,
            summary=f"converted to {policy.target.value}: not validated yet "
            f"(run v2a-export validate)",
        )
        write_manifest(work, replace(manifest, components=specs, parity=recorded))
        write_json(work / PRECISION_REPORT, _report(policy, calibration, reports, feeds))
        checked = {name: check_file(work / specs[name].file) for name in COMPONENTS}
        trt = {name: v for name, v in checked.items() if v}
        if trt and not allow_trt_incompatible:
            raise TensorRTIncompatible(trt, hint=TRT_HINT)
        replace_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    return PrecisionResult(out, policy, reports, calibration, seconds, trt_violations=trt)


def load_fp32_bundle(src: Path, verb: str):
    """The bundle at ``src``, which every precision conversion starts from: ValueError when
    any of its components is already below fp32."""
    bundle = load_bundle(src)
    already = {n: c.precision for n, c in bundle.manifest.components.items()
               if c.precision != "fp32"}  # fmt: skip
    if already:
        raise ValueError(
            f"bundle {src} is not an fp32 bundle ({already}); {verb} the fp32 export instead"
        )
    return bundle


def copy_component(src: Path, work: Path, spec: ComponentSpec) -> None:
    """Copy one component's files unchanged from bundle ``src`` to ``work``."""
    files = [spec.file] + ([spec.external_data.file] if spec.external_data else [])
    for rel in files:
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, work / rel)


def save_component(
    work: Path, spec: ComponentSpec, model, precision: str, fp32_nodes: tuple[str, ...]
) -> ComponentSpec:
    """Write ``model`` as the component's file under ``work`` (external data over 2 GB); its
    spec with the new hash, size, boundary types, ``precision`` and ``fp32_nodes`` lines."""
    path = work / spec.file
    data = path.with_name(path.name + ".data")
    external = model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location=data.name)
    else:
        onnx.save_model(model, str(path))
    fs = describe_file(work, spec.file)
    ext = None
    if external:
        ext = describe_file(work, f"{Path(spec.file).parent.as_posix()}/{data.name}")
    # the boundary types the rewrite chose (native I/O keeps fp32 where an fp32 node reads)
    names = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
             onnx.TensorProto.BFLOAT16: "bfloat16"}  # fmt: skip
    declared = {v.name: names.get(v.type.tensor_type.elem_type)
                for v in (*model.graph.input, *model.graph.output)}  # fmt: skip

    def io_type(t):
        return replace(t, dtype=declared[t.name]) if t.dtype == "float32" else t

    return replace(
        spec,
        sha256=fs.sha256,
        bytes=fs.bytes,
        inputs=tuple(io_type(t) for t in spec.inputs),
        outputs=tuple(io_type(t) for t in spec.outputs),
        precision=precision,
        fp32_nodes=fp32_nodes,
        external_data=ext,
    )


def _report(policy, calibration, reports: dict[str, GraphPrecision], feeds) -> dict:
    policy_d = {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(policy).items()}
    policy_d["limit"] = policy.limit
    return {
        "policy": policy_d,
        "calibration": {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(calibration).items()},
            "feeds": {n: len(f) for n, f in feeds.items()},
            "source": "v2a_runtime pipeline on the fp32 bundle, procedural-world video",
        },
        "components": {n: jsonable(r.to_dict()) for n, r in reports.items()},
    }


# --- validation ------------------------------------------------------------------------------


def validate_precision_bundle(
    root: str | Path,
    source=None,
    *,
    plan: ParityPlan | None = None,
    threads: int | None = None,
    write: bool = True,
    callback: Callback | None = None,
    components: tuple[str, ...] = COMPONENTS,
) -> ParityReport:
    """The parity gate of a bundle whose components may be fp16/bf16: each component against
    its PyTorch fp32 network (fp32 components with the fp32 gate), then end to end. With
    ``components`` only those are gated (the end-to-end check still runs the whole bundle);
    the report then covers just them."""
    from v2a_runtime.backends import Backend, HostSampler
    from v2a_runtime.pipeline import Pipeline
    from v2a_runtime.tokenizer import Tokenizer
    from v2a_runtime.watermark.keys import load_key

    from v2a_export.export.weights import load_weights

    root = Path(root)
    emit = callback or (lambda _e: None)
    check_components(components)
    bundle = load_bundle(root)
    manifest = bundle.manifest
    recorded = manifest.parity or {}
    config, source = bundle_config(manifest), validation_source(manifest, recorded, source)
    plan = plan or recorded_plan(recorded)
    emit(Event("weights", "load", 0, 1))
    loaded = load_weights(config, source)
    emit(Event("weights", "load", 1, 1))
    parity, sessions = {}, {}
    for name, desc in descriptors(config).items():
        spec = manifest.components[name]
        if name in components:
            parity[name], sessions[name] = _gate_component(
                bundle, name, desc, loaded.networks, config.rates, plan, threads, emit
            )
        elif is_low(spec.precision):
            sessions[name] = TwinSession.load(bundle.path(name), threads=threads)
        else:
            sessions[name] = load_session(bundle.path(name), threads=threads)
    notes: list[str] = []
    e2e = mel = None
    if plan.e2e_duration is not None:
        emit(Event("end_to_end", "parity", 0, 1))
        tokenizer = Tokenizer.load(
            bundle.tokenizer_path, context_length=manifest.tokenizer.context_length
        )
        pipe = Pipeline(bundle, Backend("cpu", sessions, HostSampler), tokenizer, load_key(None))
        e2e, mel = _end_to_end(loaded.networks, pipe, plan, manifest)
        notes.append(
            f"end to end ({_precisions(manifest)}, low-precision graphs emulated on CPU): log-mel "
            f"error mean {mel.mean_db:.3f} dB, p99 {mel.p99_db:.3f} dB, max {mel.max_db:.3f} dB "
            f"over {mel.bins} bins (gate: mean <= {e2e.threshold.mel_db:g} dB)"
        )
        emit(Event("end_to_end", "parity", 1, 1))
    report = ParityReport(parity, e2e, tuple(notes))
    if write:
        _write_validation(root, manifest, recorded, report, mel, plan)
    return report


def _gate_component(bundle, name, desc, nets, rules, plan, threads, emit):
    """(ComponentParity, the session the end-to-end check uses) for one component: fp32 graphs
    with the fp32 gate; low-precision ones with the graph itself (fp16: onnxruntime has no
    bf16 CPU kernels) and its emulation twin, both against PyTorch fp32."""
    from v2a_export.export.wrappers import wrap

    spec = bundle.manifest.components[name]
    steps = len(plan.cases(desc)) * (2 if spec.precision == "fp16" else 1)
    emit(Event(name, "parity", 0, steps))
    module = wrap(nets, name)

    def progress(i, _n, offset=0):
        emit(Event(name, "parity", min(offset + i, steps), steps))

    if not is_low(spec.precision):
        session = load_session(bundle.path(name), threads=threads)
        check_io(name, spec, session)
        parity = check_component(module, desc, session, rules, plan,
                                 threshold=FP32_THRESHOLDS[name], on_case=progress)  # fmt: skip
        return parity, session
    threshold = threshold_for(spec.precision)
    twin = TwinSession.load(bundle.path(name), threads=threads)
    cases: list[CaseCheck] = []
    if spec.precision == "fp16":
        real = load_session(bundle.path(name), threads=threads)
        check_io(name, spec, real)
        cases += check_component(module, desc, real, rules, plan, threshold=threshold,
                                 on_case=progress).cases  # fmt: skip
    done = len(cases)
    emulated = check_component(module, desc, twin, rules, plan, threshold=threshold,
                               on_case=lambda i, n: progress(i, n, offset=done))  # fmt: skip
    tag = f" [emulated {spec.precision}]"
    cases += [replace(c, outputs=tuple(replace(o, name=o.name + tag) for o in c.outputs))
              for c in emulated.cases]  # fmt: skip
    return replace(emulated, cases=tuple(cases)), twin


def _write_validation(root: Path, manifest, recorded, report: ParityReport, mel, plan) -> None:
    """reports/parity.json and the manifest's parity section (reference and plan kept, so the
    bundle can be validated again)."""
    details = report.to_dict()
    if mel is not None:
        details["end_to_end"]["mel_error_db"] = asdict(mel)
    write_json(root / PARITY_REPORT, details)
    section = report.manifest_summary()
    section["backend"] = (
        "onnxruntime CPU: fp16 graphs and the emulation twin of every low-precision graph "
        "(per-op rounding) vs PyTorch fp32"
    )
    if mel is not None:
        section["end_to_end"]["mel_error_db"] = round(mel.mean_db, 4)
    section["reference"] = recorded.get("reference") or {"weights": manifest.model.weights}
    section["plan"] = {k: list(v) if isinstance(v, tuple) else v
                       for k, v in asdict(plan).items()}  # fmt: skip
    write_manifest(root, replace(manifest, parity=jsonable(section)))


def _end_to_end(nets, pipe, plan: ParityPlan, manifest: Manifest) -> tuple[EndToEnd, MelError]:
    got, want = end_to_end_audio(nets, pipe, plan)
    m = Metrics.of(got, want)
    mel = mel_error_db(got, want, manifest.audio.sample_rate)
    threshold = end_to_end_threshold(_precisions(manifest))
    e2e = EndToEnd.of(plan, int(got.shape[0]), m, threshold, threshold.failures(m, mel))
    return e2e, mel


def _precisions(manifest: Manifest) -> str:
    kinds = sorted({c.precision for c in manifest.components.values()})
    return "+".join(kinds)


__all__ = [
    "PRECISION_REPORT",
    "PrecisionResult",
    "convert_bundle",
    "copy_component",
    "save_component",
    "validate_precision_bundle",
]
