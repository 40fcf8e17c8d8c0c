"""Scaling benchmark (the paper's Figure 3): wall time and peak memory of LIFT and of ICL against the length of
the document, on the same haystack text (the first N tokens of the Paul Graham essays).

* LIFT: building the samples, attaching the adapter and one epoch of the paper's segment training (``--objective ct``)
  (nothing is stored). Its cost per epoch grows linearly with the document (samples of bounded length).
* ICL: prefill of the whole document with the question, then a short greedy answer with the base model. Its
  cost grows quadratically (attention). A document beyond the model's window is recorded with status
  ``over_window`` (``icl_beyond_window`` runs it anyway); running out of memory is recorded as ``oom``.

Each point runs in a fresh process (``python -m liftlm.bench.scaling --one SPEC --result PATH``), so its peak
memory is its own. Tokenizing the haystack and loading the model are not timed.

Outputs in the output folder: ``results.json`` (a list of rows ``{method, length, seconds, peak_rss_mb, status,
...}``, rewritten after every point), ``run.json`` (what was run), ``summary.json`` and ``summary.md`` (fits:
linear for LIFT, quadratic for ICL, with R²; the crossover length; LIFT's memory growth), ``scaling.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import LiftConfig
from ..errors import LiftError
from ..memory import out_of_memory
from .common import (
    PeakMemory,
    check_random_size,
    format_length,
    haystack_ids,
    load_bench_model,
    load_tokenizer,
    memory_of,
    model_source,
    prepare_model,
    random_model,
    random_shapes,
    read_haystack,
    resolve_device,
    set_threads,
    synchronize,
)

METHODS = ("lift", "icl")
STATUSES = ("ok", "over_window", "oom", "timeout", "error")
ROW_KEYS = ("method", "length", "seconds", "peak_rss_mb", "status")


@dataclass
class ScalingOptions:
    lengths: list[int]
    methods: tuple[str, ...] = METHODS
    model: str | None = None
    device: str | None = None
    out: Path = Path("liftlm-bench/scaling")
    haystack: str | None = None
    config: LiftConfig = field(default_factory=lambda: LiftConfig(objective="ct", epochs=1))
    random_config: str | None = None  # time random weights of these shapes (RANDOM_CONFIGS)
    tokenizer: str | None = None  # with random weights: whose tokenizer ("synthetic": trained on the haystack)
    force: bool = False  # allow a big random-weight model on a CPU
    icl_beyond_window: bool = False
    answer_tokens: int = 16
    question: str | None = None
    point_timeout: float = 3600.0
    threads: int | None = None  # torch CPU threads (default: torch's own choice)
    in_process: bool = False  # for tests: no fresh process per point (peak memory then is not per point)
    progress: bool = True


def _question(q: str | None) -> str:
    from ..eval.niah import DEFAULT_QUESTION

    return q or DEFAULT_QUESTION


def point_spec(opts: ScalingOptions, method: str, length: int) -> dict:
    """Everything a fresh process needs to measure one point (JSON-serialisable)."""
    return {
        "method": method,
        "length": length,
        "model": opts.model,
        "device": opts.device,
        "haystack": None if opts.haystack is None else str(opts.haystack),
        "config": opts.config.to_dict(),
        "random_config": opts.random_config,
        "tokenizer": opts.tokenizer,
        "icl_beyond_window": opts.icl_beyond_window,
        "answer_tokens": opts.answer_tokens,
        "question": _question(opts.question),
        "threads": opts.threads,
    }


def empty_row(method: str, length: int, status: str, detail: str | None = None) -> dict:
    return {"method": method, "length": length, "seconds": None, "peak_rss_mb": None, "status": status,
            "work_peak_rss_mb": None, "base_rss_mb": None, "peak_gpu_mb": None, "tokens": None,
            "detail": detail}


# ---------------------------------------------------------------- one point, in this process


def model_window(spec: dict, tokenizer) -> int:
    """The model's own context limit, without loading its weights."""
    if spec["random_config"] is not None:
        return random_shapes(spec["random_config"])["max_position_embeddings"]
    from types import SimpleNamespace

    from transformers import AutoConfig

    from ..models import context_limit

    config = AutoConfig.from_pretrained(model_source(spec["model"]))
    return context_limit(SimpleNamespace(config=config), tokenizer)


def icl_prompt(tokenizer, doc_ids: list[int], question: str, answer_tokens: int) -> list[int]:
    """The ICL prompt with the whole document (never truncated: a length beyond the window is the point)."""
    from ..context import PromptBuilder

    return PromptBuilder(tokenizer, 10**9).question_prompt(question, doc_ids, answer_tokens)


