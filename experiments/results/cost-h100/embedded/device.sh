#!/bin/bash
# device call 2: the embedded model (real weights, parts joined), its cost on the GPU, and the demo's question
set -x
REPO=$PWD
cat /root/dev/smol.partA .dev/c2/smol.partB > /root/dev/smol.gguf
echo "$(cat .dev/c2/smol.sha256)  /root/dev/smol.gguf" | sha256sum -c || exit 1
export PYTHONPATH=/tmp/site:$REPO PYTHONUNBUFFERED=1 LIFTLM_HOME=/root/lh TOKENIZERS_PARALLELISM=false
python3 -m liftlm.cli bench cost --model /root/dev/smol.gguf --haystack /root/dev/hay --tokens 2k --facts 10 \
  --data-seed 0 --window 512 \
  --recipe "batch-1=--batch-size 1 --learning-rate 2e-4" \
  --recipe "default=" \
  --recipe "default-1-epoch=--epochs 1" \
  --out $OUT/embedded 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" | tail -30
/usr/bin/time -v python3 -m liftlm.cli ask --model /root/dev/smol.gguf --document examples/kellmere.txt --window 512 \
  --distill-prompts 8 --batch-size 1 --learning-rate 2e-4 --mode icl,lift+icl \
  --question "In what year was the railway line to Kellmere shut?" 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" | tail -25
