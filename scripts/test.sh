#!/usr/bin/env bash
# The test command (README): lint, then the CPU-only, offline pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check yolo_master tests scripts export
python -m pytest -q tests "$@"
