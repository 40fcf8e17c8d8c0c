"""The student: the adapted model learns to answer each item as the teacher did, seeing what it will see when
asked — the question alone (view ``lift``), the question after the head+tail view of the document (view
``lift+icl``), or the question after the very chunk the teacher read (view ``lift+chunk``, as ``lift+rag`` puts a
retrieved passage in the window: trained in the other views alone, the student learns to answer from its weights
whatever its context holds, and may then override a passage that holds the answer).

The loss is the cross-entropy against the teacher's top-k distribution on the answer tokens (``soft_loss``:
forward KL up to a constant), or plain next-token cross-entropy on its greedy answer (``hard_loss``, the
ablation). The head+tail view is the same for every item of a document: ``SoftLoss`` computes its keys/values
once, without gradients, and reuses them for many items in a row (``refresh_after``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kvcache import as_cache, cache_kwarg, kv_tensors, prefix_cache
from .prompts import DistillItem

PREFIX_REFRESH = 8  # samples that reuse one computation of a shared prefix's keys/values, at least
PREFIX_TOKENS_PER_REUSE = 64  # ... and one more per this many tokens of the prefix (see ``refresh_after``)
PREFIXES_HELD = 4  # shared prefixes whose keys/values are kept at once (a document has two: one per view)


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
    """Each item in each view (``prompts``: a ``PromptBuilder``): ``lift`` (the question alone), ``lift+icl``
    (after the head+tail view of the document, one view shared by all items: the room left by the longest
    question and answer) and ``lift+chunk`` (after the item's chunk, shared by the items about that chunk)."""
    out: list[SoftSample] = []
    if "lift+icl" in views and items:
        longest = max(len(prompts.question_tail(it.prompt)) + len(it.answer_ids) for it in items)
        room = prompts.window - prompts.chat.overhead - longest
        if room < 1:
            raise ValueError(f"window {prompts.window} cannot hold the distillation items with the document")
        shared = prompts.chat.before + prompts.truncate(doc_ids, room)
    start = prompts.chat.before  # the chat turn's start (system turn included): every lift sample's prefix
    chunks: dict[tuple[int, int], list[int]] = {}  # lift+chunk: each chunk's prefix, [chat start] chunk
    for it in items:
        if "lift" in views:
            prompt = prompts.question_prompt(it.prompt, None, len(it.answer_ids))
            if start and prompt[:len(start)] == start:
                out.append(SoftSample(prompt[len(start):] + it.answer_ids, it.top_ids, it.top_logprobs, start,
                                      "lift"))
            else:  # a model without a chat template: nothing to share
                out.append(SoftSample(prompt + it.answer_ids, it.top_ids, it.top_logprobs, None, "lift"))
        suffix = prompts.question_tail(it.prompt) + prompts.chat.after + it.answer_ids  # after a document
        if "lift+icl" in views:
            out.append(SoftSample(suffix, it.top_ids, it.top_logprobs, shared, "lift+icl"))
        if "lift+chunk" in views:
            a, b = it.chunk  # one prefix per chunk: its items' samples share its keys/values
            prefix = chunks.setdefault((a, b), start + list(doc_ids[a:b]))
            if len(prefix) + len(suffix) > prompts.window:
                raise ValueError(f"window {prompts.window} cannot hold a distillation item with its chunk "
                                 f"({len(prefix) + len(suffix)} tokens): drop lift+chunk from --distill-views")
            out.append(SoftSample(suffix, it.top_ids, it.top_logprobs, prefix, "lift+chunk"))
    return out


def refresh_after(prefix_tokens: int, setting: int | None = None) -> int:
    """Samples that reuse one computation of a shared prefix's keys/values: ``setting`` (``--prefix-refresh``), or
    one per ``PREFIX_TOKENS_PER_REUSE`` tokens of the prefix and at least ``PREFIX_REFRESH``. Running the prefix
    forward costs about a third of training as many tokens, and a sample trains ~60-90: so a long view (a wide
    window) costs about a sixth of the samples' training instead of growing with the window, and a view of at
    most 575 tokens (windows up to 576) is computed every 8 samples, as before the rule."""
    return setting or max(PREFIX_REFRESH, prefix_tokens // PREFIX_TOKENS_PER_REUSE)


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
    """Computes the loss of a mini-batch of ``SoftSample``s that share one prefix, for a trainer.

    The prefix's keys/values are computed without gradients (``prefix_cache``) and reused for
    ``refresh_after(len(prefix), refresh)`` samples in a row, then computed again with the current adapter; each prefix a document's
    samples use (the chat turn's start for ``lift``, the head+tail view for ``lift+icl``; other documents' in
    pre-LIFT SFT) keeps its own. A batch's rows are left-padded to the longest (the pads masked out, positions
    counted without them) so that every row's answer ends at the last position and one ``logits_to_keep`` covers
    them all; the prefix's keys/values are broadcast over the rows. The batch's loss is the mean of its samples'
    losses, as ``grad_accum`` would weigh them one at a time.
    ``loss``: ``"kl"`` (``soft_loss``, distillation) or ``"ce"`` (``hard_loss``); ``refresh``: ``--prefix-refresh``
    (None: by the prefix's length). ``prefix_tokens``: the tokens
    run forward (only) to compute shared prefixes so far (the trainer adds them to ``TrainResult.prefix_tokens``);
    ``pad_tokens``: the pads run forward and backward beside the samples' own tokens."""

    def __init__(self, model, samples: list[SoftSample], loss: str = "kl", refresh: int | None = None):
        self.model = model
        self.refresh = refresh
        self.loss = {"kl": soft_loss, "ce": hard_loss}[loss]
        self.device = next(model.parameters()).device
        # per sample: the teacher's top-k ids [T, k] and log-probabilities [T, k]
        self.targets = [(torch.tensor(s.top_ids, device=self.device), torch.tensor(s.top_logprobs, device=self.device))
                        for s in samples]
        self.samples = samples
        self.prefix_keys = [None if s.shared_prefix is None else tuple(s.shared_prefix) for s in samples]
        self.prefixes: dict[tuple[int, ...], list] = {}  # prefix -> [its keys/values, samples since computed]
        self.prefix_tokens = 0
        self.pad_tokens = 0

    def forget(self) -> None:
        """Drop the prefixes' keys/values: the next samples compute them afresh (after a checkpoint, so that a run
        resumed from it trains exactly as one that was not interrupted)."""
        self.prefixes.clear()

    def _prefix(self, prefix: tuple[int, ...], n: int):
        """The keys/values of ``prefix``, computed again when ``refresh_after`` samples have used them."""
        held = self.prefixes.get(prefix)
        if held is None or held[1] >= refresh_after(len(prefix), self.refresh):
            ids = torch.tensor([prefix], device=self.device)
            self.prefixes.pop(prefix, None)
            while len(self.prefixes) >= PREFIXES_HELD:  # the least recently computed goes (pre-LIFT SFT's documents)
                self.prefixes.pop(next(iter(self.prefixes)))
            held = self.prefixes[prefix] = [kv_tensors(prefix_cache(self.model, ids)), 0]
            self.prefix_tokens += len(prefix)
        held[1] += n
        return held[0]

    def __call__(self, batch: list[int]) -> tuple[torch.Tensor, int]:
        """The mean loss of samples ``batch`` (one shared prefix, or none for a batch of one) and the tokens run
        forward and backward (the samples' own, pads not counted)."""
        samples = [self.samples[i] for i in batch]
        rows = [s.input_ids for s in samples]
        width, b = max(len(r) for r in rows), len(rows)
        keep = max(s.n_loss_tokens for s in samples) + 1  # the positions whose logits predict an answer token
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rows], device=self.device)  # [B, W]
        self.pad_tokens += b * width - sum(len(r) for r in rows)
        if samples[0].shared_prefix is None:
            if b > 1:
                raise ValueError("samples without a shared prefix train one at a time")
            logits = self.model(input_ids=ids, logits_to_keep=keep, use_cache=False).logits
        else:
            prefix = self.prefix_keys[batch[0]]
            kv = self._prefix(prefix, b)
            p = len(prefix)
            if b == 1:  # no pads: nothing to mask
                mask, positions = None, torch.arange(p, p + width, device=self.device)[None]
            else:
                real = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
                mask = torch.cat([torch.ones(b, p, dtype=real.dtype, device=self.device), real], 1)
                positions = p + (real.cumsum(1) - 1).clamp(min=0)  # rows continue after the prefix, pads not counted
            cache = as_cache([(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in kv])
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                use_cache=True, logits_to_keep=keep, **{cache_kwarg(self.model): cache}).logits
        losses = []
        for r, (i, s) in enumerate(zip(batch, samples)):
            n = s.n_loss_tokens
            losses.append(self.loss(logits[r, keep - 1 - n : keep - 1], *self.targets[i]))
        return torch.stack(losses).mean(), sum(len(r) for r in rows)
