#!/usr/bin/env bash
# Install, then distil a digits CNN into a small MLP through a local `distill up` (examples/quickstart.py).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh
exec .venv/bin/python examples/quickstart.py "$@"
