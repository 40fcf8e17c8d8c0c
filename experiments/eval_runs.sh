#!/usr/bin/env bash
# The committed result runs of `liftlm eval` on this machine (2 CPU cores, the embedded SmolLM2-135M-Instruct,
# default LIFT settings: ℓ=256, s=96, CT context 256, LoRA r16 on q/k/v/o, lr 2e-4, 2 epochs).
# Each run resumes where it stopped (same --out). Usage: bash experiments/eval_runs.sh [ruler] [niah] [loogle] [qwen] [qwen-distill]
set -euo pipefail
cd "$(dirname "$0")/.."
LIFTLM=${LIFTLM:-.venv/bin/liftlm}
OUT=experiments/results/eval
LOOGLE=${LOOGLE:-../shared/data/loogle}
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(ruler niah loogle qwen)

for run in "${runs[@]}"; do
  case "$run" in
    ruler)  # multi-key (distractor needles) and multi-value retrieval; a 512-token window cannot hold the input
      "$LIFTLM" eval --benchmark ruler --variants multikey,multivalue --lengths 2000,4000 --samples 1 \
        --methods icl,lift+icl,rag --window 512 --objective ct --out "$OUT/ruler" ;;
    niah)  # the paper's Figure 4 grid at CPU scale; window 1024 holds the needle only in 1k documents
      "$LIFTLM" eval --benchmark niah --lengths 1000,2000,4000,8000 --depths 0,0.25,0.5,0.75,1 \
        --methods icl,lift,lift+icl,rag --window 1024 --objective ct --out "$OUT/niah" ;;
    loogle)  # first 2 documents of each task, cut to their first 12000 tokens (questions with evidence inside);
             # answers capped at 96 tokens: past that the 135M model only rambles (CPU time)
      "$LIFTLM" eval --benchmark loogle --data "$LOOGLE" --task shortdep_qa,longdep_qa --documents 2 \
        --max-doc-tokens 12000 --max-new-tokens 96 --methods icl,lift+icl,rag,lift+rag --window 1024 --objective ct \
        --out "$OUT/loogle" ;;
    qwen)  # real QA with a model that can answer: Qwen2.5-Coder-1.5B-Instruct (scripts/fetch_qwen1.5b.sh),
           # LooGLE shortdep_qa cut to its first 3000 tokens, window 512, answers capped at 96 tokens (CPU time);
           # the judge verdicts (True/False semantic equivalence, the paper's GPT-4 judge's question) were added
           # by a second run of the same command after the answers
      QWEN=${QWEN:-$(bash scripts/fetch_qwen1.5b.sh)}
      "$LIFTLM" eval --benchmark loogle --data "$LOOGLE" --task shortdep_qa --documents 2 --model "$QWEN" \
        --max-doc-tokens 3000 --max-new-tokens 96 --methods icl,lift+icl,rag --window 512 --objective ct \
        --judge "$QWEN" --out "$OUT/loogle-qwen1.5b" ;;  # judge: the same model (no stronger one here)
    qwen-distill)  # the same documents, questions, window and answer cap as `qwen`, with the default objective
                   # (context distillation: 4 prompts a chunk, 2 written questions per fact-bearing sentence, LoRA
                   # on the attention and MLP projections); icl and rag again so the table stands on its own
      QWEN=${QWEN:-$(bash scripts/fetch_qwen1.5b.sh)}
      "$LIFTLM" eval --benchmark loogle --data "$LOOGLE" --task shortdep_qa --documents 2 --model "$QWEN" \
        --max-doc-tokens 3000 --max-new-tokens 96 --methods icl,rag,lift,lift+icl,lift+rag --window 512 \
        --objective distill --judge "$QWEN" --out "$OUT/loogle-qwen1.5b-distill" ;;
    *) echo "unknown run: $run (ruler, niah, loogle, qwen, qwen-distill)" >&2; exit 2 ;;
  esac
done
