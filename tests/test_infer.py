"""Answering: a prompt that starts as the previous one did (the same document before another question) starts
from the kept keys/values, computes only what follows, and answers exactly as without them."""
from __future__ import annotations

import pytest
import torch

from liftlm import Lift, LiftConfig
from liftlm.infer import PromptReuse, greedy_decode


@pytest.fixture
def prefills(tiny_loaded):
    """The tiny model, and the number of tokens each ``generate`` computed in its first forward pass."""
    seen: list[int] = []
    calls = {"new": True}

    def hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if calls["new"]:
            seen.append(ids.shape[1])
            calls["new"] = False

    model = tiny_loaded.model
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)

    def decode(prompt, reuse=None, slot="base"):
        calls["new"] = True
        return greedy_decode(model, tiny_loaded.tokenizer, prompt, 8, reuse=reuse, slot=slot).ids

    yield decode, seen
    handle.remove()


def test_a_shared_start_is_computed_once_and_the_answers_do_not_change(prefills):
    decode, seen = prefills
    torch.manual_seed(1)
    document = torch.randint(5, 300, (120,)).tolist()
    prompts = [document + [7, 8, 9], document + [10, 11], document[:60] + [12, 13, 14, 15]]
    plain = [decode(p) for p in prompts]
    assert seen == [123, 122, 64]  # every prompt computed whole
    seen.clear()
    reuse = PromptReuse()
    assert [decode(p, reuse) for p in prompts] == plain
    # the first whole; the second after the 120 shared tokens; the third after its 60 shared with the second
    assert seen == [123, 2, 4]
    seen.clear()
    assert decode(prompts[2], reuse) == plain[2]  # the same prompt again: only its last token, for the logits
    assert seen == [1]


def test_short_shared_starts_and_other_slots_are_computed_again(prefills):
    decode, seen = prefills
    reuse = PromptReuse(min_shared=11)
    base = list(range(20, 60))
    decode(base + [5], reuse)
    decode(base[:10] + [6, 7], reuse)  # 10 shared tokens: below min_shared
    decode(base[:10] + [6, 8], reuse, slot="adapted")  # nothing kept in this slot yet
    assert seen == [41, 12, 12]
    reuse.forget("adapted")
    seen.clear()
    decode(base[:10] + [6, 7, 9], reuse)  # the base slot kept the 12-token prompt
    assert seen == [1]


def test_a_new_adapter_forgets_the_adapted_slot_only(tiny_model_dir, tmp_path):
    lift = Lift(str(tiny_model_dir), LiftConfig(window=256), store=tmp_path / "store", device="cpu", progress=False)
    reuse = lift.answerer.reuse
    for slot in ("base", "adapted"):
        reuse.keep(slot, [1, 2, 3], _cache_of(lift, [1, 2, 3]))
    lift.read("A short document about the harbour of Varnholm.")  # drops the adapter: its keys/values no longer hold
    assert reuse.shared("adapted", [1, 2, 3, 4]) == 0
    assert PromptReuse(min_shared=1).shared("base", [1, 2, 3, 4]) == 0  # (a fresh one keeps nothing)
    reuse.min_shared = 1
    assert reuse.shared("base", [1, 2, 3, 4]) == 3  # the base model's weights never change


def _cache_of(lift, ids):
    from liftlm.kvcache import prefix_cache

    return prefix_cache(lift.loaded.model, torch.tensor([ids]))
