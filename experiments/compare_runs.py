"""One Markdown table over several `liftlm eval` output directories: a row per (run, method) with the mean of
each metric (× 100), the number of answers, seconds per answer and LIFT training seconds per document.

    python experiments/compare_runs.py LABEL=DIR [LABEL=DIR ...]
"""
from __future__ import annotations

import sys
from pathlib import Path

from liftlm.eval.report import load_results, summarize


def rows(label: str, out: Path) -> tuple[list[str], list[list[str]]]:
    records, _ = load_results(out)
    summary = summarize(records)
    keys = [f"{c['column']}|{c['metric']}" for c in summary["columns"]]
    table = []
    for method in summary["methods"]:
        rs = [r for r in records if r["method"] == method]
        cells = summary["cells"][method]
        train = {r["adapter"]: r.get("train_seconds") or 0.0 for r in rs if r.get("adapter")}
        table.append([label, method, str(len(rs))]
                     + [f"{cells[k]['mean']:.1f}" if k in cells else "–" for k in keys]
                     + [f"{sum(r['seconds'] for r in rs) / len(rs):.1f}",
                        f"{sum(train.values()) / len(train):.0f}" if train else "–"])
    return [k.replace("|", " · ") for k in keys], table


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    header, body = None, []
    for arg in argv:
        label, path = arg.split("=", 1)
        keys, table = rows(label, Path(path))
        if header is not None and keys != header:
            print(f"compare_runs: {path} has other columns ({keys}) than the first run ({header})", file=sys.stderr)
            return 2
        header = keys
        body += table
    head = ["run", "method", "answers", *header, "s / answer", "LIFT training s / document"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in body:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
