"""The training worker's supervisor, in the web process (``python -m liftlm.serve.worker`` is the worker)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from .jobs import JobTable
from .settings import ServeSettings, log
from .worker import terminate


class Supervisor:
    """Starts the training worker process, restarts it when it dies, and puts the job it held back in the queue
    (or fails it after ``max_attempts``)."""

    def __init__(self, settings: ServeSettings, table: JobTable):
        self.settings, self.table = settings, table
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = False
        self._watcher: asyncio.Task | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "liftlm.serve.worker", "--jobs", str(self.settings.jobs_path),
               "--parent", str(os.getpid())]
        for flag, value in (("--model", self.settings.model), ("--store", self.settings.store),
                            ("--device", self.settings.device)):
            if value is not None:
                cmd += [flag, str(value)]
        if self.settings.ray is not None:
            s = self.settings
            cmd += ["--ray", s.ray, "--ray-cpus", str(s.ray_cpus), "--ray-gpus", str(s.ray_gpus),
                    "--ray-retries", str(s.ray_retries), "--ray-jobs", str(s.ray_jobs)]
        return cmd

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command())
        log(f"training worker started (pid {self.proc.pid})")

    def start_watching(self) -> None:
        """Watch the worker in the background (``watch``) until ``close``."""
        self._watcher = asyncio.create_task(self.watch())

    async def watch(self) -> None:
        backoff = 0.5
        while not self._stopping:
            await asyncio.sleep(0.3)
            if self._stopping or self.proc is None:
                continue
            rc = self.proc.poll()
            if rc is None:
                backoff = 0.5
                continue
            reason = f"the training worker (pid {self.proc.pid}) exited with status {rc}"
            ids = self.table.requeue_orphans(None, self.settings.max_attempts, reason)
            log(reason + (f"; its job {', '.join(ids)} is queued again (or failed after "
                          f"{self.settings.max_attempts} attempts)" if ids else ""))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            if not self._stopping:
                self.restarts += 1
                self.start()

    async def close(self) -> None:
        """Stop watching, then stop the worker (off the event loop: it may wait for the worker to exit)."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
        await asyncio.to_thread(self.stop)

    def stop(self) -> None:
        self._stopping = True
        terminate(self.proc, 15)
        self.table.requeue_orphans(None, self.settings.max_attempts, "the server stopped", refund=True)

    def info(self) -> dict:
        alive = self.proc is not None and self.proc.poll() is None
        ray = None if self.settings.ray is None else (self.settings.ray or "local")
        return {"pid": self.proc.pid if self.proc else None, "alive": alive, "restarts": self.restarts, "ray": ray}
