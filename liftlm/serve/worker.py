"""The training worker: a process of its own, so that the web process keeps answering while a document trains.

It loads the model once, then claims queued jobs from the job table one at a time and runs
``Lift.internalize`` on each, reporting progress from the trainer's ``on_step`` hook. The job turns ``ready`` only
after the store has renamed the finished adapter into place and the adapter reads back as complete. A job that
is deleted while it trains is abandoned at the next optimizer step (nothing is stored). The worker exits when
the web process that started it is gone.

    python -m liftlm.serve.worker --jobs STATE/jobs.sqlite [--model M] [--store DIR] [--device D] --parent PID
        [--ray ADDRESS --ray-cpus C --ray-gpus G --ray-retries R --ray-jobs N]

With ``--ray`` the jobs train as Ray tasks on a cluster instead (:class:`RayWorker`).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback

from ..adapters import read_metadata
from ..config import LiftConfig
from ..errors import LiftError
from .jobs import JobTable


def terminate(proc, timeout: float) -> None:
    """Stop a child process: SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
    import subprocess

    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_STOP = threading.Event()  # set by SIGTERM (``main``): the worker is stopping


def stopping() -> bool:
    """Whether this worker has been told to stop (SIGTERM from the web process)."""
    return _STOP.is_set()


def stop_now(signum=None, frame=None) -> None:
    """SIGTERM's handler: mark the worker as stopping and unwind (a ``KeyboardInterrupt``), so that a half-written
    adapter is removed and the running step is checkpointed."""
    _STOP.set()
    raise KeyboardInterrupt


class Abandoned(Exception):
    """The job is no longer this worker's (deleted, or taken back), or the web process is gone."""


def log(message: str) -> None:
    print(f"liftlm serve: worker {os.getpid()}: {message}", file=sys.stderr, flush=True)


def _has_lora(model) -> bool:
    return hasattr(model, "peft_config") or any("lora_" in name for name, _ in model.named_modules())


def step_progress(p) -> dict:
    """The job table's progress record for a trainer's ``StepProgress`` (or the distillation teacher's: prompts
    answered of all)."""
    if p.stage == "teacher":
        return {"stage": "teacher", "epoch": 0, "epochs": p.epochs, "step": p.step, "steps": p.steps, "loss": None}
    final = p.step >= p.steps
    return {"stage": "saving" if final else "training", "epoch": p.epoch + 1, "epochs": p.epochs, "step": p.step,
            "steps": p.steps, "loss": round(float(p.loss), 5)}


def throttled(report, interval: float):
    """A trainer's ``on_step`` hook that calls ``report(p)`` at most once every ``interval`` seconds, and always
    for the last step."""
    last = 0.0

    def on_step(p) -> None:
        nonlocal last
        now = time.monotonic()
        if p.step < p.steps and now - last < interval:
            return
        last = now
        report(p)

    return on_step


def check_stored_as(adapter, doc_id: str) -> None:
    """Refuse an adapter stored under another key than the job's id (the web process computed the id)."""
    name = os.path.basename(adapter)
    if name != doc_id:
        raise LiftError(f"the adapter was stored as {name}, not under the job's id {doc_id} "
                        "(the settings changed between the web process and the worker)")


def ready_progress(adapter) -> tuple[dict, dict]:
    """(metadata, the ``ready`` progress record) of a stored adapter; raises if it does not read back whole."""
    meta = read_metadata(adapter)
    training = meta.get("training", {})
    steps, epochs = training.get("steps", 0), meta.get("settings", {}).get("epochs")
    return meta, {"stage": "ready", "epoch": epochs, "epochs": epochs, "step": steps, "steps": steps,
                  "loss": (training.get("loss_curve") or [None])[-1]}


