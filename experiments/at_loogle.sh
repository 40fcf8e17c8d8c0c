#!/usr/bin/env bash
# LooGLE short-dependency QA with and without auxiliary tasks (AT) and pre-LIFT SFT (issue: AT and SFT).
# Test documents: the first 2 of shortdep_qa (José Luis Picardo; Muhammad Iqbal's political philosophy), cut to
# their first 3000 tokens, keeping the questions whose evidence lies inside (5 + 10); window 1024, so `icl` sees
# the head and tail of each cut document. SFT corpus, disjoint from them: shortdep_qa documents 3-5 and longdep_qa
# documents 2-3 (other articles), cut to 1500 tokens, with their own QA pairs inside the cut (30 keyphrase items for
# documents that keep none), one epoch of segments then one of segments + QA. Answers are capped at 64 tokens (CPU time; the same cap for every row).
# Usage: bash experiments/at_loogle.sh [base] [base+at] [sft] [sft+at] [table]
#   (each part resumes; writes experiments/results/at-loogle/<variant>/, and table.md over all four)
set -euo pipefail
cd "$(dirname "$0")/.."
LIFTLM=${LIFTLM:-.venv/bin/liftlm}
OUT=experiments/results/at-loogle
LOOGLE=${LOOGLE:-../shared/data/loogle}
WORK=${LIFTLM_HOME:-$HOME/.cache/liftlm}/at-loogle
SFT_MODEL=$WORK/sft-model
TEST=(--benchmark loogle --data "$LOOGLE/shortdep_qa.jsonl" --documents 2 --max-doc-tokens 3000 --window 1024
      --max-new-tokens 64 --objective ct --quiet)
# AT: 150 statement and key-phrase questions spread over the sentences, asked without the document, 2 stage-2
# epochs (CPU time; the two 3k-token cuts have 110 and 77 sentences of 5+ words)
AT=(--qa-pairs 150 --qa-generator keyphrase --qa-context-tokens 0 --qa-epochs 2)
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(base base+at sft sft+at table)
mkdir -p "$WORK"

for part in "${parts[@]}"; do
  case "$part" in
    base)
      "$LIFTLM" eval "${TEST[@]}" --methods icl,lift+icl --out "$OUT/base" ;;
    base+at)
      "$LIFTLM" eval "${TEST[@]}" --methods lift+icl "${AT[@]}" --out "$OUT/base+at" ;;
    sft|sft+at)
      if [ ! -d "$SFT_MODEL" ]; then
        corpus=$WORK/sft-corpus.jsonl
        { sed -n 3,5p "$LOOGLE/shortdep_qa.jsonl"; sed -n 2,3p "$LOOGLE/longdep_qa.jsonl"; } > "$corpus"
        "$LIFTLM" sft --corpus "$corpus" --max-doc-tokens 1500 --qa-pairs 30 --qa-generator keyphrase \
          --epochs 1 --qa-epochs 1 --out "$SFT_MODEL"
      fi
      mkdir -p "$OUT/sft"
      cp "$SFT_MODEL/liftlm_sft.json" "$OUT/sft/liftlm_sft.json"
      if [ "$part" = sft ]; then
        "$LIFTLM" eval "${TEST[@]}" --base "$SFT_MODEL" --methods icl,lift+icl --out "$OUT/sft"
      else
        "$LIFTLM" eval "${TEST[@]}" --base "$SFT_MODEL" --methods lift+icl "${AT[@]}" --out "$OUT/sft+at"
      fi ;;
    table)
      "${PYTHON:-.venv/bin/python}" experiments/compare_runs.py base="$OUT/base" base+AT="$OUT/base+at" SFT="$OUT/sft" \
        SFT+AT="$OUT/sft+at" > "$OUT/table.md"
      cat "$OUT/table.md" ;;
    *) echo "unknown part: $part (base, base+at, sft, sft+at, table)" >&2; exit 2 ;;
  esac
done
