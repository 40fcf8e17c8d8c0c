"""Context distillation (beyond the paper): the adapter learns to answer what the same model answers *with a chunk
of the document in context*, not only to recite the document's words.

Peers that store a document in weights report that this generalises where next-token training does not
(Cartridges' self-study, arXiv 2506.06266; Knowledge Modules' deep context distillation, arXiv 2503.08727).
The path of a document, one module a step:

1. **Items** (``prompts``): the document is cut like the segments (ℓ tokens every s tokens); each chunk gets
   prompts of several kinds — questions about the names in its whole sentences in four phrasings, YAKE key
   phrases, a summary and a what-happens-next request (``seed_prompts``), the questions the teacher writes
   about its fact-bearing sentences (``--distill-questions``; kind ``written``; Cartridges' self-study has the
   model write its own seed questions too), with ``--distill-cloze`` each fact-bearing sentence once with its
   fact blanked (kind ``cloze``; ``--distill-blanks`` clozes a sentence, each blanking another of its facts),
   and retention prompts that have nothing to do with the document.
2. **Teacher** (``teacher``): the base model (no adapter) with the chunk in context answers each prompt
   greedily; its top-k log-probabilities at every answer token are kept (``teach``, ``make_items``). Answers to
   questions that do not say what the chunk says (``grounded``) are left out. The items are cached per
   document (``cache.DistillSource``) and stored beside the adapter (``items_jsonl``).
3. **Student** (``student``): the adapted model sees what it will see when asked — the question alone (mode
   ``lift``) and the question after the head+tail view of the document (mode ``lift+icl``) — and is trained
   against the teacher's top-k distribution on the answer tokens (``SoftLoss``).

``--objective ct`` (the paper), ``distill`` (items only) or ``ct+distill`` (the segments, then segments + items,
as the paper's two-stage schedule trains segments + QA).

Importing this package does not import torch: the teacher's and the student's names load on first use.
"""
from __future__ import annotations

from .cache import DistillSource, items_jsonl, read_items, write_items
from .prompts import (
    CLOZE_PROMPT,
    KINDS,
    DistillItem,
    cloze,
    clozes,
    fact_sentences,
    grounded,
    retention_prompts,
    seed_prompts,
    sentence_names,
    whole_sentences,
    written_questions,
)

_LAZY = {  # name -> the module that holds it (both import torch)
    "TOP_K": "teacher", "TEACH_BATCH": "teacher", "teach": "teacher", "make_items": "teacher",
    "PREFIX_REFRESH": "student", "SoftSample": "student", "student_samples": "student", "soft_loss": "student",
    "hard_loss": "student", "SoftLoss": "student",
}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CLOZE_PROMPT", "KINDS", "DistillItem", "DistillSource", "cloze", "clozes", "fact_sentences", "grounded",
           "items_jsonl", "read_items", "retention_prompts", "seed_prompts", "sentence_names", "whole_sentences", "write_items",
           "written_questions", *_LAZY]
