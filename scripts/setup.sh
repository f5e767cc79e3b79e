#!/usr/bin/env bash
# Install yolo-master (editable) with its test, export and OpenVINO extras into the active Python environment.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e ".[dev,export,openvino]"
