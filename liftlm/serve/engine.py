"""Answering in the web process: one base model; each ready document's LoRA adapter loaded onto it as a named
PEFT adapter (``load_adapter``/``set_adapter``), at most ``max_loaded`` at a time (least recently used first out).

Every use of the model or the tokenizer runs on one thread (``Engine.run``): requests are queued, one generation
at a time, so the active adapter can never change under a running generation and answers never mix.
"""
from __future__ import annotations

import asyncio
import functools
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..adapters import AdapterStore, read_metadata
from ..config import LiftConfig
from ..context import PromptBuilder
from ..documents import check_document
from ..errors import LiftError
from ..infer import (
    Answerer,
    PromptReuse,
    adapted_slot,
    base_model_context,
    greedy_decode,
    scaled_adapter,
    uses_adapter,
    uses_document,
    uses_retrieval,
)
from ..keys import adapter_key
from ..models import LoadedModel, load_model, resolve_window
from ..train import detach_adapter

BASE_MODEL = "base"  # the model name that means "the base model, no document"
RAG_CHUNK_TOKENS = 128


class AdapterBroken(LiftError):
    """A ready document's stored adapter cannot be read or loaded."""


@dataclass
class Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of answer) or "length" (max_tokens reached)


def document_key(loaded: LoadedModel, text: str, config: LiftConfig) -> tuple[str, int, int]:
    """(store key, window resolved to tokens, document tokens) of ``text`` with ``config``: the key the worker's
    ``Lift.key()`` stores its adapter under (``liftlm.keys.adapter_key``; the service takes no ``--qa-file``)."""
    window = resolve_window(loaded, config.window)
    key = adapter_key(check_document(text), loaded.model_id, config, window)
    return key, window, len(loaded.tokenizer.encode(text, add_special_tokens=False))


