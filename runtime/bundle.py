"""The bundle: a directory that describes itself (docs/contract.md, "Bundle layout").

``load_bundle(dir)`` reads ``manifest.json`` into frozen dataclasses, refuses schema versions it
does not know, and checks that every file exists with its declared size and sha256 (streamed,
never read whole into memory). :func:`check_io` compares a component's declared inputs and
outputs with what a loaded backend session actually has. ``write_manifest(dir, manifest)`` is
the one writer; the exporter builds a :class:`Manifest` and calls it.

Every problem is a :class:`BundleError` (a ValueError) whose one-line message names the bundle,
what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from . import sampling
from .backends.base import Session, TensorInfo

SCHEMA_VERSION = 1
KNOWN_SCHEMAS = (1,)
MANIFEST = "manifest.json"
COMPONENTS = (
    "clip_visual",
    "sync_visual",
    "text",
    "conditioner",
    "denoiser",
    "vae_decoder",
    "vocoder",
)
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "int8", "bool")
WEIGHTS = ("random", "trained", "official")
_REBUILD = "re-export the bundle or restore it from its source"


class BundleError(ValueError):
    """The bundle cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class FileSpec:
    """A file inside the bundle, relative to its root, with its size and sha256."""

    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ComponentSpec:
    """One exported graph: its file, declared I/O (contract names) and precision."""

    file: str
    sha256: str
    bytes: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    precision: str = "fp32"
    opset: int | None = None
    fp32_nodes: tuple[str, ...] | None = None  # nodes kept in fp32 by the mixed-precision pass
    external_data: FileSpec | None = None  # <component>.onnx.data for graphs over 2 GB


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "mmaudio"
    variant: str  # a name from v2a_export.models.configs.VARIANTS, or a custom one
    weights: str  # one of WEIGHTS
    weights_note: str = ""
    model_id: int = 0  # 0..255, carried in the watermark payload


@dataclass(frozen=True)
class AudioSpec:
    sample_rate: int
    hop_length: int
    n_mels: int
    latent_channels: int  # C
    latent_rate: float  # latent frames per second (sample_rate / hop / 2)
    latent_mean: tuple[float, ...]  # (C,) un-normalises the sampled latent
    latent_std: tuple[float, ...]  # (C,)


@dataclass(frozen=True)
class VideoSpec:
    clip_fps: float
    clip_size: int  # Hc: square squash resize
    sync_fps: float
    sync_size: int  # Hs: short side resize + centre crop


@dataclass(frozen=True)
class SequenceSpec:
    min_duration: float  # one sync segment (0.64 s)
    max_duration: float  # longest single window the graphs are built for
    trained_duration: float  # window length used for long videos
    text_tokens: int = 77


@dataclass(frozen=True)
class TokenizerSpec:
    """``file`` None means the CLIP vocabulary packaged with v2a_runtime."""

    file: str | None = None
    context_length: int = 77
    sha256: str | None = None


