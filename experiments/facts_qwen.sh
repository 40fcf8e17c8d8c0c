#!/usr/bin/env bash
# Issue 12's facts benchmark on Qwen2.5-Coder-1.5B-Instruct: a 2k-token haystack with 10 made-up facts asked in
# paraphrase, window 512, and 4 general-knowledge controls. Run after scripts/fetch_qwen1.5b.sh (same LIFTLM_HOME).
# 1. the paper's objective (contextualized next-token training on segments): oracle, icl, rag, lift, lift+icl
# 2. context distillation (teacher = the base model with a chunk in context): lift, lift+icl
# 3. (ct+distill, only when asked for by name) both objectives, the paper's two-stage schedule
# 4. (distill-ce, only when asked for by name) the ablation: the same teacher items, next-token loss on its answers
# 5. (distill-long, only when asked for by name) distill's items, a student trained 4 epochs instead of 2 (the v3
#    student's loss was still falling after 2 epochs; lr 1e-3 with LoRA on the MLP too plateaued higher: stopped)
# 6. (ct-chat, only when asked for by name) the paper's objective with the CT samples inside the chat turn
# 7. (distill-written, only when asked for by name) distill's items plus 2 questions the teacher writes about each
#    sentence with a name or a number (--distill-questions 2), in other words than the sentence's; distill-written4:
#    4 questions per sentence; distill-written-mlp: distill-written's items (cached), LoRA on the MLP projections
#    too (what --target-modules auto, the default, picks for --objective distill); distill-written4-mlp:
#    distill-written4's items (cached), LoRA on the MLP projections too
# 8. (distill-asked / distill-names, only when asked for by name) the ablation of prompt kinds: distill-written's
#    teacher items (cached), the student trained on the written questions only / the name questions only (four
#    phrasings), each with the retention prompts (distill-names: started, stopped unfinished)
# 9. (doc2, only when asked for by name) a second document (data seed 1: another cut of the essays, 10 other facts
#    at the same depths, other controls): oracle, icl, rag and the default recipe (--objective distill with its
#    defaults, i.e. distill-written-mlp's settings) in lift and lift+icl
# 10. (one-view, only when asked for by name; issue 27's first cheaper recipe) the default recipe with the student
#    in the lift+icl view only (--distill-views lift+icl): 1.70x cheaper on this document (experiments/results/
#    cost-qwen1.5b); does lift still recall without its own view?
# 11. (one-epoch, only when asked for by name; issue 27) the default recipe, the student one epoch instead of two
# 12. (one-view-half-layers / doc2-one-view, only when asked for by name; issue 27) one view with LoRA on the upper
#    half of the layers; the one-view recipe on the second document
# 13. (cloze / doc2-cloze, only when asked for by name; issue 27) the default recipe with --distill-cloze: every
#    sentence with a name or a number also asked once with its fact blanked, in the slots of key phrases,
#    summaries and what-happens-next requests (and beyond them where a chunk is the last to hold it whole)
# 14. (clozes-only, only when asked for by name; issue 27) the ablation: cloze's teacher items (cached), the student
#    trained on the clozes and the retention prompts only (--distill-kinds cloze,retention)
# 15. (lean, only when asked for by name; issue 27) the cheapest recipe: no prompts per chunk and no written
#    questions, only the clozes (each fact-bearing sentence once) and their retention share
#    (--distill-prompts 0 --distill-questions 0 --distill-cloze)
# 16. (doc2-lean / lean-blanks3 / lean-lr5e-4 / doc2-lean-4epochs, only when asked for by name; issue 27) the lean
#    recipe on the second document; with each sentence asked as up to 3 clozes, each blanking another of its facts
#    (--distill-blanks 3); with the learning rate at 5e-4 (lean's teacher items, cached); on the second document
#    with 4 epochs (doc2-lean's items, cached)
# 17. (lean-v5 / lean-blanks3-v5, only when asked for by name; issue 27) the lean recipe on both documents with
#    items v5, whose grounding check keeps a cloze's short-number answer ("10", "159": before, every one was thrown
#    away, and with it half the lean recipe's facts: experiments/results/item-coverage-qwen1.5b); the same with
#    --distill-blanks 3
# 18. (names-clozes-lift, only when asked for by name; issue 27) items about the fact-bearing sentences only: two
#    name questions a chunk (--distill-prompts 2 leaves no slot for key phrases), every fact-bearing sentence as a
#    cloze, the summaries and what-happens-next requests not trained (--distill-kinds), no written questions, and
#    the student in the `lift` view only (no head+tail prefix: cheaper samples), both documents; names-clozes:
#    the same items in both views (doc 1 reuses names-clozes-lift's cached teacher items)
# 19. (batch8, only when asked for by name; issue 27) the default recipe with the student's samples 8 to a forward
#    pass and an optimizer step (--batch-size 8: samples sharing a prefix, left-padded; 8x fewer optimizer steps, the
#    GPU lever) at the learning rate scaled by about sqrt(8) (5.6e-4 against 2e-4), both documents: does recall
#    hold with 8x fewer steps? (this CPU cannot say what it saves on a GPU; it recalled more, and is the distill
#    default since: the flags are spelled out so that the stage stays what it measured); batch8-1epoch: one epoch
#    (batch8's teacher items, cached)
# 20. (batch32, only when asked for by name; issue 27) the default recipe with batches of 32 at about sqrt(32) times
#    the one-sample rate (1.1e-3): on an H100 the student took 5.5 s in batches of 32 against 20.8 s in batches of 8
#    (experiments/results/cost-h100), which would bring Qwen's projected end-to-end time past 4x; does recall hold
#    with 32x fewer optimizer steps? (batch8's teacher items, cached: the student and the answers only, ~25 min a
#    document here). One batch of 32 does not fit this machine's 24 GiB in fp32 (killed for memory at 24 GB), so
#    the 32 samples of a step come as 4 batches of 8 whose gradients add up (--grad-accum 4): the same steps
# 21. (words / doc2-words, only when asked for by name; issue 27) the default recipe with
#    --distill-question-check words: a written question is kept if it shares a content word with its sentence,
#    not only if it names one of its names (on LooGLE's Picardo document the teacher's "Where can you find the
#    book?" was dropped for not naming "Spain"): do the facts hold with more, vaguer written questions? (a new
#    teacher: ~1 h a document here)
# 22. (grouped, only when asked for by name; issue 27) the default recipe with --group-by-length: the student's
#    samples sorted by length in runs of 8 batches, so fewer pads run (the teacher's items cached: the student
#    and the answers, ~30 min a document here): do the facts hold with batches in that order?
# 23. (1epoch-lr1.1e-3, only when asked for by name; issue 27) one epoch of the default's packed batches of 8 at
#    twice the default rate (1.1e-3 against 5.6e-4: the same rate x steps as two epochs), both documents: does the
#    raised rate buy back the facts that one epoch at the default rate lost (`lift` 12 of 20 against 16)?
# 24. (answers-only, only when asked for by name; issue 27) the default recipe with --no-question-grad: each
#    sample's question runs forward only (as the shared prefix does) and only the positions that predict the
#    answer run backward, about 1.6x fewer FLOPs for the student; both documents (the teacher's items cached): do
#    the facts hold when the gradient no longer flows through the questions' keys/values?
# Writes experiments/results/facts-qwen1.5b/<objective>/ (predictions.jsonl, summary.md, summary.png, run.json).
set -euo pipefail
cd "$(dirname "$0")/.."
LIFTLM=${LIFTLM:-.venv/bin/liftlm}
MODEL=${MODEL:-${LIFTLM_HOME:-$HOME/.cache/liftlm}/gguf/qwen2.5-coder-1.5b-instruct.gguf}
OUT=experiments/results/facts-qwen1.5b
GRID=(--benchmark facts --model "$MODEL" --lengths 2000 --facts 10 --controls 4 --window 512)
only=${1:-all}
if [[ $only == all || $only == ct ]]; then
  "$LIFTLM" eval "${GRID[@]}" --methods oracle,icl,rag,lift,lift+icl --objective ct --out "$OUT/ct"
