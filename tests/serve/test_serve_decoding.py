"""The engine's decoding is ``liftlm.infer.greedy_decode``: the same greedy tokens as a plain ``generate`` call,
its streamed pieces add up to the answer, and its stop condition ends it at the next token."""
from __future__ import annotations

import torch

from liftlm.infer import generate, greedy_decode


def _prompt(loaded) -> list[int]:
    return loaded.tokenizer.encode("The lighthouse keeper of Varnholm kept a ledger", add_special_tokens=False)


def test_greedy_decode_is_plain_greedy_generation(tiny_loaded):
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    prompt = _prompt(tiny_loaded)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        plain = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                               do_sample=False, pad_token_id=tok.pad_token_id)[0, len(prompt):].tolist()
    out = greedy_decode(model, tok, prompt, 12)
    assert out.ids == plain
    assert out.text == tok.decode(plain, skip_special_tokens=True).strip() == generate(model, tok, prompt, 12)
    assert out.ended == (bool(plain) and plain[-1] == tok.eos_token_id)


def test_streamed_pieces_make_the_answer_and_stop_ends_it(tiny_loaded):
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    prompt = _prompt(tiny_loaded)
    pieces: list[str] = []
    out = greedy_decode(model, tok, prompt, 12, on_text=pieces.append)
    assert "".join(pieces).strip() == out.text
    stopped = greedy_decode(model, tok, prompt, 12, stop=lambda: True)
    assert len(stopped.ids) == 1 and stopped.ids == out.ids[:1]


def test_a_follow_up_question_reuses_the_documents_keys_values(tiny_model_dir, tmp_path):
    """The engine keeps the last prompt's keys/values per model state: a second question about the same document
    (icl) starts after the document, and answers as a fresh decode of the whole prompt does."""
    from liftlm.serve.engine import Engine

    engine = Engine(str(tiny_model_dir), "cpu", str(tmp_path / "store"))
    try:
        job = {"id": "d1", "text": "The lighthouse keeper of Varnholm kept a ledger of every ship. " * 6,
               "settings": {"window": 256}}
        first = engine.prepare(job, "Who kept the ledger?", "icl", 8)
        second = engine.prepare(job, "What did the keeper keep?", "icl", 8)
        engine.generate(job, first, "icl", 8)
        shared = engine.reuse.shared("base", second)
        assert shared >= len(engine.tokenizer.encode(job["text"].strip(), add_special_tokens=False)) - 2
        got = engine.generate(job, second, "icl", 8)
        assert got.text == greedy_decode(engine.loaded.model, engine.tokenizer, second, 8).text
        assert got.prompt_tokens == len(second)
    finally:
        engine.close()
