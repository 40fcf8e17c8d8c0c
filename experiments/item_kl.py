"""How far the student already is from the teacher on each distillation item, before training: the lever "drop the
items the student already answers as the teacher does" (issue 27), measured before it is built.

    python experiments/item_kl.py --model MODEL_DIR --items ITEMS.jsonl [--adapter DIR [--base-from JSON]] --out DIR

For each teacher item (the teacher's JSONL cache, or an adapter's ``distill.jsonl``) the model answers in view
``lift`` (the question alone, as the student trains it), forward only: the soft loss the student would train on
(cross-entropy against the teacher's renormalised top-k), the teacher's own entropy over those k, their difference
(KL(teacher || student) over the k), and how many answer tokens the model's greedy choice shares with the teacher's.
``--adapter``: the same after training (which items the adapter learned); ``--base-from``: the untrained model's
measurements of an earlier run on the same items. Writes DIR/item_kl.json (one record an
item) and DIR/item_kl.md (the distribution per item kind, and how many items fall under each KL threshold).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from liftlm.context import PromptBuilder
from liftlm.distill.cache import read_items
from liftlm.distill.student import soft_loss, student_samples
from liftlm.models import load_model

THRESHOLDS = (0.05, 0.1, 0.25, 0.5, 1.0)


@torch.no_grad()
def measure(model, sample) -> dict:
    """The item's soft loss, teacher entropy, KL and greedy agreement, in its ``lift`` view."""
    ids = list(sample.shared_prefix or []) + list(sample.input_ids)
    t = sample.n_loss_tokens
    logits = model(input_ids=torch.tensor([ids]), logits_to_keep=t + 1).logits[0, :-1].float()  # predict answer
    top_ids, top_logprobs = torch.tensor(sample.top_ids), torch.tensor(sample.top_logprobs)
    ce = soft_loss(logits, top_ids, top_logprobs).item()  # the student's training loss on this item
    target = F.softmax(top_logprobs.float(), -1)
    entropy = -(target * target.clamp_min(1e-12).log()).sum(-1).mean().item()
    agree = (logits.argmax(-1) == top_ids[:, 0]).float()
    return {"tokens": t, "ce": ce, "entropy": entropy, "kl": ce - entropy, "agree": agree.mean().item(),
            "exact": bool(agree.all())}


def table(records: list[dict]) -> list[str]:
    kinds = sorted({r["kind"] for r in records}, key=lambda k: (k == "retention", k))
    head = ["| kind | items | KL median | KL mean | greedy agreement | answered exactly | "
            + " | ".join(f"KL < {x}" for x in THRESHOLDS) + " |",
            "|---|---:|---:|---:|---:|---:|" + "---:|" * len(THRESHOLDS)]
    rows = []
    for kind in kinds + ["all but retention", "all"]:
        rs = [r for r in records if r["kind"] == kind or kind == "all"
              or (kind == "all but retention" and r["kind"] != "retention")]
        if not rs:
            continue
        kl = [r["kl"] for r in rs]
        rows.append(f"| {kind} | {len(rs)} | {statistics.median(kl):.3f} | {statistics.mean(kl):.3f} | "
                    f"{statistics.mean(r['agree'] for r in rs):.2f} | {sum(r['exact'] for r in rs)} | "
                    + " | ".join(str(sum(k < x for k in kl)) for x in THRESHOLDS) + " |")
    return head + rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--items", required=True, type=Path)
    parser.add_argument("--adapter", help="a trained adapter to measure as well (PEFT folder)")
    parser.add_argument("--base-from", type=Path, help="an earlier run's item_kl.json on the same items: its base "
                        "measurements are kept, and only the adapter is measured")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    loaded = load_model(args.model)
    items = read_items(args.items)
    samples = student_samples(items, PromptBuilder(loaded.tokenizer, args.window), [], ("lift",))
    names = ["base", "adapter"] if args.adapter else ["base"]
    records = [{"kind": it.kind, "prompt": it.prompt} for it in items]
    if args.base_from:
        earlier = json.loads(args.base_from.read_text(encoding="utf-8"))
        if [(r["kind"], r["prompt"]) for r in earlier] != [(r["kind"], r["prompt"]) for r in records]:
            parser.error(f"--base-from {args.base_from}: measured on other items")
        for rec, old in zip(records, earlier):
            rec["base"] = old["base"]
    start = time.perf_counter()
    model = loaded.model
    for name in names:
        if name == "base" and args.base_from:
            continue
        if name == "adapter":  # PEFT wraps the base in place: the base is measured first
            from peft import PeftModel

            model = PeftModel.from_pretrained(loaded.model, args.adapter)
        model.eval()
        for i, (rec, sample) in enumerate(zip(records, samples)):
            rec[name] = measure(model, sample)
            print(f"\r{name}: {i + 1}/{len(samples)} items, {time.perf_counter() - start:.0f} s", end="", file=sys.stderr)
        print(file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "item_kl.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    lines = [f"# Per-item distance from the teacher, view `lift` ({args.items.name}, {len(items)} items)", ""]
    for name in names:
        lines += [f"## {name}", "", *table([{"kind": r["kind"], **r[name]} for r in records]), ""]
    (args.out / "item_kl.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
