"""Paper mode vs the overlap-aware modes (overlap, recurrent) on one document, same seed: training time against
what was learned, and the time each mode takes to reach the paper mode's quality.

Quality is the document's mean NLL per token with nothing in context (lower = more of the document in the
weights), measured after every epoch of one training run per mode (the measurement is not counted as training
time). Each round trains every mode once, in a rotated order, so that the machine's drifts in speed hit all
modes alike; times are reported per round and as the median over rounds.

    liftlm bench overlap-vs-paper --tokens 2000 --rounds 3 --out experiments/results/overlap-vs-paper
    liftlm bench overlap-vs-paper --replot experiments/results/overlap-vs-paper     # re-summarise, measure nothing

Writes ``results.json`` (every epoch of every run), ``summary.json``, ``summary.md`` and ``curves.png``.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..config import TRAINING_MODES, LiftConfig
from ..errors import LiftError


def run(loaded, doc_ids, text, cfg: LiftConfig, progress: bool = True) -> list[dict]:
    """One training run of ``cfg.epochs`` epochs; a row per epoch: training seconds so far and document NLL."""
    from ..context import PromptBuilder
    from ..infer import text_nll
    from ..train import detach_adapter, train_on_documents

    rows: list[dict] = []
    base = loaded.model  # LoRA layers are injected into it in place: it runs with the adapter while training

    def measure(epoch, result):
        rows.append({"mode": cfg.training_mode, "epoch": epoch + 1, "seconds": round(result.epoch_seconds[-1], 2),
                     "document_nll": round(text_nll(base, loaded.tokenizer, text), 4)})
        if progress:
            print(rows[-1], flush=True)

    prompts = PromptBuilder(loaded.tokenizer, loaded.max_context)
    trained = train_on_documents(base, [(doc_ids, [])], cfg, prompts, progress=False, on_epoch=measure)
    loaded.model = detach_adapter(trained.model)
    return rows


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """Training seconds at which the piecewise-linear (seconds, NLL) ``curve`` first gets down to ``target``."""
    for (t0, y0), (t1, y1) in zip(curve, curve[1:]):
        if y1 <= target:
            return t1 if y0 == y1 else t0 + (t1 - t0) * (y0 - target) / (y0 - y1)
    return None


def summarize(base_nll: float, rows: list[dict], modes: list[str]) -> dict:
    rounds = sorted({r["round"] for r in rows})
    curves = {(m, rnd): [(0.0, base_nll)] + [(r["seconds"], r["document_nll"]) for r in
                                             sorted((r for r in rows if r["mode"] == m and r["round"] == rnd),
                                                    key=lambda r: r["epoch"])]
              for m in modes for rnd in rounds}  # (seconds, NLL) from the start of training, epoch by epoch
    epochs = {m: sorted({r["epoch"] for r in rows if r["mode"] == m}) for m in modes}
    per_epoch = []
    for m in modes:
        for e in epochs[m]:
            sel = [r for r in rows if r["mode"] == m and r["epoch"] == e]
            secs, nlls = [r["seconds"] for r in sel], [r["document_nll"] for r in sel]
            per_epoch.append({"mode": m, "epoch": e, "seconds_median": round(statistics.median(secs), 1),
                              "seconds_min": min(secs), "seconds_max": max(secs),
                              "nll_median": round(statistics.median(nlls), 4), "nll_spread": round(max(nlls) - min(nlls), 4)})
    speedups = []
    for e in epochs.get("paper", []):
        paper_points = [curves["paper", rnd][e] for rnd in rounds]  # (seconds, NLL) after e paper epochs
        for m in modes:
            if m == "paper":
                continue
            reached = [(t_paper, t) for (t_paper, target), rnd in zip(paper_points, rounds)
                       if (t := time_to_reach(curves[m, rnd], target))]
            ratios, times = [tp / t for tp, t in reached], [t for _, t in reached]
            speedups.append({"paper_epochs": e, "mode": m,
                             "target_nll": statistics.median(y for _, y in paper_points),
                             "paper_seconds": statistics.median(t for t, _ in paper_points),
                             "mode_seconds": round(statistics.median(times), 1) if times else None,
                             "speedup_median": round(statistics.median(ratios), 2) if ratios else None,
                             "speedup_min": round(min(ratios), 2) if ratios else None,
                             "speedup_max": round(max(ratios), 2) if ratios else None,
                             "rounds_reached": len(ratios)})
    return {"base_nll": base_nll, "rounds": len(rounds), "per_epoch": per_epoch, "speedups": speedups}


def write_report(out: Path, meta: dict, summary: dict) -> None:
    lines = [f"# Paper mode vs overlap-aware modes ({meta['document_tokens']} tokens, {meta['model']})", "",
             f"Base model document NLL: {summary['base_nll']:.3f}. {summary['rounds']} rounds; seconds are "
             "training time at the end of the epoch (median, min–max over rounds).", "",
             "| mode | epoch | training s | document NLL |", "|---|---:|---:|---:|"]
    for r in summary["per_epoch"]:
        lines.append(f"| {r['mode']} | {r['epoch']} | {r['seconds_median']} ({r['seconds_min']}–{r['seconds_max']}) | "
                     f"{r['nll_median']:.3f} |")
    lines += ["", "Time to reach the paper mode's NLL after its k-th epoch (interpolated between epoch ends):", "",
              "| paper epochs | target NLL | paper s | mode | mode s | less time (median, min–max) |",
              "|---:|---:|---:|---|---:|---:|"]
    for s in summary["speedups"]:
        got = (f"{s['speedup_median']}× ({s['speedup_min']}–{s['speedup_max']}×)" if s["speedup_median"]
               else "not reached")
        lines.append(f"| {s['paper_epochs']} | {s['target_nll']:.3f} | {s['paper_seconds']:.1f} | {s['mode']} | "
                     f"{s['mode_seconds'] if s['mode_seconds'] else '—'} | {got} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def plot(out: Path, summary: dict) -> None:
    from matplotlib.figure import Figure  # no pyplot, as liftlm.bench.analysis (Agg canvas)

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for mode in dict.fromkeys(r["mode"] for r in summary["per_epoch"]):
        pts = [(0.0, summary["base_nll"])] + [(r["seconds_median"], r["nll_median"]) for r in summary["per_epoch"]
                                              if r["mode"] == mode]
        ax.plot(*zip(*pts), marker="o", label=mode)
    for r in summary["per_epoch"]:
        if r["mode"] == "paper":
            ax.axhline(r["nll_median"], color="grey", lw=0.6, ls=":")
    ax.set_xlabel("training time (s, median over rounds)")
    ax.set_ylabel("document NLL per token, nothing in context")
    ax.set_title("Time to learn the document: paper mode vs overlap-aware modes")
    ax.legend()
    fig.savefig(out / "curves.png", dpi=120)


@dataclass
class OverlapOptions:
    tokens: int = 2000
    haystack: str | None = None  # default: the Paul Graham essays beside the repository
    modes: str = "paper:2,overlap:4,recurrent:4"  # mode:epochs, comma-separated
    rounds: int = 3
    out: Path = Path("experiments/results/overlap-vs-paper")
    progress: bool = True


def parse_modes(spec: str) -> list[tuple[str, int]]:
    """``"paper:2,recurrent:4"`` → [("paper", 2), ("recurrent", 4)]; ``LiftError`` for anything else."""
    plan = []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        mode, _, epochs = item.partition(":")
        if mode not in TRAINING_MODES or not epochs.isdigit() or int(epochs) < 1:
            raise LiftError(f"--modes: {item!r} is not MODE:EPOCHS with MODE one of {', '.join(TRAINING_MODES)}")
        plan.append((mode, int(epochs)))
    if not plan or "paper" not in {m for m, _ in plan}:
        raise LiftError("--modes must include paper:EPOCHS (the other modes are measured against it)")
    return plan


def write_outputs(out: Path, meta: dict, rows: list[dict], modes: list[str]) -> dict:
    """results.json, summary.json, summary.md and curves.png in ``out``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(dict(meta, rows=rows), indent=2) + "\n")
    summary = summarize(meta["base_nll"], rows, modes)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(out, meta, summary)
    plot(out, summary)
    return summary


