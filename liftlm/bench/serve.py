"""``liftlm bench serve``: answers per second and latency of ``liftlm serve`` on one adapter and round-robin over
several adapters (the cost of switching adapters), against a real server started for the purpose.

It starts ``liftlm serve`` on 127.0.0.1 (a free port; its job table and adapter store in a temporary folder,
removed at the end; its log in ``--out``), posts
``--documents`` documents (slices of the example document, each a different text) and waits until they are
trained, then, for each LRU bound in ``--lru-bounds`` (the server's ``--max-loaded-adapters``, one server each),
times ``--questions`` questions one after another in these scenarios:

* ``icl``: the base model, no adapter (the floor);
* ``one adapter``: every question about the same document;
* ``round-robin N``: question i about document i mod N: with N above the bound, each question loads its
  adapter from disk (the least recently used went out).

Latency is the client's, per request (HTTP included). Each scenario starts with ``--warmup`` untimed requests.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LiftError
from ..serve.worker import terminate

QUESTIONS = [
    "When was the town first recorded?",
    "What did the households owe the abbey?",
    "Which river meets the sea at Kellmere?",
    "How many people lived in the town?",
    "What trades did the families follow?",
    "Who began building the brannock boats?",
    "What is written on the lid of the strongbox?",
    "What happened in the great storm?",
]


@dataclass
class ServeBenchOptions:
    model: str | None = None
    device: str | None = None
    out: Path = Path("liftlm-bench/serve")
    documents: int = 8
    doc_words: int = 300
    questions: int = 40
    warmup: int = 2
    max_tokens: int = 16
    mode: str = "lift+icl"
    lru_bounds: list[int] = field(default_factory=lambda: [8, 4])
    lift_flags: list[str] = field(default_factory=list)  # LIFT settings for the server, as flags
    url: str | None = None  # measure this running server (its documents are posted; known ones train no more)
    startup_timeout: float = 600.0
    train_timeout: float = 3600.0
    progress: bool = True


def example_documents(n: int, words: int) -> list[str]:
    """``n`` different documents of ``words`` words: windows of the example document at evenly spaced offsets
    (wrapping around), each with its number in the first line."""
    text = (Path(__file__).resolve().parents[2] / "examples" / "kellmere.txt")
    if not text.is_file():
        raise LiftError(f"the example document {text} is missing (a source checkout is needed)")
    tokens = text.read_text(encoding="utf-8").split()
    step = max(1, len(tokens) // n)
    docs = []
    for i in range(n):
        window = [tokens[(i * step + j) % len(tokens)] for j in range(words)]
        docs.append(f"Excerpt {i + 1} of the history of Kellmere.\n" + " ".join(window))
    return docs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, opts: ServeBenchOptions, bound: int, work: Path):
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "liftlm", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--state", str(work / "state"), "--store", str(work / "store"),
               "--max-loaded-adapters", str(bound), *opts.lift_flags]
        for flag, value in (("--model", opts.model), ("--device", opts.device)):
            if value is not None:
                cmd += [flag, value]
        env = {k: v for k, v in os.environ.items() if k != "LIFTLM_API_TOKEN"}
        self.log = open(opts.out / "server.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.client = httpx.Client(base_url=self.url, timeout=600)
        deadline = time.monotonic() + opts.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LiftError(f"liftlm serve exited with status {self.proc.returncode}; see {opts.out / 'server.log'}")
            try:
                if self.client.get("/v1/status", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise LiftError(f"liftlm serve did not start within {opts.startup_timeout:.0f} s")

    def status(self) -> dict:
        return self.client.get("/v1/status").json()

    def stop(self) -> None:
        self.client.close()
        terminate(self.proc, 60)
        self.log.close()


class _Running:
    """A server that is already running (``--url``): measured as it is, left running."""

    def __init__(self, url: str):
        import httpx

        self.url = url.rstrip("/")
        token = os.environ.get("LIFTLM_API_TOKEN")
        self.client = httpx.Client(base_url=self.url, timeout=600,
                                   headers={"Authorization": f"Bearer {token}"} if token else {})

    def status(self) -> dict:
        return self.client.get("/v1/status").json()

    def stop(self) -> None:
        self.client.close()


def _say(opts: ServeBenchOptions, message: str) -> None:
    if opts.progress:
        print(f"liftlm bench serve: {message}", file=sys.stderr, flush=True)


def _train(server: _Server, opts: ServeBenchOptions, docs: list[str]) -> list[dict]:
    ids = []
    for i, text in enumerate(docs):
        r = server.client.post("/v1/documents", json={"text": text, "title": f"excerpt {i + 1}"})
        if r.status_code != 202:
            raise LiftError(f"posting document {i + 1} failed: {r.status_code} {r.text[:300]}")
        ids.append(r.json()["id"])
    deadline = time.monotonic() + opts.train_timeout
    shown = None
    while True:
        jobs = [server.client.get(f"/v1/documents/{i}").json() for i in ids]
        failed = [j for j in jobs if j["status"] == "failed"]
        if failed:
            raise LiftError(f"training failed: {failed[0]['error']}")
        ready = sum(j["status"] == "ready" for j in jobs)
        if ready != shown:
            _say(opts, f"{ready}/{len(ids)} documents trained")
            shown = ready
        if ready == len(ids):
            return jobs
        if time.monotonic() > deadline:
            raise LiftError(f"documents not trained within {opts.train_timeout:.0f} s")
        time.sleep(0.5)


def _ask(server: _Server, doc_id: str, question: str, mode: str, max_tokens: int) -> tuple[float, int]:
    body = {"model": doc_id, "mode": mode, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": question}]}
    start = time.perf_counter()
    r = server.client.post("/v1/chat/completions", json=body)
    seconds = time.perf_counter() - start
    if r.status_code != 200:
        raise LiftError(f"a question failed: {r.status_code} {r.text[:300]}")
    return seconds, r.json()["usage"]["completion_tokens"]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _scenario(server: _Server, opts: ServeBenchOptions, name: str, targets: list[str], mode: str,
              bound: int) -> dict:
    for i in range(opts.warmup):
        _ask(server, targets[i % len(targets)], QUESTIONS[i % len(QUESTIONS)], mode, opts.max_tokens)
    loads_before = server.status()["adapter_loads"]
    latencies, tokens = [], 0
    start = time.perf_counter()
    for i in range(opts.questions):
        seconds, n = _ask(server, targets[i % len(targets)], QUESTIONS[i % len(QUESTIONS)], mode, opts.max_tokens)
        latencies.append(seconds)
        tokens += n
    wall = time.perf_counter() - start
    loads = server.status()["adapter_loads"] - loads_before
    row = {"load_average": round(os.getloadavg()[0], 2),  # other work on the machine shows here
           "scenario": name, "lru_bound": bound, "mode": mode, "adapters": len(set(targets)) if mode != "icl" else 0,
           "questions": opts.questions, "seconds": round(wall, 3),
           "answers_per_second": round(opts.questions / wall, 3),
           "p50_ms": round(1000 * percentile(latencies, 50), 1), "p95_ms": round(1000 * percentile(latencies, 95), 1),
           "mean_ms": round(1000 * statistics.fmean(latencies), 1),
           "completion_tokens": tokens, "adapter_loads": loads}
    _say(opts, f"{name} (LRU {bound}): {row['answers_per_second']} answers/s, p50 {row['p50_ms']} ms, "
               f"p95 {row['p95_ms']} ms, {loads} adapter loads")
    return row


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_serve_bench(opts: ServeBenchOptions) -> dict:
    if opts.documents < 2:
        raise LiftError(f"--documents must be at least 2 (got {opts.documents})")
    if opts.questions < 1 or opts.warmup < 0 or opts.max_tokens < 1 or opts.doc_words < 20:
        raise LiftError("--questions and --max-tokens must be at least 1, --warmup 0 or more, --doc-words at least 20")
    if not opts.lru_bounds or min(opts.lru_bounds) < 1:
        raise LiftError("--lru-bounds: give one or more bounds of at least 1, e.g. 8,4")
    opts.out.mkdir(parents=True, exist_ok=True)
    docs = example_documents(opts.documents, opts.doc_words)
    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM: stop the servers it started, too
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(opts, docs)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(opts: ServeBenchOptions, docs: list[str]) -> dict:
    rows, jobs, model_id = [], None, None
    with tempfile.TemporaryDirectory(prefix="liftlm-bench-serve-") as work:  # the job table and the adapters
        for bound in ([None] if opts.url else opts.lru_bounds):
            if opts.url:
                server = _Running(opts.url)
                bound = server.status()["max_loaded_adapters"]
            else:
                _say(opts, f"starting liftlm serve (--max-loaded-adapters {bound})")
                server = _Server(opts, bound, Path(work))
            try:
                model_id = server.status()["model"]
                if jobs is None:
                    _say(opts, f"training {len(docs)} documents of {opts.doc_words} words")
                    jobs = _train(server, opts, docs)
                ids = [j["id"] for j in jobs]
                rows.append(_scenario(server, opts, "icl (no adapter)", ids[:1], "icl", bound))
                rows.append(_scenario(server, opts, "one adapter", ids[:1], opts.mode, bound))
                rows.append(_scenario(server, opts, f"round-robin {len(ids)}", ids, opts.mode, bound))
            finally:
                server.stop()
    import torch

    return {
        "model": model_id, "device": opts.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "platform": platform.platform(),
        "documents": len(docs), "doc_words": opts.doc_words,
        "document_tokens": [j["tokens"] for j in jobs], "training_seconds": [j["seconds"] for j in jobs],
        "questions": opts.questions, "warmup": opts.warmup, "max_tokens": opts.max_tokens,
        "lift_flags": opts.lift_flags, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows,
    }


def markdown(report: dict) -> str:
    lines = [f"model: {report['model']} on {report['device']} ({report['threads']} threads); "
             f"{report['documents']} documents of {report['doc_words']} words "
             f"({min(report['document_tokens'])}-{max(report['document_tokens'])} tokens); "
             f"{report['questions']} questions per row, one at a time, max_tokens {report['max_tokens']}",
             "",
             "| scenario | LRU bound | mode | answers/s | p50 ms | p95 ms | adapter loads | load average |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['scenario']} | {r['lru_bound']} | {r['mode']} | {r['answers_per_second']} | "
                     f"{r['p50_ms']} | {r['p95_ms']} | {r['adapter_loads']} | {r.get('load_average', '')} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path, command: str) -> None:
    report = {**report, "command": command}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(f"# liftlm bench serve\n\n`{command}`\n\n{markdown(report)}", encoding="utf-8")
