"""Reading official weight files: file formats, per-component unwrapping, strict key checks.

Local files only; nothing is downloaded. Formats: ``.pth``/``.pt``/``.bin``/``.ckpt`` through
``torch.load(weights_only=True, mmap=True)`` and ``.safetensors`` through safetensors. Large
files are never held twice: the pickle formats are memory-mapped, and :func:`load_into` assigns
the file's tensors to a module built on the ``meta`` device (``load_state_dict(assign=True)``)
instead of copying them into freshly allocated parameters.

Per component (spec/mmaudio.md §3, fixtures README §1):

- ``flow``: flat dict; the legacy keys ``t_embed.freqs``, ``latent_rot``, ``clip_rot`` are dropped.
- ``vae``: flat dict (encoder + decoder + data_mean/std), raw MPConv weights.
- ``vocoder``: the generator under ``'generator'``; ``weight_g``/``weight_v`` naming, and the
  ``parametrizations.weight.original0/1`` naming is renamed to it.
- ``synchformer``: the full Synchformer file; only ``vfeat_extractor.*`` is kept.
- ``clip``: the open_clip checkpoint (``state_dict`` wrapper and ``module.`` prefix tolerated).

Variant detection (:func:`identify`) reads widths and depths from key shapes.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from v2a_runtime.config import NETWORKS

from v2a_export.models.configs import (
    VARIANTS,
    BigVGANConfig,
    CLIPTextConfig,
    CLIPVisionConfig,
    FlowConfig,
    ModelConfig,
    SynchformerConfig,
    VAEConfig,
)

log = logging.getLogger(__name__)

LEGACY_FLOW_KEYS = ("t_embed.freqs", "latent_rot", "clip_rot")
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SUFFIXES = (*PICKLE_SUFFIXES, ".safetensors")
_SHOW = 5  # keys listed per category in an error


class CheckpointError(ValueError):
    """A weight file that cannot be read or does not match the network it is loaded into."""


# --- reading ---------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """The raw top-level mapping of a weight file (tensors stay memory-mapped where possible)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {path} as safetensors: {e}") from e
    if suffix not in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"weight file {path}: unsupported extension {suffix!r}; allowed: {', '.join(SUFFIXES)}"
        )
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # legacy (pre-zipfile) serialization cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickling_reason(str(e))
        if "Unsupported global" in reason:
            raise CheckpointError(
                f"{path} holds objects other than tensors and plain containers; refusing to "
                f"unpickle it (weights_only=True): {reason}"
            ) from e
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint: {reason}") from e
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint: {e}") from e
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def _unpickling_reason(message: str) -> str:
    """The informative line of torch's weights_only error (it spans several paragraphs)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("WeightsUnpickler error:", "Unsupported")):
            reason = ln.removeprefix("WeightsUnpickler error:").strip()
            if reason:
                return reason.split(" Please use")[0]
    for ln in lines:
        if ln.startswith("Unsupported"):
            return ln
    return lines[0] if lines else "unreadable pickle"


def component_state_dict(raw: Mapping[str, Any], component: str) -> dict[str, torch.Tensor]:
    """The state dict of ``component`` inside a file's top-level mapping ``raw``."""
    if component not in NETWORKS:
        raise ValueError(f"unknown component {component!r}; known: {', '.join(NETWORKS)}")
    sd = _unwrap(raw)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        key = component_key(key, component)
        if key is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"entry {key!r} is a {type(value).__name__}, not a tensor")
        out[key] = value
    return out


def _unwrap(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    sd = raw
    for wrapper in ("generator", "state_dict"):
        if isinstance(sd.get(wrapper), Mapping):
            sd = sd[wrapper]
    return sd


def component_key(key: str, component: str) -> str | None:
    """The state-dict key a file key maps to for ``component``; None when it is ignored."""
    if component == "flow" and key in LEGACY_FLOW_KEYS:
        return None
    if component == "synchformer" and not key.startswith("vfeat_extractor."):
        return None
    if component == "clip" and key.startswith("module."):
        return key[len("module.") :]
    if component == "vocoder":
        return _legacy_weight_norm_name(key)
    return key


def _legacy_weight_norm_name(key: str) -> str:
    """``<p>.parametrizations.weight.original0/1`` -> ``<p>.weight_g/weight_v``."""
    for new, old in (
        (".parametrizations.weight.original0", ".weight_g"),
        (".parametrizations.weight.original1", ".weight_v"),
    ):
        if key.endswith(new):
            return key[: -len(new)] + old
    return key


def read_component(path: str | Path, component: str) -> dict[str, torch.Tensor]:
    """Read ``path`` and return the state dict of ``component`` in it."""
    try:
        return component_state_dict(read_state_dict(path), component)
    except CheckpointError as e:
        if str(path) in str(e):
            raise
        raise CheckpointError(f"{path}: {e}") from e


# --- strict checks and loading ---------------------------------------------------------------


@dataclass(frozen=True)
class KeyDiff:
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    wrong_shape: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # key, file, expected

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)


