"""The training worker: a process of its own, so that the web process keeps answering while a document trains.

It loads the model once, then claims queued jobs from the job table one at a time and runs
``Lift.internalize`` on each, reporting progress from the trainer's ``on_step`` hook. The job turns ``ready`` only
after the store has renamed the finished adapter into place and the adapter reads back as complete. A job that
is deleted while it trains is abandoned at the next optimizer step (nothing is stored). The worker exits when
the web process that started it is gone.

    python -m liftlm.serve.worker --jobs STATE/jobs.sqlite [--model M] [--store DIR] [--device D] --parent PID
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
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


class Abandoned(Exception):
    """The job is no longer this worker's (deleted, or taken back), or the web process is gone."""


def log(message: str) -> None:
    print(f"liftlm serve: worker {os.getpid()}: {message}", file=sys.stderr, flush=True)


def _has_lora(model) -> bool:
    return hasattr(model, "peft_config") or any("lora_" in name for name, _ in model.named_modules())


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
        while self.parent_alive():
            job = self.table.claim(self.pid)
            if job is None:
                time.sleep(poll)
                continue
            self.train(job)
        log("the web process is gone; exiting")

    def train(self, job: dict) -> None:
        from ..recipe import Lift

        doc_id = job["id"]
        start = time.monotonic()
        last = [0.0]

        def on_step(p) -> None:
            if not self.parent_alive():
                raise Abandoned("the web process is gone")
            now = time.monotonic()
            final = p.step >= p.steps
            if not final and now - last[0] < self.progress_interval:
                return
            last[0] = now
            stage = "saving" if final else "training"
            progress = {"stage": stage, "epoch": p.epoch + 1, "epochs": p.epochs, "step": p.step,
                        "steps": p.steps, "loss": round(float(p.loss), 5)}
            if not self.table.progress(doc_id, self.pid, progress):
                raise Abandoned("the job was deleted or taken back")

        log(f"training {doc_id} ({job['tokens']} tokens, attempt {job['attempts']})")
        lift = None
        try:
            config = LiftConfig.from_dict(job["settings"])
            lift = Lift(self.model_spec, config, store=self.store, progress=False, loaded=self.loaded,
                        on_step=on_step)
            done = lift.internalize(job["text"])
            if done.adapter.name != doc_id:
                raise LiftError(f"the adapter was stored as {done.adapter.name}, not under the job's id {doc_id} "
                                "(the settings changed between the web process and the worker)")
            meta = read_metadata(done.adapter)  # complete and readable before it is called ready
            training = meta.get("training", {})
            steps = training.get("steps", 0)
            progress = {"stage": "ready", "epoch": config.epochs, "epochs": config.epochs, "step": steps,
                        "steps": steps, "loss": (training.get("loss_curve") or [None])[-1]}
            seconds = round(time.monotonic() - start, 3)
            if self.table.finish(doc_id, self.pid, str(done.adapter), seconds, progress):
                log(f"ready {doc_id} in {seconds:.1f} s ({'trained' if done.trained else 'reused the stored adapter'})")
            else:
                log(f"{doc_id} was deleted while it trained; its adapter stays in the store")
        except Abandoned as e:
            log(f"abandoned {doc_id}: {e}")
        except LiftError as e:
            log(f"failed {doc_id}: {e}")
            self.table.fail_owned(doc_id, self.pid, str(e))
        except Exception as e:  # a bug or an exhausted device: the job fails with the reason, the worker goes on
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liftlm.serve.worker")
    p.add_argument("--jobs", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--store", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--parent", type=int, default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Writing model shards" bar per adapter

    def stop(signum, frame):  # SIGTERM from the web process: unwind, so a half-written adapter is removed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    from ..options import quiet_libraries

    quiet_libraries()
    try:
        Worker(args.jobs, args.model, args.store, args.device, args.parent).run()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
