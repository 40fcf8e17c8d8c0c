#!/usr/bin/env bash
# Issue 27, item 3: LIFT on documents many times the window, each stage one command that writes its results under
# experiments/results/. Run one stage at a time, alone on the machine, from a frozen worktree (edits must not
# change a running measurement); every stage resumes where it stopped (the eval's answers and the adapter store
# are kept; an interrupted training resumes from its checkpoint).
#
#   bash experiments/long_inputs.sh STAGE
#
# Stages, with the time each takes on this project's 2-core CPU (the estimate `liftlm internalize` prints):
#   curve-embedded  the default recipe's cost against length, embedded model, window 512: 2k to 32k tokens
#                   (~0.1 s a token: ~1.7 h in all)
#   curve-qwen      the same on Qwen2.5-Coder-1.5B: 2k, 4k, 8k (0.49-0.63 s a token with batches of 8: ~2.4 h;
#                   results committed; an interrupted run keeps its finished rows in the results folder's .cost-work
#                   and resumes)
#   ruler-embedded  RULER-style multi-query retrieval, embedded model at its own 8k window, 16k tokens: icl, rag,
#                   lift+icl (one adapter: 62 min, teacher 8 + student 54; results committed)
#   ruler-embedded-32k  the same at 32k tokens (~1.7 h: the student's samples attend to the 7.7k-token view;
#                   results committed)
#   ruler-embedded-cloze  ruler-embedded with --distill-cloze: every sentence with a name or a number asked once,
#                   its fact blanked (that run's items asked about no needle: their keys are lowercase words)
#   niah-embedded   the classic needle at 5 depths, 16k tokens, embedded model at its own window: icl, rag, lift+icl
#                   (one adapter per depth, each like ruler-embedded's: ~5 h)
#   facts-qwen-8k   20 made-up facts in an 8k-token haystack, Qwen 1.5B, window 2048: oracle, icl, rag, lift,
#                   lift+icl, lift+rag (the baselines' 72 answers first: 42 min, the oracle reading the 8k tokens
#                   once, not once a question; then the teacher, 882 prompts, ~40 min, and the student, ~3-4 h)
#   loogle-qwen-8k  LooGLE long-dependency QA, documents cut to 8k tokens (the questions whose evidence lies in
#                   the cut: 22 of the sample's 43, over all 5 documents, with Qwen's tokenizer), Qwen 1.5B,
#                   window 2048: icl, rag, lift+icl, lift+rag (~3 h a document, ~15 h in all: a GPU's job)
#   loogle-qwen-8k-doc1  the same on the first document only (4 questions survive its cut; ~3 h here; results
#                   committed)
#   loogle-qwen-8k-doc1-chunk  the same with the student's third view, lift+chunk (the teacher's items are
#                   cached by the stage above: the student only, ~1.6 h alone here; results committed)
#   loogle-qwen-8k-doc1-words  the first document with --distill-question-check words (written questions kept
#                   when they share a content word with their sentence: its "Where can you find the book?" was
#                   dropped by the default check): a new teacher (~950 prompts, ~1 h here) and the student
#                   (~2.7 h by the estimate `liftlm internalize` prints: ~3.6 h in all; it resumes from its checkpoint)
#   loogle-qwen-8k-doc1-words-scale  the words stage's adapter (stored: no training) answering with its LoRA update
#                   at half weight, --adapter-scale 0.5 (for lift+rag's override: the adapter answered from its weights
#                   over a passage that held the answer): the 16 answers only, ~10 min
#   loogle-qwen-8k-doc1-cloze  the first document with --distill-cloze (every fact-bearing sentence also asked
#                   once with its fact blanked): a new teacher, ~2.5 h here
#   cost-grouped-embedded  issue 27's cost bench, default against --group-by-length (the student's batches of
#                   about one length: fewer pads), embedded model, 2k facts document (~2.5 min; results committed)
#   cost-grouped-qwen  the same on Qwen 1.5B (~40 min)
#   cost-packed-embedded  the student's batches padded (one row a sample, --no-pack-batches) against packed (the
#                   default since packing landed), embedded model, 2k facts document (~3 min)
#   cost-packed-qwen  the same on Qwen 1.5B (~35 min)
#   cost-epochs-qwen  one sample a step (the recipe before batches) against one epoch of the default (batches of 8,
#                   packed) and the default, one teacher, Qwen 1.5B, 2k facts document (~45 min fast day, ~1.7 h slow)
#   cost-answers-embedded  the default against --no-question-grad (the questions forward only, the answer
#                   positions forward and backward), embedded model, 2k facts document (~5 min)
#   cost-answers-qwen  the same on Qwen 1.5B (~40 min)
set -euo pipefail
cd "$(dirname "$0")/.."
LIFTLM=${LIFTLM:-.venv/bin/liftlm}
QWEN=${QWEN:-${LIFTLM_HOME:-$HOME/.cache/liftlm}/gguf/qwen2.5-coder-1.5b-instruct.gguf}
OUT=experiments/results
stage=${1:?"a stage: curve-embedded, curve-qwen, ruler-embedded, ruler-embedded-cloze, ruler-embedded-32k, niah-embedded, facts-qwen-8k, loogle-qwen-8k, loogle-qwen-8k-doc1, loogle-qwen-8k-doc1-chunk, loogle-qwen-8k-doc1-words, loogle-qwen-8k-doc1-words-scale, loogle-qwen-8k-doc1-cloze, cost-grouped-embedded, cost-grouped-qwen, cost-packed-embedded, cost-packed-qwen, cost-epochs-qwen, cost-answers-embedded, cost-answers-qwen"}
case $stage in
  curve-embedded)
    "$LIFTLM" bench cost --tokens 2k,4k,8k,16k,32k --window 512 --out "$OUT/cost-curve-embedded" ;;
  curve-qwen)
    "$LIFTLM" bench cost --model "$QWEN" --tokens 2k,4k,8k --window 512 --out "$OUT/cost-curve-qwen1.5b" ;;
  ruler-embedded)
    "$LIFTLM" eval --benchmark ruler --variants multiquery --lengths 16000 --methods icl,rag,lift+icl \
      --out "$OUT/eval/ruler-embedded-16k" ;;
  ruler-embedded-cloze)
    "$LIFTLM" eval --benchmark ruler --variants multiquery --lengths 16000 --methods icl,rag,lift+icl \
      --distill-cloze --out "$OUT/eval/ruler-embedded-16k-cloze" ;;
  ruler-embedded-32k)
    "$LIFTLM" eval --benchmark ruler --variants multiquery --lengths 32000 --methods icl,rag,lift+icl \
      --out "$OUT/eval/ruler-embedded-32k" ;;
  niah-embedded)
    "$LIFTLM" eval --benchmark niah --lengths 16000 --depths 0.1,0.3,0.5,0.7,0.9 --methods icl,rag,lift+icl \
      --out "$OUT/eval/niah-embedded-16k" ;;
  facts-qwen-8k)
    "$LIFTLM" eval --benchmark facts --model "$QWEN" --lengths 8000 --facts 20 --controls 4 --window 2048 \
      --methods oracle,icl,rag,lift,lift+icl,lift+rag --out "$OUT/facts-qwen1.5b-8k" ;;
  loogle-qwen-8k)
    "$LIFTLM" eval --benchmark loogle --model "$QWEN" --data ../shared/data/loogle --task longdep_qa \
      --max-doc-tokens 8000 --window 2048 --methods icl,rag,lift+icl,lift+rag --out "$OUT/eval/loogle-longdep-qwen1.5b-8k" ;;
  loogle-qwen-8k-doc1)
    "$LIFTLM" eval --benchmark loogle --model "$QWEN" --data ../shared/data/loogle --task longdep_qa \
      --max-doc-tokens 8000 --documents 1 --window 2048 --methods icl,rag,lift+icl,lift+rag \
      --out "$OUT/eval/loogle-longdep-qwen1.5b-8k" ;;
  loogle-qwen-8k-doc1-chunk)
    "$LIFTLM" eval --benchmark loogle --model "$QWEN" --data ../shared/data/loogle --task longdep_qa \
      --max-doc-tokens 8000 --documents 1 --window 2048 --methods icl,rag,lift+icl,lift+rag \
      --distill-views lift+icl,lift,lift+chunk --out "$OUT/eval/loogle-longdep-qwen1.5b-8k-chunk" ;;
  loogle-qwen-8k-doc1-words)
    "$LIFTLM" eval --benchmark loogle --model "$QWEN" --data ../shared/data/loogle --task longdep_qa \
      --max-doc-tokens 8000 --documents 1 --window 2048 --methods icl,rag,lift+icl,lift+rag \
      --distill-question-check words --out "$OUT/eval/loogle-longdep-qwen1.5b-8k-words" ;;
  loogle-qwen-8k-doc1-words-scale)
    "$LIFTLM" eval --benchmark loogle --model "$QWEN" --data ../shared/data/loogle --task longdep_qa \
      --max-doc-tokens 8000 --documents 1 --window 2048 --methods icl,rag,lift+icl,lift+rag \
      --distill-question-check words --adapter-scale 0.5 --out "$OUT/eval/loogle-longdep-qwen1.5b-8k-words-scale0.5" ;;
  loogle-qwen-8k-doc1-cloze)
    "$LIFTLM" eval --benchmark loogle --model "$QWEN" --data ../shared/data/loogle --task longdep_qa \
      --max-doc-tokens 8000 --documents 1 --window 2048 --methods icl,rag,lift+icl,lift+rag \
      --distill-cloze --out "$OUT/eval/loogle-longdep-qwen1.5b-8k-cloze" ;;
  cost-grouped-embedded)
    "$LIFTLM" bench cost --tokens 2k --facts 10 --data-seed 0 --window 512 \
      --recipe 'default=--no-pack-batches' --recipe 'grouped=--group-by-length --no-pack-batches' \
      --out "$OUT/cost-embedded-grouped" ;;  # padded rows, as the default ran then (bc74f3c)
  cost-grouped-qwen)
    "$LIFTLM" bench cost --model "$QWEN" --tokens 2k --facts 10 --data-seed 0 --window 512 \
      --recipe 'default=--no-pack-batches' --recipe 'grouped=--group-by-length --no-pack-batches' \
      --out "$OUT/cost-qwen1.5b-grouped" ;;  # padded rows, as the default ran then (bc74f3c)
  cost-packed-embedded)
    "$LIFTLM" bench cost --tokens 2k --facts 10 --data-seed 0 --window 512 --recipe 'padded=--no-pack-batches' \
      --recipe default= --out "$OUT/cost-embedded-packed" ;;
  cost-packed-qwen)
    "$LIFTLM" bench cost --model "$QWEN" --tokens 2k --facts 10 --data-seed 0 --window 512 \
      --recipe 'padded=--no-pack-batches' --recipe default= --out "$OUT/cost-qwen1.5b-packed" ;;
  cost-epochs-qwen)
    "$LIFTLM" bench cost --model "$QWEN" --tokens 2k --facts 10 --data-seed 0 --window 512 \
      --recipe 'one-a-step=--batch-size 1 --learning-rate 2e-4' --recipe 'one-epoch=--epochs 1' --recipe default= \
      --out "$OUT/cost-qwen1.5b-epochs" ;;
  cost-answers-embedded)
    "$LIFTLM" bench cost --tokens 2k --facts 10 --data-seed 0 --window 512 --recipe default= \
      --recipe 'answers-only=--no-question-grad' --out "$OUT/cost-embedded-answers" ;;
  cost-answers-qwen)
    "$LIFTLM" bench cost --model "$QWEN" --tokens 2k --facts 10 --data-seed 0 --window 512 --recipe default= \
      --recipe 'answers-only=--no-question-grad' --out "$OUT/cost-qwen1.5b-answers" ;;
  *)
    echo "long_inputs.sh: unknown stage $stage" >&2; exit 2 ;;
esac
