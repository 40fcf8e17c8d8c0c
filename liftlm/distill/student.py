"""The student: the adapted model learns to answer each item as the teacher did, seeing what it will see when
asked — the question alone (view ``lift``) or the question after the head+tail view of the document (view
``lift+icl``).

The loss is the cross-entropy against the teacher's top-k distribution on the answer tokens (``soft_loss``:
forward KL up to a constant), or plain next-token cross-entropy on its greedy answer (``hard_loss``, the
ablation). The head+tail view is the same for every item of a document: ``SoftLoss`` computes its keys/values
once, without gradients, and reuses them for ``PREFIX_REFRESH`` items in a row.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kvcache import as_cache, cache_kwarg, kv_tensors, prefix_cache
from .prompts import DistillItem

PREFIX_REFRESH = 8  # lift+icl items that reuse one computation of the shared head+tail view's keys/values


@dataclass
class SoftSample:
    """A student sample: ``input_ids`` whose last ``len(top_ids)`` tokens are the teacher's answer, trained
    against the teacher's top-k distribution. ``shared_prefix``: the head+tail view that precedes ``input_ids``
    (its keys/values are computed once for many samples), or None."""

    input_ids: list[int]
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]
    shared_prefix: list[int] | None = None
    view: str = "lift"

    @property
    def n_loss_tokens(self) -> int:
        return len(self.top_ids)


def student_samples(items: list[DistillItem], prompts, doc_ids: list[int], views: tuple[str, ...]) -> list[SoftSample]:
    """Each item in each view (``prompts``: a ``PromptBuilder``): ``lift`` (the question alone) and ``lift+icl``
    (after the head+tail view of the document, one view shared by all items: the room left by the longest
    question and answer)."""
    out: list[SoftSample] = []
    if "lift+icl" in views and items:
        longest = max(len(prompts.question_tail(it.prompt)) + len(it.answer_ids) for it in items)
        room = prompts.window - prompts.chat.overhead - longest
        if room < 1:
            raise ValueError(f"window {prompts.window} cannot hold the distillation items with the document")
        shared = prompts.chat.before + prompts.truncate(doc_ids, room)
    for it in items:
        if "lift" in views:
            prompt = prompts.question_prompt(it.prompt, None, len(it.answer_ids))
            out.append(SoftSample(prompt + it.answer_ids, it.top_ids, it.top_logprobs, None, "lift"))
        if "lift+icl" in views:
            suffix = prompts.question_tail(it.prompt) + prompts.chat.after + it.answer_ids
            out.append(SoftSample(suffix, it.top_ids, it.top_logprobs, shared, "lift+icl"))
    return out


def soft_loss(logits: torch.Tensor, top_ids: torch.Tensor, top_logprobs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's ``logits`` ([T, V]) against the teacher's top-k distribution (``top_ids``,
    ``top_logprobs``: [T, k], renormalised over the k): forward KL(teacher ‖ student) up to a constant."""
    target = F.softmax(top_logprobs.float(), -1)
    logq = F.log_softmax(logits.float(), -1).gather(-1, top_ids)
    return -(target * logq).sum(-1).mean()


def hard_loss(logits: torch.Tensor, top_ids: torch.Tensor, top_logprobs: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the teacher's greedy answer (its top-1 token at every position): the same
    items as plain targets, the ablation of ``soft_loss``."""
    return F.cross_entropy(logits.float(), top_ids[:, 0])


class SoftLoss:
    """Computes ``SoftSample`` losses for a trainer, reusing the shared prefix's keys/values (no gradients)
    for ``PREFIX_REFRESH`` samples in a row (they are recomputed with the current adapter after that, and at once
    for a sample with another prefix: another document's).
    ``loss``: ``"kl"`` (``soft_loss``, distillation) or ``"ce"`` (``hard_loss``). ``prefix_tokens``: the tokens
    run forward (only) to compute shared prefixes so far (the trainer adds them to ``TrainResult.prefix_tokens``)."""

    def __init__(self, model, samples: list[SoftSample], loss: str = "kl"):
        self.model = model
        self.loss = {"kl": soft_loss, "ce": hard_loss}[loss]
        device = next(model.parameters()).device
        # per sample: input ids [1, L], the teacher's top-k ids [T, k] and log-probabilities [T, k]
        self.tensors = [(torch.tensor([s.input_ids], device=device), torch.tensor(s.top_ids, device=device),
                         torch.tensor(s.top_logprobs, device=device)) for s in samples]
        self.samples = samples
        self.prefix_kv: list | None = None
        self.prefix_of: list[int] | None = None  # the shared prefix whose keys/values prefix_kv holds
        self.prefix_len = 0
        self.age = PREFIX_REFRESH
        self.prefix_tokens = 0

    def __call__(self, i: int) -> tuple[torch.Tensor, int]:
        """The loss of sample ``i`` and the tokens run forward and backward."""
        s = self.samples[i]
        ids, top_ids, top_lp = self.tensors[i]
        n = len(s.top_ids)
        if s.shared_prefix is None:
            logits = self.model(input_ids=ids, logits_to_keep=n + 1, use_cache=False).logits[0, :-1]
            return self.loss(logits, top_ids, top_lp), ids.shape[1]
        if self.age >= PREFIX_REFRESH or s.shared_prefix != self.prefix_of:  # None at first
            # another document's samples (several documents train together) bring their own prefix
            prefix = torch.tensor([s.shared_prefix], device=ids.device)
            self.prefix_kv, self.prefix_len, self.age = kv_tensors(prefix_cache(self.model, prefix)), prefix.shape[1], 0
            self.prefix_of = s.shared_prefix
            self.prefix_tokens += prefix.shape[1]
        self.age += 1
        # the answer's positions continue after the prefix; a fresh cache per call (the forward pass extends it)
        positions = torch.arange(self.prefix_len, self.prefix_len + ids.shape[1], device=ids.device)[None]
        out = self.model(input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=n + 1,
                         **{cache_kwarg(self.model): as_cache(self.prefix_kv)})
        return self.loss(out.logits[0, :-1], top_ids, top_lp), ids.shape[1]
