"""How many of a document's teacher items say what another item already says: the lever "drop near-duplicate
items" (issue 27), counted before it is built. Text only, no model run.

    python experiments/item_duplicates.py --tokenizer MODEL_DIR --items ITEMS.jsonl [--out FILE.md]

Two items are near duplicates at threshold t when the sets of words of their answers (lower-cased, words of 3 or
more letters or any number) overlap by a Jaccard index of at least t. For each threshold it counts the items that
have an earlier near duplicate (the ones a filter would drop, keeping the first), per item kind, and their share of
the answer tokens. Retention items are left out: they are not about the document.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from transformers import AutoTokenizer

from liftlm.distill.cache import read_items

THRESHOLDS = (0.5, 0.7, 0.9)
_WORD = re.compile(r"[a-z]{3,}|\d+")


def words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--items", required=True, type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    items = [it for it in read_items(args.items) if it.kind != "retention"]
    answers = [words(tok.decode(it.answer_ids, skip_special_tokens=True)) for it in items]
    total = sum(len(it.answer_ids) for it in items)
    kinds = sorted({it.kind for it in items})
    lines = [f"# Near-duplicate teacher items ({args.items.name}: {len(items)} document items, {total} answer tokens)",
             "", "| answers' word overlap (Jaccard) ≥ | items with an earlier near duplicate | share of answer tokens | "
             + " | ".join(kinds) + " |", "|---:|---:|---:|" + "---:|" * len(kinds)]
    for t in THRESHOLDS:
        dup = [i for i in range(len(items)) if any(jaccard(answers[i], answers[j]) >= t for j in range(i))]
        share = sum(len(items[i].answer_ids) for i in dup) / total
        per_kind = [f"{sum(items[i].kind == k for i in dup)} / {sum(it.kind == k for it in items)}" for k in kinds]
        lines.append(f"| {t} | {len(dup)} | {share:.0%} | " + " | ".join(per_kind) + " |")
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
