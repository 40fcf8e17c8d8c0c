"""A document's distillation items, made by the teacher once and then read from a cache (``DistillSource``), and
their on-disk form: JSONL, one ``DistillItem`` a line (the cache, and ``distill.jsonl`` beside an adapter).

No torch at import: the teacher (``liftlm.distill.teacher``) is imported only when items must be made.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..errors import LiftError
from ..fileio import append_jsonl, read_jsonl
from ..keys import DISTILL_VERSION, document_sha256, store_key
from ..memory import out_of_memory, peak, reset_peak
from .prompts import KINDS, DistillItem


def items_jsonl(items: list[DistillItem]) -> str:
    """The items as JSONL text (one record a line)."""
    return "".join(json.dumps(asdict(it)) + "\n" for it in items)


def write_items(path: Path, items: list[DistillItem]) -> None:
    from ..fileio import write_text_atomic

    write_text_atomic(path, items_jsonl(items))


def read_items(path: Path) -> list[DistillItem]:
    return [DistillItem.from_dict(json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]


def _kind_counts(items: list[DistillItem]) -> dict[str, int]:
    """How many items of each kind (the kinds present, in ``KINDS`` order)."""
    return {k: n for k in KINDS if (n := sum(it.kind == k for it in items))}


class DistillSource:
    """A document's distillation items: made by the teacher once (``make_items``), then read from
    ``cache_dir`` (keyed by document, model and the settings that shape the items)."""

    SETTINGS = ("segment_length", "stride", "distill_prompts", "distill_answer_tokens", "distill_retention", "seed")

    def __init__(self, cfg, model_id: str, cache_dir: str | Path, progress: bool = False, on_step=None):
        self.cfg = cfg
        self.model_id = model_id
        self.cache_dir = Path(cache_dir)
        self.progress = progress
        self.on_step = on_step  # given a StepProgress with stage "teacher" after each batch of the teacher
        self.trace: list | None = None  # a list: the teacher's trace (``make_items``) when it makes the items

    def cache_path(self, text: str) -> Path:
        settings = {k: getattr(self.cfg, k) for k in self.SETTINGS} | {"distill_version": DISTILL_VERSION}
        if self.cfg.distill_questions:  # (only when asked for: the items of every earlier setup keep their key)
            settings["distill_questions"] = self.cfg.distill_questions
            if self.cfg.distill_question_check != "names":
                settings["distill_question_check"] = self.cfg.distill_question_check
        if self.cfg.distill_cloze:
            settings["distill_cloze"] = True
            if self.cfg.distill_blanks != 1:
                settings["distill_blanks"] = self.cfg.distill_blanks
        return self.cache_dir / f"{store_key(document_sha256(text), self.model_id, settings)}.jsonl"

    def partial_path(self, text: str) -> Path:
        """Where the teacher appends each finished block of chunks until its items are cached (``make_items``)."""
        cache = self.cache_path(text)
        return cache.with_name(f"{cache.stem}.partial.jsonl")

    def items(self, text: str, doc_ids: list[int], model, tokenizer, chat) -> tuple[list[DistillItem], dict]:
        """The items for ``text`` the student trains on (``model``: the base model, the teacher; only the kinds
        of ``--distill-kinds``) and a report (count, teacher time; ``made``: all the teacher made, if fewer)."""
        if self.cfg.objective == "ct":
            return [], {}
        items, report = self._made(text, doc_ids, model, tokenizer, chat)
        if set(self.cfg.kinds) != set(KINDS):  # the ablation: the student trains on some kinds only
            made = len(items)
            items = [it for it in items if it.kind in self.cfg.kinds]
            if not items:
                raise LiftError(f"none of the teacher's {made} items is of a kind in --distill-kinds "
                                f"{self.cfg.distill_kinds}")
            kinds = _kind_counts(items)
            report |= {"items": len(items), "made": made, "kinds": kinds}
        return items, report

    def _made(self, text: str, doc_ids: list[int], model, tokenizer, chat) -> tuple[list[DistillItem], dict]:
        """Every item the teacher makes for ``text``: from the cache, or made now (then cached)."""
        import time

        from ..segment import segment_spans
        from .teacher import make_items, teacher_shape

        cache = self.cache_path(text)
        if cache.is_file():
            items = read_items(cache)
            return items, {"items": len(items), "used": "cache", "cache": str(cache)}
        spans = segment_spans(len(doc_ids), self.cfg.segment_length, self.cfg.effective_stride)
        # an interrupted teacher's finished blocks (``make_items``'s records), appended one a block
        partial = self.partial_path(text)
        blocks_done = read_jsonl(partial, flag="the teacher's record of an interrupted run")
        if any(r.get("spans") != len(spans) for r in blocks_done):  # (not this document's chunks: start again)
            print(f"liftlm: warning: {partial} does not match this document's chunks; the teacher starts again",
                  file=sys.stderr, flush=True)
            partial.unlink()
            blocks_done = []
        elif blocks_done:
            print(f"liftlm: the teacher resumes after {len(blocks_done)} blocks of chunks it finished before "
                  f"({blocks_done[-1]['done']} prompts; {partial})", file=sys.stderr, flush=True)
        before = blocks_done[-1].get("seconds", 0.0) if blocks_done else 0.0
        partial.parent.mkdir(parents=True, exist_ok=True)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=None, desc="teacher", unit="prompt", dynamic_ncols=True)  # total: set by the first batch

        def advance(done: int, total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)
            if self.on_step is not None:
                from ..loop import StepProgress

                self.on_step(StepProgress(0, self.cfg.epochs, done, total, float("nan"), stage="teacher"))

        start = time.perf_counter()
        device = next(model.parameters()).device
        since = reset_peak(device)  # the teacher's peak memory, measured from here

        def on_block(record: dict) -> None:
            append_jsonl(partial, record | {"seconds": round(before + time.perf_counter() - start, 2)})

        shape = teacher_shape(model, self.cfg.teacher_batch, self.cfg.segment_length + len(chat.before),
                              self.cfg.distill_answer_tokens)
        try:
            items, counts = make_items(model, tokenizer, chat, doc_ids, spans, self.cfg.distill_prompts,
                                       self.cfg.distill_answer_tokens, self.cfg.distill_retention, self.cfg.seed,
                                       advance if bar is not None or self.on_step else None, self.cfg.distill_questions,
                                       cloze=self.cfg.distill_cloze, blanks=self.cfg.distill_blanks,
                                       question_check=self.cfg.distill_question_check,
                                       blocks_done=blocks_done, on_block=on_block, shape=shape, trace=self.trace)
        except Exception as e:
            if not out_of_memory(e):
                raise
            raise LiftError(f"the teacher ran out of memory answering {shape.width} prompts at once: try "
                            f"--teacher-batch {max(1, shape.width // 2)} (the same items); the blocks of chunks it "
                            f"finished are kept ({partial}) and it resumes after them") from None
        finally:
            if bar is not None:  # (a tqdm without a total refuses bool())
                bar.close()
        seconds = before + time.perf_counter() - start  # (with the interrupted run's, when it resumed one)
        most = peak(device, since)
        if not items:  # (refused below: nothing to resume either)
            partial.unlink(missing_ok=True)
        if not items and not counts["not_grounded"]:  # (--distill-prompts 0 on a document with no fact sentence)
            raise LiftError("nothing to distil: the document has no sentence with a name or a number to ask about "
                            "with --distill-prompts 0; ask more prompts per chunk (--distill-prompts)")
        if not items:
            raise LiftError(f"none of the teacher's {counts['not_grounded']} answers about the document says what "
                            "its chunk says (see distill.grounded): nothing to distil; try --objective ct or "
                            "--distill-retention")
        write_items(cache, items)
        partial.unlink(missing_ok=True)  # the items are cached whole: the blocks' record is done with
        kinds = _kind_counts(items)
        resumed = {"resumed_blocks": len(blocks_done)} if blocks_done else {}
        return items, {"items": len(items), "kinds": kinds, **counts, **resumed,
                       "teacher_seconds": round(seconds, 2), "answer_tokens": sum(len(it.answer_ids) for it in items),
                       "teacher_shape": asdict(shape),
                       **({"teacher_" + k: v for k, v in most.to_dict().items()} if most is not None else {}),
                       "cache": str(cache)}
