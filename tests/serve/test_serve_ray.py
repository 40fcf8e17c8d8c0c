"""``liftlm serve --ray``: training jobs run as Ray tasks (a local Ray instance started by the worker), several at
once, with progress relayed to the job table and a deleted job's task cancelled."""
from __future__ import annotations

import time

import httpx
import pytest
from serve_helpers import DOCS, Server

from liftlm.adapters import read_metadata

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'liftlm[ray]')")


def _status(server) -> dict:
    return httpx.get(f"{server.url}/v1/status", headers=server.headers, timeout=30).json()


def _training(server, doc_id: str, timeout: float = 180) -> dict:
    """The job once its relayed progress shows a finished optimizer step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.document(doc_id)
        if job["progress"].get("step", 0) >= 1:
            return job
        time.sleep(0.2)
    raise AssertionError(f"{doc_id} showed no training progress in {timeout} s: {job}\n{server.read_log()}")


def _logged(server, line: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while line not in (log := server.read_log()):
        assert time.monotonic() < deadline, f"{line!r} not logged in {timeout} s:\n{log}"
        time.sleep(0.2)
    return log


def test_serve_trains_documents_as_ray_tasks(tiny_model_dir, tmp_path):
    server = Server(tiny_model_dir, tmp_path, "--ray", "--ray-cpus", "1", "--ray-jobs", "2").start(timeout=240)
    endless = {"epochs": 100_000}  # never finishes: holds its slot until it is deleted
    try:
        assert _status(server)["worker"]["ray"] == "local"
        long_a = server.post(DOCS[1] * 3, settings=endless)["id"]
        first = server.post(DOCS[0])["id"]
        # the long job trains on Ray, and its progress reaches the job table
        job = _training(server, long_a)
        assert job["progress"]["stage"] == "training" and job["progress"]["steps"] > job["progress"]["step"]
        # two documents train at once: the first one finishes while the long one still trains
        done = server.wait(first, timeout=240)
        assert done["status"] == "ready" and done["attempts"] == 1, done
        assert server.document(long_a)["status"] == "training"
        # a second endless job takes the free slot; with both slots held, the last document waits
        long_b = server.post(DOCS[1] * 2, settings=endless)["id"]
        last_id = server.post(DOCS[2])["id"]
        _training(server, long_b)
        time.sleep(1.0)
        assert server.document(last_id)["status"] == "queued"
        # deleting a long job cancels its task, which frees its slot for the last document
        with server.client() as c:
            assert c.delete(f"/v1/documents/{long_a}").status_code == 200
        last = server.wait(last_id, timeout=240)
        assert last["status"] == "ready", last
        log = server.read_log()
        assert log.index(f"abandoned {long_a}") < log.index(f"sending {last_id} to Ray")
        assert server.document(long_b)["status"] == "training"
        for job in (done, last):
            meta = read_metadata(job["adapter"])
            assert meta["training"]["steps"] == job["progress"]["steps"] > 0
        print("LOG", server.read_log())
        r = server.ask(first, "How many vessels sought shelter?")
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
        with server.client() as c:
            assert c.delete(f"/v1/documents/{long_b}").status_code == 200
        log = _logged(server, f"abandoned {long_b}")
        assert "training on a new local Ray instance (2 job(s) at once" in log and f"ready {first}" in log
    finally:
        server.stop()
    for doc_id in (long_a, long_b):  # the cancelled tasks stored nothing, even after the stop
        assert not (server.store / doc_id).exists()