class Worker:
    def __init__(self, jobs: str, model: str | None, store: str | None, device: str | None, parent: int | None,
                 progress_interval: float = 0.2):
        from ..models import load_model

        self.table = JobTable(jobs)
        self.model_spec, self.store, self.device = model, store, device
        self.parent = parent
        self.pid = os.getpid()
        self.progress_interval = progress_interval
        self.loaded = load_model(model, device)

    def parent_alive(self) -> bool:
        return self.parent is None or os.getppid() == self.parent

    def run(self, poll: float = 0.25) -> None:
        log(f"ready (model {self.loaded.model_id})")
        while self.parent_alive() and not stopping():
            job = self.table.claim(self.pid)
            if job is None:
                time.sleep(poll)
                continue
            self.train(job)
        log("stopping" if stopping() else "the web process is gone; exiting")

    def train(self, job: dict) -> None:
        from ..recipe import Lift

        doc_id = job["id"]
        start = time.monotonic()

        def save_progress(p) -> None:
            if not self.table.progress(doc_id, self.pid, step_progress(p)):
                raise Abandoned("the job was deleted or taken back")

        report = throttled(save_progress, self.progress_interval)

        def on_step(p) -> None:
            if not self.parent_alive():
                raise Abandoned("the web process is gone")
            report(p)

        log(f"training {doc_id} ({job['tokens']} tokens, attempt {job['attempts']})")
        lift = None
        try:
            config = LiftConfig.from_dict(job["settings"])
            lift = Lift(self.model_spec, config, store=self.store, progress=False, loaded=self.loaded,
                        on_step=on_step)
            done = lift.internalize(job["text"])
            check_stored_as(done.adapter, doc_id)
            _, progress = ready_progress(done.adapter)  # complete and readable before it is called ready
            seconds = round(time.monotonic() - start, 3)
            if self.table.finish(doc_id, self.pid, str(done.adapter), seconds, progress):
                log(f"ready {doc_id} in {seconds:.1f} s ({'trained' if done.trained else 'reused the stored adapter'})")
            else:
                log(f"{doc_id} was deleted while it trained; its adapter stays in the store")
        except Abandoned as e:
            log(f"abandoned {doc_id}: {e}")
        except Exception as e:
            if stopping():  # the stop, turned into another error on its way out (e.g. by a cleanup it cut short):
                raise KeyboardInterrupt from e  # the job is not failed; the web process queues it again
            if isinstance(e, LiftError):
                log(f"failed {doc_id}: {e}")
                self.table.fail_owned(doc_id, self.pid, str(e))
            else:  # a bug or an exhausted device: the job fails with the reason, the worker goes on
                traceback.print_exc()
                self.table.fail_owned(doc_id, self.pid, f"{type(e).__name__}: {e}")
        finally:
            self._clean(lift, job["text"])

    def _clean(self, lift, text: str) -> None:
        """Leave the base model without LoRA layers for the next job (reload it if that cannot be undone)."""
        if lift is not None:
            try:
                lift.read(text)  # drops the current adapter: unloads LoRA from the shared base model
            except Exception:
                pass
        if _has_lora(self.loaded.model):
            from ..models import load_model

            self.loaded = load_model(self.model_spec, self.device)


def train_on_ray(job, doc_id: str, text: str, queue, interval: float) -> dict:
    """The body of one Ray task of ``serve --ray``: ``liftlm.batch``'s task (threads and device as Ray assigned
    them, the worker's model kept loaded between documents), its progress sent back through ``queue``."""
    from dataclasses import replace

    from ..batch import _ray_task

    on_step = throttled(lambda p: queue.put_nowait((doc_id, step_progress(p))), interval)
    return _ray_task(replace(job, on_step=on_step), doc_id, text)


