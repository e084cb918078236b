"""Write and re-validate a bundle (DESIGN.md §5, docs/contract.md "Bundle layout").

:func:`export_bundle` loads the weights, exports each requested component
(:mod:`~v2a_export.export.onnx_export`), checks it against TensorRT's parser rules
(:mod:`~v2a_export.export.trt_compat`; a violation stops the export unless
``allow_trt_incompatible``), gates it (:mod:`~v2a_export.export.parity`), copies the
tokenizer vocabulary, writes ``manifest.json`` through ``v2a_runtime.bundle.write_manifest``,
runs the end-to-end check through the runtime pipeline on the finished bundle and writes
``reports/parity.json`` and ``reports/export.json``. Everything is written into a sibling
temporary directory that replaces ``out`` only when complete, so an interrupted export leaves
no half bundle.

The manifest states every fact once: its model section names the variant (and records a
custom :class:`ModelConfig` beyond what the audio and video sections say), its
``parity.reference`` which weights the graphs were checked against (for random weights: the
seed), so :func:`validate_bundle` can rebuild the same PyTorch networks
(:meth:`ModelConfig.from_manifest`) and re-run the gate.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from v2a_runtime.backends import load_session
from v2a_runtime.bundle import check_io, describe_file, load_bundle, write_manifest
from v2a_runtime.config import (
    COMPONENTS,
    DEFAULT_SAMPLER,
    MANIFEST,
    NETWORK_OF,
    AudioSpec,
    ComponentSpec,
    Manifest,
    ModelSpec,
    SequenceSpec,
    TokenizerSpec,
    check_components,
)
from v2a_runtime.media.files import atomic_output
from v2a_runtime.tokenizer import DEFAULT_VOCAB

from v2a_export.export.descriptors import descriptors
from v2a_export.export.onnx_export import OPSET, ExportResult, export_component
from v2a_export.export.parity import (
    FP32_THRESHOLDS,
    ComponentParity,
    ParityPlan,
    ParityReport,
    check_component,
    check_end_to_end,
    jsonable,
)
from v2a_export.export.trt_compat import TensorRTIncompatible, Violation, check_file
from v2a_export.export.weights import (
    LazyNetworks,
    WeightSource,
    check_weight_source,
    load_weights,
)
from v2a_export.export.wrappers import pinned_tables, wrap
from v2a_export.models.configs import VARIANTS, ModelConfig

_LOGGER = logging.getLogger(__name__)

PARITY_REPORT = "reports/parity.json"
EXPORT_REPORT = "reports/export.json"
TOKENIZER_FILE = "tokenizer/bpe_simple_vocab_16e6.txt.gz"
TRAINED_DURATION = 8.0  # MMAudio's training clips; long videos use windows of this length
SPACE_MARGIN = 1.15  # ONNX files are the fp32 parameters plus graph and slack


class ExportInputError(ValueError):
    """A user mistake (bad output directory, no disk space, unknown component): one line."""


@dataclass(frozen=True)
class ExportOptions:
    components: tuple[str, ...] = COMPONENTS
    max_duration: float = 10.0  # longest single window the graphs serve
    plan: ParityPlan = ParityPlan()
    packaged_tokenizer: bool = False  # True: tokenizer.file null (v2a_runtime's own copy)
    model_id: int | None = None  # None: 1 + the variant's index in VARIANTS, 0 for custom
    weights_note: str | None = None  # None: generated from the weight source
    threads: int | None = None  # onnxruntime threads for the gate (None: all cores)
    # a graph TensorRT's parser would refuse (trt_compat): False stops the export before its
    # parity gate and writes nothing; True exports it and lists the violations in the result
    allow_trt_incompatible: bool = False


@dataclass(frozen=True)
class Event:
    """Progress for a callback: ``stage`` of ``component`` reached ``done`` of ``total``."""

    component: str  # a component name, or "weights" / "end_to_end" / "bundle"
    stage: str  # "load", "export", "parity", "write"
    done: int
    total: int


Callback = Callable[[Event], None]
TRT_HINT = "nothing was written (--allow-trt-incompatible writes it anyway)"


@dataclass(frozen=True)
class BundleResult:
    root: Path
    manifest: Manifest | None  # None for a partial export into a directory without a bundle
    report: ParityReport
    exports: dict[str, ExportResult]
    weights: str  # random / trained / official
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    # component -> what TensorRT's parser would refuse (only with allow_trt_incompatible)
    trt_violations: dict[str, tuple[Violation, ...]] = field(default_factory=dict)


# --- export ----------------------------------------------------------------------------------


def export_bundle(
    config: ModelConfig,
    source: WeightSource,
    out: str | Path,
    options: ExportOptions = ExportOptions(),
    *,
    callback: Callback | None = None,
) -> BundleResult:
    """Export ``options.components`` of ``config`` with weights from ``source`` into ``out``.

    ``out`` may be new, empty, or hold a bundle or partial export: a full export replaces it;
    an export of some components keeps the others when they come from the same weights, and
    the manifest (and the end-to-end check) is written once all seven are present.
    """
    started = time.perf_counter()
    out = Path(out)
    emit = callback or (lambda _e: None)
    kept = _existing(out, options, config, source)
    check_weight_source(config, source)
    check_free_space(out, config, options.components)
    if options.max_duration < config.rates.min_duration:
        raise ExportInputError(
            f"--max-duration {options.max_duration} s is below one sync segment "
            f"({config.rates.min_duration:.2f} s)"
        )
    loaded = LazyNetworks(config, source)  # each network is loaded when first needed
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        (work / "onnx").mkdir(parents=True)
        (work / "reports").mkdir()
        report, exports, notes, trt = _export_into(
            work, config, loaded, source, options, kept, emit
        )
        replace_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    exports = {n: _moved(r, work, out) for n, r in exports.items()}
    return BundleResult(
        root=out,
        manifest=load_bundle(out).manifest if (out / MANIFEST).is_file() else None,
        report=report,
        exports=exports,
        weights=loaded.kind,
        seconds=time.perf_counter() - started,
        notes=notes,
        trt_violations=trt,
    )


def _export_into(work, config, loaded: LazyNetworks, source, options, kept, emit):
    """Export, gate and describe everything inside ``work``."""
    rules = config.rates
    descs = descriptors(config)
    plan = options.plan
    exports, parity, trt = {}, {}, {}
    for i, name in enumerate(options.components):
        exports[name], parity[name], trt[name] = _export_one(
            work, name, loaded, descs[name], rules, plan, options.threads, emit,
            allow_trt_incompatible=options.allow_trt_incompatible,
        )  # fmt: skip
        later = {NETWORK_OF[c] for c in options.components[i + 1 :]}
        if NETWORK_OF[name] not in later:  # keep peak memory to one network + one graph
            loaded.release(NETWORK_OF[name])
    specs = {name: _component_spec(work, exports[name], descs[name]) for name in exports}
    notes: list[str] = []
    if kept is not None and set(kept.specs) - set(specs):
        names = sorted(set(kept.specs) - set(specs))
        for name in names:
            _copy_component(kept.root, work, kept.specs[name])
            specs[name] = kept.specs[name]
        notes.append(f"kept {', '.join(names)} from the earlier export in {kept.root}")
    report = ParityReport(parity, None, tuple(notes))
    if set(specs) == set(COMPONENTS):
        tokenizer = _tokenizer(work, options.packaged_tokenizer)
        manifest = _manifest(config, loaded, source, options, specs, tokenizer, None)
        write_manifest(work, manifest)
        if plan.e2e_duration is not None:
            emit(Event("end_to_end", "parity", 0, 1))
            e2e = _end_to_end(loaded, config, source, work, plan, options.threads)
            emit(Event("end_to_end", "parity", 1, 1))
            report = ParityReport(parity, e2e, tuple(notes))
        section = _parity_section(report, loaded, source, plan, kept)
        write_manifest(work, replace(manifest, parity=section))
    else:
        notes.append(
            f"partial export ({len(specs)} of {len(COMPONENTS)} components): no {MANIFEST} yet; "
            "export the others into the same directory (--components) to complete the bundle"
        )
        report = ParityReport(parity, None, tuple(notes))
    details = report.to_dict()
    if kept is not None:
        for name, entry in kept.details.items():
            details["components"].setdefault(name, {**entry, "from_previous_export": True})
    write_json(work / PARITY_REPORT, details)
    write_json(work / EXPORT_REPORT, _export_report(config, loaded, source, exports, plan, kept))
    return report, exports, tuple(notes), {n: v for n, v in trt.items() if v}


def _end_to_end(models: LazyNetworks, config, source, root, plan, threads):
    """Release the networks, run the runtime pipeline, then rebuild all five networks (from the
    seed, or from the weight files) for the PyTorch reference."""
    models.release()
    return check_end_to_end(
        lambda: load_weights(config, source).networks, root, plan, threads=threads, config=config
    )


def _export_one(work, name, loaded, desc, rules, plan, threads, emit, *, allow_trt_incompatible):
    steps = 1 + len(plan.cases(desc))
    emit(Event(name, "export", 0, steps))
    nets = loaded.networks(NETWORK_OF[name])
    module = wrap(nets, name)
    example = desc.sample_inputs(plan.export_sizes(rules), seed=plan.seed + 1000)
    result = export_component(
        module, desc, work / "onnx" / f"{name}.onnx", example, pins=pinned_tables(nets, name)
    )
    violations = check_file(result.path)
    if violations and not allow_trt_incompatible:  # before the gate: fail in seconds
        raise TensorRTIncompatible({name: violations}, hint=TRT_HINT)
    emit(Event(name, "export", 1, steps))
    session = load_session(result.path, threads=threads)
    parity = check_component(
        module,
        desc,
        session,
        rules,
        plan,
        threshold=FP32_THRESHOLDS[name],
        on_case=lambda i, _n: emit(Event(name, "parity", 1 + i, steps)),
    )
    return result, parity, violations


def _component_spec(root: Path, result: ExportResult, desc) -> ComponentSpec:
    external = result.external_data
    return _spec(root, result.path.relative_to(root).as_posix(), desc, result.opset,
                 None if external is None else external.relative_to(root).as_posix())  # fmt: skip


def _spec(root: Path, rel: str, desc, opset: int | None, external: str | None) -> ComponentSpec:
    """The fp32 component at ``root/rel`` (and its external data file) as the manifest
    describes it: sizes and sha256 of the files, the descriptor's I/O."""
    fs = describe_file(root, rel)
    return ComponentSpec(
        file=rel,
        sha256=fs.sha256,
        bytes=fs.bytes,
        inputs=desc.inputs,
        outputs=desc.outputs,
        precision="fp32",
        opset=opset,
        external_data=None if external is None else describe_file(root, external),
    )


