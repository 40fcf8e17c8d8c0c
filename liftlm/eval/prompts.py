"""Prompts and records: each method's prompt in the task's own template (``TaskSpec``), cut to the window at the
token level like ``liftlm ask`` does (method ``oracle``: the whole document, within the model's context limit),
and the record of each answer as ``predictions.jsonl`` holds it."""
from __future__ import annotations

from ..errors import LiftError
from .datasets import Example, TaskSpec
from .spec import ORACLE


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def prompt_parts(lift, task: TaskSpec, question: str, with_document: bool) -> tuple[list[int], list[int]]:
    """Token ids before and after the document slot of the task's prompt, chat format included."""
    prompts, tok = lift.prompts, lift.tokenizer
    if not with_document:
        return sum(prompts.chat_prompt(encode(tok, task.question_template.format(input=question))), []), []
    head, tail = task.template.split("{context}")
    return prompts.chat_prompt(encode(tok, head.format(input=question)), encode(tok, tail.format(input=question)))


def fit_prompt(lift, task: TaskSpec, ex: Example, mode: str, max_new_tokens: int,
               doc_tokens: int | None = None) -> tuple[list[int], list[int], int]:
    """The prompt's ids before and after the document slot, and how many document tokens fit between them
    beside the answer (0 in mode ``lift``); ``LiftError`` when the prompt and the answer alone do not fit.

    Method ``oracle`` takes the whole document (``doc_tokens`` of it, counted when not given) within the
    model's own context limit, whatever ``--window`` is; a document that does not fit is refused."""
    from ..infer import uses_document

    if mode == ORACLE:
        head, tail = prompt_parts(lift, task, ex.question, True)
        n_doc = len(encode(lift.tokenizer, ex.document)) if doc_tokens is None else doc_tokens
        need, limit = len(head) + len(tail) + n_doc + max_new_tokens, lift.loaded.max_context
        if need > limit:
            raise LiftError(f"method oracle: example {ex.id} needs {need} tokens (document {n_doc}, prompt "
                            f"{len(head) + len(tail)}, answer {max_new_tokens}), over the model's context limit "
                            f"of {limit}; use shorter documents or leave oracle out of --methods")
        return head, tail, n_doc
    with_doc = uses_document(mode)
    head, tail = prompt_parts(lift, task, ex.question, with_doc)
    room = lift.window - max_new_tokens - len(head) - len(tail)
    if room < (1 if with_doc else 0):
        raise LiftError(f"--window {lift.window} is too small for {ex.task} in mode {mode}: the prompt takes "
                        f"{len(head) + len(tail)} tokens and the answer {max_new_tokens} (example {ex.id}); "
                        "raise --window or lower --max-new-tokens")
    return head, tail, room if with_doc else 0


def task_prompt(lift, task: TaskSpec, ex: Example, doc_ids: list[int], mode: str, max_new_tokens: int) -> list[int]:
    """The full prompt: head + truncated (head+tail) or retrieved document + tail, within the window; in method
    ``oracle``, head + the whole document + tail, within the model's context limit."""
    from ..infer import uses_document, uses_retrieval

    head, tail, room = fit_prompt(lift, task, ex, mode, max_new_tokens, len(doc_ids))
    if mode == ORACLE:
        return head + doc_ids + tail
    if not uses_document(mode):
        return head
    if uses_retrieval(mode):
        context = lift.retrieve(ex.question, room, document=ex.document)[:room]
    else:
        context = lift.prompts.truncate(doc_ids, room)
    return head + context + tail


def make_record(ex: Example, task: TaskSpec, mode: str, prediction: str, seconds: float, doc_index: int,
                lifted: dict | None, column: str, keep_meta: tuple[str, ...]) -> dict:
    """One answer as ``predictions.jsonl`` holds it: scored by the task's metric (and its other metrics), in the
    summary ``column`` given, with the LIFT facts (``lifted``) and the example's metadata named in ``keep_meta``."""
    from .metrics import score

    meta = {k: v for k, v in ex.metadata.items() if k in keep_meta}
    return {
        "id": ex.id,
        "task": ex.task,
        "column": column,
        "method": mode,
        "question": ex.question,
        "gold": ex.answers,
        "prediction": prediction,
        "score": round(score(task.metric, prediction, ex.answers, all_classes=ex.metadata.get("all_classes")), 6),
        "metric": task.metric,
        **({"scores": {m: round(score(m, prediction, ex.answers), 6) for m in task.also}} if task.also else {}),
        "seconds": round(seconds, 3),
        "doc": doc_index,
        **(lifted or {}),
        "meta": meta,
    }
