"""Overlap-aware training (liftlm/overlap.py): tiling, cached-prefix parity with a full forward pass, training."""
import pytest
import torch

from liftlm.config import LiftConfig
from liftlm.context import IGNORE_INDEX, PromptBuilder
from liftlm.kvcache import prefix_cache
from liftlm.overlap import (
    PROMPT_REFRESH,
    Memory,
    build_stride_samples,
    check_recurrent_support,
    ct_prompt,
    recurrent_logits,
    sequential_plan,
    shift_keys,
    stride_logits,
    stride_loss,
    stride_spans,
    train_overlap,
    train_recurrent,
)
from liftlm.train import attach_adapter, build_samples

torch.set_num_threads(1)

TEXT = "The lighthouse keeper of Varnholm kept a ledger of every ship that passed the northern cape. " * 6
WINDOW = 256


def _cfg(**kw):
    base = dict(objective="ct", segment_length=32, context_tokens=32, lora_rank=4, learning_rate=1e-2, epochs=1)
    return LiftConfig(**{**base, **kw})


def _setup(tokenizer, **kw):
    cfg = _cfg(**kw)
    prompts = PromptBuilder(tokenizer, WINDOW)
    doc = tokenizer.encode(TEXT, add_special_tokens=False)
    return cfg, prompts, doc, build_stride_samples(doc, cfg, prompts)


def _full_logits(model, sample):
    """Reference: one ordinary forward pass over prefix + target; the logits that predict the target."""
    ids = torch.tensor([sample.prefix_ids + sample.target_ids])
    p = len(sample.prefix_ids)
    return model(input_ids=ids, use_cache=False).logits[:, p - 1 : -1]  # [1, T, V]


# (1) every token gets exactly one loss term per epoch
@pytest.mark.parametrize("n,length,stride", [(0, 8, 3), (5, 8, 3), (8, 8, 3), (100, 32, 12), (97, 16, 16), (7, 8, 1)])
def test_stride_spans_tile_the_document_once(n, length, stride):
    spans = stride_spans(n, length, stride)
    covered = [t for a, b in spans for t in range(a, b)]
    assert covered == list(range(n))
    assert all(0 < b - a <= stride for a, b in spans)


def test_stride_spans_reject_a_bad_stride():
    with pytest.raises(ValueError):
        stride_spans(10, 8, 9)
    with pytest.raises(ValueError):
        stride_spans(10, 8, 0)


def test_samples_train_each_document_token_once(tiny_tokenizer):
    cfg, prompts, doc, samples = _setup(tiny_tokenizer)
    assert len(doc) > 3 * cfg.segment_length  # the test needs several segments' worth of document
    trained = [t for s in samples for t in range(s.start, s.end)]
    assert trained == list(range(len(doc)))
    assert all(s.target_ids == doc[s.start : s.end] for s in samples)
    # plain (non-contextualized) mode: doc[0] has nothing before it, every other token once
    plain = build_stride_samples(doc, _cfg(contextualized=False), prompts)
    assert [t for s in plain for t in range(s.start, s.end)] == list(range(1, len(doc)))
    assert plain[0].prefix_ids == doc[:1]


# (3) what each sample's attention sees
def test_prefix_is_the_ct_prompt_and_the_previous_tokens(tiny_tokenizer):
    cfg, prompts, doc, samples = _setup(tiny_tokenizer)
    back = cfg.segment_length - cfg.effective_stride  # ℓ - s = 20
    prompt = ct_prompt(prompts, doc, cfg.segment_length, cfg.context_tokens)
    paper = build_samples(doc, cfg, prompts)[0]
    assert prompt == paper.input_ids[: -cfg.segment_length]  # the very CT context of paper mode
    for s in samples:
        assert s.prefix_ids == prompt + doc[max(0, s.start - back) : s.start]
        assert len(s.prefix_ids) + len(s.target_ids) <= len(paper.input_ids) <= WINDOW
    late = samples[-2]
    assert len(late.prefix_ids) - len(prompt) == back  # far from the start: exactly ℓ - s previous tokens


