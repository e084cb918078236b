"""The TensorRT engine cache of a bundle: keys, ``engines/engines.json``, stale detection.

Pure Python (no tensorrt, no CUDA): the builder (``v2a-export build-engines``) and the runtime
(``--backend tensorrt``) both read this module, so an engine that does not match its key is
refused by the same rules on both sides.

A TensorRT plan is only valid for the exact inputs that produced it. The key of an engine is the
sha256 of a canonical JSON of everything that changes the plan or where it may run:

- ``component`` and ``onnx_sha256`` (+ ``external_data_sha256`` for graphs over 2 GB: the
  weights live there) — a re-exported graph needs a new engine;
- ``precision`` — strongly typed networks take float types from the graph; ``tf32`` vs ``fp32``
  is the one builder flag left that changes fp32 math (BuilderFlag.TF32);
- ``profiles`` — min/opt/max per input; the plan's kernels are chosen for ``opt`` and valid in
  [min, max], and ``max`` sets the activation memory the context reserves;
- ``tensorrt`` (full version: plans are not portable across TensorRT versions), ``gpu`` name and
  ``compute_capability`` (plans are specific to the GPU model they were built on);
- ``opt_level`` (builder_optimization_level: a different tactic search gives a different plan)
  and ``workspace_bytes`` (the memory-pool limit removes tactics that need more scratch).

Not in the key: the timing cache (it only memoises tactic timings measured on the same device
and TensorRT version; the plan it leads to is as valid as one built without it) and the build
date. Identical inputs always give the identical key; any change gives another
(tests/test_engines.py checks both, and pins one digest so the format cannot drift silently).

``engines/engines.json`` records one :class:`EngineEntry` per (component, platform): a bundle
shared by a fleet can hold engines for several GPUs and TensorRT versions side by side.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ...config import ENGINE_PRECISIONS, BundleError, parse
from ...media.files import atomic_output
from ..base import BackendError

KEY_VERSION = 1  # bump when the key's fields or their meaning change: every engine is stale
INDEX_SCHEMA = 1
ENGINES_DIR = "engines"
INDEX_FILE = f"{ENGINES_DIR}/engines.json"
# Which ONNX graph precision (manifest ``components.*.precision``) each engine precision needs.
GRAPH_PRECISION = {p: ("fp32" if p == "tf32" else p) for p in ENGINE_PRECISIONS}
DEFAULT_OPT_LEVEL = 3  # TensorRT's own default builder_optimization_level


class EngineCacheError(BackendError):
    """engines.json is unreadable or malformed; the message names the file and the field."""


class StaleEngineError(BackendError):
    """An engine is missing or does not match its key; the message says how to rebuild."""


@dataclass(frozen=True)
class Platform:
    """Where a plan may run: the TensorRT version and the exact GPU model."""

    tensorrt: str  # tensorrt.__version__, e.g. "10.15.1.29"
    gpu: str  # device name, e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: str  # "9.0"

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt} on {self.gpu} (sm {self.compute_capability})"


@dataclass(frozen=True)
class InputProfile:
    """min / opt / max shape of one engine input (one IOptimizationProfile.set_shape call)."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        ranks = {len(self.min), len(self.opt), len(self.max)}
        ok = len(ranks) == 1 and all(
            1 <= lo <= o <= hi for lo, o, hi in zip(self.min, self.opt, self.max, strict=True)
        )
        if not ok:
            raise ValueError(
                f"profile of {self.name!r} must have equal ranks and 1 <= min <= opt <= max per "
                f"dim, got min {self.min} opt {self.opt} max {self.max}"
            )

    def contains(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True)
        )


@dataclass(frozen=True)
class EngineKey:
    """Everything that makes a plan what it is (see the module docstring)."""

    component: str
    onnx_sha256: str
    precision: str
    profiles: tuple[tuple[InputProfile, ...], ...]  # one tuple of inputs per profile
    platform: Platform
    opt_level: int = DEFAULT_OPT_LEVEL
    workspace_bytes: int | None = None  # None: TensorRT's default (the device's memory)
    external_data_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in ENGINE_PRECISIONS:
            allowed = ", ".join(ENGINE_PRECISIONS)
            raise ValueError(f"precision {self.precision!r} is not one of {allowed}")
        if not 0 <= self.opt_level <= 5:
            raise ValueError(f"opt_level must be in 0..5, got {self.opt_level}")
        if self.workspace_bytes is not None and self.workspace_bytes <= 0:
            raise ValueError(f"workspace_bytes must be > 0 or None, got {self.workspace_bytes}")
        if not self.profiles or any(not p for p in self.profiles):
            raise ValueError(f"{self.component}: an engine needs at least one non-empty profile")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["profiles"] = [[_profile_dict(p) for p in prof] for prof in self.profiles]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "engine key") -> EngineKey:
        return _parse(cls, d, where)

    def digest(self) -> str:
        """Hex sha256 of the canonical JSON (sorted keys, no whitespace) of the key."""
        text = json.dumps(
            {"key_version": KEY_VERSION, **self.to_dict()},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
        )
        return hashlib.sha256(text.encode("ascii")).hexdigest()

