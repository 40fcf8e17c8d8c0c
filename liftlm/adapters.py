"""The adapter store: one directory per (document, model, settings), in PEFT's on-disk format.

    <store>/<key>/
        adapter_config.json          PEFT (LoRA); a full fine-tune stores config.json + model.safetensors
        adapter_model.safetensors
        liftlm.json                  document sha256, model, every setting, loss curve, training time
        document.txt                 the document, so `ask --adapter DIR` can also put it in context
        qa.jsonl                     the auxiliary QA pairs it was trained on (when --qa-pairs or --qa-file)
        distill.jsonl                the teacher's answers it was distilled from (--objective distill, ct+distill)

A directory is written under a temporary name and renamed into place, so an interrupted run leaves no
half-written adapter behind. The key hashes the document, the model and the settings that shape training.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from .errors import LiftError
from .fileio import atomic_directory
from .models import liftlm_home

FORMAT_VERSION = 1
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FULL_CONFIG = "config.json"
METADATA = "liftlm.json"
DOCUMENT = "document.txt"
QA_FILE = "qa.jsonl"  # the auxiliary QA pairs trained on, if any
DISTILL_FILE = "distill.jsonl"  # the teacher's answers distilled into the adapter, if any
REQUIRED_METADATA = ("format_version", "kind", "document_sha256", "model_id", "settings")


def document_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def store_key(doc_sha: str, model_id: str, settings: dict, base: str | None = None) -> str:
    payload = json.dumps(
        {"v": FORMAT_VERSION, "doc": doc_sha, "model": model_id, "base": base, "settings": settings},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


class AdapterStore:
    """Adapters keyed by document + model + settings under ``root`` (default ``$LIFTLM_HOME/adapters``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else liftlm_home() / "adapters"

    def path(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str) -> Path | None:
        """The stored adapter for ``key`` if a complete one exists (a broken one raises ``LiftError``)."""
        p = self.path(key)
        if not p.exists():
            return None
        read_metadata(p)  # validates
        return p

    def save(self, key: str, model, metadata: dict, document: str, qa: list | None = None,
             distill: list | None = None) -> Path:
        """Write atomically: everything goes to a temporary sibling directory, renamed at the end. An identical
        adapter that landed meanwhile (same key = same inputs) is kept."""
        final = self.path(key)
        with atomic_directory(final) as tmp:
            tmp.chmod(0o755)  # mkdtemp makes it private; a server (vLLM) may read the store as another user
            write_adapter(tmp, model, metadata, document)
            if qa:
                from .synth import write_qa

                write_qa(tmp / QA_FILE, qa)
            if distill:
                from .distill import write_items

                write_items(tmp / DISTILL_FILE, distill)
        return final


def write_adapter(directory: Path, model, metadata: dict, document: str) -> None:
    """Save the trained weights (PEFT format for LoRA) with liftlm's metadata and the document."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    metadata = {"format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **metadata}
    (directory / DOCUMENT).write_text(document, encoding="utf-8")
    (directory / METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def read_metadata(directory: str | Path) -> dict:
    """Read and check an adapter directory; a missing, corrupted or foreign one raises ``LiftError``."""
    d = Path(directory)
    if not d.is_dir():
        raise LiftError(f"--adapter: no such adapter directory: {d}")
    try:
        meta = json.loads((d / METADATA).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LiftError(f"--adapter: {d} is not a liftlm adapter ({METADATA} is missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LiftError(f"--adapter: {d / METADATA} is corrupted ({e})") from None
    missing = [k for k in REQUIRED_METADATA if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise LiftError(f"--adapter: {d / METADATA} is corrupted (missing {', '.join(missing)})")
    if meta["format_version"] != FORMAT_VERSION:
        raise LiftError(f"--adapter: {d} has format version {meta['format_version']}; this liftlm reads "
                        f"{FORMAT_VERSION}")
    weights = [ADAPTER_CONFIG, ADAPTER_WEIGHTS] if meta["kind"] == "lora" else [FULL_CONFIG]
    for name in weights + [DOCUMENT]:
        if not (d / name).is_file():
            raise LiftError(f"--adapter: {d} is incomplete ({name} is missing)")
    _check_safetensors(d, meta["kind"])
    return meta


def _check_safetensors(d: Path, kind: str) -> None:
    from safetensors import safe_open

    files = [d / ADAPTER_WEIGHTS] if kind == "lora" else sorted(d.glob("*.safetensors"))
    if not files:
        raise LiftError(f"--adapter: {d} holds no weights (*.safetensors)")
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                st.keys()
        except Exception as e:  # safetensors raises its own error types for a bad header
            raise LiftError(f"--adapter: {f} is corrupted ({e})") from None


def check_adapter(directory: str | Path, model_id: str, max_context: int, document: str | None = None) -> dict:
    """Read a stored adapter's metadata and check that it fits: trained for ``model_id``, within the model's
    context limit, its document intact (and equal to ``document`` when one is given). Returns the metadata."""
    meta = read_metadata(directory)
    if meta["model_id"] != model_id:
        raise LiftError(f"--adapter: {directory} was trained for model {meta['model_id']!r}, not "
                        f"{model_id!r}; pass the matching --model")
    if meta["settings"].get("window") and meta["settings"]["window"] > max_context:
        raise LiftError(f"--adapter: {directory} was trained with window {meta['settings']['window']}, larger "
                        f"than the model's limit {max_context}")
    if document_sha256(read_document(directory)) != meta["document_sha256"]:
        raise LiftError(f"--adapter: {directory} is corrupted (its document does not match its sha256)")
    if document is not None and document_sha256(document) != meta["document_sha256"]:
        raise LiftError(f"--adapter: {directory} was trained on another document than --document")
    return meta


def read_document(directory: str | Path) -> str:
    return (Path(directory) / DOCUMENT).read_text(encoding="utf-8")


def load_weights(base_model, directory: str | Path, kind: str):
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
        raise LiftError(f"--adapter: cannot load {d} onto this model ({first})") from None