fi
if [[ $only == all || $only == distill ]]; then
  # 4 prompts of 32 answer tokens per chunk: the teacher answers each once (~20 s an item on 2 CPU cores); items v3
  # (no written questions: they came later, see distill-written)
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-prompts 4 \
    --distill-answer-tokens 32 --distill-questions 0 --out "$OUT/distill"
fi
if [[ $only == distill-ce ]]; then  # the ablation: distill's teacher items (cached) as plain next-token targets
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-prompts 4 \
    --distill-answer-tokens 32 --distill-questions 0 --distill-loss ce --out "$OUT/distill-ce"
fi
if [[ $only == ct+distill ]]; then  # (not in "all": the same teacher items, cached by the distill run)
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective ct+distill --distill-prompts 4 \
    --distill-answer-tokens 32 --distill-questions 0 --out "$OUT/ct+distill"
fi
if [[ $only == distill-long ]]; then  # the same teacher items (cached), twice the student epochs
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-prompts 4 \
    --distill-answer-tokens 32 --distill-questions 0 --epochs 4 --out "$OUT/distill-long"
fi
if [[ $only == ct-chat ]]; then  # issue 12's item 1: raw vs chat contextualized samples
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective ct --ct-format chat --out "$OUT/ct-chat"
fi
if [[ $only == distill-written ]]; then  # more ways of asking for each fact: the teacher writes them
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-prompts 4 \
    --distill-answer-tokens 32 --distill-questions 2 --out "$OUT/distill-written"
