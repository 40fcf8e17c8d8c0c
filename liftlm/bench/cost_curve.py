"""The cost curve of ``liftlm bench cost --tokens 2k,4k,...``: seconds per document token against the document's
length, per recipe, and a least-squares line through the total seconds, extrapolated to a 100k-token document.

LIFT's samples have a bounded length, so its cost should grow linearly with the document and its time per token
stay flat (issue 27's target: the longest length's seconds per token at most 1.15× the shortest's). The line's
slope is the cost of 1k more tokens; its value at 100k tokens is what a document too long to time here would take.
``curve`` reads only the report's rows, so the numbers in cost.json reproduce it.
"""
from __future__ import annotations

from pathlib import Path

from .common import format_length, model_label

TARGET_RATIO = 1.15  # longest / shortest seconds per document token
EXTRAPOLATE_TOKENS = 100_000
PHASES = ("teacher", "student", "total")


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares ``y = slope·x + intercept`` through the points; returns (slope, intercept, R²)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - slope * x - intercept) ** 2 for x, y in zip(xs, ys))
    return slope, intercept, 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0


def _ratio(last: float, first: float) -> float | None:
    return round(last / first, 3) if first > 0 else None


def _recipe_curve(name: str, rows: list[dict]) -> dict:
    rows = sorted(rows, key=lambda r: r["document_tokens"])
    points = []
    for r in rows:
        n = r["document_tokens"]
        seconds = {"teacher": r["teacher"]["seconds"], "student": r["student"]["seconds"], "total": r["seconds"]}
        points.append({"document_tokens": n, **{f"{p}_seconds": seconds[p] for p in PHASES},
                       **{f"{p}_s_per_token": round(seconds[p] / n, 6) for p in PHASES},
                       **({"fact_sentences_per_1k": round(1000 * r["fact_sentences"] / n, 2)}
                          if "fact_sentences" in r else {})})
    first, last = points[0], points[-1]
    ratios = {p: _ratio(last[f"{p}_seconds"] / last["document_tokens"],
                        first[f"{p}_seconds"] / first["document_tokens"]) for p in PHASES}
    slope, intercept, r2 = linear_fit([p["document_tokens"] for p in points], [p["total_seconds"] for p in points])
    at = slope * EXTRAPOLATE_TOKENS + intercept
    return {"recipe": name, "points": points,
            "ratio": ratios["total"], "teacher_ratio": ratios["teacher"], "student_ratio": ratios["student"],
            "fact_sentence_ratio": _ratio(last.get("fact_sentences_per_1k", 0), first.get("fact_sentences_per_1k", 0)),
            "target_met": ratios["total"] is not None and ratios["total"] <= TARGET_RATIO,
            "fit": {"slope_s_per_1k_tokens": round(slope * 1000, 4), "intercept_s": round(intercept, 3),
                    "r2": round(r2, 4)},
            "extrapolated_s": round(at, 1), "extrapolated_h": round(at / 3600, 2),
            "extrapolated_s_per_token": round(at / EXTRAPOLATE_TOKENS, 6)}


def curve(rows: list[dict]) -> dict:
    """The ``curve`` object of cost.json from its rows (one per length and recipe): per recipe, seconds per
    document token at each length, the longest/shortest ratio against ``TARGET_RATIO`` and the fit's
    extrapolation to ``EXTRAPOLATE_TOKENS``."""
    names = list(dict.fromkeys(r["recipe"] for r in rows))
    return {"target_ratio": TARGET_RATIO, "extrapolate_tokens": EXTRAPOLATE_TOKENS,
            "lengths": sorted({r["document_tokens"] for r in rows}),
            "recipes": [_recipe_curve(name, [r for r in rows if r["recipe"] == name]) for name in names]}


def _sentences(c: dict, target: float, tokens: int) -> list[str]:
    first, last = c["points"][0], c["points"][-1]
    short, long = format_length(first["document_tokens"]), format_length(last["document_tokens"])
    if c["ratio"] is None:
        verdict = "no ratio (no time at the shortest length)"
    else:
        verdict = f"{c['ratio']}×, so the ≤ {target} target is {'met' if c['target_met'] else 'missed'}"
    fit = c["fit"]
    sign = "+" if fit["intercept_s"] >= 0 else "−"
    return [f"- `{c['recipe']}`: seconds per document token at {long} against {short}: "
            f"{last['total_s_per_token']} / {first['total_s_per_token']} = {verdict}.",
            f"- `{c['recipe']}`: the line t = {fit['slope_s_per_1k_tokens']} s per 1k tokens {sign} "
            f"{abs(fit['intercept_s'])} s (R² = {fit['r2']}) gives {c['extrapolated_s']:,} s "
            f"({c['extrapolated_h']} h) for a {format_length(tokens)}-token document."] + ([
            f"- `{c['recipe']}`: the document's fact-bearing sentences (the teacher writes questions about each, "
            f"so its asks and the student's samples grow with them) per 1k tokens at {long} against {short}: "
            f"{last['fact_sentences_per_1k']} / {first['fact_sentences_per_1k']} = {c['fact_sentence_ratio']}×."]
            if c.get("fact_sentence_ratio") is not None else [])


