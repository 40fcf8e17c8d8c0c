"""Recall against the teacher items that carry each fact, over finished facts runs (liftlm.eval.coverage): which
facts a recipe's items state, how often, and how many items a fact needs to be recalled from the weights.

    python experiments/item_coverage.py --tokenizer MODEL_DIR --out DIR LABEL=RUN_DIR[=ITEMS] [...]

RUN_DIR is a `liftlm eval --benchmark facts` output folder whose records name their adapter; the adapter's stored
items (distill.jsonl) are counted. ITEMS replaces the adapter where it is gone: another adapter folder trained on
the same teacher items, or a JSONL file of them (the teacher's cache). Runs from `liftlm eval` since this script
already hold the count (`items_carrying`) and are read as they are. Writes DIR/coverage.md, coverage.json and
coverage.png (every run's facts pooled per method).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from transformers import AutoTokenizer

from liftlm.eval.coverage import ItemAnswers, annotate, coverage_summary, coverage_table
from liftlm.eval.report import load_results, plot_coverage


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True, help="the runs' model (a folder with its tokenizer)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR[=ITEMS]")
    args = parser.parse_args(argv)
    answers = ItemAnswers(AutoTokenizer.from_pretrained(args.tokenizer))
    pooled, per_run, lines = [], {}, []
    for spec in args.runs:
        label, run_dir, *items = spec.split("=")
        records, _ = load_results(Path(run_dir))
        counted = []
        for r in records:
            if items and r.get("adapter"):
                r["adapter"] = items[0]
            if "items_carrying" not in r:
                annotate(r, answers)
            if "items_carrying" in r:
                counted.append(r)
        if not counted:
            print(f"item_coverage: {label}: no fact answered with an adapter whose items are stored", file=sys.stderr)
            continue
        summary = coverage_summary(counted)
        per_run[label] = {"run": run_dir, "items": items[0] if items else None, "summary": summary,
                          "facts": [{"id": r["id"], "method": r["method"], "depth": r["meta"].get("depth"),
                                     "gold": r["gold"][0], "recalled": r["score"] > 0,
                                     "items_carrying": r["items_carrying"], "kinds": r["items_carrying_kinds"]}
                                    for r in counted]}
        lines += [f"### {label} (`{run_dir}`)", "", coverage_table(summary), ""]
        pooled += counted
    if not pooled:
        print("item_coverage: nothing to count", file=sys.stderr)
        return 1
    summary = coverage_summary(pooled)
    args.out.mkdir(parents=True, exist_ok=True)
    head = ["# Facts recalled against the teacher items that carry them", "",
            f"Runs: {len(per_run)}; every run's facts pooled per method (recalled / facts in each bin):", "",
            coverage_table(summary), "", "## Per run", ""]
    (args.out / "coverage.md").write_text("\n".join(head + lines), encoding="utf-8")
    (args.out / "coverage.json").write_text(json.dumps({"pooled": summary, "runs": per_run}, indent=1) + "\n",
                                            encoding="utf-8")
    plot_coverage(summary, args.out / "coverage.png")
    print(args.out / "coverage.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
