"""Inference (paper §4): greedy decoding in one of three modes.

* ``icl``      — the base model, the document truncated (head + tail) to the window, then the question;
* ``lift``     — the adapted model, the question alone (the document only in the weights);
* ``lift+icl`` — the adapted model with the truncated document in context: the paper's main setting;
* ``rag``      — the base model with the document's BM25-best chunks in context instead of head + tail;
* ``lift+rag`` — the adapted model with those chunks (retrieval is the paper's stated next step).
"""
from __future__ import annotations

import contextlib

import torch

MODES = ("icl", "lift", "lift+icl", "rag", "lift+rag")


def uses_adapter(mode: str) -> bool:
    return mode.startswith("lift")


def uses_document(mode: str) -> bool:
    return mode != "lift"


def uses_retrieval(mode: str) -> bool:
    return mode.endswith("rag")


@torch.no_grad()
def generate(model, tokenizer, prompt_ids: list[int], max_new_tokens: int) -> str:
    """Greedy continuation of ``prompt_ids``, decoded without special tokens."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


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
