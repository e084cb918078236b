"""The schema: every fact a bundle states, defined once, as frozen dataclasses (DESIGN.md §10).

The runtime owns it and the torch side composes it (``v2a_export.models.configs`` builds its
model configs from :class:`VideoSpec` and :class:`~v2a_runtime.sequence.Rates`; the exporter
writes a :class:`Manifest`). What lives here:

- the names: the seven graph :data:`COMPONENTS`, the five weight files :data:`NETWORKS` and
  which network each graph wraps (:data:`NETWORK_OF`), the graph :data:`PRECISIONS` and the
  engine :data:`ENGINE_PRECISIONS`, tensor :data:`DTYPES`;
- :class:`TensorInfo`: name, dtype and symbolic shape of one graph input or output;
- the sections of ``manifest.json`` (:class:`Manifest`): model, audio, video, sequence,
  tokenizer, the default sampler (:data:`DEFAULT_SAMPLER`, MMAudio's guidance weight
  included), components; each fact once (the latent rate and the shortest window are
  derived, not stored);
- :func:`parse`, the one JSON → frozen-dataclass reader, checked against the annotations.

Every problem with a manifest is a :class:`BundleError` (a ValueError) whose one-line message
names the field, what is wrong and what to do.
"""

from __future__ import annotations

import copy
import hashlib
import types
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from . import named_sampler, sampling
from .named_sampler import NamedSampler
from .sequence import TEXT_TOKENS, Rates

SCHEMA_VERSION = 2
KNOWN_SCHEMAS = (1, 2)  # schema 1 (stored the derived latent rate and durations) is migrated
MANIFEST = "manifest.json"
REBUILD = "re-export the bundle or restore it from its source"

# The seven exported graphs, in contract order (docs/contract.md).
COMPONENTS = (
    "clip_visual",
    "sync_visual",
    "text",
    "conditioner",
    "denoiser",
    "vae_decoder",
    "vocoder",
)
# The five networks (one weight file each); this order seeds random weights (network k gets
# seed + k), so it is part of every random-weight bundle's identity.
NETWORKS = ("clip", "synchformer", "flow", "vae", "vocoder")
NETWORK_OF = {
    "clip_visual": "clip",
    "sync_visual": "synchformer",
    "text": "clip",
    "conditioner": "flow",
    "denoiser": "flow",
    "vae_decoder": "vae",
    "vocoder": "vocoder",
}
FLOAT_PRECISIONS = ("fp32", "fp16", "bf16")  # a graph's float compute; fp32 is the reference
PRECISIONS = (*FLOAT_PRECISIONS, "int8")  # int8: MatMul/Conv weights int8, the rest fp32
ENGINE_PRECISIONS = ("fp32", "tf32", "fp16", "bf16")  # tf32: fp32 graphs with TF32 matmuls
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "int8", "bool")
WEIGHTS = ("random", "trained", "official")

Dim = str | int  # a glossary symbol ("B", "L", ...) or a static size


class BundleError(ValueError):
    """The bundle cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class TensorInfo:
    """Name, numpy dtype name and symbolic shape of one graph input or output."""

    name: str
    dtype: str  # numpy name: "float32", "int64", "uint8", ...
    shape: tuple[Dim, ...]

    def concrete(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The shape with every symbol replaced by its size in ``sizes``."""
        try:
            return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)
        except KeyError as e:
            raise ValueError(f"{self.name}: no size for dim {e.args[0]!r} in {dict(sizes)}") from e


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
    precision: str = "fp32"  # one of PRECISIONS
    opset: int | None = None
    fp32_nodes: tuple[str, ...] | None = None  # nodes kept in fp32 by the mixed-precision pass
    external_data: FileSpec | None = None  # <component>.onnx.data for graphs over 2 GB

    def batched_inputs(self) -> tuple[str, ...]:
        """Inputs with a batch axis (``"B"`` first): one row per batch item; the others (RoPE
        tables, the sync index) are shared by every row."""
        return tuple(t.name for t in self.inputs if t.shape[:1] == ("B",))


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "mmaudio"
    variant: str  # a registered variant of the exporter, or a custom one (then ``config``)
    weights: str  # one of WEIGHTS
    weights_note: str = ""
    model_id: int = 0  # 0..255, the variant's number (the payload carries Manifest.mark_id)
    # The network architecture of a custom variant, beyond what the sections below state
    # (the exporter composes its model config from both); None for a registered variant.
    config: dict[str, Any] | None = None


