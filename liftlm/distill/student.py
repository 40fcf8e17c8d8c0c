"""The student: the adapted model learns to answer each item as the teacher did, seeing what it will see when
asked — the question alone (view ``lift``), the question after the head+tail view of the document (view
``lift+icl``), or the question after the very chunk the teacher read (view ``lift+chunk``, as ``lift+rag`` puts a
retrieved passage in the window: trained in the other views alone, the student learns to answer from its weights
whatever its context holds, and may then override a passage that holds the answer).

The loss is the cross-entropy against the teacher's top-k distribution on the answer tokens (``soft_loss``:
forward KL up to a constant), or plain next-token cross-entropy on its greedy answer (``hard_loss``, the
ablation). The head+tail view is the same for every item of a document: ``SoftLoss`` computes its keys/values
once, without gradients, and reuses them for many items in a row (``refresh_after``). With ``--no-question-grad``
each item's question is run the same way, forward only, and only the positions that predict its answer train
(measured: fewer facts recalled, so off by default).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import LiftError
from ..kvcache import as_cache, cache_kwarg, kv_tensors, prefix_cache
from .prompts import DistillItem

PREFIX_REFRESH = 8  # samples that reuse one computation of a shared prefix's keys/values, at least
PREFIX_TOKENS_PER_REUSE = 64  # ... and one more per this many tokens of the prefix (see ``refresh_after``)
PREFIXES_HELD = 4  # shared prefixes whose keys/values are kept at once (a document has two: one per view)
# Model families whose logits are the output embedding applied to the decoder's last hidden state, nothing after
# (no soft-capping, no scaling): their batches are packed (``packed_rows``) and only the answer positions projected.
PLAIN_HEAD_TYPES = ("llama", "mistral", "qwen2", "qwen3", "smollm3")
ATTENTION_COST = 2.0  # a FLOP of attention against one of the linear layers: the CPU's attention kernels ran at 50-66
#                       GFLOP/s where the products ran at 146 (docs/efficiency.md, the embedded model's profile)


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
    pre-LIFT SFT) keeps its own. A batch's samples are packed end to end into a few rows (``packed_rows``), each
    attending to the prefix and to itself only, and only their answer positions are projected onto the vocabulary
    (``_packed``); for a model outside ``PLAIN_HEAD_TYPES``, one sample a row, left-padded to the longest, so that
    every row's answer ends at the last position and one ``logits_to_keep`` covers them all (``_padded``). The
    prefix's keys/values are broadcast over the rows. The batch's loss is the mean of its samples' losses, as
    ``grad_accum`` would weigh them one at a time.
    ``loss``: ``"kl"`` (``soft_loss``, distillation) or ``"ce"`` (``hard_loss``); ``refresh``: ``--prefix-refresh``
    (None: by the prefix's length); ``pack``: ``--pack-batches``; ``question_grad``: with False
    (``--no-question-grad``), only the positions that predict the answer run backward (``_answers_only``).
    ``prefix_tokens``: the tokens run forward only so far, shared prefixes (and, without ``question_grad``, the
    questions) (the trainer adds them to ``TrainResult.prefix_tokens``);
    ``pad_tokens``: the pads run forward and backward beside the samples' own tokens."""

    def __init__(self, model, samples: list[SoftSample], loss: str = "kl", refresh: int | None = None,
                 pack: bool = True, question_grad: bool = True):
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
        self.head = logit_head(model) if pack else None  # (decoder, output embedding): packed; None: padded
        self.key_cost = key_cost(model, self.head[0]) if self.head else 0.0
        self.question_grad = question_grad
        if not question_grad and self.head is None:
            raise LiftError("--no-question-grad packs each batch's rows (--pack-batches), which needs a model whose "
                            "logits are its output embedding of the last hidden state (Llama, Mistral, Qwen 2/3, "
                            f"SmolLM3; this one is {getattr(getattr(model, 'config', None), 'model_type', None)!r})")

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
        lengths = [len(s.input_ids) for s in samples]
        if samples[0].shared_prefix is None and len(batch) > 1:
            raise ValueError("samples without a shared prefix train one at a time")
        if not self.question_grad:
            answers = self._answers_only(batch, samples)
            lengths = [s.n_loss_tokens for s in samples]  # the rest ran forward only
        elif len(batch) > 1 and self.head is not None:
            answers = self._packed(batch, samples)
        else:
            answers = self._padded(batch, samples)
        losses = [self.loss(logits, *self.targets[i]) for i, logits in zip(batch, answers)]
        return torch.stack(losses).mean(), sum(lengths)

    def _padded(self, batch: list[int], samples: list[SoftSample]) -> list[torch.Tensor]:
        """Each sample's logits at its answer positions ([n, V]), its row left-padded to the longest."""
        rows = [s.input_ids for s in samples]
        width, b = max(len(r) for r in rows), len(rows)
        keep = max(s.n_loss_tokens for s in samples) + 1  # the positions whose logits predict an answer token
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rows], device=self.device)  # [B, W]
        self.pad_tokens += b * width - sum(len(r) for r in rows)
        if samples[0].shared_prefix is None:
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
            cache = broadcast(kv, b)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                use_cache=True, logits_to_keep=keep, **{cache_kwarg(self.model): cache}).logits
        return [logits[r, keep - 1 - s.n_loss_tokens : keep - 1] for r, s in enumerate(samples)]

    def _packed(self, batch: list[int], samples: list[SoftSample]) -> list[torch.Tensor]:
        """Each sample's logits at its answer positions ([n, V]), the samples packed end to end into the rows
        ``packed_rows`` chooses: each attends to the shared prefix and to its own tokens only (a block-diagonal
        causal mask), its positions continue the prefix's, and only the answer positions are projected onto the
        vocabulary. The same logits as ``_padded`` gives, up to rounding."""
        prefix = self.prefix_keys[batch[0]]
        kv = self._prefix(prefix, len(batch))
        p, lengths = len(prefix), [len(s.input_ids) for s in samples]
        rows = packed_rows(lengths, p, self.key_cost)
        ids, positions, allowed, at = packed_layout(rows, [s.input_ids for s in samples], [p] * len(samples), p,
                                                 [[(0, p)]] * len(samples))
        self.pad_tokens += ids.numel() - sum(lengths)
        hidden = self._run(ids, positions, allowed, broadcast(kv, len(rows)))
        # the positions whose hidden states predict each sample's answer tokens, all projected at once
        return self._project(hidden, [(at[j][0], at[j][1] + lengths[j] - 1 - s.n_loss_tokens, s.n_loss_tokens)
                                      for j, s in enumerate(samples)])

    def _answers_only(self, batch: list[int], samples: list[SoftSample]) -> list[torch.Tensor]:
        """As ``_packed``, but only the positions that predict the answer run backward (``--no-question-grad``):
        each sample's question up to its last token runs forward first, without gradients, as the prefix does
        (its keys/values are constants of the step); then the positions from the question's last token to the
        answer's last but one run forward and backward, each attending to the prefix, to its own question's
        keys/values and to its own earlier positions. The same logits as ``_packed``; the gradient leaves out
        what flows through the question's keys/values. The answer's last token, which predicts nothing, is not
        run at all."""
        prefix = self.prefix_keys[batch[0]]
        p, n = (len(prefix) if prefix else 0), len(samples)
        cut = [len(s.input_ids) - 1 - s.n_loss_tokens for s in samples]
        asked = [s.input_ids[:c] for s, c in zip(samples, cut)]  # forward only
        taught = [s.input_ids[c:-1] for s, c in zip(samples, cut)]  # forward and backward: they predict the answer
        rows = packed_rows([len(a) + len(t) for a, t in zip(asked, taught)], p, self.key_cost)
        cache = broadcast(self._prefix(prefix, n), len(rows)) if prefix else as_cache([])
        q_ids, q_positions, q_allowed, q_at = packed_layout(rows, asked, [p] * n, p, [[(0, p)]] * n)
        if q_ids.shape[1]:
            with torch.no_grad():
                self._run(q_ids, q_positions, q_allowed, cache)  # the cache now holds the prefix, then the questions
            self.prefix_tokens += q_ids.numel()  # run forward only (their pads included)
        sees = [[(0, p), (p + q_at[j][1], p + q_at[j][1] + len(asked[j]))] for j in range(n)]
        ids, positions, allowed, at = packed_layout(rows, taught, [p + len(a) for a in asked], p + q_ids.shape[1], sees)
        self.pad_tokens += ids.numel() - sum(len(t) for t in taught)
        hidden = self._run(ids, positions, allowed, cache)
        return self._project(hidden, [(at[j][0], at[j][1], len(taught[j])) for j in range(n)])

    def _run(self, ids, positions, allowed, cache) -> torch.Tensor:
        """The decoder's last hidden states ([rows, W, d]) for a packed call (``packed_layout``) that continues
        ``cache`` (extended in place with the call's keys/values)."""
        body = self.head[0]
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
        return body(input_ids=ids.to(self.device), attention_mask=mask[:, None].to(self.device),
                    position_ids=positions.to(self.device), use_cache=True,
                    **{cache_kwarg(body): cache}).last_hidden_state

    def _project(self, hidden: torch.Tensor, where: list[tuple[int, int, int]]) -> list[torch.Tensor]:
        """The logits at each sample's (row, first column, count) positions, projected onto the vocabulary at
        once and split by sample."""
        row_index = torch.cat([torch.full((n,), r) for r, _, n in where]).to(self.device)
        column_index = torch.cat([torch.arange(c, c + n) for _, c, n in where]).to(self.device)
        logits = self.head[1](hidden[row_index, column_index])  # [sum of n, V]
        return list(logits.split([n for _, _, n in where]))


