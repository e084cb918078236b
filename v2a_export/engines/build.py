"""``build-engines`` as a library call: plan which engines are stale, build those, record them.

:func:`prepare` is pure (the bundle, the options and a platform in; one :class:`Planned` verdict
per component out), so everything up to the first TensorRT call is tested without TensorRT.
:func:`build_engines` then builds the planned engines one by one; after each it writes the plan
(``engines/<component>.<key16>.plan``, temp file + rename), its builder log and the updated
``engines/engines.json``, and removes the plan it replaced — an interrupted run keeps every
engine finished before the interruption, and never leaves an entry without its file.

The library is silent: progress goes to ``callback`` (one :class:`BuildEvent` before and after
each engine), messages to ``logging``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from v2a_runtime.backends.tensorrt.cache import (
    DEFAULT_OPT_LEVEL,
    EngineEntry,
    InputProfile,
    Platform,
    engine_file,
    read_index,
    write_index,
)
from v2a_runtime.bundle import Bundle, sha256_file
from v2a_runtime.config import COMPONENTS
from v2a_runtime.media.files import atomic_output

from v2a_export.engines.cache import Planned, engine_precision, plan_builds, requested_keys
from v2a_export.engines.profiles import ProfileRequest, engine_profiles


@dataclass(frozen=True)
class BuildOptions:
    """What ``v2a-export build-engines`` was asked for. ``request`` None = the bundle's default
    durations and 1/1/4 tracks; ``precision`` None = each graph's own precision."""

    request: ProfileRequest | None = None
    precision: str | None = None
    components: tuple[str, ...] = COMPONENTS
    opt_level: int = DEFAULT_OPT_LEVEL
    workspace_bytes: int | None = None
    timing_cache: Path | None = None
    force: bool = False
    verbose: bool = False  # keep TensorRT's VERBOSE messages in the builder logs

    def __post_init__(self) -> None:
        unknown = [c for c in self.components if c not in COMPONENTS]
        if unknown or not self.components:
            given = ", ".join(unknown) or "(none)"
            raise ValueError(f"--components {given}: choose from {', '.join(COMPONENTS)}")
        if not 0 <= self.opt_level <= 5:
            raise ValueError(f"--opt-level must be 0..5, got {self.opt_level}")
        if self.workspace_bytes is not None and self.workspace_bytes <= 0:
            raise ValueError(f"--workspace must be > 0 GB, got {self.workspace_bytes / 2**30:g}")


@dataclass(frozen=True)
class BuildEvent:
    component: str
    index: int  # 1-based among the engines this run builds
    total: int
    done: bool
    entry: EngineEntry | None = None  # when done
    warnings: int = 0


@dataclass(frozen=True)
class Prepared:
    request: ProfileRequest
    planned: tuple[Planned, ...]

    @property
    def to_build(self) -> tuple[Planned, ...]:
        return tuple(p for p in self.planned if p.build)


@dataclass(frozen=True)
class Resolved:
    """The platform-independent part of a build: profiles and engine precisions."""

    request: ProfileRequest
    profiles: dict[str, tuple[InputProfile, ...]]
    precisions: dict[str, str]


def resolve(bundle: Bundle, options: BuildOptions) -> Resolved:
    """Profiles and precisions of the requested components; ValueError for a request the bundle
    cannot serve (pure: runs before any machine check)."""
    m = bundle.manifest
    request = options.request or ProfileRequest.default(m)
    profiles = engine_profiles(m, request, options.components)
    precisions = {c: engine_precision(m, c, options.precision) for c in options.components}
    return Resolved(request, profiles, precisions)


def prepare(
    bundle: Bundle, options: BuildOptions, platform: Platform, *, verify_files: bool = True
) -> Prepared:
    """Requested keys for ``platform`` and the verdict for each component (pure)."""
    m = bundle.manifest
    resolved = resolve(bundle, options)
    request, profiles, precisions = resolved.request, resolved.profiles, resolved.precisions
    keys = requested_keys(
        m,
        profiles,
        precisions,
        platform,
        opt_level=options.opt_level,
        workspace_bytes=options.workspace_bytes,
    )
    planned = plan_builds(
        bundle.root, m, read_index(bundle.root), keys, force=options.force,
        verify_files=verify_files,
    )  # fmt: skip
    return Prepared(request, tuple(planned))


def build_engines(
    bundle: Bundle,
    prepared: Prepared,
    trt,
    options: BuildOptions,
    *,
    callback: Callable[[BuildEvent], None] | None = None,
) -> list[EngineEntry]:
    """Build every planned engine with the ``tensorrt`` module ``trt``; return the new entries.
    Raises :class:`v2a_export.engines.builder.BuildError` on the first failing build (the
    engines built before it are recorded)."""
    from v2a_export.engines.builder import build_engine

    emit = callback or (lambda _e: None)
    root = Path(bundle.root)
    todo = prepared.to_build
    built = []
    for i, item in enumerate(todo, start=1):
        emit(BuildEvent(item.component, i, len(todo), done=False))
        onnx = bundle.path(item.component)
        result = build_engine(
            trt, onnx, item.key, timing_cache=options.timing_cache, verbose=options.verbose
        )
        rel = engine_file(item.key)
        _write_atomic(root / rel, result.plan)
        log_rel = rel.removesuffix(".plan") + ".log"
        _write_atomic(root / log_rel, ("\n".join(result.log) + "\n").encode())
        entry = EngineEntry(
            component=item.component,
            file=rel,
            sha256=sha256_file(root / rel),
            bytes=len(result.plan),
            key=item.key.digest(),
            key_fields=item.key,
            request=prepared.request.build_request(),
            device_memory_bytes=result.device_memory_bytes,
            build_seconds=round(result.seconds, 3),
            built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            log=log_rel,
        )
        index = read_index(root)  # re-read: never drop entries written meanwhile
        write_index(root, index.with_entry(entry))
        old = item.existing
        if old is not None and old.file != rel:
            for stale in (old.file, old.log):
                if stale:
                    (root / stale).unlink(missing_ok=True)
        built.append(entry)
        emit(BuildEvent(item.component, i, len(todo), True, entry, result.warnings))
    return built


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


__all__ = [
    "BuildEvent",
    "BuildOptions",
    "Prepared",
    "Resolved",
    "build_engines",
    "prepare",
    "resolve",
]
