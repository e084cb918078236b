"""scripts/gpu_pack.py and gpu_pack.sh (docs/gpu.md) without a GPU or a download: pruning on
synthetic fat binaries, and parts, hashes, a damaged or missing part, the part size the working
tree leaves, on a fake onnxruntime-gpu wheel."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

MAGIC = 0xBA55ED50


@pytest.fixture(scope="module")
def pack():
    spec = importlib.util.spec_from_file_location("gpu_pack", REPO / "scripts" / "gpu_pack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_pack"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


# --- synthetic fat binaries ------------------------------------------------------------------


def container(*entries: tuple[int, int, bytes]) -> bytes:
    """A fatbinary container of (kind, sm arch, payload) entries (CUDA's fatbinary layout)."""
    body = b""
    for kind, arch, payload in entries:
        head = bytearray(64)
        struct.pack_into("<HHIQ", head, 0, kind, 0x0101, 64, len(payload))
        struct.pack_into("<I", head, 28, arch)
        body += bytes(head) + payload
    return struct.pack("<IHHQ", MAGIC, 1, 16, len(body)) + body


def elf(fatbin: bytes, filler: bytes = b"") -> bytes:
    """A little-endian ELF64 file with sections .text (``filler``), .nv_fatbin, .shstrtab."""
    names = b"\0.text\0.nv_fatbin\0.shstrtab\0"
    text_at = 64
    fat_at = text_at + len(filler)
    names_at = fat_at + len(fatbin)
    headers_at = (names_at + len(names) + 7) // 8 * 8
    head = bytearray(64)
    head[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<Q", head, 0x28, headers_at)
    struct.pack_into("<HHH", head, 0x3A, 64, 4, 3)
    body = bytes(head) + filler + fatbin + names
    body += bytes(headers_at - len(body))
    for name, at, size in ((0, 0, 0), (1, text_at, len(filler)), (7, fat_at, len(fatbin)),
                           (18, names_at, len(names))):  # fmt: skip
        body += struct.pack("<IIQQQQIIQQ", name, 1, 0, 0, at, size, 0, 0, 1, 0)
    return body


def payload(seed: int, n: int) -> bytes:
    return np.random.default_rng(seed).integers(1, 256, n, dtype=np.uint8).tobytes()


def test_pruning_zeroes_only_cubins_of_other_architectures(pack):
    sm80, sm90, ptx, sm120, sm90b = (payload(k, 100 + 10 * k) for k in range(5))
    fat = (container((2, 80, sm80), (2, 90, sm90), (1, 80, ptx)) + bytes(8)
           + container((2, 120, sm120)) + container((2, 90, sm90b)))  # fmt: skip
    data = bytearray(elf(fat, filler=payload(9, 50)))
    before = bytes(data)
    report = pack.prune_fatbins(data, frozenset({90}))
    assert len(data) == len(before)
    changed = [i for i in range(len(data)) if data[i] != before[i]]
    start = before.index(sm80)
    assert changed and min(changed) >= start and max(changed) < start + len(sm80)
    assert data[start : start + len(sm80)] == bytes(len(sm80))  # the sm_80 cubin: zeros
    for kept in (sm90, ptx, sm120, sm90b):  # sm_90, PTX, and the container with no sm_90
        assert kept in data
    assert report.zeroed == {80: len(sm80)}
    assert report.kept == {90: len(sm90) + len(sm90b), 80: len(ptx), 120: len(sm120)}
    assert (report.containers, report.untouched_containers) == (3, 1)
    again = bytearray(data)  # pruning is idempotent
    assert pack.prune_fatbins(again, frozenset({90})).zeroed == {80: len(sm80)} and again == data


def test_pruning_refuses_what_is_not_a_fat_binary(pack):
    with pytest.raises(pack.PackError, match="ELF64"):
        pack.prune_fatbins(bytearray(b"#!/bin/sh\n" + bytes(100)), frozenset({90}))
    broken = bytearray(container((2, 80, payload(0, 64))))
    struct.pack_into("<Q", broken, 16 + 8, 10_000)  # the entry claims more than its container
    with pytest.raises(pack.PackError, match="malformed"):
        pack.prune_fatbins(bytearray(elf(bytes(broken))), frozenset({90}))
    junk = container((2, 90, payload(1, 32))) + b"garbage!"
    with pytest.raises(pack.PackError, match="not a fat binary"):
        pack.prune_fatbins(bytearray(elf(junk)), frozenset({90}))
    plain = bytearray(elf(b"", filler=payload(2, 40)))  # no .nv_fatbin: nothing to do
    assert pack.prune_fatbins(plain, frozenset({90})).containers == 0


# --- pack, stash, unpack ---------------------------------------------------------------------

METADATA = """Metadata-Version: 2.1
Name: onnxruntime-gpu
Version: 9.9.9
Requires-Dist: numpy>=1.21.6
Requires-Dist: nvidia-cuda-runtime~=13.0; extra == "cuda"
"""


def fake_wheel(path: Path, cuda_so: bytes) -> Path:
    files = {
        "onnxruntime/__init__.py": b"__version__ = '9.9.9'\n",
        "onnxruntime/capi/libonnxruntime_providers_cuda.so": cuda_so,
        "onnxruntime/capi/libonnxruntime_providers_tensorrt.so": b"\x7fELF dropped",
        "onnxruntime/capi/libonnxruntime.so.9.9.9": b"\x7fELF dropped",
        "onnxruntime/tools/convert.py": b"dropped = True\n",
        "onnxruntime_gpu-9.9.9.dist-info/METADATA": METADATA.encode(),
        "onnxruntime_gpu-9.9.9.dist-info/RECORD": b"dropped\n",
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def packed(pack, tmp_path_factory):
    """A fake wheel whose CUDA library holds 3 KB of sm_80 and 40 KB of incompressible sm_90
    code, packed in parts of 16 KiB."""
    tmp = tmp_path_factory.mktemp("pack")
    sm80, sm90 = payload(0, 3000), payload(1, 40_000)
    so = elf(container((2, 80, sm80), (2, 90, sm90)), filler=payload(2, 500))
    wheel = fake_wheel(tmp / "onnxruntime_gpu-9.9.9-cp312-cp312-manylinux_2_28_x86_64.whl", so)
    manifest = pack.pack(wheel, tmp / "out", 16 * 1024, frozenset({90}))
    return tmp, manifest, so, sm80


def test_pack_writes_parts_their_hashes_and_one_folder_per_call(pack, packed):
    tmp, m, _, sm80 = packed
    assert (m["package"], m["version"], m["cuda"], m["keep_arch"]) == (
        "onnxruntime-gpu", "9.9.9", "13", [90])  # fmt: skip
    assert set(m["files"]) == {"onnxruntime/__init__.py",
                               "onnxruntime/capi/libonnxruntime_providers_cuda.so",
                               "onnxruntime_gpu-9.9.9.dist-info/METADATA"}  # fmt: skip
    assert len(m["dropped"]) == 4
    report = m["pruned"]["onnxruntime/capi/libonnxruntime_providers_cuda.so"]
    assert report["zeroed_bytes_by_arch"] == {"sm_80": len(sm80)}
    assert m["archive"]["bytes"] > 40_000  # the sm_90 payload is random: it does not shrink
    assert len(m["parts"]) == -(-m["archive"]["bytes"] // (16 * 1024))
    joined = b""
    for part in m["parts"]:
        folder = tmp / "out" / f"call{part['call']}"
        assert sorted(p.name for p in folder.iterdir()) == sorted([part["name"], "manifest.json"])
        data = (folder / part["name"]).read_bytes()
        assert len(data) == part["bytes"] <= 16 * 1024
        assert pack._sha256(data) == part["sha256"]
        assert json.loads((folder / "manifest.json").read_text()) == m
        joined += data
    assert pack._sha256(joined) == m["archive"]["sha256"]


def test_unpack_needs_every_part_checks_hashes_and_installs_the_pruned_package(pack, packed):
    tmp, m, so, sm80 = packed
    parts, site = tmp / "parts", tmp / "site"
    assert pack.stash(tmp / "out" / "call1", parts) == [1]
    with pytest.raises(pack.PackError, match=r"parts missing .*call2"):
        pack.unpack(parts, site)
    for k in range(2, len(m["parts"]) + 1):
        have = pack.stash(tmp / "out" / f"call{k}", parts)
    assert have == list(range(1, len(m["parts"]) + 1))
    pack.unpack(parts, site)
    got = (site / "onnxruntime/capi/libonnxruntime_providers_cuda.so").read_bytes()
    at = so.index(sm80)
    assert got == so[:at] + bytes(len(sm80)) + so[at + len(sm80) :]
    assert not (site / "onnxruntime/tools").exists()
    probe = subprocess.run(
        [sys.executable, "-c", "import onnxruntime; print(onnxruntime.__file__)"],
        env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True,
    )  # fmt: skip
    assert probe.stdout.strip() == str(site / "onnxruntime" / "__init__.py")
    # a part damaged after the stash is refused, naming the part
    last = parts / m["parts"][-1]["name"]
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    with pytest.raises(pack.PackError, match=rf"{last.name}: sha256 differs"):
        pack.unpack(parts, site)
    # ... and so is one damaged in transfer, at the stash
    bad = tmp / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps(m))
    (bad / last.name).write_bytes(bytes(data))
    with pytest.raises(pack.PackError, match="damaged in transfer"):
        pack.stash(bad, parts)


def test_gpu_pack_sh_sizes_the_parts_from_the_working_tree(tmp_path):
    """Parts get what the device tool's per-call limit leaves beside the working tree."""
    so = elf(container((2, 80, payload(3, 5000)), (2, 90, payload(4, 1_400_000))))
    wheel = fake_wheel(tmp_path / "onnxruntime_gpu-9.9.9-cp312-cp312-linux.whl", so)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, capture_output=True,
                            check=True).stdout  # fmt: skip
    names = [n for n in listed.decode().split("\0") if n and (REPO / n).is_file()]
    tree = sum((REPO / n).stat().st_size for n in names)
    limit = tree + 2 * 2**20 + 2**20  # 1 MiB left for a part
    out = tmp_path / "gpu"
    run = subprocess.run(["bash", "scripts/gpu_pack.sh", "--wheel", str(wheel), "--out",
                          str(out), "--limit-bytes", str(limit)], cwd=REPO, capture_output=True,
                         text=True, env={**os.environ, "PATH": f"{Path(sys.executable).parent}:"
                                         f"{os.environ['PATH']}"})  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["part_bytes"] == 2**20
    assert [p["call"] for p in m["parts"]] == [1, 2]
    assert f'call 1: carry ["{out}/call1"], command: bash scripts/gpu_evidence.sh A' in run.stdout
    assert f'call 2: carry ["{out}/call2"], command: bash scripts/gpu_evidence.sh B' in run.stdout
    small = subprocess.run(["bash", "scripts/gpu_pack.sh", "--wheel", str(wheel), "--out",
                            str(out), "--limit-bytes", str(tree)], cwd=REPO, capture_output=True,
                           text=True)  # fmt: skip
    assert small.returncode == 2 and "under 1 MiB left per call" in small.stderr
