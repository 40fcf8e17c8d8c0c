"""The ``liftlm`` command. Verbs mirror the package:

    liftlm internalize --document DOC            train (or reuse) the adapter for DOC, print its path
    liftlm ask --document DOC --question Q       answer Q about DOC (mode lift+icl by default)
    liftlm ask --adapter DIR --question Q        answer with a stored adapter

Every LIFT setting is a flag generated from ``LiftConfig`` (one source of truth). Problems with the input
print one line on stderr and exit with status 2, before anything is written.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path

from . import __version__
from .config import LiftConfig
from .errors import LiftError

MODES = ("icl", "lift", "lift+icl", "rag", "lift+rag")  # kept equal to liftlm.infer.MODES (not imported: torch loads slowly)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_type(f: dataclasses.Field):
    hint = typing.get_type_hints(LiftConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and args:
        hint = args[0]
    return hint


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``LiftConfig`` field, its help taken from the field's metadata."""
    group = parser.add_argument_group("LIFT settings")
    for f in dataclasses.fields(LiftConfig):
        kind = _field_type(f)
        help_text = f"{f.metadata['help']} (default: {f.default})"
        if kind is bool:
            group.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        else:
            group.add_argument(_flag(f.name), dest=f.name, type=kind, default=None, metavar=f.name.upper(),
                               help=help_text)