def expected_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of ``module.state_dict()`` (works on the meta device)."""
    return {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}


def diff_keys(expected: Mapping[str, tuple[int, ...]], sd: Mapping[str, torch.Tensor]) -> KeyDiff:
    missing = tuple(k for k in expected if k not in sd)
    unexpected = tuple(k for k in sd if k not in expected)
    wrong = tuple(
        (k, tuple(sd[k].shape), tuple(expected[k]))
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(expected[k])
    )
    return KeyDiff(missing, unexpected, wrong)


def _some(items: tuple[str, ...]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else "")


def describe_mismatch(diff: KeyDiff, *, path: str | Path, component: str, variant: str) -> str:
    """One paragraph: file, assumed component and variant, the first few bad keys of each kind."""
    parts = []
    if diff.missing:
        parts.append(f"{len(diff.missing)} missing key(s) ({_some(diff.missing)})")
    if diff.unexpected:
        parts.append(f"{len(diff.unexpected)} unexpected key(s) ({_some(diff.unexpected)})")
    if diff.wrong_shape:
        shown = "; ".join(
            f"{k}: file {list(f)} vs expected {list(e)}" for k, f, e in diff.wrong_shape[:_SHOW]
        )
        more = len(diff.wrong_shape) - _SHOW
        parts.append(
            f"{len(diff.wrong_shape)} wrongly shaped key(s) ({shown}"
            + (f"; ... ({more} more))" if more > 0 else ")")
        )
    return (
        f"{path} does not match the {component} network of variant {variant!r} (strict load): "
        + ", ".join(parts)
        + f". Check that the file is the {component} checkpoint of this variant; "
        f"`v2a-export inspect-weights {path}` says which network and variant a file holds."
    )


def load_into(
    module: nn.Module,
    sd: Mapping[str, torch.Tensor],
    *,
    path: str | Path = "<state dict>",
    component: str = "network",
    variant: str = "custom",
) -> nn.Module:
    """Strictly load ``sd`` into ``module`` (built on ``meta`` or any device), assigning the
    file's tensors (no second copy). Non-float32 floating tensors are cast to float32."""
    diff = diff_keys(expected_shapes(module), sd)
    if not diff.ok:
        raise CheckpointError(
            describe_mismatch(diff, path=path, component=component, variant=variant)
        )
    sd = {
        k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v
        for k, v in sd.items()
    }
    module.load_state_dict(sd, strict=True, assign=True)
    leftover = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(
            f"{type(module).__name__} still has meta tensors after loading: {leftover[:_SHOW]} "
            "(non-persistent buffers must be computed in forward, not at construction)"
        )
    return module


# --- variant detection -----------------------------------------------------------------------


@dataclass(frozen=True)
class Identified:
    """What :func:`identify` found in a file."""

    component: str  # one of v2a_runtime.config.NETWORKS
    variant: str  # registry name, "custom" when no registered config matches
    config: Any  # the matching per-network config (FlowConfig, VAEConfig, ...)
    num_tensors: int
    num_params: int


