"""Checkpoint handling: official key layouts, strict errors, file formats, variant detection."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from v2a_runtime.config import NETWORKS  # noqa: E402

from v2a_export.checkpoints import (  # noqa: E402
    CheckpointError,
    WeightFiles,
    component_state_dict,
    expected_shapes,
    identify,
    identify_state_dict,
    inspect_file,
    load_into,
    load_networks,
    read_component,
    read_state_dict,
)
from v2a_export.models.build import build_module, build_networks  # noqa: E402
from v2a_export.models.configs import TINY, VARIANTS  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# key manifest -> (variant whose config describes it, network)
MANIFESTS = {
    "mmaudio_small_16k": ("small_16k", "flow"),
    "mmaudio_small_44k": ("small_44k", "flow"),
    "mmaudio_medium_44k": ("medium_44k", "flow"),
    "mmaudio_large_44k": ("large_44k", "flow"),
    "mmaudio_large_44k_v2": ("large_44k_v2", "flow"),
    "vae_16k": ("small_16k", "vae"),
    "vae_44k": ("small_44k", "vae"),
    "bigvgan_16k": ("small_16k", "vocoder"),
    "bigvgan_v2_44k_128band_512x": ("small_44k", "vocoder"),
    "synchformer_visual": ("small_16k", "synchformer"),
    "clip_dfn5b_vit_h_14_378": ("small_16k", "clip"),
}


def _manifest(fixtures_dir, name):
    return json.loads((fixtures_dir / "keys" / f"{name}.json").read_text())


def test_every_manifest_is_covered(fixtures_dir):
    assert {p.stem for p in (fixtures_dir / "keys").glob("*.json")} == set(MANIFESTS)


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_meta_network_state_dict_equals_key_manifest(fixtures_dir, name):
    variant, network = MANIFESTS[name]
    man = _manifest(fixtures_dir, name)
    with torch.device("meta"):
        module = build_module(VARIANTS[variant], network)
    got = expected_shapes(module)
    want = {k: tuple(v) for k, v in man["tensors"].items()}
    assert list(got) == list(want)  # same keys, same order
    assert got == want  # same shapes
    assert sum(torch.Size(s).numel() for s in got.values()) == man["num_params"]


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_variant_detection_from_manifest_shapes(fixtures_dir, name):
    variant, network = MANIFESTS[name]
    man = _manifest(fixtures_dir, name)
    sd = {k: torch.empty(v, device="meta") for k, v in man["tensors"].items()}
    if network == "flow":  # the legacy keys some official v1 files carry are ignored
        sd.update(
            {
                k: torch.empty(v, device="meta")
                for k, v in man.get("optional_legacy_keys", {}).items()
            }
        )
    if network == "vocoder":
        sd = {"generator": sd}
    if network == "synchformer":  # the official file also holds the audio branch
        sd["afeat_extractor.patch_embed.proj.weight"] = torch.empty(4, device="meta")
    found = identify_state_dict(sd)
    assert found.component == network
    assert variant in found.variant.split("/")
    assert found.num_params == man["num_params"]
    if network == "flow":
        assert found.variant == variant  # each flow file names exactly one variant


def _flow_weights(fixtures_dir, name="flow_v2"):
    return read_state_dict(fixtures_dir / "parity" / f"{name}.safetensors")


def _fixture_flow(fixtures_dir, name="flow_v2"):
    from v2a_export.fixtures import load_fixture
    from v2a_export.fixtures.flow import build

    return build(load_fixture(fixtures_dir / "parity" / f"{name}.json").spec["constructor"])


def test_mismatch_error_names_file_variant_and_keys(fixtures_dir, tmp_path):
    from safetensors.torch import save_file

    sd = dict(_flow_weights(fixtures_dir))
    del sd["final_layer.conv.bias"]
    sd["joint_blocks.9.latent_block.attn.qkv.weight"] = torch.zeros(3)
    sd["latent_mean"] = torch.zeros(1, 1, 7)
    path = tmp_path / "broken.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError) as err:
        load_into(
            _fixture_flow(fixtures_dir),
            read_component(path, "flow"),
            path=path,
            component="flow",
            variant="small_16k",
        )
    msg = str(err.value)
    assert "\n" not in msg  # one paragraph
    for part in (
        str(path),
        "flow",
        "'small_16k'",
        "1 missing key(s) (final_layer.conv.bias)",
        "1 unexpected key(s) (joint_blocks.9.latent_block.attn.qkv.weight)",
        "latent_mean: file [1, 1, 7] vs expected [1, 1, 20]",
    ):
        assert part in msg, (part, msg)


def test_many_missing_keys_are_abbreviated(fixtures_dir):
    sd = {k: v for k, v in _flow_weights(fixtures_dir).items() if not k.startswith("joint")}
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \(.*\.\.\. \(\d+ more\)\)"):
        load_into(_fixture_flow(fixtures_dir), sd, component="flow")


def test_legacy_flow_keys_are_ignored(fixtures_dir):
    sd = _flow_weights(fixtures_dir, "flow_v1")
    assert {"t_embed.freqs", "latent_rot", "clip_rot"} <= set(sd)
    net = load_into(_fixture_flow(fixtures_dir, "flow_v1"), component_state_dict(sd, "flow"))
    assert not any(p.is_meta for p in net.parameters())
    assert torch.equal(net.latent_std, sd["latent_std"])


def test_vocoder_accepts_both_weight_norm_namings_and_the_generator_wrapper(fixtures_dir, tmp_path):
    sd = read_state_dict(fixtures_dir / "parity" / "bigvgan_16k.safetensors")
    modern = {
        k.replace(".weight_g", ".parametrizations.weight.original0").replace(
            ".weight_v", ".parametrizations.weight.original1"
        ): v
        for k, v in sd.items()
    }
    torch.save({"generator": modern}, tmp_path / "best_netG.pt")
    again = read_component(tmp_path / "best_netG.pt", "vocoder")
    assert again.keys() == sd.keys()
    assert all(torch.equal(again[k], sd[k]) for k in sd)
    assert identify(tmp_path / "best_netG.pt").component == "vocoder"


def test_synchformer_file_keeps_only_the_visual_branch(fixtures_dir, tmp_path):
    sd = read_state_dict(fixtures_dir / "parity" / "synchformer.safetensors")
    full = {
        **sd,
        "afeat_extractor.blocks.0.norm1.weight": torch.ones(3),
        "logit_scale": torch.ones(1),
    }
    torch.save(full, tmp_path / "synchformer_state_dict.pth")
    assert (
        read_component(tmp_path / "synchformer_state_dict.pth", "synchformer").keys() == sd.keys()
    )
    info = inspect_file(tmp_path / "synchformer_state_dict.pth")
    assert info.loads and set(info.dropped) == {
        "afeat_extractor.blocks.0.norm1.weight",
        "logit_scale",
    }


def test_file_format_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"unsupported extension '\.onnx'; allowed: .pth"):
        read_state_dict(tmp_path / "w.onnx")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read .*junk.pth"):
        read_state_dict(tmp_path / "junk.pth")
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_state_dict(tmp_path / "tensor.pt")
    torch.save({"a": torch.ones(1)}, tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match="cannot tell which network"):
        identify(tmp_path / "unknown.pt")


class _Opaque:  # an arbitrary Python object: weights_only loading must refuse it
    pass


def test_refuses_arbitrary_pickles(tmp_path):
    torch.save({"w": torch.ones(2), "obj": _Opaque()}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError, match="refusing to unpickle.*Unsupported global.*_Opaque"):
        read_state_dict(tmp_path / "obj.pt")


def test_legacy_serialization_loads_without_mmap(tmp_path):
    sd = {"latent_mean": torch.arange(4.0)}
    torch.save(sd, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    assert torch.equal(read_state_dict(tmp_path / "old.pth")["latent_mean"], sd["latent_mean"])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_tiny_state_dicts_round_trip_bit_exactly(tmp_path, suffix):
    """Every tiny network's raw state dict saved and reloaded through load_networks is equal
    tensor for tensor, and so are the folded networks it produces."""
    from safetensors.torch import save_file

    raw = build_networks(TINY, seed=11, fold=False)
    paths = {}
    for name in NETWORKS:
        sd = {k: v.contiguous() for k, v in raw.modules()[name].state_dict().items()}
        paths[name] = tmp_path / f"{name}{suffix}"
        if suffix == ".pth":
            torch.save(sd, paths[name])
        else:
            save_file(sd, str(paths[name]))
        again = read_component(paths[name], name)
        assert again.keys() == sd.keys()
        assert all(torch.equal(again[k], sd[k]) for k in sd), name
    loaded = load_networks(TINY, WeightFiles(**paths))
    folded = build_networks(TINY, seed=11)  # same draw, folded in place
    for name in NETWORKS:
        a, b = loaded.modules()[name].state_dict(), folded.modules()[name].state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_weight_files_find_official_names(tmp_path):
    names = WeightFiles.official_names("large_44k_v2")
    assert names["flow"] == "mmaudio_large_44k_v2.pth" and names["vae"] == "v1-44.pth"
    assert WeightFiles.official_names("small_16k")["vocoder"] == "best_netG.pt"
    for sub, name in zip(
        ("weights", "ext_weights", "ext_weights", "ext_weights", "clip"),
        names.values(),
        strict=True,
    ):
        (tmp_path / sub).mkdir(exist_ok=True)
        (tmp_path / sub / name).write_bytes(b"")
    files = WeightFiles.find(tmp_path, "large_44k_v2")
    assert files.flow == tmp_path / "weights" / "mmaudio_large_44k_v2.pth"
    (tmp_path / "ext_weights" / "v1-44.pth").unlink()
    with pytest.raises(CheckpointError, match="missing official file.*v1-44.pth"):
        WeightFiles.find(tmp_path, "large_44k_v2")
    with pytest.raises(ValueError, match="no official files"):
        WeightFiles.find(tmp_path, "tiny")


# parity fixture -> network whose seeded random init (fixtures README §2.2) made its weights
SEEDED = {
    "flow_v1": "flow",
    "flow_v2": "flow",
    "vae_16k": "vae",
    "vae_44k": "vae",
    "bigvgan_16k": "vocoder",
    "bigvgan_v2_44k": "vocoder",
    "synchformer": "synchformer",
    "clip": "clip",
}


@pytest.mark.parametrize("fixture", sorted(SEEDED))
def test_seeded_init_reproduces_fixture_weights(fixtures_dir, fixture):
    """build_networks' random weights are the fixtures' recipe: with the fixture's seed every
    parameter is bit-identical (BigVGAN's conv_post gain was rescaled by the fixture author)."""
    from v2a_export.checkpoints import build_meta
    from v2a_export.fixtures import load_fixture
    from v2a_export.models.build import randomize_network

    fx = load_fixture(fixtures_dir / "parity" / f"{fixture}.json")
    network = SEEDED[fixture]
    found = identify_state_dict(fx.weights)
    meta = build_meta(network, found.config)
    module = meta.to_empty(device="cpu")
    for name, buf in module.named_buffers():  # persistent buffers (filters, data stats) as stored
        buf.copy_(fx.weights[name])
    randomize_network(module, network, fx.spec["seeds"]["weights"])
    got = module.state_dict()
    differ = [k for k, v in got.items() if not torch.equal(v, fx.weights[k])]
    assert differ == (["conv_post.weight_g"] if network == "vocoder" else [])
