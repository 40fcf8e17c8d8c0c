"""Benchmark examples and loaders: LooGLE (short/long dependency QA) and LongBench v1, plus task specs.

Loaders read the benchmarks' own JSONL files from a local path. A hub id (e.g. ``"bigainlco/LooGLE"``)
goes through the optional ``datasets`` package, imported only then.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..documents import DocumentCut

LOOGLE_TASKS = ("shortdep_qa", "longdep_qa")
LONGBENCH_TASKS = ("narrativeqa", "musique", "qmsum", "gov_report", "passage_retrieval_en")


@dataclass
class Example:
    """One question about one long document."""

    id: str
    document: str
    question: str
    answers: list[str]
    task: str
    evidence: list[str] = field(default_factory=list)  # passages of the document the answer rests on
    metadata: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- task specs


@dataclass(frozen=True)
class TaskSpec:
    """How to prompt for and score one task.

    ``template`` has ``{context}`` and ``{input}`` fields (document and question); ``question_template`` has
    only ``{input}``, for prompting a model that was fine-tuned on the document without showing it again.
    ``also`` names metrics reported beside the main one.
    """

    name: str
    metric: str
    max_new_tokens: int
    template: str
    question_template: str
    also: tuple[str, ...] = ()

    def build_prompt(self, example: Example, context: str | None) -> str:
        """The prompt for ``example`` with ``context`` as the document text, or without a document if None."""
        if context is None:
            return self.question_template.format(input=example.question)
        return self.template.format(context=context, input=example.question)


_QA_TAIL = "Question: {input}\nAnswer:"

TASKS: dict[str, TaskSpec] = {
    # LongBench v1 subsets used in the LIFT paper; generation limits and metrics are LongBench's.
    "narrativeqa": TaskSpec(
        "narrativeqa",
        "qa_f1",
        128,
        "Read the story below, then answer the question about it in as few words as you can.\n\n"
        "Story:\n{context}\n\nAnswer the question in as few words as you can; do not explain.\n\n" + _QA_TAIL,
        "Answer the question about the story you have read in as few words as you can; do not explain.\n\n"
        + _QA_TAIL,
    ),
    "musique": TaskSpec(
        "musique",
        "qa_f1",
        32,
        "Use the passages below to answer the question. Reply with the answer only.\n\n{context}\n\n"
        "Reply with the answer only, with no explanation.\n\n" + _QA_TAIL,
        "Use the passages you have read to answer the question. Reply with the answer only, with no "
        "explanation.\n\n" + _QA_TAIL,
    ),
    "qmsum": TaskSpec(
        "qmsum",
        "rouge",
        512,
        "Here is the transcript of a meeting, followed by a request about it. Respond to the request in one "
        "or more sentences.\n\nTranscript:\n{context}\n\nRespond to this request about the meeting in one or "
        "more sentences.\n\nRequest: {input}\nResponse:",
        "Respond to this request about the meeting transcript you have read, in one or more sentences.\n\n"
        "Request: {input}\nResponse:",
    ),
    "gov_report": TaskSpec(
        "gov_report",
        "rouge",
        512,
        "Here is a report written by a government agency. Summarise it in one paragraph.\n\n"
        "Report:\n{context}\n\nNow write a one-paragraph summary of the report.\n\nSummary:",
        "Write a one-paragraph summary of the government report you have read.\n\nSummary:",
    ),
    "passage_retrieval_en": TaskSpec(
        "passage_retrieval_en",
        "retrieval",
        32,
        "Below are numbered paragraphs taken from Wikipedia articles, then a summary of one of them. Find "
        "the paragraph the summary was written from.\n\n{context}\n\nSummary:\n{input}\n\n"
        'Which paragraph is this summary of? Reply only with its label, written like "Paragraph 4".\n\n'
        "Answer:",
        "Among the numbered paragraphs you have read, which one is this a summary of? Reply only with its "
        'label, written like "Paragraph 4".\n\nSummary:\n{input}\n\nAnswer:',
    ),
    # LooGLE QA: generation limits are LooGLE's own. The paper scores these with METEOR, BERTScore and a
    # GPT-4 judge; ROUGE-L is the stand-in metric available here, with SQuAD-style token F1 beside it.
    "shortdep_qa": TaskSpec(
        "shortdep_qa",
        "rouge",
        300,
        "Answer the question using the text below.\n\n{context}\n\n" + _QA_TAIL,
        "Answer the question about the text you have read.\n\n" + _QA_TAIL,
        ("qa_f1",),
    ),
    "longdep_qa": TaskSpec(
        "longdep_qa",
        "rouge",
        500,
        "Answer the question using the text below.\n\n{context}\n\n" + _QA_TAIL,
        "Answer the question about the text you have read.\n\n" + _QA_TAIL,
        ("qa_f1",),
    ),
    # Synthetic needle tasks (liftlm.eval.niah); generation limits are ours.
    "niah": TaskSpec(
        "niah",
        "niah",
        64,
        "Here is a document.\n\n{context}\n\nAnswer briefly, using only the document.\n\n" + _QA_TAIL,
        "Answer briefly, using only the document you have read.\n\n" + _QA_TAIL,
    ),
    "ruler": TaskSpec(
        "ruler",
        "ruler",
        128,
        "Here is a document with some special magic numbers hidden in it.\n\n{context}\n\n"
        "Answer with the numbers only.\n\n" + _QA_TAIL,
        "Answer with the special magic numbers only, from the document you have read.\n\n" + _QA_TAIL,
    ),
    # Made-up facts asked in paraphrase, and general-knowledge controls (liftlm.eval.facts). The same neutral
    # instruction serves both kinds: it neither points at the document nor away from it.
    "facts": TaskSpec(
        "facts",
        "facts",
        32,
        "Here is a document.\n\n{context}\n\nAnswer the question in a few words.\n\n" + _QA_TAIL,
        "Answer the question in a few words.\n\n" + _QA_TAIL,
    ),
}


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` called ``name``; an unknown name raises ValueError with suggestions."""
    if name in TASKS:
        return TASKS[name]
    close = difflib.get_close_matches(str(name), TASKS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown task {name!r}; {hint}available: {', '.join(sorted(TASKS))}")


# ---------------------------------------------------------------- reading files

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _is_hub_id(source: str | Path) -> bool:
    text = str(source)
    return (
        isinstance(source, str)
        and _HUB_ID.match(text) is not None
        and not text.endswith((".jsonl", ".json"))
        and not Path(text).exists()
    )


def _read_jsonl(path: Path) -> Iterator[tuple[str, int, dict]]:
    """Yield (file name, line number, object) for each non-blank line; bad input raises ValueError."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file; pass the path of a .jsonl file (or a folder holding one)")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})"
                ) from None
            if not isinstance(row, dict):
                raise ValueError(  # noqa: TRY004 - bad file content is a value problem, like bad JSON
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"
                )
            yield str(path), lineno, row


def _read_hub(repo_id: str, config: str, split: str) -> Iterator[tuple[str, int, dict]]:
    """Yield rows of a hub dataset through the optional ``datasets`` package."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"loading {repo_id!r} from the Hugging Face hub needs the 'datasets' package "
            "(pip install datasets); or pass the path of a local .jsonl file instead"
        ) from err
    rows = datasets.load_dataset(repo_id, config, split=split)
    where = f"{repo_id}[{config}/{split}]"
    for index, row in enumerate(rows, start=1):
        yield where, index, dict(row)


