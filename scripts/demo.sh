#!/usr/bin/env bash
# The main job on a fresh machine: set up, then ask a question about a long document with the embedded model.
# The window is set to 512 tokens so that the example document (1.3k tokens) does not fit in context.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/liftlm ask --document examples/kellmere.txt --window 512 \
  --question "${1:-What is the password written on the lid of the strongbox?}"
