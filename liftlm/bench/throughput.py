"""Throughput benchmark: liftlm's trainer against a bare forward+backward loop, and against the machine's ceiling.

Both runs use the same samples (the contextualized samples of the first ``tokens`` tokens of the haystack), the
same model, the same freshly initialised LoRA adapter, the same sample order and optimizer (AdamW):

* trainer — ``liftlm.train.train`` (progress bar off), as ``liftlm internalize`` runs it;
* bare    — a plain loop: forward (logits of the labelled positions only, like the trainer), cross-entropy,
  backward, optimizer step. No scheduler, clipping, loss bookkeeping or progress bar.

Each run is timed as a whole (setup included, device synchronised), after a warm-up of both on a few samples;
with ``repeats`` > 1 the order alternates and the medians are compared. The issue's target: trainer ≥ 0.9 × bare.

The ceiling: a matmul probe (the best of a few timed rounds of n×n products in the model's dtype) gives the
machine's FLOP/s. With the base model frozen, a token costs about 4·N FLOPs (forward 2·N; backward 2·N for the
gradients of the activations — there are no weight gradients, apart from LoRA's small ones), where N is the
number of weights used in matrix products per token: every linear layer, the LM head included (for a model with
tied embeddings, the shared matrix counted once, as the head); the embedding lookup is not a matmul. Ceiling
tokens/s = probe FLOP/s / (4·N). A detailed count is printed too: the LM head only over the kept positions,
causal attention (forward 2·d·L(L+1) per layer, backward twice that) and LoRA (6 FLOPs per parameter per token).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import LiftConfig
from ..errors import LiftError
from ..estimate import matmul_weights  # (re-exported: the FLOP count the cost benchmark shares)
from .common import (
    check_random_size,
    haystack_ids,
    load_bench_model,
    matmul_probe,
    read_haystack,
    set_threads,
    synchronize,
)

RATIO_TARGET = 0.9


@dataclass
class ThroughputOptions:
    model: str | None = None
    device: str | None = None
    tokens: int = 2048  # document length: the first tokens of the haystack
    samples: int = 0  # use only the first N samples (0 = all)
    haystack: str | None = None
    config: LiftConfig = field(default_factory=lambda: LiftConfig(objective="ct", epochs=1))
    random_config: str | None = None
    tokenizer: str | None = None
    force: bool = False
    repeats: int = 1
    warmup: int = 2  # samples run by each before timing
    probe_size: int | None = None
    threads: int | None = None
    progress: bool = True


# ---------------------------------------------------------------- FLOPs


def kept_positions(labels: list[int]) -> int:
    """Positions whose logits the trainer computes (as ``liftlm.train.sample_loss``)."""
    first = next((i for i, x in enumerate(labels) if x != -100), len(labels))
    return len(labels) - max(first - 1, 0)


def attention_width(config) -> int | None:
    """heads × head dim (the width of Q, and of the attention output), from a Hugging Face config."""
    heads = getattr(config, "num_attention_heads", None)
    if heads is None:
        return None
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads * head_dim


def detailed_flops(samples, weights: dict, config, lora_params: int) -> float:
    """FLOPs of one forward+backward over ``samples`` with the base model frozen (see the module's doc)."""
    layers = getattr(config, "num_hidden_layers", 0)
    width = attention_width(config) or 0
    total = 0.0
    for s in samples:
        n, keep = len(s.input_ids), kept_positions(s.labels)
        linear = 2 * weights["body"] * n + 2 * weights["head"] * keep
        attention = 2 * width * n * (n + 1) * layers  # causal QKᵀ and AV, forward
        total += 2 * linear + 3 * attention + 6 * lora_params * n
    return total


# ---------------------------------------------------------------- the two loops


def bare_loop(model, samples, cfg: LiftConfig) -> dict:
    """Forward (kept logits), cross-entropy, backward, AdamW step: nothing else. Returns seconds and tokens."""
    import torch
    import torch.nn.functional as F

    from ..loop import _checkpointing, epoch_plan

    synchronize(next(model.parameters()).device)
    start = time.perf_counter()
    device = next(model.parameters()).device
    batch = []
    for s in samples:
        keep = kept_positions(s.labels)
        ids = torch.tensor([s.input_ids], device=device)
        targets = torch.tensor(s.labels[len(s.labels) - keep + 1:], device=device)
        batch.append((ids, targets, keep))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.resolved_learning_rate, betas=(0.9, 0.98), eps=1e-8,
                            weight_decay=cfg.weight_decay)
    order = [i for epoch in epoch_plan(len(samples), 0, cfg) for i in epoch]  # the trainer's order
    if cfg.grad_checkpointing:
        _checkpointing(model, True)
    model.train()
    tokens = 0
    try:
        for j, i in enumerate(order):
            ids, targets, keep = batch[i]
            logits = model(input_ids=ids, logits_to_keep=keep, use_cache=False).logits
            loss = F.cross_entropy(logits[0, :-1].float(), targets, ignore_index=-100)
            loss.backward()
            tokens += ids.shape[1]
            if (j + 1) % cfg.grad_accum == 0 or j + 1 == len(order):
                opt.step()
                opt.zero_grad(set_to_none=True)
        synchronize(device)
    finally:
        model.eval()
        if cfg.grad_checkpointing:
            _checkpointing(model, False)
    return {"seconds": time.perf_counter() - start, "tokens": tokens}


