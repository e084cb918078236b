#!/usr/bin/env bash
# The GPU evidence kit (docs/gpu.md): one command per device call on a lent GPU machine.
#
#   scripts/gpu_evidence.sh A [--dry-run] [options]   # PyTorch stage: needs nothing installed
#   scripts/gpu_evidence.sh stash                     # keep the carried onnxruntime-gpu part
#   scripts/gpu_evidence.sh B [--dry-run] [options]   # onnxruntime-gpu stage (all parts stashed)
#
# Every call first stashes the parts of scripts/gpu_pack.sh it carries (.gpu/call<k>/) into
# $V2A_GPU_SCRATCH (default /tmp/v2a-gpu), which outlives the call while the machine stays
# warm. Stage B joins them and unpacks onnxruntime-gpu there. Results go to $OUT (the device
# tool's folder that comes back; default benchmarks/results/gpu_kit), the stage's log too.
# Options after the stage go to scripts/gpu_evidence.py (--budget, --variants, --components).
set -uo pipefail
cd "$(dirname "$0")/.."

stage=${1:-}
shift || true
py=${PYTHON:-python3}
out=${OUT:-benchmarks/results/gpu_kit}
scratch=${V2A_GPU_SCRATCH:-/tmp/v2a-gpu}
mkdir -p "$out" "$scratch/path"
export PYTHONUNBUFFERED=1
# The project without installing it: the import name v2a_runtime is the folder runtime/.
ln -sfn "$PWD/runtime" "$scratch/path/v2a_runtime"
export PYTHONPATH="$scratch/path:$PWD${PYTHONPATH:+:$PYTHONPATH}"

for folder in .gpu/call*/; do
    [ -f "$folder/manifest.json" ] || continue
    "$py" scripts/gpu_pack.py stash "$folder" --into "$scratch/parts" || exit 1
done

dry=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry=1; done

case "$stage" in
    stash)
        ;;
    A)
        "$py" scripts/gpu_evidence.py stage-a --out "$out" --scratch "$scratch" "$@" 2>&1 \
            | tee "$out/stage_a.log"
        ;;
    B)
        if [ "$dry" = 0 ]; then
            "$py" scripts/gpu_pack.py unpack --parts "$scratch/parts" --target "$scratch/site" \
                || exit 1
            # onnxruntime-gpu links the CUDA 13 libraries PyTorch's wheels bring (cuBLAS, cuDNN,
            # cuRAND, cuFFT, the runtime): put their folders on the loader's path.
            site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
            libs=$(find "$site/nvidia" "$site/torch/lib" -name 'lib*.so*' -printf '%h\n' \
                2>/dev/null | sort -u | paste -sd:)
            [ -n "$libs" ] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            export PYTHONPATH="$scratch/site:$PYTHONPATH"
        fi
        "$py" scripts/gpu_evidence.py stage-b --out "$out" --scratch "$scratch" "$@" 2>&1 \
            | tee "$out/stage_b.log"
        ;;
    *)
        echo "usage: $0 A|stash|B [--dry-run] [options] (docs/gpu.md)" >&2
        exit 2
        ;;
esac
