#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Real-data tests skip when ../shared/data is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
