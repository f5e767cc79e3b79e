#!/usr/bin/env bash
# Install yolo-master (editable) with its test and export extras and every export format that shares one
# environment (README "Export formats"; the TensorFlow family needs its own: pip install -e '.[tensorflow]').
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e ".[dev,export,formats]"