def prefill_and_answer(model, prompt_ids: list[int], new_tokens: int) -> dict:
    """Greedy: one prefill pass over the prompt (logits of the last position only), then ``new_tokens - 1``
    decoding steps with the KV cache, so exactly ``new_tokens`` tokens whatever they are."""
    import torch

    from ..kvcache import cache_kwarg, output_cache

    device = next(model.parameters()).device
    kw = cache_kwarg(model)
    with torch.no_grad():
        ids = torch.tensor([prompt_ids], device=device)
        start = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache = output_cache(out)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        synchronize(device)
        prefill = time.perf_counter() - start
        for _ in range(new_tokens - 1):
            out = model(input_ids=token, use_cache=True, **{kw: cache})
            new_cache = output_cache(out)
            cache = new_cache if new_cache is not None else cache
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        synchronize(device)
        total = time.perf_counter() - start
    return {"seconds": total, "prefill_seconds": prefill}


def _lift_work(loaded, doc_ids: list[int], cfg: LiftConfig, window: int) -> dict:
    from ..context import PromptBuilder
    from ..train import train_on_documents

    start = time.perf_counter()
    trained = train_on_documents(loaded.model, [(doc_ids, [])], cfg, PromptBuilder(loaded.tokenizer, window),
                                 progress=False)
    synchronize(loaded.device)
    return {"seconds": time.perf_counter() - start, "tokens": trained.result.tokens, "samples": trained.samples,
            "train_seconds": trained.result.seconds}


def measure(spec: dict) -> dict:
    """Measure one point in this process and return its row (never raises for OOM: status ``oom``)."""
    method, length = spec["method"], int(spec["length"])
    if method not in METHODS:
        raise LiftError(f"--methods: unknown method {method!r}; choose from {', '.join(METHODS)}")
    cfg = LiftConfig.from_dict(spec["config"])
    set_threads(spec.get("threads"))
    text = read_haystack(spec["haystack"])
    random_config = spec["random_config"]
    tok_spec = spec["tokenizer"] if random_config is not None and spec["tokenizer"] else spec["model"]
    tokenizer = load_tokenizer(tok_spec, text)
    doc_ids, repeated = haystack_ids(tokenizer, text, length)
    limit = model_window(spec, tokenizer)
    window = cfg.window or limit
    if window > limit:
        raise LiftError(f"--window {window} is larger than the model's context limit ({limit} tokens)")
    row = empty_row(method, length, "ok", "haystack repeated to reach this length" if repeated else None)
    row["window"] = window
    if method == "icl":
        prompt = icl_prompt(tokenizer, doc_ids, spec["question"], spec["answer_tokens"])
        row["prompt_tokens"] = len(prompt)
        if len(prompt) + spec["answer_tokens"] > window and not spec["icl_beyond_window"]:
            row.update(status="over_window", detail=f"prompt {len(prompt)} + answer {spec['answer_tokens']} "
                                                    f"tokens > window {window}")
            return row
    if random_config is not None:
        loaded = random_model(random_config, tokenizer, spec["device"])
    else:
        loaded = load_bench_model(spec["model"], spec["device"])
    row["device"] = loaded.device.type
    if loaded.device.type == "cpu":
        import torch

        row["threads"] = torch.get_num_threads()
    if method == "lift":  # imported here, not inside the timed work
        import peft  # noqa: F401
        import transformers.optimization  # noqa: F401
    mem = PeakMemory(loaded.device)
    try:
        with mem:
            if method == "lift":
                row.update(_lift_work(loaded, doc_ids, cfg, window))
            else:
                row.update(prefill_and_answer(loaded.model, prompt, spec["answer_tokens"]))
                row["tokens"] = len(prompt) + spec["answer_tokens"]
    except Exception as e:
        if not out_of_memory(e):
            raise
        row.update(status="oom", seconds=None, detail=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    row.update(mem.result())
    for k in ("seconds", "prefill_seconds", "train_seconds"):
        if row.get(k) is not None:
            row[k] = round(row[k], 3)
    return row


# ---------------------------------------------------------------- one point, in a fresh process


def _child_env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # so that the child imports this very liftlm
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def spawn(spec: dict, workdir: Path, timeout: float) -> dict:
    """Measure one point in a fresh Python process; a crash, a kill or a timeout becomes the row's status."""
    method, length = spec["method"], spec["length"]
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"{method}-{length}.spec.json"
    result_path = workdir / f"{method}-{length}.row.json"
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "liftlm.bench.scaling", "--one", str(spec_path), "--result", str(result_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_child_env(),
                              check=False)
    except subprocess.TimeoutExpired:
        return empty_row(method, length, "timeout", f"no result within {timeout:.0f} s (--point-timeout)")
    if result_path.is_file():
        return json.loads(result_path.read_text())
    if proc.returncode == -9:
        return empty_row(method, length, "oom", "the process was killed (SIGKILL), most likely by the kernel's "
                                                "out-of-memory killer")
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    return empty_row(method, length, "error", f"exit status {proc.returncode}: {tail[-400:]}")


def child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m liftlm.bench.scaling",
                                     description="measure one point of the scaling benchmark (internal)")
    parser.add_argument("--one", required=True, help="JSON file with the point's spec")
    parser.add_argument("--result", required=True, help="where to write the row (JSON)")
    args = parser.parse_args(argv)
    from ..options import quiet_libraries

    quiet_libraries()
    spec = json.loads(Path(args.one).read_text())
    try:
        row = measure(spec)
    except LiftError as e:
        row = empty_row(spec["method"], spec["length"], "error", str(e))
    tmp = Path(args.result + ".tmp")
    tmp.write_text(json.dumps(row))
    tmp.replace(args.result)
    return 0


