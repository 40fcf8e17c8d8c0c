"""Jobs that survive: the job table's rules, a worker killed mid-training, a server restarted with queued work,
and the checks ``liftlm serve`` makes before it starts."""
from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest
from serve_helpers import DOCS, Server

from liftlm.adapters import read_metadata
from liftlm.serve.jobs import JobTable


def _table(tmp_path) -> JobTable:
    return JobTable(tmp_path / "jobs.sqlite")


def test_job_table_claims_in_order_and_only_the_owner_finishes(tmp_path):
    t = _table(tmp_path)
    a, queued = t.submit("a" * 20, "A", {"epochs": 1}, "text a", 2)
    assert queued and a["status"] == "queued"
    assert t.submit("a" * 20, "A again", {"epochs": 1}, "text a", 2) == (a, False)  # one job per id
    t.submit("b" * 20, "B", {}, "text b", 2)
    job = t.claim(pid=111)
    assert job["id"] == "a" * 20 and job["text"] == "text a" and job["attempts"] == 1
    assert t.claim(pid=111)["id"] == "b" * 20 and t.claim(pid=111) is None
    assert not t.progress("a" * 20, 222, {"stage": "training"})  # not its job
    assert not t.finish("a" * 20, 222, "/x", 1.0, {})
    assert t.get("a" * 20)["status"] == "training"
    assert t.progress("a" * 20, 111, {"stage": "training", "step": 1})
    assert t.finish("a" * 20, 111, "/adapter", 1.5, {"stage": "ready"})
    assert t.get("a" * 20)["status"] == "ready" and t.get("a" * 20)["adapter"] == "/adapter"
    assert not t.progress("a" * 20, 111, {"stage": "training"})  # finished: no more progress
    statuses = [d["status"] for _, d in t.events_after("a" * 20, 0)]
    assert statuses == ["queued", "training", "training", "ready"]
    assert t.delete("b" * 20) and t.get("b" * 20) is None and t.events_after("b" * 20, 0) == []
    assert not t.progress("b" * 20, 111, {"stage": "training"})  # a deleted job is abandoned by its worker


def test_job_table_requeues_a_dead_workers_job_then_fails_it(tmp_path):
    t = _table(tmp_path)
    t.submit("c" * 20, "C", {}, "text", 1)
    for attempt in (1, 2):
        assert t.claim(pid=100 + attempt)["attempts"] == attempt
        assert t.requeue_orphans(None, 3, "worker died") == ["c" * 20]
        job = t.get("c" * 20)
        assert job["status"] == "queued" and job["progress"]["note"] == "worker died"
    t.claim(pid=103)
    assert t.requeue_orphans(103, 3, "worker died") == []  # its worker is alive
    t.requeue_orphans(None, 3, "worker died")
    job = t.get("c" * 20)
    assert job["status"] == "failed" and "3 attempts" in job["error"]
    again, queued = t.submit("c" * 20, "C", {}, "text", 1)  # posting a failed document again retries it
    assert queued and again["status"] == "queued" and again["attempts"] == 0
    t.claim(pid=104)
    t.requeue_orphans(None, 3, "the server stopped", refund=True)  # a clean stop does not count as an attempt
    assert t.get("c" * 20)["attempts"] == 0 and t.get("c" * 20)["status"] == "queued"