def replot(out: Path) -> dict:
    """Re-summarise ``out/results.json`` (no measuring): the same summary.json, summary.md and plot."""
    path = Path(out) / "results.json"
    if not path.is_file():
        raise LiftError(f"--replot: {path} not found")
    data = json.loads(path.read_text())
    rows = data.pop("rows")
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    return write_outputs(Path(out), data, rows, modes)


def run_overlap_vs_paper(opts: OverlapOptions) -> dict:
    """Measure every mode of ``opts.modes`` for ``opts.rounds`` rounds and write the outputs; returns the summary."""
    from ..infer import text_nll
    from ..models import load_model
    from .common import read_haystack

    plan = parse_modes(opts.modes)
    if opts.tokens < 1 or opts.rounds < 1:
        raise LiftError("--tokens and --rounds must be at least 1")
    text_all = read_haystack(opts.haystack)
    loaded = load_model()
    doc_ids = loaded.tokenizer.encode(text_all, add_special_tokens=False)[: opts.tokens]
    text = loaded.tokenizer.decode(doc_ids)
    base_nll = round(text_nll(loaded.model, loaded.tokenizer, text), 4)
    if opts.progress:
        print({"base_nll": base_nll}, flush=True)
    rows = []
    for rnd in range(opts.rounds):
        k = rnd % len(plan)
        for mode, epochs in plan[k:] + plan[:k]:
            rows += [dict(r, round=rnd + 1) for r in run(loaded, doc_ids, text,
                                                          LiftConfig(objective="ct", training_mode=mode, epochs=epochs),
                                                          opts.progress)]
    meta = {"document_tokens": len(doc_ids), "model": loaded.model_id, "base_nll": base_nll}
    return write_outputs(Path(opts.out), meta, rows, [m for m, _ in plan])
