"""Each fact of a facts run beside the per-item KL of the items that carry it (``item_kl.py``'s output): does a fact
whose items the student already answers as the teacher does get recalled?

    python experiments/item_kl_facts.py --tokenizer MODEL_DIR --items ITEMS.jsonl --kl ITEM_KL.json \
        LABEL=RUN_DIR [LABEL=RUN_DIR ...] [--out FILE.md]

An item carries a fact as ``liftlm.eval.coverage`` counts it (its chunk holds the fact's first token and its answer
an accepted variant of the fact's answer). For each fact of the runs (the first run's facts, matched by id), the
table gives its carrying items, their largest KL and how many the measured adapter answered exactly, then whether
each run recalled it in each method.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from transformers import AutoTokenizer

from liftlm.eval.coverage import ItemAnswers
from liftlm.eval.facts import facts_score


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--items", required=True, type=Path)
    parser.add_argument("--kl", required=True, type=Path, help="item_kl.py's JSON on the same items")
    parser.add_argument("--measured", default="adapter", help="which measurement of --kl: adapter or base")
    parser.add_argument("--out", type=Path)
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR (facts runs' predictions.jsonl)")
    args = parser.parse_args(argv)
    items = ItemAnswers(AutoTokenizer.from_pretrained(args.tokenizer)).items(args.items)
    kl = json.loads(args.kl.read_text(encoding="utf-8"))
    if len(kl) != len(items):
        parser.error(f"--kl has {len(kl)} items, --items {len(items)}")
    runs, facts = {}, {}
    for spec in args.runs:
        label, run_dir = spec.split("=", 1)
        rows = [json.loads(line) for line in (Path(run_dir) / "predictions.jsonl").read_text().splitlines() if line]
        rows = [r for r in rows if (r.get("meta") or {}).get("kind") == "fact"]
        runs[label] = {(r["id"], r["method"]): r["score"] > 0 for r in rows}
        facts = facts or {r["id"]: r for r in rows}  # the first run's facts
    methods = sorted({m for run in runs.values() for _, m in run})
    head = ["| fact (gold) | items carrying it | their largest KL | answered exactly | "
            + " | ".join(f"{label} `{m}`" for label in runs for m in methods) + " |",
            "|---|---:|---:|---:|" + "---|" * (len(runs) * len(methods))]
    lines = []
    for fid, r in facts.items():
        token = r["meta"]["fact_token"]
        carrying = [i for i, it in enumerate(items)
                    if it["chunk"] and it["chunk"][0] <= token < it["chunk"][1] and facts_score(it["answer"], r["gold"])]
        kls = [kl[i][args.measured] for i in carrying]
        largest = f"{max(k['kl'] for k in kls):.2f}" if kls else "–"
        exact = sum(k["exact"] for k in kls)
        marks = ["yes" if runs[label].get((fid, m)) else "no" for label in runs for m in methods]
        lines.append(f"| {fid.rsplit('/', 1)[-1]} ({r['gold'][0]}) | {len(carrying)} | {largest} | {exact} | "
                     + " | ".join(marks) + " |")
    text = "\n".join(head + lines) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
