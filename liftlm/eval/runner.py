"""The evaluation run: examples → documents → one LIFT per document → answers per method → records → report.

    spec = EvalSpec(benchmark="longbench", data="LongBench/", out=Path("runs/lb"), options=QAOptions(),
                    methods=("icl", "lift+icl"))
    run_eval(spec, LiftConfig(window=4096))

The benchmark (``benchmarks.get_benchmark(spec.benchmark)``) gives the examples. One ``Lift`` (one loaded model)
serves the whole run. The examples are grouped by document; each document is internalized once (trained, or its
stored adapter reused) and all its questions are asked in every method. Every answer is appended to
``<out>/predictions.jsonl`` as soon as it exists, so an interrupted run resumes where it stopped: examples
already there (same id and method) are skipped. ``<out>/run.json`` holds what the results depend on; resuming
with other settings is refused (``rundir``). Prompts are the benchmark's own (``TaskSpec``), cut to the window
at the token level like ``liftlm ask`` does (``prompts``).
"""
from __future__ import annotations

import dataclasses
import gc
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import LiftConfig
from ..errors import LiftError
from ..fileio import append_jsonl, read_jsonl
from .benchmarks import Benchmark, get_benchmark, take_documents
from .coverage import ItemAnswers, annotate
from .datasets import Example, get_task
from .prompts import encode, fit_prompt, make_record, task_prompt
from .rundir import JUDGMENTS, PREDICTIONS, check_out_dir, write_run_file
from .spec import DEFAULT_METHODS, METHODS, ORACLE, EvalSpec

__all__ = ["DEFAULT_METHODS", "METHODS", "EvalSpec", "Outcome", "load_examples", "read_jsonl", "run_eval",
           "take_documents"]


# ---------------------------------------------------------------- examples


def take_per_task(examples: list[Example], limit: int | None, bench: Benchmark) -> list[Example]:
    """The first ``limit`` examples of each summary column: each task (RULER variant; facts: facts, controls)."""
    if limit is None:
        return examples
    seen: dict[str, int] = {}
    out = []
    for ex in examples:
        column = bench.column(ex)
        if seen.get(column, 0) < limit:
            seen[column] = seen.get(column, 0) + 1
            out.append(ex)
    return out


def unique_ids(examples: list[Example]) -> list[Example]:
    """Make example ids unique (a repeated id gets '#2', '#3', …): ids key the resumption."""
    count: dict[str, int] = {}
    out = []
    for ex in examples:
        count[ex.id] = count.get(ex.id, 0) + 1
        out.append(ex if count[ex.id] == 1 else dataclasses.replace(ex, id=f"{ex.id}#{count[ex.id]}"))
    return out


def load_examples(spec: EvalSpec, tokenizer) -> tuple[list[Example], dict]:
    """The examples of the run, and notes for run.json (how many ``--max-doc-tokens`` dropped)."""
    bench = get_benchmark(spec.benchmark)
    examples = unique_ids(bench.load(spec, tokenizer))
    notes: dict = {"loaded": len(examples)}
    examples, more = bench.select(examples, spec.options, tokenizer)
    notes.update(more)
    examples = take_per_task(examples, spec.limit, bench)
    if not examples:
        hint = " (--max-doc-tokens dropped every question)" if notes.get("kept_after_cut") == 0 else ""
        raise LiftError(f"--data: no examples to evaluate{hint}; check --data, --task and --limit")
    return examples, notes


def group_by_document(examples: Iterable[Example]) -> list[tuple[str, list[Example]]]:
    """Examples grouped by their document text, in order of first appearance."""
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(ex.document, []).append(ex)
    return list(groups.items())


# ---------------------------------------------------------------- answers


def generate_answer(lift, prompt: list[int], mode: str, max_new_tokens: int) -> str:
    """The model's answer to ``prompt`` (method ``oracle`` is the base model, as in ``icl``: only its prompt
    differs)."""
    return lift.generate(prompt, "icl" if mode == ORACLE else mode, max_new_tokens)


# ---------------------------------------------------------------- the run


@dataclass
class Outcome:
    out: Path
    answered: int  # new answers this run
    skipped: int  # answers already in --out
    documents: int  # documents that were internalized or read this run
    report: dict = field(default_factory=dict)  # name → path of the written report files


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="answer", disable=not enabled, dynamic_ncols=True, file=sys.stderr)


def _prepare_document(lift, document: str, force: bool) -> dict:
    """Internalize the document (train, or reuse its stored adapter); the LIFT facts for the records."""
    done = lift.internalize(document, force=force)
    training = done.metadata.get("training", {})
    return {"adapter": str(done.adapter), "trained": done.trained, "train_seconds": training.get("seconds")}