@dataclass(frozen=True)
class AudioSpec:
    sample_rate: int
    hop_length: int
    n_mels: int
    latent_channels: int  # C
    latent_mean: tuple[float, ...]  # (C,) un-normalises the sampled latent
    latent_std: tuple[float, ...]  # (C,)

    @property
    def latent_rate(self) -> float:
        """Latent frames per second (:attr:`Rates.latent_rate`)."""
        return Rates(self.sample_rate, self.hop_length).latent_rate


@dataclass(frozen=True)
class VideoSpec:
    """The two frame streams the encoders read (MMAudio's by default)."""

    clip_fps: float = 8.0
    clip_size: int = 384  # Hc: square squash resize
    sync_fps: float = 25.0
    sync_size: int = 224  # Hs: short side resize + centre crop
    sync_alignment: str = "nearest"  # which sync token a latent frame reads (sequence.py)


@dataclass(frozen=True)
class SequenceSpec:
    """Window lengths; the shortest window (one sync segment) follows from the video rates."""

    max_duration: float  # longest single window the graphs are built for
    trained_duration: float  # window length used for long videos


@dataclass(frozen=True)
class TokenizerSpec:
    """``file`` None means the CLIP vocabulary packaged with v2a_runtime."""

    file: str | None = None
    context_length: int = TEXT_TOKENS
    sha256: str | None = None


@dataclass(frozen=True)
class SamplerSpec:
    """The bundle's default sampler (the CLI's defaults for --solver/--steps/--grid/--cfg).
    ``name``: one of the manifest's named ``samplers`` (v2a-export tune-sampler), the default
    instead of solver/steps/grid when set."""

    solver: str = sampling.DEFAULT_SOLVER
    steps: int = sampling.DEFAULT_STEPS
    grid: str = sampling.DEFAULT_GRID
    cfg: float = 4.5  # classifier-free guidance weight w: MMAudio's
    name: str | None = None


