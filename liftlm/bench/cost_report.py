"""The report of a cost run (``liftlm bench cost``): ``cost.json``, ``cost.md`` (a row per length and recipe, the
recipes' flags, the cost curve's section) and ``cost.png`` (with ``cost_curve.png`` for several lengths)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from . import cost_curve
from .common import format_length, model_label
from .cost_work import WORK_DIR


def _percent(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.0f} %"


def _peak(phase: dict) -> str:
    """A phase's measured peak memory (``liftlm.memory``): "–" where it was not measured (a shared, given or
    earlier report's teacher), with "≤" where it is the process's whole peak (no reset on this system)."""
    if "peak_memory_gib" not in phase:
        return "–"
    return ("≤ " if phase.get("peak_memory_since") == "process" else "") + f"{phase['peak_memory_gib']:.1f}"


def report_markdown(report: dict) -> str:
    """cost.md: a row per recipe (per length and recipe, with a tokens column, when there are several lengths),
    the recipes' flags, then the curve section where there is one."""
    several = "lengths" in report
    tokens = ", ".join(str(n) for n in report["lengths"]) if several else report["document_tokens"]
    same = " at the same length" if several else ""
    lines = [f"Model {report['model']} on {report['device']}; document {report['document']} "
             f"({tokens} tokens); matmul probe {report['probe']['gflops']} GFLOP/s "
             f"({report['probe'].get('dtype', 'float32')}, {report['probe']['threads']} threads). Ratios against `{report['reference']}`{same}.", "",
             "| recipe | " + ("tokens | " if several else "") + "teacher s | asks | calls | s/ask | teacher of ceiling "
             "| student s | samples/epoch | trained tokens | student tok/s | student of ceiling | total s "
             "| s/doc token | trained/doc token | speed-up | peak GiB (teacher / student) |",
             "|---|" + ("---:|" if several else "") + "---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
             "---:|---:|"]
    for r in report["recipes"]:
        t, s = r["teacher"], r["student"]
        shared = (f" (as `{t['shared_with']}`)" if "shared_with" in t else " (items given)" if "given" in t
                  else " (replayed)" if "replayed" in t else "")
        length = f"{r['document_tokens']} | " if several else ""
        lines.append(f"| {r['recipe']} | {length}{t['seconds']}{shared} | {t['items']} | {t.get('calls', '')} | "
                     f"{t['seconds_per_item'] or ''} | "
                     f"{_percent(t['ceiling_fraction'])} | {s['seconds']} | {s['items']} | {s['tokens']} | "
                     f"{s['tokens_per_second']} | {_percent(s['ceiling_fraction'])} | {r['seconds']} | "
                     f"{r['seconds_per_document_token']} | {r['trained_tokens_per_document_token']} | "
                     f"{r['speedup']}× | {_peak(t)} / {_peak(s)} |")
    flags = {r["recipe"]: r["flags"] for r in report["recipes"]}
    lines += ["", "Flags of each recipe:", ""] + [f"- `{name}`: `{f or '(defaults)'}`" for name, f in flags.items()]
    if "replayed_teacher" in report:
        lines += ["", f"The teacher was replayed from `{report['replayed_teacher']}` (`--replay-teacher`): every "
                      "prompt it answered, each answer cut at its recorded length, in each recipe's shape; the student "
                      "trained on its items."]
    if "rows_kept_from_an_interrupted_run" in report:
        when = ", ".join(f"`{r['recipe']}` at {r['document_tokens']} tokens {r.get('measured_at', '?')} (probe "
                         f"{r.get('probe_gflops', '?')} GFLOP/s)" for r in report["recipes"])
        lines += ["", f"The run was interrupted and resumed: {report['rows_kept_from_an_interrupted_run']} of its rows "
                      f"were kept from before. When each row was measured, with its process's matmul probe: {when}."]
    if "items_file" in report:
        lines += ["", f"The student's items were read from `{report['items_file']}` (`--items`): no teacher ran, "
                      "so the totals and speed-ups are the student's."]
    if "curve" in report:
        lines += ["", cost_curve.markdown(report).rstrip("\n")]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Stacked bars: teacher and student seconds per recipe, on the longest document of the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    longest = report["document_tokens"]
    rows = [r for r in report["recipes"] if r.get("document_tokens", longest) == longest]
    names = [r["recipe"] for r in rows]
    teacher = [r["teacher"]["seconds"] for r in rows]
    student = [r["student"]["seconds"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(3.2, 1.6 + 1.1 * len(rows)), 3.6))
    ax.bar(names, teacher, label="teacher")
    ax.bar(names, student, bottom=teacher, label="student")
    for i, r in enumerate(rows):
        ax.text(i, r["seconds"], f"{r['speedup']}×", ha="center", va="bottom", fontsize=8)
    if len(rows) > 4:
        ax.tick_params(axis="x", labelrotation=20)
    ax.set_ylabel("seconds")
    ax.set_ylim(0, max(r["seconds"] for r in rows) * 1.2)  # room for the speed-ups above the bars
    ax.set_title(f"{model_label(report['model'])}\n{format_length(longest)} tokens", fontsize=9)
    ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict, out: Path) -> list[Path]:
    """cost.json, cost.md and cost.png in ``out``; cost_curve.png too when the run has several lengths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "cost.json", out / "cost.md", out / "cost.png"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(report_markdown(report))
    plot(report, paths[2])
    if "curve" in report:
        paths.append(out / "cost_curve.png")
        cost_curve.plot(report, paths[-1])
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)  # the rows are in the report now
    return paths
