"""The Triton repository writer and the checks its models run at load (no server needed):
layout and config.pbtxt of every model, the sha256 chain (config -> manifest -> files), the
request parsing of the v2a model, and the CLI errors of ``v2a-export triton`` / ``v2a serve``."""

from __future__ import annotations

import json
import re
import socket

import numpy as np
import pytest
from click.testing import CliRunner
from v2a_runtime.bundle import sha256_file
from v2a_runtime.config import COMPONENTS, MANIFEST
from v2a_runtime.pipeline import DEFAULT_BUNDLE
from v2a_runtime.serve.loading import model_context, verify_component
from v2a_runtime.serve.pbtxt import Token, render
from v2a_runtime.serve.repository import (
    REPOSITORY_FILE,
    RepositoryError,
    RepositoryOptions,
    write_repository,
)
from v2a_runtime.serve.v2a_model import Limits, parse_request

OPTIONS = RepositoryOptions(instances=2, concurrency=3, max_batch=8, max_queue_delay_us=2500,
                            max_duration=20.0, warmup_duration=1.0, version=3)  # fmt: skip


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return write_repository(DEFAULT_BUNDLE, tmp_path_factory.mktemp("r") / "repo", OPTIONS)


def _config(repo, model: str) -> str:
    return (repo / model / "config.pbtxt").read_text()


def _field(text: str, name: str) -> str:
    return re.search(rf"^{name}: (.*)$", text, re.M).group(1)


def _args(repo, model: str, version: str = "3") -> dict:
    """Triton's initialize() arguments for ``model`` (the parts the models read)."""
    text = _config(repo, model)
    params = dict(re.findall(r'key: "([^"]+)"\s+value: \{\s+string_value: "([^"]*)"', text))
    config = {
        "max_batch_size": int(_field(text, "max_batch_size")),
        "parameters": {k: {"string_value": v} for k, v in params.items()},
    }
    return {
        "model_config": json.dumps(config),
        "model_name": model,
        "model_version": version,
        "model_repository": str(repo / model),
        "model_instance_device_id": "0",
    }


def test_every_network_and_the_bls_model_with_their_batching(repo):
    record = json.loads((repo / REPOSITORY_FILE).read_text())
    assert sorted(record["models"]) == sorted([*COMPONENTS, "v2a"])
    batched = {n for n, m in record["models"].items() if m["batched"]}
    assert batched == {"text", "denoiser", "vae_decoder", "vocoder"}
    manifest_sha = sha256_file(DEFAULT_BUNDLE / MANIFEST)
    for name in (*COMPONENTS, "v2a"):
        text = _config(repo, name)
        assert _field(text, "name") == f'"{name}"' and _field(text, "backend") == '"python"'
        assert _field(text, "max_batch_size") == ("8" if name in batched else "0")
        assert 'key: "v2a.manifest_sha256.3"' in text and manifest_sha in text
        assert re.search(r"latest: \{\s+num_versions: 1", text)
        count = 3 if name == "v2a" else 2
        assert re.search(rf"count: {count}\s+kind: KIND_CPU", text)
        assert ("max_queue_delay_microseconds: 2500" in text) == (name in batched)
        assert (repo / name / "3" / "model.py").is_file()
        assert sha256_file(repo / name / "3" / "bundle" / MANIFEST) == manifest_sha
    den = _config(repo, "denoiser")
    assert den.count("allow_ragged_batch: true") == 8  # every input: buckets by shape
    # (B,) travels as (B, 1); RoPE (L, 16, 2) has no B and gets Triton's batch axis in front
    assert re.search(r'name: "t"\s+data_type: TYPE_FP32\s+dims: \[ 1 \]', den)
    assert re.search(r'name: "latent_rope"\s+data_type: TYPE_FP32\s+dims: \[ -1, 16, 2 \]', den)
    # warm-up at 1 s: L = 32 latent frames, batch of 2 rows
    assert re.search(r'key: "x"\s+value: \{\s+data_type: TYPE_FP32\s+dims: \[ 32, 8 \]', den)
    assert "batch_size: 2" in den
    spec = json.loads((DEFAULT_BUNDLE / MANIFEST).read_text())["components"]["denoiser"]
    copied = repo / "denoiser" / "3" / "bundle" / spec["file"]
    assert sha256_file(copied) == spec["sha256"]
    assert not (repo / "denoiser" / "3" / "bundle" / "onnx" / "vocoder.onnx").exists()


