"""Time answering over a long prompt whose keys/values are kept: the first answer computes the prompt, the next
ones (the same prompt again, ``PromptReuse``) only decode over its cache. For comparing decoding code between
commits: run it with ``PYTHONPATH`` set to each worktree in turn.

    PYTHONPATH=<worktree> python experiments/decode_timing.py --tokens 8000 [--model M] [--repeats 3]
"""
from __future__ import annotations

import argparse
import glob
import os
import time

import liftlm
from liftlm.infer import PromptReuse, greedy_decode
from liftlm.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=8000, help="prompt length: the Paul Graham essays cut to it")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None, help="default: the embedded model")
    ap.add_argument("--haystack", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                        "niah", "PaulGrahamEssays"))
    args = ap.parse_args()
    lm = load_model(args.model)
    text = " ".join(open(p, encoding="utf-8").read() for p in sorted(glob.glob(os.path.join(args.haystack, "*.txt"))))
    ids = lm.tokenizer.encode(text, add_special_tokens=False)[:args.tokens]
    if len(ids) < args.tokens:
        raise SystemExit(f"the haystack holds {len(ids)} tokens, fewer than --tokens {args.tokens}")
    message = lm.tokenizer.decode(ids) + "\n\nSummarize the essays above in detail."
    prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                              tokenize=True, return_dict=False)
    reuse = PromptReuse()
    t = time.perf_counter()
    first = greedy_decode(lm.model, lm.tokenizer, prompt, args.new_tokens, reuse=reuse)
    times = [time.perf_counter() - t]
    for _ in range(args.repeats):
        t = time.perf_counter()
        again = greedy_decode(lm.model, lm.tokenizer, prompt, args.new_tokens, reuse=reuse)
        times.append(time.perf_counter() - t)
        if again.ids != first.ids:
            raise SystemExit("the answer over the kept keys/values differs from the first")
    print(f"{os.path.dirname(liftlm.__file__)}: {len(prompt)} prompt tokens, {len(first.ids)} answer tokens; "
          f"first {times[0]:.1f} s; over the kept cache " + ", ".join(f"{x:.2f}" for x in times[1:]) + " s")


if __name__ == "__main__":
    main()
