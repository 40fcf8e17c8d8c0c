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


def test_answers_decode_in_place_into_a_cache_with_room_as_generate_would(tiny_loaded):
    """``greedy_decode`` hands ``generate`` a cache with room for the prompt and the answer (written in place, not
    concatenated at every token): the answers are those of ``generate``'s own cache, and the keys/values it keeps
    for the next prompt are views of that one buffer."""
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    torch.manual_seed(2)
    prompt = torch.randint(5, 300, (50,)).tolist()
    ids = torch.tensor([prompt])
    expected = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                              do_sample=False, pad_token_id=tok.pad_token_id)[0, 50:].tolist()
    reuse = PromptReuse()
    assert greedy_decode(model, tok, prompt, 12, reuse=reuse).ids == expected
    keys = reuse._kept["base"][1][0][0]  # the first layer's kept keys: [1, heads, 50, head_dim]
    assert keys.shape[2] == 50 and keys.untyped_storage().nbytes() >= keys[0, 0, 0].numel() * keys.shape[1] * 62 * 4
    assert greedy_decode(model, tok, prompt[:40] + [7, 8], 12, reuse=reuse).ids == model.generate(
        input_ids=torch.tensor([prompt[:40] + [7, 8]]), attention_mask=torch.ones(1, 42, dtype=torch.long),
        max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)[0, 42:].tolist()


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


def _with_lora(model):
    """``model`` with a LoRA adapter whose update is not zero (B initialised at random too)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))


def test_an_adapter_scaled_to_zero_is_the_base_model_and_its_scale_comes_back(tiny_loaded):
    from liftlm.infer import scaled_adapter

    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        base = tiny_loaded.model(input_ids=ids).logits
        model = _with_lora(tiny_loaded.model)
        adapted = model(input_ids=ids).logits
        with scaled_adapter(model, 0.0):
            zero = model(input_ids=ids).logits
        with scaled_adapter(model, 0.5):
            half = model(input_ids=ids).logits
        with scaled_adapter(model, 1.0):  # as trained: nothing to do
            same = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert (adapted - base).abs().max() > 1e-3  # the adapter changes the logits
    torch.testing.assert_close(zero, base)
    assert (half - base).abs().max() > 1e-4 and (half - adapted).abs().max() > 1e-4
    assert (half - base).norm() < (adapted - base).norm()  # half way, about
    torch.testing.assert_close(same, adapted)
    torch.testing.assert_close(after, adapted)  # the scaling is restored


def test_scaling_a_model_without_lora_is_one_clear_error(tiny_loaded):
    from liftlm.errors import LiftError
    from liftlm.infer import scaled_adapter

    with scaled_adapter(tiny_loaded.model, 1.0):  # (as trained: fine with any model)
        pass
    with pytest.raises(LiftError, match="scales a LoRA adapter"):
        with scaled_adapter(tiny_loaded.model, 0.5):
            pass


def test_forgetting_a_slot_forgets_its_scaled_states(tiny_model_dir, tmp_path):
    from liftlm.infer import adapted_slot

    lift = Lift(str(tiny_model_dir), LiftConfig(window=256), store=tmp_path / "store", device="cpu", progress=False)
    reuse = PromptReuse(min_shared=1, max_slots=4)
    cache = _cache_of(lift, [1, 2, 3])
    for slot in ("base", "adapted", adapted_slot("adapted", 0.5), "adapted-other"):
        reuse.keep(slot, [1, 2, 3], cache)
    assert adapted_slot("adapted", 1.0) == "adapted" and adapted_slot("adapted", 0.5) == "adapted@0.5"
    reuse.forget("adapted")
    assert [reuse.shared(s, [1, 2, 3, 4]) for s in ("base", "adapted", "adapted@0.5", "adapted-other")] == [3, 0, 0, 3]


def test_ask_with_the_adapter_scaled_to_zero_answers_as_the_base_model(tiny_model_dir, tmp_path):
    doc = "The lighthouse keeper of Varnholm kept a ledger of every ship that passed the northern cape. " * 6
    small = dict(window=128, objective="ct", segment_length=32, context_tokens=32, epochs=1, lora_rank=4,
                 learning_rate=5e-2)
    store, question = tmp_path / "store", "Who kept a ledger?"
    lift = Lift(str(tiny_model_dir), LiftConfig(**small), store=store, device="cpu", progress=False)
    assert lift.internalize(doc).trained
    prompt = lift.answerer.prompt(question, "lift", doc, None, 8)
    base = lift.answerer.generate(lift._adapted, prompt, 8, without_adapter=True)
    zero = Lift(str(tiny_model_dir), LiftConfig(**small, adapter_scale=0.0), store=store, device="cpu",
                progress=False)
    done = zero.internalize(doc)
    assert not done.trained and done.adapter == lift.internalize(doc).adapter  # the scale is not in the store key
    assert zero.ask(question, mode="lift", max_new_tokens=8).answer == base
    from liftlm.adapters import read_metadata

    assert "adapter_scale" not in read_metadata(done.adapter)["settings"]  # an answer-time setting: not stored


@pytest.mark.parametrize("kw, match", [({"adapter_scale": -0.5}, "between 0 and 4"),
                                       ({"adapter_scale": float("nan")}, "between 0 and 4"),
                                       ({"adapter_scale": 0.5, "finetune": "full"}, "needs --finetune lora")])
def test_bad_adapter_scales_are_refused(kw, match):
    from liftlm.errors import LiftError

    with pytest.raises((LiftError, ValueError), match=match):
        LiftConfig(**kw)


def test_the_adapter_scale_changes_no_key_and_enters_an_evaluation_identity_only_when_set(tmp_path):
    from liftlm.eval.benchmarks import NiahOptions
    from liftlm.eval.spec import EvalSpec

    assert LiftConfig(adapter_scale=0.5).key_dict() == LiftConfig().key_dict()
    assert LiftConfig().answer_dict() == {} and LiftConfig(adapter_scale=0.5).answer_dict() == {"adapter_scale": 0.5}
    spec = EvalSpec(benchmark="niah", data=None, out=tmp_path, options=NiahOptions())
    assert "adapter_scale" not in spec.identity(LiftConfig())
    assert spec.identity(LiftConfig(adapter_scale=0.5))["adapter_scale"] == 0.5