def _tokenizer(work: Path, packaged: bool) -> TokenizerSpec:
    if packaged:
        return TokenizerSpec(file=None)
    (work / TOKENIZER_FILE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEFAULT_VOCAB, work / TOKENIZER_FILE)
    fs = describe_file(work, TOKENIZER_FILE)
    return TokenizerSpec(file=TOKENIZER_FILE, sha256=fs.sha256)


def _manifest(config, loaded, source, options, specs, tokenizer, parity) -> Manifest:
    latent_mean, latent_std = loaded.latent_stats()
    return Manifest(
        model=ModelSpec(
            family="mmaudio",
            variant=config.name,
            weights=loaded.kind,
            weights_note=options.weights_note or weights_note(loaded, source),
            model_id=default_model_id(config) if options.model_id is None else options.model_id,
            config=config.manifest_config(),
        ),
        audio=AudioSpec(
            sample_rate=config.mel.sample_rate,
            hop_length=config.mel.hop_length,
            n_mels=config.mel.n_mels,
            latent_channels=config.flow.latent_dim,
            latent_mean=latent_mean,
            latent_std=latent_std,
        ),
        video=config.streams,
        sequence=SequenceSpec(
            max_duration=float(options.max_duration),
            trained_duration=min(TRAINED_DURATION, float(options.max_duration)),
        ),
        tokenizer=tokenizer,
        sampler=DEFAULT_SAMPLER,
        components={name: specs[name] for name in COMPONENTS},
        versions=library_versions(),
        parity=parity,
    )


