"""Inference (paper §4): greedy decoding in one of three modes.

* ``icl``      — the base model, the document truncated (head + tail) to the window, then the question;
* ``lift``     — the adapted model, the question alone (the document only in the weights);
* ``lift+icl`` — the adapted model with the truncated document in context: the paper's main setting;
* ``rag``      — the base model with the document's BM25-best chunks in context instead of head + tail;
* ``lift+rag`` — the adapted model with those chunks (retrieval is the paper's stated next step).
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

from .config import MODES
from .context import PromptBuilder
from .errors import LiftError
from .kvcache import KV, cache_kwarg, kv_tensors, roomy_cache
from .retrieval import build_rag_context


def uses_adapter(mode: str) -> bool:
    return mode.startswith("lift")


def uses_document(mode: str) -> bool:
    return mode != "lift"


def uses_retrieval(mode: str) -> bool:
    return mode.endswith("rag")


@dataclass
class Decoded:
    """A greedy answer: its text (special tokens skipped, stripped) and the token ids it added to the prompt."""

    text: str
    ids: list[int]
    ended: bool  # the model ended the answer itself (an end-of-sequence token) rather than running out of tokens


class _OnText(TextStreamer):
    """Hands each finalized piece of the answer's text to ``on_text`` (skips the prompt and special tokens)."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)


class _StopWhen(StoppingCriteria):
    """Ends decoding at the next token once ``stop()`` is true."""

    def __init__(self, stop: Callable[[], bool]):
        self.stop = stop

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), bool(self.stop()), dtype=torch.bool, device=input_ids.device)


class PromptReuse:
    """The keys/values of the last prompt answered, per slot, so that the next prompt that starts the same way
    computes only what follows the shared start.

    Every question about one document in a method that holds it (``oracle``, ``icl``, ``lift+icl``) repeats the
    same chat turn and document before its own question: with the whole 8k-token document in context, the
    prefill is minutes of a CPU per question and the question a few seconds. A slot is one model state: the base
    model and the adapted one keep separate keys/values, and the adapted slot must be forgotten (``forget``)
    whenever the adapter changes. One prompt per slot is kept (its keys/values: e.g. ~0.5 GB for 8k tokens of
    Qwen2.5-1.5B), in at most ``max_slots`` slots (the least recently used goes first)."""

    def __init__(self, min_shared: int = 16, max_slots: int = 2):
        self.min_shared = min_shared  # shorter shared starts are computed again: not worth a copy
        self.max_slots = max_slots
        self._kept: OrderedDict[str, tuple[list[int], KV]] = OrderedDict()

    def forget(self, slot: str | None = None) -> None:
        """Drop the keys/values kept for ``slot`` and its scaled states (``adapted_slot``; every slot when None)."""
        if slot is None:
            self._kept.clear()
        else:
            for name in [k for k in self._kept if k == slot or k.startswith(slot + "@")]:
                del self._kept[name]

    def shared(self, slot: str, prompt_ids: list[int]) -> int:
        """How many leading tokens of ``prompt_ids`` have kept keys/values (0 when below ``min_shared``); at least
        the last prompt token is always computed, for its logits."""
        ids, _ = self._kept.get(slot, ((), None))
        most = min(len(ids), len(prompt_ids) - 1)
        n = next((i for i in range(most) if ids[i] != prompt_ids[i]), most)
        return n if n >= self.min_shared else 0

    def start(self, slot: str, prompt_ids: list[int], capacity: int = 0):
        """A fresh cache holding (a copy of) the keys/values of the shared start of ``prompt_ids`` (empty if
        none), with room for ``capacity`` positions in all (``roomy_cache``); the kept ones stay as they are."""
        n = self.shared(slot, prompt_ids)
        kv = [(k[:, :, :n], v[:, :, :n]) for k, v in self._kept[slot][1]] if n else []
        return roomy_cache(kv, capacity)

    def keep(self, slot: str, prompt_ids: list[int], cache) -> None:
        """Keep the prompt's part of ``cache`` (which also holds the answer's tokens) for the next prompt."""
        n = len(prompt_ids)
        self._kept[slot] = (list(prompt_ids), [(k[:, :, :n], v[:, :, :n]) for k, v in kv_tensors(cache)])
        self._kept.move_to_end(slot)
        while len(self._kept) > self.max_slots:
            self._kept.popitem(last=False)