class Engine:
    def __init__(self, model: str | None, device: str | None, store: str | None, max_loaded: int = 8,
                 max_documents_cached: int = 32):
        if max_loaded < 1:
            raise LiftError(f"--max-loaded-adapters must be at least 1 (got {max_loaded})")
        self.loaded = load_model(model, device)
        self.tokenizer = self.loaded.tokenizer
        self.store = AdapterStore(store)
        self.max_loaded = max_loaded
        self.peft = None  # the PeftModel around the base model, once a first adapter is loaded
        self.adapters: OrderedDict[str, str] = OrderedDict()  # document id -> adapter path, least recent first
        self.loads = 0  # adapters loaded from disk (an eviction makes the next question about it load again)
        self._tokens: OrderedDict[str, list[int]] = OrderedDict()  # document id -> its tokens
        self._max_documents_cached = max_documents_cached
        self._answerers: dict[int, Answerer] = {}  # one per window
        # the keys/values of the last prompt per model state (the base model; each adapter): a follow-up question
        # about a document computes only what follows the document (infer.PromptReuse)
        self.reuse = PromptReuse(max_slots=max_loaded + 1)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="liftlm-model")

    @property
    def model_id(self) -> str:
        return self.loaded.model_id

    async def run(self, fn, *args, **kwargs):
        """Run ``fn`` on the model thread (one at a time, in arrival order)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    # --- documents ---
    def document_key(self, text: str, config: LiftConfig) -> tuple[str, int, int]:
        """``document_key`` with this engine's model (on the model thread: it uses the tokenizer)."""
        return document_key(self.loaded, text, config)

    def stored(self, key: str) -> str | None:
        """The complete stored adapter for ``key`` (trained before, by the service or the CLI), if any."""
        try:
            path = self.store.lookup(key)
        except LiftError:
            return None  # a broken one is trained again (the store replaces it)
        return str(path) if path is not None else None

    def forget(self, doc_id: str) -> None:
        """Drop a deleted document's adapter and tokens."""
        self._tokens.pop(doc_id, None)
        if doc_id in self.adapters:
            self._evict(doc_id)

    # --- answering ---
    def _answerer(self, window: int) -> Answerer:
        if window not in self._answerers:
            self._answerers[window] = Answerer(self.tokenizer, PromptBuilder(self.tokenizer, window), RAG_CHUNK_TOKENS)
        return self._answerers[window]

    def _doc_tokens(self, job: dict) -> list[int]:
        ids = self._tokens.get(job["id"])
        if ids is None:
            ids = self.tokenizer.encode(job["text"], add_special_tokens=False)
            self._tokens[job["id"]] = ids
            while len(self._tokens) > self._max_documents_cached:
                self._tokens.popitem(last=False)
        self._tokens.move_to_end(job["id"])
        return ids

    def prepare(self, job: dict | None, question: str, mode: str, max_new_tokens: int) -> list[int]:
        """The prompt ids for ``question`` about ``job``'s document in ``mode`` (``job`` None: the base model and
        the question alone). Raises ``LiftError`` when the question does not fit the document's window, and
        ``AdapterBroken`` when the adapter a lift mode needs cannot be loaded."""
        try:
            if job is None:  # the question alone, as mode lift asks it
                prompt = self._answerer(self.loaded.max_context).prompt(question, "lift", None, None, max_new_tokens)
            else:
                doc_ids = self._doc_tokens(job) if uses_document(mode) and not uses_retrieval(mode) else None
                prompt = self._answerer(int(job["settings"]["window"])).prompt(question, mode, job["text"], doc_ids,
                                                                              max_new_tokens)
        except ValueError as e:
            raise LiftError(str(e)) from None
        if job is not None and uses_adapter(mode):
            self._load(job)
        return prompt

    def generate(self, job: dict | None, prompt: list[int], mode: str, max_new_tokens: int, push=None,
                 stop: threading.Event | None = None, scale: float = 1.0) -> Generated:
        """Greedy answer to ``prompt``: with ``job``'s adapter active for the lift modes (its LoRA update times
        ``scale``), with every adapter disabled otherwise. ``push(text)`` receives the answer as it is decoded;
        ``stop`` ends it early."""
        try:
            if job is not None and uses_adapter(mode):
                self._load(job)
                self.peft.set_adapter(_name(job["id"]))
                model, context = self.peft, scaled_adapter(self.peft, scale)
                slot = adapted_slot(_slot(job["id"]), scale)
            else:
                model = self.peft if self.peft is not None else self.loaded.model
                context, slot = base_model_context(model), "base"
            with context:
                out = greedy_decode(model, self.tokenizer, prompt, max_new_tokens, on_text=push,
                                    stop=stop.is_set if stop is not None else None, reuse=self.reuse, slot=slot)
            finished = out.ended or len(out.ids) < max_new_tokens
            return Generated(out.text, len(prompt), len(out.ids), "stop" if finished else "length")
        finally:
            if push is not None:
                push(None)  # the end of the stream

    # --- named adapters ---
    def _load(self, job: dict) -> None:
        doc_id = job["id"]
        if doc_id in self.adapters:
            self.adapters.move_to_end(doc_id)
            return
        path = job.get("adapter")
        if not path:
            raise AdapterBroken(f"document {doc_id} has no adapter")
        try:
            meta = read_metadata(path)
        except LiftError as e:
            raise AdapterBroken(str(e).removeprefix("--adapter: ")) from None
        if meta["kind"] != "lora" or meta["model_id"] != self.loaded.model_id:
            raise AdapterBroken(f"{path} is not a LoRA adapter for {self.loaded.model_id}")
        from peft import PeftModel

        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.loaded.model, path, adapter_name=_name(doc_id),
                                                      is_trainable=False).eval()
            else:
                self.peft.load_adapter(path, adapter_name=_name(doc_id), is_trainable=False)
        except Exception as e:  # shapes, keys, files: this adapter does not fit this model
            raise AdapterBroken(f"cannot load {path} ({str(e).strip().splitlines()[0] if str(e).strip() else e!r})") \
                from None
        self.loads += 1
        self.adapters[doc_id] = path
        self.peft.set_adapter(_name(doc_id))
        while len(self.adapters) > self.max_loaded:
            self._evict(next(iter(self.adapters)))

    def _evict(self, doc_id: str) -> None:
        """Unload ``doc_id``'s adapter: PEFT's ``delete_adapter`` while others stay loaded (the most recent one
        made active first, if it was active), ``detach_adapter`` for the last one."""
        self.adapters.pop(doc_id)
        self.reuse.forget(_slot(doc_id))  # its keys/values go with it (a reload may bring other weights)
        if self.adapters:
            active = self.peft.active_adapter
            if active == _name(doc_id):
                self.peft.set_adapter(_name(next(reversed(self.adapters))))
            self.peft.delete_adapter(_name(doc_id))
        else:  # the last one: take the LoRA layers off the base model altogether
            self.loaded.model = detach_adapter(self.peft)
            self.peft = None

    def loaded_adapters(self) -> list[str]:
        return list(self.adapters)


def _slot(doc_id: str) -> str:
    """The ``PromptReuse`` slot of a document's adapter."""
    return f"adapter {doc_id}"


def _name(doc_id: str) -> str:
    return f"doc_{doc_id}"

