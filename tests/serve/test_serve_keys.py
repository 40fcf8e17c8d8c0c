"""The web process computes a posted document's store key without a ``Lift`` (``engine.document_key``): it must be
the key the worker's ``Lift`` stores the adapter under, or every job fails its "stored under another id" check."""
from __future__ import annotations

import pytest
from serve_helpers import DOCS

from liftlm import Lift, LiftConfig
from liftlm.errors import LiftError
from liftlm.serve.engine import document_key

SETTINGS = [
    {"objective": "ct", "window": 256, "segment_length": 32, "context_tokens": 32, "epochs": 1},
    {"objective": "ct", "qa_pairs": 4, "window": 128},
    {"objective": "distill", "lora_rank": 4},
    {"objective": "ct+distill", "qa_pairs": 2},
    {},  # the model's own window
]


@pytest.mark.parametrize("settings", SETTINGS, ids=[str(s) for s in SETTINGS])
def test_document_key_is_the_workers_lift_key(tiny_loaded, tmp_path, settings):
    config = LiftConfig.from_dict(settings, strict=True)
    key, window, tokens = document_key(tiny_loaded, DOCS[0], config)
    lift = Lift(None, config, store=tmp_path / "store", progress=False, loaded=tiny_loaded)
    lift.read(DOCS[0])
    assert (key, window) == (lift.key(), lift.window)
    assert tokens == len(tiny_loaded.tokenizer.encode(DOCS[0], add_special_tokens=False))


def test_document_key_refuses_a_window_over_the_models_limit(tiny_loaded):
    with pytest.raises(LiftError, match="--window"):
        document_key(tiny_loaded, DOCS[0], LiftConfig.from_dict({"window": 10**6}, strict=True))
