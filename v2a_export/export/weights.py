"""Where an export's weights come from, and the networks they give.

- **random** (no weights given): fixture-style seeded weights (``build_networks(seed=...)``),
  reproducible from the seed the bundle records, so ``validate`` rebuilds the same networks.
  Large networks are built on the ``meta`` device and materialised straight into their random
  values (no default initialisation of a billion parameters first); the values are identical to
  ``build_networks(config, seed=seed)``.
- **a directory** (``--weights DIR``): one file per network, under the official file names of
  the variant (spec/mmaudio.md §3.1) or named after the network (``flow.safetensors``,
  ``vae.pth``, ... with any suffix of :data:`v2a_export.checkpoints.SUFFIXES`).
- **one file** (``--weights-file F``): every network in one state dict under the prefixes
  ``clip.``, ``synchformer.``, ``flow.``, ``vae.``, ``vocoder.`` (e.g. a trainer's checkpoint).

Weights are "official" when an official variant is loaded from its official file names,
"trained" otherwise.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from v2a_runtime.config import NETWORKS

from v2a_export.checkpoints import (
    SUFFIXES,
    CheckpointError,
    WeightFiles,
    load_into,
    load_networks,
    read_component,
    read_state_dict,
)
from v2a_export.models.build import (
    Networks,
    build_module,
    build_networks,
    randomize_network,
)
from v2a_export.models.configs import VARIANTS, ModelConfig

KINDS = ("random", "trained", "official")


@dataclass(frozen=True)
class WeightSource:
    """What to load: ``seed`` for random weights, or a directory, or a single file."""

    seed: int | None = None
    directory: Path | None = None
    file: Path | None = None

    def __post_init__(self) -> None:
        given = [x is not None for x in (self.seed, self.directory, self.file)]
        if sum(given) != 1:
            raise ValueError("give exactly one of a seed, a weights directory or a weights file")

    @property
    def random(self) -> bool:
        return self.seed is not None

    def describe(self) -> str:
        if self.seed is not None:
            return f"random weights (seed {self.seed})"
        return str(self.directory if self.directory is not None else self.file)


@dataclass(frozen=True)
class LoadedWeights:
    networks: Networks
    kind: str  # one of KINDS
    files: dict[str, Path]  # network -> file (empty for random weights)


def load_weights(
    config: ModelConfig, source: WeightSource, networks: tuple[str, ...] = NETWORKS
) -> LoadedWeights:
    """The networks of ``config`` (eval mode, folded) from ``source``. Only ``networks`` are
    materialised; the others stay on the ``meta`` device (an export of some components of a
    large model never holds the rest in memory)."""
    unknown = [n for n in networks if n not in NETWORKS]
    if unknown:
        raise ValueError(f"unknown networks {unknown}; known: {', '.join(NETWORKS)}")
    if source.seed is not None:
        return LoadedWeights(random_networks(config, source.seed, networks), "random", {})
    if source.directory is not None:
        files, official = find_weight_files(source.directory, config)
        kind = "official" if official else "trained"
        return LoadedWeights(_load_files(config, files, networks), kind, files)
    return LoadedWeights(load_single_file(config, source.file, networks), "trained", {})


def weight_kind(config: ModelConfig, source: WeightSource) -> tuple[str, dict[str, Path]]:
    """("random" | "trained" | "official", network -> file) without loading anything."""
    if source.seed is not None:
        return "random", {}
    if source.directory is not None:
        files, official = find_weight_files(source.directory, config)
        return ("official" if official else "trained"), files
    return "trained", {}


class LazyNetworks:
    """The networks of one weight source, each materialised when first asked for and freed
    (moved back to ``meta``) on :meth:`release`: an export holds one network plus one graph in
    memory, not the whole model (a large_44k_v2 model is ~9.5 GB in fp32)."""

    def __init__(self, config: ModelConfig, source: WeightSource):
        self.config, self.source = config, source
        self.kind, self.files = weight_kind(config, source)
        self._modules = build_networks(config, device="meta").modules()
        self._latent_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        self.load_seconds: dict[str, float] = {}  # network -> seconds spent materialising it

    def networks(self, *names: str) -> Networks:
        """A :class:`Networks` whose ``names`` are materialised (the others may be on meta)."""
        for name in names:
            if _is_meta(self._modules[name]):
                started = time.perf_counter()
                loaded = load_weights(self.config, self.source, (name,))
                self._modules[name] = loaded.networks.modules()[name]
                took = time.perf_counter() - started
                self.load_seconds[name] = self.load_seconds.get(name, 0.0) + took
                if name == "flow":
                    self.latent_stats()
        return Networks(config=self.config, **self._modules)

    def release(self, *names: str) -> None:
        """Free ``names`` (all networks when none are given)."""
        for name in names or NETWORKS:
            if not _is_meta(self._modules[name]):
                self._modules[name] = self._modules[name].to("meta")
        gc.collect()

    def latent_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The flow's ``latent_mean`` and ``latent_std`` (C,) (loads the flow if needed)."""
        if self._latent_stats is None:
            flow = self.networks("flow").flow
            self._latent_stats = tuple(
                tuple(float(v) for v in p.detach().flatten())
                for p in (flow.latent_mean, flow.latent_std)
            )
        return self._latent_stats


