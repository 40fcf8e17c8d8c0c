"""Batch internalization: one adapter per document for many documents, in one process or as Ray tasks.

    liftlm internalize --documents DIR_OR_JSONL [--results FILE] [--ray [ADDRESS]] [--ray-cpus N] [--ray-gpus G]

* Documents: a folder of text files (id = the file name without its suffix) or a JSONL file, one
  ``{"id"?, "text"}`` per line (id defaults to ``line<N>``). Ids name the adapters for serving (``model=<id>``
  in vLLM), so they are restricted to letters, digits, ``.``, ``_`` and ``-``.
* Every document gets one row in the results JSONL (``document, adapter, status, seconds, error``, plus the
  store key, the served name link and the node): ``trained``, ``stored`` (already in the store: skipped) or
  ``failed`` (the run goes on with the others).
* With Ray each unique document is one task (``max_retries`` re-runs it when its worker dies). A task is
  idempotent: it first looks the adapter up in the store, and the store writes an adapter to a temporary
  folder renamed into place, so a retried or duplicated task never leaves two adapters or half of one. The store
  must be a folder every node sees (NFS, a cluster file system).
* After each adapter lands, ``<names>/<id>`` (default: ``names/`` beside the store) is pointed at it, so
  vLLM's filesystem LoRA resolver finds it by document id (``liftlm.vllm``, docs/deploy.md).
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .documents import check_document
from .errors import LiftError

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STATUSES = ("trained", "stored", "failed")


@dataclass
class Document:
    id: str
    text: str | None  # None when the document could not be read; ``error`` says why
    source: str
    error: str | None = None


def _check_id(doc_id, where: str) -> str:
    if not isinstance(doc_id, str) or not ID_PATTERN.match(doc_id):
        raise LiftError(f"--documents: {where}: id {doc_id!r} is not a usable name (1-128 letters, digits, "
                        "'.', '_' or '-', starting with a letter or digit)")
    return doc_id


def _decode(data: bytes, source: str) -> tuple[str | None, str | None]:
    """(text, error) for one document's bytes: a bad document fails alone, it does not stop the batch."""
    if b"\x00" in data:
        return None, f"{source} is a binary file; give a UTF-8 text document"
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        return None, f"{source} is not UTF-8 text (byte {e.start})"
    try:
        return check_document(text, source), None
    except LiftError as e:
        return None, str(e)


