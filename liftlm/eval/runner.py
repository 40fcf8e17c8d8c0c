"""The evaluation run: examples → documents → one LIFT per document → answers per method → records → report.

    spec = EvalSpec(benchmark="longbench", data="LongBench/", methods=("icl", "lift+icl"), out=Path("runs/lb"))
    run_eval(spec, LiftConfig(window=4096))

One ``Lift`` (one loaded model) serves the whole run. The examples are grouped by document; each document is
internalized once (trained, or its stored adapter reused) and all its questions are asked in every method.
Every answer is appended to ``<out>/predictions.jsonl`` as soon as it exists, so an interrupted run resumes
where it stopped: examples already there (same id and method) are skipped. ``<out>/run.json`` holds what the
results depend on; resuming with other settings is refused. Prompts are the benchmark's own (``TaskSpec``),
cut to the window at the token level like ``liftlm ask`` does.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import json
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import MODES, LiftConfig
from ..errors import LiftError
from ..version import __version__
from .datasets import LONGBENCH_TASKS, LOOGLE_TASKS, Example, TaskSpec, cut_documents, get_task

BENCHMARKS = ("loogle", "longbench", "niah", "ruler", "facts")
SYNTHETIC = ("niah", "ruler", "facts")  # benchmarks whose documents are built from a haystack
ORACLE = "oracle"  # the base model with the whole document in context: the upper bound of in-context reading
METHODS = (*MODES, ORACLE)
DEFAULT_METHODS = ("icl", "lift", "lift+icl")
PREDICTIONS = "predictions.jsonl"
JUDGMENTS = "judge.jsonl"
RUN_FILE = "run.json"


@dataclass
class EvalSpec:
    """Everything an evaluation run depends on besides the LIFT settings (``LiftConfig``)."""

    benchmark: str
    data: str | None
    out: Path
    methods: tuple[str, ...] = DEFAULT_METHODS
    tasks: tuple[str, ...] = ()  # empty: every task of the benchmark (or of the file given)
    limit: int | None = None  # questions per task
    documents: int | None = None  # documents per task (loogle, longbench)
    max_doc_tokens: int | None = None
    max_new_tokens: int | None = None  # None: the task's own generation limit
    # NIAH / RULER
    lengths: tuple[int, ...] = ()
    depths: tuple[float, ...] = ()
    needle: str | None = None
    question: str | None = None
    keywords: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    samples: int = 1
    data_seed: int = 0
    # facts
    facts: int = 10  # made-up facts per document
    controls: int = 5  # general-knowledge control questions per document
    # judge and machinery
    judge: str | None = None
    model: str | None = None
    store: str | None = None
    device: str | None = None
    force: bool = False
    progress: bool = True
    rag_chunk_tokens: int = 128
    argv: list[str] = field(default_factory=list)

    def identity(self, config: LiftConfig) -> dict:
        """What the recorded results depend on: a rerun into the same ``--out`` must match it."""
        ident = {
            "benchmark": self.benchmark,
            "data": self.data,
            "model": self.model,
            "settings": config.training_dict(),
            "max_doc_tokens": self.max_doc_tokens,
            "max_new_tokens": self.max_new_tokens,
        }
        if self.benchmark == "niah":
            ident["needle"] = {"needle": self.needle, "question": self.question, "keywords": list(self.keywords)}
        if self.benchmark == "facts":  # the documents' contents depend on these; the example ids do not
            ident.update(facts=self.facts, controls=self.controls, depths=list(self.depths))
        return ident


# ---------------------------------------------------------------- records on disk


def read_jsonl(path: Path, flag: str = "--out") -> list[dict]:
    """The records of a JSONL file we append to. A torn last line (an interrupted write) is cut off the
    file; any other bad line is an error."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    records: list[dict] = []
    good_end = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            good_end += len(line) + 1
            continue
        try:
            records.append(json.loads(line))
            good_end += len(line) + 1
        except json.JSONDecodeError:
            if number == len(lines):  # the unterminated last line: an interrupted write
                with path.open("r+b") as fh:
                    fh.truncate(good_end)
                break
            raise LiftError(f"{flag}: {path}:{number} is not valid JSON; fix or delete that file") from None
    return records


