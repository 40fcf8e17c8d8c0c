"""Paper mode vs the overlap-aware modes (overlap, recurrent) on one document, same seed: training time against
what was learned.

Quality is the document's mean NLL per token with nothing in context (lower = more of the document in the
weights), measured after each run; time is the training wall time. Writes a JSON report.

    .venv/bin/python bench/overlap_vs_paper.py --tokens 2000 --out bench/results/overlap-vs-paper.json
"""
from __future__ import annotations

import argparse
import json
import time

from transformers.utils import logging as hf_logging

from liftlm import LiftConfig
from liftlm.context import PromptBuilder
from liftlm.eval.niah import load_haystack
from liftlm.infer import text_nll
from liftlm.models import load_model
from liftlm.overlap import trainer_for
from liftlm.recipe import build_samples
from liftlm.train import attach_adapter


def run(loaded, doc_ids, text, cfg: LiftConfig) -> dict:
    prompts = PromptBuilder(loaded.tokenizer, loaded.max_context)
    samples = build_samples(doc_ids, cfg, prompts)
    model = attach_adapter(loaded.model, cfg)
    trainer = trainer_for(cfg.training_mode)
    start = time.perf_counter()
    result = trainer(model, samples, cfg, progress=False)
    seconds = time.perf_counter() - start
    nll = text_nll(model, loaded.tokenizer, text)
    loaded.model = model.unload()
    if hasattr(loaded.model, "peft_config"):
        del loaded.model.peft_config
    return {"mode": cfg.training_mode, "epochs": cfg.epochs, "seconds": round(seconds, 1),
            "document_nll": round(nll, 4), "samples": len(samples), "trained_tokens": result.tokens,
            "prefix_tokens": getattr(result, "prefix_tokens", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--haystack", default="../shared/data/niah/PaulGrahamEssays")
    ap.add_argument("--paper-epochs", default="1,2")
    ap.add_argument("--overlap-epochs", default="1,2,3,4")
    ap.add_argument("--recurrent-epochs", default="1,2,3,4,5")
    ap.add_argument("--out", default="bench/results/overlap-vs-paper.json")
    args = ap.parse_args()
    hf_logging.disable_progress_bar()
    loaded = load_model()
    doc_ids = loaded.tokenizer.encode(load_haystack(args.haystack), add_special_tokens=False)[: args.tokens]
    text = loaded.tokenizer.decode(doc_ids)
    rows = [{"mode": "base", "epochs": 0, "seconds": 0.0,
             "document_nll": round(text_nll(loaded.model, loaded.tokenizer, text), 4)}]
    print(rows[-1], flush=True)
    for mode, epochs in [("paper", e) for e in args.paper_epochs.split(",") if e] + \
                        [("overlap", e) for e in args.overlap_epochs.split(",") if e] + \
                        [("recurrent", e) for e in args.recurrent_epochs.split(",") if e]:
        rows.append(run(loaded, doc_ids, text, LiftConfig(training_mode=mode, epochs=int(epochs))))
        print(rows[-1], flush=True)
    with open(args.out, "w") as f:
        json.dump({"document_tokens": len(doc_ids), "model": loaded.model_id, "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
