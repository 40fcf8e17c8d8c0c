"""The job table: one row per document (its id is the adapter-store key), in SQLite, shared by the web process
and the training worker.

A job moves ``queued`` → ``training`` → ``ready`` | ``failed``. Only the worker that claimed a job (its pid is
recorded) can report progress on it or finish it, and it finishes it only after the adapter is in the store (the
store writes a directory atomically), so a job is never ``ready`` with a half-written adapter. A worker that died
leaves its job ``training`` with a dead pid: the web process puts it back in the queue (or fails it after
``max_attempts``), at once when it notices and again at every start.

Every change of a job is also appended to ``events`` (a global sequence number is the server-sent event id), so a
client can follow a document's progress and resume after a reconnect (``Last-Event-ID``).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

STATUSES = ("queued", "training", "ready", "failed")
DONE = ("ready", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    status TEXT NOT NULL,
    settings TEXT NOT NULL,      -- JSON: every LiftConfig field, the window resolved to a number
    text TEXT NOT NULL,          -- the document
    tokens INTEGER NOT NULL,     -- its length in the model's tokens
    progress TEXT NOT NULL,      -- JSON: {stage, epoch, epochs, step, steps, loss}
    error TEXT,
    adapter TEXT,
    seconds REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker_pid INTEGER,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_id ON events (id, seq);
"""

EMPTY_PROGRESS = {"stage": "queued", "epoch": None, "epochs": None, "step": 0, "steps": None, "loss": None}