def test_a_document_shorter_than_a_segment(tiny_tokenizer):
    cfg, prompts, doc, _ = _setup(tiny_tokenizer)
    short = doc[:20]
    samples = build_stride_samples(short, cfg, prompts)
    assert [t for s in samples for t in range(s.start, s.end)] == list(range(20))
    assert samples[0].prefix_ids == build_samples(short, cfg, prompts)[0].input_ids[:-20]
    assert build_stride_samples([], cfg, prompts) == []


# (2) cached prefix + target = one full forward pass
def test_cached_logits_equal_the_full_forward_pass(tiny_loaded):
    model = tiny_loaded.model.float().eval()
    _, _, _, samples = _setup(tiny_loaded.tokenizer)
    with torch.no_grad():
        for s in (samples[0], samples[3], samples[-1]):
            torch.testing.assert_close(stride_logits(model, s), _full_logits(model, s))


def test_cached_logits_equal_the_full_forward_pass_with_lora(tiny_loaded):
    cfg, _, _, samples = _setup(tiny_loaded.tokenizer)
    base = tiny_loaded.model.float()
    with torch.no_grad():
        before = _full_logits(base, samples[3])
    model = attach_adapter(base, cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # nonzero B: the adapter really changes the keys/values in the cache
    model.train()  # training mode (lora_dropout 0): what the training step runs in
    with torch.no_grad():
        assert not torch.allclose(_full_logits(model, samples[3]), before, atol=1e-3)
        for s in (samples[0], samples[3], samples[-1]):
            torch.testing.assert_close(stride_logits(model, s), _full_logits(model, s))


# (4) the loss
def test_stride_loss_equals_the_full_forward_cross_entropy(tiny_loaded):
    model = tiny_loaded.model.float().eval()
    _, _, _, samples = _setup(tiny_loaded.tokenizer)
    for s in (samples[0], samples[5]):
        ids = torch.tensor([s.prefix_ids + s.target_ids])
        labels = torch.tensor([[IGNORE_INDEX] * len(s.prefix_ids) + s.target_ids])
        with torch.no_grad():
            torch.testing.assert_close(stride_loss(model, s), model(input_ids=ids, labels=labels).loss)


# (6) gradients: LoRA only, every target token, nothing through the prefix
def test_gradients_reach_only_lora_and_the_prefix_keeps_no_graph(tiny_loaded):
    cfg, _, _, samples = _setup(tiny_loaded.tokenizer)
    model = attach_adapter(tiny_loaded.model.float(), cfg)
    model.train()
    s = samples[4]
    ids = torch.tensor([s.prefix_ids + s.target_ids])
    cache = prefix_cache(model, ids[:, : len(s.prefix_ids) - 1])
    assert cache.get_seq_length() == len(s.prefix_ids) - 1
    for layer in cache.layers:  # detached: constants of the step, no autograd graph kept alive
        assert not layer.keys.requires_grad and layer.keys.grad_fn is None
        assert not layer.values.requires_grad and layer.values.grad_fn is None

    stride_loss(model, s).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)
    assert all(grads[n].abs().sum() > 0 for n in grads if "lora_B" in n)  # B starts at 0, so only B moves first
    n_lora_b = sum("lora_B" in n for n, _ in model.named_parameters())
    assert sum("lora_B" in n for n in grads) == n_lora_b

    # the first target token is predicted by the last prefix token, which runs in the gradient pass
    model.zero_grad(set_to_none=True)
    logits = stride_logits(model, s)
    torch.nn.functional.cross_entropy(logits[0, :1], torch.tensor(s.target_ids[:1])).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_gradient_checkpointing_is_refused_not_silently_wrong(tiny_loaded):
    """Checkpointed layers drop the KV cache in transformers; the target would then not see the prefix."""
    cfg, _, _, samples = _setup(tiny_loaded.tokenizer)
    model = attach_adapter(tiny_loaded.model.float(), cfg)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    with pytest.raises(RuntimeError, match="cached prefix"):
        stride_loss(model, samples[2])


def _mean_stride_loss(model, samples) -> float:
    """Mean cross-entropy of the stride samples, evaluated (eval mode, no gradients)."""
    model.eval()
    with torch.no_grad():
        return sum(stride_loss(model, s).item() for s in samples) / len(samples)


