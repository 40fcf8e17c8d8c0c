"""The adapter store: one directory per (document, model, settings), in PEFT's on-disk format.

    <store>/<key>/
        adapter_config.json          PEFT (LoRA); a full fine-tune stores config.json + model.safetensors
        adapter_model.safetensors
        liftlm.json                  document sha256, model, every setting, loss curve, training time
        document.txt                 the document, so `ask --adapter DIR` can also put it in context
        qa.jsonl                     the auxiliary QA pairs it was trained on (when --qa-pairs or --qa-file)
        distill.jsonl                the teacher's answers it was distilled from (--objective distill, ct+distill)

A directory is written under a temporary name and renamed into place, so an interrupted run leaves no
half-written adapter behind; ``--force`` swaps a new one in the same way. ``liftlm.json`` records the sha256 of
every weights file, checked on every load (a flipped bit is caught, not only a broken header).

The key (``store_key``, version ``KEY_VERSION``) hashes the document, the model and the settings that change the
weights (``LiftConfig.key_dict``), nothing else. Beside the adapters, ``<store>/.work/`` holds one lock file per
key (``<key>.lock``: one process trains a key at a time, the others wait and reuse its adapter) and the
checkpoints of trainings under way (``<key>/``, removed once the adapter is stored; ``liftlm.checkpoint``).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from .errors import LiftError
from .fileio import atomic_directory
from .keys import KEY_VERSION, document_sha256, store_key  # noqa: F401 (re-exported)
from .memory import training_peak
from .models import liftlm_home
from .version import __version__

FORMAT_VERSION = 1  # of liftlm.json; fields added since are optional, and fields a reader does not know are ignored
WORK_DIR = ".work"  # <store>/.work: lock files and checkpoints of trainings under way
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FULL_CONFIG = "config.json"
METADATA = "liftlm.json"
DOCUMENT = "document.txt"
QA_FILE = "qa.jsonl"  # the auxiliary QA pairs trained on, if any
DISTILL_FILE = "distill.jsonl"  # the teacher's answers distilled into the adapter, if any
REQUIRED_METADATA = ("format_version", "kind", "document_sha256", "model_id", "settings")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weight_files(directory: Path, kind: str) -> list[Path]:
    return [directory / ADAPTER_WEIGHTS] if kind == "lora" else sorted(directory.glob("*.safetensors"))


class AdapterStore:
    """Adapters keyed by document + model + settings under ``root`` (default ``$LIFTLM_HOME/adapters``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else liftlm_home() / "adapters"

    def path(self, key: str) -> Path:
        return self.root / key

    def work(self, key: str) -> Path:
        """The work area of ``key``: checkpoints of a training under way (removed once the adapter is stored)."""
        return self.root / WORK_DIR / key

    def lock(self, key: str):
        """A ``filelock.FileLock`` for ``key`` (``<store>/.work/<key>.lock``): hold it from the lookup to the
        save, so that two processes never train the same adapter at once. One lock object per file in a process
        (reentrant: code that holds it may call ``Lift.internalize`` for the same key)."""
        from filelock import FileLock

        lock_file = self.root / WORK_DIR / f"{key}.lock"
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_file), is_singleton=True)

    def discard_if_unused(self) -> None:
        """Remove the store's root when it holds nothing but lock files (used after bad input, when this call
        created the store: nothing is left behind)."""
        import shutil

        entries = list(self.root.iterdir()) if self.root.is_dir() else []
        work = self.root / WORK_DIR
        if entries and entries != [work]:
            return
        if work.is_dir() and any(not p.name.endswith(".lock") for p in work.iterdir()):
            return
        shutil.rmtree(self.root, ignore_errors=True)

    def lookup(self, key: str) -> Path | None:
        """The stored adapter for ``key`` if a complete one exists. A broken one raises ``LiftError`` naming it as
        the store's (its path), so that a caller can warn and train it again."""
        p = self.path(key)
        if not p.exists():
            return None
        read_metadata(p, source="the adapter store")  # validates, checksums included
        return p

    def save(self, key: str, model, metadata: dict, document: str, files: dict[str, str] | None = None,
             replace: bool = False) -> Path:
        """Write atomically: everything goes to a temporary sibling directory, renamed at the end. ``files`` maps
        the names of extra files to write beside the adapter to their text (what it was trained on: the recipe's
        ``qa.jsonl``, ``distill.jsonl``). An identical adapter that landed meanwhile (same key = same inputs) is
        kept, unless ``replace`` (``--force``, or a broken stored one): then the new one is swapped in, the old one
        removed."""
        final = self.path(key)
        with atomic_directory(final, if_exists="replace" if replace else "keep") as tmp:
            tmp.chmod(0o755)  # mkdtemp makes it private; a server (vLLM) may read the store as another user
            write_adapter(tmp, model, metadata, document)
            for name, text in (files or {}).items():
                (tmp / name).write_text(text, encoding="utf-8")
        return final


def adapter_metadata(document: str, n_tokens: int, model_id: str, model_spec: str | None, settings: dict, kind: str,
                     samples: int, qa: dict, result) -> dict:
    """What ``liftlm.json`` records beside a newly trained adapter (``write_adapter`` adds the format version and
    the weights' checksums): the document's hash and length, the model, every setting, the auxiliary QA report
    and the training's ``liftlm.loop.TrainResult``."""
    return {
        "liftlm_version": __version__,
        "kind": kind,
        "document_sha256": document_sha256(document),
        "document_tokens": n_tokens,
        "model_id": model_id,
        "model_spec": model_spec,
        "settings": settings,
        "samples": samples,
        "qa": qa,
        "training": {
            "seconds": round(result.seconds, 3),
            "tokens": result.tokens,
            "prefix_tokens": result.prefix_tokens,  # tokens run forward only (cached prefixes)
            "tokens_per_second": round(result.tokens_per_second, 2),
            "steps": result.steps,
            "loss_curve": [round(x, 5) for x in result.loss_curve],
            "epoch_losses": [round(x, 5) for x in result.epoch_losses],
            **training_peak(result),
        },
    }