def markdown(report: dict) -> str:
    """The curve section of cost.md: seconds per token at each length, then the ratio and the extrapolation."""
    cv = report["curve"]
    target, tokens = cv["target_ratio"], cv["extrapolate_tokens"]
    lines = ["## Cost curve", "",
             "Seconds per document token at each length; the line is a least-squares fit of the total seconds "
             "against the document's tokens.", "",
             "| recipe | tokens | teacher s | student s | total s | teacher s/token | student s/token "
             "| total s/token | fact sentences / 1k tokens |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cv["recipes"]:
        lines += [f"| {c['recipe']} | {p['document_tokens']} | " + " | ".join(
            str(p[f"{ph}_seconds"]) for ph in PHASES) + " | " + " | ".join(
            str(p[f"{ph}_s_per_token"]) for ph in PHASES) + f" | {p.get('fact_sentences_per_1k', '–')} |"
            for p in c["points"]]
    lines += ["", f"| recipe | s/token, longest / shortest (target ≤ {target}) | teacher | student "
              f"| fit: s per 1k tokens | fit: intercept s | R² | {format_length(tokens)} tokens, extrapolated |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cv["recipes"]:
        met = "" if c["ratio"] is None else (" (met)" if c["target_met"] else " (missed)")
        lines.append(f"| {c['recipe']} | {c['ratio']}{met} | {c['teacher_ratio']} | {c['student_ratio']} | "
                     f"{c['fit']['slope_s_per_1k_tokens']} | {c['fit']['intercept_s']} | {c['fit']['r2']} | "
                     f"{c['extrapolated_s']:,} s ({c['extrapolated_h']} h) |")
    lines.append("")
    for c in cv["recipes"]:
        lines += _sentences(c, target, tokens)
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Seconds per document token against tokens (log scale): a colour per recipe, a line style per phase, and a
    star at the fit's extrapolation to 100k tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    cv = report["curve"]
    styles = {"total": "-", "teacher": "--", "student": ":"}
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles = []
    # the 100k labels stacked in the order of their stars, the lowest lowest
    rank = {c["recipe"]: k for k, c in enumerate(sorted(cv["recipes"], key=lambda c: c["extrapolated_s_per_token"]))}
    for i, c in enumerate(cv["recipes"]):
        colour = colours[i % len(colours)]
        xs = [p["document_tokens"] for p in c["points"]]
        for phase, style in styles.items():
            ax.plot(xs, [p[f"{phase}_s_per_token"] for p in c["points"]], style, color=colour, marker="o",
                    markersize=3 if phase != "total" else 5, linewidth=1.0 if phase != "total" else 1.8)
        x, y = cv["extrapolate_tokens"], c["extrapolated_s_per_token"]
        ax.plot([xs[-1], x], [c["points"][-1]["total_s_per_token"], y], "-.", color=colour, linewidth=0.8,
                alpha=0.6)
        ax.plot([x], [y], "*", color=colour, markersize=11)
        at = c["extrapolated_s"]
        ax.annotate(f"{format_length(x)}: " + (f"{at / 3600:.1f} h" if abs(at) >= 3600 else f"{at:.0f} s"),
                    (x, y), textcoords="offset points", xytext=(-8, 6 + 11 * rank[c['recipe']]), ha="right", fontsize=8,
                    color=colour)
        handles.append(Line2D([], [], color=colour, linewidth=1.8, label=c["recipe"]))
    handles += [Line2D([], [], color="grey", linestyle=s, label=p) for p, s in styles.items()]
    handles.append(Line2D([], [], color="grey", marker="*", linestyle="-.", markersize=9, linewidth=0.8,
                          label=f"line fit at {format_length(cv['extrapolate_tokens'])}"))
    ticks = cv["lengths"] + [cv["extrapolate_tokens"]]
    ax.set_xscale("log")
    ax.set_xticks(ticks, [format_length(t) for t in ticks])
    ax.minorticks_off()
    tops = [p["total_s_per_token"] for c in cv["recipes"] for p in c["points"]]
    tops += [c["extrapolated_s_per_token"] for c in cv["recipes"]]
    ax.set_ylim(0, max(tops) * (1.12 + 0.06 * len(cv["recipes"])))  # room for the stacked 100k labels
    ax.set_xlabel("document tokens")
    ax.set_ylabel("seconds per document token")
    ax.set_title(f"{model_label(report['model'])}\nLIFT cost against the document's length", fontsize=9)
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
