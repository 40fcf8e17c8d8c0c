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


def test_serve_trains_documents_as_ray_tasks(tiny_model_dir, tmp_path):
    server = Server(tiny_model_dir, tmp_path, "--ray", "--ray-cpus", "1", "--ray-jobs", "2").start(timeout=240)
    try:
        assert _status(server)["worker"]["ray"] == "local"
        long_id = server.post(DOCS[1] * 3, settings={"epochs": 400})["id"]  # holds one of the two slots
        first, second = (server.post(d)["id"] for d in (DOCS[0], DOCS[2]))
        # the long job trains on Ray, and its progress reaches the job table
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            job = server.document(long_id)
            if job["progress"].get("step", 0) >= 1:
                break
            time.sleep(0.2)
        assert job["progress"]["stage"] == "training", (job, server.read_log())
        assert job["progress"]["steps"] > job["progress"]["step"] >= 1
        # two documents train at once: the first one finishes while the long one still trains
        done = server.wait(first, timeout=240)
        assert done["status"] == "ready" and done["attempts"] == 1, done
        assert server.document(long_id)["status"] == "training"
        # deleting the long job cancels its task, which frees the slot for the last document
        with server.client() as c:
            assert c.delete(f"/v1/documents/{long_id}").status_code == 200
        last = server.wait(second, timeout=240)
        assert last["status"] == "ready", last
        for job in (done, last):
            meta = read_metadata(job["adapter"])
            assert meta["training"]["steps"] == job["progress"]["steps"] > 0
        assert not (server.store / long_id).exists()
        r = server.ask(first, "How many vessels sought shelter?")
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
        log = server.read_log()
        assert "training on a new local Ray instance (2 job(s) at once" in log
        assert f"abandoned {long_id}" in log and f"ready {first}" in log
    finally:
        server.stop()
    assert not (server.store / long_id).exists()  # the cancelled task stored nothing, even after the stop
