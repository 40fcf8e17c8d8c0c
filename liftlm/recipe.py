"""The LIFT recipe, top to bottom: document → segments → samples → adapter → answer.

    lift = Lift()                                   # the embedded default model
    lift.internalize(open("report.txt").read())     # trains, or reuses the stored adapter
    lift.ask("Who signed the report?")              # mode "lift+icl" by default

The CLI verbs ``internalize`` and ``ask`` are thin wrappers over this class.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .adapters import AdapterStore, document_sha256, load_weights, read_document, read_metadata, store_key
from .config import LiftConfig
from .context import PromptBuilder
from .errors import LiftError
from .infer import MODES, base_model_context, generate, uses_adapter, uses_document, uses_retrieval
from .models import LoadedModel, load_model
from .overlap import build_stride_samples, trainer_for
from .segment import segment_spans
from .synth import SYNTH_VERSION, QAPair, local_completer, openai_completer, read_qa, synthesize, write_qa
from .train import TrainResult, attach_adapter


@dataclass
class Internalized:
    adapter: Path
    trained: bool  # False when a stored adapter was reused
    metadata: dict
    result: TrainResult | None = None


@dataclass
class Answer:
    question: str
    answer: str
    mode: str
    adapter: str | None
    trained: bool
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_document(text: str, source: str = "document") -> str:
    if not text.strip():
        raise LiftError(f"{source} is empty (or only whitespace); give a text document")
    if "\x00" in text:
        raise LiftError(f"{source} looks binary (it contains NUL bytes); give a UTF-8 text document")
    return text


def read_document_file(path: str | Path) -> str:
    """Read a UTF-8 text file, with one clear error for a missing, binary, non-UTF-8 or empty file."""
    p = Path(path)
    if not p.is_file():
        raise LiftError(f"--document: no such file: {path}")
    data = p.read_bytes()
    if b"\x00" in data:
        raise LiftError(f"--document: {path} is a binary file; give a UTF-8 text document")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LiftError(f"--document: {path} is not UTF-8 text (byte {e.start}); convert it to UTF-8") from None
    return check_document(text.removeprefix("\ufeff"), f"--document {path}")


def build_samples(doc_ids: list[int], cfg: LiftConfig, prompts: PromptBuilder) -> list:
    """Segments of the document (paper §3.1), each made a training sample (plain or contextualized, §3.2);
    stride samples with a cached prefix in ``overlap`` and ``recurrent`` modes (``liftlm.overlap``)."""
    if cfg.training_mode in ("overlap", "recurrent"):
        return build_stride_samples(doc_ids, cfg, prompts)
    spans = segment_spans(len(doc_ids), cfg.segment_length, cfg.effective_stride)
    if not cfg.contextualized:
        if cfg.segment_length > prompts.window:
            raise ValueError(f"segment length {cfg.segment_length} exceeds the window {prompts.window}")
        return [prompts.plain_sample(doc_ids[a:b]) for a, b in spans]
    return [prompts.ct_sample(doc_ids, doc_ids[a:b], cfg.context_tokens) for a, b in spans]


class Lift:
    """A model that reads long documents by fine-tuning on them (LIFT), with a store of adapters."""

    def __init__(
        self,
        model: str | None = None,
        config: LiftConfig | None = None,
        *,
        store: str | Path | None = None,
        device: str | None = None,
        progress: bool = True,
        loaded: LoadedModel | None = None,
        rag_chunk_tokens: int = 128,
        qa_file: str | Path | None = None,
        on_step=None,
    ):
        self.config = config or LiftConfig()
        self.model_spec = model
        self.loaded = loaded or load_model(model, device)
        self.tokenizer = self.loaded.tokenizer
        self.window = self._resolve_window(self.config.window)
        self.prompts = PromptBuilder(self.tokenizer, self.window)
        self.store = AdapterStore(store)
        self.progress = progress
        self.on_step = on_step  # called with a liftlm.train.StepProgress after every optimizer step
        self.rag_chunk_tokens = rag_chunk_tokens
        self.user_qa = read_qa(qa_file) if qa_file is not None else None
        self._base = self.loaded.model  # LoRA is injected into it and unloaded again; a full fine-tune trains a copy
        self._adapted = None  # the model with the current document's adapter
        self._adapter_path: Path | None = None
        self._trained = False
        self.document: str | None = None
        self._doc_ids: list[int] | None = None

    # --- settings ---
    def _resolve_window(self, window: int | None) -> int:
        limit = self.loaded.max_context
        window = limit if window is None else window
        if window > limit:
            raise LiftError(f"--window {window} is larger than the model's context limit ({limit} tokens)")
        return window

    def training_settings(self) -> dict:
        """The settings that shape the adapter, with the window resolved to a number (and the user's QA pairs)."""
        settings = {**self.config.key_dict(), "window": self.window}
        if self.user_qa is not None:
            settings["qa_file_sha256"] = hashlib.sha256(
                json.dumps([dataclasses.asdict(p) for p in self.user_qa]).encode()).hexdigest()
        elif self.config.qa_pairs > 0:
            settings["qa_synthesizer"] = SYNTH_VERSION  # the items change when the synthesizer does
        return settings

    # --- reading ---
    def read(self, text: str) -> None:
        """Set the current document without training (enough for mode ``icl``); drops the previous adapter."""
        self.document = check_document(text)
        self._fresh_base()
        self._doc_ids = self.tokenizer.encode(text, add_special_tokens=False)
        self._adapted, self._adapter_path, self._trained = None, None, False

    def key(self) -> str:
        return store_key(document_sha256(self.document), self.loaded.model_id, self.training_settings())

    def internalize(self, text: str, force: bool = False) -> Internalized:
        """LIFT: train an adapter on ``text`` (or reuse the stored one) and make it current."""
        self.read(text)
        key = self.key()
        stored = None if force else self.store.lookup(key)
        if stored is not None:
            return self.use_adapter(stored)
        cfg = self.config
        base = self._fresh_base()
        qa, qa_report = self.qa_pairs(text)
        try:
            samples = build_samples(self._doc_ids, cfg, self.prompts)
            qa_samples = [self.prompts.qa_sample(self._doc_ids, p.question, p.answer, cfg.qa_context)
                          for p in qa]
        except ValueError as e:
            raise LiftError(f"--window/--segment-length: {e}") from None
        model = attach_adapter(copy.deepcopy(base) if cfg.finetune == "full" else base, cfg)
        result = trainer_for(cfg.training_mode)(model, samples, cfg, progress=self.progress, qa_samples=qa_samples,
                                                on_step=self.on_step)
        metadata = {
            "liftlm_version": __version__,
            "kind": cfg.finetune,
            "document_sha256": document_sha256(text),
            "document_tokens": len(self._doc_ids),
            "model_id": self.loaded.model_id,
            "model_spec": self.model_spec,
            "settings": {**cfg.to_dict(), "window": self.window},
            "samples": len(samples),
            "qa": {**qa_report, "pairs": len(qa)},
            "training": {
                "seconds": round(result.seconds, 3),
                "tokens": result.tokens,
                "prefix_tokens": getattr(result, "prefix_tokens", 0),  # overlap/recurrent modes: tokens run forward only
                "tokens_per_second": round(result.tokens_per_second, 2),
                "steps": result.steps,
                "loss_curve": [round(x, 5) for x in result.loss_curve],
                "epoch_losses": [round(x, 5) for x in result.epoch_losses],
            },
        }
        path = self.store.save(key, model, metadata, text, qa=qa)
        self._adapted, self._adapter_path, self._trained = model, path, True
        return Internalized(path, True, metadata, result)

    def qa_pairs(self, text: str) -> tuple[list[QAPair], dict]:
        """The auxiliary QA pairs for ``text``: the user's file, or cached, or synthesized (then cached)."""
        cfg = self.config
        if self.user_qa is not None:
            return self.user_qa, {"generator": "user", "used": "user"}
        if cfg.qa_pairs == 0:
            return [], {}
        qa_key = store_key(document_sha256(text), self.loaded.model_id, {
            k: getattr(cfg, k) for k in ("qa_pairs", "qa_generator", "qa_model", "qa_window_sentences")}
            | {"synthesizer": SYNTH_VERSION})
        cache = self.store.root.parent / "qa" / f"{qa_key}.jsonl"
        if cache.is_file():
            return read_qa(cache), {"generator": cfg.qa_generator, "used": "cache", "cache": str(cache)}
        complete = self._qa_completer() if cfg.qa_generator != "keyphrase" else None
        pairs, report = synthesize(text, cfg.qa_pairs, cfg.qa_generator, complete, cfg.qa_window_sentences,
                                   progress=self.progress)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        write_qa(tmp, pairs)
        os.replace(tmp, cache)
        return pairs, {**report, "cache": str(cache)}

    def _qa_completer(self):
        spec = self.config.qa_model
        if spec and spec.startswith(("http://", "https://")):
            url, _, name = spec.partition("#")
            key = os.environ.get("LIFTLM_QA_API_KEY") or os.environ.get("OPENAI_API_KEY")
            return openai_completer(url, name or "default", key)
        if spec:
            gen = load_model(spec, str(self.loaded.device))
            return local_completer(gen.model, gen.tokenizer)
        return local_completer(self._base, self.tokenizer)

    def use_adapter(self, path: str | Path) -> Internalized:
        """Load a stored adapter (and its document) and make it current; no training."""
        meta = read_metadata(path)
        if meta["model_id"] != self.loaded.model_id:
            raise LiftError(f"--adapter: {path} was trained for model {meta['model_id']!r}, not "
                            f"{self.loaded.model_id!r}; pass the matching --model")
        if meta["settings"].get("window") and meta["settings"]["window"] > self.loaded.max_context:
            raise LiftError(f"--adapter: {path} was trained with window {meta['settings']['window']}, larger "
                            f"than the model's limit {self.loaded.max_context}")
        text = read_document(path)
        if document_sha256(text) != meta["document_sha256"]:
            raise LiftError(f"--adapter: {path} is corrupted (its document does not match its sha256)")
        if self.document is not None and document_sha256(self.document) != meta["document_sha256"]:
            raise LiftError(f"--adapter: {path} was trained on another document than --document")
        self.read(text)
        self._adapted = load_weights(self._fresh_base(), path, meta["kind"])
        self._adapter_path, self._trained = Path(path), False
        return Internalized(Path(path), False, meta)

    def _fresh_base(self):
        """The base model without any adapter (LoRA layers removed)."""
        if self._adapted is not None and hasattr(self._adapted, "peft_config"):
            self._base = self._adapted.unload()
            if hasattr(self._base, "peft_config"):  # left behind by unload(); PEFT would warn on the next wrap
                del self._base.peft_config
        self._adapted = None  # a fully fine-tuned copy is simply dropped: the base was never touched
        return self._base

    # --- answering ---
    def check_question(self, question: str, mode: str = "lift+icl", max_new_tokens: int = 64) -> None:
        """Raise ``LiftError`` for a question that cannot be asked (before any training is spent on it)."""
        if mode not in MODES:
            raise LiftError(f"--mode must be one of {', '.join(MODES)} (got {mode!r})")
        if not question.strip():
            raise LiftError("--question is empty; ask something")
        try:
            self.prompts.question_prompt(question.strip(), [0] if uses_document(mode) else None, max_new_tokens)
        except ValueError as e:
            raise LiftError(f"--window: {e}") from None

    def _retrieve(self, question: str, budget: int) -> list[int]:
        """The BM25-best chunks of the document for ``question``, in document order, within ``budget`` tokens."""
        from .eval.retrieval import build_rag_context

        text = build_rag_context(self.document, question, self.tokenizer, budget,
                                 chunk_tokens=min(self.rag_chunk_tokens, budget))
        return self.tokenizer.encode(text, add_special_tokens=False)

    def generate(self, prompt_ids: list[int], mode: str, max_new_tokens: int) -> str:
        """Greedy answer to a ready-made prompt by the model that ``mode`` calls for (adapted or base)."""
        if uses_adapter(mode):
            if self._adapted is None:
                raise LiftError(f"mode {mode} needs the document's adapter: internalize the document first")
            return generate(self._adapted, self.tokenizer, prompt_ids, max_new_tokens)
        peft = self._adapted is not None and hasattr(self._adapted, "peft_config")
        model = self._adapted if peft else self._base
        with base_model_context(model):
            return generate(model, self.tokenizer, prompt_ids, max_new_tokens)

    def ask(self, question: str, mode: str = "lift+icl", max_new_tokens: int = 64) -> Answer:
        self.check_question(question, mode, max_new_tokens)
        if self.document is None:
            raise LiftError("no document: internalize or read one first (--document or --adapter)")
        if uses_adapter(mode) and self._adapted is None:
            self.internalize(self.document)
        start = time.perf_counter()
        question = question.strip()
        context = self._doc_ids if uses_document(mode) else None
        if uses_retrieval(mode):
            context = self._retrieve(question, self.prompts.document_room(question, max_new_tokens))
        prompt = self.prompts.question_prompt(question, context, max_new_tokens)
        text = self.generate(prompt, mode, max_new_tokens)
        return Answer(
            question=question,
            answer=text,
            mode=mode,
            adapter=str(self._adapter_path) if uses_adapter(mode) and self._adapter_path else None,
            trained=self._trained and uses_adapter(mode),
            seconds=round(time.perf_counter() - start, 3),
        )