DEFAULT_SAMPLER = SamplerSpec()


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` as frozen dataclasses; JSON via :meth:`from_dict` / :meth:`to_dict`."""

    model: ModelSpec
    audio: AudioSpec
    video: VideoSpec
    sequence: SequenceSpec
    components: dict[str, ComponentSpec]
    tokenizer: TokenizerSpec = TokenizerSpec()
    sampler: SamplerSpec = DEFAULT_SAMPLER
    samplers: dict[str, NamedSampler] = field(default_factory=dict)  # tuned, by name
    versions: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def mark_id(self) -> int:
        """The 8-bit model id the watermark payload carries: a fingerprint of every
        component's sha256, so bundles with different weights (the shipped model and a
        random-weight export of the same variant) carry different ids (255 times in 256);
        ``model.model_id`` names the variant and is not in the payload."""
        h = hashlib.blake2b(digest_size=1, person=b"v2a-mark-id")
        for name in sorted(self.components):
            h.update(f"{name}={self.components[name].sha256};".encode())
        return h.digest()[0]

    @property
    def rates(self) -> Rates:
        """The rates that turn a window's duration into every sequence length."""
        a, v = self.audio, self.video
        return Rates(a.sample_rate, a.hop_length, v.clip_fps, v.sync_fps, v.sync_alignment)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        order = ("schema_version", "model", "audio", "video", "sequence", "tokenizer", "sampler",
                 "samplers", "components", "versions", "parity")  # fmt: skip
        # Written only when used, so manifests without named samplers stay as they were.
        if d["sampler"]["name"] is None:
            del d["sampler"]["name"]
        return {k: d[k] for k in order if k != "samplers" or d[k]}

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
        if version == 1:
            d = _from_schema_1(d, where)
        manifest = parse(cls, d, where)
        validate(manifest, where)
        return manifest


def check_components(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` if each is one of :data:`COMPONENTS` and there is at least one; ValueError
    naming the unknown ones and the allowed set otherwise."""
    unknown = [c for c in names if c not in COMPONENTS]
    if unknown or not names:
        raise ValueError(
            f"unknown component(s) {unknown or '(none given)'}; choose from {', '.join(COMPONENTS)}"
        )
    return tuple(names)


def validate(m: Manifest, where: str = MANIFEST) -> None:
    """Checks the JSON types cannot express; raises BundleError naming the field."""
    if m.schema_version != SCHEMA_VERSION:
        raise BundleError(f"{where}: schema_version {m.schema_version} is not {SCHEMA_VERSION}")
    missing = [c for c in COMPONENTS if c not in m.components]
    unknown = [c for c in m.components if c not in COMPONENTS]
    if missing or unknown:
        raise BundleError(
            f"{where}: components missing {missing} / unknown {unknown}; a bundle has exactly "
            f"{', '.join(COMPONENTS)} ({REBUILD})"
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
    shortest = m.rates.min_duration
    if not 0 < shortest <= m.sequence.trained_duration <= m.sequence.max_duration:
        raise BundleError(
            f"{where}: sequence durations must satisfy one sync segment ({shortest:g} s) <= "
            f"trained_duration <= max_duration, got {m.sequence}"
        )
    for name, entry in m.samplers.items():
        try:
            named_sampler.check(name, entry)
        except ValueError as e:
            raise BundleError(f"{where}: samplers: {e}") from None
    if m.sampler.name is not None and m.sampler.name not in m.samplers:
        raise BundleError(
            f"{where}: sampler.name {m.sampler.name!r} is not one of the manifest's samplers "
            f"({', '.join(m.samplers) or 'none'})"
        )
    for name, comp in m.components.items():
        if comp.precision not in PRECISIONS:
            raise BundleError(
                f"{where}: components.{name}.precision {comp.precision!r} is not one of "
                f"{', '.join(PRECISIONS)}"
            )
        for t in (*comp.inputs, *comp.outputs):
            if t.dtype not in DTYPES:
                raise BundleError(
                    f"{where}: components.{name}: tensor {t.name!r} has dtype "
                    f"{t.dtype!r}; known: {', '.join(DTYPES)}"
                )


def _from_schema_1(d: dict, where: str) -> dict:
    """A schema 1 manifest as schema 2: it also stored facts that follow from others (the
    latent rate, the shortest window, the text length); they must agree, then they go."""
    d = copy.deepcopy(d)
    audio, sequence = d.get("audio"), d.get("sequence")
    if not isinstance(audio, dict) or not isinstance(sequence, dict):
        raise BundleError(f"{where}: audio and sequence must be objects")
    derived = {
        "audio.latent_rate": (audio.pop("latent_rate", None),
                              _ratio(audio.get("sample_rate"), audio.get("hop_length"))),
        "sequence.min_duration": (sequence.pop("min_duration", None),
                                  _ratio(16, (d.get("video") or {}).get("sync_fps"), 1)),
        "sequence.text_tokens": (sequence.pop("text_tokens", TEXT_TOKENS),
                                 (d.get("tokenizer") or {}).get("context_length", TEXT_TOKENS)),
    }  # fmt: skip
    for key, (stored, computed) in derived.items():
        if stored is not None and computed is not None and abs(stored - computed) > 1e-6:
            raise BundleError(f"{where}: {key} is {stored}, but the other fields give {computed}")
    d["schema_version"] = SCHEMA_VERSION
    return d


def _ratio(a, b, halves: int = 2) -> float | None:
    """a / b / halves when both are numbers (the latent rate: sample_rate / hop / 2)."""
    ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return a / b / halves if ok and b else None


# --- JSON -> frozen dataclasses, checked against the field annotations -----------------------


def parse(cls: type, d: Any, where: str) -> Any:
    """``cls`` (a dataclass) from JSON values: nested dataclasses, tuples from lists, unions,
    ints accepted for floats; unknown or missing fields are a BundleError naming ``where``."""
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
    values = {k: _coerce(hints[k], v, _child(where, k)) for k, v in d.items()}
    try:
        return cls(**values)
    except ValueError as e:  # a dataclass's own __post_init__ check
        raise BundleError(f"{where}: {e}") from e


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
        return parse(tp, v, where)
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


__all__ = [
    "COMPONENTS",
    "DEFAULT_SAMPLER",
    "DTYPES",
    "ENGINE_PRECISIONS",
    "KNOWN_SCHEMAS",
    "MANIFEST",
    "NETWORKS",
    "NETWORK_OF",
    "FLOAT_PRECISIONS",
    "PRECISIONS",
    "REBUILD",
    "SCHEMA_VERSION",
    "WEIGHTS",
    "AudioSpec",
    "BundleError",
    "ComponentSpec",
    "Dim",
    "FileSpec",
    "Manifest",
    "ModelSpec",
    "NamedSampler",
    "SamplerSpec",
    "SequenceSpec",
    "TensorInfo",
    "TokenizerSpec",
    "VideoSpec",
    "check_components",
    "parse",
    "validate",
]
