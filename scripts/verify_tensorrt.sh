#!/usr/bin/env bash
# Verify the TensorRT path end to end on a machine with TensorRT, cuda-python and an NVIDIA GPU:
# export tiny and small_16k (random weights), build their engines, gate every engine and the
# end-to-end waveform against the fp32 PyTorch reference, check seeds and the CUDA graph, time
# it, and write benchmarks/results/tensorrt_<gpu>.{json,md}. See scripts/verify_tensorrt.py.
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

python scripts/verify_tensorrt.py "$@"
# The requires_trt tests build and check the test bundle's engines too.
python -m pytest tests/test_engines_trt.py tests/test_engines.py -q -rs
