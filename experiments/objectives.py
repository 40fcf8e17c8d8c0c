"""What each training objective lets the model answer about one document: questions whose answers lie in the
middle of the document (outside the head+tail window), at its ends (inside the window) and general controls,
in modes icl, lift+icl and lift, with training time per objective.

    .venv/bin/python experiments/objectives.py --configs ct,ct-chat,distill,ct+distill --out experiments/results/objectives-embedded

A config is an objective (ct, distill, ct+distill) with optional "-chat" (the CT samples inside the chat turn)
or extra settings after ":" (e.g. ``distill:distill_prompts=4``). One model load, one adapter store per run
(``--store``, default ``<out>/store``; a second run reuses the adapters). Writes ``results.jsonl`` (one answer
per line), ``summary.json`` and ``summary.md`` (hits per config, mode and where the answer lies).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from liftlm import Lift, LiftConfig
from liftlm.eval.metrics import score
from liftlm.options import add_config_flags, config_from_args, flag_name

MODES = ("icl", "lift+icl", "lift")


def parse_config(spec: str, window: int) -> LiftConfig:
    """``objective[-chat][:key=value;...]`` as a ``LiftConfig``, each setting parsed by its CLI flag."""
    name, _, extra = spec.partition(":")
    argv = ["--window", str(window)]
    if name.endswith("-chat"):
        name, argv = name.removesuffix("-chat"), argv + ["--ct-format", "chat"]
    argv += ["--objective", name]
    for item in filter(None, extra.split(";")):
        key, _, value = item.partition("=")
        if isinstance(getattr(LiftConfig(), key), bool):  # a --flag / --no-flag pair
            argv.append(flag_name(key) if value.lower() in ("1", "true", "yes") else "--no-" + flag_name(key)[2:])
        else:
            argv += [flag_name(key), value]
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return config_from_args(parser.parse_args(argv))


def hit(answer: str, answers: list[str]) -> bool:
    return score("niah", answer, answers) > 0 or any(a.lower() in answer.lower() for a in answers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--document", default="examples/kellmere.txt")
    ap.add_argument("--questions", default="examples/kellmere-questions.jsonl")
    ap.add_argument("--configs", default="ct,ct-chat,distill,ct+distill")
    ap.add_argument("--model", default=None)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--out", default="experiments/results/objectives-embedded")
    ap.add_argument("--store", default=None)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = Path(args.document).read_text(encoding="utf-8")
    questions = [json.loads(line) for line in Path(args.questions).read_text().splitlines() if line.strip()]
    rows, meta = [], {}
    lift = None
    for spec in args.configs.split(","):
        cfg = parse_config(spec, args.window)
        lift = Lift(args.model, cfg, store=args.store or out / "store", loaded=lift.loaded if lift else None)
        start = time.perf_counter()
        done = lift.internalize(text)
        meta[spec] = {"trained": done.trained, "wall_seconds": round(time.perf_counter() - start, 1),
                      "train_seconds": done.metadata["training"]["seconds"],
                      "teacher_seconds": done.metadata.get("distill", {}).get("teacher_seconds"),
                      "distill_items": done.metadata.get("distill", {}).get("items"), "adapter": str(done.adapter)}
        print(spec, meta[spec], flush=True)
        for q in questions:
            for mode in MODES:
                if mode == "icl" and rows and any(r["mode"] == "icl" and r["question"] == q["question"] for r in rows):
                    continue  # the base model's answer does not depend on the config
                a = lift.ask(q["question"], mode=mode, max_new_tokens=args.max_new_tokens)
                rows.append({"config": "base" if mode == "icl" else spec, "mode": mode, "question": q["question"],
                             "where": q["where"], "paraphrase": q.get("paraphrase", False), "answer": a.answer,
                             "hit": hit(a.answer, q["answers"])})
                print(rows[-1]["config"], mode, q["where"], rows[-1]["hit"], a.answer[:90].replace("\n", " "),
                      flush=True)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    groups = {}
    for r in rows:
        key = (r["config"], r["mode"], r["where"])
        groups.setdefault(key, []).append(r["hit"])
    summary = {"model": lift.model_id, "window": args.window, "configs": meta,
               "hits": [{"config": c, "mode": m, "where": w, "hits": sum(h), "of": len(h)}
                        for (c, m, w), h in groups.items()]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    wheres = list(dict.fromkeys(q["where"] for q in questions))
    lines = [f"# Objectives on {Path(args.document).name} ({lift.model_id}, window {args.window})", "",
             "| config | mode | " + " | ".join(wheres) + " | training s | teacher s |",
             "|---|---|" + "---:|" * (len(wheres) + 2)]
    for (c, m) in dict.fromkeys((c, m) for c, m, _ in groups):
        cells = [f"{sum(groups[c, m, w])}/{len(groups[c, m, w])}" if (c, m, w) in groups else "–" for w in wheres]
        info = meta.get(c, {})
        lines.append(f"| {c} | {m} | " + " | ".join(cells) +
                     f" | {info.get('train_seconds', '–')} | {info.get('teacher_seconds') or '–'} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
