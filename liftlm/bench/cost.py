"""Cost benchmark of a LIFT recipe: the teacher and the student timed apart, on one document and model, or on
documents of several lengths (``--tokens 2k,4k,8k``: the cost curve, ``liftlm.bench.cost_curve``).

A recipe is a set of ``liftlm internalize`` flags (``NAME=FLAGS``); the first recipe is the reference, and every
other one is reported as a ratio of it, all measured in one run on one machine. For each recipe:

* teacher — ``liftlm.distill.DistillSource.items`` with the run's own cache, empty at first: the base model
  answers the recipe's prompts with a chunk in context (none for ``--objective ct``). Its tokens are counted by
  a forward hook on the model (every token the teacher runs, padding included: what it pays for). A recipe that
  changes only the student (views, epochs, learning rate, kinds, LoRA) gets the same items as an earlier
  recipe: it reuses them, and that recipe's measured teacher time counts in its total (``shared_with``);
* student — ``liftlm.train.train_on_documents`` on those items (and the segments, where the objective trains
  them), as ``liftlm internalize`` runs it; its tokens come from the trainer's result (trained forward and
  backward; run forward only for cached prefixes).

Against the machine's ceiling (``liftlm.bench.throughput``'s FLOP count): a token costs about 2·N FLOPs forward
and 4·N forward and backward with the base frozen, where N is the weights used in matrix products per token
(attention is left out, so short samples are counted fairly and long ones a little low). A matmul probe gives
this machine's FLOP/s; each phase's fraction of it says how much of the time goes to compute and how much to
everything else (Python round trips, small matrices, padding).

The headline numbers are seconds per document token, end to end, and trained tokens per document token. With
several lengths every recipe runs on every length (one row each, with its ``document_tokens``; ratios against the
first recipe at the same length), and the report adds the curve: seconds per token against length, and a line
through the totals extrapolated to a 100k-token document.

A long run resumes: with ``--out`` every finished row (a length and a recipe) is appended to
``OUT/.cost-work/rows.jsonl``, beside the run's item cache, and a run with the same settings keeps those rows and
measures only the others (a row cut short is measured again from its start, teacher included). Each row records
when it was measured and the matmul probe of its process. The work folder goes once the report is written.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import LiftConfig
from ..errors import LiftError
from . import cost_curve
from .common import (
    format_length,
    haystack_ids,
    load_bench_model,
    matmul_probe,
    read_haystack,
    set_threads,
    synchronize,
)
from .cost_work import WORK_DIR, Work, row_key, teacher_cache
from .saved_teacher import Given, given_items, replayed_teacher, save_teacher


@dataclass
class Recipe:
    name: str
    config: LiftConfig
    flags: str = ""  # the internalize flags it was given as


@dataclass
class CostOptions:
    recipes: list[Recipe]
    model: str | None = None
    device: str | None = None
    document: str | None = None  # a text file; default: the first ``tokens`` tokens of the haystack
    tokens: int | list[int] = 2048  # a list: one document per length (the cost curve)
    facts: int = 0  # > 0: the facts benchmark's document (this many made-up facts in the haystack's first tokens)
    data_seed: int = 0  # of the facts document, as ``liftlm eval --benchmark facts --data-seed``
    haystack: str | None = None
    random_config: str | None = None
    tokenizer: str | None = None
    items: str | None = None  # the teacher's items from this file (a ``distill.jsonl``) instead of made
    save_teacher: str | None = None  # a folder: the first teacher's items and trace, for ``replay_teacher``
    replay_teacher: str | None = None  # a folder of ``save_teacher``'s: the teacher replayed, the student on its items
    probe_size: int | None = None
    threads: int | None = None
    progress: bool = True
    out: str | None = None  # the report's folder: finished rows are kept in its work folder, and a rerun resumes
    extra: dict = field(default_factory=dict)  # recorded in the report as given (e.g. the command line)


def parse_recipe(spec: str, base: LiftConfig) -> Recipe:
    """``NAME=FLAGS`` (e.g. ``one-view=--distill-views lift+icl --epochs 1``) → a ``Recipe``: the flags, read as
    ``liftlm internalize`` reads them, over the settings ``base``."""
    from ..options import add_config_flags, given_config

    name, sep, flags = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise LiftError(f"--recipe: expected NAME=FLAGS, e.g. 'one-view=--distill-views lift+icl' (got {spec!r})")
    parser = argparse.ArgumentParser(prog=f"--recipe {name}", add_help=False, exit_on_error=False)
    add_config_flags(parser)
    try:
        args, rest = parser.parse_known_args(shlex.split(flags))
    except (argparse.ArgumentError, ValueError) as e:
        raise LiftError(f"--recipe {name}: {e}") from None
    if rest:
        raise LiftError(f"--recipe {name}: not a LIFT setting: {' '.join(rest)}")
    return Recipe(name, LiftConfig(**{**base.to_dict(), **given_config(args)}), flags.strip())


class ForwardTokens:
    """Counts the tokens every forward call of ``model`` runs (``input_ids`` elements: batch × length)."""

    def __init__(self, model):
        self.count = 0
        self.calls = 0  # forward calls: on a GPU, where a call costs about the same at any width, the teacher's cost
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            self.count += ids.numel()
            self.calls += 1

    def close(self) -> None:
        self._handle.remove()


def _lengths(opts: CostOptions) -> list[int]:
    lengths = sorted(set(opts.tokens)) if isinstance(opts.tokens, list) else [opts.tokens]
    if not lengths or min(lengths) < 1:
        raise LiftError(f"--tokens: expected positive lengths (got {opts.tokens!r})")
    if opts.document is not None and len(lengths) > 1:
        raise LiftError("--document: one document has one length; several --tokens lengths cut the haystack "
                        "(leave --document out)")
    return lengths


def _document(opts: CostOptions, tokenizer, tokens: int) -> tuple[str, list[int]]:
    if opts.document is not None:
        path = Path(opts.document)
        if not path.is_file():
            raise LiftError(f"--document: no such file: {opts.document}")
        text = path.read_text(encoding="utf-8")
        ids = tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise LiftError(f"--document: {opts.document} has no tokens")
        return text, ids
    haystack = read_haystack(opts.haystack)
    if opts.facts > 0:  # the very document `liftlm eval --benchmark facts` trains on
        from ..eval.facts import make_facts_document

        try:
            text = make_facts_document(haystack, tokenizer, tokens, opts.facts, seed=opts.data_seed).text
        except ValueError as e:
            raise LiftError(f"--facts: {e}") from None
        return text, tokenizer.encode(text, add_special_tokens=False)
    ids, _ = haystack_ids(tokenizer, haystack, tokens)
    return tokenizer.decode(ids), ids


def _phase(seconds: float, tokens: int, flops_per_token: float, probe_gflops: float, items: int) -> dict:
    gflops = tokens * flops_per_token / seconds / 1e9 if seconds > 0 else 0.0
    return {"seconds": round(seconds, 2), "tokens": tokens, "items": items,
            "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else 0.0,
            "seconds_per_item": round(seconds / items, 3) if items else None,
            "gflops": round(gflops, 1), "ceiling_fraction": round(gflops / probe_gflops, 3) if probe_gflops else None}


def measure(loaded, recipe: Recipe, text: str, doc_ids: list[int], n_weights: int, probe_gflops: float,
            progress: bool, cache: Path, teachers: dict, given: Given | None = None, save: Path | None = None) -> dict:
    """Time one recipe's teacher and student on the document; the model is left without an adapter. ``cache``:
    the run's item cache, empty at first; a recipe whose teacher settings an earlier recipe of the run had reuses
    its items and its measured teacher (``teachers``: cache file → (recipe name, teacher phase)). ``given``: a
    file's items (``--items``) instead of the teacher's, which then does not count, or with a trace
    (``--replay-teacher``) is replayed in the recipe's shape and timed. ``save``: where this recipe's teacher
    leaves its items and trace (``--save-teacher``)."""
    from ..context import PromptBuilder
    from ..distill import DistillSource
    from ..distill.teacher import document_fact_sentences, replay, teacher_shape
    from ..models import resolve_window
    from ..segment import segment_spans
    from ..train import detach_adapter, train_on_documents

    cfg = recipe.config
    model, tokenizer = loaded.model, loaded.tokenizer
    prompts = PromptBuilder(tokenizer, resolve_window(loaded, cfg.window))
    # a teacher of another width runs afresh (its own cache): its items are the same, its calls are not
    source = DistillSource(cfg, loaded.model_id, teacher_cache(cache, cfg), progress)
    shared = teachers.get(source.cache_path(text)) if cfg.objective != "ct" and given is None else None
    if save is not None and shared is None:
        source.trace = []
    counter = ForwardTokens(model)
    try:
        synchronize(loaded.device)
        start = time.perf_counter()
        if given is not None:  # (the kinds of --distill-kinds, as the teacher's source gives them)
            items = [it for it in given.items if it.kind in cfg.kinds]
            if not items:
                raise LiftError(f"--items: none of {given.path}'s items is of a kind in --distill-kinds "
                                f"{cfg.distill_kinds}")
            report = {"items": len(items), "used": "file", "file": given.path}
            if given.trace is not None:
                t = given.trace
                shape = teacher_shape(model, cfg.teacher_batch, t["segment_length"] + len(prompts.chat.before),
                                      t["answer_tokens"])
                report |= {"teacher_shape": asdict(shape),
                           "replayed": replay(model, tokenizer, prompts.chat, doc_ids, t["blocks"],
                                              t["write_tokens"], t["answer_tokens"], shape)}
        else:
            items, report = source.items(text, doc_ids, model, tokenizer, prompts.chat)
        synchronize(loaded.device)
        teacher_s = time.perf_counter() - start
    finally:
        counter.close()
    start = time.perf_counter()
    trained = train_on_documents(model, [(doc_ids, [], items)], cfg, prompts, keep_base=True, progress=progress,
                                 desc=f"student ({recipe.name})")
    synchronize(loaded.device)
    student_s = time.perf_counter() - start
    detach_adapter(trained.model)
    result = trained.result
    if shared is not None:  # the same items as an earlier recipe's: its teacher is this recipe's too
        teacher = {**shared[1], "shared_with": shared[0]}
    elif given is not None and given.trace is not None:  # replayed: its calls, in this recipe's shape, timed
        teacher = _phase(teacher_s, counter.count, 2 * n_weights, probe_gflops, report["replayed"]) | {
            "calls": counter.calls, "shape": report["teacher_shape"], "replayed": given.path}
    elif given is not None:  # not run: the student's items were read from a file
        teacher = _phase(0.0, 0, 0, probe_gflops, 0) | {"given": given.path}
    else:
        asks = report.get("made", report.get("items", len(items))) + report.get("not_grounded", 0) \
            + report.get("sentences", 0)
        teacher = _phase(teacher_s, counter.count, 2 * n_weights, probe_gflops, asks) | {"calls": counter.calls}
        teacher |= {k.removeprefix("teacher_"): v for k, v in report.items() if k.startswith("teacher_peak_memory")}
        if "teacher_shape" in report:
            teacher["shape"] = report["teacher_shape"]
        if cfg.objective != "ct":
            teachers[source.cache_path(text)] = (recipe.name, teacher)
        if source.trace is not None:
            save_teacher(save, source, text, doc_ids, source.trace, cfg)
    # a trained token: the forward pass (2·W) and the backward pass down to the lowest adapted layer (2·W × share)
    per_token = (2 + 2 * cfg.backward_share) * n_weights
    student = _phase(student_s, result.tokens, per_token, probe_gflops, trained.samples + trained.qa_samples)
    # cached prefixes run forward only: their FLOPs count, not their tokens
    student["prefix_tokens"] = result.prefix_tokens
    student["pad_tokens"] = result.pad_tokens  # run beside the tokens, not counted in them nor in the GFLOP/s
    flops = result.tokens * per_token + result.prefix_tokens * 2 * n_weights
    student["gflops"] = round(flops / student_s / 1e9, 1) if student_s > 0 else 0.0
    student["ceiling_fraction"] = round(student["gflops"] / probe_gflops, 3) if probe_gflops else None
    if result.peak_memory_gib is not None:
        student["peak_memory_gib"] = result.peak_memory_gib
    student |= {"steps": result.steps, "epochs": len(result.epoch_losses),
                "epoch_losses": [round(x, 4) for x in result.epoch_losses]}
    total = teacher["seconds"] + student_s
    return {"recipe": recipe.name, "flags": recipe.flags, "document_tokens": len(doc_ids),
            "settings": cfg.resolved_dict(), "teacher": teacher,
            "teacher_report": report, "student": student, "seconds": round(total, 2),
            "seconds_per_document_token": round(total / len(doc_ids), 4),
            "fact_sentences": document_fact_sentences(  # (what the teacher's asks grow with beside the chunks)
                tokenizer, doc_ids, segment_spans(len(doc_ids), cfg.segment_length, cfg.effective_stride)),
            "trained_tokens_per_document_token": round(result.tokens / len(doc_ids), 2)}


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m {s % 60:02d}s" if s < 3600 else f"{s // 3600}h {s % 3600 // 60:02d}m"


def _announce(i: int, runs: list[tuple[str, list[int], Recipe]], measured: int, elapsed: float,
              kept: str = "") -> None:
    """One line on stderr as run ``i`` (a length and a recipe) starts, or is kept from an interrupted run
    (``kept``: when it was measured): how many have run, the time so far, and the time left at the seconds per
    document token so far (``measured``: the document tokens this process has measured; the cost grows about
    linearly with the tokens)."""
    _, ids, recipe = runs[i]
    what = f"liftlm: [{i + 1}/{len(runs)}] {format_length(len(ids))} tokens, recipe {recipe.name} " \
           f"({recipe.flags or 'defaults'})"
    if kept:
        print(f"{what}: measured before ({kept}), kept", file=sys.stderr, flush=True)
        return
    left = f", about {_clock(elapsed / measured * sum(len(r[1]) for r in runs[i:]))} left" \
        if measured and elapsed else ""
    print(f"{what}: {i} done, {_clock(elapsed)} elapsed{left}", file=sys.stderr, flush=True)


def _speedups(rows: list[dict], per_length: int) -> None:
    """Each row's ratios against the first recipe on the same document."""
    for at in range(0, len(rows), per_length):
        ref = rows[at]
        for row in rows[at:at + per_length]:
            row["speedup"] = round(ref["seconds"] / row["seconds"], 2) if row["seconds"] > 0 else None
            row["teacher_speedup"] = (round(ref["teacher"]["seconds"] / row["teacher"]["seconds"], 2)
                                      if row["teacher"]["seconds"] > 0 else None)
            row["student_speedup"] = (round(ref["student"]["seconds"] / row["student"]["seconds"], 2)
                                      if row["student"]["seconds"] > 0 else None)