def test_worker_killed_mid_training_requeues_never_ready(tiny_model_dir, tmp_path):
    server = Server(tiny_model_dir, tmp_path, "--max-attempts", "2").start()
    try:
        pid = httpx.get(f"{server.url}/v1/status", headers=server.headers, timeout=30).json()["worker"]["pid"]
        # enough steps that the run cannot end between our poll and the signal on a fast machine
        doc_id = server.post(DOCS[0], settings={"epochs": 80})["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = server.document(doc_id)
            p = job["progress"]
            if job["status"] == "training" and (p.get("step") or 0) > (p.get("steps") or 1e9) // (p.get("epochs") or 1) + 1:
                # (past the first epoch's end: its checkpoint is written)
                os.kill(pid, signal.SIGSTOP)  # freeze it at once, then confirm it had not finished
                break
            time.sleep(0.02)
        job = server.document(doc_id)
        assert job["status"] == "training", job
        os.kill(pid, signal.SIGKILL)
        after = server.wait(doc_id, statuses=("queued", "failed", "ready"), timeout=30)
        assert after["status"] == "queued", after  # re-queued, never ready from a killed run
        assert "exited" in after["progress"]["note"] and not (server.store / doc_id).exists()
        assert not [p for p in server.store.glob("*") if p.name == doc_id]
        # the supervisor restarted the worker, which resumes from the last epoch-end checkpoint, to a whole adapter
        job = server.wait(doc_id, timeout=300)
        assert job["status"] == "ready" and job["attempts"] == 2, job
        assert read_metadata(job["adapter"])["training"]["resumed_after_epoch"] >= 1
        status = httpx.get(f"{server.url}/v1/status", headers=server.headers, timeout=30).json()["worker"]
        assert status["restarts"] == 1 and status["pid"] != pid and status["alive"]
        statuses = [json.loads(line)["status"] for line in _events(server, doc_id)]
        first_ready = statuses.index("ready")
        assert "queued" in statuses[:first_ready] and statuses.count("ready") == 1
    finally:
        server.stop()


def _events(server, doc_id: str) -> list[str]:
    with httpx.stream("GET", f"{server.url}/v1/documents/{doc_id}/events", timeout=30,
                      headers={**server.headers, "Last-Event-ID": "1"}) as r:
        out = []
        for line in r.iter_lines():
            if line.startswith("data:"):
                out.append(line[5:].strip())
        return out


@pytest.mark.parametrize("stopped", [True, False])
def test_a_stop_that_surfaces_as_another_error_leaves_the_job_queued(tiny_model_dir, tmp_path, monkeypatch, stopped):
    # SIGTERM is a KeyboardInterrupt in the worker; a cleanup it cuts short can replace it with another error on the
    # way out. That must not fail the job (nor train the next one): the web process queues it again. Without a
    # stop, the same error fails the job and the worker goes on.
    from liftlm.recipe import Lift
    from liftlm.serve import worker as w

    def internalize(self, text):
        try:
            if stopped:
                w.stop_now()  # what SIGTERM runs
            raise KeyboardInterrupt if stopped else RuntimeError("a bug")
        except KeyboardInterrupt:
            raise RuntimeError("a cleanup cut short by the stop") from None

    monkeypatch.setattr(w, "_STOP", __import__("threading").Event())
    monkeypatch.setattr(Lift, "internalize", internalize)
    t = _table(tmp_path)
    t.submit("a" * 20, "A", {}, DOCS[0], 40)
    t.submit("b" * 20, "B", {}, DOCS[1], 40)
    worker = w.Worker(str(tmp_path / "jobs.sqlite"), str(tiny_model_dir), str(tmp_path / "store"), "cpu", None)
    job = t.claim(worker.pid)
    if not stopped:
        worker.train(job)
        assert t.get(job["id"])["status"] == "failed" and "a bug" in t.get(job["id"])["error"]
        return
    with pytest.raises(KeyboardInterrupt):
        worker.train(job)
    assert t.get(job["id"])["status"] == "training"  # (``Supervisor.stop`` queues it again, the attempt refunded)
    worker.run(poll=0.01)  # returns at once: a stopping worker claims nothing
    assert t.get("b" * 20)["status"] == "queued"


def test_restart_picks_up_queued_and_interrupted_jobs(tiny_model_dir, tmp_path):
    server = Server(tiny_model_dir, tmp_path, name="first").start()
    long_id = server.post(DOCS[1] * 3, settings={"epochs": 100_000})["id"]  # never done: deleted below
    queued_id = server.post(DOCS[2])["id"]
    server.wait(long_id, statuses=("training",), timeout=120)
    assert server.document(queued_id)["status"] == "queued"
    server.stop()

    t = JobTable(server.state / "jobs.sqlite")  # what the stopped server left
    left = {t.get(long_id)["status"], t.get(queued_id)["status"]}
    assert left == {"queued"}, (t.get(long_id)["error"], server.read_log())
    assert t.get(long_id)["attempts"] == 0  # a clean stop is not counted against the job
    t.close()
    assert not (server.store / long_id).exists()

    again = Server(tiny_model_dir, tmp_path, name="second").start()
    try:
        with again.client() as c:
            c.delete(f"/v1/documents/{long_id}")  # (it would train for hours)
        job = again.wait(queued_id, timeout=180)
        assert job["status"] == "ready" and job["attempts"] == 1
        read_metadata(job["adapter"])
        r = again.ask(queued_id, "Where was the telescope made?")
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    finally:
        again.stop()


@pytest.mark.parametrize("argv,env,message", [
    (["--host", "0.0.0.0"], {}, "LIFTLM_API_TOKEN"),
    (["--port", "0"], {}, "--port"),
    (["--max-loaded-adapters", "0"], {}, "--max-loaded-adapters"),
    (["--max-upload-mb", "-1"], {}, "--max-upload-mb"),
    (["--finetune", "full"], {}, "LoRA"),
    (["--epochs", "-2"], {}, "--epochs"),
    (["--model", "/no/such/model"], {}, "--model"),
    (["--ray-cpus", "1"], {}, "goes with --ray"),
    (["--ray", "127.0.0.1:1"], {}, "nothing answers at 127.0.0.1:1"),
    (["--ray", "--ray-jobs", "-1"], {}, "--ray-jobs"),
    (["--ray", "--ray-cpus", "0"], {}, "--ray-cpus and --ray-gpus are both 0"),
    (["--ray", "--ray-gpus", "1.5"], {}, "--ray-gpus"),
])
def test_serve_refuses_bad_flags_before_starting(argv, env, message, capsys, monkeypatch):
    from liftlm.cli import main

    monkeypatch.delenv("LIFTLM_API_TOKEN", raising=False)
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("liftlm: error:") and message in err[0]


def test_binding_beyond_loopback_needs_the_token(monkeypatch):
    from liftlm.cli import build_parser
    from liftlm.serve.cli import is_loopback, serve_settings

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    monkeypatch.setenv("LIFTLM_API_TOKEN", "s3cret")
    settings = serve_settings(build_parser().parse_args(["serve", "--host", "0.0.0.0", "--epochs", "3"]))
    assert settings.token == "s3cret" and settings.defaults.epochs == 3


def test_progress_records_tell_the_teacher_from_training():
    """The job table's progress record of each ``StepProgress``: the distillation teacher's (prompts answered,
    before training), a training step, and the last step (saving)."""
    from liftlm.loop import StepProgress
    from liftlm.serve.worker import step_progress

    teacher = step_progress(StepProgress(0, 2, 30, 144, float("nan"), stage="teacher"))
    assert teacher == {"stage": "teacher", "epoch": 0, "epochs": 2, "step": 30, "steps": 144, "loss": None}
    json.dumps(teacher, allow_nan=False)  # the page reads it as JSON: no NaN
    assert step_progress(StepProgress(0, 2, 3, 10, 1.234567)) == {"stage": "training", "epoch": 1, "epochs": 2,
                                                                  "step": 3, "steps": 10, "loss": 1.23457}
    assert step_progress(StepProgress(1, 2, 10, 10, 0.5))["stage"] == "saving"