def answer_all(spec: EvalSpec, config: LiftConfig, previous: dict | None) -> tuple[int, int, int, dict]:
    """Load the model, the examples; answer every pending (example, method); append the records."""
    from ..infer import uses_adapter
    from ..recipe import Lift

    lift = Lift(spec.model, config, store=spec.store, device=spec.device, progress=spec.progress,
                rag_chunk_tokens=spec.rag_chunk_tokens)
    bench = get_benchmark(spec.benchmark)
    examples, notes = load_examples(spec, lift.tokenizer)
    tasks = {ex.task: get_task(ex.task) for ex in examples}

    def new_tokens(ex: Example) -> int:
        return spec.max_new_tokens or tasks[ex.task].max_new_tokens

    doc_tokens: dict[str, int] = {}  # tokens per document, counted once (for oracle)
    for ex in examples:  # every prompt must fit before any training is spent
        for mode in spec.methods:
            if mode == ORACLE and ex.document not in doc_tokens:
                doc_tokens[ex.document] = len(encode(lift.tokenizer, ex.document))
            fit_prompt(lift, tasks[ex.task], ex, mode, new_tokens(ex), doc_tokens.get(ex.document))
    write_run_file(spec, config, previous, {"model_id": lift.model_id, "window": lift.window,
                                            "examples": notes})
    path = spec.out / PREDICTIONS
    done = {(r.get("id"), r.get("method")) for r in read_jsonl(path)}
    groups = group_by_document(examples)
    pending = [[(ex, m) for ex in exs for m in spec.methods if (ex.id, m) not in done] for _, exs in groups]
    total = sum(len(p) for p in pending)
    answered = documents = 0
    carried = ItemAnswers(lift.tokenizer)  # the adapters' items, to count those that carry each fact
    bar = _progress(total, spec.progress, "eval")
    try:
        for index, ((document, _), todo) in enumerate(zip(groups, pending)):
            if not todo:
                continue
            bar.set_description(f"eval doc {index + 1}/{len(groups)}")
            # The methods without an adapter answer first, so that their answers are on disk before a long
            # training starts; the document is internalized before its first adapter method's answer. Each
            # method answers all the document's questions in a row: their prompts share the document's start,
            # whose keys/values the answerer keeps (infer.PromptReuse) from one question to the next.
            order = {m: i for i, m in enumerate(spec.methods)}
            todo = sorted(todo, key=lambda pair: (uses_adapter(pair[1]), order[pair[1]]))  # stable: questions in order
            lift.read(document)
            lifted = None
            documents += 1
            doc_ids = encode(lift.tokenizer, document)
            for ex, mode in todo:
                if uses_adapter(mode) and lifted is None:
                    bar.set_description(f"eval doc {index + 1}/{len(groups)}: internalizing")
                    lifted = _prepare_document(lift, document, spec.force)
                    bar.set_description(f"eval doc {index + 1}/{len(groups)}")
                start = time.perf_counter()
                prompt = task_prompt(lift, tasks[ex.task], ex, doc_ids, mode, new_tokens(ex))
                prediction = generate_answer(lift, prompt, mode, new_tokens(ex))
                facts = lifted if uses_adapter(mode) else None
                record = make_record(ex, tasks[ex.task], mode, prediction, time.perf_counter() - start, index, facts,
                                     bench.column(ex), bench.record_meta)
                if facts is not None:
                    annotate(record, carried)
                append_jsonl(path, record)
                answered += 1
                bar.update(1)
    finally:
        bar.close()
    return answered, len(examples) * len(spec.methods) - total, documents, notes


def judge_all(spec: EvalSpec) -> int:
    """Judge every prediction not judged yet (``--judge``); appended to ``judge.jsonl``. Returns the count."""
    from .judge import make_judge

    records = read_jsonl(spec.out / PREDICTIONS)
    path = spec.out / JUDGMENTS
    judged = {(r.get("id"), r.get("method")) for r in read_jsonl(path)}
    todo = [r for r in records if (r["id"], r["method"]) not in judged]
    if not todo:
        return 0
    judge = make_judge(spec.judge, spec.device)
    from tqdm.auto import tqdm

    for r in tqdm(todo, desc="judge", unit="answer", disable=not spec.progress, dynamic_ncols=True, file=sys.stderr):
        verdict, reply = judge(r["question"], " / ".join(r["gold"]), r["prediction"])
        append_jsonl(path, {"id": r["id"], "method": r["method"], "judge": float(verdict), "reply": reply,
                            "judge_model": judge.name})
    return len(todo)


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_eval(spec: EvalSpec, config: LiftConfig) -> Outcome:
    """Run (or resume) an evaluation into ``spec.out`` and write its report."""
    from .report import write_report

    previous = check_out_dir(spec, config)
    try:
        answered, skipped, documents, _ = answer_all(spec, config, previous)
    except KeyboardInterrupt:
        write_report(spec.out)  # the report of what is answered so far; rerunning resumes the rest
        raise
    _free_memory()  # the evaluated model is gone before a local judge loads
    if spec.judge:
        judge_all(spec)
    report = write_report(spec.out)
    return Outcome(spec.out, answered, skipped, documents, report)
