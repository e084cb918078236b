"""The bundle: a directory that describes itself (docs/contract.md, "Bundle layout").

``load_bundle(dir)`` reads ``manifest.json`` into the schema's frozen dataclasses
(:mod:`v2a_runtime.config`), refuses schema versions it does not know, and checks that every
file exists with its declared size and sha256 (streamed, never read whole into memory).
:func:`check_io` compares a component's declared inputs and outputs with what a loaded backend
session actually has. ``write_manifest(dir, manifest)`` is the one writer; the exporter builds
a :class:`~v2a_runtime.config.Manifest` and calls it.

Every problem is a :class:`~v2a_runtime.config.BundleError` (a ValueError) whose one-line
message names the bundle, what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import MANIFEST, REBUILD, BundleError, ComponentSpec, FileSpec, Manifest, TensorInfo
from .config import validate as validate_manifest
from .media.files import atomic_output
from .named_sampler import digest

if TYPE_CHECKING:  # bundle.py is below the backends, which check their sessions with it
    from .backends.base import Session


@dataclass(frozen=True)
class Bundle:
    """A validated bundle directory. Build with :func:`load_bundle`."""

    root: Path
    manifest: Manifest

    def path(self, component: str) -> Path:
        try:
            return self.root / self.manifest.components[component].file
        except KeyError:
            raise BundleError(
                f"bundle {self.root} has no component {component!r}; "
                f"it has {', '.join(self.manifest.components)}"
            ) from None

    @property
    def tokenizer_path(self) -> Path | None:
        file = self.manifest.tokenizer.file
        return None if file is None else self.root / file


def load_bundle(root: str | Path, *, verify: bool = True) -> Bundle:
    """Read and validate the bundle at ``root``; ``verify`` checks sizes and sha256 of files."""
    root = Path(root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise BundleError(f"bundle {root} {what}; pass a bundle directory (--bundle DIR)")
    path = root / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(
            f"bundle {root} has no {MANIFEST}; it is not a v2a bundle ({REBUILD})"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"bundle {root}: cannot read {MANIFEST}: {e} ({REBUILD})") from e
    manifest = Manifest.from_dict(data, where=str(path))
    if verify:
        for name, spec in _files(manifest):
            _verify_file(root, name, spec)
        for name, entry in manifest.samplers.items():
            if entry.sha256 != digest(entry):
                raise BundleError(
                    f"bundle {root}: sampler {name!r} does not match its sha256; the manifest "
                    "was edited (re-run v2a-export tune-sampler on the bundle)"
                )
    return Bundle(root=root, manifest=manifest)


def write_manifest(root: str | Path, manifest: Manifest) -> Path:
    """Validate ``manifest`` and write ``root/manifest.json`` atomically (temp file + rename)."""
    validate_manifest(manifest)
    text = json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n"
    path = Path(root) / MANIFEST
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe_file(root: str | Path, file: str) -> FileSpec:
    """The :class:`FileSpec` (size, sha256) of ``root/file``, for writers of manifests."""
    path = Path(root) / file
    return FileSpec(file=file, sha256=sha256_file(path), bytes=path.stat().st_size)


def check_io(name: str, spec: ComponentSpec, session: Session) -> None:
    """BundleError if the session's inputs/outputs differ from the manifest's declaration.

    Names, order, dtypes and ranks must match. A symbolic size in the manifest (``"B"``) must be
    dynamic in the graph (the runtime feeds other sizes); a static size must equal the graph's
    static size, or meet a dynamic one (exporters cannot always infer every output size).
    """
    for kind, declared, actual in (
        ("inputs", spec.inputs, session.inputs),
        ("outputs", spec.outputs, session.outputs),
    ):
        want = [t.name for t in declared]
        have = [t.name for t in actual]
        if want != have:
            raise BundleError(
                f"{spec.file}: graph {kind} are {have}, the manifest declares {want} for "
                f"{name} ({REBUILD})"
            )
        for d, a in zip(declared, actual, strict=True):
            problem = _tensor_mismatch(d, a)
            if problem:
                raise BundleError(
                    f"{spec.file}: {name} {kind[:-1]} {d.name!r} {problem} ({REBUILD})"
                )


def _tensor_mismatch(declared: TensorInfo, actual: TensorInfo) -> str | None:
    if declared.dtype != actual.dtype:
        return f"has dtype {actual.dtype}, the manifest declares {declared.dtype}"
    if len(declared.shape) != len(actual.shape):
        return f"has shape {list(actual.shape)}, the manifest declares {list(declared.shape)}"
    for want, have in zip(declared.shape, actual.shape, strict=True):
        if isinstance(have, int) and want != have:
            return f"has shape {list(actual.shape)}, the manifest declares {list(declared.shape)}"
    return None


def _files(manifest: Manifest) -> list[tuple[str, FileSpec]]:
    out = []
    for name, c in manifest.components.items():
        out.append((name, FileSpec(c.file, c.sha256, c.bytes)))
        if c.external_data is not None:
            out.append((f"{name} external data", c.external_data))
    tok = manifest.tokenizer
    if tok.file is not None and tok.sha256 is not None:
        out.append(("tokenizer", FileSpec(tok.file, tok.sha256, -1)))
    return out


def _verify_file(root: Path, name: str, spec: FileSpec) -> None:
    path = root / spec.file
    if not path.is_file():
        raise BundleError(f"bundle {root}: {name} file {spec.file} is missing ({REBUILD})")
    size = path.stat().st_size
    if spec.bytes >= 0 and size != spec.bytes:
        raise BundleError(
            f"bundle {root}: {spec.file} has {size} bytes, the manifest says {spec.bytes}; "
            f"the file was modified or truncated ({REBUILD})"
        )
    try:
        actual = sha256_file(path)
    except OSError as e:
        raise BundleError(f"bundle {root}: cannot read {spec.file}: {e}") from e
    if actual != spec.sha256:
        raise BundleError(
            f"bundle {root}: sha256 mismatch for {spec.file} (manifest {spec.sha256[:12]}…, "
            f"file {actual[:12]}…); the file was modified or corrupted ({REBUILD})"
        )
