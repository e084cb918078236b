"""Which engines a ``build-engines`` run must build: the requested keys against the bundle's
``engines/engines.json`` (pure; no TensorRT).

The key format, engines.json and the stale rules live in
:mod:`v2a_runtime.backends.tensorrt.cache`, because the torch-free runtime must refuse stale
engines by exactly the same rules (and v2a_runtime never imports v2a_export). This module adds
the builder's side: the key each component should have (:func:`requested_keys`), the engine
precision for each graph (:func:`engine_precision`), and a per-component verdict with a reason
(:func:`plan_builds`): up to date, missing, or stale because *this* changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from v2a_runtime.backends.tensorrt.cache import (
    GRAPH_PRECISION,
    EngineEntry,
    EngineIndex,
    EngineKey,
    GraphIdentity,
    InputProfile,
    Platform,
    check_entry,
)
from v2a_runtime.config import ENGINE_PRECISIONS, Manifest


def graph_identity(manifest: Manifest, component: str) -> GraphIdentity:
    c = manifest.components[component]
    external = c.external_data.sha256 if c.external_data is not None else None
    return GraphIdentity(c.file, c.sha256, c.precision, external)


def engine_precision(manifest: Manifest, component: str, requested: str | None) -> str:
    """The engine precision for a component: its graph's precision when ``requested`` is None,
    else ``requested`` if the graph allows it. Strongly typed builds take float types from the
    graph, so an fp16 engine needs the fp16 graph; ValueError says how to get it."""
    graph = manifest.components[component].precision
    if requested is None:
        if graph not in ENGINE_PRECISIONS:
            raise ValueError(
                f"{component}: graph precision {graph!r} is not one TensorRT engines are built "
                f"from ({', '.join(sorted(set(GRAPH_PRECISION.values())))})"
            )
        return graph
    if requested not in ENGINE_PRECISIONS:
        allowed = ", ".join(ENGINE_PRECISIONS)
        raise ValueError(f"--precision {requested!r} is not one of {allowed}")
    if GRAPH_PRECISION[requested] != graph:
        raise ValueError(
            f"--precision {requested} needs {GRAPH_PRECISION[requested]} graphs, but the "
            f"bundle's {component} graph is {graph} (TensorRT 10/11 strongly typed engines take "
            f"their precision from the ONNX graph); export the bundle with "
            f"v2a-export export --precision {GRAPH_PRECISION[requested]}"
        )
    return requested


def requested_keys(
    manifest: Manifest,
    profiles: dict[str, tuple[InputProfile, ...]],
    precisions: dict[str, str],
    platform: Platform,
    *,
    opt_level: int,
    workspace_bytes: int | None,
) -> dict[str, EngineKey]:
    """The key each component's engine must have on ``platform``."""
    out = {}
    for name, profile in profiles.items():
        g = graph_identity(manifest, name)
        out[name] = EngineKey(
            component=name,
            onnx_sha256=g.sha256,
            precision=precisions[name],
            profiles=(profile,),
            platform=platform,
            opt_level=opt_level,
            workspace_bytes=workspace_bytes,
            external_data_sha256=g.external_data_sha256,
        )
    return out


@dataclass(frozen=True)
class Planned:
    """The verdict for one component."""

    component: str
    key: EngineKey
    build: bool
    reason: str  # "up to date", or why it must be built
    existing: EngineEntry | None  # this platform's current entry, if any


def plan_builds(
    root: str | Path,
    manifest: Manifest,
    index: EngineIndex,
    keys: dict[str, EngineKey],
    *,
    force: bool = False,
    verify_files: bool = True,
) -> list[Planned]:
    root = Path(root)
    out = []
    for name, key in keys.items():
        entry = index.find(name, key.platform)
        problem = check_entry(
            root, entry, graph_identity(manifest, name), key.platform, verify_file=verify_files
        )
        if problem is None and entry.key != key.digest():
            problem = "the build request changed: " + describe_change(entry.key_fields, key)
        if problem is None:
            reason = "forced (--force)" if force else "up to date"
            out.append(Planned(name, key, force, reason, entry))
        else:
            out.append(Planned(name, key, True, problem, entry))
    return out


def describe_change(old: EngineKey, new: EngineKey) -> str:
    """Which key fields differ, in words (``profiles: denoiser x max (8, 313, 8) -> ...``)."""
    changes = []
    if old.precision != new.precision:
        changes.append(f"precision {old.precision} -> {new.precision}")
    if old.opt_level != new.opt_level:
        changes.append(f"opt level {old.opt_level} -> {new.opt_level}")
    if old.workspace_bytes != new.workspace_bytes:
        changes.append(f"workspace {_gb(old.workspace_bytes)} -> {_gb(new.workspace_bytes)}")
    if old.profiles != new.profiles:
        changes.append(_profile_change(old.profiles[0], new.profiles[0]))
    return "; ".join(changes) or "key format"


def _profile_change(old: tuple[InputProfile, ...], new: tuple[InputProfile, ...]) -> str:
    before = {p.name: p for p in old}
    for p in new:
        q = before.get(p.name)
        if q is None:
            return f"profile gained input {p.name!r}"
        for label in ("min", "opt", "max"):
            a, b = getattr(q, label), getattr(p, label)
            if a != b:
                return f"profile {p.name} {label} {a} -> {b}"
    return "profile inputs changed"


def _gb(nbytes: int | None) -> str:
    return "default" if nbytes is None else f"{nbytes / 2**30:g} GiB"


__all__ = [
    "Planned",
    "describe_change",
    "engine_precision",
    "graph_identity",
    "plan_builds",
    "requested_keys",
]
