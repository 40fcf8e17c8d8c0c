"""The LIFT recipe, top to bottom: document → segments → samples → adapter → answer.

    lift = Lift()                                   # the embedded default model
    lift.internalize(open("report.txt").read())     # trains, or reuses the stored adapter
    lift.ask("Who signed the report?")              # mode "lift+icl" by default

``Lift`` is a facade over named pieces, each usable alone:

* the model and its window — ``liftlm.models.load_model``, ``resolve_window``;
* the store key — ``liftlm.keys.adapter_key`` (a pure function of the document, the model and the settings);
* the adapter store — ``liftlm.adapters.AdapterStore``;
* the auxiliary QA pairs with their cache — ``liftlm.synth.QASource``;
* the distillation items (the default objective) with their cache — ``liftlm.distill.DistillSource``;
* the trainer — ``liftlm.train.train_on_documents`` (samples → adapter → the training mode's loop);
* the answerer — ``liftlm.infer.Answerer`` (prompts per mode, retrieval, greedy decoding).

The CLI verbs ``internalize`` and ``ask`` are thin wrappers over this class.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .adapters import (
    DISTILL_FILE,
    QA_FILE,
    AdapterStore,
    adapter_metadata,
    check_adapter,
    load_weights,
    read_document,
)
from .config import ANSWER_FIELDS, LiftConfig
from .context import PromptBuilder
from .distill import DistillSource, items_jsonl
from .documents import check_document
from .errors import LiftError
from .infer import Answerer, uses_adapter
from .keys import adapter_key, training_settings
from .loop import TrainResult, at_stages
from .models import LoadedModel, load_model, resolve_window
from .synth import QASource, local_completer, openai_completer, qa_jsonl, read_qa
from .train import Trained, build_samples, detach_adapter, train_on_documents


@dataclass
class Internalized:
    adapter: Path
    trained: bool  # False when a stored adapter was reused
    metadata: dict
    result: TrainResult | None = None
    waited: bool = False  # another process held the lock of this adapter's key first (and trained it)
    resumed_epoch: int | None = None  # training resumed from a checkpoint after this many epochs (0: within the first)
    resumed_at: int | None = None  # ... with this many samples trained
    replaced: bool = False  # a stored adapter was replaced (--force, or a broken one)


def _say(message: str) -> None:
    print(f"liftlm: {message}", file=sys.stderr, flush=True)


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
        self.progress = progress
        self.on_step = on_step  # called with a liftlm.train.StepProgress after every optimizer step
        # the model and its window
        self.loaded = loaded or load_model(model, device)
        self.tokenizer = self.loaded.tokenizer
        self.window = resolve_window(self.loaded, self.config.window)
        self.prompts = PromptBuilder(self.tokenizer, self.window)
        # the store, the QA source, the answerer
        self.store = AdapterStore(store)
        self.qa = QASource(self.config, self.loaded.model_id, self.store.root.parent / "qa", self._qa_completer,
                           read_qa(qa_file) if qa_file is not None else None, progress)
        self.distill = DistillSource(self.config, self.loaded.model_id, self.store.root.parent / "distill", progress,
                                     on_step=lambda p: self.on_step(p) if self.on_step is not None else None)
        self.answerer = Answerer(self.tokenizer, self.prompts, rag_chunk_tokens)
        # the current document and its adapter
        self._base = self.loaded.model  # LoRA is injected into it and unloaded again; a full fine-tune trains a copy
        self._adapted = None  # the model with the current document's adapter
        self._adapter_path: Path | None = None
        self._trained = False
        self.document: str | None = None
        self._doc_ids: list[int] | None = None
        self._weights: int | None = None  # the model's matmul weights, for the time estimate

    @property
    def model_id(self) -> str:
        return self.loaded.model_id

    @property
    def rag_chunk_tokens(self) -> int:
        return self.answerer.rag_chunk_tokens

    def training_settings(self) -> dict:
        """The settings that change the weights (``liftlm.keys.training_settings``): what the store key hashes."""
        return training_settings(self.config, self.window, self.qa.key_settings())

    # --- reading ---
    def read(self, text: str) -> None:
        """Set the current document without training (enough for mode ``icl``); drops the previous adapter."""
        self.document = check_document(text)
        self._fresh_base()
        self._doc_ids = self.tokenizer.encode(text, add_special_tokens=False)
        self._adapted, self._adapter_path, self._trained = None, None, False

    def key(self) -> str:
        return adapter_key(self.document, self.model_id, self.config, self.window, self.qa.key_settings())

    def internalize(self, text: str, force: bool = False) -> Internalized:
        """LIFT: train an adapter on ``text`` (or reuse the stored one) and make it current.

        The steps, in order: lock the key → look it up in the store → make the auxiliary QA pairs and the
        distillation items → train → save. One process at a time trains a given key: the store's lock for it is
        held from the lookup to the save; a second process waits, then reuses what the first stored (and says
        so). ``force`` trains again and replaces the stored adapter atomically. A stored adapter that fails its
        checks (e.g. its weights' sha256) is reported with its path and trained again, with a warning. Training
        resumes from the last checkpoint of an interrupted run of the same key (``liftlm.checkpoint``)."""
        self.read(text)
        key = self.key()
        new_store = not self.store.root.exists()
        try:
            lock, waited = self._lock(key)
            try:
                stored, broken = (None, False) if force else self._lookup(key)
                if stored is not None:
                    if waited:
                        _say(f"reusing the adapter the other process stored: {stored.adapter}")
                    stored.waited = waited
                    return stored
                self._say_estimate(text, key)
                qa, qa_report = self.qa.pairs(text)
                items, distill_report = self.distill.items(text, self._doc_ids, self._fresh_base(), self.tokenizer,
                                                           self.prompts.chat)
                checkpoints = self._checkpoints(key, len(qa) + len(items))
                trained = self._train(qa, items, checkpoints)
                metadata = self._metadata(text, trained, qa, qa_report, items, distill_report, checkpoints)
                path = self._save(key, trained, metadata, text, qa, items, checkpoints, replace=force or broken)
            finally:
                lock.release()
        except LiftError:
            if new_store:  # bad input (e.g. a window too small for the segments): leave no empty store behind
                self.store.discard_if_unused()
            raise
        self._adapted, self._adapter_path, self._trained = trained.model, path, True
        resumed = metadata["training"].get("resumed_after_epoch")
        return Internalized(path, True, metadata, trained.result, waited=waited, resumed_epoch=resumed,
                            resumed_at=metadata["training"].get("resumed_at_sample"), replaced=force or broken)

    def _say_estimate(self, text: str, key: str) -> None:
        """Say about how long training will take (``liftlm.estimate``) before it starts, when that is long: the
        document is longer than the window, or the estimate over a minute. Only with progress output on; the
        teacher is left out when its items are cached, and the student's part a checkpoint holds (LoRA) when the
        run resumes."""
        if not self.progress:
            return
        if self.config.objective != "distill":
            try:  # the trainer's own check of the window: its error is then said alone, before any work
                build_samples(self._doc_ids, self.config, self.prompts)
            except ValueError:
                return
        from .distill.teacher import document_fact_sentences, teacher_shape
        from .estimate import attention_width, estimate, machine_gflops, matmul_weights
        from .segment import segment_spans

        base = self._fresh_base()
        if self._weights is None:
            self._weights = matmul_weights(base)["total"]
        gflops = machine_gflops(str(self.loaded.device), str(next(base.parameters()).dtype).removeprefix("torch."))
        teacher = self.config.objective != "ct" and not self.distill.cache_path(text).is_file()
        chat = self.prompts.chat
        shape = teacher_shape(base, self.config.teacher_batch, self.config.segment_length + len(chat.before),
                              self.config.distill_answer_tokens)
        cfg = self.config
        asks_sentences = cfg.objective != "ct" and (cfg.distill_questions > 0 or cfg.distill_cloze)
        sentences = document_fact_sentences(  # what the teacher's asks grow with: counted, not assumed
            self.tokenizer, self._doc_ids, segment_spans(len(self._doc_ids), cfg.segment_length,
                                                         cfg.effective_stride)) if asks_sentences else None
        guess = estimate(len(self._doc_ids), cfg, self._weights, gflops, self.window, teacher,
                         len(chat.before), len(chat.after), attention_width(base), self.loaded.device.type,
                         getattr(base.config, "num_hidden_layers", 0), shape, sentences)
        if cfg.finetune == "lora":  # (only LoRA training is checkpointed)
            from .checkpoint import trained_share

            guess.student_done = trained_share(self.store.work(key))
        if len(self._doc_ids) > self.window or guess.total_s > 60:
            _say(guess.describe())

    def _lock(self, key: str):
        """Take the store's lock of ``key``: (the lock, whether another process held it first: it was training
        the key)."""
        from filelock import Timeout

        lock = self.store.lock(key)
        try:
            lock.acquire(timeout=0)
            return lock, False
        except Timeout:
            _say(f"another process is training this adapter (lock {lock.lock_file}); waiting for it")
            lock.acquire()
            return lock, True

    def _lookup(self, key: str) -> tuple[Internalized | None, bool]:
        """(the stored adapter of ``key``, made current, or None; whether a stored one is broken and must be
        replaced)."""
        try:
            stored = self.store.lookup(key)
            return (None if stored is None else self.use_adapter(stored, source="the adapter store")), False
        except LiftError as e:
            _say(f"warning: {e}; training it again")
            return None, True

    def _checkpoints(self, key: str, n_aux: int):
        """Where this key's training checkpoints (LoRA only: a full fine-tune's checkpoint is 3 model copies)."""
        if self.config.finetune != "lora":
            return None
        from .checkpoint import Checkpoints

        every = self.config.checkpoint_minutes * 60 or None
        return Checkpoints(self.store.work(key), {"key": key, "mode": self.config.training_mode},
                           at_stages(self.config, n_aux), every_seconds=every)

    def _train(self, qa: list, items: list, checkpoints) -> Trained:
        try:
            return train_on_documents(self._fresh_base(), [(self._doc_ids, qa, items)], self.config, self.prompts,
                                      keep_base=True, progress=self.progress, on_step=self.on_step,
                                      checkpoints=checkpoints)
        except KeyboardInterrupt:
            if checkpoints is not None and checkpoints.saved_where is not None:
                _say(f"interrupted: training up to {checkpoints.saved_where} is checkpointed in {checkpoints.path}; "
                     "rerun the same command to resume")
            raise

    def _metadata(self, text: str, trained: Trained, qa: list, qa_report: dict, items: list, distill_report: dict,
                  checkpoints) -> dict:
        metadata = adapter_metadata(text, len(self._doc_ids), self.model_id, self.model_spec,
                                    {**{k: v for k, v in self.config.resolved_dict().items()
                                        if k not in ANSWER_FIELDS}, "window": self.window}, self.config.finetune,
                                    trained.samples, {**qa_report, "pairs": len(qa)}, trained.result)
        if items:
            metadata["distill"] = {**distill_report, "student_samples": trained.qa_samples - len(qa)}
        if checkpoints is not None and checkpoints.resumed_epoch is not None:
            metadata["training"]["resumed_after_epoch"] = checkpoints.resumed_epoch + 1  # (0: within the first)
            metadata["training"]["resumed_at_sample"] = checkpoints.resumed_done
        return metadata

    def _save(self, key: str, trained: Trained, metadata: dict, text: str, qa: list, items: list, checkpoints,
              replace: bool) -> Path:
        files = {QA_FILE: qa_jsonl(qa)} if qa else {}
        if items:
            files[DISTILL_FILE] = items_jsonl(items)
        try:
            path = self.store.save(key, trained.model, metadata, text, files, replace=replace)
        except BaseException as e:
            detach_adapter(trained.model)  # the base model stays usable (no LoRA layers left in it)
            if isinstance(e, OSError):
                where = " (the last epoch is checkpointed: rerun to store it without training again)" \
                    if checkpoints is not None and checkpoints.saved_where is not None else ""
                raise LiftError(f"--store: cannot write the adapter to {self.store.path(key)}: "
                                f"{e.strerror or e}{where}") from e
            raise
        if checkpoints is not None:
            checkpoints.clear()
        return path

    def _qa_completer(self):
        spec = self.config.qa_model
        if spec and spec.startswith(("http://", "https://")):
            return openai_completer(spec)
        if spec:
            gen = load_model(spec, str(self.loaded.device))
            return local_completer(gen.model, gen.tokenizer)
        return local_completer(self._base, self.tokenizer)

    def use_adapter(self, path: str | Path, source: str = "--adapter") -> Internalized:
        """Load a stored adapter (and its document) and make it current; no training. ``source`` names where the
        adapter came from in error messages (the ``--adapter`` flag, or "the adapter store")."""
        meta = check_adapter(path, self.model_id, self.loaded.max_context, self.document, source=source)
        self.read(read_document(path))
        self._adapted = load_weights(self._fresh_base(), path, meta["kind"], source=source)
        self._adapter_path, self._trained = Path(path), False
        return Internalized(Path(path), False, meta)

    def _fresh_base(self):
        """The base model without any adapter (LoRA layers removed)."""
        if self._adapted is not None and hasattr(self._adapted, "peft_config"):
            self._base = detach_adapter(self._adapted)
        self._adapted = None  # a fully fine-tuned copy is simply dropped: the base was never touched
        self.answerer.forget_adapted()  # the base's keys/values still hold (its weights never change)
        return self._base

    # --- answering ---
    def check_question(self, question: str, mode: str = "lift+icl", max_new_tokens: int = 64) -> None:
        """Raise ``LiftError`` for a question that cannot be asked (before any training is spent on it)."""
        self.answerer.check(question, mode, max_new_tokens)

    def retrieve(self, question: str, budget: int, document: str | None = None) -> list[int]:
        """The BM25-best chunks of ``document`` (default: the current one) for ``question``, within ``budget``."""
        return self.answerer.retrieve(self.document if document is None else document, question, budget)

    def generate(self, prompt_ids: list[int], mode: str, max_new_tokens: int) -> str:
        """Greedy answer to a ready-made prompt by the model that ``mode`` calls for (adapted or base)."""
        if uses_adapter(mode):
            if self._adapted is None:
                raise LiftError(f"mode {mode} needs the document's adapter: internalize the document first")
            return self.answerer.generate(self._adapted, prompt_ids, max_new_tokens,
                                          adapter_scale=self.config.adapter_scale)
        peft = self._adapted is not None and hasattr(self._adapted, "peft_config")
        return self.answerer.generate(self._adapted if peft else self._base, prompt_ids, max_new_tokens,
                                      without_adapter=True)

    def ask(self, question: str, mode: str = "lift+icl", max_new_tokens: int = 64) -> Answer:
        self.check_question(question, mode, max_new_tokens)
        if self.document is None:
            raise LiftError("no document: internalize or read one first (--document or --adapter)")
        if uses_adapter(mode) and self._adapted is None:
            self.internalize(self.document)
        start = time.perf_counter()
        question = question.strip()
        prompt = self.answerer.prompt(question, mode, self.document, self._doc_ids, max_new_tokens)
        text = self.generate(prompt, mode, max_new_tokens)
        return Answer(
            question=question,
            answer=text,
            mode=mode,
            adapter=str(self._adapter_path) if uses_adapter(mode) and self._adapter_path else None,
            trained=self._trained and uses_adapter(mode),
            seconds=round(time.perf_counter() - start, 3),
        )
