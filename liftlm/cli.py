"""The ``liftlm`` command. Verbs mirror the package:

    liftlm internalize --document DOC            train (or reuse) the adapter for DOC, print its path
    liftlm ask --document DOC --question Q       answer Q about DOC (mode lift+icl by default)
    liftlm ask --adapter DIR --question Q        answer with a stored adapter

Every LIFT setting is a flag generated from ``LiftConfig`` (one source of truth). Problems with the input
print one line on stderr and exit with status 2, before anything is written.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import warnings
from dataclasses import replace

from .bench.cli import register as register_bench
from .config import ANSWER_FIELDS, LiftConfig
from .errors import LiftError
from .eval.cli import register as register_eval
from .options import (
    MODES,
    add_common,
    config_from_args,
    flag_name,
    given_config_flags,
    model_spec,
    quiet_libraries,
    read_questions,
)
from .serve.cli import register as register_serve
from .version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liftlm", description="LIFT: fine-tune a language model on a long document, then ask it questions.")
    parser.add_argument("--version", action="version", version=f"liftlm {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("internalize", help="train the adapter for a document (or many) and print where it is "
                                             "stored")
    src = p.add_argument_group("document").add_mutually_exclusive_group(required=True)
    src.add_argument("--document", help="UTF-8 text file to internalize")
    src.add_argument("--documents", help="many documents: a folder of text files or a JSONL file of {\"id\", "
                                         "\"text\"} (see the batch options)")
    from .batch import add_batch_flags

    add_batch_flags(p)
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
    p.add_argument("--mode", default="lift+icl", metavar="MODE[,MODE...]",
                   help="icl: truncated document in context, no training; lift: adapted model, no document in "
                        "context; lift+icl: both (the paper's main setting; default); rag / lift+rag: BM25-best "
                        "chunks of the document in context instead of its head and tail. Several, comma-separated "
                        "(e.g. icl,lift+icl), answer each question in each mode, side by side")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default: 64)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per answer (question, answer, mode, adapter, trained, seconds)")
    add_common(p)

    register_eval(verbs)
    register_bench(verbs)
    register_serve(verbs)
    return parser


def run_sft(args) -> int:
    from .sft import run_sft as sft

    if args.max_doc_tokens is not None and args.max_doc_tokens < 1:
        raise LiftError(f"--max-doc-tokens must be at least 1 (got {args.max_doc_tokens})")
    out = sft(args.corpus, args.out, model_spec(args), config_from_args(args, objective="ct"), args.max_doc_tokens,
              progress=not args.quiet, device=args.device)
    print(out)
    return 0


def trained_samples(metadata: dict) -> str:
    """What an adapter was trained on, for the line ``internalize`` prints: its segment samples, the distillation
    student's samples (of how many teacher items) and its auxiliary QA pairs, each where there were any."""
    distill = metadata.get("distill") or {}
    parts = [f"{metadata.get('samples', 0):,} segment samples"] if metadata.get("samples") else []
    if distill.get("student_samples"):
        parts.append(f"{distill['student_samples']:,} student samples of {distill.get('items', 0):,} teacher items")
    if (metadata.get("qa") or {}).get("pairs"):
        parts.append(f"{metadata['qa']['pairs']:,} QA pairs")
    return ", ".join(parts) or "0 samples"