def packed_layout(rows: list[list[int]], tokens: list[list[int]], first_position: list[int], before: int,
                  sees: list[list[tuple[int, int]]]):
    """One packed call's tensors: sample j's ``tokens[j]`` laid end to end in its row of ``rows``, at positions
    from ``first_position[j]`` on, attending to the key columns ``sees[j]`` (ranges among the ``before`` keys
    cached already) and causally to itself. Returns ``ids`` and ``positions`` ([R, W]), the keys each position
    may attend to (``allowed``, [R, W, before + W]) and each sample's (row, first column). A pad attends to the
    first ``sees`` range of its row's first sample (the shared prefix) and to itself, so that no query is left
    without a key; no sample attends to a pad."""
    lengths = [len(t) for t in tokens]
    width = max(sum(lengths[j] for j in row) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    positions = torch.full((len(rows), width), before, dtype=torch.long)  # pads: anywhere, unread
    allowed = torch.zeros(len(rows), width, before + width, dtype=torch.bool)
    allowed[:, :, before:].diagonal(dim1=1, dim2=2).fill_(True)  # every token sees itself (pads too)
    at: list[tuple[int, int]] = [(0, 0)] * len(tokens)
    for r, row in enumerate(rows):
        a, b = sees[row[0]][0]
        allowed[r, :, a:b] = True  # pads see the shared prefix
        start = 0
        for j in row:
            n = lengths[j]
            ids[r, start:start + n] = torch.tensor(tokens[j], dtype=torch.long)
            positions[r, start:start + n] = torch.arange(first_position[j], first_position[j] + n)
            allowed[r, start:start + n] = False
            for a, b in sees[j]:
                allowed[r, start:start + n, a:b] = True
            allowed[r, start:start + n, before + start:before + start + n] = torch.ones(n, n, dtype=torch.bool).tril()
            at[j] = (r, start)
            start += n
    return ids, positions, allowed, at


def broadcast(kv, rows: int):
    """A fresh cache holding a prefix's keys/values (one row) for ``rows`` rows, as views, not copies."""
    return as_cache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in kv])