@dataclass(frozen=True)
class BuildRequest:
    """The user-level request an engine was built for (for rebuild hints and reports)."""

    durations: tuple[float, float, float]  # seconds per window: min / opt / max
    tracks: tuple[int, int, int]  # soundtracks per call: min / opt / max


@dataclass(frozen=True)
class EngineEntry:
    """One built plan: its file, its key (digest and fields) and what the build measured."""

    component: str
    file: str  # relative to the bundle root: engines/<component>.<digest[:16]>.plan
    sha256: str
    bytes: int
    key: str  # EngineKey.digest()
    key_fields: EngineKey
    request: BuildRequest
    device_memory_bytes: int  # ICudaEngine.device_memory_size_v2 (scratch at the profile max)
    build_seconds: float
    built_at: str  # ISO 8601, UTC
    log: str | None = None  # builder log beside the plan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["key_fields"] = self.key_fields.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> EngineEntry:
        return _parse(cls, d, where)


@dataclass(frozen=True)
class EngineIndex:
    """``engines/engines.json``: every engine of a bundle, at most one per (component,
    platform). Read with :func:`read_index`, write with :func:`write_index`."""

    engines: tuple[EngineEntry, ...] = ()
    schema_version: int = INDEX_SCHEMA

    def find(self, component: str, platform: Platform) -> EngineEntry | None:
        return next(
            (e for e in self.engines
             if e.component == component and e.key_fields.platform == platform),
            None,
        )  # fmt: skip

    def with_entry(self, entry: EngineEntry) -> EngineIndex:
        """A new index with ``entry`` replacing the one for its (component, platform)."""
        platform = entry.key_fields.platform
        kept = [
            e for e in self.engines
            if not (e.component == entry.component and e.key_fields.platform == platform)
        ]  # fmt: skip
        ordered = sorted([*kept, entry], key=lambda e: (e.component, e.file))
        return replace(self, engines=tuple(ordered))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "engines": [e.to_dict() for e in self.engines],
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = INDEX_FILE) -> EngineIndex:
        if not isinstance(d, dict) or set(d) != {"schema_version", "engines"}:
            raise EngineCacheError(
                f"{where}: expected an object with schema_version and engines; rebuild with "
                "v2a-export build-engines"
            )
        if d["schema_version"] != INDEX_SCHEMA:
            raise EngineCacheError(
                f"{where}: schema_version {d['schema_version']!r} is not supported (knows "
                f"{INDEX_SCHEMA}); rebuild the engines with this version of v2a-export"
            )
        if not isinstance(d["engines"], list):
            raise EngineCacheError(f"{where}: engines must be a list")
        entries = tuple(
            EngineEntry.from_dict(e, f"{where}: engines[{i}]") for i, e in enumerate(d["engines"])
        )
        return cls(engines=entries)


def _parse(cls: type, d: Any, where: str) -> Any:
    """The schema's one JSON reader (:func:`v2a_runtime.config.parse`), with its errors as
    :class:`EngineCacheError`."""
    try:
        return parse(cls, d, where)
    except BundleError as e:
        raise EngineCacheError(
            f"malformed engine entry: {e}; rebuild with v2a-export build-engines"
        ) from None


def _profile_dict(p: InputProfile) -> dict[str, Any]:
    return {"name": p.name, "min": list(p.min), "opt": list(p.opt), "max": list(p.max)}


def read_index(root: str | Path) -> EngineIndex:
    """The bundle's engines.json; an empty index when the bundle has none yet."""
    path = Path(root) / INDEX_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return EngineIndex()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineCacheError(f"{path}: cannot read engines.json: {e}") from e
    return EngineIndex.from_dict(data, str(path))