def _max_index(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    """1 + the largest ``i`` in keys ``<prefix><i>.``; 0 when there is none."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = [int(m.group(1)) for k in sd if (m := pat.match(k))]
    return max(idx) + 1 if idx else 0


def guess_component(sd: Mapping[str, Any]) -> str | None:
    """Which network a (possibly wrapped) state dict holds, from its characteristic keys."""
    if isinstance(sd.get("generator"), Mapping):
        return "vocoder"
    keys = sd.keys()
    if "audio_input_proj.0.weight" in keys or "latent_mean" in keys:
        return "flow"
    if any(k.startswith("vfeat_extractor.") for k in keys):
        return "synchformer"
    if "token_embedding.weight" in keys or "visual.conv1.weight" in keys:
        return "clip"
    if any(k.startswith(("decoder.", "encoder.")) for k in keys) and "data_mean" in keys:
        return "vae"
    if any(k.startswith("conv_pre.") for k in keys):
        return "vocoder"
    return None


def flow_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> FlowConfig:
    """Read a :class:`FlowConfig` off a flow state dict's shapes (mlp_ratio assumed 4)."""
    try:
        hidden = sd["audio_input_proj.0.bias"].shape[0]
        head_dim = sd["joint_blocks.0.latent_block.attn.q_norm.weight"].shape[0]
        joint = _max_index(sd, "joint_blocks.")
        fused = _max_index(sd, "fused_blocks.")
        return FlowConfig(
            latent_dim=sd["latent_mean"].shape[-1],
            clip_dim=sd["clip_input_proj.0.weight"].shape[1],
            sync_dim=sd["sync_input_proj.0.weight"].shape[1],
            text_dim=sd["text_input_proj.0.weight"].shape[1],
            hidden_dim=hidden,
            depth=joint + fused,
            fused_depth=fused,
            num_heads=hidden // head_dim,
            text_seq_len=sd["empty_string_feat"].shape[0],
            # v2 inserts an SiLU at index 1 of clip_input_proj, moving the MLP to index 2
            v2="clip_input_proj.2.w1.weight" in sd,
        )
    except KeyError as e:
        raise CheckpointError(f"not an MMAudio flow state dict: key {e.args[0]!r} missing") from e


def identify(path: str | Path) -> Identified:
    """Read ``path`` and say which network and variant it holds (does not check every key)."""
    return identify_state_dict(read_state_dict(path), path)


def identify_state_dict(raw: Mapping[str, Any], path: str | Path = "<state dict>") -> Identified:
    component = guess_component(raw)
    if component is None:
        keys = list(raw)[:_SHOW]
        raise CheckpointError(
            f"{path}: cannot tell which network this is (first keys: {keys}); "
            f"known networks: {', '.join(NETWORKS)}"
        )
    sd = component_state_dict(raw, component)
    try:
        config = _DETECTORS[component](sd)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e
    variant = _match_variant(component, config)
    n_params = sum(v.numel() for v in sd.values())
    return Identified(component, variant, config, len(sd), n_params)


def _match_variant(component: str, config: Any) -> str:
    """The registered variants whose network equals ``config`` ('/'-joined), else 'custom'.

    Fields that weights cannot reveal (head counts, dilations, ...) are taken from the
    candidate before comparing."""
    names = []
    for name, mc in VARIANTS.items():
        want = _variant_config(mc, component)
        if _fill_uninferable(component, config, want) == want:
            names.append(name)
    return "/".join(names) if names else "custom"


def _variant_config(mc: Any, component: str) -> Any:
    if component == "clip":
        return (mc.clip_vision, mc.clip_text)
    return getattr(
        mc,
        {"flow": "flow", "vae": "vae", "vocoder": "vocoder", "synchformer": "synchformer"}[
            component
        ],
    )


# config fields that the weights do not determine
_UNINFERABLE = {
    "flow": ("mlp_ratio",),
    "vae": (),
    "vocoder": ("resblock_dilation_sizes", "use_tanh_at_final"),
    "synchformer": ("num_heads",),
    "clip": ("head_width", "heads"),
}


def _fill_uninferable(component: str, found: Any, want: Any) -> Any:
    if isinstance(found, tuple):  # clip: (vision, text)
        return tuple(_fill_uninferable(component, f, w) for f, w in zip(found, want, strict=True))
    names = [n for n in _UNINFERABLE[component] if hasattr(found, n)]
    return replace(found, **{n: getattr(want, n) for n in names})


def vae_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> VAEConfig:
    try:
        conv_in, conv_out = sd["decoder.conv_in.weight"], sd["decoder.conv_out.weight"]
    except KeyError as e:
        raise CheckpointError(f"not an MMAudio VAE state dict: key {e.args[0]!r} missing") from e
    return VAEConfig(
        data_dim=conv_out.shape[0], embed_dim=conv_in.shape[1], hidden_dim=conv_out.shape[1]
    )


def bigvgan_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> BigVGANConfig:
    try:
        pre = sd["conv_pre.weight_v"]
        n_up = _max_index(sd, "ups.")
        kernels = tuple(sd[f"ups.{i}.0.weight_v"].shape[-1] for i in range(n_up))
        n_res = _max_index(sd, "resblocks.") // max(n_up, 1)
        res_k = tuple(sd[f"resblocks.{j}.convs1.0.weight_v"].shape[-1] for j in range(n_res))
        has_bias = "conv_post.bias" in sd
    except KeyError as e:
        msg = f"not a BigVGAN generator state dict: key {e.args[0]!r} missing"
        raise CheckpointError(msg) from e
    return BigVGANConfig(
        num_mels=pre.shape[1],
        upsample_rates=tuple(k // 2 for k in kernels),  # every BigVGAN config uses k = 2u
        upsample_kernel_sizes=kernels,
        upsample_initial_channel=pre.shape[0],
        resblock_kernel_sizes=res_k,
        resblock_dilation_sizes=((1, 3, 5),) * len(res_k),
        use_tanh_at_final=has_bias,
        use_bias_at_final=has_bias,
    )


def synchformer_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> SynchformerConfig:
    p = "vfeat_extractor."
    try:
        w3d = sd[p + "patch_embed_3d.proj.weight"]  # (D, 3, tp, ps, ps)
        grid = round((sd[p + "pos_embed"].shape[1] - 1) ** 0.5)
        dim = w3d.shape[0]
        return SynchformerConfig(
            img_size=grid * w3d.shape[-1],
            patch_size=w3d.shape[-1],
            num_frames=sd[p + "temp_embed"].shape[1] * w3d.shape[2],
            temporal_patch=w3d.shape[2],
            embed_dim=dim,
            depth=_max_index(sd, p + "blocks."),
            num_heads=max(dim // 64, 1),
            mlp_ratio=sd[p + "blocks.0.mlp.fc1.weight"].shape[0] / dim,
        )
    except KeyError as e:
        raise CheckpointError(f"not a Synchformer state dict: key {e.args[0]!r} missing") from e


def clip_config_from_state_dict(
    sd: Mapping[str, torch.Tensor],
) -> tuple[CLIPVisionConfig, CLIPTextConfig]:
    try:
        conv = sd["visual.conv1.weight"]  # (width, 3, patch, patch)
        width, patch = conv.shape[0], conv.shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        tok = sd["token_embedding.weight"]  # (vocab, text width)
        vision = CLIPVisionConfig(
            image_size=grid * patch,
            patch_size=patch,
            width=width,
            layers=_max_index(sd, "visual.transformer.resblocks."),
            head_width=64,
            embed_dim=sd["visual.proj"].shape[1],
            mlp_ratio=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
        )
        text = CLIPTextConfig(
            width=tok.shape[1],
            heads=max(tok.shape[1] // 64, 1),
            layers=_max_index(sd, "transformer.resblocks."),
            context_length=sd["positional_embedding"].shape[0],
            vocab_size=tok.shape[0],
            mlp_ratio=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / tok.shape[1],
        )
    except KeyError as e:
        raise CheckpointError(f"not an open_clip CLIP state dict: key {e.args[0]!r} missing") from e
    return vision, text


_DETECTORS = {
    "flow": flow_config_from_state_dict,
    "vae": vae_config_from_state_dict,
    "vocoder": bigvgan_config_from_state_dict,
    "synchformer": synchformer_config_from_state_dict,
    "clip": clip_config_from_state_dict,
}


# --- whole-file checks and loading ------------------------------------------------------------


def build_meta(component: str, config: Any) -> nn.Module:
    """The network for ``component`` with ``config`` (as :func:`identify` returns), on meta."""
    from v2a_export.models.bigvgan import BigVGAN
    from v2a_export.models.clip import CLIP
    from v2a_export.models.flow import MMAudio
    from v2a_export.models.synchformer import Synchformer
    from v2a_export.models.vae import VAE

    with torch.device("meta"):
        if component == "flow":
            return MMAudio.from_config(config)
        if component == "vae":
            return VAE(config)
        if component == "vocoder":
            return BigVGAN(config)
        if component == "synchformer":
            return Synchformer(config)
        if component == "clip":
            return CLIP(*config)
    raise ValueError(f"unknown component {component!r}; known: {', '.join(NETWORKS)}")


@dataclass(frozen=True)
class Inspection:
    """What ``v2a-export inspect-weights`` reports about one file."""

    path: Path
    found: Identified
    diff: KeyDiff  # against the network built from the detected (or registered) config
    dropped: tuple[str, ...]  # keys present in the file but ignored by design
    dtypes: tuple[str, ...]

    @property
    def loads(self) -> bool:
        return self.diff.ok


def inspect_file(path: str | Path) -> Inspection:
    """Identify ``path`` and check it strictly against the network it claims to be."""
    path = Path(path)
    raw = read_state_dict(path)
    found = identify_state_dict(raw, path)
    sd = component_state_dict(raw, found.component)
    dropped = tuple(k for k in _unwrap(raw) if component_key(k, found.component) is None)
    config = found.config
    if found.variant != "custom":  # registered: its config also fixes the uninferable fields
        config = _variant_config(VARIANTS[found.variant.split("/")[0]], found.component)
    diff = diff_keys(expected_shapes(build_meta(found.component, config)), sd)
    dtypes = tuple(sorted({str(v.dtype).removeprefix("torch.") for v in sd.values()}))
    return Inspection(path, found, diff, dropped, dtypes)


@dataclass(frozen=True)
class WeightFiles:
    """The five official files of a variant (spec/mmaudio.md §1.1, §3.1)."""

    flow: Path  # weights/mmaudio_<variant>.pth
    vae: Path  # ext_weights/v1-16.pth | v1-44.pth
    vocoder: Path  # ext_weights/best_netG.pt | bigvgan_v2_44khz_128band_512x/bigvgan_generator.pt
    synchformer: Path  # ext_weights/synchformer_state_dict.pth
    clip: Path  # DFN5B-CLIP-ViT-H-14-384/open_clip_pytorch_model.bin

    @staticmethod
    def official_names(variant: str) -> dict[str, str]:
        k16 = VARIANTS[variant].mel.sample_rate == 16000
        return {
            "flow": f"mmaudio_{variant}.pth",
            "vae": "v1-16.pth" if k16 else "v1-44.pth",
            "vocoder": "best_netG.pt" if k16 else "bigvgan_generator.pt",
            "synchformer": "synchformer_state_dict.pth",
            "clip": "open_clip_pytorch_model.bin",
        }

    @classmethod
    def find(cls, weights_dir: str | Path, variant: str) -> WeightFiles:
        """Locate the official file names of ``variant`` anywhere under ``weights_dir``."""
        if variant not in VARIANTS or variant == "tiny":
            official = [v for v in VARIANTS if v != "tiny"]
            raise ValueError(f"variant {variant!r} has no official files; known: {official}")
        root = Path(weights_dir)
        if not root.is_dir():
            raise CheckpointError(f"weights directory {root} not found")
        found, missing = {}, []
        for component, name in cls.official_names(variant).items():
            hits = sorted(root.rglob(name))
            if hits:
                found[component] = hits[0]
            else:
                missing.append(name)
        if missing:
            raise CheckpointError(
                f"{root}: missing official file(s) for {variant}: {', '.join(missing)} "
                "(see docs: HF hkchengrex/MMAudio, GitHub release v0.1, "
                "nvidia/bigvgan_v2_44khz_128band_512x, apple/DFN5B-CLIP-ViT-H-14-384)"
            )
        return cls(**found)


def load_networks(config: ModelConfig, files: WeightFiles | str | Path, device: str = "cpu"):
    """The five networks of ``config`` with weights from ``files`` (a :class:`WeightFiles` or
    a directory holding the official file names), strictly checked, folded, in eval mode.

    Each network is built on ``meta`` and the file's tensors are assigned to it, so a large
    file is never held twice."""
    from v2a_export.models.build import Networks, build_networks

    if not isinstance(files, WeightFiles):
        files = WeightFiles.find(files, config.name)
    skeleton = build_networks(config, device="meta")
    modules = {}
    for name in NETWORKS:
        path = getattr(files, name)
        module = skeleton.modules()[name]
        load_into(
            module, read_component(path, name), path=path, component=name, variant=config.name
        )
        if name in ("vae", "vocoder"):
            module.remove_weight_norm()
        modules[name] = module.to(device).eval()
    return Networks(config=config, **modules)


__all__ = [
    "CheckpointError",
    "Identified",
    "Inspection",
    "WeightFiles",
    "build_meta",
    "identify_state_dict",
    "inspect_file",
    "load_networks",
    "KeyDiff",
    "LEGACY_FLOW_KEYS",
    "component_state_dict",
    "describe_mismatch",
    "diff_keys",
    "expected_shapes",
    "flow_config_from_state_dict",
    "guess_component",
    "identify",
    "load_into",
    "read_component",
    "read_state_dict",
]
