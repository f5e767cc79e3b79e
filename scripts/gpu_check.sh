#!/usr/bin/env bash
# GPU checks in one call (see scripts/gpu_check.py): engine build + parity where TensorRT is installed,
# FP16 batch-1 latency of YOLO-Master-N, the v0 release's N (esmoe-n), YOLO11n and YOLO12n (eager, CUDA graph, TensorRT) in one table.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python -c "import tensorrt; print('TensorRT', tensorrt.__version__)" 2>/dev/null || echo "TensorRT: not installed (engine rows will say so)"
python scripts/gpu_check.py "$@"