def write_index(root: str | Path, index: EngineIndex) -> Path:
    """Write ``root/engines/engines.json`` atomically (temp file + rename)."""
    path = Path(root) / INDEX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(index.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def engine_file(key: EngineKey) -> str:
    """Where a plan lives in the bundle: named by component and key, so two keys never collide."""
    return f"{ENGINES_DIR}/{key.component}.{key.digest()[:16]}.plan"


# --- stale detection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphIdentity:
    """What the bundle's manifest says about one component's ONNX graph."""

    file: str
    sha256: str
    precision: str
    external_data_sha256: str | None = None


@dataclass(frozen=True)
class Problem:
    component: str
    reason: str
    request: BuildRequest | None = None  # of the stale engine, to rebuild it the same way


def check_entry(
    root: Path,
    entry: EngineEntry | None,
    graph: GraphIdentity,
    platform: Platform,
    *,
    verify_file: bool = True,
) -> str | None:
    """Why ``entry`` cannot serve ``graph`` on ``platform`` (None: it can)."""
    if entry is None:
        return f"no engine for {platform.describe()}"
    k = entry.key_fields
    if entry.key != k.digest():
        return "its recorded key does not match its key fields (engines.json was edited)"
    if k.component != entry.component:
        return f"its key is for component {k.component!r}"
    if k.onnx_sha256 != graph.sha256 or k.external_data_sha256 != graph.external_data_sha256:
        return (
            f"it was built from a different {graph.file} (engine {k.onnx_sha256[:12]}…, bundle "
            f"{graph.sha256[:12]}…): the graph was re-exported"
        )
    if GRAPH_PRECISION[k.precision] != graph.precision:
        return f"it was built as {k.precision}, the graph is {graph.precision}"
    path = root / entry.file
    if not path.is_file():
        return f"its plan {entry.file} is missing"
    if verify_file:
        if path.stat().st_size != entry.bytes:
            return f"its plan {entry.file} has {path.stat().st_size} bytes, recorded {entry.bytes}"
        from ...bundle import sha256_file  # local: bundle imports backends at module level

        if sha256_file(path) != entry.sha256:
            return f"its plan {entry.file} was modified (sha256 mismatch)"
    return None


def select_engines(
    root: str | Path,
    graphs: dict[str, GraphIdentity],
    index: EngineIndex,
    platform: Platform,
    *,
    verify_files: bool = True,
) -> dict[str, EngineEntry]:
    """The engine of every component in ``graphs`` for ``platform``; StaleEngineError naming
    every missing or mismatched one, with the command that rebuilds them."""
    root = Path(root)
    found, problems = {}, []
    for name, graph in graphs.items():
        entry = index.find(name, platform)
        reason = check_entry(root, entry, graph, platform, verify_file=verify_files)
        if reason is None:
            found[name] = entry
        else:
            problems.append(Problem(name, reason, None if entry is None else entry.request))
    if problems:
        raise StaleEngineError(stale_message(root, platform, problems, total=len(graphs)))
    return found


def stale_message(root: Path, platform: Platform, problems: list[Problem], *, total: int) -> str:
    parts = "; ".join(f"{p.component}: {p.reason}" for p in problems)
    return (
        f"bundle {root}: TensorRT engines cannot be used on this machine "
        f"({platform.describe()}): {parts}. Rebuild with: "
        f"{rebuild_command(root, problems, total=total)}"
    )


def rebuild_command(root: Path, problems: list[Problem], *, total: int) -> str:
    """The ``v2a-export build-engines`` line that rebuilds exactly the problem components, with
    the duration and batch ranges of the engines being replaced when they agree."""
    cmd = ["v2a-export", "build-engines", str(root)]
    if len(problems) < total:
        cmd += ["--components", ",".join(p.component for p in problems)]
    requests = {p.request for p in problems if p.request is not None}
    if len(requests) == 1:
        r = next(iter(requests))
        cmd += [
            "--min-duration", f"{r.durations[0]:g}",
            "--opt-duration", f"{r.durations[1]:g}",
            "--max-duration", f"{r.durations[2]:g}",
            "--batch", ",".join(str(t) for t in r.tracks),
        ]  # fmt: skip
    return " ".join(cmd)


__all__ = [
    "DEFAULT_OPT_LEVEL",
    "ENGINES_DIR",
    "GRAPH_PRECISION",
    "INDEX_FILE",
    "KEY_VERSION",
    "BuildRequest",
    "EngineCacheError",
    "EngineEntry",
    "EngineIndex",
    "EngineKey",
    "GraphIdentity",
    "InputProfile",
    "Platform",
    "Problem",
    "StaleEngineError",
    "check_entry",
    "engine_file",
    "read_index",
    "rebuild_command",
    "select_engines",
    "stale_message",
    "write_index",
]