def weights_note(loaded, source: WeightSource) -> str:
    if loaded.kind == "random":
        return (
            f"RANDOM WEIGHTS (seed {source.seed}): the real architecture, untrained; exported to "
            "test the export and the pipeline. The audio it makes is noise."
        )
    files = ", ".join(f"{n}={p.name}" for n, p in loaded.files.items()) or str(source.file)
    return f"{loaded.kind} weights from {source.describe()} ({files})"


def default_model_id(config: ModelConfig) -> int:
    """1 + the variant's position in VARIANTS (tiny = 1); 0 for a custom config."""
    names = list(VARIANTS)
    if config.name in VARIANTS and VARIANTS[config.name] == config:
        return 1 + names.index(config.name)
    return 0


def library_versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import onnxscript
    import torch

    from v2a_export import __version__

    return {
        "v2a_export": __version__,
        "exporter": f"torch.onnx.export(dynamo=True), opset {OPSET}",
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }


def _reference(loaded, source: WeightSource) -> dict:
    """Which weights the graphs were checked against (validate rebuilds them from this)."""
    return {
        "weights": loaded.kind,
        "seed": source.seed,
        "source": None if source.random else source.describe(),
    }


def _parity_section(report, loaded, source, plan, kept) -> dict:
    section = report.manifest_summary()
    comps = section["components"]
    if kept is not None:
        for name, entry in kept.summaries.items():
            comps.setdefault(name, {**entry, "from_previous_export": True})
        old = sum(1 for e in comps.values() if e.get("from_previous_export"))
        ok = [n for n, e in comps.items() if e.get("passed")]
        worst = max((e.get("worst_rel_l2") or 0.0 for e in comps.values()), default=0.0)
        text = f"{len(ok)}/{len(comps)} components pass (worst rel_l2 {worst:.1e}; {old} from "
        text += "an earlier export)"
        if len(ok) < len(comps):
            text += f"; FAILED: {', '.join(n for n in comps if n not in ok)}"
        tail = report.summary().partition("; end to end")
        section["summary"] = text + (tail[1] + tail[2] if tail[1] else "")
        section["passed"] = bool(section["passed"]) and len(ok) == len(comps)
    section["components"] = {n: comps[n] for n in COMPONENTS if n in comps}
    section["reference"] = _reference(loaded, source)
    section["plan"] = _jsonable_plan(plan)
    return section