fi
if [[ $only == distill-written4 ]]; then  # as distill-written, 4 questions per sentence
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-prompts 4 \
    --distill-answer-tokens 32 --distill-questions 4 --out "$OUT/distill-written4"
fi
if [[ $only == distill-asked ]]; then  # one prompt kind: the questions the teacher wrote  (kind "written", once named "asked")
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-prompts 4 \
    --distill-answer-tokens 32 --distill-questions 2 --distill-kinds written,retention --out "$OUT/distill-asked"
fi
if [[ $only == distill-names ]]; then  # one prompt kind: the template questions about names
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-prompts 4 \
    --distill-answer-tokens 32 --distill-questions 2 --distill-kinds about,tell,what,details,retention \
    --out "$OUT/distill-names"
fi
if [[ $only == distill-written-mlp ]]; then  # distill-written's items (cached), LoRA on the MLP projections too
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-prompts 4 \
    --distill-answer-tokens 32 --distill-questions 2 \
    --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --out "$OUT/distill-written-mlp"
fi
if [[ $only == distill-written4-mlp ]]; then  # distill-written4's items (cached), LoRA on the MLP projections too
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-prompts 4 \
    --distill-answer-tokens 32 --distill-questions 4 \
    --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --out "$OUT/distill-written4-mlp"
fi
if [[ $only == doc2 ]]; then  # a second document, the default recipe
  "$LIFTLM" eval "${GRID[@]}" --data-seed 1 --methods oracle,icl,rag,lift,lift+icl --objective distill \
    --out "$OUT/doc2-distill"
fi
if [[ $only == one-view ]]; then  # the default recipe, the student in one view (lift+icl)
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-views lift+icl \
    --out "$OUT/one-view"
fi
if [[ $only == one-epoch ]]; then  # the default recipe, one student epoch
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --epochs 1 --out "$OUT/one-epoch"
fi
if [[ $only == one-view-half-layers ]]; then  # one view, LoRA on the upper half of the layers
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-views lift+icl \
    --lora-layers 0.5 --out "$OUT/one-view-half-layers"
fi
if [[ $only == doc2-one-view ]]; then  # the one-view recipe on the second document
  "$LIFTLM" eval "${GRID[@]}" --data-seed 1 --methods lift,lift+icl --objective distill --distill-views lift+icl \
    --out "$OUT/doc2-one-view"
fi
if [[ $only == cloze ]]; then  # the default recipe, every fact-bearing sentence asked once as a cloze too
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-cloze --out "$OUT/cloze"
fi
if [[ $only == doc2-cloze ]]; then  # the cloze recipe on the second document
  "$LIFTLM" eval "${GRID[@]}" --data-seed 1 --methods lift,lift+icl --objective distill --distill-cloze \
    --out "$OUT/doc2-cloze"
fi
if [[ $only == clozes-only ]]; then  # the ablation: the student on cloze's clozes (and retention prompts) only
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-cloze \
    --distill-kinds cloze,retention --out "$OUT/clozes-only"
fi
if [[ $only == lean ]]; then  # the cheapest recipe: the clozes alone (and their retention share)
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-cloze --distill-prompts 0 \
    --distill-questions 0 --out "$OUT/lean"
fi
if [[ $only == doc2-lean ]]; then  # the lean recipe on the second document
  "$LIFTLM" eval "${GRID[@]}" --data-seed 1 --methods lift,lift+icl --objective distill --distill-cloze \
    --distill-prompts 0 --distill-questions 0 --out "$OUT/doc2-lean"