def test_v2a_model_request_and_response_names(repo):
    text = _config(repo, "v2a")
    inputs = re.findall(r'name: "(\w+)"\s+data_type: (\w+)\s+dims: \[ 1 \](\s+optional: true)?',
                        text)  # fmt: skip
    got = {name: (dtype, bool(optional)) for name, dtype, optional in inputs}
    assert got["video"] == ("TYPE_STRING", False) and got["prompt"] == ("TYPE_STRING", False)
    for name, dtype in (("negative_prompt", "TYPE_STRING"), ("seed", "TYPE_INT64"),
                        ("tracks", "TYPE_INT32"), ("start", "TYPE_FP32"),
                        ("duration", "TYPE_FP32"), ("steps", "TYPE_INT32"),
                        ("cfg", "TYPE_FP32")):  # fmt: skip
        assert got[name] == (dtype, True), name
    for name, dtype, dims in (("audio", "TYPE_FP32", "-1, -1"), ("sample_rate", "TYPE_INT32", "1"),
                              ("watermark_payload", "TYPE_INT64", "-1")):  # fmt: skip
        assert re.search(rf'name: "{name}"\s+data_type: {dtype}\s+dims: \[ {dims} \]', text)
    assert 'string_value: "20.0"' in text  # max_duration


def test_models_check_the_hash_chain_at_load(repo, tmp_path):
    ctx = model_context(_args(repo, "denoiser"))
    assert ctx.parameters["v2a.component"] == "denoiser" and ctx.max_batch_size == 8
    verify_component(ctx.bundle, "denoiser")  # untouched: passes

    import shutil

    bad = shutil.copytree(repo, tmp_path / "bad")
    graph = bad / "denoiser" / "3" / "bundle" / "onnx" / "denoiser.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    graph.write_bytes(bytes(data))
    ctx = model_context(_args(bad, "denoiser"))
    tampered = r"denoiser\.onnx: sha256 \w+… differs from the manifest's .* regenerate the repo"
    with pytest.raises(RepositoryError, match=tampered):
        verify_component(ctx.bundle, "denoiser")

    manifest = bad / "vocoder" / "3" / "bundle" / MANIFEST
    manifest.write_text(manifest.read_text().replace('"tiny"', '"tinx"'))
    with pytest.raises(RepositoryError, match=r"manifest.json: sha256 .* differs from the .* "
                                              r"vocoder/config.pbtxt records"):  # fmt: skip
        model_context(_args(bad, "vocoder"))
    with pytest.raises(RepositoryError, match="no v2a.manifest_sha256.1 parameter"):
        model_context(_args(repo, "text", version="1"))


