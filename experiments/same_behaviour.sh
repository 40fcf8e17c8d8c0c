#!/usr/bin/env bash
# Behaviour unchanged between two revisions: a fixed-seed `liftlm internalize` of the example document (default
# objective, one epoch) and a small facts eval on the embedded model, run from each revision's code; the adapter
# weights must be identical and the predictions too (apart from timings and the store's folder).
#
#   bash experiments/same_behaviour.sh BEFORE AFTER      # two git revisions, e.g. 7b835e9 HEAD
#
# Each revision runs from a worktree of its own under $WORK (default /tmp/liftlm-same), with this checkout's .venv
# (run scripts/setup.sh first) and a fresh LIFTLM_HOME: about 4 minutes per revision on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${1:?usage: same_behaviour.sh BEFORE AFTER}
AFTER=${2:?usage: same_behaviour.sh BEFORE AFTER}
WORK=${WORK:-/tmp/liftlm-same}
PY="$PWD/.venv/bin/python"
[ -x "$PY" ] || { echo "no .venv: run bash scripts/setup.sh first" >&2; exit 2; }

run() {  # revision, label
  local src="$WORK/$2/src" out="$WORK/$2"
  rm -rf "$out" && mkdir -p "$out"
  git worktree add --force --detach "$src" "$1" >/dev/null
  (
    cd "$src"
    export PYTHONPATH="$src" LIFTLM_HOME="$out/home" HF_HUB_OFFLINE=1
    "$PY" -m liftlm internalize --document examples/kellmere.txt --epochs 1 --seed 0 --quiet >"$out/internalize.out"
    "$PY" -m liftlm eval --benchmark facts --lengths 1000 --facts 4 --window 512 --methods icl,lift,lift+icl \
      --epochs 1 --quiet --out "$out/facts" >"$out/facts.out"
  )
  git worktree remove --force "$src"
  # the weights of every adapter, by store key
  (cd "$out/home/adapters" && sha256sum -- */adapter_model.safetensors) >"$out/weights.sha256"
  # the predictions without what may differ between two runs: timings, and the store's folder
  "$PY" - "$out/facts/predictions.jsonl" >"$out/predictions.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    row.pop("seconds", None), row.pop("train_seconds", None)
    if row.get("adapter"):
        row["adapter"] = row["adapter"].rsplit("/", 1)[-1]
    print(json.dumps(row, sort_keys=True))
EOF
}

run "$BEFORE" before
run "$AFTER" after
status=0
if cmp -s "$WORK/before/weights.sha256" "$WORK/after/weights.sha256"; then
  echo "adapter weights: identical ($(wc -l <"$WORK/after/weights.sha256") adapters)"
else
  echo "adapter weights: DIFFERENT"; diff "$WORK/before/weights.sha256" "$WORK/after/weights.sha256" || true; status=1
fi
if cmp -s "$WORK/before/predictions.jsonl" "$WORK/after/predictions.jsonl"; then
  echo "facts predictions: identical ($(wc -l <"$WORK/after/predictions.jsonl") answers)"
else
  echo "facts predictions: DIFFERENT"; diff "$WORK/before/predictions.jsonl" "$WORK/after/predictions.jsonl" | head; status=1
fi
exit $status
