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