def logit_head(model):
    """The decoder and the output embedding of ``model`` (PEFT-wrapped or not) when its logits are nothing but
    that embedding applied to the decoder's last hidden state (``PLAIN_HEAD_TYPES``), else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(getattr(base, "config", None), "model_type", None) not in PLAIN_HEAD_TYPES:
        return None
    try:
        body, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if body is None or head is None or not hasattr(body, "layers"):
        return None
    return body, head


def key_cost(model, body) -> float:
    """What one query-key pair of attention costs, against a token through the linear layers of one decoder layer:
    ``ATTENTION_COST`` × 4·(heads × head dim) FLOPs (scores and weighted values, forward) over 2 × the layer's
    parameters. SmolLM2-135M: ~6.5e-4; Qwen2.5 1.5B: ~1.3e-4."""
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    heads = getattr(config, "num_attention_heads", 1)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    params = sum(p.numel() for p in body.layers[0].parameters())
    return ATTENTION_COST * 4 * heads * head_dim / (2 * params)


def packed_rows(lengths: list[int], prefix: int, cost_of_a_key: float) -> list[list[int]]:
    """Samples of ``lengths`` (after a shared prefix of ``prefix`` tokens) packed into rows: for each number of
    rows, the longest sample first into the shortest row so far; of these, the layout whose
    rows × width × (1 + ``cost_of_a_key`` × (prefix + width)) is least (attention under a mask computes every
    query-key pair of a row). One row has no pads but its tokens each attend to more keys; one sample a row pads
    every row to the longest: a long shared prefix, or a cheap attention, favours fewer rows."""
    order = sorted(range(len(lengths)), key=lambda j: -lengths[j])
    best, best_cost = [[j] for j in range(len(lengths))], float("inf")
    for n_rows in range(1, len(lengths) + 1):
        rows: list[list[int]] = [[] for _ in range(n_rows)]
        filled = [0] * n_rows
        for j in order:
            r = filled.index(min(filled))
            rows[r].append(j)
            filled[r] += lengths[j]
        width = max(filled)
        cost = n_rows * width * (1 + cost_of_a_key * (prefix + width))  # a masked attention computes every pair
        if cost < best_cost:
            best, best_cost = [sorted(row) for row in rows if row], cost
    return best