def write_adapter(directory: Path, model, metadata: dict, document: str) -> None:
    """Save the trained weights (PEFT format for LoRA) with liftlm's metadata and the document."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    metadata = {"format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **metadata}
    metadata["weights_sha256"] = {f.name: file_sha256(f) for f in weight_files(directory, metadata["kind"])}
    (directory / DOCUMENT).write_text(document, encoding="utf-8")
    (directory / METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def read_metadata(directory: str | Path, source: str = "--adapter") -> dict:
    """Read and check an adapter directory: its metadata, its files, and its weights against the sha256 recorded
    in ``liftlm.json``. A missing, corrupted or foreign one raises ``LiftError``, the message starting with
    ``source`` (the flag the user gave, or "the adapter store"). Fields this liftlm does not know are ignored."""
    d = Path(directory)
    if not d.is_dir():
        raise LiftError(f"{source}: no such adapter directory: {d}")
    try:
        meta = json.loads((d / METADATA).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LiftError(f"{source}: {d} is not a liftlm adapter ({METADATA} is missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LiftError(f"{source}: {d / METADATA} is corrupted ({e})") from None
    missing = [k for k in REQUIRED_METADATA if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise LiftError(f"{source}: {d / METADATA} is corrupted (missing {', '.join(missing)})")
    if meta["format_version"] != FORMAT_VERSION:
        raise LiftError(f"{source}: {d} has format version {meta['format_version']}; this liftlm reads "
                        f"{FORMAT_VERSION}")
    weights = [ADAPTER_CONFIG, ADAPTER_WEIGHTS] if meta["kind"] == "lora" else [FULL_CONFIG]
    for name in weights + [DOCUMENT]:
        if not (d / name).is_file():
            raise LiftError(f"{source}: {d} is incomplete ({name} is missing)")
    _check_safetensors(d, meta["kind"], source)
    _check_checksums(d, meta, source)
    return meta


def _check_safetensors(d: Path, kind: str, source: str) -> None:
    from safetensors import safe_open

    files = weight_files(d, kind)
    if not files:
        raise LiftError(f"{source}: {d} holds no weights (*.safetensors)")
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                st.keys()
        except Exception as e:  # safetensors raises its own error types for a bad header
            raise LiftError(f"{source}: {f} is corrupted ({e})") from None


def _check_checksums(d: Path, meta: dict, source: str) -> None:
    """Every weights file against its sha256 in ``liftlm.json`` (adapters written before checksums were recorded
    have none: only their headers are checked, with a warning)."""
    recorded = meta.get("weights_sha256")
    if not isinstance(recorded, dict) or not recorded:
        print(f"liftlm: warning: {d} records no weights checksum (written by an older liftlm); only the "
              "safetensors headers were checked", file=sys.stderr)
        return
    for f in weight_files(d, meta["kind"]):
        if f.name not in recorded:
            raise LiftError(f"{source}: {d} is corrupted ({f.name} has no recorded sha256)")
        if file_sha256(f) != recorded[f.name]:
            raise LiftError(f"{source}: {f} is corrupted (its sha256 differs from the one in {METADATA})")


def check_adapter(directory: str | Path, model_id: str, max_context: int, document: str | None = None,
                  source: str = "--adapter", meta: dict | None = None) -> dict:
    """Read a stored adapter's metadata and check that it fits: trained for ``model_id``, within the model's
    context limit, its document intact (and equal to ``document`` when one is given). Returns the metadata.
    ``meta``: what ``read_metadata`` already returned for it (not read and verified twice)."""
    meta = meta if meta is not None else read_metadata(directory, source)
    if meta["model_id"] != model_id:
        raise LiftError(f"{source}: {directory} was trained for model {meta['model_id']!r}, not "
                        f"{model_id!r}; pass the matching --model")
    if meta["settings"].get("window") and meta["settings"]["window"] > max_context:
        raise LiftError(f"{source}: {directory} was trained with window {meta['settings']['window']}, larger "
                        f"than the model's limit {max_context}")
    if document_sha256(read_document(directory)) != meta["document_sha256"]:
        raise LiftError(f"{source}: {directory} is corrupted (its document does not match its sha256)")
    if document is not None and document_sha256(document) != meta["document_sha256"]:
        raise LiftError(f"{source}: {directory} was trained on another document than --document")
    return meta


def read_document(directory: str | Path) -> str:
    return (Path(directory) / DOCUMENT).read_text(encoding="utf-8")


def load_weights(base_model, directory: str | Path, kind: str, source: str = "--adapter"):
    """Attach a stored adapter to ``base_model`` (LoRA) or load the stored full model."""
    d = Path(directory)
    try:
        if kind == "lora":
            from peft import PeftModel

            return PeftModel.from_pretrained(base_model, str(d), is_trainable=False).eval()
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(d), dtype=base_model.dtype).to(base_model.device).eval()
    except Exception as e:  # shape mismatches, missing keys, bad files: all mean "not this model's adapter"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LiftError(f"{source}: cannot load {d} onto this model ({first})") from None
