"""Write a Triton model repository for a bundle (``v2a-export triton``; no torch needed).

Layout (one version directory per model; every model is self-contained, so the repository can be
copied to object storage, where Triton fetches each model's directory on its own)::

    REPO/
      v2a_repository.json          what was written, from which bundle, with which options
      v2a/config.pbtxt             the BLS model: one whole request (max_batch_size 0)
      v2a/<V>/model.py             imports v2a_runtime.serve.v2a_model
      v2a/<V>/bundle/manifest.json (+ the tokenizer file when the bundle has its own)
      <network>/config.pbtxt       one per component of the bundle (bundle.COMPONENTS)
      <network>/<V>/model.py       imports v2a_runtime.serve.network_model
      <network>/<V>/bundle/        manifest.json + that component's graph (+ TensorRT engines)

A network whose every input and output is batched on the contract's ``B`` axis (text, denoiser,
VAE decoder, vocoder) gets ``max_batch_size`` and a dynamic batcher; an input without ``B``
(the denoiser's RoPE tables) travels with a batch axis and must repeat its one value on it.
Inputs are ``allow_ragged_batch``: the batcher gathers requests whatever their sequence
lengths and the model runs one backend call per shape bucket (requests whose non-batch shapes
and unbatched values agree). The encoders (batch axes ``F``/``S`` that Triton would cap) and
the conditioner (outputs ``[cond; uncond]``) run one request per call.

Every config carries the sha256 of its version's ``manifest.json``; each model checks it, and
the manifest's sha256 of every file it loads, before it loads anything (:mod:`.loading`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import __version__
from ..backends import BACKENDS
from ..bundle import Bundle, load_bundle, sha256_file
from ..config import COMPONENTS, MANIFEST, ComponentSpec, TensorInfo
from ..sequence import sequence_lengths
from .pbtxt import Token, render

REPOSITORY_FILE = "v2a_repository.json"
BUNDLE_DIR = "bundle"  # inside each version directory
BLS_MODEL = "v2a"
ENGINES_INDEX = "engines/engines.json"
TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}


class RepositoryError(ValueError):
    """The repository cannot be written (or read); one line that says what to do."""


@dataclass(frozen=True)
class RepositoryOptions:
    """How the repository serves the bundle (the ``v2a-export triton`` options)."""

    backend: str = "cpu"  # runtime backend of the network models: cpu | cuda | tensorrt
    instances: int = 1  # instances of each network model (per GPU for cuda/tensorrt)
    concurrency: int = 4  # instances of the v2a model = requests in flight at once
    max_batch: int = 16  # rows per execution of a batched network (2 per track with CFG)
    max_queue_delay_us: int = 1000  # how long the batcher waits for more rows
    max_duration: float = 60.0  # longest span of video one request may ask for (seconds)
    max_tracks: int = 4  # most soundtracks one request may ask for
    threads: int | None = None  # CPU threads per onnxruntime session (None: all cores)
    warmup_duration: float | None = None  # seconds of zeros each network runs at load
    # (None: the bundle's trained window; 0: no warm-up)
    version: int = 1  # the version directory the models are written to

    def check(self) -> None:
        """ValueError naming the first bad option and what is accepted."""
        if self.backend not in BACKENDS:
            raise RepositoryError(f"backend {self.backend!r}: choose from {', '.join(BACKENDS)}")
        for name in ("instances", "concurrency", "max_batch", "max_tracks", "version"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RepositoryError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.max_queue_delay_us, int) or self.max_queue_delay_us < 0:
            raise RepositoryError(
                f"max_queue_delay_us must be an integer >= 0, got {self.max_queue_delay_us!r}"
            )
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise RepositoryError(f"threads must be an integer >= 1, got {self.threads!r}")
        if not self.max_duration > 0:
            raise RepositoryError(f"max_duration must be > 0 seconds, got {self.max_duration!r}")
        if self.warmup_duration is not None and not self.warmup_duration >= 0:
            raise RepositoryError(
                f"warmup_duration must be >= 0 seconds, got {self.warmup_duration!r}"
            )


@dataclass(frozen=True)
class BatchLayout:
    """How a batched network's tensors map onto Triton's batch axis."""

    batched: tuple[str, ...]  # inputs whose axis 0 is the contract's B
    unbatched: tuple[str, ...]  # inputs without B: sent with a batch axis, one value repeated


def batch_layout(spec: ComponentSpec) -> BatchLayout | None:
    """The layout when every output and every input that has ``B`` has it first, else None."""
    if not all(t.shape and t.shape[0] == "B" for t in spec.outputs):
        return None
    batched, unbatched = [], []
    for t in spec.inputs:
        if t.shape and t.shape[0] == "B":
            batched.append(t.name)
        elif "B" in t.shape:
            return None
        else:
            unbatched.append(t.name)
    return BatchLayout(tuple(batched), tuple(unbatched)) if batched else None


def write_repository(
    bundle_dir: str | Path,
    out: str | Path,
    options: RepositoryOptions = RepositoryOptions(),  # noqa: B008 (frozen)
    *,
    overwrite: bool = False,
) -> Path:
    """Write the repository for ``bundle_dir`` at ``out`` (atomically: built beside it, then
    renamed). The bundle's files are checked against their sha256 first."""
    options.check()
    bundle = load_bundle(bundle_dir)
    if options.backend == "tensorrt" and not (bundle.root / ENGINES_INDEX).is_file():
        raise RepositoryError(
            f"bundle {bundle.root} has no TensorRT engines ({ENGINES_INDEX}); build them with "
            f"v2a-export build-engines {bundle.root} on the serving GPU, or use --backend cuda"
        )
    out = Path(out)
    if out.exists() and not overwrite:
        raise RepositoryError(f"{out} exists; pass --force to replace it")
    if not out.parent.is_dir():
        raise RepositoryError(f"{out.parent} is not a directory")
    tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
    old = out.parent / f".{out.name}.{secrets.token_hex(4)}.old"
    try:
        tmp.mkdir()
        manifest_sha = sha256_file(bundle.root / MANIFEST)
        models = {}
        for name in COMPONENTS:
            models[name] = _write_network(tmp, bundle, name, options, manifest_sha)
        models[BLS_MODEL] = _write_bls(tmp, bundle, options, manifest_sha, models)
        record = {
            "written_by": f"v2a_runtime {__version__}",
            "bundle": str(bundle.root.resolve()),
            "variant": bundle.manifest.model.variant,
            "manifest_sha256": manifest_sha,
            "options": asdict(options),
            "models": models,
        }
        (tmp / REPOSITORY_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out


# --- one model each --------------------------------------------------------------------------


def _write_network(
    repo: Path, bundle: Bundle, name: str, options: RepositoryOptions, manifest_sha: str
) -> dict:
    spec = bundle.manifest.components[name]
    layout = batch_layout(spec)
    files = [spec.file] + ([spec.external_data.file] if spec.external_data else [])
    max_batch = options.max_batch if layout is not None else 0
    if options.backend == "tensorrt":
        plans, rows = _engines(bundle, name, layout)
        files += [ENGINES_INDEX, *plans]
        max_batch = min(max_batch, rows)  # a merged batch must fit the engines' profiles
    version_dir = _version_dir(repo, name, options, bundle, files)
    (version_dir / "model.py").write_text(_shim(name, "network_model"))
    config = {
        "name": name,
        "backend": "python",
        "max_batch_size": max_batch,
        "version_policy": {"latest": {"num_versions": 1}},
        "input": [_tensor(t, layout, is_input=True) for t in spec.inputs],
        "output": [_tensor(t, layout, is_input=False) for t in spec.outputs],
        "dynamic_batching": (
            {"max_queue_delay_microseconds": options.max_queue_delay_us} if layout else None
        ),
        "instance_group": [{"count": options.instances, "kind": Token(_kind(options.backend))}],
        "model_warmup": _warmup(bundle, spec, layout, options),
        "parameters": _parameters(
            {
                "v2a.component": name,
                "v2a.backend": options.backend,
                "v2a.threads": str(options.threads or 0),
                f"v2a.manifest_sha256.{options.version}": manifest_sha,
            }
        ),
    }
    (repo / name / "config.pbtxt").write_text(_header(name, bundle) + render(config))
    return {"max_batch_size": max_batch, "batched": layout is not None}


def _write_bls(
    repo: Path, bundle: Bundle, options: RepositoryOptions, manifest_sha: str, networks: dict
) -> dict:
    tok = bundle.manifest.tokenizer
    files = [tok.file] if tok.file is not None else []
    version_dir = _version_dir(repo, BLS_MODEL, options, bundle, files)
    (version_dir / "model.py").write_text(_shim(BLS_MODEL, "v2a_model"))
    config = {
        "name": BLS_MODEL,
        "backend": "python",
        "max_batch_size": 0,
        "version_policy": {"latest": {"num_versions": 1}},
        "input": [_bls_input(name, dtype, optional) for name, dtype, optional in BLS_INPUTS],
        "output": [
            {"name": "audio", "data_type": Token("TYPE_FP32"), "dims": [-1, -1]},
            {"name": "sample_rate", "data_type": Token("TYPE_INT32"), "dims": [1]},
            {"name": "watermark_payload", "data_type": Token("TYPE_INT64"), "dims": [-1]},
            # The muxed file's bytes when the request names a container, else empty.
            {"name": "muxed", "data_type": Token("TYPE_STRING"), "dims": [1]},
        ],
        "instance_group": [{"count": options.concurrency, "kind": Token("KIND_CPU")}],
        "parameters": _parameters(
            {
                "v2a.networks": json.dumps(
                    {n: networks[n]["max_batch_size"] for n in COMPONENTS}, sort_keys=True
                ),
                "v2a.max_duration": repr(float(options.max_duration)),
                "v2a.max_tracks": str(options.max_tracks),
                "v2a.variant": bundle.manifest.model.variant,
                f"v2a.manifest_sha256.{options.version}": manifest_sha,
            }
        ),
    }
    (repo / BLS_MODEL / "config.pbtxt").write_text(_header(BLS_MODEL, bundle) + render(config))
    return {"max_batch_size": 0, "batched": False}


# (name, Triton type, optional): the v2a model's request, fixed so that operators can script it.
BLS_INPUTS = (
    ("video", "TYPE_STRING", False),  # the video file's bytes (BYTES)
    ("prompt", "TYPE_STRING", False),
    ("negative_prompt", "TYPE_STRING", True),
    ("seed", "TYPE_INT64", True),
    ("tracks", "TYPE_INT32", True),
    ("start", "TYPE_FP32", True),
    ("duration", "TYPE_FP32", True),
    ("steps", "TYPE_INT32", True),
    ("cfg", "TYPE_FP32", True),
    ("solver", "TYPE_STRING", True),
    ("grid", "TYPE_STRING", True),
    ("container", "TYPE_STRING", True),  # mp4, mkv, ...: also return the muxed file
)


def _bls_input(name: str, dtype: str, optional: bool) -> dict:
    return {"name": name, "data_type": Token(dtype), "dims": [1], "optional": optional or None}


def _version_dir(
    repo: Path, model: str, options: RepositoryOptions, bundle: Bundle, files: list[str]
) -> Path:
    """``repo/model/<version>/bundle`` with the manifest (byte for byte) and ``files``."""
    target = repo / model / str(options.version) / BUNDLE_DIR
    target.mkdir(parents=True)
    shutil.copyfile(bundle.root / MANIFEST, target / MANIFEST)
    for file in files:
        (target / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle.root / file, target / file)
    return target.parent


def _engines(bundle: Bundle, name: str, layout: BatchLayout | None) -> tuple[list[str], int]:
    """Every plan built for component ``name`` (the server picks the one for its GPU) and the
    most rows all of them take on the batch axis (0 when the network is not batched)."""
    from ..backends.tensorrt.cache import read_index

    entries = [e for e in read_index(bundle.root).engines if e.component == name]
    if not entries:
        raise RepositoryError(
            f"bundle {bundle.root} has no TensorRT engine for {name}; run "
            f"v2a-export build-engines {bundle.root} --components {name}"
        )
    rows = 0
    if layout is not None:
        rows = min(
            p.max[0] for e in entries for p in e.key_fields.profiles[0] if p.name in layout.batched
        )
    return [e.file for e in entries], rows


def _tensor(t: TensorInfo, layout: BatchLayout | None, *, is_input: bool) -> dict:
    if t.dtype not in TRITON_DTYPES:
        raise RepositoryError(
            f"tensor {t.name!r} has dtype {t.dtype}; the Python backend serves "
            f"{', '.join(TRITON_DTYPES)} (export with float32 I/O)"
        )
    shape = list(t.shape)
    if layout is not None and shape and shape[0] == "B":
        shape = shape[1:] or [1]  # (B,) travels as (B, 1)
    dims = [d if isinstance(d, int) else -1 for d in shape]
    entry = {"name": t.name, "data_type": Token(TRITON_DTYPES[t.dtype]), "dims": dims}
    if is_input and layout is not None:
        entry["allow_ragged_batch"] = True  # gather any lengths; execute buckets them
    return entry


def _warmup(
    bundle: Bundle, spec: ComponentSpec, layout: BatchLayout | None, options: RepositoryOptions
) -> list[dict] | None:
    """One request of zeros at the warm-up duration, so the first real request is not the one
    that pays for memory planning; None when off or a size cannot be derived."""
    m = bundle.manifest
    duration = m.sequence.trained_duration if options.warmup_duration is None else (
        options.warmup_duration
    )  # fmt: skip
    if duration == 0:
        return None
    n = sequence_lengths(
        duration,
        sample_rate=m.audio.sample_rate,
        hop_length=m.audio.hop_length,
        clip_fps=m.video.clip_fps,
        sync_fps=m.video.sync_fps,
    )
    sizes = {
        "B": 1,
        "F": n.clip_frames,
        "Lc": n.clip_frames,
        "S": n.sync_segments,
        "Ls": n.sync_tokens,
        "L": n.latent,
        "M": n.mel_frames,
        "W": n.samples,
    }
    inputs = []  # a proto map: key/value entries
    for t in spec.inputs:
        if not all(isinstance(d, int) or d in sizes for d in t.shape):
            return None
        shape = [d if isinstance(d, int) else sizes[d] for d in t.shape]
        if layout is not None and t.shape and t.shape[0] == "B":
            shape = shape[1:] or [1]
        value = {"data_type": Token(TRITON_DTYPES[t.dtype]), "dims": shape, "zero_data": True}
        inputs.append({"key": t.name, "value": value})
    sample = {"name": f"zeros_{duration:g}s", "batch_size": 2 if layout else 1, "inputs": inputs}
    return [sample]


def _parameters(values: dict[str, str]) -> list[dict]:
    """A proto map<string, ModelParameter> as its key/value entries."""
    return [{"key": k, "value": {"string_value": v}} for k, v in values.items()]


def _kind(backend: str) -> str:
    return "KIND_CPU" if backend == "cpu" else "KIND_GPU"


def _shim(model: str, module: str) -> str:
    return (
        f'"""The {model} model of a v2a Triton repository (written by v2a-export triton)."""\n\n'
        f"from v2a_runtime.serve.{module} import TritonPythonModel  # noqa: F401\n"
    )


def _header(model: str, bundle: Bundle) -> str:
    m = bundle.manifest.model
    return (
        f"# {model}: v2a Triton repository for {m.family} {m.variant} "
        f"(written by v2a_runtime {__version__}; regenerate with v2a-export triton)\n"
    )