# ---------------------------------------------------------------- the whole benchmark


def _describe(row: dict) -> str:
    what = f"{row['method']:<4} {format_length(row['length']):>6}"
    if row["status"] != "ok":
        return f"{what}: {row['status']}" + (f" ({row['detail']})" if row.get("detail") else "")
    mem = memory_of(row)
    kind = "GPU" if row.get("peak_gpu_mb") is not None else "RSS"
    return f"{what}: {row['seconds']:.2f} s, peak {kind} {mem:.0f} MiB"


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def run_scaling(opts: ScalingOptions) -> dict:
    """Measure every (method, length), then write results, fits, tables and the plot; returns the summary."""
    bad = [m for m in opts.methods if m not in METHODS]
    if bad:
        raise LiftError(f"--methods: unknown {', '.join(bad)}; choose from {', '.join(METHODS)}")
    if not opts.lengths:
        raise LiftError("--lengths is empty")
    if opts.threads is not None and opts.threads < 1:
        raise LiftError(f"--threads must be at least 1 (got {opts.threads})")
    if opts.answer_tokens < 1:
        raise LiftError(f"--answer-tokens must be at least 1 (got {opts.answer_tokens})")
    read_haystack(opts.haystack)  # fail here, not in every point
    device = resolve_device(opts.device)
    if opts.random_config is not None:
        check_random_size(opts.random_config, device, opts.force)
    prepare_model(opts.model, opts.random_config, opts.tokenizer)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": opts.random_config and f"random-weights:{opts.random_config}" or (opts.model or "embedded"),
        "device": device,
        "isolation": "in-process" if opts.in_process else "fresh process per point",
        "threads": opts.threads,
        "lift_settings": opts.config.to_dict(),
        "answer_tokens": opts.answer_tokens,
        "icl_beyond_window": opts.icl_beyond_window,
        "question": _question(opts.question),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json(out / "run.json", meta)
    rows: list[dict] = []
    points = [(m, n) for n in opts.lengths for m in opts.methods]
    for i, (method, length) in enumerate(points, 1):
        spec = point_spec(opts, method, length)
        if opts.in_process:
            try:
                row = measure(spec)
            except LiftError as e:
                row = empty_row(method, length, "error", str(e))
        else:
            row = spawn(spec, out / "points", opts.point_timeout)
        rows.append(row)
        write_json(out / "results.json", rows)
        if opts.progress:
            print(f"[{i}/{len(points)}] {_describe(row)}", file=sys.stderr, flush=True)
    return write_outputs(out, rows, meta)


def write_outputs(out: Path, rows: list[dict], meta: dict | None = None) -> dict:
    """summary.json, summary.md and scaling.png from the rows."""
    from .analysis import markdown, plot, summarize

    summary = summarize(rows, meta or {})
    write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(markdown(summary))
    plot(summary, out / "scaling.png")
    return summary


def replot(out: Path) -> dict:
    """Redo the summary and the plot from ``out/results.json`` (no measuring)."""
    out = Path(out)
    path = out / "results.json"
    if not path.is_file():
        raise LiftError(f"--replot: no results.json in {out}")
    rows = json.loads(path.read_text())
    meta_path = out / "run.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return write_outputs(out, rows, meta)


if __name__ == "__main__":
    sys.exit(child_main())