def run_internalize(args) -> int:
    from .documents import read_document_file
    from .recipe import Lift

    config = config_from_args(args)
    if args.documents is not None:
        from .batch import run_cli

        return run_cli(args, config, model_spec(args))
    from .batch import reject_batch_flags

    reject_batch_flags(args)
    text = read_document_file(args.document)
    lift = Lift(model_spec(args), config, store=args.store, device=args.device, progress=not args.quiet,
                qa_file=args.qa_file)
    done = lift.internalize(text, force=args.force)
    training = done.metadata.get("training", {})
    if done.trained:
        how = [f"resumed from its checkpoint at sample {done.resumed_at:,}, after {done.resumed_epoch} epoch(s)"] \
            if done.resumed_at is not None else []
        how += ["replaced the stored adapter"] if done.replaced else []
        print(f"liftlm: trained on {done.metadata['document_tokens']} tokens ({trained_samples(done.metadata)}) "
              f"in {training.get('seconds', 0):.1f} s, {training.get('tokens_per_second', 0):.0f} tokens/s"
              + (f", peak memory {training['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in training else "")
              + (f" ({'; '.join(how)})" if how else ""), file=sys.stderr)
    else:
        print("liftlm: reused the stored adapter (no training)", file=sys.stderr)
    print(done.adapter)
    return 0


def run_ask(args) -> int:
    from .adapters import read_metadata
    from .documents import read_document_file
    from .recipe import Lift

    if args.max_new_tokens < 1:
        raise LiftError(f"--max-new-tokens must be at least 1 (got {args.max_new_tokens})")
    questions = read_questions(args)
    modes = list(dict.fromkeys(m.strip() for m in args.mode.split(",") if m.strip()))
    unknown = [m for m in modes if m not in MODES]
    if not modes or unknown:
        raise LiftError(f"--mode must be one or more of {', '.join(MODES)}, comma-separated (got {args.mode!r})")
    config = config_from_args(args)
    spec = model_spec(args)
    if args.adapter is not None:  # its training settings are its own; the answer-time ones are the flags'
        given = [f for f in given_config_flags(args) if f not in {flag_name(n) for n in ANSWER_FIELDS}]
        if given or args.qa_file or args.force:
            extra = given + (["--qa-file"] if args.qa_file else []) + (["--force"] if args.force else [])
            raise LiftError(f"--adapter carries its own training settings; drop {', '.join(extra)}")
        meta = read_metadata(args.adapter)  # check before loading anything
        with warnings.catch_warnings(record=True) as caught:  # settings of a newer liftlm: one line each
            warnings.simplefilter("always")
            config = replace(LiftConfig.from_dict(meta["settings"]),
                             **{name: getattr(config, name) for name in ANSWER_FIELDS})
        for w in caught:
            print(f"liftlm: warning: {w.message}", file=sys.stderr)
        if spec is None:
            spec = meta.get("model_spec")
        text = None
    else:
        text = read_document_file(args.document)
    lift = Lift(spec, config, store=args.store, device=args.device, progress=not args.quiet,
                qa_file=args.qa_file if args.adapter is None else None)
    for question in questions:  # every question must fit before any training is spent
        for mode in modes:
            lift.check_question(question, mode, args.max_new_tokens)
    if args.adapter is not None:
        lift.use_adapter(args.adapter)
    elif all(mode in ("icl", "rag") for mode in modes):
        lift.read(text)
    else:
        done = lift.internalize(text, force=args.force)
        if not done.trained and not args.quiet:
            print(f"liftlm: reusing stored adapter {done.adapter} (no training)", file=sys.stderr)
    width = max(len(m) for m in modes)
    for question in questions:
        answers = [lift.ask(question, mode=mode, max_new_tokens=args.max_new_tokens) for mode in modes]
        if args.json:
            for answer in answers:
                print(json.dumps(answer.to_dict(), ensure_ascii=False), flush=True)
            continue
        if len(questions) > 1:
            print(f"Q: {answers[0].question}", flush=True)
        for answer in answers:
            label = "A: " if len(modes) == 1 and len(questions) > 1 else f"{answer.mode:>{width}}: " if len(modes) > 1 else ""
            print(f"{label}{answer.answer}", flush=True)
        if len(questions) > 1:
            print(flush=True)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler's or a container's stop), handled as Ctrl-C is: the training's
    checkpoint and the eval's report are written on the way out; exit 143 instead of 130."""


def _terminate(signum, _frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_libraries()
    if args.verb != "serve":  # (the server stops on SIGTERM through uvicorn's own handler)
        signal.signal(signal.SIGTERM, _terminate)
    try:
        if getattr(args, "device", None) is not None:  # every verb that takes --device: refused before any work
            from .models import check_device

            check_device(args.device)
        if args.verb == "eval":
            from .eval.cli import run as run_eval

            return run_eval(args)
        if args.verb == "bench":
            from .bench.cli import run as run_bench

            return run_bench(args)
        if args.verb == "serve":
            from .serve.cli import run as run_serve

            return run_serve(args)
        return {"internalize": run_internalize, "ask": run_ask, "sft": run_sft}[args.verb](args)
    except LiftError as e:
        print(f"liftlm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("liftlm: interrupted (nothing half-written was kept)", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