def _jsonable_plan(plan: ParityPlan) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(plan).items()}


def _export_report(config, loaded, source, exports, plan, kept) -> dict:
    entries = {
        name: {
            "file": r.path.relative_to(r.path.parent.parent).as_posix(),
            "bytes": r.bytes,
            "external_data": r.external_data.name if r.external_data else None,
            "seconds": round(r.seconds, 3),
            "nodes": r.nodes,
            "opset": r.opset,
            "pinned_constants": list(r.pinned),
        }
        for name, r in exports.items()
    }
    if kept is not None:
        for name, entry in kept.exports.items():
            entries.setdefault(name, entry)
    return {
        "variant": config.name,
        "reference": _reference(loaded, source),
        "trace_sizes": plan.export_sizes(config.rates),
        "weights_load_seconds": {n: round(t, 3) for n, t in loaded.load_seconds.items()},
        "components": {n: entries[n] for n in COMPONENTS if n in entries},
        "versions": library_versions(),
    }


def write_json(path: Path, data: dict) -> None:
    """A report as JSON (NaN -> null), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n", "utf-8")


# --- output directory and disk space ---------------------------------------------------------


@dataclass(frozen=True)
class _Kept:
    """The components already in OUT (a bundle, or a partial export of the same weights)."""

    root: Path
    specs: dict[str, ComponentSpec]
    summaries: dict[str, dict]  # manifest parity entries
    details: dict[str, dict]  # reports/parity.json entries
    exports: dict[str, dict]  # reports/export.json entries


def _existing(out: Path, options: ExportOptions, config, source) -> _Kept | None:
    """Refuse an unusable output; describe the components a partial export keeps."""
    _components(options.components)
    if out.exists() and not out.is_dir():
        raise ExportInputError(f"output {out} is a file; give a directory for the bundle")
    if not out.exists() or not any(out.iterdir()):
        return None
    if not (out / EXPORT_REPORT).is_file():
        raise ExportInputError(
            f"output {out} is a non-empty directory that holds no v2a-export output; choose a "
            "new or empty directory (an earlier bundle or partial export is replaced)"
        )
    if set(options.components) == set(COMPONENTS):
        return None  # a full export replaces whatever is there
    try:
        record = json.loads((out / EXPORT_REPORT).read_text(encoding="utf-8"))
        details = json.loads((out / PARITY_REPORT).read_text(encoding="utf-8"))["components"]
    except (OSError, ValueError, KeyError) as e:
        raise ExportInputError(f"cannot read the earlier export in {out}: {e}") from e
    ref = record.get("reference") or {}
    want = {"seed": source.seed, "source": None if source.random else source.describe()}
    if record.get("variant") != config.name or any(ref.get(k) != v for k, v in want.items()):
        raise ExportInputError(
            f"{out} holds an export of other weights or another variant "
            f"({record.get('variant')}, {ref or 'unknown weights'}); export all components or "
            "choose another directory"
        )
    names = [n for n in record.get("components", {}) if n in COMPONENTS]
    manifest = load_bundle(out).manifest if (out / MANIFEST).is_file() else None
    descs = descriptors(config)
    specs, summaries = {}, {}
    for name in names:
        entry = record["components"][name]
        if manifest is not None:
            specs[name] = manifest.components[name]
        else:
            specs[name] = _spec_from_files(out, entry, descs[name])
        summaries[name] = (details.get(name) or {}).get("summary") or {"passed": False}
    return _Kept(
        root=out,
        specs=specs,
        summaries=summaries,
        details={n: details[n] for n in names if n in details},
        exports={n: record["components"][n] for n in names},
    )


def _spec_from_files(root: Path, entry: dict, desc) -> ComponentSpec:
    external = f"onnx/{entry['external_data']}" if entry.get("external_data") else None
    return _spec(root, entry["file"], desc, entry.get("opset"), external)


def _components(names: tuple[str, ...]) -> None:
    try:
        check_components(names)
    except ValueError as e:
        raise ExportInputError(str(e)) from None


def estimate_bytes(config: ModelConfig, components: tuple[str, ...]) -> int:
    """Bytes the ONNX files of ``components`` will take (fp32 parameters, with margin)."""
    from v2a_export.models.build import build_networks

    skeleton = build_networks(config, device="meta").modules()
    networks = {NETWORK_OF[c] for c in components}
    params = sum(p.numel() for n in networks for p in skeleton[n].parameters())
    if "conditioner" in components and "denoiser" in components:
        params += sum(p.numel() for p in skeleton["flow"].parameters()) // 10  # shared inputs
    return int(params * 4 * SPACE_MARGIN) + 8 * 1024**2


def check_free_space(out: Path, config: ModelConfig, components: tuple[str, ...]) -> None:
    need = estimate_bytes(config, components)
    probe = out if out.exists() else next(p for p in out.resolve().parents if p.exists())
    free = shutil.disk_usage(probe).free
    if free < need:
        raise ExportInputError(
            f"not enough disk space for {out}: the export needs about {need / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB free on {probe}"
        )


def _copy_component(src_root: Path, dst_root: Path, spec: ComponentSpec) -> None:
    """Hard-link (or copy) a kept component's files; the old directory is removed later."""
    files = [spec.file] + ([spec.external_data.file] if spec.external_data else [])
    for rel in files:
        (dst_root / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src_root / rel, dst_root / rel)
        except OSError:
            shutil.copyfile(src_root / rel, dst_root / rel)


