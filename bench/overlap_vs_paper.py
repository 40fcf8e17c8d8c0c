"""Paper mode vs the overlap-aware modes (overlap, recurrent) on one document, same seed: training time against
what was learned, and the time each mode takes to reach the paper mode's quality.

Quality is the document's mean NLL per token with nothing in context (lower = more of the document in the
weights), measured after every epoch of one training run per mode (the measurement is not counted as training
time). Each round trains every mode once, in a rotated order, so that the machine's drifts in speed hit all
modes alike; times are reported per round and as the median over rounds.

    .venv/bin/python bench/overlap_vs_paper.py --tokens 2000 --rounds 3 --out bench/results/overlap-vs-paper

Writes ``results.json`` (every epoch of every run), ``summary.json``, ``summary.md`` and ``curves.png``.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from transformers.utils import logging as hf_logging

from liftlm import LiftConfig
from liftlm.context import PromptBuilder
from liftlm.eval.niah import load_haystack
from liftlm.infer import text_nll
from liftlm.models import load_model
from liftlm.overlap import trainer_for
from liftlm.recipe import build_samples
from liftlm.train import attach_adapter


def run(loaded, doc_ids, text, cfg: LiftConfig) -> list[dict]:
    """One training run of ``cfg.epochs`` epochs; a row per epoch: training seconds so far and document NLL."""
    prompts = PromptBuilder(loaded.tokenizer, loaded.max_context)
    samples = build_samples(doc_ids, cfg, prompts)
    model = attach_adapter(loaded.model, cfg)
    rows: list[dict] = []

    def measure(epoch, result):
        rows.append({"mode": cfg.training_mode, "epoch": epoch + 1, "seconds": round(result.epoch_seconds[-1], 2),
                     "document_nll": round(text_nll(model, loaded.tokenizer, text), 4)})
        print(rows[-1], flush=True)

    trainer_for(cfg.training_mode)(model, samples, cfg, progress=False, on_epoch=measure)
    loaded.model = model.unload()
    if hasattr(loaded.model, "peft_config"):
        del loaded.model.peft_config
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--haystack", default="../shared/data/niah/PaulGrahamEssays")
    ap.add_argument("--modes", default="paper:2,overlap:4,recurrent:4", help="mode:epochs, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="bench/results/overlap-vs-paper")
    args = ap.parse_args()
    plan = [(m, int(e)) for m, e in (x.split(":") for x in args.modes.split(","))]
    modes = [m for m, _ in plan]
    hf_logging.disable_progress_bar()
    loaded = load_model()
    doc_ids = loaded.tokenizer.encode(load_haystack(args.haystack), add_special_tokens=False)[: args.tokens]
    text = loaded.tokenizer.decode(doc_ids)
    base_nll = round(text_nll(loaded.model, loaded.tokenizer, text), 4)
    print({"base_nll": base_nll}, flush=True)
    rows = []
    for rnd in range(args.rounds):
        k = rnd % len(plan)
        for mode, epochs in plan[k:] + plan[:k]:
            rows += [dict(r, round=rnd + 1) for r in run(loaded, doc_ids, text,
                                                          LiftConfig(training_mode=mode, epochs=epochs))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"document_tokens": len(doc_ids), "model": loaded.model_id, "base_nll": base_nll}
    (out / "results.json").write_text(json.dumps(dict(meta, rows=rows), indent=2) + "\n")
    summary = summarize(base_nll, rows, modes)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(out, meta, summary)
    plot(out, summary)
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
