#!/usr/bin/env bash
# The test command (README): lint, then the CPU-only, offline pytest suite; then the TensorFlow export formats'
# tests in .venv-tf, where scripts/setup_tensorflow.sh made it (they need an environment of their own).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check yolo_master tests scripts export
python -m pytest -q tests "$@"
TF_PYTHON="${YOLO_MASTER_TF_VENV:-.venv-tf}/bin/python"
if [ -x "$TF_PYTHON" ]; then
    echo "TensorFlow export formats, in $(dirname "$(dirname "$TF_PYTHON")"):"
    status=0
    "$TF_PYTHON" -m pytest -q tests -m tensorflow "$@" || status=$?
    [ "$status" -eq 0 ] || [ "$status" -eq 5 ] || exit "$status"  # 5: the arguments selected none of them
else
    echo "TensorFlow export formats skipped: no .venv-tf (bash scripts/setup_tensorflow.sh makes it)"
fi
