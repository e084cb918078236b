#!/usr/bin/env bash
# Verify the TensorRT path end to end on a machine with TensorRT, cuda-python and an NVIDIA GPU.
# First, in seconds: TensorRT parses and quickly builds (strongly typed, one small profile)
# every committed graph - the shipped bundle, the test bundle, then the shipped bundle's fp16
# conversion - and says where the static check (v2a-export check-trt) disagrees with it
# (scripts/trt_parse_first.py; benchmarks/results/trt_parse_*.json). Then: export tiny and
# small_16k (random weights), build their engines, gate every engine and the end-to-end waveform
# against the fp32 PyTorch reference, check seeds and the CUDA graph, time it, and write
# benchmarks/results/tensorrt_<gpu>.{json,md}. See scripts/verify_tensorrt.py.
#
#   scripts/verify_tensorrt.sh [--variants tiny,small_16k] [--out DIR] [--runs N]
#
# Needs: pip install -e ".[export,tensorrt]" (TensorRT >= 10.1; the tensorrt wheels come from
# NVIDIA's package index). Exit status 1 when a gate fails, 2 when the machine cannot run it.
set -euo pipefail
cd "$(dirname "$0")/.."

python - <<'EOF' || exit 2
import sys
from v2a_runtime.backends import BackendError
from v2a_runtime.backends.tensorrt.env import require_tensorrt
try:
    print("verifying on", require_tensorrt("verify_tensorrt.sh").platform.describe())
except BackendError as e:
    sys.exit(f"error: {e}")
EOF

# 1. parse-first: does TensorRT take our graphs at all? (seconds; stops here if not)
mkdir -p build/verify_tensorrt benchmarks/results
python scripts/trt_parse_first.py --out benchmarks/results/trt_parse_fp32.json
rm -rf build/verify_tensorrt/default_fp16
python -m v2a_export.cli convert-precision runtime/default_bundle \
    --out build/verify_tensorrt/default_fp16 --no-validate -q >/dev/null
python scripts/trt_parse_first.py build/verify_tensorrt/default_fp16 \
    --out benchmarks/results/trt_parse_fp16.json

# 2. the full verification
python scripts/verify_tensorrt.py "$@"
# The requires_trt tests build and check the test bundle's engines too.
python -m pytest tests/test_engines_trt.py tests/test_engines.py -q -rs
