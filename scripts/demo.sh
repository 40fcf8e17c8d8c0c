#!/usr/bin/env bash
# The main job on a fresh machine: set up, then ask a question about a long document with the embedded model.
# The window is set to 512 tokens so that the example document (1.3k tokens) does not fit in context; the
# answer is printed in mode icl (truncated reading alone) beside lift+icl (the adapted model, the paper's setting).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/liftlm ask --document examples/kellmere.txt --window 512 --mode icl,lift+icl \
  --question "${1:-How long was the Kellmere rope walk?}"
