"""``liftlm bench scaling|throughput|overlap-vs-paper|serve``: the benchmark verbs. ``register(subparsers)`` adds them to the ``liftlm``
parser; ``run(args)`` runs the chosen one and returns the exit status (``LiftError`` is left to the caller,
which prints it as one line and exits with status 2)."""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from ..config import LiftConfig
from ..errors import LiftError
from ..options import add_config_flags, config_from_args, flag_name, given_config, quiet_libraries
from .common import RANDOM_CONFIGS, parse_length, parse_lengths


def _model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="hub id, local model directory or .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)")
    g.add_argument("--random-weights", action="store_true",
                   help="time random weights of the architecture named by --config instead of a real model "
                        "(nothing is downloaded; the tokenizer is --tokenizer's)")
    g.add_argument("--config", default=None, metavar="NAME", choices=sorted(RANDOM_CONFIGS),
                   help=f"architecture for --random-weights: {', '.join(RANDOM_CONFIGS)}")
    g.add_argument("--tokenizer", default=None,
                   help="with --random-weights: the model whose tokenizer to use (default: --model, i.e. the "
                        "embedded one), or 'synthetic' for a BPE trained on the haystack")
    g.add_argument("--force", action="store_true",
                   help="allow a random-weight model of more than 1.5B parameters on a CPU")
    g.add_argument("--haystack", default=None, metavar="DIR",
                   help="folder of .txt files whose text is the document (default: the Paul Graham essays of "
                        "the shared data beside the repository)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice, one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` verb (sub-verbs ``scaling``, ``throughput``, ``overlap-vs-paper``, ``serve``, ``cost``)
    to ``subparsers``."""
    bench = subparsers.add_parser("bench", help="benchmarks: time and memory against length; trainer throughput")
    verbs = bench.add_subparsers(dest="bench_verb", required=True, metavar="BENCH")

    s = verbs.add_parser(
        "scaling", help="wall time and peak memory of LIFT and ICL against the document length",
        description="Time and peak memory of LIFT (one epoch, default settings) and of ICL (prefill + a short "
                    "answer) on the first N tokens of the haystack, each point in a fresh process; linear and "
                    "quadratic fits, crossover, plot and tables in --out. Lengths: k = 1000 tokens.")
    s.add_argument("--lengths", default="1k,2k,4k,8k,16k",
                   help="document lengths in tokens, comma-separated; k = 1000 (default: 1k,2k,4k,8k,16k)")
    s.add_argument("--methods", default="lift,icl", help="lift, icl or both (default: lift,icl)")
    s.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: liftlm-bench/scaling-<date>-<time>)")
    s.add_argument("--icl-beyond-window", action="store_true",
                   help="run ICL past the model's window anyway (out of memory is recorded as 'oom'); default: "
                        "record such lengths as 'over_window'")
    s.add_argument("--answer-tokens", type=int, default=16, help="tokens ICL generates after the prefill (16)")
    s.add_argument("--question", default=None, help="the ICL question (default: the NIAH question)")
    s.add_argument("--point-timeout", type=float, default=3600.0, metavar="S",
                   help="give up on one point after S seconds (status 'timeout'; default 3600)")
    s.add_argument("--in-process", action="store_true",
                   help="measure in this process instead of a fresh one per point (quick checks only: peak "
                        "memory is then not per point)")
    s.add_argument("--replot", default=None, metavar="DIR",
                   help="measure nothing: redo summary and plot from DIR/results.json")
    s.add_argument("--strict", action="store_true",
                   help="exit with status 1 when LIFT's peak memory grows more than 1.2x over the lengths")
    _model_flags(s)
    add_config_flags(s)

    t = verbs.add_parser(
        "throughput", help="tokens/s of liftlm's trainer vs a bare forward+backward loop, and vs the ceiling",
        description="Train the same LoRA adapter on the same samples with liftlm's trainer and with a bare "
                    "forward+backward loop; print both tokens/s, their ratio (target >= 0.9), a matmul probe of "
                    "this machine and the fraction of the FLOP ceiling reached.")
    t.add_argument("--tokens", default="2k", help="document length in tokens, k = 1000 (default: 2k)")
    t.add_argument("--samples", type=int, default=0, help="use only the first N samples (default: all)")
    t.add_argument("--repeats", type=int, default=1,
                   help="timed runs of each, alternating the order; medians compared (default: 1)")
    t.add_argument("--warmup", type=int, default=2, help="samples each runs untimed first (default: 2)")
    t.add_argument("--probe-size", type=int, default=None,
                   help="matrix size of the matmul probe (default: 1024 on CPU, 4096 on GPU)")
    t.add_argument("--json-out", default=None, metavar="FILE", help="also write the full report as JSON")
    t.add_argument("--strict", action="store_true", help="exit with status 1 when the ratio is below 0.9")
    _model_flags(t)
    add_config_flags(t)

    o = verbs.add_parser(
        "overlap-vs-paper", help="paper mode vs the overlap-aware modes: time to reach the paper's document NLL",
        description="Train each mode on the first N haystack tokens (embedded model), measuring the document's "
                    "NLL after every epoch; rounds rotate the mode order; medians, speed-ups and a plot in --out.")
    o.add_argument("--tokens", type=int, default=2000, help="document length in tokens (default: 2000)")
    o.add_argument("--haystack", default=None, metavar="DIR",
                   help="folder of .txt files whose text is the document (default: the Paul Graham essays)")
    o.add_argument("--modes", default="paper:2,overlap:4,recurrent:4",
                   help="MODE:EPOCHS, comma-separated; paper must be one (default: paper:2,overlap:4,recurrent:4)")
    o.add_argument("--rounds", type=int, default=3, help="rounds, each training every mode once (default: 3)")
    o.add_argument("--out", default="experiments/results/overlap-vs-paper", metavar="DIR", help="output folder")
    o.add_argument("--replot", default=None, metavar="DIR",
                   help="measure nothing: redo summary, report and plot from DIR/results.json")
    o.add_argument("--quiet", action="store_true", help="no progress lines")

    v = verbs.add_parser(
        "serve", help="answers/s and p50/p95 latency of `liftlm serve`: one adapter vs round-robin over several",
        description="Start `liftlm serve` on 127.0.0.1, train --documents documents (slices of the example "
                    "document), then time --questions questions one at a time: the base model (icl), one "
                    "adapter, and round-robin over all documents, once per LRU bound (--max-loaded-adapters). "
                    "LIFT settings default to --epochs 1 --window 512.")
    v.add_argument("--model", default=None, help="hub id, local model directory or .gguf file (default: embedded)")
    v.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)")
    v.add_argument("--out", default=None, metavar="DIR",
                   help="output folder: results.json, summary.md and the server's log "
                        "(default: liftlm-bench/serve-<date>-<time>)")
    v.add_argument("--documents", type=int, default=8, help="documents, i.e. adapters (default: 8)")
    v.add_argument("--doc-words", type=int, default=300, help="words per document (default: 300)")
    v.add_argument("--questions", type=int, default=40, help="timed questions per scenario (default: 40)")
    v.add_argument("--warmup", type=int, default=2, help="untimed questions before each scenario (default: 2)")
    v.add_argument("--max-tokens", type=int, default=16, help="answer length limit (default: 16)")
    v.add_argument("--mode", default="lift+icl", choices=("lift", "lift+icl", "lift+rag"),
                   help="mode of the adapter scenarios (default: lift+icl)")
    v.add_argument("--lru-bounds", default="8,4",
                   help="the server's --max-loaded-adapters, one server per value, comma-separated (default: 8,4)")
    v.add_argument("--url", default=None,
                   help="measure a running `liftlm serve` at this URL instead of starting one (its LRU bound "
                        "and LIFT defaults are its own; the documents are posted to it)")
    v.add_argument("--quiet", action="store_true", help="no progress lines")
    add_config_flags(v)
    _register_cost(verbs)
    return bench


def _register_cost(verbs) -> None:
    from .cost import add_arguments

    c = verbs.add_parser(
        "cost", help="a LIFT recipe's teacher and student timed apart, against the ceiling and other recipes",
        description="Time the teacher (distillation items, made afresh) and the student (training on them, as "
                    "`liftlm internalize` does) of each --recipe on one document, in one run; report tokens/s, "
                    "seconds per item, the fraction of the matmul ceiling reached, seconds per document token and "
                    "the speed-up over the first recipe. The command's LIFT flags apply to every recipe.")
    add_arguments(c)
    _model_flags(c)
    add_config_flags(c)


def _cost_lengths(spec: str) -> int | list[int]:
    """``--tokens`` of ``bench cost``: one length (``2k``), or a comma-separated list (``2k,4k,8k``), the curve."""
    try:
        lengths = parse_lengths(spec)
    except LiftError as e:
        raise LiftError(str(e).replace("--lengths", "--tokens", 1)) from None
    return lengths if "," in spec else lengths[0]


def run_cost_cli(args) -> int:
    from .cost import CostOptions, parse_recipe, run_cost
    from .cost_report import report_markdown, write_report

    base = config_from_args(args)
    recipes = [parse_recipe(spec, base) for spec in args.recipe or ["default="]]
    report = run_cost(CostOptions(
        recipes=recipes, model=args.model, device=args.device, document=args.document,
        tokens=_cost_lengths(args.tokens), facts=args.facts, data_seed=args.data_seed, haystack=args.haystack,
        random_config=_random_config(args), tokenizer=args.tokenizer, items=args.items, save_teacher=args.save_teacher,
        replay_teacher=args.replay_teacher, probe_size=args.probe_size,
        threads=args.threads, progress=not args.quiet, out=args.out,
        extra={"command": "liftlm bench " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("cost"):])
               if "cost" in sys.argv else "liftlm bench cost"}))
    print(report_markdown(report))
    if args.out:
        paths = write_report(report, Path(args.out))
        print("wrote " + ", ".join(str(x) for x in paths))
    return 0


def bench_config(args) -> LiftConfig:
    """The LIFT settings from the flags; one epoch unless --epochs says otherwise, the paper's objective."""
    config = config_from_args(args, epochs=1, objective="ct")
    if config.objective != "ct":
        raise LiftError("--objective: the benchmarks time LIFT's segment training (--objective ct)")
    if config.qa_pairs:
        raise LiftError("--qa-pairs: the benchmarks time LIFT's segment training; auxiliary QA is not part of it")
    return config


def _random_config(args) -> str | None:
    if args.random_weights and not args.config:
        raise LiftError(f"--random-weights needs --config NAME ({', '.join(RANDOM_CONFIGS)})")
    if args.config and not args.random_weights:
        raise LiftError("--config names an architecture for --random-weights; pass both")
    if args.tokenizer and not args.random_weights:
        raise LiftError("--tokenizer is for --random-weights (a real --model brings its own)")
    return args.config if args.random_weights else None


def run_scaling_cli(args) -> int:
    from .scaling import ScalingOptions, replot, run_scaling

    if args.replot:
        summary = replot(Path(args.replot))
        out = Path(args.replot)
    else:
        out = Path(args.out or f"liftlm-bench/scaling-{time.strftime('%Y%m%d-%H%M%S')}")
        opts = ScalingOptions(
            lengths=parse_lengths(args.lengths),
            methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
            model=args.model, device=args.device, out=out, haystack=args.haystack, config=bench_config(args),
            random_config=_random_config(args), tokenizer=args.tokenizer, force=args.force,
            icl_beyond_window=args.icl_beyond_window, answer_tokens=args.answer_tokens, question=args.question,
            point_timeout=args.point_timeout, threads=args.threads, in_process=args.in_process, progress=not args.quiet)
        summary = run_scaling(opts)
    from .analysis import markdown

    print(markdown(summary))
    print(f"wrote {out / 'results.json'}, {out / 'summary.json'}, {out / 'summary.md'}, {out / 'scaling.png'}")
    memory = summary.get("lift_memory")
    return 1 if args.strict and memory is not None and not memory["ok"] else 0


def run_throughput_cli(args) -> int:
    from .throughput import ThroughputOptions, report_text, run_throughput, write_report

    opts = ThroughputOptions(
        model=args.model, device=args.device, tokens=parse_length(args.tokens), samples=args.samples,
        haystack=args.haystack, config=bench_config(args), random_config=_random_config(args),
        tokenizer=args.tokenizer, force=args.force, repeats=args.repeats, warmup=args.warmup,
        probe_size=args.probe_size, threads=args.threads, progress=not args.quiet)
    report = run_throughput(opts)
    print(report_text(report))
    if args.json_out:
        write_report(report, args.json_out)
        print(f"wrote {args.json_out}")
    return 1 if args.strict and not report["ratio_ok"] else 0


def run_overlap_cli(args) -> int:
    from .overlap_vs_paper import OverlapOptions, replot, run_overlap_vs_paper

    if args.replot:
        out = Path(args.replot)
        replot(out)
    else:
        out = Path(args.out)
        run_overlap_vs_paper(OverlapOptions(tokens=args.tokens, haystack=args.haystack, modes=args.modes,
                                            rounds=args.rounds, out=out, progress=not args.quiet))
    print((out / "summary.md").read_text())
    print(f"wrote {out / 'results.json'}, {out / 'summary.json'}, {out / 'summary.md'}, {out / 'curves.png'}")
    return 0


def run_serve_cli(args) -> int:
    from .serve import ServeBenchOptions, markdown, run_serve_bench, write_report

    given = {"epochs": 1, "window": 512, "objective": "ct", **given_config(args)}
    LiftConfig(**given)  # one clear error for bad settings before a server starts
    flags = []
    for name, value in given.items():
        flag = flag_name(name)
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{flag[2:]}")
        else:
            flags += [flag, str(value)]
    try:
        bounds = [int(x) for x in args.lru_bounds.split(",") if x.strip()]
    except ValueError:
        raise LiftError(f"--lru-bounds: {args.lru_bounds!r} is not a comma-separated list of numbers") from None
    out = Path(args.out or f"liftlm-bench/serve-{time.strftime('%Y%m%d-%H%M%S')}")
    opts = ServeBenchOptions(model=args.model, device=args.device, out=out, documents=args.documents,
                             doc_words=args.doc_words, questions=args.questions, warmup=args.warmup,
                             max_tokens=args.max_tokens, mode=args.mode, lru_bounds=bounds, lift_flags=flags,
                             url=args.url,
                             progress=not args.quiet)
    report = run_serve_bench(opts)
    write_report(report, out, "liftlm bench " + " ".join(sys.argv[sys.argv.index("serve"):])
                 if "serve" in sys.argv else "liftlm bench serve")
    print(markdown(report))
    print(f"wrote {out / 'results.json'}, {out / 'summary.md'}")
    return 0


def run(args) -> int:
    """Run ``liftlm bench <scaling|throughput|overlap-vs-paper|serve>``; returns the exit status."""
    return {"scaling": run_scaling_cli, "throughput": run_throughput_cli,
            "overlap-vs-paper": run_overlap_cli, "serve": run_serve_cli, "cost": run_cost_cli}[args.bench_verb](args)


def main(argv: list[str] | None = None) -> int:
    """``python -m liftlm.bench ...``: the same verbs without going through ``liftlm``."""
    parser = argparse.ArgumentParser(prog="python -m liftlm.bench")
    register(parser.add_subparsers(dest="verb", required=True, metavar="VERB"))
    args = parser.parse_args(["bench", *(argv if argv is not None else sys.argv[1:])])
    quiet_libraries()
    try:
        return run(args)
    except LiftError as e:
        print(f"liftlm: error: {e}", file=sys.stderr)
        return 2
