"""The teacher of ``liftlm bench cost`` from files: items instead of a teacher (``--items``), and a teacher's
items with its trace, saved where the weights are (``--save-teacher``) and replayed where they are not
(``--replay-teacher``: every prompt answered again, each answer cut at its recorded length, so that random weights
of the model's shapes make exactly its calls). A trace is, per block of chunks, the writing prompts and the
prompts the teacher answered, each with its chunk and its answer's length (``liftlm.distill.teacher.make_items``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..config import LiftConfig
from ..errors import LiftError


@dataclass
class Given:
    """Items from a file instead of a teacher (``--items``), and with ``--replay-teacher`` the trace its teacher
    left (``trace.json``: per block, every prompt and its answer's length), replayed in each recipe's shape."""

    path: str
    items: list
    trace: dict | None = None


TRACE = "trace.json"
ITEMS = "items.jsonl"


def given_items(path: str, doc_ids: list[int], recipes: list, flag: str = "--items") -> list:
    """The items of ``--items``: a ``distill.jsonl`` (beside an adapter, or a teacher's cache file) of this
    document, checked against it: every item's chunk must be one of the document's chunks under each recipe's
    segment settings (items of another document or other settings are refused)."""
    from ..distill.cache import read_items

    file = Path(path)
    if not file.is_file():
        raise LiftError(f"{flag}: no such file: {path}")
    try:
        items = read_items(file)
    except (ValueError, KeyError, TypeError) as e:
        raise LiftError(f"{flag}: {path} is not a file of distillation items ({e})") from None
    if not items:
        raise LiftError(f"{flag}: {path} holds no items")
    _check_chunks([tuple(it.chunk) for it in items], f"{flag}: {path}'s {len(items)} items", doc_ids, recipes, flag)
    return items


def _check_chunks(chunks: list[tuple], what: str, doc_ids: list[int], recipes: list, flag: str) -> None:
    from ..segment import segment_spans

    for recipe in recipes:
        cfg = recipe.config
        if cfg.objective == "ct":
            raise LiftError(f"{flag}: recipe {recipe.name} trains the segments (--objective ct), not items")
        spans = set(segment_spans(len(doc_ids), cfg.segment_length, cfg.effective_stride))
        stray = [c for c in chunks if tuple(c) not in spans]
        if stray:
            raise LiftError(f"{what}: {len(stray)} are about chunks this {len(doc_ids)}-token document does not "
                            f"have under recipe {recipe.name}'s segment settings (e.g. {list(stray[0])}): another "
                            "document's or other settings'")


def replayed_teacher(folder: str, doc_ids: list[int], recipes: list) -> Given:
    """``--replay-teacher``: the items and trace a teacher left in ``folder`` (``--save-teacher``), checked
    against this document."""
    path = Path(folder)
    if not (path / TRACE).is_file():
        raise LiftError(f"--replay-teacher: no {TRACE} in {folder} (write one with --save-teacher)")
    try:
        trace = json.loads((path / TRACE).read_text())
        chunks = [(r[0], r[1]) for block in trace["blocks"] for key in ("writes", "asks") for r in block[key]]
        trace["write_tokens"], trace["answer_tokens"]  # noqa: B018 (present)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise LiftError(f"--replay-teacher: {path / TRACE} is not a teacher's trace ({e!r})") from None
    if trace.get("document_tokens") != len(doc_ids):
        raise LiftError(f"--replay-teacher: the trace is of a {trace.get('document_tokens')}-token document, this "
                        f"one has {len(doc_ids)} tokens")
    items = given_items(str(path / ITEMS), doc_ids, recipes, "--replay-teacher")
    _check_chunks(chunks, f"--replay-teacher: {path / TRACE}'s {len(chunks)} prompts", doc_ids, recipes,
                  "--replay-teacher")
    return Given(str(path), items, trace)


def save_teacher(folder: Path, source, text: str, doc_ids: list[int], trace: list, cfg: LiftConfig) -> None:
    """``--save-teacher``: the teacher's items (its cache file, every kind) and its trace, into ``folder``."""
    from ..distill.prompts import WRITE_TOKENS
    from ..distill.teacher import TOP_K
    from ..fileio import write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / ITEMS, source.cache_path(text).read_text())
    write_text_atomic(folder / TRACE, json.dumps({
        "document_tokens": len(doc_ids), "segment_length": cfg.segment_length, "stride": cfg.effective_stride,
        "write_tokens": WRITE_TOKENS * cfg.distill_questions, "answer_tokens": cfg.distill_answer_tokens,
        "top_k": TOP_K, "blocks": trace}) + "\n")
