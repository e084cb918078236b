"""What every model of a v2a repository checks at load, before it loads anything.

1. its version's ``bundle/manifest.json`` has the sha256 that ``config.pbtxt`` records for that
   version (``v2a.manifest_sha256.<version>``);
2. every file it will load has the size and sha256 that the manifest records.

A mismatch is a :class:`RepositoryError` with one line naming the file, both digests and what
to do; the model's ``initialize`` logs it and fails, so Triton refuses to load the model (and
``tritonserver --exit-on-error``, as ``v2a serve`` runs it, exits).

This module never imports Triton's ``triton_python_backend_utils``: it is plain Python that the
tests run directly on a repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..bundle import Bundle, load_bundle, sha256_file
from ..config import MANIFEST, FileSpec
from .repository import BUNDLE_DIR, RepositoryError

_REGENERATE = "regenerate the repository with v2a-export triton"


@dataclass(frozen=True)
class ModelContext:
    """One model instance's view of its repository entry (from Triton's ``initialize`` args)."""

    model: str  # Triton model name
    version: str
    bundle: Bundle  # this version's bundle directory (only the files this model needs)
    parameters: dict[str, str]  # config.pbtxt parameters
    max_batch_size: int
    device_id: int  # Triton's instance device (GPU index for KIND_GPU)


def model_context(args: dict[str, str]) -> ModelContext:
    """Parse Triton's ``initialize`` args and check the version's manifest against the config."""
    config = json.loads(args["model_config"])
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    model, version = args["model_name"], args["model_version"]
    root = Path(args["model_repository"]) / version / BUNDLE_DIR
    expected = params.get(f"v2a.manifest_sha256.{version}")
    if expected is None:
        raise RepositoryError(
            f"{model}/config.pbtxt has no v2a.manifest_sha256.{version} parameter for version "
            f"{version}; {_REGENERATE}"
        )
    path = root / MANIFEST
    try:
        actual = sha256_file(path)
    except OSError as e:
        raise RepositoryError(f"{path}: cannot read the manifest ({e}); {_REGENERATE}") from e
    if actual != expected:
        raise RepositoryError(
            f"{path}: sha256 {actual[:12]}… differs from the {expected[:12]}… that "
            f"{model}/config.pbtxt records; the repository was modified: {_REGENERATE}"
        )
    return ModelContext(
        model=model,
        version=version,
        bundle=load_bundle(root, verify=False),
        parameters=params,
        max_batch_size=int(config.get("max_batch_size", 0)),
        device_id=int(args.get("model_instance_device_id", 0) or 0),
    )


def verify_component(bundle: Bundle, name: str) -> None:
    """Check the graph (and its external data) of component ``name`` against the manifest."""
    spec = bundle.manifest.components[name]
    verify_file(bundle, FileSpec(spec.file, spec.sha256, spec.bytes))
    if spec.external_data is not None:
        verify_file(bundle, spec.external_data)


def verify_tokenizer(bundle: Bundle) -> None:
    tok = bundle.manifest.tokenizer
    if tok.file is not None and tok.sha256 is not None:
        verify_file(bundle, FileSpec(tok.file, tok.sha256, -1))


def verify_file(bundle: Bundle, spec: FileSpec) -> None:
    path = bundle.root / spec.file
    if not path.is_file():
        raise RepositoryError(f"{path} is missing; {_REGENERATE}")
    size = path.stat().st_size
    if spec.bytes >= 0 and size != spec.bytes:
        raise RepositoryError(
            f"{path} has {size} bytes, the manifest says {spec.bytes}; the repository was "
            f"modified: {_REGENERATE}"
        )
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise RepositoryError(
            f"{path}: sha256 {actual[:12]}… differs from the manifest's {spec.sha256[:12]}…; "
            f"the repository was modified: {_REGENERATE}"
        )
