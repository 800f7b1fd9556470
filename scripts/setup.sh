#!/usr/bin/env bash
# Create .venv and install twotower with its test tools. Idempotent: a second call only checks.
# The CPU build of PyTorch is installed first and pinned, so that no multi-GB CUDA build is pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
fi
# The spark extra lets the test suite check the Spark engine against DuckDB (Java 17 is on the machine).
.venv/bin/python -m pip install --quiet -e ".[dev,spark]"
