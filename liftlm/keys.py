"""Keys: the document's hash and the adapter-store key, a pure function of (text, model id, settings).

A leaf module (it imports nothing from liftlm), so that the store, the QA and distillation caches, the recipe and
the web process all compute the same key without importing each other.

The key (version ``KEY_VERSION``) hashes the document, the model and the settings that change the weights
(``LiftConfig.key_dict``), nothing else. The versions of the two item makers are part of it: when the auxiliary QA
pairs (``SYNTH_VERSION``) or the distillation items (``DISTILL_VERSION``) made for a document change, so does the
key of every adapter trained on them.
"""
from __future__ import annotations

import hashlib
import json

KEY_VERSION = 2  # of the store key: 1 hashed every setting; 2 only those that change the weights
SYNTH_VERSION = 3  # of the auxiliary QA synthesizer (liftlm.synth): bump when the pairs made for a document change
DISTILL_VERSION = 5  # of the distillation items (liftlm.distill): bump when the items made for a document change
#                     (5: an answer that is a short number from its chunk, "10", passes the grounding check)
SHORT_VIEW_WINDOW = 576  # windows up to this train as before --prefix-refresh existed (see training_settings)


def document_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def store_key(doc_sha: str, model_id: str, settings: dict, base: str | None = None, version: int = KEY_VERSION) -> str:
    """A 20-hex-digit key of the document, the model and ``settings`` (only what changes the weights: see
    ``LiftConfig.key_dict``). ``version`` is part of the hash, so a new way of building keys never collides with
    an old one."""
    payload = json.dumps(
        {"v": version, "doc": doc_sha, "model": model_id, "base": base, "settings": settings},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def qa_key_settings(cfg, user_pairs: list[dict] | None = None) -> dict:
    """What the auxiliary QA pairs add to the key: the hash of the user's pairs (``--qa-file``, as dicts), or the
    synthesizer's version when pairs are synthesized, or nothing."""
    if user_pairs is not None:
        return {"qa_file_sha256": hashlib.sha256(json.dumps(user_pairs).encode()).hexdigest()}
    return {"qa_synthesizer": SYNTH_VERSION} if cfg.qa_pairs > 0 else {}


def training_settings(cfg, window: int, qa_settings: dict | None = None) -> dict:
    """The settings that change the adapter's weights: ``cfg.key_dict()`` with the window resolved to a number and
    the QA source's settings (``qa_key_settings``; none of the QA settings without auxiliary QA)."""
    qa = qa_key_settings(cfg) if qa_settings is None else qa_settings
    settings = {**cfg.key_dict(), "window": window, **qa}
    if cfg.objective != "ct":  # the distillation items: their maker's version
        settings["distill_version"] = DISTILL_VERSION
        if cfg.prefix_refresh is None and window > SHORT_VIEW_WINDOW:  # the head+tail view is reused by its
            settings["prefix_refresh"] = "by-length"  # length (liftlm.distill.student.refresh_after), not every 8
    elif not qa:  # no auxiliary samples at all: how they would be scheduled or weighted changes nothing
        settings = {k: v for k, v in settings.items() if not k.startswith("qa_")}
    return settings


def adapter_key(text: str, model_id: str, cfg, window: int, qa_settings: dict | None = None) -> str:
    """The store key of the adapter that ``cfg`` trains on ``text`` with model ``model_id`` at ``window`` tokens."""
    return store_key(document_sha256(text), model_id, training_settings(cfg, window, qa_settings))