def run_cost(opts: CostOptions) -> dict:
    """Every recipe on every length's document, in one process and one item cache; the report cost.json holds."""
    from ..eval.rundir import git_revision, now
    from .throughput import matmul_weights

    if not opts.recipes:
        raise LiftError("--recipe: give at least one recipe")
    names = [r.name for r in opts.recipes]
    if len(set(names)) != len(names):
        raise LiftError(f"--recipe: names must differ (got {', '.join(names)})")
    lengths = _lengths(opts)
    set_threads(opts.threads)
    flags = [f for f, v in (("--items", opts.items), ("--save-teacher", opts.save_teacher),
                            ("--replay-teacher", opts.replay_teacher)) if v is not None]
    if len(flags) > 1:
        raise LiftError(f"{' and '.join(flags)}: give one of them")
    if flags and len(lengths) > 1:
        raise LiftError(f"{flags[0]}: a teacher's items are about one document; give one --tokens length")
    if opts.save_teacher is not None and opts.recipes[0].config.objective == "ct":
        raise LiftError(f"--save-teacher: the first recipe ({opts.recipes[0].name}) has no teacher (--objective ct); "
                        "put a distillation recipe first")
    loaded = load_bench_model(opts.model, opts.device, opts.random_config, opts.tokenizer)
    documents = [_document(opts, loaded.tokenizer, n) for n in lengths]
    given = Given(opts.items, given_items(opts.items, documents[0][1], opts.recipes)) if opts.items else None
    if opts.replay_teacher is not None:
        given = replayed_teacher(opts.replay_teacher, documents[0][1], opts.recipes)
    save = Path(opts.save_teacher) if opts.save_teacher is not None else None
    # at the model's own dtype (bf16 on a GPU with it): the ceiling its matrix products could reach
    probe = matmul_probe(loaded.device, next(loaded.model.parameters()).dtype, size=opts.probe_size)
    n_weights = matmul_weights(loaded.model)["total"]
    runs = [(text, ids, recipe) for text, ids in documents for recipe in opts.recipes]
    rows: list[dict] = []
    teachers: dict = {}
    with tempfile.TemporaryDirectory() as scratch:  # the run's own item cache: every teacher runs at least once
        work = Work(Path(opts.out) / WORK_DIR if opts.out else Path(scratch), opts.progress)
        measured, resumed, start = 0, 0, time.perf_counter()
        for i, (text, ids, recipe) in enumerate(runs):
            key = row_key(loaded, recipe, text, given)
            row = work.done.get(key)
            if row is not None:  # measured by an interrupted run of the same settings
                if opts.progress:
                    _announce(i, runs, measured, 0.0, kept=row.get("measured_at", "?"))
                work.restore_teacher(loaded, recipe, text, row, teachers)
                resumed += 1
            else:
                if opts.progress:
                    _announce(i, runs, measured, time.perf_counter() - start)
                if given is None:
                    work.fresh_teacher(loaded, recipe, text, teachers)
                row = measure(loaded, recipe, text, ids, n_weights, probe["gflops"], opts.progress, work.items,
                              teachers, given, save if i == 0 else None)
                row |= {"measured_at": now(), "probe_gflops": probe["gflops"]}
                work.keep(key, row)
                measured += len(ids)
            rows.append(row)
    _speedups(rows, len(opts.recipes))
    document = opts.document or (f"facts document ({opts.facts} facts, data seed {opts.data_seed})" if opts.facts
                                 else "the haystack's first tokens")
    report = {"model": loaded.model_id, "device": str(loaded.device), "date": now(), "git": git_revision(),
              "document_tokens": len(documents[-1][1]), "document": document, "probe": probe,
              "matmul_weights": n_weights, "reference": rows[0]["recipe"], "recipes": rows, **opts.extra}
    if resumed:
        report["rows_kept_from_an_interrupted_run"] = resumed
    if given is not None:
        report["replayed_teacher" if given.trace is not None else "items_file"] = given.path
    if len({len(ids) for _, ids in documents}) > 1:
        report["lengths"] = [len(ids) for _, ids in documents]
        report["curve"] = cost_curve.curve(rows)
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", action="append", default=[], metavar="NAME=FLAGS",
                   help="a recipe: a name and the internalize flags it changes from the command's own "
                        "(e.g. --recipe 'default=' --recipe 'one-view=--distill-views lift+icl'); repeatable, the "
                        "first is the reference (default: one recipe, the command's settings)")
    p.add_argument("--document", default=None, metavar="FILE",
                   help="the document, a text file (default: the first --tokens tokens of the haystack)")
    p.add_argument("--tokens", default="2k",
                   help="document length when taken from the haystack (default: 2k); a comma-separated list "
                        "(e.g. 2k,4k,8k,16k,32k) runs every recipe on each length's document and adds the cost "
                        "curve: seconds per token against length, extrapolated to 100k tokens (cost_curve.png)")
    p.add_argument("--facts", type=int, default=0, metavar="N",
                   help="the facts benchmark's document instead: N made-up facts in --tokens tokens of the haystack, "
                        "as `liftlm eval --benchmark facts --facts N` makes it (default: 0, plain haystack)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the --facts document (default: 0)")
    p.add_argument("--items", default=None, metavar="FILE",
                   help="the student's items from FILE (a distill.jsonl beside an adapter, or the teacher's cache "
                        "file for this document and segment settings) instead of made: no teacher runs or counts. "
                        "For timing the student with --random-weights of a real model's shapes, e.g. on a GPU the "
                        "model cannot be copied to")
    p.add_argument("--save-teacher", default=None, metavar="DIR",
                   help="write the first recipe's teacher's items (items.jsonl) and trace (trace.json: every prompt "
                        "it answered, with its answer's length) to DIR, for --replay-teacher")
    p.add_argument("--replay-teacher", default=None, metavar="DIR",
                   help="replay the teacher of DIR (--save-teacher's) instead of running it: every prompt again, each "
                        "answer cut at its recorded length, in each recipe's --teacher-batch shape, timed; the student "
                        "trains on DIR's items. With --random-weights of the real model's shapes this times the "
                        "teacher exactly on a machine the weights cannot reach")
    p.add_argument("--probe-size", type=int, default=None,
                   help="matrix size of the matmul probe (default: 1024 on CPU, 4096 on GPU)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write cost.json, cost.md and cost.png there (and cost_curve.png for several --tokens). A run "
                        "cut short resumes: run the same command again and the rows it finished (kept in "
                        "DIR/.cost-work until the report is written) are not measured again")
