#!/usr/bin/env bash
# The main job on a fresh machine: set up, then `execrl demo` on the embedded default market.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/execrl demo "$@"