def _resolve(
    source: str | Path, task: str | None, tasks: tuple[str, ...], split: str
) -> tuple[Iterable, str]:
    """Rows and task name for a file, a folder of ``<task>.jsonl`` files, or a hub id."""
    if _is_hub_id(source):
        if task is None:
            raise ValueError(f"loading {source!r} from the hub needs a task: one of {', '.join(tasks)}")
        return _read_hub(str(source), task, split), task
    path = Path(source)
    if path.is_dir():
        if task is None:
            raise ValueError(
                f"{path} is a folder: pass task= (one of {', '.join(tasks)}) to pick <task>.jsonl"
            )
        path = path / f"{task}.jsonl"
    return _read_jsonl(path), task if task is not None else path.stem


def _field(row: dict, key: str, where: str, lineno: int, kind: type | tuple[type, ...] = str) -> Any:
    if key not in row:
        raise ValueError(f"{where}:{lineno}: missing field {key!r}")
    value = row[key]
    if not isinstance(value, kind):
        raise ValueError(  # noqa: TRY004 - bad file content is a value problem
            f"{where}:{lineno}: field {key!r} should be {_kind_name(kind)}, got {type(value).__name__}"
        )
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _take(rows: Iterable[Example], limit: int | None) -> list[Example]:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    out: list[Example] = []
    for ex in rows:
        if limit is not None and len(out) >= limit:
            break
        out.append(ex)
    return out


# ---------------------------------------------------------------- LooGLE


def _parse_qa_pairs(value: Any, where: str, lineno: int) -> list[dict]:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
            raise ValueError(f"{where}:{lineno}: cannot parse qa_pairs as a Python literal ({err})") from None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError(f"{where}:{lineno}: qa_pairs should be a list of dicts, got {type(value).__name__}")
    return value


def _loogle_examples(rows: Iterable[tuple[str, int, dict]], task: str) -> Iterator[Example]:
    for doc_index, (where, lineno, row) in enumerate(rows):
        document = _field(row, "input", where, lineno)
        title = row.get("title", "")
        qa_pairs = _parse_qa_pairs(_field(row, "qa_pairs", where, lineno, (str, list)), where, lineno)
        for qa_index, qa in enumerate(qa_pairs):
            for key in ("Q", "A"):
                if key not in qa:
                    raise ValueError(f"{where}:{lineno}: qa_pairs item {qa_index} has no {key!r} field")
            evidence = qa.get("S", [])
            evidence = [evidence] if isinstance(evidence, str) else [str(s) for s in evidence]
            metadata: dict[str, Any] = {"title": title, "doc_index": doc_index, "qa_index": qa_index}
            if "type" in qa:
                metadata["type"] = qa["type"]
            yield Example(
                id=f"{task}/{doc_index}/{qa_index}",
                document=document,
                question=str(qa["Q"]),
                answers=[str(qa["A"])],
                task=task,
                evidence=[s for s in evidence if s.strip()],
                metadata=metadata,
            )


