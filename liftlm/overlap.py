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
few tokens between ℓ - s and ℓ more context, at the price of a larger backward pass in one sample. Spans are
normally s tokens; the last one may be shorter, and its loss is weighted by its length / s in ``train_overlap`` so
every token carries the same weight in the gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import LiftConfig
from .context import PromptBuilder, Sample
from .kvcache import as_cache, cache_kwarg, kv_tensors, output_cache, prefix_cache
from .loop import EpochHook, StepHook, TrainResult, epoch_plan, optimize, sample_loss


@dataclass
class StrideSample:
    """One overlap-aware sample: ``prefix_ids`` run without gradients, ``target_ids`` = doc[start:end] trained."""

    prefix_ids: list[int]
    target_ids: list[int]
    start: int  # document position of target_ids[0]
    end: int  # one past the document position of target_ids[-1]
    n_prompt: int = 0  # leading tokens of prefix_ids that are the CT prompt (the rest are document tokens)

    @property
    def n_loss_tokens(self) -> int:
        return len(self.target_ids)


def stride_spans(n_tokens: int, length: int, stride: int) -> list[tuple[int, int]]:
    """Half-open spans [0, s), [s, 2s), … of new tokens; they tile ``[0, n_tokens)`` exactly once. ``length``
    (ℓ) is checked only: the ℓ - s tokens before each span are its context (see ``build_stride_samples``)."""
    if length < 1 or not 0 < stride <= length:
        raise ValueError(f"need 0 < stride <= length, got length={length}, stride={stride}")
    return [(a, min(a + stride, n_tokens)) for a in range(0, max(n_tokens, 0), stride)]


def ct_prompt(prompts: PromptBuilder, doc_ids: list[int], segment_length: int, context_tokens: int | None,
              fmt: str = "raw") -> list[int]:
    """The CT prompt (everything before the segment) of a paper-mode sample with a ``segment_length``-token
    segment: the same truncated context as paper mode, so the two modes differ only in how segments train."""
    first = prompts.ct_sample(doc_ids, doc_ids[:segment_length], context_tokens, fmt)  # raises if the window is too small
    return first.input_ids[: len(first.input_ids) - segment_length]


def build_stride_samples(doc_ids: list[int], cfg: LiftConfig, prompts: PromptBuilder) -> list[StrideSample]:
    """One ``StrideSample`` per stride span of the document (contextualized or plain, as ``cfg`` says)."""
    length, stride = cfg.segment_length, cfg.effective_stride
    back = length - stride  # previous tokens each span sees in its prefix, as in a segment ending at the span's end
    n = len(doc_ids)
    if n == 0:
        return []
    if cfg.contextualized:
        prompt = ct_prompt(prompts, doc_ids, min(length, n), cfg.context_tokens, cfg.ct_format)
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
            samples.append(StrideSample(prefix, target, a, b, len(prompt)))
    return samples


