#!/usr/bin/env bash
# The TensorFlow family of export formats (saved_model, pb, litert/tflite/tfjs), and xilinx (AMD Quark pins onnx
# <= 1.22), in an environment of its own,
# .venv-tf: tensorflow 2.19 pins numpy, protobuf and onnx below what the main environment (scripts/setup.sh)
# uses. scripts/test.sh runs the TensorFlow format tests there when it exists (README "Export formats").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${YOLO_MASTER_TF_VENV:-.venv-tf}"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -e ".[dev,export,tensorflow,xilinx]" -c scripts/tensorflow-constraints.txt