class JobTable:
    """The SQLite job table at ``path`` (created on first use). Safe to share between threads; several processes
    may open the same file (WAL mode, a busy timeout, and claims in ``BEGIN IMMEDIATE`` transactions)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- internals ---
    def _tx(self, fn):
        """Run ``fn(db)`` in one write transaction (taken at once, so concurrent writers queue)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return out

    @staticmethod
    def _row(db, doc_id: str):
        return db.execute("SELECT * FROM jobs WHERE id = ?", (doc_id,)).fetchone()

    @staticmethod
    def _event(db, doc_id: str) -> None:
        row = JobTable._row(db, doc_id)
        db.execute("INSERT INTO events (id, data) VALUES (?, ?)", (doc_id, json.dumps(public(row))))

    def _set(self, db, doc_id: str, **fields) -> None:
        fields["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), doc_id))
        self._event(db, doc_id)

    # --- the web process ---
    def submit(self, doc_id: str, title: str, settings: dict, text: str, tokens: int,
               adapter: str | None = None) -> tuple[dict, bool]:
        """Add a document (``queued``, or ``ready`` at once when its adapter is already stored); a document that
        is already here is left as it is, except a ``failed`` one, which is queued again. Returns the job and
        whether a training was queued."""
        def tx(db):
            row = self._row(db, doc_id)
            now = time.time()
            if row is None:
                status = "ready" if adapter else "queued"
                progress = {**EMPTY_PROGRESS, "stage": status}
                db.execute("INSERT INTO jobs (id, title, status, settings, text, tokens, progress, adapter, seconds, "
                           "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (doc_id, title, status, json.dumps(settings), text, tokens, json.dumps(progress),
                            adapter, 0.0 if adapter else None, now, now))
                self._event(db, doc_id)
                return public(self._row(db, doc_id)), status == "queued"
            if row["status"] == "failed":
                self._set(db, doc_id, status="queued", error=None, attempts=0, worker_pid=None,
                          progress=json.dumps(EMPTY_PROGRESS))
                return public(self._row(db, doc_id)), True
            return public(row), False
        return self._tx(tx)

    def get(self, doc_id: str, with_text: bool = False) -> dict | None:
        with self._lock:
            row = self._row(self._db, doc_id)
        if row is None:
            return None
        job = public(row)
        if with_text:
            job["text"] = row["text"]
        return job

    def list(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY created, id").fetchall()
        return [public(r) for r in rows]

    def delete(self, doc_id: str) -> bool:
        def tx(db):
            gone = db.execute("DELETE FROM jobs WHERE id = ?", (doc_id,)).rowcount
            db.execute("DELETE FROM events WHERE id = ?", (doc_id,))
            return gone > 0
        return self._tx(tx)

    def events_after(self, doc_id: str, seq: int) -> list[tuple[int, dict]]:
        with self._lock:
            rows = self._db.execute("SELECT seq, data FROM events WHERE id = ? AND seq > ? ORDER BY seq",
                                    (doc_id, seq)).fetchall()
        return [(r["seq"], json.loads(r["data"])) for r in rows]

    def last_event(self, doc_id: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) AS s FROM events WHERE id = ?", (doc_id,)).fetchone()
        return row["s"] or 0

    def fail(self, doc_id: str, error: str) -> None:
        """Mark a job failed from the web process (e.g. its stored adapter turned out broken)."""
        self._tx(lambda db: self._set(db, doc_id, status="failed", error=error, worker_pid=None,
                                      progress=json.dumps({**EMPTY_PROGRESS, "stage": "failed"}))
                 if self._row(db, doc_id) else None)

    def requeue_orphans(self, live_pid: int | None, max_attempts: int, reason: str, refund: bool = False) -> list[str]:
        """Jobs ``training`` under a worker other than ``live_pid`` (dead, or from before a restart): queued
        again, or ``failed`` once they have been tried ``max_attempts`` times. ``refund``: the attempt was cut
        short on purpose (the server stopped) and does not count. Returns their ids."""
        def tx(db):
            rows = db.execute("SELECT id, attempts FROM jobs WHERE status = 'training' AND "
                              "(worker_pid IS NULL OR worker_pid != ?)", (live_pid or -1,)).fetchall()
            for r in rows:
                if not refund and r["attempts"] >= max_attempts:
                    self._set(db, r["id"], status="failed", worker_pid=None,
                              error=f"{reason}; gave up after {r['attempts']} attempts",
                              progress=json.dumps({**EMPTY_PROGRESS, "stage": "failed"}))
                else:
                    attempts = max(r["attempts"] - 1, 0) if refund else r["attempts"]
                    self._set(db, r["id"], status="queued", worker_pid=None, error=None, attempts=attempts,
                              progress=json.dumps({**EMPTY_PROGRESS, "stage": "queued", "note": reason}))
            return [r["id"] for r in rows]
        return self._tx(tx)

    def counts(self) -> dict:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        return {s: 0 for s in STATUSES} | {r["status"]: r["n"] for r in rows}

    # --- the worker ---
    def claim(self, pid: int) -> dict | None:
        """The oldest queued job, now ``training`` under ``pid`` (with its text and settings), or None."""
        def tx(db):
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created, id LIMIT 1").fetchone()
            if row is None:
                return None
            doc_id = row["id"]
            attempts = self._row(db, doc_id)["attempts"] + 1
            self._set(db, doc_id, status="training", worker_pid=pid, attempts=attempts, error=None,
                      progress=json.dumps({**EMPTY_PROGRESS, "stage": "preparing"}))
            full = self._row(db, doc_id)
            return {**public(full), "text": full["text"], "settings": json.loads(full["settings"])}
        return self._tx(tx)

    def _owned(self, db, doc_id: str, pid: int) -> bool:
        row = self._row(db, doc_id)
        return row is not None and row["status"] == "training" and row["worker_pid"] == pid

    def progress(self, doc_id: str, pid: int, progress: dict) -> bool:
        """Record the worker's progress; False when the job is no longer its own (deleted or taken back)."""
        def tx(db):
            if not self._owned(db, doc_id, pid):
                return False
            self._set(db, doc_id, progress=json.dumps(progress))
            return True
        return self._tx(tx)

    def finish(self, doc_id: str, pid: int, adapter: str, seconds: float, progress: dict) -> bool:
        """``ready``: call only once the adapter is complete in the store."""
        def tx(db):
            if not self._owned(db, doc_id, pid):
                return False
            self._set(db, doc_id, status="ready", adapter=adapter, seconds=seconds, worker_pid=None,
                      progress=json.dumps(progress))
            return True
        return self._tx(tx)

    def fail_owned(self, doc_id: str, pid: int, error: str) -> bool:
        def tx(db):
            if not self._owned(db, doc_id, pid):
                return False
            self._set(db, doc_id, status="failed", error=error, worker_pid=None,
                      progress=json.dumps({**EMPTY_PROGRESS, "stage": "failed"}))
            return True
        return self._tx(tx)


def public(row) -> dict:
    """What the API shows of a job (no document text)."""
    settings = json.loads(row["settings"])
    return {
        "id": row["id"],
        "title": row["title"],
        "status": row["status"],
        "progress": json.loads(row["progress"]),
        "error": row["error"],
        "adapter": row["adapter"],
        "seconds": row["seconds"],
        "tokens": row["tokens"],
        "attempts": row["attempts"],
        "settings": settings,
        "created": row["created"],
        "updated": row["updated"],
    }