def read_documents(path: str | Path) -> list[Document]:
    """The documents of a folder of text files or of a JSONL file. A malformed list (no such path, no
    documents, a line that is not a JSON object with a string ``text``, a bad or repeated id) raises
    ``LiftError`` before anything runs; an unreadable or empty document is returned with its error."""
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        docs = []
        for f in files:
            text, error = _decode(f.read_bytes(), str(f))
            docs.append(Document(_check_id(f.stem, str(f)), text, str(f), error))
    elif p.is_file():
        docs = []
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise LiftError(f"--documents: {p} is not UTF-8 text; give a folder of text files or a JSONL "
                            "file of {\"id\", \"text\"}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{p} line {n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LiftError(f"--documents: {where} is not JSON ({e.msg}); one {{\"id\", \"text\"}} object "
                                "per line") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise LiftError(f"--documents: {where} has no string \"text\" field")
            doc_id = _check_id(str(row["id"]) if isinstance(row.get("id"), int) else row.get("id", f"line{n}"),
                               where)
            text, error = _decode(row["text"].encode("utf-8"), f"document {doc_id}")
            docs.append(Document(doc_id, text, where, error))
    else:
        raise LiftError(f"--documents: no such file or folder: {path}")
    if not docs:
        raise LiftError(f"--documents: {path} holds no documents")
    seen = Counter(d.id for d in docs)
    repeated = sorted(i for i, n in seen.items() if n > 1)
    if repeated:
        raise LiftError(f"--documents: repeated document ids: {', '.join(repeated[:5])} (ids name the adapters; "
                        "make them unique)")
    return docs


@dataclass
class BatchJob:
    """Everything a worker needs to rebuild the ``Lift`` for a document (plain data, so it travels to Ray
    workers). ``on_step`` is handed to ``Lift`` (called after every optimizer step, in the worker)."""

    model: str | None
    config: dict
    store: str
    names: str | None = None
    served_model_name: str | None = None
    device: str | None = None
    qa_file: str | None = None
    force: bool = False
    on_step: object = field(default=None, repr=False)

    def fingerprint(self) -> str:
        d = asdict(self)
        d.pop("on_step")
        return json.dumps(d, sort_keys=True)


_CACHED: dict[str, object] = {}  # one Lift per worker process (the model stays loaded between documents)


def _lift_for(job: BatchJob):
    """The worker process's ``Lift`` for the job's settings (the model stays loaded between documents), with
    the job's ``on_step`` hook set for this run."""
    from .config import LiftConfig
    from .recipe import Lift

    fp = job.fingerprint()
    if fp not in _CACHED:
        _CACHED.clear()  # free the previous model first
        _CACHED[fp] = Lift(job.model, LiftConfig.from_dict(job.config), store=job.store, device=job.device,
                           progress=False, qa_file=job.qa_file)
    lift = _CACHED[fp]
    lift.on_step = job.on_step
    return lift


def internalize_one(job: BatchJob, doc_id: str, text: str) -> dict:
    """Internalize one document (or find it in the store); a result row, never an exception."""
    from .adapters import AdapterStore

    start, cpu_start = time.perf_counter(), time.process_time()
    row = {"document": doc_id, "adapter": None, "status": "failed", "seconds": 0.0, "error": None,
           "key": None, "node": socket.gethostname()}
    try:
        lift = _lift_for(job)
        stored = None
        if not job.force:
            lift.read(text)
            row["key"] = lift.key()
            stored = AdapterStore(job.store).lookup(row["key"])
        if stored is not None:
            row.update(adapter=str(stored), status="stored")
        else:
            done = lift.internalize(text, force=job.force)
            row.update(adapter=str(done.adapter), key=done.adapter.name, status="trained" if done.trained else "stored")
            if done.trained:
                row["train_seconds"] = done.metadata["training"]["seconds"]
                row["tokens"] = done.metadata["document_tokens"]
    except Exception as e:  # noqa: BLE001 - one failing document must not stop the others
        row.update(status="failed", adapter=None, error=_one_line(e))
    row["seconds"] = round(time.perf_counter() - start, 3)
    row["cpu_seconds"] = round(time.process_time() - cpu_start, 3)  # all threads of this process
    return row


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _publish(job: BatchJob, row: dict) -> None:
    """Point ``<names>/<document id>`` at the row's adapter (on the driver, after the adapter landed)."""
    if job.names is None or row["status"] == "failed":
        return
    from .vllm import publish

    try:
        row["name"] = str(publish(job.names, row["document"], row["adapter"], job.served_model_name))
    except OSError as e:
        row["error"] = f"adapter stored, but its name link failed: {_one_line(e)}"


class Results:
    """The results JSONL, one row per document, flushed as each document finishes."""

    def __init__(self, path: str | Path | None):
        self.rows: list[dict] = []
        self.path = Path(path) if path is not None else None
        self._fh = None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if self.path is not None:
            if self._fh is None:  # opened with the first row: a run stopped by bad input writes nothing
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh:
            self._fh.close()

    def counts(self) -> Counter:
        return Counter(r["status"] for r in self.rows)


def _bar(total: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="documents", unit="doc", disable=not progress, file=sys.stderr)


def _groups(docs: list[Document]) -> tuple[list[Document], dict[str, list[Document]]]:
    """Unreadable documents, and the readable ones grouped by text (one training per distinct text)."""
    bad, by_text = [], {}
    for d in docs:
        if d.error is not None:
            bad.append(d)
        else:
            by_text.setdefault(d.text, []).append(d)
    return bad, by_text


def _finish(job, results, bar, group: list[Document], row: dict) -> None:
    for d in group:
        r = {**row, "document": d.id}
        _publish(job, r)
        results.add(r)
        bar.update(1)
    c = results.counts()
    bar.set_postfix(trained=c["trained"], stored=c["stored"], failed=c["failed"], refresh=False)


def _failed_row(doc: Document, error: str) -> dict:
    return {"document": doc.id, "adapter": None, "status": "failed", "seconds": 0.0, "error": error,
            "key": None, "node": None}


def run_local(job: BatchJob, docs: list[Document], results: Results, progress: bool = True) -> list[dict]:
    """Internalize the documents one after the other in this process (the model is loaded once)."""
    bad, by_text = _groups(docs)
    with _bar(len(docs), progress) as bar:
        for d in bad:
            _finish(job, results, bar, [d], _failed_row(d, d.error))
        for text, group in by_text.items():
            bar.set_description(f"documents ({group[0].id})")
            _finish(job, results, bar, group, internalize_one(job, group[0].id, text))
    return results.rows


def ray_module():
    try:
        import ray
    except ImportError:
        raise LiftError("--ray needs Ray, which is not installed: pip install 'liftlm[ray]'") from None
    return ray


def _ray_task(job: BatchJob, doc_id: str, text: str) -> dict:
    """The body of one Ray task: as many torch threads as CPUs Ray gave the task, a GPU only if it gave one."""
    import ray
    import torch

    assigned = ray.get_runtime_context().get_assigned_resources()
    if assigned.get("CPU"):
        torch.set_num_threads(max(1, int(assigned["CPU"])))
    if job.device is None and not assigned.get("GPU"):  # a task Ray gave no GPU must not take one anyway
        job = replace(job, device="cpu")
    row = internalize_one(job, doc_id, text)
    row["node"] = f"{row['node']}/{ray.get_runtime_context().get_node_id()[:8]}"
    return row


def probe_ray(address: str | None, timeout: float = 5.0) -> None:
    """A ``host:port`` or ``ray://host:port`` that nothing answers on is one clear error at once (Ray itself
    retries for minutes). ``auto`` and a new local instance are left to Ray."""
    if not address or address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise LiftError(f"--ray: {address!r} is not an address (auto, HOST:PORT or ray://HOST:PORT)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise LiftError(f"--ray: nothing answers at {address} ({e.strerror or e}); start the cluster with "
                        "`ray start --head` there, or give its address") from None


def check_ray_resources(num_cpus: float, num_gpus: float, max_retries: int) -> None:
    if num_cpus < 0 or num_gpus < 0 or max_retries < 0:
        raise LiftError("--ray-cpus, --ray-gpus and --ray-retries must be 0 or more")
    if num_gpus > 1 and num_gpus != int(num_gpus):
        raise LiftError(f"--ray-gpus: a fraction is allowed only below 1 (got {num_gpus})")


def connect_ray(address: str | None) -> bool:
    """Use an already initialised Ray, else connect to ``address`` (``auto``: the cluster this machine belongs
    to, ``host:port``, ``ray://host:10001``), else start a new local instance (never a stale cluster Ray
    remembers in /tmp/ray). True when this call started the connection (the caller shuts it down)."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    probe_ray(address)
    env = {k: os.environ[k] for k in ("LIFTLM_HOME", "HF_HUB_OFFLINE", "HF_HOME") if k in os.environ}
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env} if env else None, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise LiftError(f"--ray: cannot reach a Ray cluster at {address or 'a new local instance'} "
                        f"({_one_line(e)})") from None
    return True


def run_ray(job: BatchJob, docs: list[Document], results: Results, *, address: str | None = None,
            num_cpus: float = 1, num_gpus: float = 0, max_retries: int = 3, progress: bool = True) -> list[dict]:
    """One Ray task per distinct document, ``num_cpus``/``num_gpus`` (fractions allowed) each, re-run up to
    ``max_retries`` times when its worker dies, on the cluster :func:`connect_ray` reaches."""
    ray = ray_module()
    check_ray_resources(num_cpus, num_gpus, max_retries)
    started = connect_ray(address)
    try:
        task = ray.remote(_ray_task).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries,
                                             retry_exceptions=False, name="liftlm-internalize")
        bad, by_text = _groups(docs)
        with _bar(len(docs), progress) as bar:
            for d in bad:
                _finish(job, results, bar, [d], _failed_row(d, d.error))
            pending = {task.remote(job, group[0].id, text): group for text, group in by_text.items()}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                group = pending.pop(ready[0])
                try:
                    row = ray.get(ready[0])
                except Exception as e:  # noqa: BLE001 - retries exhausted (worker died every time) or lost node
                    row = _failed_row(group[0], f"Ray task failed after {max_retries} retries: {_one_line(e)}")
                _finish(job, results, bar, group, row)
    finally:
        if started:
            ray.shutdown()
    return results.rows


# --- the command line: `liftlm internalize --documents ...` ---
BATCH_FLAGS = ("results", "names", "served_model_name", "ray", "ray_cpus", "ray_gpus", "ray_retries")


def add_batch_flags(parser) -> None:
    g = parser.add_argument_group("batch (with --documents)")
    g.add_argument("--results", default=None, help="write one JSONL row per document here: document, adapter, "
                                                   "status (trained | stored | failed), seconds, error")
    g.add_argument("--names", default=None,
                   help="folder of links <document id> -> its adapter, for vLLM's filesystem LoRA resolver "
                        "(default: names/ beside the store folder)")
    g.add_argument("--served-model-name", default=None,
                   help="the model name vLLM serves (its --served-model-name, or the MODEL it was started with); "
                        "the named adapters carry it as base_model_name_or_path (default: the path or hub id "
                        "the adapters were trained from)")
    add_ray_flags(g, "one Ray task per document")


def add_ray_flags(group, what: str) -> None:
    """``--ray [ADDRESS]``, ``--ray-cpus``, ``--ray-gpus``, ``--ray-retries`` (for ``internalize --documents`` and
    ``serve``); ``what`` says what runs on Ray."""
    group.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                       help=f"{what}: on the cluster at ADDRESS (auto, host:6379, ray://host:10001), or a new "
                            "local Ray instance without ADDRESS. The store must be a folder every node sees. "
                            "Needs pip install 'liftlm[ray]'")
    group.add_argument("--ray-cpus", type=float, default=None, help="CPUs per task (default: 1)")
    group.add_argument("--ray-gpus", type=float, default=None,
                       help="GPUs per task; a fraction below 1 shares a GPU between tasks (default: 0)")
    group.add_argument("--ray-retries", type=int, default=None,
                       help="re-runs of a task whose worker died (default: 3)")


def reject_batch_flags(args) -> None:
    given = ["--" + f.replace("_", "-") for f in BATCH_FLAGS if getattr(args, f, None) is not None]
    if given:
        raise LiftError(f"{', '.join(given)} go with --documents, not --document")


def run_cli(args, config, model: str | None) -> int:
    """``liftlm internalize --documents``: exit 0 when every document has its adapter, 1 when some failed."""
    from .adapters import AdapterStore

    if args.ray is None:
        ray_only = [f for f in ("ray_cpus", "ray_gpus", "ray_retries") if getattr(args, f) is not None]
        if ray_only:
            raise LiftError(f"--{ray_only[0].replace('_', '-')} goes with --ray")
    else:
        ray_module()  # fail early, before anything is read or written
    if args.qa_file is not None and not Path(args.qa_file).is_file():
        raise LiftError(f"--qa-file: no such file: {args.qa_file}")
    if args.served_model_name is not None and not args.served_model_name.strip():
        raise LiftError("--served-model-name is empty")
    docs = read_documents(args.documents)
    if args.results is not None and Path(args.results).is_dir():
        raise LiftError(f"--results: {args.results} is a folder; give a file name")
    store = AdapterStore(args.store).root.resolve()
    job = BatchJob(model=model, config=config.to_dict(), store=str(store),
                   names=str(Path(args.names).resolve()) if args.names else str(store.parent / "names"),
                   served_model_name=args.served_model_name, device=args.device,
                   qa_file=str(Path(args.qa_file).resolve()) if args.qa_file else None, force=args.force)
    start = time.perf_counter()
    results = Results(args.results)
    try:
        if args.ray is None:
            run_local(job, docs, results, progress=not args.quiet)
        else:
            run_ray(job, docs, results, address=args.ray or None,
                    num_cpus=1 if args.ray_cpus is None else args.ray_cpus,
                    num_gpus=0 if args.ray_gpus is None else args.ray_gpus,
                    max_retries=3 if args.ray_retries is None else args.ray_retries, progress=not args.quiet)
    finally:
        results.close()
    c = results.counts()
    print(f"liftlm: {len(docs)} documents: {c['trained']} trained, {c['stored']} already stored, "
          f"{c['failed']} failed in {time.perf_counter() - start:.1f} s"
          + (f"; results in {args.results}" if args.results else ""), file=sys.stderr)
    for r in results.rows:
        if r["status"] == "failed":
            print(f"liftlm: {r['document']}: failed: {r['error']}", file=sys.stderr)
        else:
            print(f"{r['document']}\t{r['adapter']}")
    return 1 if c["failed"] else 0