@dataclass(frozen=True)
class SamplerSpec:
    """The bundle's default sampler (the CLI's defaults for --solver/--steps/--grid/--cfg);
    omitted fields take v2a_runtime.sampling's measured defaults."""

    solver: str = sampling.DEFAULT_SOLVER
    steps: int = sampling.DEFAULT_STEPS
    grid: str = sampling.DEFAULT_GRID
    cfg: float = 4.5  # MMAudio's guidance weight


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` as frozen dataclasses; JSON via :meth:`from_dict` / :meth:`to_dict`."""

    model: ModelSpec
    audio: AudioSpec
    video: VideoSpec
    sequence: SequenceSpec
    components: dict[str, ComponentSpec]
    tokenizer: TokenizerSpec = TokenizerSpec()
    sampler: SamplerSpec = SamplerSpec()
    versions: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        order = (
            "schema_version",
            "model",
            "audio",
            "video",
            "sequence",
            "tokenizer",
            "sampler",
            "components",
            "versions",
            "parity",
        )
        return {k: d[k] for k in order}

    @classmethod
    def from_dict(cls, d: Any, *, where: str = MANIFEST) -> Manifest:
        if not isinstance(d, dict):
            raise BundleError(f"{where}: expected a JSON object, got {type(d).__name__}")
        version = d.get("schema_version")
        if version not in KNOWN_SCHEMAS:
            raise BundleError(
                f"{where}: schema_version {version!r} is not supported by this v2a_runtime "
                f"(knows {', '.join(map(str, KNOWN_SCHEMAS))}); upgrade v2a-export or "
                "re-export the bundle with this version"
            )
        manifest = _parse(cls, d, where)
        _validate(manifest, where)
        return manifest


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
            f"bundle {root} has no {MANIFEST}; it is not a v2a bundle ({_REBUILD})"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"bundle {root}: cannot read {MANIFEST}: {e} ({_REBUILD})") from e
    manifest = Manifest.from_dict(data, where=str(path))
    if verify:
        for name, spec in _files(manifest):
            _verify_file(root, name, spec)
    return Bundle(root=root, manifest=manifest)


def write_manifest(root: str | Path, manifest: Manifest) -> Path:
    """Validate ``manifest`` and write ``root/manifest.json`` atomically (temp file + rename)."""
    root = Path(root)
    _validate(manifest, MANIFEST)
    text = json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n"
    path = root / MANIFEST
    tmp = root / f".{MANIFEST}.{os.getpid()}.tmp"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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
                f"{name} ({_REBUILD})"
            )
        for d, a in zip(declared, actual, strict=True):
            problem = _tensor_mismatch(d, a)
            if problem:
                raise BundleError(
                    f"{spec.file}: {name} {kind[:-1]} {d.name!r} {problem} ({_REBUILD})"
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
        raise BundleError(f"bundle {root}: {name} file {spec.file} is missing ({_REBUILD})")
    size = path.stat().st_size
    if spec.bytes >= 0 and size != spec.bytes:
        raise BundleError(
            f"bundle {root}: {spec.file} has {size} bytes, the manifest says {spec.bytes}; "
            f"the file was modified or truncated ({_REBUILD})"
        )
    try:
        actual = sha256_file(path)
    except OSError as e:
        raise BundleError(f"bundle {root}: cannot read {spec.file}: {e}") from e
    if actual != spec.sha256:
        raise BundleError(
            f"bundle {root}: sha256 mismatch for {spec.file} (manifest {spec.sha256[:12]}…, "
            f"file {actual[:12]}…); the file was modified or corrupted ({_REBUILD})"
        )


def _validate(m: Manifest, where: str) -> None:
    """Checks the JSON types cannot express; raises BundleError naming the field."""
    if m.schema_version not in KNOWN_SCHEMAS:
        raise BundleError(
            f"{where}: schema_version {m.schema_version} is not one of {KNOWN_SCHEMAS}"
        )
    missing = [c for c in COMPONENTS if c not in m.components]
    unknown = [c for c in m.components if c not in COMPONENTS]
    if missing or unknown:
        raise BundleError(
            f"{where}: components missing {missing} / unknown {unknown}; a bundle has exactly "
            f"{', '.join(COMPONENTS)} ({_REBUILD})"
        )
    if m.model.weights not in WEIGHTS:
        raise BundleError(f"{where}: model.weights {m.model.weights!r} is not one of {WEIGHTS}")
    if not 0 <= m.model.model_id <= 255:
        raise BundleError(f"{where}: model.model_id {m.model.model_id} is outside 0..255")
    c = m.audio.latent_channels
    for key in ("latent_mean", "latent_std"):
        n = len(getattr(m.audio, key))
        if n != c:
            raise BundleError(f"{where}: audio.{key} has {n} values, latent_channels is {c}")
    if not 0 < m.sequence.min_duration <= m.sequence.trained_duration <= m.sequence.max_duration:
        raise BundleError(
            f"{where}: sequence durations must satisfy 0 < min_duration <= trained_duration "
            f"<= max_duration, got {m.sequence}"
        )
    for name, comp in m.components.items():
        for t in (*comp.inputs, *comp.outputs):
            if t.dtype not in DTYPES:
                raise BundleError(
                    f"{where}: components.{name}: tensor {t.name!r} has dtype "
                    f"{t.dtype!r}; known: {', '.join(DTYPES)}"
                )


# --- JSON -> frozen dataclasses, checked against the field annotations -----------------------


def _parse(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise BundleError(f"{where}: expected an object, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise BundleError(f"{where}: unknown fields {unknown}; known: {sorted(known)}")
    missing = [
        n
        for n, f in known.items()
        if n not in d and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise BundleError(f"{where}: missing fields {missing}")
    hints = get_type_hints(cls)
    return cls(**{k: _coerce(hints[k], v, _child(where, k)) for k, v in d.items()})


def _child(where: str, key: str) -> str:
    """``manifest.json`` + ``audio`` -> ``manifest.json: audio``; then ``...: audio.n_mels``."""
    return f"{where}.{key}" if ": " in where else f"{where}: {key}"


def _coerce(tp: Any, v: Any, where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return v
    if origin in (Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, v, where)
            except BundleError as e:
                errors.append(str(e))
        raise BundleError(errors[-1] if len(errors) == 1 else f"{where}: unexpected value {v!r}")
    if is_dataclass(tp):
        return _parse(tp, v, where)
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise BundleError(f"{where}: expected a list, got {type(v).__name__}")
        item = args[0]
        return tuple(_coerce(item, x, f"{where}[{i}]") for i, x in enumerate(v))
    if origin is dict:
        if not isinstance(v, dict):
            raise BundleError(f"{where}: expected an object, got {type(v).__name__}")
        return {k: _coerce(args[1], x, _child(where, k)) for k, x in v.items()}
    if tp is float and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if tp in (int, str, bool) and isinstance(v, tp) and not (tp is int and isinstance(v, bool)):
        return v
    raise BundleError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {v!r}")
