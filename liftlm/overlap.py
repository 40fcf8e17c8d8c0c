"""Overlap-aware training: every document token gets one loss term per epoch, with the context of the paper's
overlapping segments, without recomputing or re-training the overlap.

The paper (§3.1) trains segments of ℓ tokens every s = 3ℓ/8 tokens, so each token is trained ℓ/s ≈ 2.7 times per
epoch and the prompt of a contextualized sample runs forward and backward with it. Here the document is cut into
*stride spans* [0, s), [s, 2s), … that tile it exactly once. The sample of span [a, b) is

    prefix = [CT prompt: chat prefix, truncated document, recite instruction, assistant cue]
             + doc[max(0, a - (ℓ - s)) : a]          (the previous ℓ - s tokens, as a segment would show them)
    target = doc[a : b]                               (loss on every token)

and one training step runs the prefix once without gradients (use_cache=True: its keys/values become a detached
cache, Transformer-XL style), then the target with gradients, attending to that cache at positions that continue
after the prefix. The logits equal those of a full forward pass over prefix + target (tests/test_overlap.py); what
changes is the gradient: it does not flow into the prefix's keys/values (they are constants of the step).

The first span is s tokens like the others, not ℓ. Little context at the start of the document cannot be helped
(nothing precedes doc[0]), and every span that starts at or before ℓ - s already sees the whole document before it
(its prefix reaches back to 0), exactly as a first span of ℓ tokens would; a longer first span would only give a
few tokens between ℓ - s and ℓ more context, at the price of a larger backward pass in one sample. Spans are normally s tokens; the last one may be shorter, and its loss is weighted by its length / s in
``train_overlap`` so every token carries the same weight in the gradient.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import LiftConfig
from .context import PromptBuilder, Sample
from .train import TrainResult, epoch_plan, optimize, sample_loss


@dataclass
class StrideSample:
    """One overlap-aware sample: ``prefix_ids`` run without gradients, ``target_ids`` = doc[start:end] trained."""

    prefix_ids: list[int]
    target_ids: list[int]
    start: int  # document position of target_ids[0]
    end: int  # one past the document position of target_ids[-1]

    @property
    def n_loss_tokens(self) -> int:
        return len(self.target_ids)


@dataclass
class OverlapTrainResult(TrainResult):
    prefix_tokens: int = 0  # tokens run forward only, without gradients (the cached prefixes)


def stride_spans(n_tokens: int, length: int, stride: int) -> list[tuple[int, int]]:
    """Half-open spans [0, s), [s, 2s), … of new tokens; they tile ``[0, n_tokens)`` exactly once. ``length``
    (ℓ) is checked only: the ℓ - s tokens before each span are its context (see ``build_stride_samples``)."""
    if length < 1 or not 0 < stride <= length:
        raise ValueError(f"need 0 < stride <= length, got length={length}, stride={stride}")
    return [(a, min(a + stride, n_tokens)) for a in range(0, max(n_tokens, 0), stride)]


def ct_prompt(prompts: PromptBuilder, doc_ids: list[int], segment_length: int, context_tokens: int | None) -> list[int]:
    """The CT prompt (everything before the segment) of a paper-mode sample with a ``segment_length``-token
    segment: the same truncated context as paper mode, so the two modes differ only in how segments train."""
    first = prompts.ct_sample(doc_ids, doc_ids[:segment_length], context_tokens)  # raises if the window is too small
    return first.input_ids[: len(first.input_ids) - segment_length]


def build_stride_samples(doc_ids: list[int], cfg: LiftConfig, prompts: PromptBuilder) -> list[StrideSample]:
    """One ``StrideSample`` per stride span of the document (contextualized or plain, as ``cfg`` says)."""
    length, stride = cfg.segment_length, cfg.effective_stride
    back = length - stride  # previous tokens each span sees in its prefix, as in a segment ending at the span's end
    n = len(doc_ids)
    if n == 0:
        return []
    if cfg.contextualized:
        prompt = ct_prompt(prompts, doc_ids, min(length, n), cfg.context_tokens)
    else:
        if length > prompts.window:
            raise ValueError(f"segment length {length} exceeds the window {prompts.window}")
        prompt = []
    samples = []
    for a, b in stride_spans(n, length, stride):
        prefix = prompt + doc_ids[max(0, a - back) : a]  # ≤ len(prompt) + ℓ - (b - a) tokens: fits the window
        target = doc_ids[a:b]
        if not prefix:  # plain mode, first span: nothing predicts doc[0] (as a plain segment's first token)
            prefix, target, a = target[:1], target[1:], a + 1
        if target:
            samples.append(StrideSample(prefix, target, a, b))
    return samples


# --- the two-pass forward ---
def _cache_kwarg(model) -> str:
    """The name under which the model takes a KV cache: transformers 5.x renamed ``past_key_values`` to ``cache``
    (5.24 still accepts the old name with a deprecation warning)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def prefix_cache(model, ids: torch.Tensor):
    """Keys/values of ``ids`` ([1, P], positions 0..P-1) as a fresh Cache, computed without gradients: constants
    of the step, no graph kept. ``logits_to_keep=1`` skips the vocabulary projection of the prefix."""
    positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)  # [1, P]
    with torch.no_grad():
        out = model(input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = _output_cache(out)
    if cache is None:
        raise RuntimeError("the model returned no KV cache for the prefix; overlap training needs use_cache=True")
    return cache


def _stride_logits(model, ids: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """Logits predicting ids[0, n_prefix:] ([1, T, V]) from prefix + target ``ids`` ([1, P + T]).

    The last prefix token is run *with* the target (input ids[P-1 : P+T-1], T tokens): its hidden state predicts
    the first target token, so that prediction gets gradients too. The cache holds ids[:P-1]; the last target
    token is never input (it predicts nothing inside the sample)."""
    total = ids.shape[1]
    cached = n_prefix - 1  # tokens in the no-grad cache
    fed = ids[:, cached : total - 1]  # [1, T]
    positions = torch.arange(cached, total - 1, device=ids.device).unsqueeze(0)  # continue after the cache
    if cached == 0:
        return model(input_ids=fed, position_ids=positions, use_cache=False).logits
    if model.training and torch.is_grad_enabled() and _checkpointing_on(model):
        # checkpointed layers drop the KV cache (transformers), so the target would not see the prefix
        raise RuntimeError("overlap training cannot attend to a cached prefix with gradient checkpointing on; "
                           "turn it off (only the s target tokens keep activations anyway)")
    cache = prefix_cache(model, ids[:, :cached])  # fresh per call: the grad pass appends to it, then it is dropped
    out = model(input_ids=fed, position_ids=positions, use_cache=True, **{_cache_kwarg(model): cache})
    if cache.get_seq_length() != total - 1:  # any other way a model could ignore the cache
        raise RuntimeError("the model did not attend to the cached prefix (its KV cache was not extended)")
    return out.logits


def _checkpointing_on(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def _tensor(model, sample: StrideSample) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.tensor([sample.prefix_ids + sample.target_ids], device=device)  # [1, P + T]


def stride_logits(model, sample: StrideSample) -> torch.Tensor:
    """Logits ([1, T, V]) whose position i predicts ``sample.target_ids[i]``."""
    return _stride_logits(model, _tensor(model, sample), len(sample.prefix_ids))


def _stride_loss(model, ids: torch.Tensor, n_prefix: int) -> torch.Tensor:
    logits = _stride_logits(model, ids, n_prefix)  # [1, T, V]
    return F.cross_entropy(logits[0].float(), ids[0, n_prefix:])


def stride_loss(model, sample: StrideSample) -> torch.Tensor:
    """Mean next-token cross-entropy over the target tokens of ``sample`` (gradients through the target only)."""
    return _stride_loss(model, _tensor(model, sample), len(sample.prefix_ids))


# --- training ---
def train_overlap(model, samples: list[StrideSample], cfg: LiftConfig, progress: bool = True, desc: str = "LIFT",
                  qa_samples: list[Sample] | None = None) -> OverlapTrainResult:
    """``liftlm.train.train`` for stride samples: the same optimizer, schedule, accumulation, clipping, seeded
    order (``epoch_plan``) and QA handling (QA samples train as in paper mode). Gradient checkpointing is
    refused with this mode (``LiftConfig``): it would drop the cache, and only the s target tokens per sample keep
    activations anyway."""
    result = OverlapTrainResult()
    qa_samples = qa_samples or []
    plan = epoch_plan(len(samples), len(qa_samples), cfg)
    if not any(plan):
        return result
    device = next(model.parameters()).device
    # tokenised once: ("stride", ids [1, P+T], P, weight) or ("qa", ids [1, L], labels [1, L], weight)
    items = [("stride", _tensor(model, s), len(s.prefix_ids), len(s.target_ids) / cfg.effective_stride)
             for s in samples]
    items += [("qa", torch.tensor([s.input_ids], device=device), torch.tensor([s.labels], device=device),
               cfg.qa_weight) for s in qa_samples]

    def compute(i: int) -> tuple[torch.Tensor, float]:
        kind, ids, extra, weight = items[i]
        if kind == "stride":
            result.tokens += ids.shape[1] - extra  # T tokens forward + backward
            result.prefix_tokens += extra - 1  # P - 1 tokens forward only (the cache)
            return _stride_loss(model, ids, extra), weight
        result.tokens += ids.shape[1]
        return sample_loss(model, ids, extra), weight

    return optimize(model, plan, compute, cfg, result, progress, desc)

