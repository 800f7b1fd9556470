#!/usr/bin/env bash
# Set up (if needed) and run the seed's experiments on KuaiRand-Pure.
# Usage: scripts/run.sh [DATA_DIR]   (default: ../shared/data/kuairand-pure)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -ge 1 ]; then
    exec .venv/bin/twotower run configs/kuairand_blip_history.toml --data "$1"
fi
exec .venv/bin/twotower run configs/kuairand_blip_history.toml