def config_from_args(args: argparse.Namespace) -> LiftConfig:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(LiftConfig)
             if getattr(args, f.name) is not None}
    return LiftConfig(**given)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="hub id, local model directory, or .gguf file (default: the embedded "
                             "SmolLM2-135M-Instruct)")
    parser.add_argument("--base", default=None,
                        help="start from a model written by `liftlm sft` (a directory; same as --model DIR)")
    parser.add_argument("--store", default=None,
                        help="adapter store directory (default: $LIFTLM_HOME/adapters, ~/.cache/liftlm/adapters)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)")
    parser.add_argument("--force", action="store_true", help="train again even if a stored adapter matches")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--qa-file", default=None,
                        help="auxiliary QA pairs to train on instead of generated ones: JSONL with \"question\" "
                             "and \"answer\" (optional \"evidence\", \"start\", \"end\")")
    add_config_flags(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liftlm", description="LIFT: fine-tune a language model on a long document, then ask it questions.")
    parser.add_argument("--version", action="version", version=f"liftlm {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("internalize", help="train the adapter for a document and print where it is stored")
    p.add_argument("--document", required=True, help="UTF-8 text file to internalize")
    add_common(p)

    p = verbs.add_parser("sft", help="pre-LIFT fine-tuning on a corpus of other long documents (+ their QA); "
                                     "writes a merged model directory for --base")
    p.add_argument("--corpus", required=True, help="JSONL, one document a line: {\"text\", \"qa\": [{\"question\", "
                                                   "\"answer\"}]} or LooGLE's {\"input\", \"qa_pairs\"}")
    p.add_argument("--out", required=True, help="new directory for the fine-tuned model")
    p.add_argument("--max-doc-tokens", type=int, default=None, help="cut each document to its first N tokens")
    add_common(p)

    p = verbs.add_parser("ask", help="answer questions about a long document")
    src = p.add_argument_group("document").add_mutually_exclusive_group(required=True)
    src.add_argument("--document", help="UTF-8 text file to ask about (its adapter is trained or reused)")
    src.add_argument("--adapter", help="a stored adapter directory (from `liftlm internalize`)")
    q = p.add_argument_group("questions").add_mutually_exclusive_group(required=True)
    q.add_argument("--question", help="the question")
    q.add_argument("--questions-file", help="a file with one question per line (one LIFT, many answers)")
    p.add_argument("--mode", choices=MODES, default="lift+icl",
                   help="icl: truncated document in context, no training; lift: adapted model, no document in "
                        "context; lift+icl: both (the paper's main setting; default); rag / lift+rag: BM25-best "
                        "chunks of the document in context instead of its head and tail")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default: 64)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per answer (question, answer, mode, adapter, trained, seconds)")
    add_common(p)

    from .eval.cli import register as register_eval

    register_eval(verbs)
    from .bench.cli import register as register_bench

    register_bench(verbs)
    return parser


def read_questions(args) -> list[str]:
    if args.question is not None:
        if not args.question.strip():
            raise LiftError("--question is empty; ask something")
        return [args.question]
    path = Path(args.questions_file)
    if not path.is_file():
        raise LiftError(f"--questions-file: no such file: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise LiftError(f"--questions-file: {path} is not UTF-8 text") from None
    questions = [line.strip() for line in lines if line.strip()]
    if not questions:
        raise LiftError(f"--questions-file: {path} holds no questions (one per line)")
    return questions


def model_spec(args) -> str | None:
    if args.base is not None and args.model is not None:
        raise LiftError("give --model or --base, not both (--base is an SFT model directory)")
    if args.base is not None:
        from .sft import SFT_METADATA

        if not (Path(args.base) / SFT_METADATA).is_file():
            raise LiftError(f"--base: {args.base} is not a model written by `liftlm sft`")
        return args.base
    return args.model


def run_sft(args) -> int:
    from .sft import run_sft as sft

    out = sft(args.corpus, args.out, model_spec(args), config_from_args(args), args.max_doc_tokens,
              progress=not args.quiet)
    print(out)
    return 0


def run_internalize(args) -> int:
    from .recipe import Lift, read_document_file

    config = config_from_args(args)
    text = read_document_file(args.document)
    lift = Lift(model_spec(args), config, store=args.store, device=args.device, progress=not args.quiet,
                qa_file=args.qa_file)
    done = lift.internalize(text, force=args.force)
    training = done.metadata.get("training", {})
    if done.trained:
        print(f"liftlm: trained on {done.metadata['document_tokens']} tokens ({done.metadata['samples']} samples) "
              f"in {training.get('seconds', 0):.1f} s, {training.get('tokens_per_second', 0):.0f} tokens/s",
              file=sys.stderr)
    else:
        print("liftlm: reused the stored adapter (no training)", file=sys.stderr)
    print(done.adapter)
    return 0


def run_ask(args) -> int:
    from .adapters import read_metadata
    from .recipe import Lift, read_document_file

    if args.max_new_tokens < 1:
        raise LiftError(f"--max-new-tokens must be at least 1 (got {args.max_new_tokens})")
    questions = read_questions(args)
    config = config_from_args(args)
    spec = model_spec(args)
    if args.adapter is not None:
        given = [_flag(f.name) for f in dataclasses.fields(LiftConfig) if getattr(args, f.name) is not None]
        if given or args.qa_file or args.force:
            extra = given + (["--qa-file"] if args.qa_file else []) + (["--force"] if args.force else [])
            raise LiftError(f"--adapter carries its own training settings; drop {', '.join(extra)}")
        meta = read_metadata(args.adapter)  # check before loading anything
        config = LiftConfig.from_dict(meta["settings"])
        if spec is None:
            spec = meta.get("model_spec")
        text = None
    else:
        text = read_document_file(args.document)
    lift = Lift(spec, config, store=args.store, device=args.device, progress=not args.quiet,
                qa_file=args.qa_file if args.adapter is None else None)
    for question in questions:  # every question must fit before any training is spent
        lift.check_question(question, args.mode, args.max_new_tokens)
    if args.adapter is not None:
        lift.use_adapter(args.adapter)
    elif args.mode in ("icl", "rag"):
        lift.read(text)
    else:
        done = lift.internalize(text, force=args.force)
        if not done.trained and not args.quiet:
            print(f"liftlm: reusing stored adapter {done.adapter} (no training)", file=sys.stderr)
    for question in questions:
        answer = lift.ask(question, mode=args.mode, max_new_tokens=args.max_new_tokens)
        if args.json:
            print(json.dumps(answer.to_dict(), ensure_ascii=False), flush=True)
        elif len(questions) > 1:
            print(f"Q: {answer.question}\nA: {answer.answer}\n", flush=True)
        else:
            print(answer.answer, flush=True)
    return 0


def quiet_libraries() -> None:
    """Keep stderr for liftlm's own messages and progress: no library progress bars or advice."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_libraries()
    try:
        if args.verb == "eval":
            from .eval.cli import run as run_eval

            return run_eval(args)
        if args.verb == "bench":
            from .bench.cli import run as run_bench

            return run_bench(args)
        return {"internalize": run_internalize, "ask": run_ask, "sft": run_sft}[args.verb](args)
    except LiftError as e:
        print(f"liftlm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("liftlm: interrupted (nothing half-written was kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
