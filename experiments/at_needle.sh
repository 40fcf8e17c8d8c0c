#!/usr/bin/env bash
# Needle recall from the weights with and without auxiliary tasks (issue: AT and pre-LIFT SFT).
# Haystack: the shared Paul Graham essays at 2k tokens, the standard needle at depths 0..1, scored by its keywords.
# Writes experiments/results/at-needle/<variant>/ (predictions.jsonl, summary.md, niah_heatmap.png).
set -euo pipefail
cd "$(dirname "$0")/.."
LIFTLM=${LIFTLM:-.venv/bin/liftlm}
OUT=experiments/results/at-needle
GRID=(--benchmark niah --lengths 2000 --depths 0,0.25,0.5,0.75,1 --quiet)
CT=(--objective ct)  # runs 1-7: the paper's objective (named: the default objective is distill now)
# Auxiliary tasks over every sentence, asked without the document (as mode lift asks): statement questions
# ("What is <subject>?" for "<subject> is ...") and key-phrase questions, answered by the sentence.
# 3 stage-2 epochs (runs 2-4, synthesizer v2), then 5 (runs 5-7, synthesizer v3).
AT=(--qa-pairs 400 --qa-generator keyphrase --qa-context-tokens 0 --learning-rate 5e-4 --qa-epochs 3)
AT5=(--qa-pairs 400 --qa-generator keyphrase --qa-context-tokens 0 --learning-rate 5e-4 --qa-epochs 5)

only=${1:-all}  # all | distill (run 8 alone) | distill-default (run 9 alone) | oracle (run 10 alone)
if [[ $only == all ]]; then
# 1. LIFT alone, segments only, no document in context
"$LIFTLM" eval "${CT[@]}" "${GRID[@]}" --methods lift --out "$OUT/segments"
# 2. LIFT alone, segments + auxiliary QA (synthesizer v2; segments+at holds v1's result, key phrases only)
"$LIFTLM" eval "${CT[@]}" "${GRID[@]}" --methods lift "${AT[@]}" --out "$OUT/segments+at-v2"
# 3. a 512-token window that cannot hold a 2k haystack: at depths 0.25-0.75 the needle is outside it
"$LIFTLM" eval "${CT[@]}" --benchmark niah --lengths 2000 --depths 0.25,0.5,0.75 --quiet --methods icl,lift+icl --window 512 \
  "${AT[@]}" --out "$OUT/window512+at"
# 4. the AT adapters of run 2 (reused from the store: same documents and settings), asked other questions:
#    a paraphrase of the needle question, and a general-knowledge question unrelated to the document
"$LIFTLM" eval "${CT[@]}" "${GRID[@]}" --methods lift "${AT[@]}" --out "$OUT/segments+at-v2-paraphrase" \
  --question "What should you do in San Francisco on a sunny day?"
"$LIFTLM" eval "${CT[@]}" "${GRID[@]}" --methods lift "${AT[@]}" --out "$OUT/segments+at-v2-unrelated" \
  --question "What is the capital of France?" --keywords paris
"$LIFTLM" eval "${CT[@]}" "${GRID[@]}" --methods lift --out "$OUT/segments-unrelated" \
  --question "What is the capital of France?" --keywords paris
# 5. five stage-2 epochs instead of three; the same adapters asked the paraphrase and the unrelated question
"$LIFTLM" eval "${CT[@]}" "${GRID[@]}" --methods lift "${AT5[@]}" --out "$OUT/segments+at5"
"$LIFTLM" eval "${CT[@]}" "${GRID[@]}" --methods lift "${AT5[@]}" --out "$OUT/segments+at5-paraphrase" \
  --question "What should you do in San Francisco on a sunny day?"
"$LIFTLM" eval "${CT[@]}" "${GRID[@]}" --methods lift "${AT5[@]}" --out "$OUT/segments+at5-unrelated" \
  --question "What is the capital of France?" --keywords paris
# 6. the same with --training-mode recurrent (each document token trained once per epoch, overlap kept as a
#    Transformer-XL memory): recall and training time against run 5
"$LIFTLM" eval "${CT[@]}" "${GRID[@]}" --methods lift "${AT5[@]}" --training-mode recurrent --out "$OUT/segments+at5-recurrent"
# 7. run 6 with 3 stage-1 epochs of segments instead of 2 (a recurrent epoch costs a third of a paper epoch)
"$LIFTLM" eval "${CT[@]}" "${GRID[@]}" --methods lift "${AT5[@]}" --training-mode recurrent --epochs 3 \
  --out "$OUT/segments+at5-recurrent-ep3"
fi
# 8. context distillation instead of segments (the student sees the question alone, as mode lift asks it):
#    4 prompts of 32 answer tokens per chunk; the same adapters asked the paraphrase and the unrelated question
DISTILL=(--objective distill --distill-prompts 4 --distill-answer-tokens 32 --distill-questions 0 --distill-views lift)
if [[ $only == all || $only == distill ]]; then
  "$LIFTLM" eval "${GRID[@]}" --methods lift "${DISTILL[@]}" --out "$OUT/distill"
  "$LIFTLM" eval "${GRID[@]}" --methods lift "${DISTILL[@]}" --out "$OUT/distill-paraphrase" \
    --question "What should you do in San Francisco on a sunny day?"
  "$LIFTLM" eval "${GRID[@]}" --methods lift "${DISTILL[@]}" --out "$OUT/distill-unrelated" \
    --question "What is the capital of France?" --keywords paris
fi
# 9. the default recipe (distill: 4 prompts of 32 tokens a chunk, 2 written questions per sentence, LoRA on the MLP
#    projections too, both student views), asked as run 8 asks
if [[ $only == all || $only == distill-default ]]; then
  "$LIFTLM" eval "${GRID[@]}" --methods lift --out "$OUT/distill-default"
  "$LIFTLM" eval "${GRID[@]}" --methods lift --out "$OUT/distill-default-paraphrase" \
    --question "What should you do in San Francisco on a sunny day?"
  "$LIFTLM" eval "${GRID[@]}" --methods lift --out "$OUT/distill-default-unrelated" \
    --question "What is the capital of France?" --keywords paris
fi
# 10. the ceiling of any recipe whose teacher is the model itself: the base model with the whole 2k haystack in
#     context (mode icl, the model's own 8k window), asked the paraphrase
if [[ $only == all || $only == oracle ]]; then
  "$LIFTLM" eval "${GRID[@]}" --methods icl --out "$OUT/oracle-paraphrase" \
    --question "What should you do in San Francisco on a sunny day?"
fi
