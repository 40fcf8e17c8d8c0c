"""An evaluation's directory (``--out``): its ``predictions.jsonl`` and ``judge.jsonl`` appended to answer by
answer, and its ``run.json``: what the results depend on (a rerun with other settings is refused), how and when
they were made."""
from __future__ import annotations

import datetime as _dt
import json
import subprocess
from pathlib import Path

from ..config import LiftConfig
from ..errors import LiftError
from ..version import __version__
from .spec import EvalSpec

PREDICTIONS = "predictions.jsonl"
JUDGMENTS = "judge.jsonl"
RUN_FILE = "run.json"


def git_revision() -> dict | None:
    """The commit of the liftlm checkout this code runs from, and whether it has local changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=False,
                                capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def check_out_dir(spec: EvalSpec, config: LiftConfig) -> dict | None:
    """The ``run.json`` already in ``--out`` (None for a new run); refuse one from a different run."""
    out = spec.out
    if out.exists() and not out.is_dir():
        raise LiftError(f"--out: {out} is a file; give a directory")
    path = out / RUN_FILE
    if not path.is_file():
        if (out / PREDICTIONS).exists():
            raise LiftError(f"--out: {out} holds predictions but no {RUN_FILE}; use another --out")
        return None
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LiftError(f"--out: {path} is not valid JSON; fix it or use another --out") from None
    old, new = previous.get("identity", {}), json.loads(json.dumps(spec.identity(config)))
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if "settings" in keys:
        o, n = old.get("settings", {}), new["settings"]
        keys.remove("settings")
        keys += sorted(k for k in set(o) | set(n) if o.get(k) != n.get(k))
    differ = ["--needle/--question/--keywords" if k == "needle" else "--" + k.replace("_", "-") for k in keys]
    if differ:
        raise LiftError(f"--out: {out} holds results of a different run (differs in: {', '.join(differ)}); "
                        "pass another --out to keep both, or delete it")
    return previous


def write_run_file(spec: EvalSpec, config: LiftConfig, previous: dict | None, extra: dict) -> dict:
    """Write ``run.json``: the run's identity, settings, provenance (git, date) and the history of its starts."""
    git = git_revision()
    own = spec.options.run_fields()  # the benchmark's: tasks, documents, max_doc_tokens (loogle, longbench), grid
    history = list((previous or {}).get("history", []))
    history.append({"date": now(), "git": git, "methods": list(spec.methods), "limit": spec.limit,
                    "documents": own.get("documents"), "argv": spec.argv})
    meta = {
        "identity": spec.identity(config),
        "benchmark": spec.benchmark,
        "data": spec.data,
        "tasks": own.get("tasks", []),
        "methods": list(spec.methods),
        "limit": spec.limit,
        "documents": own.get("documents"),
        "max_doc_tokens": own.get("max_doc_tokens"),
        "max_new_tokens": spec.max_new_tokens,
        "model": spec.model,
        "config": config.resolved_dict(),
        "seed": config.seed,
        "data_seed": spec.data_seed,
        "judge": spec.judge,
        "liftlm_version": __version__,
        "git": git,
        "date": now(),
        "started": (previous or {}).get("started") or now(),
        **extra,
        "history": history,
    }
    if "grid" in own:  # the documents a synthetic benchmark builds
        meta["grid"] = own["grid"]
    spec.out.mkdir(parents=True, exist_ok=True)
    tmp = spec.out / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(spec.out / RUN_FILE)
    return meta