def load_loogle(
    source: str | Path, task: str | None = None, *, limit: int | None = None, split: str = "test"
) -> list[Example]:
    """Load LooGLE QA examples (one per question) from a ``.jsonl`` file, a folder of them, or a hub id.

    ``task`` is ``"shortdep_qa"`` or ``"longdep_qa"``; for a file it defaults to the file's name. Each line
    holds one document (``input``) and its questions (``qa_pairs``, a Python-literal string read with
    ``ast.literal_eval``). ``limit`` caps the number of examples.
    """
    if task is not None and task not in LOOGLE_TASKS:
        raise ValueError(f"unsupported LooGLE task {task!r}; supported: {', '.join(LOOGLE_TASKS)}")
    rows, task = _resolve(source, task, LOOGLE_TASKS, split)
    if task not in LOOGLE_TASKS:
        raise ValueError(
            f"cannot tell the LooGLE task of {source}: name the file <task>.jsonl or pass task= "
            f"(one of {', '.join(LOOGLE_TASKS)})"
        )
    return _take(_loogle_examples(rows, task), limit)


# ---------------------------------------------------------------- LongBench v1


def _longbench_examples(rows: Iterable[tuple[str, int, dict]], task: str | None) -> Iterator[Example]:
    for where, lineno, row in rows:
        answers = _field(row, "answers", where, lineno, (list, str))
        answers = [answers] if isinstance(answers, str) else [str(a) for a in answers]
        all_classes = row.get("all_classes")
        name = task or row.get("dataset")
        if not name:
            raise ValueError(f"{where}:{lineno}: no 'dataset' field; pass task= to name the LongBench task")
        yield Example(
            id=str(row.get("_id", f"{name}/{lineno}")),
            document=_field(row, "context", where, lineno),
            question=_field(row, "input", where, lineno),
            answers=answers,
            task=name,
            metadata={
                "all_classes": list(all_classes) if all_classes else None,
                "length": row.get("length"),
                "language": row.get("language"),
            },
        )


def load_longbench(
    source: str | Path, task: str | None = None, *, limit: int | None = None, split: str = "test"
) -> list[Example]:
    """Load LongBench (v1) examples from a ``.jsonl`` file, a folder of ``<task>.jsonl`` files, or a hub id.

    Fields read: ``input`` (question), ``context`` (document), ``answers``, ``all_classes``, ``dataset``,
    ``length``, ``_id``. ``task`` defaults to each line's ``dataset`` field. Prompts, metrics and generation
    limits for the paper's subsets are in :data:`TASKS`.
    """
    rows, _ = _resolve(source, task, LONGBENCH_TASKS, split)
    # Unless a task is given, each line's own 'dataset' field names its task.
    return _take(_longbench_examples(rows, task), limit)


# ---------------------------------------------------------------- cutting long documents


def cut_document(example: Example, tokenizer: Any, max_doc_tokens: int) -> Example | None:
    """Keep the first ``max_doc_tokens`` tokens of the document; None if that loses some of the evidence.

    Evidence is compared whitespace-normalised. Evidence found verbatim in the document must be verbatim in
    the cut. Evidence that the benchmark quotes loosely (not verbatim in the document) counts as inside when
    every 4-word shingle of it that occurs in the document also occurs in the cut; evidence with no such
    shingle cannot be located and is ignored (counted in ``metadata["unlocated_evidence"]``). A document that
    already fits is returned unchanged (the same object).
    """
    return _cut_with(example, DocumentCut.of(example.document, tokenizer, max_doc_tokens))


def cut_documents(examples: Iterable[Example], tokenizer: Any, max_doc_tokens: int) -> list[Example]:
    """:func:`cut_document` over many examples, leaving out those it drops; consecutive examples of one
    document share one tokenization of it."""
    kept: list[Example] = []
    view: DocumentCut | None = None
    for example in examples:
        if view is None or view.document != example.document:
            view = DocumentCut.of(example.document, tokenizer, max_doc_tokens)
        cut = _cut_with(example, view)
        if cut is not None:
            kept.append(cut)
    return kept


def _cut_with(example: Example, view: DocumentCut) -> Example | None:
    if view.cut is None:
        return example
    unlocated = 0
    for evidence in example.evidence:
        inside = view.located.inside(evidence)
        if inside is False:
            return None
        unlocated += inside is None
    metadata = {
        **example.metadata,
        "doc_tokens": view.n_tokens,
        "cut_tokens": view.max_doc_tokens,
        "unlocated_evidence": unlocated,
    }
    return dataclasses.replace(example, document=view.cut, metadata=metadata)
