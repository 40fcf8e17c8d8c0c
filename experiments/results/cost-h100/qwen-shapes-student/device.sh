#!/bin/bash
# device call 1: keep the carried files, install the missing packages, time the Qwen-shaped student on the real items
set -x
REPO=$PWD
mkdir -p /root/dev && cp -r .dev/c1/* /root/dev/ && cd /root/dev && tar xzf tok.tgz
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$REPO PYTHONUNBUFFERED=1 LIFTLM_HOME=/root/lh TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, peft, gguf; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, torch.cuda.get_device_name(0))"
cd $REPO
python3 -m liftlm.cli bench cost --random-weights --config qwen2.5-1.5b --tokenizer /root/dev/qwen-tok \
  --haystack /root/dev/hay --tokens 2k --facts 10 --data-seed 0 --window 512 \
  --items /root/dev/items/c48d496ce6a3e93ac914.jsonl \
  --recipe "batch-1=--batch-size 1 --learning-rate 2e-4" \
  --recipe "batch-8=--batch-size 8 --learning-rate 5.6e-4" \
  --recipe "batch-8-1-epoch=--batch-size 8 --learning-rate 5.6e-4 --epochs 1" \
  --recipe "batch-32=--batch-size 32 --learning-rate 1.1e-3" \
  --out $OUT/qwen-student 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" | tail -40
ls -la /root/dev
