#!/usr/bin/env bash
# Set up, then run the whole test suite: unit tests on a tiny random model, end-to-end tests on the embedded model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