def append_jsonl(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()


def git_revision() -> dict | None:
    """The commit of the liftlm checkout this code runs from, and whether it has local changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=False,
                                capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def check_out_dir(spec: EvalSpec, config: LiftConfig) -> dict | None:
    """The ``run.json`` already in ``--out`` (None for a new run); refuse one from a different run."""
    out = spec.out
    if out.exists() and not out.is_dir():
        raise LiftError(f"--out: {out} is a file; give a directory")
    path = out / RUN_FILE
    if not path.is_file():
        if (out / PREDICTIONS).exists():
            raise LiftError(f"--out: {out} holds predictions but no {RUN_FILE}; use another --out")
        return None
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LiftError(f"--out: {path} is not valid JSON; fix it or use another --out") from None
    old, new = previous.get("identity", {}), json.loads(json.dumps(spec.identity(config)))
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if "settings" in keys:
        o, n = old.get("settings", {}), new["settings"]
        keys.remove("settings")
        keys += sorted(k for k in set(o) | set(n) if o.get(k) != n.get(k))
    differ = ["--needle/--question/--keywords" if k == "needle" else "--" + k.replace("_", "-") for k in keys]
    if differ:
        raise LiftError(f"--out: {out} holds results of a different run (differs in: {', '.join(differ)}); "
                        "pass another --out to keep both, or delete it")
    return previous


def write_run_file(spec: EvalSpec, config: LiftConfig, previous: dict | None, extra: dict) -> dict:
    git = git_revision()
    history = list((previous or {}).get("history", []))
    history.append({"date": now(), "git": git, "methods": list(spec.methods), "limit": spec.limit,
                    "documents": spec.documents, "argv": spec.argv})
    meta = {
        "identity": spec.identity(config),
        "benchmark": spec.benchmark,
        "data": spec.data,
        "tasks": list(spec.tasks),
        "methods": list(spec.methods),
        "limit": spec.limit,
        "documents": spec.documents,
        "max_doc_tokens": spec.max_doc_tokens,
        "max_new_tokens": spec.max_new_tokens,
        "model": spec.model,
        "config": config.to_dict(),
        "seed": config.seed,
        "data_seed": spec.data_seed,
        "judge": spec.judge,
        "liftlm_version": __version__,
        "git": git,
        "date": now(),
        "started": (previous or {}).get("started") or now(),
        **extra,
        "history": history,
    }
    if spec.benchmark in SYNTHETIC:
        meta["grid"] = {"lengths": list(spec.lengths), "depths": list(spec.depths), "variants": list(spec.variants),
                        "samples": spec.samples}
    if spec.benchmark == "facts":
        meta["grid"].update(facts=spec.facts, controls=spec.controls)
    spec.out.mkdir(parents=True, exist_ok=True)
    tmp = spec.out / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(spec.out / RUN_FILE)
    return meta


# ---------------------------------------------------------------- examples


def _data_error(e: Exception) -> LiftError:
    return LiftError(f"--data: {e}")


def load_qa_examples(spec: EvalSpec) -> list[Example]:
    """LooGLE or LongBench examples from a file, a folder of ``<task>.jsonl`` or a hub id."""
    from .datasets import load_longbench, load_loogle

    loader, known = (load_loogle, LOOGLE_TASKS) if spec.benchmark == "loogle" else (load_longbench, LONGBENCH_TASKS)
    is_file = Path(spec.data).is_file()
    if is_file and spec.benchmark == "loogle" and len(spec.tasks) > 1:
        raise LiftError("--task: a LooGLE file holds one task; give one --task, or a folder in --data")
    try:
        if is_file:
            examples = loader(spec.data, spec.tasks[0] if spec.benchmark == "loogle" and spec.tasks else None)
            if spec.tasks:
                examples = [ex for ex in examples if ex.task in spec.tasks]
        else:
            examples = [ex for task in (spec.tasks or known) for ex in loader(spec.data, task)]
    except (ValueError, ImportError) as e:
        raise _data_error(e) from None
    unknown = sorted({ex.task for ex in examples} - set(known))
    if unknown:
        raise LiftError(f"--data: tasks {', '.join(unknown)} have no prompt here (supported: {', '.join(known)}); "
                        "pick tasks with --task")
    return examples


def synthetic_examples(spec: EvalSpec, tokenizer) -> list[Example]:
    """NIAH (one document per length × depth), RULER (per variant × length × sample) or facts (per length ×
    sample: the facts and the control questions of one document) examples."""
    from .facts import make_facts_document
    from .niah import load_haystack, make_niah, make_ruler_niah

    try:
        haystack = load_haystack(spec.data)
    except ValueError as e:
        raise _data_error(e) from None
    examples = []
    try:
        if spec.benchmark == "niah":
            for length in spec.lengths:
                for depth in spec.depths:
                    sample = make_niah(haystack, tokenizer, length, depth, spec.needle, spec.question, spec.keywords)
                    examples.append(sample.to_example())
        elif spec.benchmark == "facts":
            for length in spec.lengths:
                for i in range(spec.samples):
                    doc = make_facts_document(haystack, tokenizer, length, spec.facts, spec.depths,
                                              seed=spec.data_seed + i, n_controls=spec.controls)
                    examples.extend(doc.to_examples())
        else:
            for variant in spec.variants:
                for length in spec.lengths:
                    for i in range(spec.samples):
                        sample = make_ruler_niah(haystack, tokenizer, length, variant, seed=spec.data_seed + i)
                        examples.append(sample.to_example())
    except (ValueError, RuntimeError) as e:
        raise LiftError(f"--lengths: {e}") from None
    return examples


def take_per_task(examples: list[Example], limit: int | None) -> list[Example]:
    """The first ``limit`` examples of each task (of each RULER variant)."""
    if limit is None:
        return examples
    seen: dict[str, int] = {}
    out = []
    for ex in examples:
        column = column_of(ex.task, ex.metadata)
        if seen.get(column, 0) < limit:
            seen[column] = seen.get(column, 0) + 1
            out.append(ex)
    return out


def take_documents(examples: list[Example], documents: int | None) -> list[Example]:
    """The examples about the first ``documents`` distinct documents of each task, in file order."""
    if documents is None:
        return examples
    kept: dict[str, set[str]] = {}
    out = []
    for ex in examples:
        docs = kept.setdefault(ex.task, set())
        if ex.document in docs or len(docs) < documents:
            docs.add(ex.document)
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
    if spec.benchmark in SYNTHETIC:
        examples = synthetic_examples(spec, tokenizer)
    else:
        examples = load_qa_examples(spec)
    examples = unique_ids(examples)
    notes: dict = {"loaded": len(examples)}
    if spec.max_doc_tokens is not None and spec.benchmark in ("loogle", "longbench"):
        examples = cut_documents(examples, tokenizer, spec.max_doc_tokens)
        notes["kept_after_cut"] = len(examples)
    examples = take_documents(examples, spec.documents)
    examples = take_per_task(examples, spec.limit)
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


# ---------------------------------------------------------------- prompts and answers


FACT_RECALL, CONTROL_RETENTION = "fact recall", "control retention"


def column_of(task: str, metadata: dict) -> str:
    """The summary column of an example: its task (RULER: ``ruler/<variant>``; facts: fact recall or control
    retention)."""
    if task == "facts":
        return CONTROL_RETENTION if metadata.get("kind") == "control" else FACT_RECALL
    return f"ruler/{metadata.get('variant')}" if task == "ruler" else task


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def prompt_parts(lift, task: TaskSpec, question: str, with_document: bool) -> tuple[list[int], list[int]]:
    """Token ids before and after the document slot of the task's prompt, chat format included."""
    prompts, tok = lift.prompts, lift.tokenizer
    if not with_document:
        return sum(prompts.chat_prompt(_encode(tok, task.question_template.format(input=question))), []), []
    head, tail = task.template.split("{context}")
    return prompts.chat_prompt(_encode(tok, head.format(input=question)), _encode(tok, tail.format(input=question)))


def fit_prompt(lift, task: TaskSpec, ex: Example, mode: str, max_new_tokens: int,
               doc_tokens: int | None = None) -> tuple[list[int], list[int], int]:
    """The prompt's ids before and after the document slot, and how many document tokens fit between them
    beside the answer (0 in mode ``lift``); ``LiftError`` when the prompt and the answer alone do not fit.

    Method ``oracle`` takes the whole document (``doc_tokens`` of it, counted when not given) within the
    model's own context limit, whatever ``--window`` is; a document that does not fit is refused."""
    from ..infer import uses_document

    if mode == ORACLE:
        head, tail = prompt_parts(lift, task, ex.question, True)
        n_doc = len(_encode(lift.tokenizer, ex.document)) if doc_tokens is None else doc_tokens
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


def generate_answer(lift, prompt: list[int], mode: str, max_new_tokens: int) -> str:
    # oracle is the base model, as in icl; only its prompt differs
    return lift.generate(prompt, "icl" if mode == ORACLE else mode, max_new_tokens)


def make_record(ex: Example, task: TaskSpec, mode: str, prediction: str, seconds: float, doc_index: int,
                lifted: dict | None) -> dict:
    from .metrics import score

    keep = {"niah": ("length", "depth", "variant", "seed"), "ruler": ("length", "depth", "variant", "seed"),
            "facts": ("kind", "template", "length", "depth", "seed", "overlap", "fact_token")}.get(
        ex.task, ("type", "doc_tokens"))
    meta = {k: v for k, v in ex.metadata.items() if k in keep}
    return {
        "id": ex.id,
        "task": ex.task,
        "column": column_of(ex.task, ex.metadata),
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


def _prepare_document(lift, document: str, needs_adapter: bool, force: bool) -> dict | None:
    """Internalize (train or reuse) or just read the document; the LIFT facts for the records."""
    if not needs_adapter:
        lift.read(document)
        return None
    done = lift.internalize(document, force=force)
    training = done.metadata.get("training", {})
    return {"adapter": str(done.adapter), "trained": done.trained, "train_seconds": training.get("seconds")}


def answer_all(spec: EvalSpec, config: LiftConfig, previous: dict | None) -> tuple[int, int, int, dict]:
    """Load the model, the examples; answer every pending (example, method); append the records."""
    from ..infer import uses_adapter
    from ..recipe import Lift

    lift = Lift(spec.model, config, store=spec.store, device=spec.device, progress=spec.progress,
                rag_chunk_tokens=spec.rag_chunk_tokens)
    examples, notes = load_examples(spec, lift.tokenizer)
    tasks = {ex.task: get_task(ex.task) for ex in examples}

    def new_tokens(ex: Example) -> int:
        return spec.max_new_tokens or tasks[ex.task].max_new_tokens

    doc_tokens: dict[str, int] = {}  # tokens per document, counted once (for oracle)
    for ex in examples:  # every prompt must fit before any training is spent
        for mode in spec.methods:
            if mode == ORACLE and ex.document not in doc_tokens:
                doc_tokens[ex.document] = len(_encode(lift.tokenizer, ex.document))
            fit_prompt(lift, tasks[ex.task], ex, mode, new_tokens(ex), doc_tokens.get(ex.document))
    write_run_file(spec, config, previous, {"model_id": lift.model_id, "window": lift.window,
                                            "examples": notes})
    path = spec.out / PREDICTIONS
    done = {(r.get("id"), r.get("method")) for r in read_jsonl(path)}
    groups = group_by_document(examples)
    pending = [[(ex, m) for ex in exs for m in spec.methods if (ex.id, m) not in done] for _, exs in groups]
    total = sum(len(p) for p in pending)
    # Internalize whenever the run has an adapter method (even if only icl answers remain for a document):
    # one Lift keeps one current adapter, and reading a document after an internalize would keep the old one.
    needs_adapter = any(uses_adapter(m) for m in spec.methods)
    answered = documents = 0
    bar = _progress(total, spec.progress, "eval")
    try:
        for index, ((document, _), todo) in enumerate(zip(groups, pending)):
            if not todo:
                continue
            bar.set_description(f"eval doc {index + 1}/{len(groups)}")
            lifted = _prepare_document(lift, document, needs_adapter, spec.force)
            documents += 1
            doc_ids = _encode(lift.tokenizer, document)
            for ex, mode in todo:
                start = time.perf_counter()
                prompt = task_prompt(lift, tasks[ex.task], ex, doc_ids, mode, new_tokens(ex))
                prediction = generate_answer(lift, prompt, mode, new_tokens(ex))
                facts = lifted if uses_adapter(mode) else None
                record = make_record(ex, tasks[ex.task], mode, prediction, time.perf_counter() - start, index, facts)
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