def _is_meta(module: torch.nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def check_weight_source(config: ModelConfig, source: WeightSource) -> None:
    """Fail early (before any long work) if the weight files are not where they should be."""
    if source.directory is not None:
        find_weight_files(source.directory, config)
    elif source.file is not None and not Path(source.file).is_file():
        raise CheckpointError(f"weight file {source.file} not found")


def random_networks(
    config: ModelConfig, seed: int, networks: tuple[str, ...] = NETWORKS
) -> Networks:
    """``build_networks(config, seed=seed)`` for ``networks`` (the others stay on ``meta``).
    Buffer-free networks are built on ``meta`` and materialised directly into their random
    draw, so a billion parameters are not default-initialised first; the values are the same."""
    modules = {}
    for k, name in enumerate(NETWORKS):
        with torch.device("meta"):
            module = build_module(config, name)
        if name not in networks:
            pass
        elif any(True for _ in module.buffers()):  # buffers hold constants: build for real
            module = build_module(config, name)
            randomize_network(module, name, seed + k)
        else:
            module = module.to_empty(device="cpu")
            randomize_network(module, name, seed + k)
        if name in networks and name in ("vae", "vocoder"):
            module.remove_weight_norm()
        modules[name] = module.eval()
    return Networks(config=config, **modules)


def _load_files(config: ModelConfig, files: dict[str, Path], networks: tuple[str, ...]):
    """``load_networks`` restricted to ``networks`` (file tensors assigned to meta modules)."""
    if set(networks) == set(NETWORKS):
        return load_networks(config, WeightFiles(**files))
    skeleton = build_networks(config, device="meta").modules()
    modules = {}
    for name in NETWORKS:
        module = skeleton[name]
        if name in networks:
            path = files[name]
            sd = read_component(path, name)
            load_into(module, sd, path=path, component=name, variant=config.name)
            if name in ("vae", "vocoder"):
                module.remove_weight_norm()
        modules[name] = module.eval()
    return Networks(config=config, **modules)


def find_weight_files(directory: Path, config: ModelConfig) -> tuple[dict[str, Path], bool]:
    """Network -> file under ``directory``, and whether the official names were used."""
    root = Path(directory)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise CheckpointError(f"weights directory {root} {what}")
    if config.name in VARIANTS and config.name != "tiny":
        names = WeightFiles.official_names(config.name)
        found = {n: sorted(root.rglob(f)) for n, f in names.items()}
        if all(found.values()):
            return {n: hits[0] for n, hits in found.items()}, True
    files, missing = {}, []
    for name in NETWORKS:
        hits = sorted(p for s in SUFFIXES for p in root.rglob(f"{name}{s}"))
        if hits:
            files[name] = hits[0]
        else:
            missing.append(name)
    if missing:
        official = ""
        if config.name in VARIANTS and config.name != "tiny":
            names = ", ".join(WeightFiles.official_names(config.name).values())
            official = f" or the official names ({names})"
        raise CheckpointError(
            f"weights directory {root}: no file for {', '.join(missing)}; expected "
            f"<network>{{{','.join(SUFFIXES)}}} for each of {', '.join(NETWORKS)}{official}"
        )
    return files, False


def load_single_file(
    config: ModelConfig, path: Path, networks: tuple[str, ...] = NETWORKS
) -> Networks:
    """Networks from one state dict whose keys are ``<network>.<key>``."""
    raw = read_state_dict(path)
    parts: dict[str, dict[str, torch.Tensor]] = {n: {} for n in NETWORKS}
    unknown = []
    for key, value in raw.items():
        head, _, rest = key.partition(".")
        if head in parts and rest:
            parts[head][rest] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{path}: keys outside the networks {', '.join(NETWORKS)}: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''}"
        )
    empty = [n for n, sd in parts.items() if not sd]
    if empty:
        raise CheckpointError(f"{path}: no weights for {', '.join(empty)} (keys '<network>.*')")
    skeleton = build_networks(config, device="meta")
    modules = {}
    for name in NETWORKS:
        module = skeleton.modules()[name]
        if name in networks:
            load_into(module, parts[name], path=path, component=name, variant=config.name)
            if name in ("vae", "vocoder"):
                module.remove_weight_norm()
        modules[name] = module.eval()
    return Networks(config=config, **modules)


__all__ = [
    "KINDS",
    "LazyNetworks",
    "weight_kind",
    "check_weight_source",
    "LoadedWeights",
    "WeightSource",
    "find_weight_files",
    "load_single_file",
    "load_weights",
    "random_networks",
]
