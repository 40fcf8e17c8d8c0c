"""The service's settings (``ServeSettings``, from the ``serve`` verb's flags) and its log line."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..config import LiftConfig


@dataclass
class ServeSettings:
    model: str | None = None
    device: str | None = None
    store: str | None = None
    state: str | Path = "serve-state"  # the job table lives here
    defaults: LiftConfig = field(default_factory=LiftConfig)
    token: str | None = None  # bearer token for /v1 (required when binding beyond the loopback)
    max_upload_bytes: int = 20 * 1024 * 1024
    max_loaded_adapters: int = 8
    max_attempts: int = 3  # a job whose worker dies this many times fails
    max_new_tokens_limit: int = 1024
    worker: bool = True  # start the training worker (off only for tests of the web process alone)
    ray: str | None = None  # train on Ray: None off, "" a new local instance, else the cluster's address
    ray_cpus: float = 1
    ray_gpus: float = 0
    ray_retries: int = 3
    ray_jobs: int = 0  # jobs training at once on Ray (0: as many as the cluster's resources fit)

    @property
    def jobs_path(self) -> Path:
        """The job table's SQLite file, under ``state``."""
        return Path(self.state).expanduser() / "jobs.sqlite"


def log(message: str) -> None:
    print(f"liftlm serve: {message}", file=sys.stderr, flush=True)
