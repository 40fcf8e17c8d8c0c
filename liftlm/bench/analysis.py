"""Analysis of scaling results: polynomial fits with R², the LIFT/ICL crossover, LIFT's memory growth, a
Markdown table and a plot like the paper's Figure 3. Pure functions of the rows (``results.json``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import K, format_length, memory_of

LIFT_MEMORY_LIMIT = 1.2  # the issue: LIFT's peak memory at 16k ≤ 1.2 × at 2k
LIFT_MEMORY_REFERENCE = 2000
FIT_KINDS = {1: "linear", 2: "quadratic"}


# ---------------------------------------------------------------- fits


def r_squared(y, y_hat) -> float:
    """Coefficient of determination; 1.0 for a perfect fit (also of constant data)."""
    y, y_hat = np.asarray(y, float), np.asarray(y_hat, float)
    ss_res = float(np.sum((y - y_hat) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def fit_poly(xs, ys, degree: int) -> dict:
    """Least-squares polynomial of ``degree`` (``np.polyfit``); ``coef`` highest power first, x in tokens.
    With fewer than degree + 1 points, ``coef`` and ``r2`` are None and ``note`` says why."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    result = {"kind": FIT_KINDS.get(degree, f"degree {degree}"), "degree": degree, "n": len(xs),
              "coef": None, "r2": None, "note": None}
    if len(xs) < degree + 1:
        result["note"] = f"a {result['kind']} fit needs at least {degree + 1} measured points (got {len(xs)})"
        return result
    coef = np.polyfit(xs, ys, degree)
    result["coef"] = [float(c) for c in coef]
    result["r2"] = r_squared(ys, np.polyval(coef, xs))
    if len(xs) == degree + 1:
        result["note"] = "as many points as coefficients: R² is 1 by construction"
    return result


def evaluate(fit: dict, x):
    return np.polyval(fit["coef"], np.asarray(x, float))


def find_crossover(lift: dict, icl: dict, icl_lengths: list[int]) -> dict:
    """The smallest length L > 0 where the ICL fit overtakes the LIFT fit (ICL slower from there on).
    ``extrapolated`` when L lies outside the lengths at which ICL was measured."""
    out = {"length": None, "seconds": None, "extrapolated": None, "note": None}
    if lift.get("coef") is None or icl.get("coef") is None:
        out["note"] = "needs both a LIFT fit and an ICL fit"
        return out
    diff = np.polysub(np.asarray(icl["coef"]), np.asarray(lift["coef"]))  # ICL − LIFT
    slope = np.polyder(diff)
    candidates = sorted(
        float(r.real) for r in np.atleast_1d(np.roots(diff))
        if abs(r.imag) <= 1e-9 * max(1.0, abs(r.real)) and r.real > 0 and np.polyval(slope, r.real) > 0
    )
    lo, hi = (min(icl_lengths), max(icl_lengths)) if icl_lengths else (None, None)
    if not candidates:
        slower = np.polyval(diff, hi if hi else 1.0) > 0
        out["note"] = ("by the fits ICL is slower than LIFT at every measured length (no crossover above 0)"
                       if slower else "by the fits ICL stays faster than LIFT at every length (no crossover)")
        return out
    x = candidates[0]
    out.update(length=round(x, 1), seconds=round(float(evaluate(lift, x)), 3))
    out["extrapolated"] = bool(lo is None or not lo <= x <= hi)
    if out["extrapolated"]:
        out["note"] = (f"extrapolated: ICL was measured from {format_length(lo)} to {format_length(hi)} tokens"
                       if lo is not None else "extrapolated")
    else:
        out["note"] = "within the lengths at which ICL was measured"
    return out


def observed_crossover(rows: list[dict]) -> int | None:
    """The smallest length at which both were measured and ICL took longer than LIFT."""
    by = {(r["method"], r["length"]): r for r in rows if r["status"] == "ok" and r.get("seconds") is not None}
    for length in sorted({r["length"] for r in rows}):
        lift, icl = by.get(("lift", length)), by.get(("icl", length))
        if lift and icl and icl["seconds"] > lift["seconds"]:
            return length
    return None


def lift_memory_check(rows: list[dict], limit: float = LIFT_MEMORY_LIMIT,
                      reference: int = LIFT_MEMORY_REFERENCE) -> dict | None:
    """Peak memory of LIFT at its longest measured length over that at ``reference`` tokens (or the nearest
    longer one, or the shortest); None with fewer than two lengths."""
    ok = sorted((r for r in rows if r["method"] == "lift" and r["status"] == "ok" and memory_of(r) is not None),
                key=lambda r: r["length"])
    if len(ok) < 2:
        return None
    ref = next((r for r in ok if r["length"] >= reference), ok[0])
    top = ok[-1]
    if top["length"] <= ref["length"]:
        ref = ok[0]
    ratio = memory_of(top) / memory_of(ref)
    check = {"from": ref["length"], "to": top["length"], "from_mb": memory_of(ref), "to_mb": memory_of(top),
             "ratio": round(ratio, 3), "limit": limit, "ok": ratio <= limit, "work_ratio": None}
    if ref.get("work_peak_rss_mb") and top.get("work_peak_rss_mb") and ref.get("peak_gpu_mb") is None:
        check["work_ratio"] = round(top["work_peak_rss_mb"] / ref["work_peak_rss_mb"], 3)
    return check