@torch.no_grad()
def greedy_decode(model, tokenizer, prompt_ids: list[int], max_new_tokens: int, *,
                  on_text: Callable[[str], None] | None = None, stop: Callable[[], bool] | None = None,
                  reuse: PromptReuse | None = None, slot: str = "base") -> Decoded:
    """Greedy continuation of ``prompt_ids``. ``on_text(piece)`` receives the text as it is decoded (streaming);
    ``stop()`` returning true ends decoding at the next token (e.g. the client went away). With ``reuse``, the
    prompt starts from the keys/values kept in its ``slot`` for as many tokens as it shares with the prompt
    before, and leaves its own there."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    capacity = len(prompt_ids) + max_new_tokens  # the cache is written in place up to this length
    if reuse is not None:
        cache = reuse.start(slot, prompt_ids, capacity)
    else:
        cache = roomy_cache([], capacity)
    hooks = {cache_kwarg(model): cache}
    if on_text is not None:
        hooks["streamer"] = _OnText(tokenizer, on_text)
    if stop is not None:
        hooks["stopping_criteria"] = StoppingCriteriaList([_StopWhen(stop)])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=tokenizer.pad_token_id,
        **hooks,
    )
    if reuse is not None:
        reuse.keep(slot, prompt_ids, cache)
    new = out[0, ids.shape[1] :].tolist()
    ended = bool(new) and new[-1] in _eos_ids(model, tokenizer)
    return Decoded(tokenizer.decode(new, skip_special_tokens=True).strip(), new, ended)


def generate(model, tokenizer, prompt_ids: list[int], max_new_tokens: int, *, reuse: PromptReuse | None = None,
             slot: str = "base") -> str:
    """Greedy continuation of ``prompt_ids``, decoded without special tokens (``reuse``: see ``greedy_decode``)."""
    return greedy_decode(model, tokenizer, prompt_ids, max_new_tokens, reuse=reuse, slot=slot).text


def _eos_ids(model, tokenizer) -> set[int]:
    """The ids that end an answer: the model's generation config's end-of-sequence ids and the tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def base_model_context(model):
    """A context in which a PEFT model runs without its adapter (the ICL baseline); a no-op otherwise."""
    disable = getattr(model, "disable_adapter", None)
    return disable() if callable(disable) and hasattr(model, "peft_config") else contextlib.nullcontext()


@torch.no_grad()
def text_nll(model, tokenizer, text: str) -> float:
    """Mean negative log-likelihood per token of ``text`` with nothing in context (how well it is memorised)."""
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)], device=device)
    return float(model(input_ids=ids, labels=ids).loss)


@contextlib.contextmanager
def scaled_adapter(model, scale: float = 1.0):
    """Within it, ``model``'s LoRA update is ``scale`` times as trained (PEFT's ``rescale_adapter_scale``; WiSE-FT's
    interpolation between the base model and the adapted one for ``scale`` in [0, 1]); 1 changes nothing."""
    if scale == 1:
        yield model
        return
    from peft.helpers import rescale_adapter_scale
    from peft.tuners.lora import LoraLayer

    if not any(isinstance(m, LoraLayer) for m in model.modules()):
        raise LiftError("--adapter-scale scales a LoRA adapter; this model has none")
    with rescale_adapter_scale(model, float(scale)):
        yield model


def adapted_slot(slot: str, scale: float) -> str:
    """The ``PromptReuse`` slot of an adapted model state: its keys/values differ with the adapter's scale."""
    return slot if scale == 1 else f"{slot}@{scale:g}"


class Answerer:
    """Answers questions about one document in any mode: checks that a question fits, builds its prompt
    (truncated document, retrieved chunks or none), and decodes greedily with the model it is given."""

    def __init__(self, tokenizer, prompts: PromptBuilder, rag_chunk_tokens: int = 128):
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.rag_chunk_tokens = rag_chunk_tokens
        self.reuse = PromptReuse()  # questions about one document share its prefill (slots "base", "adapted")

    def check(self, question: str, mode: str = "lift+icl", max_new_tokens: int = 64) -> None:
        """Raise ``LiftError`` for a question that cannot be asked (before any training is spent on it)."""
        if mode not in MODES:
            raise LiftError(f"--mode must be one of {', '.join(MODES)} (got {mode!r})")
        if not question.strip():
            raise LiftError("--question is empty; ask something")
        try:
            self.prompts.question_prompt(question.strip(), [0] if uses_document(mode) else None, max_new_tokens)
        except ValueError as e:
            raise LiftError(f"--window: {e}") from None

    def retrieve(self, document: str, question: str, budget: int) -> list[int]:
        """The BM25-best chunks of ``document`` for ``question``, in document order, within ``budget`` tokens."""
        text = build_rag_context(document, question, self.tokenizer, budget,
                                 chunk_tokens=min(self.rag_chunk_tokens, budget))
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt(self, question: str, mode: str, document: str | None, doc_ids: list[int] | None,
               max_new_tokens: int) -> list[int]:
        """The prompt of ``question`` in ``mode``: the document's head and tail, its retrieved chunks, or none."""
        context = doc_ids if uses_document(mode) else None
        if uses_retrieval(mode):
            context = self.retrieve(document, question, self.prompts.document_room(question, max_new_tokens))
        return self.prompts.question_prompt(question, context, max_new_tokens)

    def generate(self, model, prompt_ids: list[int], max_new_tokens: int, without_adapter: bool = False,
                 adapter_scale: float = 1.0) -> str:
        """Greedy answer to a ready-made prompt; ``without_adapter`` runs a PEFT model as its base model, and
        ``adapter_scale`` scales its LoRA update (``scaled_adapter``). The prompt's shared start with the previous
        one of the same model state is not computed again; whoever changes the adapter calls ``forget_adapted``."""
        if without_adapter:
            with base_model_context(model):
                return generate(model, self.tokenizer, prompt_ids, max_new_tokens, reuse=self.reuse, slot="base")
        with scaled_adapter(model, adapter_scale):
            return generate(model, self.tokenizer, prompt_ids, max_new_tokens, reuse=self.reuse,
                            slot=adapted_slot("adapted", adapter_scale))

    def forget_adapted(self) -> None:
        """The adapter changed: the keys/values it produced no longer hold."""
        self.reuse.forget("adapted")