class RayWorker:
    """``serve --ray``: each job trains as a Ray task on the cluster (up to ``jobs`` at once: by default as many
    as the cluster's CPUs or GPUs fit). This process loads no model: it claims jobs, relays the tasks' progress
    to the job table, cancels a task whose job was deleted, and calls a job ``ready`` only once its adapter reads
    back whole from the store, which must be a folder every node sees. A task whose Ray worker dies is re-run
    (``retries``); a task that fails for good fails its job with the reason."""

    def __init__(self, jobs: str, model: str | None, store: str | None, device: str | None, parent: int | None,
                 address: str | None, cpus: float = 1, gpus: float = 0, retries: int = 3, max_jobs: int = 0,
                 progress_interval: float = 0.5):
        from ..adapters import AdapterStore
        from ..batch import BatchJob, check_ray_resources, connect_ray, ray_module

        check_ray_resources(cpus, gpus, retries)
        self.table = JobTable(jobs)
        self.parent, self.pid = parent, os.getpid()
        self.address, self.cpus, self.gpus, self.max_jobs = address, cpus, gpus, max_jobs
        self.progress_interval = progress_interval
        self.template = BatchJob(model=model, config={}, store=str(AdapterStore(store).root.resolve()),
                                 device=device)
        self.ray = ray_module()
        self.started = connect_ray(address)
        from ray.util.queue import Queue

        self.queue = Queue()
        self.task = self.ray.remote(train_on_ray).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries,
                                                          retry_exceptions=False, name="liftlm-serve-train")
        self.retries = retries
        self.running: dict[str, tuple[object, float]] = {}  # document id -> (task, start)
        self._capacity, self._capacity_at = 1, -1e9

    parent_alive = Worker.parent_alive

    def capacity(self) -> int:
        """How many jobs may train at once: ``max_jobs``, or what the cluster's resources fit (rechecked every
        10 s, as nodes join and leave)."""
        if self.max_jobs:
            return self.max_jobs
        now = time.monotonic()
        if now - self._capacity_at > 10:
            res = self.ray.cluster_resources()
            fits = [res.get("CPU", 0) // self.cpus] if self.cpus else []
            if self.gpus:
                fits.append(res.get("GPU", 0) // self.gpus)
            self._capacity, self._capacity_at = max(1, int(min(fits, default=1))), now
        return self._capacity

    def run(self, poll: float = 0.25) -> None:
        where = f"the Ray cluster at {self.address}" if self.address else "a new local Ray instance"
        log(f"ready: training on {where} ({self.capacity()} job(s) at once, {self.cpus:g} CPU "
            f"{self.gpus:g} GPU each)")
        try:
            while self.parent_alive() and not stopping():
                self.submit()
                self.relay()
                self.collect(poll)
            log("stopping" if stopping() else "the web process is gone; exiting")
        finally:
            for ref, _ in self.running.values():  # unwinds the task: nothing half-written stays in the store
                self.ray.cancel(ref)
            if self.started:
                self.ray.shutdown()

    def submit(self) -> None:
        from dataclasses import replace

        while len(self.running) < self.capacity():
            job = self.table.claim(self.pid)
            if job is None:
                return
            doc_id = job["id"]
            log(f"sending {doc_id} to Ray ({job['tokens']} tokens, attempt {job['attempts']})")
            task = replace(self.template, config=job["settings"])
            ref = self.task.remote(task, doc_id, job["text"], self.queue, self.progress_interval)
            self.running[doc_id] = (ref, time.monotonic())

    def relay(self) -> None:
        latest: dict[str, dict] = {}
        n = self.queue.size()
        if n:
            for doc_id, progress in self.queue.get_nowait_batch(n):
                latest[doc_id] = progress
        for doc_id, progress in latest.items():
            if doc_id in self.running and not self.table.progress(doc_id, self.pid, progress):
                ref, _ = self.running.pop(doc_id)
                self.ray.cancel(ref)
                log(f"abandoned {doc_id}: the job was deleted or taken back")

    def collect(self, poll: float) -> None:
        if not self.running:
            time.sleep(poll)
            return
        refs = {ref: doc_id for doc_id, (ref, _) in self.running.items()}
        done, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=poll)
        for ref in done:
            doc_id = refs[ref]
            _, start = self.running.pop(doc_id)
            self.finish(doc_id, ref, round(time.monotonic() - start, 3))

    def finish(self, doc_id: str, ref, seconds: float) -> None:
        try:
            row = self.ray.get(ref)
        except self.ray.exceptions.TaskCancelledError:
            return
        except Exception as e:  # noqa: BLE001 - its Ray worker died on every try, or its node was lost
            if stopping():
                raise KeyboardInterrupt from e  # (the job is queued again, not failed)
            error = f"the Ray task failed after {self.retries} retries: {type(e).__name__}: {e}".splitlines()[0]
            log(f"failed {doc_id}: {error}")
            self.table.fail_owned(doc_id, self.pid, error)
            return
        if row["status"] == "failed":
            log(f"failed {doc_id}: {row['error']}")
            self.table.fail_owned(doc_id, self.pid, row["error"])
            return
        adapter = row["adapter"]
        try:
            check_stored_as(adapter, doc_id)
            _, progress = ready_progress(adapter)  # the store is shared: it must read back whole from here
        except (LiftError, OSError, ValueError) as e:
            self.table.fail_owned(doc_id, self.pid, f"{type(e).__name__}: {e}")
            return
        if self.table.finish(doc_id, self.pid, adapter, seconds, progress):
            log(f"ready {doc_id} in {seconds:.1f} s on {row['node']} ({row['status']})")
        else:
            log(f"{doc_id} was deleted while it trained; its adapter stays in the store")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liftlm.serve.worker")
    p.add_argument("--jobs", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--store", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--parent", type=int, default=None)
    p.add_argument("--ray", default=None, help="train on Ray: the cluster's address, or '' for a local instance")
    p.add_argument("--ray-cpus", type=float, default=1)
    p.add_argument("--ray-gpus", type=float, default=0)
    p.add_argument("--ray-retries", type=int, default=3)
    p.add_argument("--ray-jobs", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Writing model shards" bar per adapter

    signal.signal(signal.SIGTERM, stop_now)
    from ..options import quiet_libraries

    quiet_libraries()
    try:
        if args.ray is None:
            Worker(args.jobs, args.model, args.store, args.device, args.parent).run()
        else:
            RayWorker(args.jobs, args.model, args.store, args.device, args.parent, args.ray or None,
                      args.ray_cpus, args.ray_gpus, args.ray_retries, args.ray_jobs).run()
    except KeyboardInterrupt:
        return 130
    except LiftError as e:  # e.g. the Ray cluster cannot be reached
        log(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