fi
if [[ $only == lean-blanks3 ]]; then  # the lean recipe, each sentence as up to 3 clozes
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-cloze --distill-prompts 0 \
    --distill-questions 0 --distill-blanks 3 --out "$OUT/lean-blanks3"
fi
if [[ $only == lean-lr5e-4 ]]; then  # the lean recipe at 2.5 times the learning rate
  "$LIFTLM" eval "${GRID[@]}" --methods lift,lift+icl --objective distill --distill-cloze --distill-prompts 0 \
    --distill-questions 0 --learning-rate 5e-4 --out "$OUT/lean-lr5e-4"
fi
if [[ $only == doc2-lean-4epochs ]]; then  # the lean recipe on the second document, twice the passes
  "$LIFTLM" eval "${GRID[@]}" --data-seed 1 --methods lift,lift+icl --objective distill --distill-cloze \
    --distill-prompts 0 --distill-questions 0 --epochs 4 --out "$OUT/doc2-lean-4epochs"
fi
for seed in 0 1; do  # items v5: doc 1 (data seed 0), then doc 2 (seed 1)
  name=$([[ $seed == 0 ]] && echo "" || echo "doc2-")
  if [[ $only == lean-v5 ]]; then
    "$LIFTLM" eval "${GRID[@]}" --data-seed $seed --methods lift,lift+icl --objective distill --distill-cloze \
      --distill-prompts 0 --distill-questions 0 --out "$OUT/${name}lean-v5"
  fi
  if [[ $only == lean-blanks3-v5 ]]; then
    "$LIFTLM" eval "${GRID[@]}" --data-seed $seed --methods lift,lift+icl --objective distill --distill-cloze \
      --distill-prompts 0 --distill-questions 0 --distill-blanks 3 --out "$OUT/${name}lean-blanks3-v5"
  fi
  if [[ $only == names-clozes-lift ]]; then
    "$LIFTLM" eval "${GRID[@]}" --data-seed $seed --methods lift,lift+icl --objective distill --distill-cloze \
      --distill-prompts 2 --distill-questions 0 --distill-kinds about,tell,what,details,cloze,retention \
      --distill-views lift --out "$OUT/${name}names-clozes-lift"
  fi
  if [[ $only == names-clozes ]]; then
    "$LIFTLM" eval "${GRID[@]}" --data-seed $seed --methods lift,lift+icl --objective distill --distill-cloze \
      --distill-prompts 2 --distill-questions 0 --distill-kinds about,tell,what,details,cloze,retention \
      --out "$OUT/${name}names-clozes"
  fi
  if [[ $only == batch8 ]]; then
    "$LIFTLM" eval "${GRID[@]}" --data-seed $seed --methods lift,lift+icl --objective distill --batch-size 8 \
      --learning-rate 5.6e-4 --out "$OUT/${name}batch8"
  fi
  if [[ $only == batch8-1epoch ]]; then
    "$LIFTLM" eval "${GRID[@]}" --data-seed $seed --methods lift,lift+icl --objective distill --batch-size 8 \
      --learning-rate 5.6e-4 --epochs 1 --out "$OUT/${name}batch8-1epoch"
  fi
  if [[ $only == 1epoch-lr1.1e-3 ]]; then
    "$LIFTLM" eval "${GRID[@]}" --data-seed $seed --methods lift,lift+icl --epochs 1 --learning-rate 1.1e-3 \
      --out "$OUT/${name}1epoch-lr1.1e-3"
  fi
  if [[ $only == answers-only ]]; then
    "$LIFTLM" eval "${GRID[@]}" --data-seed $seed --methods lift,lift+icl --no-question-grad \
      --out "$OUT/${name}answers-only"
  fi
  if [[ $only == words ]]; then
    "$LIFTLM" eval "${GRID[@]}" --data-seed $seed --methods lift,lift+icl --distill-question-check words \
      --out "$OUT/${name}words"
  fi
  if [[ $only == grouped ]]; then
    "$LIFTLM" eval "${GRID[@]}" --data-seed $seed --methods lift,lift+icl --group-by-length --no-pack-batches \
      --out "$OUT/${name}grouped"
  fi
  if [[ $only == batch32 ]]; then
    "$LIFTLM" eval "${GRID[@]}" --data-seed $seed --methods lift,lift+icl --objective distill --batch-size 8 \
      --grad-accum 4 --learning-rate 1.1e-3 --out "$OUT/${name}batch32"
  fi
done
