"""Helpers for the serve tests: a real ``liftlm serve`` (uvicorn, its training worker process) on 127.0.0.1 and a free port, on the tiny
random model; every wait is bounded."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

# Small LIFT settings: a document of a few sentences trains in a few optimizer steps.
TINY_FLAGS = ["--objective", "ct", "--window", "256", "--segment-length", "32", "--context-tokens", "32", "--epochs", "1"]
TOKEN = "test-token-5d1c"

DOCS = [
    "The lighthouse keeper of Varnholm kept a ledger of every ship that passed the northern cape. In the winter "
    "of the great storm he wrote that forty-one vessels sought shelter in the bay.",
    "The ledger is kept today in the town museum, beside a brass telescope and a map drawn by the keeper's "
    "daughter, who later became the first woman to captain a ferry on the fjord.",
    "Visitors ask most often about the telescope, which was made in Glasgow in 1881 and still works. What is "
    "the capital of France? Paris. How many legs does a spider have? Eight.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m liftlm serve`` in a subprocess; ``start()`` waits (bounded) until it answers."""

    def __init__(self, model_dir: Path, root: Path, *extra: str, token: str | None = TOKEN, name: str = "server"):
        self.model_dir, self.root, self.extra, self.token = model_dir, root, list(extra), token
        self.state, self.store = root / "state", root / "store"
        self.log_path = root / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def start(self, timeout: float = 180.0) -> Server:
        self.port = free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("LIFTLM_API_TOKEN", None)
        if self.token:
            env["LIFTLM_API_TOKEN"] = self.token
        cmd = [sys.executable, "-m", "liftlm", "serve", "--model", str(self.model_dir), "--host", "127.0.0.1",
               "--port", str(self.port), "--state", str(self.state), "--store", str(self.store), *TINY_FLAGS,
               *self.extra]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"liftlm serve exited with {self.proc.returncode}:\n{self.read_log()}")
            try:
                r = httpx.get(f"{self.url}/v1/status", headers=self.headers, timeout=2)
                if r.status_code == 200 and r.json()["worker"]["alive"]:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"liftlm serve did not answer within {timeout} s:\n{self.read_log()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None:
            self.log.close()

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    # --- helpers ---
    def post(self, text: str, settings: dict | None = None, **kw) -> dict:
        body = {"text": text, **({"settings": settings} if settings else {}), **kw}
        r = httpx.post(f"{self.url}/v1/documents", json=body, headers=self.headers, timeout=60)
        assert r.status_code == 202, r.text
        return r.json()

    def document(self, doc_id: str) -> dict:
        r = httpx.get(f"{self.url}/v1/documents/{doc_id}", headers=self.headers, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, doc_id: str, statuses=("ready", "failed"), timeout: float = 180.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.document(doc_id)
            if job["status"] in statuses:
                return job
            time.sleep(0.2)
        raise AssertionError(f"{doc_id} not {statuses} within {timeout} s: {job}\n{self.read_log()}")

    def ask(self, doc_id: str, question: str, mode: str = "lift+icl", max_tokens: int = 8, **kw) -> httpx.Response:
        body = {"model": doc_id, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
                "mode": mode, **kw}
        return httpx.post(f"{self.url}/v1/chat/completions", json=body, headers=self.headers, timeout=120)


def reference_answer(model_dir: Path, store: Path, job: dict, question: str, mode: str, max_tokens: int,
                     adapter_scale: float = 1.0) -> str:
    """The library's own answer (``Lift.use_adapter`` + ``Lift.ask``) for a ready document."""
    from liftlm import Lift, LiftConfig

    config = LiftConfig.from_dict({**job["settings"], "adapter_scale": adapter_scale})
    lift = Lift(str(model_dir), config, store=store, progress=False)
    lift.use_adapter(job["adapter"])
    return lift.ask(question, mode=mode, max_new_tokens=max_tokens).answer