def _moved(result: ExportResult, work: Path, out: Path) -> ExportResult:
    external = result.external_data
    return replace(
        result,
        path=out / result.path.relative_to(work),
        external_data=None if external is None else out / external.relative_to(work),
    )


def replace_dir(work: Path, out: Path) -> None:
    """Move the finished ``work`` to ``out``; an existing ``out`` is removed only after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- validate --------------------------------------------------------------------------------


def validate_bundle(
    root: str | Path,
    source: WeightSource | None = None,
    *,
    plan: ParityPlan | None = None,
    threads: int | None = None,
    write: bool = True,
    components: tuple[str, ...] = COMPONENTS,
    callback: Callback | None = None,
) -> ParityReport:
    """Re-run the parity gate of the bundle at ``root`` against the PyTorch networks: rebuilt
    from the recorded seed for random weights, else loaded from ``source``. ``write`` stores the
    result in ``reports/parity.json`` and the manifest's ``parity`` section (the entries of
    components not in ``components`` are kept as they were)."""
    root = Path(root)
    emit = callback or (lambda _e: None)
    bundle = load_bundle(root)  # hashes and schema
    manifest = bundle.manifest
    recorded = manifest.parity or {}
    config = bundle_config(manifest)
    source = validation_source(manifest, recorded, source)
    plan = plan or recorded_plan(recorded)
    _components(components)
    check_weight_source(config, source)
    loaded = LazyNetworks(config, source)
    rules = config.rates
    parity: dict[str, ComponentParity] = {}
    order = [c for c in COMPONENTS if c in components]
    for i, name in enumerate(order):
        desc = descriptors(config)[name]
        steps = len(plan.cases(desc))
        emit(Event(name, "parity", 0, steps))
        session = load_session(bundle.path(name), threads=threads)
        check_io(name, manifest.components[name], session)
        parity[name] = check_component(
            wrap(loaded.networks(NETWORK_OF[name]), name),
            desc,
            session,
            rules,
            plan,
            threshold=FP32_THRESHOLDS[name],
            on_case=lambda i, n, name=name: emit(Event(name, "parity", i, n)),
        )
        if NETWORK_OF[name] not in {NETWORK_OF[c] for c in order[i + 1 :]}:
            loaded.release(NETWORK_OF[name])
    e2e = None
    if plan.e2e_duration is not None:
        emit(Event("end_to_end", "parity", 0, 1))
        e2e = _end_to_end(loaded, config, source, root, plan, threads)
        emit(Event("end_to_end", "parity", 1, 1))
    report = ParityReport(parity, e2e)
    if write:
        kept = None
        if set(components) != set(COMPONENTS):
            kept = _earlier_parity(root, recorded, components)
        details = report.to_dict()
        for name, entry in (kept.details if kept else {}).items():
            details["components"].setdefault(name, {**entry, "from_previous_export": True})
        write_json(root / PARITY_REPORT, details)
        section = _parity_section(report, loaded, source, plan, kept)
        write_manifest(root, replace(manifest, parity=section))
    return report


def _earlier_parity(root: Path, recorded: dict, checked: tuple[str, ...]) -> _Kept:
    """The recorded parity entries of the components a partial validation did not check."""
    try:
        details = json.loads((root / PARITY_REPORT).read_text(encoding="utf-8"))["components"]
    except (OSError, ValueError, KeyError):
        details = {}
    others = [c for c in COMPONENTS if c not in checked]
    summaries = {c: (recorded.get("components") or {}).get(c) or {"passed": False} for c in others}
    return _Kept(
        root=root,
        specs={},
        summaries=summaries,
        details={c: details[c] for c in others if c in details},
        exports={},
    )


def bundle_config(manifest: Manifest) -> ModelConfig:
    """The model config a bundle was exported from (ExportInputError when it cannot be
    rebuilt: an unknown variant, or facts that disagree)."""
    try:
        return ModelConfig.from_manifest(manifest)
    except ValueError as e:
        raise ExportInputError(f"cannot rebuild the PyTorch networks of this bundle: {e}") from e


def validation_source(manifest, recorded, source) -> WeightSource:
    if source is not None:
        return source
    seed = (recorded.get("reference") or {}).get("seed")
    if manifest.model.weights == "random" and isinstance(seed, int):
        return WeightSource(seed=seed)
    raise ExportInputError(
        f"the bundle holds {manifest.model.weights} weights; pass the same weights to validate "
        "against (--weights DIR or --weights-file F)"
    )


def recorded_plan(recorded: dict) -> ParityPlan:
    """The parity plan a bundle recorded (the default when it recorded none or an unusable
    one)."""
    saved = recorded.get("plan")
    if not isinstance(saved, dict):
        return ParityPlan()
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    try:
        return ParityPlan(**kwargs)
    except (TypeError, ValueError):
        _LOGGER.warning("recorded parity plan %s is unusable; using the default", saved)
        return ParityPlan()


__all__ = [
    "EXPORT_REPORT",
    "PARITY_REPORT",
    "BundleResult",
    "Event",
    "ExportInputError",
    "ExportOptions",
    "bundle_config",
    "recorded_plan",
    "check_free_space",
    "estimate_bytes",
    "export_bundle",
    "replace_dir",
    "validate_bundle",
    "validation_source",
    "write_json",
]