# --- the two-pass forward ---
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
    out = model(input_ids=fed, position_ids=positions, use_cache=True, **{cache_kwarg(model): cache})
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
def _qa_tensors(qa_samples: list[Sample], device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input ids [1, L], labels [1, L]) of each QA sample, made once (QA samples train as in paper mode)."""
    return [(torch.tensor([s.input_ids], device=device), torch.tensor([s.labels], device=device)) for s in qa_samples]


def train_overlap(model, samples: list[StrideSample], cfg: LiftConfig, progress: bool = True, desc: str = "LIFT",
                  qa_samples: list[Sample] | None = None, on_epoch: EpochHook | None = None,
                  on_step: StepHook | None = None, checkpoints=None) -> TrainResult:
    """``liftlm.train.train`` for stride samples: the same optimizer, schedule, accumulation, clipping, seeded
    order (``epoch_plan``) and QA handling (QA samples train as in paper mode). Gradient checkpointing is
    refused with this mode (``LiftConfig``): it would drop the cache, and only the s target tokens per sample keep
    activations anyway."""
    result = TrainResult()
    qa_samples = qa_samples or []
    plan = epoch_plan(len(samples), len(qa_samples), cfg)
    if not any(plan):
        return result
    device = next(model.parameters()).device
    # tokenised once: ("stride", ids [1, P+T], P, weight) or ("qa", ids [1, L], labels [1, L], weight)
    items = [("stride", _tensor(model, s), len(s.prefix_ids), len(s.target_ids) / cfg.effective_stride)
             for s in samples]
    items += [("qa", ids, labels, cfg.qa_weight) for ids, labels in _qa_tensors(qa_samples, device)]

    def compute(i: int) -> tuple[torch.Tensor, float]:
        kind, ids, extra, weight = items[i]
        if kind == "stride":
            result.tokens += ids.shape[1] - extra  # T tokens forward + backward
            result.prefix_tokens += extra - 1  # P - 1 tokens forward only (the cache)
            return _stride_loss(model, ids, extra), weight
        result.tokens += ids.shape[1]
        return sample_loss(model, ids, extra), weight

    return optimize(model, plan, compute, cfg, result, progress, desc, on_epoch, on_step, checkpoints)


# --- recurrent mode: the overlap is not recomputed at all (Transformer-XL memory) ---
# ``train_overlap`` still runs the ℓ - s previous tokens and the CT prompt forward (without gradients) in every
# step: prompt + ℓ - s tokens forward for every s tokens trained. ``train_recurrent`` keeps instead the keys/values
# that the previous steps computed for the document tokens — a memory of the last ℓ - s - 1 of them, detached,
# as Transformer-XL does — and the CT prompt's keys/values, recomputed every ``PROMPT_REFRESH`` stride samples.
# A step then runs only its s new tokens, forward and backward. The price: the memory was computed with the
# adapter of one or two steps before (the prompt's with one up to PROMPT_REFRESH steps before), and a memory
# token's keys carry what it saw when it was new (the ℓ - s tokens before *it*), so the context reaches further
# back than a paper segment's. Stride samples run in document order within an epoch (QA samples keep their
# shuffled slots), since each step needs the memory of the span just before it.
#
# Rotary positions: a span's tokens take positions right after prompt + memory, as in ``_stride_logits``, so the
# memory must slide back by the number of tokens it drops. Keys are stored rotated (RoPE), and a rotation by
# -d moves a key from position p to p - d exactly (R(p - d) = R(-d) R(p)), so the memory is shifted in place of
# being recomputed. ``check_recurrent_support`` verifies that on the model itself before training.

PROMPT_REFRESH = 8  # stride samples between two recomputations of the CT prompt's keys/values


def sequential_plan(plan: list[list[int]], n_segments: int) -> list[list[int]]:
    """``plan`` (from ``epoch_plan``) with each epoch's stride samples (indices < n_segments) in document order;
    the QA samples keep their shuffled positions among them."""
    out = []
    for epoch in plan:
        ordered = iter(sorted(i for i in epoch if i < n_segments))
        out.append([next(ordered) if i < n_segments else i for i in epoch])
    return out


def _rotary(model):
    for m in model.modules():
        if type(m).__name__.endswith("RotaryEmbedding") and hasattr(m, "inv_freq"):
            return m
    return None


def shift_keys(keys: torch.Tensor, rotary, d: int) -> torch.Tensor:
    """Keys ([..., L, head_dim]) rotated by RoPE at positions p, returned as if computed at positions p - d."""
    from transformers.models.llama.modeling_llama import rotate_half

    freqs = -d * rotary.inv_freq.to(device=keys.device, dtype=torch.float)  # [head_dim / 2]
    angle = torch.cat((freqs, freqs))
    return keys * angle.cos().to(keys.dtype) + rotate_half(keys) * angle.sin().to(keys.dtype)


def check_recurrent_support(model):
    """The model's rotary module, after checking that its layer-0 keys computed at positions p + 5 and shifted
    by ``shift_keys`` equal those computed at p (a model whose keys do not move that way is refused)."""
    from .errors import LiftError

    rotary = _rotary(model)
    rope_type = str(getattr(rotary, "rope_type", "default"))
    if rotary is None or "dynamic" in rope_type or "longrope" in rope_type:
        raise LiftError("--training-mode recurrent needs a model with plain rotary position embeddings (RoPE); "
                        "use --training-mode overlap for this model")
    device = next(model.parameters()).device
    ids = torch.tensor([[1, 2, 3, 4]], device=device)
    with torch.no_grad():
        near = kv_tensors(prefix_cache(model, ids))[0][0]
        out = model(input_ids=ids, position_ids=torch.arange(5, 9, device=device)[None], use_cache=True,
                    logits_to_keep=1)
        far = kv_tensors(output_cache(out))[0][0]
    if not torch.allclose(shift_keys(far, rotary, 5), near, atol=1e-4, rtol=1e-3):
        raise LiftError("--training-mode recurrent: this model's keys do not shift like RoPE keys; "
                        "use --training-mode overlap for this model")
    return rotary


class Memory:
    """The detached keys/values of the document tokens [end - length, end), at positions after the prompt."""

    def __init__(self, keep: int, rotary):
        self.keep, self.rotary = keep, rotary
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.end = 0

    @property
    def length(self) -> int:
        return self.kv[0][0].shape[-2] if self.kv else 0

    def reset(self) -> None:
        self.kv, self.end = [], 0

    def extend(self, new: list[tuple[torch.Tensor, torch.Tensor]], end: int) -> None:
        """Append the keys/values of the document tokens just run (ending at ``end``), keep the last ``keep``."""
        kv = [(torch.cat((k0, k.detach()), -2), torch.cat((v0, v.detach()), -2)) for (k0, v0), (k, v)
              in zip(self.kv, new)] if self.kv else [(k.detach(), v.detach()) for k, v in new]
        over = kv[0][0].shape[-2] - self.keep
        if over > 0:  # drop the oldest tokens and slide the rest back to the positions they leave free
            kv = [(shift_keys(k[..., over:, :], self.rotary, over), v[..., over:, :]) for k, v in kv]
        self.kv, self.end = kv, end


def _recurrent_inputs(sample: StrideSample, device) -> torch.Tensor:
    """The span's inputs ([1, T]): the token before it (doc[start - 1] or the prompt's last), then its own but
    the last — position i predicts ``sample.target_ids[i]``."""
    return torch.tensor([sample.prefix_ids[-1:] + sample.target_ids[:-1]], device=device)


def recurrent_logits(model, sample: StrideSample, prompt_kv, memory: Memory,
                     inputs: torch.Tensor | None = None) -> torch.Tensor:
    """Logits ([1, T, V]) whose position i predicts ``sample.target_ids[i]``, attending to the prompt's
    keys/values ``prompt_kv`` and to ``memory``, which must end right before the sample's first input
    (doc[start - 1]; a document's first span resets it). Extends the memory with the sample's tokens."""
    first_is_doc = sample.start > 0  # the first input is doc[start - 1], or the prompt's last token
    if memory.end != max(sample.start - 1, 0):
        if sample.start > 1:
            raise RuntimeError("recurrent training needs the stride samples in document order "
                               f"(memory ends at {memory.end}, the sample needs {sample.start - 1})")
        memory.reset()  # the document's first span: nothing before it
    n_prompt = sample.n_prompt if first_is_doc else sample.n_prompt - 1
    device = next(model.parameters()).device
    if inputs is None:
        inputs = _recurrent_inputs(sample, device)  # [1, T]
    cached = [(k[..., :n_prompt, :], v[..., :n_prompt, :]) for k, v in prompt_kv] if n_prompt else []
    if memory.length:
        cached = [(torch.cat((k, mk), -2), torch.cat((v, mv), -2)) for (k, v), (mk, mv) in zip(cached, memory.kv)] \
            if cached else list(memory.kv)
    n_cached = cached[0][0].shape[-2] if cached else 0
    positions = torch.arange(n_cached, n_cached + inputs.shape[1], device=device)[None]
    kwargs = {cache_kwarg(model): as_cache(cached)} if cached else {}
    out = model(input_ids=inputs, position_ids=positions, use_cache=True, **kwargs)
    cache = output_cache(out)
    if cache is None or cache.get_seq_length() != n_cached + inputs.shape[1]:
        raise RuntimeError("the model did not attend to the cached prompt and memory (its KV cache was not extended)")
    skip = n_cached + (0 if first_is_doc else 1)  # keep only document tokens in the memory
    memory.extend([(k[..., skip:, :], v[..., skip:, :]) for k, v in kv_tensors(cache)], sample.end - 1)
    return out.logits


def train_recurrent(model, samples: list[StrideSample], cfg: LiftConfig, progress: bool = True, desc: str = "LIFT",
                    qa_samples: list[Sample] | None = None, on_epoch: EpochHook | None = None,
                    on_step: StepHook | None = None, checkpoints=None) -> TrainResult:
    """``train_overlap`` with a Transformer-XL memory in place of the recomputed prefix (see above)."""
    result = TrainResult()
    qa_samples = qa_samples or []
    n_seg = len(samples)
    plan = sequential_plan(epoch_plan(n_seg, len(qa_samples), cfg), n_seg)
    if not any(plan):
        return result
    if _checkpointing_on(model):  # (LiftConfig refuses --grad-checkpointing with this mode)
        raise RuntimeError("recurrent training cannot use gradient checkpointing (it drops the KV cache)")
    rotary = check_recurrent_support(model)
    device = next(model.parameters()).device
    memory = Memory(cfg.segment_length - cfg.effective_stride - 1, rotary)
    state = {"prompt_kv": [], "age": PROMPT_REFRESH}
    # tokenised once: nothing but model compute inside the loop
    spans = [(_recurrent_inputs(s, device), torch.tensor(s.target_ids, device=device)) for s in samples]
    qa = _qa_tensors(qa_samples, device)

    def compute(i: int) -> tuple[torch.Tensor, float]:
        if i >= n_seg:
            ids, labels = qa[i - n_seg]
            result.tokens += ids.shape[1]
            return sample_loss(model, ids, labels), cfg.qa_weight
        s = samples[i]
        if s.n_prompt and (state["age"] >= PROMPT_REFRESH or s.start == 0):  # a document's first span, or stale
            prompt = torch.tensor([s.prefix_ids[: s.n_prompt]], device=device)  # (SFT: one prompt per document)
            state["prompt_kv"], state["age"] = kv_tensors(prefix_cache(model, prompt)), 0
            result.prefix_tokens += s.n_prompt
        state["age"] += 1
        result.tokens += len(s.target_ids)
        inputs, targets = spans[i]
        logits = recurrent_logits(model, s, state["prompt_kv"], memory, inputs)  # [1, T, V]
        loss = F.cross_entropy(logits[0].float(), targets)
        return loss, len(s.target_ids) / cfg.effective_stride

    # The memory and the prompt's keys/values are rebuilt at each epoch's first span (start 0), so an epoch end
    # is an exact resume point; a step that straddles one is not (exact_epochs).
    return optimize(model, plan, compute, cfg, result, progress, desc, on_epoch, on_step, checkpoints,
                    exact_epochs=True)
