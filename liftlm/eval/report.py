"""Reports of an evaluation directory: a Markdown summary (methods × tasks, the paper's numbers beside), a JSON
summary, a bar chart, and heatmaps of the needle tasks (depth × length per method, like the paper's Figure 4).

Reads ``predictions.jsonl`` (and ``judge.jsonl``, ``run.json``) from the directory; plots use matplotlib's Agg
canvas directly (no display, no global backend switch).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from .coverage import BINS, bin_label, coverage_summary, coverage_table
from .datasets import LONGBENCH_TASKS, LOOGLE_TASKS, TASKS
from .metrics import score
from .niah import RULER_VARIANTS

METHOD_ORDER = ("oracle", "icl", "lift", "lift+icl", "rag", "lift+rag")
FACT_RECALL, CONTROL_RETENTION = "fact recall", "control retention"  # the facts benchmark's two columns
JUDGE = "judge"

# The LIFT paper (Mao et al., arXiv 2412.13626), Llama-3-8B-Instruct with an 8k window: (score × 100, metric).
# LooGLE figures are GPT-4-judge scores; LongBench figures use LongBench's metric for each task.
PAPER_MODEL = "Llama-3-8B-Instruct, 8k window"
PAPER: dict[tuple[str, str], tuple[float, str]] = {}
for _task, _metric, _values in (
    ("shortdep_qa", JUDGE, (44.23, 35.83, 50.44)),
    ("longdep_qa", JUDGE, (30.88, 27.34, 33.42)),
    ("musique", "qa_f1", (15.61, 5.21, 10.99)),
    ("narrativeqa", "qa_f1", (20.73, 5.55, 25.84)),
    ("qmsum", "rouge", (21.28, 14.00, 22.96)),
    ("gov_report", "rouge", (29.39, 12.50, 31.26)),
    ("passage_retrieval_en", "retrieval", (61.11, 9.03, 41.67)),
):
    for _method, _value in zip(("icl", "lift", "lift+icl"), _values):
        PAPER[(_task, _method)] = (_value, _metric)


# ---------------------------------------------------------------- reading


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line; the runner cuts it off on its next start
    return out


def load_results(out: str | Path) -> tuple[list[dict], dict]:
    """The records of ``out`` (with ``judge`` merged in where judged) and its ``run.json`` (or {})."""
    out = Path(out)
    records = _read(out / "predictions.jsonl")
    verdicts = {(j["id"], j["method"]): j["judge"] for j in _read(out / "judge.jsonl")}
    for r in records:
        if (r["id"], r["method"]) in verdicts:
            r[JUDGE] = verdicts[(r["id"], r["method"])]
    run_file = out / "run.json"
    meta = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else {}
    return records, meta


# ---------------------------------------------------------------- summary


def _methods(records: list[dict]) -> list[str]:
    found = {r["method"] for r in records}
    return [m for m in METHOD_ORDER if m in found] + sorted(found - set(METHOD_ORDER))


def _column_rank(key: tuple[str, str]) -> tuple:
    """Benchmark order (LooGLE, LongBench as in the paper's table, NIAH, RULER variants); in a task, its main
    metric, then its other metrics, then the judge."""
    order = [*LOOGLE_TASKS, *LONGBENCH_TASKS, "niah", *(f"ruler/{v}" for v in RULER_VARIANTS), FACT_RECALL,
             CONTROL_RETENTION]
    column, metric = key
    main = TASKS[column].metric if column in TASKS else metric
    return (order.index(column) if column in order else len(order), column, metric == JUDGE, metric != main, metric)


def _scores(r: dict) -> dict[str, float]:
    """Main metric, the task's other metrics (recomputed for records written before they were stored) and
    the judge's verdict."""
    out = {r["metric"]: r["score"]}
    task = TASKS.get(r["task"])
    for metric in task.also if task else ():
        out[metric] = r.get("scores", {}).get(metric)
        if out[metric] is None:
            out[metric] = score(metric, r["prediction"], r["gold"])
    if JUDGE in r:
        out[JUDGE] = r[JUDGE]
    return out


def summarize(records: list[dict]) -> dict:
    """Mean score (× 100) and count per method and column; a column is (task column, metric): the task's
    main metric, its other metrics, and a ``judge`` column when its answers were judged."""
    columns: list[tuple[str, str]] = []
    sums: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in records:
        col = r.get("column", r["task"])
        for metric, value in _scores(r).items():
            key = (col, metric)
            if key not in columns:
                columns.append(key)
            sums[(r["method"], *key)].append(value)
    columns.sort(key=_column_rank)
    cells = {}
    for (method, col, metric), values in sums.items():
        cells.setdefault(method, {})[f"{col}|{metric}"] = {"mean": 100 * sum(values) / len(values), "n": len(values)}
    return {"methods": _methods(records), "columns": [{"column": c, "metric": m} for c, m in columns],
            "cells": cells}


def paper_value(column: str, metric: str, method: str, columns: list[dict]) -> tuple[float, bool] | None:
    """The paper's number for this cell and whether its metric matches ours (None if the paper has none).

    A LooGLE figure (a judge score) sits in the judge column when there is one, else beside our main metric."""
    found = PAPER.get((column, method))
    if found is None:
        return None
    value, paper_metric = found
    if metric == paper_metric:
        return value, True
    judged = any(c["column"] == column and c["metric"] == JUDGE for c in columns)
    main = TASKS[column].metric if column in TASKS else metric
    if paper_metric == JUDGE and not judged and metric == main:
        return value, False
    return None


def _cell(cell: dict | None, paper: tuple[float, bool] | None) -> str:
    text = "–" if cell is None else f"{cell['mean']:.2f}"
    if paper is not None:
        text += f" ({paper[0]:.2f}{'' if paper[1] else '†'})"
    return text


def summary_table(summary: dict) -> str:
    """Markdown table: rows methods, columns task/metric (n answers); cells 'ours (paper)'."""
    cols = summary["columns"]
    header = ["method"] + [f"{c['column']} · {c['metric']}" for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in summary["methods"]:
        row = [method]
        for c in cols:
            cell = summary["cells"].get(method, {}).get(f"{c['column']}|{c['metric']}")
            row.append(_cell(cell, paper_value(c["column"], c["metric"], method, cols)))
        lines.append("| " + " | ".join(row) + " |")
    counts = ["n"] + [str(max((summary["cells"].get(m, {}).get(f"{c['column']}|{c['metric']}", {}).get("n", 0)
                               for m in summary["methods"]), default=0)) for c in cols]
    lines.append("| " + " | ".join(counts) + " |")
    return "\n".join(lines)


def grid(records: list[dict], method: str, row_key: str) -> tuple[list, list[int], list[list[float | None]]]:
    """Rows (depths or RULER variants), lengths, and the mean score per cell for one method (facts: the facts'
    depths; the control questions have none)."""
    cells: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        if r["method"] == method and r["task"] in ("niah", "ruler", "facts") and row_key in r.get("meta", {}):
            cells[(r["meta"][row_key], r["meta"]["length"])].append(r["score"])
    rows = sorted({k[0] for k in cells}, key=lambda v: (isinstance(v, str), v))
    lengths = sorted({k[1] for k in cells})
    values = [[(sum(cells[(a, b)]) / len(cells[(a, b)]) if (a, b) in cells else None) for b in lengths] for a in rows]
    return rows, lengths, values


def _grid_key(records: list[dict]) -> str | None:
    tasks = {r["task"] for r in records}
    return "depth" if "niah" in tasks or "facts" in tasks else "variant" if "ruler" in tasks else None


def grid_tables(records: list[dict]) -> str:
    key = _grid_key(records)
    if key is None:
        return ""
    parts = []
    for method in _methods(records):
        rows, lengths, values = grid(records, method, key)
        head = [f"{key} \\ length"] + [str(n) for n in lengths]
        lines = [f"**{method}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label, vals in zip(rows, values):
            lines.append("| " + " | ".join([f"{label:g}" if isinstance(label, float) else str(label)]
                                           + ["–" if v is None else f"{100 * v:.0f}" for v in vals]) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def facts_summary(records: list[dict]) -> dict:
    """Facts benchmark, per method: fact recall and control retention (× 100, with counts), and recall as a
    fraction of the oracle's (None without an oracle row, or when the oracle recalled nothing)."""
    rows: dict[str, dict] = {}
    for method in _methods(records):
        rs = [r for r in records if r["method"] == method and r["task"] == "facts"]
        facts = [r["score"] for r in rs if r.get("meta", {}).get("kind") == "fact"]
        controls = [r["score"] for r in rs if r.get("meta", {}).get("kind") == "control"]
        if not rs:
            continue
        rows[method] = {
            "recall": 100 * sum(facts) / len(facts) if facts else None, "facts": len(facts),
            "retention": 100 * sum(controls) / len(controls) if controls else None, "controls": len(controls),
        }
    oracle = rows.get("oracle", {}).get("recall")
    for method, row in rows.items():
        usable = oracle and row["recall"] is not None and method != "oracle"
        row["vs_oracle"] = row["recall"] / oracle if usable else None
    overlaps = [r["meta"]["overlap"] for r in records
                if r["task"] == "facts" and "overlap" in r.get("meta", {})]
    return {"methods": rows, "oracle_recall": oracle,
            "question_overlap": {"mean": sum(overlaps) / len(overlaps), "max": max(overlaps)} if overlaps else None}


def facts_table(records: list[dict]) -> str:
    """Markdown: method | fact recall | control retention | recall vs oracle."""
    summary = facts_summary(records)
    oracle = summary["oracle_recall"]
    lines = ["| method | fact recall | control retention | recall vs oracle |", "|---|---|---|---|"]

    def pct(value, n):
        return "–" if value is None else f"{value:.1f} ({n})"

    for method, row in summary["methods"].items():
        if method == "oracle":
            versus = "1.00 (the reference)" if oracle else "– (oracle recalled nothing)"
        elif "oracle" not in summary["methods"]:
            versus = "– (no oracle run)"
        elif row["vs_oracle"] is None:
            versus = "– (oracle recalled nothing)" if not oracle else "–"
        else:
            versus = f"{row['vs_oracle']:.2f}"
        lines.append(f"| {method} | {pct(row['recall'], row['facts'])} | {pct(row['retention'], row['controls'])} "
                     f"| {versus} |")
    return "\n".join(lines)


def cost_table(records: list[dict]) -> str:
    """Seconds per answer by method, and LIFT training seconds per document."""
    lines = ["| method | answers | s / answer | documents LIFTed | training s / document |", "|---|---|---|---|---|"]
    for method in _methods(records):
        rs = [r for r in records if r["method"] == method]
        per_doc = {r["adapter"]: r.get("train_seconds") or 0.0 for r in rs if r.get("adapter")}
        train = f"{sum(per_doc.values()) / len(per_doc):.1f}" if per_doc else "–"
        lines.append(f"| {method} | {len(rs)} | {sum(r['seconds'] for r in rs) / len(rs):.2f} | "
                     f"{len(per_doc) or '–'} | {train} |")
    return "\n".join(lines)


def _settings_line(meta: dict) -> str:
    config = meta.get("config") or {}
    return ", ".join(f"{k}={v}" for k, v in config.items())


def summary_markdown(records: list[dict], meta: dict) -> str:
    summary = summarize(records)
    git = meta.get("git") or {}
    commit = (git.get("commit") or "unknown")[:12] + (" (with local changes)" if git.get("dirty") else "")
    lines = [
        f"# liftlm eval: {meta.get('benchmark', '?')}",
        "",
        f"- model: {meta.get('model_id') or meta.get('model') or '?'}; window: {meta.get('window', '?')} tokens",
        f"- data: {meta.get('data')}; tasks: {', '.join(sorted({r['task'] for r in records})) or '–'}",
        f"- seed: {meta.get('seed')}; data seed: {meta.get('data_seed')}; git: {commit}; date: {meta.get('date')}",
        f"- LIFT settings: {_settings_line(meta)}",
    ]
    if meta.get("max_doc_tokens"):
        ex = meta.get("examples", {})
        lines.append(f"- documents cut to {meta['max_doc_tokens']} tokens: {ex.get('kept_after_cut')} of "
                     f"{ex.get('loaded')} questions kept (evidence inside the cut)")
    if meta.get("judge"):
        lines.append(f"- judge: {meta['judge']} (semantic equivalence, True/False)")
    papers = [paper_value(c["column"], c["metric"], m, summary["columns"])
              for c in summary["columns"] for m in summary["methods"]]
    bracket = f"; the paper's number in brackets ({PAPER_MODEL})" if any(p is not None for p in papers) else ""
    lines += ["", "## Scores", "", f"Mean score × 100 per method (rows) and task · metric (columns){bracket}.", "",
              summary_table(summary), ""]
    if any(p is not None and not p[1] for p in papers):
        lines += [("† the paper's LooGLE figure is a GPT-4-judge score, not the metric of this column; run with "
                   "`--judge` for a comparable column."), ""]
    if any(r["task"] == "facts" for r in records):
        overlap = facts_summary(records)["question_overlap"]
        words = (f" The questions share {100 * overlap['mean']:.0f} % of their content words with their fact "
                 f"sentence on average (at most {100 * overlap['max']:.0f} %)." if overlap else "")
        lines += ["## Facts", "", ("Fact recall: share of the made-up facts, asked in paraphrase, whose answer holds "
                                   "an accepted variant; control retention: the same for general-knowledge "
                                   "questions asked about the same document; recall vs oracle: fact recall over "
                                   "the oracle's (the base model with the whole document in context). Percent "
                                   f"(answers).{words}"), "", facts_table(records), ""]
        carried = coverage_summary(records)
        if carried:
            lines += ["## Facts by the teacher items that carry them", "",
                      ("Recalled / facts, by how many of the adapter's distillation items carry the fact (come from "
                       "a chunk that holds it and answer with it: liftlm.eval.coverage); a fact no item carries "
                       "is not in the adapter."), "", coverage_table(carried), ""]
    tables = grid_tables(records)
    if tables:
        what = "fact recall by depth" if "facts" in {r["task"] for r in records} else f"score by {_grid_key(records)}"
        lines += [f"## {what[0].upper() + what[1:]} and length (× 100)", "", tables, ""]
    lines += ["## Cost", "", cost_table(records), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- plots


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def plot_heatmap(records: list[dict], path: str | Path, row_key: str = "depth") -> Path:
    """One panel per method: score by ``row_key`` (depth, or RULER variant) × document length."""
    methods = _methods(records)
    fig = _figure(3.2 * len(methods) + 1.2, 3.6)
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    image = None
    for ax, method in zip(axes, methods):
        rows, lengths, values = grid(records, method, row_key)
        data = [[math.nan if v is None else v for v in row] for row in values]
        image = ax.imshow(data, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        ax.set_title(method)
        ax.set_xticks(range(len(lengths)), [str(n) for n in lengths], rotation=45, fontsize=8)
        labels = [f"{100 * r:.0f}%" if row_key == "depth" else str(r) for r in rows]
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.set_xlabel("document length (tokens)")
        if ax is axes[0]:
            ax.set_ylabel("needle depth" if row_key == "depth" else "variant")
        if len(rows) * len(lengths) <= 80:
            for i, row in enumerate(values):
                for j, v in enumerate(row):
                    if v is not None:
                        ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=list(axes), fraction=0.03, label="score")
    fig.savefig(path, bbox_inches="tight")
    return Path(path)


def plot_summary(summary: dict, path: str | Path) -> Path:
    """Grouped bars: one group per task · metric, one bar per method; the paper's numbers as black marks."""
    cols, methods = summary["columns"], summary["methods"]
    fig = _figure(max(5.0, 1.3 * len(cols) * max(1, len(methods)) / 2 + 2), 3.8)
    ax = fig.subplots()
    width = 0.8 / max(1, len(methods))
    paper_drawn = False
    for k, method in enumerate(methods):
        xs, ys = [], []
        for i, c in enumerate(cols):
            cell = summary["cells"].get(method, {}).get(f"{c['column']}|{c['metric']}")
            x = i - 0.4 + width * (k + 0.5)
            if cell is not None:
                xs.append(x)
                ys.append(cell["mean"])
            paper = paper_value(c["column"], c["metric"], method, cols)
            if paper is not None and paper[1]:
                ax.plot([x - width / 2, x + width / 2], [paper[0]] * 2, color="black", lw=2, zorder=3,
                        label=None if paper_drawn else "paper")
                paper_drawn = True
        ax.bar(xs, ys, width=width, label=method)
    ax.set_xticks(range(len(cols)), [f"{c['column']}\n{c['metric']}" for c in cols], fontsize=8)
    ax.set_ylabel("score × 100")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncol=min(len(methods) + 1, 6))
    fig.savefig(path, bbox_inches="tight")
    return Path(path)


def plot_coverage(summary: dict, path: str | Path) -> Path:
    """Recall (share of facts recalled) against the items carrying the fact, a line per method; the number of
    facts in each bin written at its point."""
    labels = [bin_label(lo, hi) for lo, hi in BINS]
    fig = _figure(5.5, 3.6)
    ax = fig.subplots()
    for method, row in summary.items():
        xs, ys = [], []
        for i, label in enumerate(labels):
            cell = row["bins"][label]
            if cell["facts"]:
                xs.append(i)
                ys.append(cell["recalled"] / cell["facts"])
                ax.annotate(str(cell["facts"]), (i, ys[-1]), textcoords="offset points", xytext=(0, 5),
                            fontsize=7, ha="center")
        ax.plot(xs, ys, marker="o", label=method)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("teacher items carrying the fact (from its chunk, its answer in theirs)")
    ax.set_ylabel("share of facts recalled")
    ax.set_ylim(-0.05, 1.1)
    ax.legend(fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    return Path(path)


# ---------------------------------------------------------------- all of it


def write_report(out: str | Path) -> dict[str, Path]:
    """Write summary.md, summary.json, summary.png, (needle tasks) a heatmap and (facts answered with adapters
    whose items are counted) facts_coverage.png into ``out``."""
    out = Path(out)
    records, meta = load_results(out)
    if not records:
        return {}
    summary = summarize(records)
    written = {}
    md = out / "summary.md"
    md.write_text(summary_markdown(records, meta), encoding="utf-8")
    written["summary.md"] = md
    js = out / "summary.json"
    extra = {"facts": facts_summary(records)} if any(r["task"] == "facts" for r in records) else {}
    carried = coverage_summary(records)
    if carried:
        extra["items_carrying"] = carried
    js.write_text(json.dumps({"run": meta, **summary, **extra}, indent=2, ensure_ascii=False) + "\n",
                  encoding="utf-8")
    written["summary.json"] = js
    written["summary.png"] = plot_summary(summary, out / "summary.png")
    if carried:
        written["facts_coverage.png"] = plot_coverage(carried, out / "facts_coverage.png")
    key = _grid_key(records)
    if key is not None:
        tasks = {r["task"] for r in records}
        name = ("facts_heatmap.png" if "facts" in tasks else "niah_heatmap.png" if key == "depth"
                else "ruler_heatmap.png")
        written[name] = plot_heatmap(records, out / name, key)
    return written
