"""Which facts the teacher's items carry: for a facts question answered with an adapter, how many of the
adapter's distillation items come from a chunk that holds the fact and answer with it.

The student can only store what its items say. A fact that no item states (its chunk's prompts asked about other
names, or the teacher's answers about it failed the grounding check) is not in the adapter, whatever the
training; a fact stated once is stored only sometimes. Counting the items that carry each fact, before or after
the student trains, says how a recipe spends its budget, and recall against that count says how many items a
fact needs — the question behind "fewer but better items".

An item carries a fact when its chunk (token span of the document) holds the fact's first token and its answer
holds an accepted variant of the fact's answer, by the facts metric (whole words). The chunk test keeps short
answers ("10", "May") from being counted wherever they appear.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..adapters import DISTILL_FILE  # the items an adapter was trained on, stored beside it
from .facts import facts_score

# Bins of the count for the table and the plot: 0, 1, 2, 3, 4-5, 6 or more.
BINS = ((0, 0), (1, 1), (2, 2), (3, 3), (4, 5), (6, None))


def bin_label(lo: int, hi: int | None) -> str:
    return f"{lo}+" if hi is None else str(lo) if lo == hi else f"{lo}-{hi}"


def _bin(count: int) -> str:
    return next(bin_label(lo, hi) for lo, hi in BINS if count >= lo and (hi is None or count <= hi))


class ItemAnswers:
    """The decoded answers of the items stored beside adapters, read once per adapter."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._items: dict[str, list[dict] | None] = {}

    def items(self, adapter: str | Path) -> list[dict] | None:
        """``[{"kind", "chunk", "answer"}]`` for the adapter's items (``adapter``: its folder, or a JSONL file of
        items such as the teacher's cache); None when it has none (e.g. ``--objective ct``) or is gone."""
        key = str(adapter)
        if key not in self._items:
            path = Path(adapter) if str(adapter).endswith(".jsonl") else Path(adapter) / DISTILL_FILE
            if not path.is_file():
                self._items[key] = None
            else:
                rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
                self._items[key] = [
                    {"kind": r["kind"], "chunk": r.get("chunk"),
                     "answer": self.tokenizer.decode(r["answer_ids"], skip_special_tokens=True)} for r in rows]
        return self._items[key]

    def carrying(self, adapter: str | Path, fact_token: int, answers: list[str]) -> dict[str, int] | None:
        """Per item kind, the adapter's items that carry the fact at ``fact_token`` (module docstring)."""
        items = self.items(adapter)
        if items is None:
            return None
        found = Counter(it["kind"] for it in items
                        if it["chunk"] and it["chunk"][0] <= fact_token < it["chunk"][1]
                        and facts_score(it["answer"], answers))
        return dict(found)


def annotate(record: dict, answers: ItemAnswers) -> dict:
    """Add ``items_carrying`` (a count) and ``items_carrying_kinds`` to a facts record answered with an adapter
    whose items are stored; other records are returned as they are."""
    meta = record.get("meta") or {}
    if meta.get("kind") != "fact" or "fact_token" not in meta or not record.get("adapter"):
        return record
    kinds = answers.carrying(record["adapter"], meta["fact_token"], record["gold"])
    if kinds is not None:
        record["items_carrying"] = sum(kinds.values())
        record["items_carrying_kinds"] = kinds
    return record


def coverage_summary(records: list[dict]) -> dict:
    """Per method with counted records: recall by the number of items carrying the fact, and the facts that no
    item carries. ``{method: {"bins": {label: {"facts": n, "recalled": k}}, "uncarried": n, "mean": m}}``."""
    out: dict[str, dict] = {}
    for r in records:
        if "items_carrying" not in r:
            continue
        row = out.setdefault(r["method"], {"bins": {bin_label(lo, hi): {"facts": 0, "recalled": 0}
                                                    for lo, hi in BINS}, "counts": []})
        cell = row["bins"][_bin(r["items_carrying"])]
        cell["facts"] += 1
        cell["recalled"] += int(r["score"] > 0)
        row["counts"].append(r["items_carrying"])
    for row in out.values():
        counts = row.pop("counts")
        row["uncarried"] = sum(c == 0 for c in counts)
        row["mean"] = sum(counts) / len(counts)
        row["facts"] = len(counts)
    return out


def coverage_table(summary: dict) -> str:
    """Markdown: per method, recalled / facts in each bin of carrying items."""
    labels = [bin_label(lo, hi) for lo, hi in BINS]
    lines = ["| method | " + " | ".join(f"{lab} items" for lab in labels) + " | mean items a fact |",
             "|---|" + "---:|" * (len(labels) + 1)]
    for method, row in summary.items():
        cells = [f"{c['recalled']} / {c['facts']}" if c["facts"] else "–" for c in row["bins"].values()]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {row['mean']:.1f} |")
    return "\n".join(lines)