def _ok(rows: list[dict], method: str) -> list[dict]:
    return sorted((r for r in rows if r["method"] == method and r["status"] == "ok" and r.get("seconds") is not None),
                  key=lambda r: r["length"])


def summarize(rows: list[dict], meta: dict | None = None) -> dict:
    lift, icl = _ok(rows, "lift"), _ok(rows, "icl")
    fits = {
        "lift": fit_poly([r["length"] for r in lift], [r["seconds"] for r in lift], 1),
        "icl": fit_poly([r["length"] for r in icl], [r["seconds"] for r in icl], 2),
    }
    gpu = any(r.get("peak_gpu_mb") is not None for r in rows)
    return {
        "meta": meta or {},
        "memory_kind": "GPU allocator peak" if gpu else "process peak RSS",
        "fits": fits,
        "crossover": find_crossover(fits["lift"], fits["icl"], [r["length"] for r in icl]),
        "observed_crossover": observed_crossover(rows),
        "lift_memory": lift_memory_check(rows),
        "not_measured": [{"method": r["method"], "length": r["length"], "status": r["status"],
                          "detail": r.get("detail")} for r in rows if r["status"] != "ok"],
        "rows": rows,
    }


# ---------------------------------------------------------------- tables


def _poly_text(coef: list[float]) -> str:
    """The polynomial in L = thousands of tokens, e.g. ``0.0052·L² + 1.3·L + 0.4``."""
    deg = len(coef) - 1
    terms = []
    for i, c in enumerate(coef):
        power = deg - i
        c_k = c * K**power  # coefficient for L in thousands
        var = {0: "", 1: "·L"}.get(power, f"·L^{power}")
        terms.append(f"{c_k:.4g}{var}")
    return " + ".join(terms).replace("+ -", "− ")


def fit_line(name: str, fit: dict) -> str:
    if fit["coef"] is None:
        return f"- {name} ({fit['kind']}): no fit — {fit['note']}"
    note = f" ({fit['note']})" if fit.get("note") else ""
    return f"- {name} ({fit['kind']}): t = {_poly_text(fit['coef'])} s, R² = {fit['r2']:.4f}, {fit['n']} points{note}"


def _cell(row: dict | None, key: str, fmt: str) -> str:
    if row is None:
        return ""
    if row["status"] != "ok":
        return row["status"] if key == "seconds" else "—"
    value = memory_of(row) if key == "memory" else row.get(key)
    return "—" if value is None else format(value, fmt)


def markdown(summary: dict) -> str:
    rows, meta = summary["rows"], summary.get("meta", {})
    lines = ["# Scaling: LIFT vs ICL", ""]
    if meta:
        s = meta.get("lift_settings", {})
        lines.append(f"Model {meta.get('model')} on {meta.get('device')}; {meta.get('isolation', '')}. "
                     f"LIFT: {s.get('epochs')} epoch(s), segment length {s.get('segment_length')}, context "
                     f"{s.get('context_tokens')} tokens, LoRA r={s.get('lora_rank')}. ICL: the whole document and "
                     f"the question, then {meta.get('answer_tokens')} answer tokens.")
        lines.append("")
    lines += [f"Memory: {summary['memory_kind']} (MiB).", "",
              "| length (tokens) | LIFT s | LIFT MiB | ICL s | ICL MiB |",
              "|---:|---:|---:|---:|---:|"]
    by = {(r["method"], r["length"]): r for r in rows}
    for length in sorted({r["length"] for r in rows}):
        lift, icl = by.get(("lift", length)), by.get(("icl", length))
        lines.append(f"| {length} | {_cell(lift, 'seconds', '.2f')} | {_cell(lift, 'memory', '.0f')} | "
                     f"{_cell(icl, 'seconds', '.2f')} | {_cell(icl, 'memory', '.0f')} |")
    lines += ["", "Fits (L in thousands of tokens, t in seconds):", "",
              fit_line("LIFT", summary["fits"]["lift"]), fit_line("ICL", summary["fits"]["icl"])]
    c = summary["crossover"]
    if c["length"] is not None:
        lines.append(f"- Crossover (fits): ICL becomes slower than LIFT at ≈ {c['length'] / K:.1f}k tokens "
                     f"({c['seconds']:.1f} s); {c['note']}")
    else:
        lines.append(f"- Crossover (fits): none — {c['note']}")
    obs = summary.get("observed_crossover")
    lines.append("- Crossover (measured): " + (f"ICL slower than LIFT from {format_length(obs)} tokens on"
                                               if obs is not None else "ICL was faster at every length measured "
                                                                       "for both"))
    m = summary.get("lift_memory")
    if m:
        verdict = "ok" if m["ok"] else "OVER the limit"
        extra = f"; the peak during training alone: ×{m['work_ratio']}" if m.get("work_ratio") else ""
        lines.append(f"- LIFT memory: peak at {format_length(m['to'])} / at {format_length(m['from'])} = "
                     f"{m['ratio']:.3f} (limit {m['limit']}: {verdict}){extra}")
    for r in summary.get("not_measured", []):
        lines.append(f"- {r['method']} at {format_length(r['length'])}: {r['status']}"
                     + (f" — {r['detail']}" if r.get("detail") else ""))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the plot


