"""Which facts a recipe's teacher items carry, before any student trains: the teacher only (its items cached, so
a later `liftlm eval` with the same flags reuses them), then per fact the items that carry it
(liftlm.eval.coverage), counted over every item the teacher made (before --distill-kinds). A fact no item carries will not be stored; this costs the teacher's minutes, not the
student's hours.

    python experiments/teacher_coverage.py EVAL_FLAGS...   (the flags of `liftlm eval --benchmark facts`)

e.g. `python experiments/teacher_coverage.py --benchmark facts --model Q --lengths 2000 --facts 10 --window 512
--distill-cloze --distill-prompts 0 --distill-questions 0`. Prints a line per fact and a total per document.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from liftlm.eval.cli import register, spec_from_args
from liftlm.eval.coverage import ItemAnswers
from liftlm.eval.runner import group_by_document, load_examples
from liftlm.options import config_from_args
from liftlm.recipe import Lift


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="teacher_coverage")
    register(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["eval", *argv])
    spec, config = spec_from_args(args), config_from_args(args)
    lift = Lift(spec.model, config, store=spec.store, device=spec.device, progress=spec.progress)
    examples, _ = load_examples(spec, lift.tokenizer)
    for index, (document, exs) in enumerate(group_by_document(examples)):
        lift.read(document)
        items, report = lift.distill.items(document, lift._doc_ids, lift._fresh_base(), lift.tokenizer,
                                           lift.prompts.chat)
        path = lift.distill.cache_path(document)  # every item the teacher made (--distill-kinds not applied)
        answers = ItemAnswers(lift.tokenizer)
        facts = [ex for ex in exs if ex.metadata.get("kind") == "fact"]
        uncarried = 0
        print(f"document {index + 1}: {len(items)} items {dict(Counter(it.kind for it in items))}; "
              f"teacher {report.get('teacher_seconds', 0):.0f} s")
        for ex in facts:
            kinds = answers.carrying(path, ex.metadata["fact_token"], list(ex.answers))
            n = sum(kinds.values())
            uncarried += n == 0
            print(f"  depth {ex.metadata['depth']:.3f}  {ex.answers[0]:<18} {n} {kinds}")
        print(f"  facts carried by no item: {uncarried} of {len(facts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
