#!/usr/bin/env bash
# The main job on a fresh machine: set up, then ask a question about a long document with the embedded model.
# The window is set to 512 tokens so that the example document (1.3k tokens) does not fit in context; the
# answer is printed in mode icl (truncated reading alone) beside lift+icl (the adapted model, the paper's setting).
# The question's answer (1964) lies in the middle of the document, outside the window. The adapter is trained by
# context distillation (the default objective) with 8 prompts per chunk, one sample a step at lr 2e-4: the 135M
# model needs them (with the default 4 prompts it answers "1988", with the default batches of 8 at 5.6e-4 "1994";
# docs/results.md#demo). How long it takes: docs/efficiency.md#commands-timed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/liftlm ask --document examples/kellmere.txt --window 512 --distill-prompts 8 \
  --batch-size 1 --learning-rate 2e-4 --mode icl,lift+icl \
  --question "${1:-In what year was the railway line to Kellmere shut?}"