def trainer_run(model, samples, cfg: LiftConfig) -> dict:
    from ..train import train

    device = next(model.parameters()).device
    synchronize(device)
    start = time.perf_counter()
    result = train(model, samples, cfg, progress=False)
    synchronize(device)
    return {"seconds": time.perf_counter() - start, "tokens": result.tokens,
            "own_tokens_per_second": result.tokens_per_second}


def _with_adapter(base, cfg: LiftConfig, fn, samples) -> tuple[dict, object]:
    """Attach a fresh adapter (same seed every time), run ``fn``, remove the adapter; returns (result, base)."""
    from ..train import attach_adapter, detach_adapter

    model = attach_adapter(base, cfg)
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    try:
        result = fn(model, samples, cfg)
    finally:
        base = detach_adapter(model)
    result["lora_params"] = lora
    return result, base


# ---------------------------------------------------------------- the benchmark


def run_throughput(opts: ThroughputOptions) -> dict:
    from ..context import PromptBuilder
    from ..models import pick_device, resolve_window
    from ..train import build_samples

    cfg = opts.config
    if cfg.finetune != "lora":
        raise LiftError("the throughput benchmark compares LoRA training (--finetune lora)")
    if cfg.training_mode != "paper":
        raise LiftError("the throughput benchmark's bare loop is the paper mode's (--training-mode paper); "
                        "compare the other modes with `liftlm bench overlap-vs-paper` or `liftlm bench scaling`")
    if opts.tokens < 1 or opts.samples < 0 or opts.repeats < 1 or opts.warmup < 0:
        raise LiftError("--tokens and --repeats must be at least 1; --samples and --warmup 0 or more")
    if opts.threads is not None and opts.threads < 1:
        raise LiftError(f"--threads must be at least 1 (got {opts.threads})")
    set_threads(opts.threads)
    text = read_haystack(opts.haystack)
    if opts.random_config is not None:
        check_random_size(opts.random_config, pick_device(opts.device).type, opts.force)
    loaded = load_bench_model(opts.model, opts.device, opts.random_config, opts.tokenizer, text)
    doc_ids, _ = haystack_ids(loaded.tokenizer, text, opts.tokens)
    try:
        samples = build_samples(doc_ids, cfg, PromptBuilder(loaded.tokenizer, resolve_window(loaded, cfg.window)))
    except ValueError as e:
        raise LiftError(f"--window/--segment-length: {e}") from None
    if opts.samples:
        samples = samples[: opts.samples]
    base, device = loaded.model, loaded.device
    weights = matmul_weights(base)
    dtype = next(base.parameters()).dtype
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if opts.progress else (lambda msg: None)

    say(f"probing matmul speed ({device.type}, {str(dtype).removeprefix('torch.')})...")
    probe = matmul_probe(device, dtype, opts.probe_size)
    if opts.warmup:
        say(f"warming up on {min(opts.warmup, len(samples))} samples...")
        warm_cfg = replace(cfg, epochs=1)
        for fn in (trainer_run, bare_loop):
            _, base = _with_adapter(base, warm_cfg, fn, samples[: opts.warmup])
    runs = {"trainer": [], "bare": []}
    fns = {"trainer": trainer_run, "bare": bare_loop}
    lora = 0
    for k in range(opts.repeats):
        for kind in (("trainer", "bare") if k % 2 == 0 else ("bare", "trainer")):
            say(f"run {k + 1}/{opts.repeats}: {kind} over {len(samples)} samples...")
            result, base = _with_adapter(base, cfg, fns[kind], samples)
            lora = result["lora_params"]
            result["tokens_per_second"] = result["tokens"] / result["seconds"]
            runs[kind].append(result)
    trainer_tps = statistics.median(r["tokens_per_second"] for r in runs["trainer"])
    bare_tps = statistics.median(r["tokens_per_second"] for r in runs["bare"])
    tokens = runs["trainer"][0]["tokens"]
    flops_simple = 4 * weights["total"]
    flops_detailed = detailed_flops(samples, weights, base.config, lora) * cfg.epochs / tokens
    peak = probe["gflops"] * 1e9
    ratio = trainer_tps / bare_tps
    return {
        "model": loaded.model_id,
        "device": device.type,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": probe["threads"],
        "samples": len(samples),
        "tokens_per_pass": tokens,
        "repeats": opts.repeats,
        "settings": cfg.resolved_dict(),
        "trainer_tokens_per_second": round(trainer_tps, 2),
        "bare_tokens_per_second": round(bare_tps, 2),
        "ratio": round(ratio, 4),
        "ratio_target": RATIO_TARGET,
        "ratio_ok": ratio >= RATIO_TARGET,
        "runs": runs,
        "matmul_probe": probe,
        "matmul_weights": weights,
        "lora_params": lora,
        "flops_per_token": flops_simple,
        "ceiling_tokens_per_second": round(peak / flops_simple, 2),
        "fraction_of_ceiling": round(trainer_tps / (peak / flops_simple), 4),
        "bare_fraction_of_ceiling": round(bare_tps / (peak / flops_simple), 4),
        "detailed_flops_per_token": round(flops_detailed),
        "detailed_ceiling_tokens_per_second": round(peak / flops_detailed, 2),
        "detailed_fraction_of_ceiling": round(trainer_tps / (peak / flops_detailed), 4),
    }