def test_writer_refuses_bad_options_existing_output_and_missing_engines(tmp_path):
    out = tmp_path / "repo"
    for bad, message in ((dict(instances=0), "instances must be an integer >= 1"),
                         (dict(backend="rocm"), "choose from cpu, cuda, tensorrt"),
                         (dict(max_queue_delay_us=-1), "max_queue_delay_us"),
                         (dict(max_duration=0.0), "max_duration must be > 0")):  # fmt: skip
        with pytest.raises(RepositoryError, match=message):
            write_repository(DEFAULT_BUNDLE, out, RepositoryOptions(**bad))
    with pytest.raises(RepositoryError, match="no TensorRT engines"):
        write_repository(DEFAULT_BUNDLE, out, RepositoryOptions(backend="tensorrt"))
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    write_repository(DEFAULT_BUNDLE, out, RepositoryOptions(warmup_duration=0.0))
    assert "model_warmup" not in _config(out, "denoiser")
    with pytest.raises(RepositoryError, match="exists; pass --force"):
        write_repository(DEFAULT_BUNDLE, out)
    write_repository(DEFAULT_BUNDLE, out, overwrite=True)
    assert "model_warmup" in _config(out, "denoiser")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_v2a_export_triton_command(tmp_path):
    from v2a_export.cli import main

    out = tmp_path / "repo"
    run = CliRunner().invoke(main, ["triton", str(DEFAULT_BUNDLE), "--out", str(out),
                                    "--max-batch", "4", "--concurrency", "2"])  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "denoiser     dynamic batching, max_batch_size 4" in run.output
    assert "v2a          BLS, 2 request(s) in flight" in run.output
    assert f"serve: v2a serve {out}" in run.output
    run = CliRunner().invoke(main, ["triton", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert run.exit_code == 2
    assert "does not exist" in run.output and "Traceback" not in run.output


def test_pbtxt_render():
    text = render({"name": "m", "max_batch_size": 4, "optional": None, "ok": True,
                   "dims": [-1, 8], "kind": Token("KIND_GPU"),
                   "input": [{"name": "x"}, {"name": "y"}], "d": {"v": 1.5}})  # fmt: skip
    assert text == (
        'name: "m"\nmax_batch_size: 4\nok: true\ndims: [ -1, 8 ]\nkind: KIND_GPU\n'
        'input [\n  {\n    name: "x"\n  },\n  {\n    name: "y"\n  }\n]\nd: {\n  v: 1.5\n}\n'
    )
    with pytest.raises(ValueError, match="finite"):
        render({"x": float("nan")})


MP4 = b"\x00\x00\x00\x18ftypisom"


def _request(**values):
    base = {"video": [MP4], "prompt": [b"rain"]}
    return {**base, **values}


def test_parse_request_defaults_decimals_and_limits():
    limits = Limits(max_duration=10.0, max_tracks=2)
    asked = parse_request(_request(), limits)
    assert asked.video == MP4 and asked.container is None
    o = asked.options
    assert (o.prompt, o.negative_prompt, o.seed, o.tracks, o.start, o.duration) == (
        "rain", "", 42, 1, 0.0, None)  # fmt: skip
    asked = parse_request(
        _request(seed=np.array([7], np.int64), duration=np.array([2.3], np.float32),
                 cfg=np.array([3.7], np.float32), start=np.array([0.1], np.float32),
                 negative_prompt=["wind".encode()], container=[b"MKV"]),
        limits,
    )  # fmt: skip
    o = asked.options
    assert (o.seed, o.duration, o.cfg, o.start) == (7, 2.3, 3.7, 0.1)  # FP32 -> the decimal sent
    assert o.negative_prompt == "wind" and asked.container == ".mkv"
    for values, message in (
        (dict(video=[b""]), "video is empty"),
        (dict(video=[b"#EXTM3U\nfile:///etc/passwd\n"]), "video: not a video file this server"),
        (dict(video=[b"ffconcat version 1.0\n"]), "video: not a video file this server"),
        (dict(duration=np.array([10.5], np.float32)), "duration 10.5 s exceeds this server's"),
        (dict(duration=np.array([np.nan], np.float32)), "duration must be a number"),
        (dict(start=np.array([-1], np.float32)), "start must be"),
        (dict(tracks=np.array([3], np.int32)), "tracks 3 exceeds this server's limit of 2"),
        (dict(container=[b"gif"]), "container 'gif': choose from mp4"),
        (dict(prompt=[b"\xff\xfe"]), "prompt is not UTF-8 text"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_request(_request(**values), limits)


def test_serve_command_errors(tmp_path, repo):
    from v2a_runtime.cli import main

    run = CliRunner().invoke(main, ["serve", str(tmp_path / "none")])
    assert run.exit_code == 2 and "is not a directory" in run.output
    run = CliRunner().invoke(main, ["serve", str(tmp_path)])
    assert run.exit_code == 2 and "is not a v2a Triton repository" in run.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = CliRunner().invoke(main, ["serve", str(repo), "--http-port", str(port)])
    assert run.exit_code == 2, run.output
    assert f"cannot listen on 127.0.0.1:{port}" in run.output or "no tritonserver" in run.output
    assert "Traceback" not in run.output


def test_generate_server_refuses_local_model_flags(tmp_path):
    from media_videos import write_video
    from v2a_runtime.cli import main

    video = write_video(tmp_path / "in.mp4", frames=25)
    run = CliRunner().invoke(main, ["generate", str(video), "--server", "http://127.0.0.1:9",
                                    "--bundle", str(DEFAULT_BUNDLE), "--threads", "1"])  # fmt: skip
    assert run.exit_code == 2
    assert "--bundle, --threads choose(s) the local model" in run.output
    run = CliRunner().invoke(main, ["generate", str(video), "--server", "http://127.0.0.1:9"])
    assert run.exit_code == 2 and "no v2a server at http://127.0.0.1:9" in run.output
    assert not list(tmp_path.glob("in.v2a*"))


def test_tensorrt_repository_takes_each_engines_plans_and_batch_limit(tmp_path):
    """With --backend tensorrt every network model carries its component's plans and the index,
    runs on KIND_GPU, and never batches more rows than its engines' profiles take."""
    import shutil

    from v2a_runtime.backends.tensorrt.cache import (
        BuildRequest,
        EngineEntry,
        EngineIndex,
        EngineKey,
        InputProfile,
        Platform,
        write_index,
    )
    from v2a_runtime.bundle import load_bundle

    bundle = shutil.copytree(DEFAULT_BUNDLE, tmp_path / "bundle")
    m = load_bundle(bundle).manifest
    platform = Platform("10.15.1.29", "NVIDIA H100 80GB HBM3", "9.0")
    rows = {"text": 2, "denoiser": 6, "vae_decoder": 3, "vocoder": 3}
    entries = []
    for name, spec in m.components.items():
        top = rows.get(name, 4)
        profile = tuple(InputProfile(t.name, (1,), (1,), (top,)) for t in spec.inputs)
        key = EngineKey(name, spec.sha256, "fp16", (profile,), platform)
        file = f"engines/{name}.{key.digest()[:16]}.plan"
        (bundle / file).parent.mkdir(exist_ok=True)
        (bundle / file).write_bytes(b"plan " + name.encode())
        entries.append(EngineEntry(name, file, "0" * 64, 10, key.digest(), key,
                                   BuildRequest((1.0, 8.0, 10.0), (1, 1, 3)), 1 << 20, 1.0,
                                   "2026-01-01T00:00:00Z"))  # fmt: skip
    write_index(bundle, EngineIndex(tuple(entries)))
    repo = write_repository(bundle, tmp_path / "repo",
                            RepositoryOptions(backend="tensorrt", max_batch=16))  # fmt: skip
    for name in COMPONENTS:
        text = _config(repo, name)
        want = str(rows[name]) if name in rows else "0"
        assert _field(text, "max_batch_size") == want, name
        assert "kind: KIND_GPU" in text and 'string_value: "tensorrt"' in text
        plans = list((repo / name / "1" / "bundle" / "engines").glob("*.plan"))
        assert [p.read_bytes() for p in plans] == [b"plan " + name.encode()]
        assert (repo / name / "1" / "bundle" / "engines" / "engines.json").is_file()
    assert "KIND_CPU" in _config(repo, "v2a")  # the BLS model stays on the CPU