def plot(summary: dict, path: str | Path) -> Path:
    """Two panels like the paper's Figure 3: time and peak memory against the length, with the fits (dashed
    where extrapolated), points that could not be measured marked on the axis, and the crossover."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed (Agg canvas)

    rows = summary["rows"]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_t, ax_m = fig.subplots(1, 2)
    colors = {"lift": "C0", "icl": "C1"}
    names = {"lift": "LIFT (1 epoch)", "icl": "ICL (prefill + answer)"}
    all_lengths = [r["length"] for r in rows] or [1]
    x_max = max(all_lengths) * 1.05
    cross = summary["crossover"]
    if cross.get("length") and cross["length"] <= 3 * max(all_lengths):
        x_max = max(x_max, cross["length"] * 1.1)
    grid = np.linspace(0, x_max, 200)
    for method, fit in summary["fits"].items():
        ok = _ok(rows, method)
        color = colors[method]
        if ok:
            xs = [r["length"] / K for r in ok]
            ax_t.plot(xs, [r["seconds"] for r in ok], "o" if method == "lift" else "s", color=color,
                      label=names[method])
            mem = [(r["length"] / K, memory_of(r)) for r in ok if memory_of(r) is not None]
            if mem:
                ax_m.plot(*zip(*mem), "o-" if method == "lift" else "s-", color=color, label=names[method])
        if fit.get("coef") is not None:
            lo, hi = ok[0]["length"], ok[-1]["length"]
            inside = (grid >= lo) & (grid <= hi)
            y = evaluate(fit, grid)
            label = f"{fit['kind']} fit, R²={fit['r2']:.3f}"
            ax_t.plot(grid[inside] / K, y[inside], "-", color=color, alpha=0.7, label=label)
            ax_t.plot(grid[grid >= hi] / K, y[grid >= hi], "--", color=color, alpha=0.5)
            ax_t.plot(grid[grid <= lo] / K, y[grid <= lo], "--", color=color, alpha=0.5)
        failed = [r for r in rows if r["method"] == method and r["status"] != "ok"]
        for r in failed:
            for ax in (ax_t, ax_m):
                ax.plot(r["length"] / K, 0, "x", color=color, markersize=9, clip_on=False)
            ax_t.annotate(r["status"], (r["length"] / K, 0), textcoords="offset points", xytext=(3, 6),
                          rotation=90, fontsize=8, color=color)
    windows = {r.get("window") for r in rows if r["method"] == "icl" and r.get("window")}
    for w in windows:
        if w <= x_max:
            ax_t.axvline(w / K, color="grey", linestyle=":", linewidth=1)
            ax_t.annotate("ICL window", (w / K, 0.6), xycoords=("data", "axes fraction"), rotation=90,
                          fontsize=8, color="grey", ha="right", va="top")
    if cross.get("length") and cross["length"] <= x_max:
        ax_t.plot(cross["length"] / K, cross["seconds"], "*", color="k", markersize=12,
                  label=f"crossover ≈ {cross['length'] / K:.1f}k" + (" (extrapolated)" if cross["extrapolated"]
                                                                     else ""))
    elif cross.get("length"):
        ax_t.annotate(f"crossover ≈ {cross['length'] / K:.0f}k tokens (extrapolated, off the plot)",
                      (0.98, 0.02), xycoords="axes fraction", ha="right", va="bottom", fontsize=8)
    model = summary.get("meta", {}).get("model", "")
    ax_t.set(xlabel="document length (k tokens)", ylabel="wall time (s)", title=f"Time — {model}",
             xlim=(0, x_max / K))
    ax_m.set(xlabel="document length (k tokens)", ylabel=f"{summary['memory_kind']} (MiB)", title="Peak memory",
             xlim=(0, x_max / K))
    ax_t.set_ylim(bottom=0)
    ax_m.set_ylim(bottom=0)
    for ax, where in ((ax_t, "upper left"), (ax_m, "lower right")):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc=where)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
