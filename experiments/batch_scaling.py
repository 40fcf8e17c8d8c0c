"""Batch internalization on Ray: the same documents with 1, 2, ... single-CPU workers on this machine.

Each worker count gets a fresh Ray instance (``ray.init(num_cpus=W)``), a fresh store, and one task per document
(1 CPU and one torch thread each), through the same ``liftlm.batch.run_ray`` as ``liftlm internalize --documents
--ray``. Scaling efficiency at W workers = wall(1) / (W x wall(W)). The machine's load average is sampled every
2 s during each run and the busiest other processes are listed, because the cores may be shared.

    .venv/bin/python experiments/batch_scaling.py --documents 8 --workers 1,2 --out experiments/results/batch

Documents: ``--documents`` windows of ``--doc-chars`` characters cut from examples/kellmere.txt at evenly
spaced offsets (distinct texts, about the same length). Writes ``results.json`` (every row of every run),
``summary.json`` and ``summary.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_documents(n: int, chars: int) -> list[tuple[str, str]]:
    text = (ROOT / "examples" / "kellmere.txt").read_text(encoding="utf-8")
    span = len(text) - chars
    if span < 0:
        raise SystemExit(f"--doc-chars {chars} is longer than the example ({len(text)} characters)")
    docs = []
    for i in range(n):
        start = round(i * span / max(1, n - 1))
        start = text.rfind(" ", 0, start) + 1 if start else 0  # start at a word
        docs.append((f"kellmere-{i:02d}", text[start:start + chars]))
    return docs


def busiest_processes(limit: int = 8) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pcpu,etimes,comm", "--sort=-pcpu"], capture_output=True, text=True).stdout
    return [" ".join(line.split()) for line in out.splitlines()[1:limit + 1]]


class LoadSampler(threading.Thread):
    def __init__(self, every: float = 2.0):
        super().__init__(daemon=True)
        self.every, self.samples, self._done = every, [], threading.Event()

    def run(self):
        while not self._done.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> list[float]:
        self._done.set()
        self.join()
        return self.samples


def cpu_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all processes, all cores) since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_workers(workers: int, docs, config: dict, model: str | None, progress: bool,
                gpus_per_task: float = 0) -> dict:
    import ray

    from liftlm.batch import BatchJob, Document, Results, run_ray

    store = Path(tempfile.mkdtemp(prefix=f"batch-bench-{workers}w-"))
    job = BatchJob(model=model, config=config, store=str(store / "adapters"), names=str(store / "names"))
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        before = busiest_processes()
        sampler = LoadSampler()
        sampler.start()
        start, busy = time.perf_counter(), cpu_busy_seconds()
        rows = run_ray(job, [Document(i, t, "bench") for i, t in docs], Results(None), num_cpus=1,
                       num_gpus=gpus_per_task, progress=progress)
        wall, busy = time.perf_counter() - start, cpu_busy_seconds() - busy
        load = sampler.stop()
        after = busiest_processes()
    finally:
        ray.shutdown()
    failed = [r for r in rows if r["status"] != "trained"]
    if failed:
        raise SystemExit(f"{len(failed)} documents did not train: {failed[0]}")
    return {"workers": workers, "wall_seconds": round(wall, 2), "rows": rows,
            "task_seconds": [r["seconds"] for r in rows], "train_seconds": [r["train_seconds"] for r in rows],
            "cpu_seconds": [r["cpu_seconds"] for r in rows],
            "machine_busy_cpu_seconds": round(busy, 1), "machine_cpu_seconds": round(wall * os.cpu_count(), 1),
            "tokens": [r["tokens"] for r in rows], "nodes": sorted({r["node"] for r in rows}),
            "load_average": {"samples": load, "mean": round(statistics.mean(load), 2) if load else None,
                             "max": max(load) if load else None},
            "busiest_before": before, "busiest_after": after, "store": str(store)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--documents", type=int, default=8)
    ap.add_argument("--doc-chars", type=int, default=2000)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--segment-length", type=int, default=128)
    ap.add_argument("--context-tokens", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--gpus-per-task", type=float, default=0,
                    help="GPUs per task (Ray's num_gpus; a fraction shares a GPU); default 0: CPU only")
    ap.add_argument("--out", default="experiments/results/batch")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    from transformers.utils import logging as hf_logging

    from liftlm import LiftConfig
    from liftlm.models import load_model

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    load_model(args.model, "cpu" if args.gpus_per_task == 0 else None)  # converts the embedded GGUF once, outside the timed runs
    config = LiftConfig(segment_length=args.segment_length, context_tokens=args.context_tokens,
                        epochs=args.epochs).to_dict()
    docs = make_documents(args.documents, args.doc_chars)
    runs = []
    for w in [int(x) for x in args.workers.split(",")]:
        print(f"== {w} worker(s), {len(docs)} documents", file=sys.stderr, flush=True)
        runs.append(run_workers(w, docs, config, args.model, progress=not args.quiet,
                                gpus_per_task=args.gpus_per_task))
        print(f"   {runs[-1]['wall_seconds']} s", file=sys.stderr, flush=True)

    base = runs[0]
    summary = {
        "command": ".venv/bin/python experiments/batch_scaling.py " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                     cwd=ROOT).stdout.strip(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "model": args.model or "embedded SmolLM2-135M-Instruct", "config": config,
        "documents": len(docs), "doc_chars": args.doc_chars,
        "doc_tokens": statistics.mean(base["tokens"]),
        "runs": [{
            "workers": r["workers"], "wall_seconds": r["wall_seconds"],
            "documents_per_minute": round(60 * len(docs) / r["wall_seconds"], 2),
            "speedup": round(base["wall_seconds"] / r["wall_seconds"], 3),
            "efficiency": round(base["wall_seconds"] * base["workers"] / (r["wall_seconds"] * r["workers"]), 3),
            "median_task_seconds": round(statistics.median(r["task_seconds"]), 2),
            "median_train_seconds": round(statistics.median(r["train_seconds"]), 2),
            "sum_task_seconds": round(sum(r["task_seconds"]), 2),
            "median_task_cpu_seconds": round(statistics.median(r["cpu_seconds"]), 2),
            "sum_task_cpu_seconds": round(sum(r["cpu_seconds"]), 1),
            # of all the machine's CPU time during the run: busy at all, and busy with these tasks
            "machine_busy_share": round(r["machine_busy_cpu_seconds"] / r["machine_cpu_seconds"], 3),
            "our_share": round(sum(r["cpu_seconds"]) / r["machine_cpu_seconds"], 3),
            "load_average_mean": r["load_average"]["mean"], "load_average_max": r["load_average"]["max"],
        } for r in runs],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(runs, indent=1) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# Batch internalization on Ray: {len(docs)} documents, 1 CPU per task", "",
             f"`{summary['command']}` ({summary['date']}, commit {summary['git_commit'][:10]}, "
             f"{os.cpu_count()} CPUs)", "",
             f"Model {summary['model']}; documents of {args.doc_chars} characters "
             f"(~{summary['doc_tokens']:.0f} tokens); segment length {args.segment_length}, context "
             f"{args.context_tokens}, {args.epochs} epoch(s).", "",
             "| workers | wall s | docs/min | speedup | efficiency | median task s | median task CPU s | "
             "machine CPU busy | of it ours | load avg mean / max |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["runs"]:
        lines.append(f"| {r['workers']} | {r['wall_seconds']} | {r['documents_per_minute']} | {r['speedup']} | "
                     f"{r['efficiency']} | {r['median_task_seconds']} | {r['median_task_cpu_seconds']} | "
                     f"{r['machine_busy_share']:.0%} | {r['our_share']:.0%} | "
                     f"{r['load_average_mean']} / {r['load_average_max']} |")
    lines += ["", "machine CPU busy: the share of all cores' time (wall x CPUs) spent busy during the run, by any "
              "process; of it ours: the share spent in the tasks' own processes (their CPU seconds).",
              "", "Busiest processes at the start of each run (%CPU, seconds running, command):", ""]
    for r in runs:
        lines.append(f"- {r['workers']} worker(s): " + "; ".join(r["busiest_before"][:6]))
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
