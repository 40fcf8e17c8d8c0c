"""Where a LIFT training step spends its time on this machine, and what the obvious speed-ups buy.

Profiles a few training steps of the embedded model (default settings: contextualized samples of the 2k-token
haystack, LoRA r16 on q/k/v/o, AdamW) with ``torch.profiler`` and prints the operators by self time; then times the
same steps with each variant, alternating variant and baseline ``--rounds`` times so that drifts in the machine's
speed hit both alike:

* ``eager``   — the model's own attention code (matmul + softmax) instead of SDPA;
* ``math``    — SDPA's math backend instead of its CPU flash kernel;
* ``compile`` — ``torch.compile`` (inductor) of the decoder stack (the compile time is reported apart).

Usage: ``.venv/bin/python experiments/profile_step.py [--steps 6] [--rounds 3] [--json-out FILE]``
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=2048, help="document length (first tokens of the haystack)")
    ap.add_argument("--steps", type=int, default=6, help="timed training steps per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternating variant/baseline rounds")
    ap.add_argument("--variants", default="eager,math,compile")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()

    from liftlm.bench.common import haystack_ids, load_bench_model, read_haystack
    from liftlm.config import LiftConfig
    from liftlm.context import PromptBuilder
    from liftlm.train import attach_adapter, build_samples, sample_loss

    torch.manual_seed(0)
    text = read_haystack(None)
    loaded = load_bench_model(None, None, None, None, text)
    cfg = LiftConfig(epochs=1)
    ids, _ = haystack_ids(loaded.tokenizer, text, args.tokens)
    samples = build_samples(ids, cfg, PromptBuilder(loaded.tokenizer, loaded.max_context))
    samples = samples[: args.steps + 2]
    model = attach_adapter(loaded.model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.resolved_learning_rate)
    batch = [(torch.tensor([s.input_ids]), torch.tensor([s.labels])) for s in samples]
    model.train()

    def step(i: int) -> None:
        loss = sample_loss(model, *batch[i])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def tokens_per_second() -> float:
        for i in range(2):  # warm-up
            step(i)
        start, n = time.perf_counter(), 0
        for i in range(2, len(batch)):
            step(i)
            n += batch[i][0].shape[1]
        return n / (time.perf_counter() - start)

    report: dict = {"threads": torch.get_num_threads(), "sample_tokens": [b[0].shape[1] for b in batch]}

    from torch.profiler import ProfilerActivity, profile

    for i in range(2):
        step(i)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(2, len(batch)):
            step(i)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    report["profile"] = [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 1),
                          "share": round(e.self_cpu_time_total / total, 4), "calls": e.count} for e in events[:15]]
    print(f"profile of {len(batch) - 2} steps ({total / 1e6:.2f} s self CPU time), top operators:")
    for row in report["profile"]:
        print(f"  {row['share']:6.1%}  {row['self_ms']:9.1f} ms  {row['calls']:6d} calls  {row['op'][:70]}")

    from torch.nn.attention import SDPBackend, sdpa_kernel

    decoder_owner = model.base_model.model  # the *ForCausalLM; .model is its decoder stack
    plain_decoder = decoder_owner.model
    compiled_decoder = None
    results: dict = {}
    for variant in [v for v in args.variants.split(",") if v]:
        runs = {"baseline": [], variant: []}
        extra: dict = {}
        for _ in range(args.rounds):
            runs["baseline"].append(tokens_per_second())
            if variant == "eager":
                model.set_attn_implementation("eager")
                runs[variant].append(tokens_per_second())
                model.set_attn_implementation("sdpa")
            elif variant == "math":
                with sdpa_kernel(SDPBackend.MATH):
                    runs[variant].append(tokens_per_second())
            elif variant == "compile":
                if compiled_decoder is None:
                    compiled_decoder = torch.compile(plain_decoder)
                    decoder_owner.model = compiled_decoder
                    began = time.perf_counter()
                    step(0)
                    extra["compile_seconds"] = round(time.perf_counter() - began, 1)
                decoder_owner.model = compiled_decoder
                runs[variant].append(tokens_per_second())
                decoder_owner.model = plain_decoder
            else:
                raise SystemExit(f"unknown variant {variant!r}")
        base, var = statistics.median(runs["baseline"]), statistics.median(runs[variant])
        results[variant] = {"runs": runs, "baseline_median": round(base, 1), "median": round(var, 1),
                            "speedup": round(var / base, 3), **extra}
        print(f"{variant:8s} {var:7.1f} tokens/s vs baseline {base:7.1f} (x{var / base:.3f}); runs {runs}"
              + (f"; compile {extra['compile_seconds']} s" if extra else ""))
    report["variants"] = results
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