def _count(n: float) -> str:
    """1.3k, 134.5M, 8.0B."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def report_text(r: dict) -> str:
    w = r["matmul_weights"]
    p = r["matmul_probe"]
    tied = ", tied with the embeddings" if w["tied_embeddings"] else ""
    verdict = "ok" if r["ratio_ok"] else "BELOW target"
    lines = [
        (f"liftlm throughput: {r['model']} on {r['device']} ({r['threads']} threads, {r['dtype']}); "
        f"{r['samples']} samples, {r['tokens_per_pass']} tokens per pass; {r['repeats']} repeat(s)"),
        f"  trainer (liftlm.train.train):  {r['trainer_tokens_per_second']:9.1f} tokens/s",
        f"  bare forward+backward loop:    {r['bare_tokens_per_second']:9.1f} tokens/s",
        f"  ratio trainer / bare:          {r['ratio']:9.3f}   (target >= {r['ratio_target']}: {verdict})",
        f"  matmul probe:                  {p['gflops']:9.1f} GFLOP/s ({p['dtype']} {p['size']}x{p['size']})",
        (f"  FLOPs per token, 4*N:          {_count(r['flops_per_token']):>9}  (N = {_count(w['total'])} matmul "
        f"weights: {_count(w['body'])} in the layers + {_count(w['head'])} LM head{tied})"),
        (f"  ceiling:                       {r['ceiling_tokens_per_second']:9.1f} tokens/s -> trainer at "
        f"{100 * r['fraction_of_ceiling']:.1f}%, bare at {100 * r['bare_fraction_of_ceiling']:.1f}%"),
        (f"  detailed FLOPs per token:      {_count(r['detailed_flops_per_token']):>9}  (kept logits only, "
        f"causal attention, LoRA {_count(r['lora_params'])} params) -> ceiling "
        f"{r['detailed_ceiling_tokens_per_second']:.1f} tokens/s, trainer at "
        f"{100 * r['detailed_fraction_of_ceiling']:.1f}%"),
    ]
    return "\n".join(lines)


def write_report(r: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(r, indent=2) + "\n")
