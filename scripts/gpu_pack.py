"""Carry onnxruntime-gpu to the GPU machine in parts that fit the device tool's transfer limit.

The GPU machine has no package index, and each call of the device tool moves at most 64 MiB
(the working tree and the carried paths together, docs/gpu.md). The onnxruntime-gpu wheel is
~250 MB, most of it ``libonnxruntime_providers_cuda.so``, whose ``.nv_fatbin`` section holds
the CUDA kernels compiled for every GPU generation the wheel supports (sm_75 … sm_120). So:

1. **select**: the package minus what stage B never loads (the TensorRT and C-API libraries,
   the quantization/transformers/tools Python trees);
2. **prune**: in every shared library, the payload of each cubin compiled for another
   architecture than ``--keep-arch`` (default 90, the H100/H200) is overwritten with zeros.
   Offsets, sizes and every header stay as they are, so the library loads exactly as before;
   the CUDA driver picks the sm_90 cubin of each kernel and never reads the others. A fat
   binary with no image for the kept architecture is left untouched;
3. **archive**: one reproducible tar (sorted, mtime 0), xz-compressed — the zeroed payloads
   compress to nothing;
4. **split** into parts of ``--part-bytes``, each in its own folder ``call<k>/`` next to a copy
   of ``manifest.json`` (sha256 of the wheel, the archive, every part and every file), so that
   one device call carries one folder.

On the GPU machine, ``stash`` copies a carried folder's part into a scratch directory that
outlives the call (hash checked), and ``unpack`` checks that every part is there, joins and
checks them, and extracts the package into a target directory (each file's sha256 checked),
to be put first on ``PYTHONPATH``.

    python scripts/gpu_pack.py pack WHEEL --out .gpu [--part-bytes N] [--keep-arch 90]
    python scripts/gpu_pack.py stash .gpu/call2 --into /tmp/v2a-gpu/parts
    python scripts/gpu_pack.py unpack --parts /tmp/v2a-gpu/parts --target /tmp/v2a-gpu/site

``scripts/gpu_pack.sh`` downloads the wheel and sizes the parts from the working tree.
Standard library only: it runs on the GPU machine's Python as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import shutil
import struct
import sys
import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MANIFEST = "manifest.json"
ARCHIVE = "onnxruntime-gpu.tar.xz"
FORMAT = 1
# What stage B never loads: TensorRT's execution provider (needs libnvinfer, absent there), the
# C-API library (the Python module links onnxruntime itself), and the offline tool trees.
DROP = (
    "onnxruntime/capi/libonnxruntime_providers_tensorrt.so",
    "onnxruntime/capi/libonnxruntime.so",
    "onnxruntime/quantization/",
    "onnxruntime/transformers/",
    "onnxruntime/tools/",
    "onnxruntime/datasets/",
)
FATBIN_MAGIC = 0xBA55ED50  # fatbinary container header (CUDA's fatbinary.h)
ENTRY_ELF, ENTRY_PTX = 2, 1
CHUNK = 1 << 20


class PackError(RuntimeError):
    """A bad wheel, a corrupt or missing part: one line that says what to do."""


# --- fat binaries ----------------------------------------------------------------------------


@dataclass
class PruneReport:
    """What :func:`prune_fatbins` did to one library (bytes of cubin payload per sm arch)."""

    kept: Counter = field(default_factory=Counter)
    zeroed: Counter = field(default_factory=Counter)
    containers: int = 0
    untouched_containers: int = 0  # no image for the kept architectures: left as they were

    def to_dict(self) -> dict:
        return {
            "kept_bytes_by_arch": {f"sm_{a}": n for a, n in sorted(self.kept.items())},
            "zeroed_bytes_by_arch": {f"sm_{a}": n for a, n in sorted(self.zeroed.items())},
            "containers": self.containers,
            "untouched_containers": self.untouched_containers,
        }


def elf_sections(data: bytes | bytearray) -> dict[str, tuple[int, int]]:
    """{section name: (file offset, size)} of a little-endian ELF64 file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise PackError("not a little-endian ELF64 file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    out = {}
    for name, _type, _flags, _addr, offset, size in headers:
        start = names_at + name
        out[data[start : data.index(b"\0", start)].decode()] = (offset, size)
    return out


def _entries(data, start: int, end: int):
    """(offset, kind, header bytes, payload bytes, sm arch) of each entry of one container."""
    at = start
    while at < end:
        kind, _version, header, payload = struct.unpack_from("<HHIQ", data, at)
        arch = struct.unpack_from("<I", data, at + 28)[0]
        if header < 32 or at + header + payload > end:
            raise PackError(f"malformed fat binary entry at byte {at}")
        yield at, kind, header, payload, arch
        at += header + payload


def prune_fatbins(data: bytearray, keep_arch: frozenset[int]) -> PruneReport:
    """Zero, in place, the payload of every cubin in ``.nv_fatbin`` built for an architecture
    outside ``keep_arch``, in each container that holds a cubin or PTX the kept architectures
    run. Headers, offsets and the file size are unchanged."""
    report = PruneReport()
    sections = elf_sections(data)
    if ".nv_fatbin" not in sections:
        return report
    offset, size = sections[".nv_fatbin"]
    at, end = offset, offset + size
    while at < end:
        if end - at < 16 or struct.unpack_from("<I", data, at)[0] != FATBIN_MAGIC:
            if any(data[at : min(at + 8, end)]):  # padding between containers: 8 zero bytes
                raise PackError(f"unexpected bytes at {at} in .nv_fatbin (not a fat binary)")
            at += 8
            continue
        _magic, _version, header, fat_size = struct.unpack_from("<IHHQ", data, at)
        start, stop = at + header, at + header + fat_size
        entries = list(_entries(data, start, stop))
        report.containers += 1
        usable = any(k == ENTRY_PTX or a in keep_arch for _, k, _, _, a in entries)
        for pos, kind, head, payload, arch in entries:
            if kind != ENTRY_ELF or arch in keep_arch or not usable:
                report.kept[arch] += payload
                continue
            data[pos + head : pos + head + payload] = bytes(payload)
            report.zeroed[arch] += payload
        report.untouched_containers += not usable
        at = stop
    return report


# --- pack ------------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _dropped(name: str) -> bool:
    # RECORD lists the wheel's own hashes, which pruning changes; the manifest has the new ones
    return name.endswith(".dist-info/RECORD") or any(name.startswith(d) for d in DROP)


def wheel_info(names: list[str], metadata: str) -> dict:
    """Package, version and CUDA major of an onnxruntime-gpu wheel, from its METADATA."""
    fields = dict(
        line.split(": ", 1) for line in metadata.splitlines() if ": " in line and line[0] != " "
    )
    cuda = None
    for line in metadata.splitlines():  # e.g. 'Requires-Dist: nvidia-cuda-runtime~=13.0; extra..'
        if line.startswith("Requires-Dist: nvidia-cuda-runtime") and "~=" in line:
            cuda = line.split("~=")[1].split(".")[0].strip()
    if not any(n.startswith("onnxruntime/capi/") for n in names):
        raise PackError("this wheel has no onnxruntime/capi/: not an onnxruntime wheel")
    return {"package": fields.get("Name"), "version": fields.get("Version"), "cuda": cuda}


def pack(
    wheel: Path, out: Path, part_bytes: int, keep_arch: frozenset[int] = frozenset({90})
) -> dict:
    """Write ``out/call<k>/{part, manifest.json}`` for ``wheel``; return the manifest."""
    if part_bytes < 1024:
        raise PackError(f"part size {part_bytes} bytes is too small")
    files, pruned, dropped = {}, {}, []
    tar_bytes = io.BytesIO()
    with zipfile.ZipFile(wheel) as z, tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        names = sorted(n for n in z.namelist() if not n.endswith("/"))
        meta = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            raise PackError(f"{wheel.name}: no .dist-info/METADATA (not a wheel)")
        info = wheel_info(names, z.read(meta).decode())
        for name in names:
            if _dropped(name):
                dropped.append(name)
                continue
            data = bytearray(z.read(name))
            if ".so" in PurePosixPath(name).name and data[:4] == b"\x7fELF":
                report = prune_fatbins(data, keep_arch)
                if report.containers:
                    pruned[name] = report.to_dict()
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.mtime = len(data), 0o755 if ".so" in name else 0o644, 0
            tar.addfile(member, io.BytesIO(data))
            files[name] = _sha256(data)
    archive = lzma.compress(tar_bytes.getvalue(), preset=9 | lzma.PRESET_EXTREME)
    parts = [archive[i : i + part_bytes] for i in range(0, len(archive), part_bytes)]
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("call*"):
        shutil.rmtree(old)
    manifest = {
        "format": FORMAT,
        "wheel": {"name": wheel.name, "sha256": file_sha256(wheel), "bytes": wheel.stat().st_size},
        **info,
        "keep_arch": sorted(keep_arch),
        "pruned": pruned,
        "dropped": dropped,
        "files": files,
        "archive": {"name": ARCHIVE, "bytes": len(archive), "sha256": _sha256(archive)},
        "part_bytes": part_bytes,
        "parts": [
            {"name": f"{ARCHIVE}.part{k}of{len(parts)}", "call": k, "bytes": len(p),
             "sha256": _sha256(p)}  # fmt: skip
            for k, p in enumerate(parts, start=1)
        ],
    }
    text = json.dumps(manifest, indent=1) + "\n"
    for part, data in zip(manifest["parts"], parts, strict=True):
        folder = out / f"call{part['call']}"
        folder.mkdir()
        (folder / part["name"]).write_bytes(data)
        (folder / MANIFEST).write_text(text)
    (out / MANIFEST).write_text(text)
    return manifest


# --- on the GPU machine ------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise PackError(f"{path}: missing (carry the folder gpu_pack.sh made, e.g. .gpu/call1)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise PackError(f"{path}: manifest format {manifest.get('format')}, expected {FORMAT}")
    return manifest


def stash(carried: Path, into: Path) -> list[int]:
    """Copy the parts found in ``carried`` into ``into`` (hash-checked); return the calls of
    the parts now in ``into``. A manifest of another pack there is replaced."""
    manifest = read_manifest(carried)
    into.mkdir(parents=True, exist_ok=True)
    if (into / MANIFEST).is_file() and read_manifest(into)["archive"] != manifest["archive"]:
        for old in into.iterdir():  # parts of an older pack
            old.unlink()
    (into / MANIFEST).write_text((carried / MANIFEST).read_text())
    for part in manifest["parts"]:
        src = carried / part["name"]
        if src.is_file():
            if file_sha256(src) != part["sha256"]:
                raise PackError(f"{src}: sha256 differs from the manifest (damaged in transfer?)")
            shutil.copyfile(src, into / part["name"])
    return present(into, manifest)


def present(folder: Path, manifest: dict) -> list[int]:
    return [p["call"] for p in manifest["parts"] if (folder / p["name"]).is_file()]


class _Joined(io.RawIOBase):
    """The parts read back to back, hashing what passes."""

    def __init__(self, paths: list[Path]):
        self.paths, self.file, self.digest = list(paths), None, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self.file is None:
                if not self.paths:
                    return 0
                self.file = open(self.paths.pop(0), "rb")  # noqa: SIM115 (closed below)
            n = self.file.readinto(buffer)
            if n:
                self.digest.update(memoryview(buffer)[:n])
                return n
            self.file.close()
            self.file = None


def unpack(parts: Path, target: Path) -> dict:
    """Check every part named by ``parts/manifest.json``, join them, and extract the package
    into ``target`` (emptied first); every file's sha256 is checked. Returns the manifest."""
    manifest = read_manifest(parts)
    missing = [p for p in manifest["parts"] if not (parts / p["name"]).is_file()]
    if missing:
        calls = ", ".join(f"call{p['call']}" for p in missing)
        raise PackError(
            f"{len(missing)} of {len(manifest['parts'])} parts missing in {parts}: carry and "
            f"stash .gpu/{{{calls}}} first (docs/gpu.md)"
        )
    for p in manifest["parts"]:
        if file_sha256(parts / p["name"]) != p["sha256"]:
            raise PackError(f"{parts / p['name']}: sha256 differs from the manifest")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    joined = _Joined([parts / p["name"] for p in manifest["parts"]])
    with tarfile.open(fileobj=io.BufferedReader(joined, CHUNK), mode="r|xz") as tar:
        tar.extractall(target, filter="data")
    if joined.digest.hexdigest() != manifest["archive"]["sha256"]:
        raise PackError("the joined parts differ from the packed archive (sha256)")
    for name, digest in manifest["files"].items():
        if file_sha256(target / name) != digest:
            raise PackError(f"{target / name}: sha256 differs from the manifest")
    return manifest


# --- command line --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="wheel -> OUT/call<k>/ parts + manifest")
    p.add_argument("wheel", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--part-bytes", type=int, default=60_000_000)
    p.add_argument("--keep-arch", default="90", help="comma list of sm architectures to keep")
    s = sub.add_parser("stash", help="copy a carried folder's parts into a scratch dir")
    s.add_argument("carried", type=Path, nargs="+")
    s.add_argument("--into", type=Path, required=True)
    u = sub.add_parser("unpack", help="join the parts and extract the package")
    u.add_argument("--parts", type=Path, required=True)
    u.add_argument("--target", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        if args.command == "pack":
            keep = frozenset(int(a) for a in args.keep_arch.split(",") if a)
            m = pack(args.wheel, args.out, args.part_bytes, keep)
            zeroed = sum(sum(r["zeroed_bytes_by_arch"].values()) for r in m["pruned"].values())
            print(f"{m['package']} {m['version']} (CUDA {m['cuda']}): {len(m['files'])} files, "
                  f"{zeroed / 1e6:.0f} MB of cubins for other GPUs zeroed, archive "
                  f"{m['archive']['bytes'] / 2**20:.1f} MiB in {len(m['parts'])} part(s) of "
                  f"<= {args.part_bytes / 2**20:.1f} MiB: {args.out}/call1 .. "
                  f"call{len(m['parts'])}")  # fmt: skip
        elif args.command == "stash":
            for folder in args.carried:
                have = stash(folder, args.into)
            total = len(read_manifest(args.into)["parts"])
            print(f"stashed in {args.into}: parts {have} of {total}")
        else:
            m = unpack(args.parts, args.target)
            print(f"unpacked {m['package']} {m['version']} (CUDA {m['cuda']}, sm "
                  f"{m['keep_arch']}) into {args.target}: {len(m['files'])} files "
                  "checked")  # fmt: skip
    except PackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
