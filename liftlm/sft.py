"""Pre-LIFT supervised fine-tuning (paper §3.4): teach the model, once, to use what LIFT puts in its weights.

The model is trained on *other* long documents — their segments and QA pairs, exactly as LIFT trains one
document — and the LoRA weights are merged into a plain model directory that ``--base`` (or ``--model``) then
starts LIFT from.

Corpus format (JSONL, one document per line)::

    {"text": "...", "qa": [{"question": "...", "answer": "..."}, ...]}     # qa optional
    {"input": "...", "qa_pairs": "[{'Q': ..., 'A': ...}, ...]"}              # LooGLE's own files work as they are

Documents without QA get ``--qa-pairs`` synthesized pairs (as in ``internalize``). With ``--max-doc-tokens`` a
document keeps its first N tokens and only the QA pairs whose evidence (``"evidence"``, or LooGLE's ``"S"``)
lies inside that cut: a pair about text the model never sees would teach it to make answers up.
"""
from __future__ import annotations

import ast
import json
import time
from pathlib import Path

from .config import LiftConfig
from .context import PromptBuilder
from .documents import DocumentCut
from .errors import LiftError
from .fileio import atomic_directory
from .memory import training_peak
from .models import load_model, resolve_window
from .synth import QAPair, synthesize
from .train import train_on_documents

SFT_METADATA = "liftlm_sft.json"


def _evidence(item: dict) -> list[str]:
    ev = item.get("evidence", item.get("S", []))
    return [str(e) for e in ([ev] if isinstance(ev, str) else ev or []) if str(e).strip()]


def _qa_from_record(record: dict, where: str) -> list[tuple[QAPair, list[str]]]:
    items = record.get("qa", record.get("qa_pairs", []))
    if isinstance(items, str):  # LooGLE stores a Python literal; never eval it
        try:
            items = ast.literal_eval(items)
        except (ValueError, SyntaxError) as e:
            raise LiftError(f"--corpus: {where}: unreadable qa_pairs ({e})") from None
    pairs = []
    for item in items or []:
        q = item.get("question", item.get("Q"))
        a = item.get("answer", item.get("A"))
        if isinstance(a, list):
            a = a[0] if a else ""
        if q and a and str(a).strip():
            evidence = _evidence(item)
            pairs.append((QAPair(str(q), str(a), " ... ".join(evidence), -1, -1, "corpus"), evidence))
    return pairs


def load_corpus(path: str | Path) -> list[tuple[str, list[tuple[QAPair, list[str]]]]]:
    """(document, [(QA pair, its evidence passages)]) for every line of a JSONL corpus."""
    p = Path(path)
    if not p.is_file():
        raise LiftError(f"--corpus: no such file: {path}")
    docs = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise LiftError(f"--corpus: {path}:{i}: not valid JSON ({e})") from None
        text = record.get("text", record.get("input", record.get("document"))) if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise LiftError(f"--corpus: {path}:{i}: no document text (expected a \"text\" or \"input\" field)")
        docs.append((text, _qa_from_record(record, f"{path}:{i}")))
    if not docs:
        raise LiftError(f"--corpus: {path} holds no documents")
    return docs


def run_sft(corpus: str | Path, out: str | Path, model: str | None = None, config: LiftConfig | None = None,
            max_doc_tokens: int | None = None, progress: bool = True, device: str | None = None) -> Path:
    """Train on the corpus and write a merged model directory to ``out`` (atomically). Returns ``out``."""
    cfg = config or LiftConfig(objective="ct")
    if cfg.objective != "ct":
        raise LiftError("pre-LIFT SFT trains the paper's objective on its corpus: --objective ct (got "
                        f"--objective {cfg.objective})")
    out = Path(out)
    if max_doc_tokens is not None and max_doc_tokens < 1:
        raise LiftError(f"--max-doc-tokens must be at least 1 (got {max_doc_tokens})")
    if out.exists():
        raise LiftError(f"--out: {out} already exists; choose a new directory")
    docs = load_corpus(corpus)
    loaded = load_model(model, device)
    prompts = PromptBuilder(loaded.tokenizer, resolve_window(loaded, cfg.window))
    documents, n_tokens, outside = [], 0, 0
    for text, given in docs:
        pairs = [pair for pair, _ in given]
        if max_doc_tokens:
            view = DocumentCut.of(text, loaded.tokenizer, max_doc_tokens)
            pairs = [pair for pair, evidence in given if view.keeps(evidence)]
            outside += len(given) - len(pairs)
            text = view.text
        ids = loaded.tokenizer.encode(text, add_special_tokens=False)
        n_tokens += len(ids)
        if not pairs and cfg.qa_pairs:  # no QA given, or none inside the cut
            pairs, _ = synthesize(text, cfg.qa_pairs, "keyphrase" if cfg.qa_generator == "auto" else cfg.qa_generator)
        documents.append((ids, pairs))
    trained = train_on_documents(loaded.model, documents, cfg, prompts, progress=progress, desc="SFT")
    model_, result = trained.model, trained.result
    merged = model_.merge_and_unload() if hasattr(model_, "merge_and_unload") else model_
    with atomic_directory(out, if_exists="error") as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        (tmp / SFT_METADATA).write_text(json.dumps({
            "base_model_id": loaded.model_id, "base_model_spec": model, "corpus": str(Path(corpus).resolve()),
            "documents": len(docs), "document_tokens": n_tokens, "segments": trained.samples,
            "qa_pairs": trained.qa_samples, "qa_pairs_outside_cut": outside, "settings": cfg.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "training": {"seconds": round(result.seconds, 3), "tokens": result.tokens,
                         "loss_curve": [round(x, 5) for x in result.loss_curve], **training_peak(result)},
        }, indent=2) + "\n")
    return out
