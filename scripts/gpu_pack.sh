#!/usr/bin/env bash
# Prepare onnxruntime-gpu for stage B of the GPU kit (docs/gpu.md): download the wheel for the
# GPU machine (Python 3.12, manylinux x86_64, CUDA 13 like its PyTorch), prune it to the GPU's
# architecture and split it into parts that fit one device call each beside the working tree.
#
#   scripts/gpu_pack.sh [--wheel FILE] [--version 1.30.0] [--keep-arch 90] [--out .gpu]
#
# Writes OUT/call1 .. OUT/callN (one part + manifest.json each) and prints the calls to make.
# OUT must be ignored by git (.gpu/ is, in .gitignore): only carried paths travel.
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.30.0 wheel="" keep=90 out=.gpu
limit=$((64 * 1024 * 1024)) margin=$((2 * 1024 * 1024)) most=60000000
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) wheel=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --keep-arch) keep=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --limit-bytes) limit=$2; shift 2 ;;  # the device tool's per-call limit (tests)
        *) echo "error: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
case "$(realpath -m "$out")" in
    "$PWD"/*)
        if ! git check-ignore -q "$out/x"; then
            echo "error: $out is not ignored by git; its parts would travel in every call" >&2
            exit 2
        fi ;;
    *) echo "note: $out is outside the repository; only folders inside it can be carried" ;;
esac

# What travels in every call: tracked files and untracked files git does not ignore.
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } \
    | { xargs -0 -r stat -c %s -- 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
part=$((limit - tree - margin))
[ "$part" -gt "$most" ] && part=$most
if [ "$part" -lt $((1024 * 1024)) ]; then
    echo "error: the working tree is $((tree / 1048576)) MiB: under 1 MiB left per call" >&2
    exit 2
fi

if [ -z "$wheel" ]; then
    mkdir -p "$out/wheel"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 -d "$out/wheel" "onnxruntime-gpu==$version"
    wheel=$(ls "$out"/wheel/onnxruntime_gpu-"$version"-cp312-*.whl)
fi
echo "working tree $((tree / 1048576)) MiB: parts of <= $((part / 1048576)) MiB"
python3 scripts/gpu_pack.py pack "$wheel" --out "$out" --part-bytes "$part" --keep-arch "$keep"

n=$(ls -d "$out"/call* | wc -l)
echo
echo "Device calls (docs/gpu.md), back to back (a machine idle for 30 s is given back):"
echo "  call 1: carry [\"$out/call1\"], command: bash scripts/gpu_evidence.sh A"
for k in $(seq 2 $((n - 1))); do
    echo "  call $k: carry [\"$out/call$k\"], command: bash scripts/gpu_evidence.sh stash"
done
last=$(( n > 1 ? n : 1 ))
echo "  call $(( n > 1 ? n : 2 )): carry [\"$out/call$last\"], command: bash scripts/gpu_evidence.sh B"
