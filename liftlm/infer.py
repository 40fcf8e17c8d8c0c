"""Inference (paper §4): greedy decoding in one of three modes.

* ``icl``      — the base model, the document truncated (head + tail) to the window, then the question;
* ``lift``     — the adapted model, the question alone (the document only in the weights);
* ``lift+icl`` — the adapted model with the truncated document in context: the paper's main setting;
* ``rag``      — the base model with the document's BM25-best chunks in context instead of head + tail;
* ``lift+rag`` — the adapted model with those chunks (retrieval is the paper's stated next step).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

from .config import MODES
from .context import PromptBuilder
from .errors import LiftError
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


@torch.no_grad()
def greedy_decode(model, tokenizer, prompt_ids: list[int], max_new_tokens: int, *,
                  on_text: Callable[[str], None] | None = None, stop: Callable[[], bool] | None = None) -> Decoded:
    """Greedy continuation of ``prompt_ids``. ``on_text(piece)`` receives the text as it is decoded (streaming);
    ``stop()`` returning true ends decoding at the next token (e.g. the client went away)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    hooks = {}
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
    new = out[0, ids.shape[1] :].tolist()
    ended = bool(new) and new[-1] in _eos_ids(model, tokenizer)
    return Decoded(tokenizer.decode(new, skip_special_tokens=True).strip(), new, ended)


def generate(model, tokenizer, prompt_ids: list[int], max_new_tokens: int) -> str:
    """Greedy continuation of ``prompt_ids``, decoded without special tokens."""
    return greedy_decode(model, tokenizer, prompt_ids, max_new_tokens).text


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


class Answerer:
    """Answers questions about one document in any mode: checks that a question fits, builds its prompt
    (truncated document, retrieved chunks or none), and decodes greedily with the model it is given."""

    def __init__(self, tokenizer, prompts: PromptBuilder, rag_chunk_tokens: int = 128):
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.rag_chunk_tokens = rag_chunk_tokens

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

    def generate(self, model, prompt_ids: list[int], max_new_tokens: int, without_adapter: bool = False) -> str:
        """Greedy answer to a ready-made prompt; ``without_adapter`` runs a PEFT model as its base model."""
        if without_adapter:
            with base_model_context(model):
                return generate(model, self.tokenizer, prompt_ids, max_new_tokens)
        return generate(model, self.tokenizer, prompt_ids, max_new_tokens)