# (5) training
def test_training_on_the_text_lowers_its_loss(tiny_loaded):
    cfg, prompts, doc, samples = _setup(tiny_loaded.tokenizer, epochs=3)
    model = attach_adapter(tiny_loaded.model.float(), cfg)
    before = _mean_stride_loss(model, samples)
    result = train_overlap(model, samples, cfg, progress=False)
    after = _mean_stride_loss(model, samples)
    assert after < 0.8 * before, (before, after)
    assert not model.training
    assert result.steps == 3 * len(samples) and len(result.epoch_losses) == 3
    assert result.tokens == 3 * len(doc)  # each document token once per epoch through forward + backward
    assert result.prefix_tokens == 3 * sum(len(s.prefix_ids) - 1 for s in samples)
    assert result.epoch_losses[-1] < result.epoch_losses[0]


def test_training_with_qa_samples_and_accumulation(tiny_loaded):
    cfg, prompts, doc, samples = _setup(tiny_loaded.tokenizer, epochs=1, qa_epochs=1, grad_accum=2)
    qa = [prompts.qa_sample(doc, "Who kept a ledger?", "The keeper.", 32)]
    model = attach_adapter(tiny_loaded.model.float(), cfg)
    result = train_overlap(model, samples, cfg, progress=False, qa_samples=qa)
    n = len(samples) + (len(samples) + 1)  # stage 1: segments; stage 2: segments + QA
    assert result.steps == -(-n // 2)  # accumulation runs over the whole order, across epochs (as train)
    assert result.tokens == 2 * len(doc) + len(qa[0].input_ids)


def test_overlap_modes_through_the_recipe(tiny_model_dir, tmp_path):
    from liftlm import Lift, LiftConfig

    text = "The lighthouse keeper of Varnholm kept a ledger of every ship that passed the northern cape. " * 8
    cfg = LiftConfig(objective="ct", training_mode="overlap", segment_length=32, context_tokens=32, window=256, epochs=1,
                     lora_rank=4)
    runs = {mode: Lift(str(tiny_model_dir), LiftConfig(**{**cfg.to_dict(), "training_mode": mode}), store=tmp_path,
                       device="cpu", progress=False).internalize(text) for mode in ("overlap", "recurrent", "paper")}
    assert all(r.trained for r in runs.values())
    assert len({r.adapter for r in runs.values()}) == 3  # the mode is part of the adapter key
    overlap, recurrent = runs["overlap"].metadata["training"], runs["recurrent"].metadata["training"]
    assert overlap["tokens"] == recurrent["tokens"] == runs["paper"].metadata["document_tokens"]  # once each
    assert overlap["tokens"] < overlap["prefix_tokens"]  # recomputes the prompt and the overlap every step
    assert 0 < recurrent["prefix_tokens"] < overlap["prefix_tokens"] / 3  # keeps them


# --- recurrent mode (Transformer-XL memory) ---
def _one_layer_model(tokenizer):
    """A 1-layer Llama: its keys/values depend only on each token and its position, so a memory kept from
    earlier steps equals a recomputed prefix exactly, trimming and rotary shift included."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         initializer_range=0.2)
    return LlamaForCausalLM(config).eval()


def _run_recurrent(model, samples, cfg):
    rotary = check_recurrent_support(model)
    memory = Memory(cfg.segment_length - cfg.effective_stride - 1, rotary)
    out = []
    with torch.no_grad():
        for s in samples:
            prompt_kv = [(layer.keys, layer.values) for layer in
                         prefix_cache(model, torch.tensor([s.prefix_ids[: s.n_prompt]])).layers] if s.n_prompt else []
            out.append(recurrent_logits(model, s, prompt_kv, memory))
            assert memory.length <= cfg.segment_length - cfg.effective_stride - 1
    return out


def test_shift_keys_moves_rotary_keys_exactly(tiny_loaded):
    model = tiny_loaded.model.float().eval()
    rotary = check_recurrent_support(model)
    ids = torch.tensor([[5, 9, 13, 17, 21]])
    with torch.no_grad():
        near = prefix_cache(model, ids).layers[0].keys
        far = model(input_ids=ids, position_ids=torch.arange(40, 45)[None], use_cache=True).past_key_values
    torch.testing.assert_close(shift_keys(far.layers[0].keys, rotary, 40), near, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("contextualized", [True, False])
def test_recurrent_memory_equals_the_recomputed_prefix_on_one_layer(tiny_tokenizer, contextualized):
    """Memory trimmed and shifted each step: the logits equal overlap mode's (a fresh prefix per span)."""
    model = _one_layer_model(tiny_tokenizer)
    cfg, prompts, doc, _ = _setup(tiny_tokenizer, contextualized=contextualized)
    samples = build_stride_samples(doc, cfg, prompts)
    assert len(samples) > 5  # the memory is trimmed many times
    for s, logits in zip(samples, _run_recurrent(model, samples, cfg)):
        torch.testing.assert_close(logits, stride_logits(model, s), atol=1e-4, rtol=1e-4)


def test_recurrent_logits_equal_a_full_forward_pass_while_the_memory_holds_the_past(tiny_loaded):
    """Two layers, a memory long enough for everything before each span: exactly one forward pass."""
    model = tiny_loaded.model.float().eval()
    cfg, prompts, doc, _ = _setup(tiny_loaded.tokenizer, segment_length=160, stride=20)
    samples = build_stride_samples(doc[:120], cfg, prompts)
    assert len(samples) == 6 and samples[-1].prefix_ids[samples[-1].n_prompt:] == doc[:100]
    for s, logits in zip(samples, _run_recurrent(model, samples, cfg)):
        torch.testing.assert_close(logits, _full_logits(model, s), atol=1e-4, rtol=1e-4)


def test_recurrent_memory_is_detached_and_needs_document_order(tiny_loaded):
    cfg, _, _, samples = _setup(tiny_loaded.tokenizer)
    model = attach_adapter(tiny_loaded.model.float(), cfg)
    model.train()
    rotary = check_recurrent_support(model)
    memory = Memory(cfg.segment_length - cfg.effective_stride - 1, rotary)
    prompt_kv = [(layer.keys, layer.values) for layer in
                 prefix_cache(model, torch.tensor([samples[0].prefix_ids[: samples[0].n_prompt]])).layers]
    for s in samples[:3]:
        logits = recurrent_logits(model, s, prompt_kv, memory)
        torch.nn.functional.cross_entropy(logits[0], torch.tensor(s.target_ids)).backward()
        assert all(k.grad_fn is None and v.grad_fn is None for k, v in memory.kv)
    assert memory.end == samples[2].end - 1
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    with pytest.raises(RuntimeError, match="document order"):
        recurrent_logits(model, samples[5], prompt_kv, memory)


def test_sequential_plan_orders_spans_and_keeps_qa_slots():
    plan = [[3, 0, 2, 1], [1, 5, 0, 3, 4, 2]]  # 4 spans; 4 and 5 are QA samples
    assert sequential_plan(plan, 4) == [[0, 1, 2, 3], [0, 5, 1, 2, 4, 3]]


def test_recurrent_training_lowers_the_loss_and_runs_each_token_once(tiny_loaded):
    cfg, prompts, doc, samples = _setup(tiny_loaded.tokenizer, epochs=3, training_mode="recurrent")
    model = attach_adapter(tiny_loaded.model.float(), cfg)
    before = _mean_stride_loss(model, samples)
    result = train_recurrent(model, samples, cfg, progress=False)
    after = _mean_stride_loss(model, samples)
    assert after < 0.8 * before, (before, after)
    assert result.steps == 3 * len(samples) and result.tokens == 3 * len(doc)
    refreshes = -(-len(samples) // PROMPT_REFRESH)  # per epoch: at the first span, then every PROMPT_REFRESH
    assert result.prefix_tokens == 3 * refreshes * samples[0].n_prompt


def test_recurrent_mode_refuses_what_it_cannot_do(tiny_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    from liftlm.errors import LiftError

    learned_positions = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(LiftError, match="rotary"):
        check_recurrent_support(learned_positions)
    with pytest.raises(ValueError, match="overlapping segments"):
        LiftConfig(objective="ct", training_mode="recurrent", segment_length=32, stride=32)
    with pytest.raises(ValueError, match="grad-checkpointing"):
        LiftConfig(objective="ct", training_mode="recurrent", grad_checkpointing=True)


def test_recurrent_training_takes_each_documents_own_prompt(tiny_loaded, monkeypatch):
    """SFT concatenates the stride samples of several documents: each document's spans see its own prompt."""
    import liftlm.overlap as overlap

    cfg, prompts, doc, first = _setup(tiny_loaded.tokenizer, training_mode="recurrent")
    other = tiny_loaded.tokenizer.encode("A brass telescope was made in Glasgow for a sailor. " * 8,
                                         add_special_tokens=False)
    second = build_stride_samples(other, cfg, prompts)
    seen = []
    real = overlap.prefix_cache
    monkeypatch.setattr(overlap, "prefix_cache", lambda model, ids: seen.append(ids[0].tolist()) or real(model, ids))
    model = attach_adapter(tiny_loaded.model.float(), cfg)
    result = train_recurrent(model, first + second, cfg, progress=False)
    assert result.tokens == len(doc) + len(other)
    prompts_used = {tuple(p) for p in seen if len(p) > 4}  # (the 4-token rotary check is not a prompt)
    assert prompts_used == {tuple(first[0].prefix_ids[: first[0].n_prompt]),
                            tuple(second[0].prefix_ids[: second[0].n_prompt])}


@pytest.mark.parametrize("mode", ["paper", "overlap", "recurrent"])
def test_epoch_hook_sees_each_epoch_and_does_not_change_training(tiny_model_dir, mode):
    """``on_epoch`` runs after each epoch in eval mode; its forward passes and its time leave the training alone:
    the same final weights as a run without the hook, and its sleep is not counted in the training time."""
    import time

    from liftlm.models import load_model
    from liftlm.train import TRAINERS

    finals, seen = [], []
    for hook in (False, True):
        loaded = load_model(str(tiny_model_dir), device="cpu")
        cfg, prompts, doc, _ = _setup(loaded.tokenizer, epochs=3, training_mode=mode)
        samples = build_samples(doc, cfg, prompts)
        model = attach_adapter(loaded.model.float(), cfg)
        probe = torch.tensor([doc[:24]])

        def on_epoch(epoch, result, model=model, probe=probe):
            assert not model.training and not torch.is_grad_enabled()
            seen.append((epoch, result.steps, len(result.epoch_seconds), model(input_ids=probe).logits.sum().item()))
            time.sleep(0.3)

        start = time.perf_counter()
        result = TRAINERS[mode](model, samples, cfg, progress=False, on_epoch=on_epoch if hook else None)
        wall = time.perf_counter() - start
        finals.append(model(input_ids=probe).logits)
        assert len(result.epoch_seconds) == 3 and result.epoch_seconds == sorted(result.epoch_seconds)
        assert result.epoch_seconds[-1] <= result.seconds
        if hook:
            assert wall - result.seconds >= 0.9  # the three sleeps are not training time
    torch.testing.assert_close(finals[0], finals[1])
    n = len(samples)
    assert [s[:3] for s in seen] == [(0, n, 1), (1, 2 * n, 2), (2, 3 * n, 3)]
    assert len({s[3] for s in seen}) == 3  # the adapter changed between epochs


@pytest.mark.parametrize("mode", ["paper", "overlap", "recurrent"])
def test_step_hook_reports_every_optimizer_step(tiny_loaded, mode):
    """``on_step`` sees each optimizer step once, in order, with its epoch, the run's step count and its loss."""
    from liftlm.train import TRAINERS

    cfg, prompts, doc, _ = _setup(tiny_loaded.tokenizer, epochs=2, grad_accum=2, training_mode=mode)
    samples = build_samples(doc, cfg, prompts)
    model = attach_adapter(tiny_loaded.model.float(), cfg)
    seen = []
    result = TRAINERS[mode](model, samples, cfg, progress=False, on_step=seen.append)
    per_epoch = -(-len(samples) // 2)
    assert [p.step for p in seen] == list(range(1, result.steps + 1))
    assert {p.steps for p in seen} == {result.steps} and {p.epochs for p in seen} == {2}
    assert [p.epoch for p in seen] == [0] * per_epoch + [1] * (result.steps - per_epoch)
    assert [p.loss for p in seen] == result.loss_curve
