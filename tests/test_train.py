import pytest
import torch

from liftlm.config import LiftConfig
from liftlm.context import IGNORE_INDEX, PromptBuilder
from liftlm.errors import LiftError
from liftlm.train import attach_adapter, batch_plan, build_samples, epoch_plan, sample_loss, train

TEXT = "The lighthouse keeper of Varnholm kept a ledger of every ship that passed the northern cape. " * 6


def test_sample_loss_equals_the_full_forward_loss(tiny_loaded):
    """Parity: computing logits only for labelled positions gives the same loss as the full forward pass."""
    model = tiny_loaded.model
    ids = torch.arange(3, 43).unsqueeze(0)
    labels = ids.clone()
    labels[0, :25] = IGNORE_INDEX
    with torch.no_grad():
        ours = sample_loss(model, ids, labels)
        ref = model(input_ids=ids, labels=labels).loss
        plain = sample_loss(model, ids, ids)
        ref_plain = model(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(plain, ref_plain)


def test_epoch_plan_is_seeded_and_a_permutation():
    a, b = epoch_plan(7, 0, LiftConfig(objective="ct", epochs=3, seed=1)), epoch_plan(7, 0, LiftConfig(objective="ct", epochs=3, seed=1))
    assert a == b and len(a) == 3 and all(sorted(e) == list(range(7)) for e in a)
    assert epoch_plan(7, 0, LiftConfig(objective="ct", epochs=3, seed=2)) != a


def test_batch_plan_batches_samples_that_share_a_prefix_in_the_epochs_order():
    prefix_of = [None, "a", "b", "a", "a", "b", None, "a"]
    plan = [[0, 1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, 0]]
    assert batch_plan(plan, prefix_of, 1) == [[[i] for i in e] for e in plan]
    assert batch_plan(plan, prefix_of, 2) == [[[0], [1, 3], [2, 5], [6], [4, 7]], [[6], [7, 4], [5, 2], [3, 1], [0]]]
    batched = batch_plan(plan, prefix_of, 3)
    assert batched[0] == [[0], [1, 3, 4], [2, 5], [6], [7]]  # a prefix's last batch where its last sample is
    for epoch, units in zip(plan, batched):  # every sample once, each batch one prefix
        assert sorted(i for u in units for i in u) == sorted(epoch)
        assert all(len({prefix_of[i] for i in u}) == 1 for u in units)


def test_two_stage_schedule_sees_qa_only_in_stage_two():
    plan = epoch_plan(5, 3, LiftConfig(objective="ct", epochs=2, qa_epochs=3, qa_pairs=3))
    assert len(plan) == 5
    assert all(sorted(e) == list(range(5)) for e in plan[:2])  # stage 1: segments only
    assert all(sorted(e) == list(range(8)) for e in plan[2:])  # stage 2: segments + QA
    mixed = epoch_plan(5, 3, LiftConfig(objective="ct", epochs=2, qa_schedule="mixed", qa_pairs=3))
    assert len(mixed) == 2 and all(sorted(e) == list(range(8)) for e in mixed)
    assert epoch_plan(5, 0, LiftConfig(objective="ct", epochs=2, qa_epochs=3)) == epoch_plan(5, 0, LiftConfig(objective="ct", epochs=2))


def test_qa_loss_weight_scales_the_gradient(tiny_model_dir):
    """The QA loss weight reaches the update: weights 0 and 1 train different adapters."""
    from liftlm.models import load_model

    tok = load_model(str(tiny_model_dir), device="cpu").tokenizer
    prompts = PromptBuilder(tok, 256)
    qa = [prompts.qa_sample(tok.encode(TEXT), "Who kept a ledger?", "The keeper.", 32)]
    curves = []
    for weight in (0.0, 1.0):
        loaded = load_model(str(tiny_model_dir), device="cpu")
        cfg = LiftConfig(objective="ct", segment_length=32, context_tokens=32, epochs=1, qa_schedule="mixed", qa_weight=weight,
                         lora_rank=4, learning_rate=1e-2)
        samples = build_samples(tok.encode(TEXT), cfg, prompts)
        model = attach_adapter(loaded.model, cfg)
        train(model, samples, cfg, progress=False, qa_samples=qa)
        with torch.no_grad():
            curves.append(model(input_ids=torch.tensor([samples[0].input_ids])).logits)
    assert not torch.allclose(curves[0], curves[1])


def test_loss_goes_down_on_a_repeated_text(tiny_loaded):
    tok = tiny_loaded.tokenizer
    cfg = LiftConfig(objective="ct", segment_length=32, context_tokens=32, epochs=8, learning_rate=1e-2, lora_rank=8)
    samples = build_samples(tok.encode(TEXT), cfg, PromptBuilder(tok, 256))
    model = attach_adapter(tiny_loaded.model, cfg)
    result = train(model, samples, cfg, progress=False)
    assert len(result.epoch_losses) == 8 and result.steps == 8 * len(samples)
    assert result.epoch_losses[-1] < 0.5 * result.epoch_losses[0]
    assert result.tokens == 8 * sum(len(s.input_ids) for s in samples)
    # only LoRA weights were trained
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_grad_accumulation_and_full_finetune(tiny_loaded):
    tok = tiny_loaded.tokenizer
    cfg = LiftConfig(objective="ct", segment_length=32, contextualized=False, epochs=2, grad_accum=3, finetune="full",
                     learning_rate=1e-3, lr_schedule="cosine", warmup_ratio=0.2)
    samples = build_samples(tok.encode(TEXT), cfg, PromptBuilder(tok, 256))
    before = {n: p.detach().clone() for n, p in tiny_loaded.model.named_parameters()}
    model = attach_adapter(tiny_loaded.model, cfg)
    result = train(model, samples, cfg, progress=False)
    assert result.steps == -(-2 * len(samples) // 3)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)


def test_lora_layers_adapts_the_top_share_of_the_layers_only(tiny_loaded):
    from liftlm.train import detach_adapter

    model = attach_adapter(tiny_loaded.model, LiftConfig(lora_layers=0.5))  # the tiny model has 2 layers
    try:
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable and all(".layers.1." in n for n in trainable)
    finally:
        detach_adapter(model)
    with pytest.raises(LiftError, match="--lora-layers"):
        LiftConfig(lora_layers=0)
    assert "lora_layers" not in LiftConfig().key_dict() and LiftConfig(lora_layers=0.5).key_dict()["lora_layers"] == 0.5


def test_gradient_checkpointing_gives_the_same_update(tiny_model_dir):
    from liftlm.models import load_model

    tok = load_model(str(tiny_model_dir), device="cpu").tokenizer
    results = []
    for gc in (False, True):
        loaded = load_model(str(tiny_model_dir), device="cpu")
        cfg = LiftConfig(objective="ct", segment_length=32, context_tokens=32, epochs=1, grad_checkpointing=gc, lora_rank=4)
        samples = build_samples(tok.encode(TEXT), cfg, PromptBuilder(tok, 256))
        model = attach_adapter(loaded.model, cfg)
        results.append(train(model, samples, cfg, progress=False).loss_curve)
    torch.testing.assert_close(torch.tensor(results[0]), torch.tensor(results[1]), rtol=1e-4, atol=1e-5)


def test_zero_epochs_trains_nothing(tiny_loaded):
    cfg = LiftConfig(objective="ct", epochs=0)
    assert train(attach_adapter(tiny_loaded.model, cfg), [], cfg, progress=False).steps == 0


def _has_lora(model) -> bool:
    return any("lora_" in name for name, _ in model.named_modules())


def test_train_on_documents_counts_every_documents_samples(tiny_loaded):
    from liftlm.synth import QAPair
    from liftlm.train import detach_adapter, train_on_documents

    cfg = LiftConfig(objective="ct", segment_length=32, context_tokens=16, epochs=1, qa_pairs=1, qa_schedule="mixed")
    prompts = PromptBuilder(tiny_loaded.tokenizer, 256)
    one = tiny_loaded.tokenizer.encode(TEXT, add_special_tokens=False)
    two = tiny_loaded.tokenizer.encode("A brass telescope was made in Glasgow. " * 8, add_special_tokens=False)
    pair = QAPair("Where was the telescope made?", "In Glasgow.", "", -1, -1)
    trained = train_on_documents(tiny_loaded.model.float(), [(one, []), (two, [pair])], cfg, prompts, progress=False)
    assert trained.samples == len(build_samples(one, cfg, prompts)) + len(build_samples(two, cfg, prompts))
    assert trained.qa_samples == 1 and trained.result.steps == trained.samples + 1
    assert _has_lora(trained.model)
    assert not _has_lora(detach_adapter(trained.model))


def test_a_failed_training_hands_the_base_model_back_without_lora(tiny_loaded, monkeypatch):
    """Whatever goes wrong inside the trainer, the base model is left as it was (no LoRA layers inside)."""
    import liftlm.train

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setitem(liftlm.train.TRAINERS, "paper", broken)
    base = tiny_loaded.model.float()
    doc = tiny_loaded.tokenizer.encode(TEXT, add_special_tokens=False)
    with pytest.raises(RuntimeError, match="out of memory"):
        liftlm.train.train_on_documents(base, [(doc, [])], LiftConfig(objective="ct", segment_length=32, context_tokens=16),
                                        PromptBuilder(tiny_loaded.tokenizer, 256), progress=False)
    assert not _has_lora(base) and not hasattr(base, "peft_config")


@pytest.mark.parametrize("stop", [True, False])
def test_a_stop_stays_a_stop_when_the_cleanup_after_it_fails(tiny_loaded, monkeypatch, stop):
    """Ctrl-C (or SIGTERM) cuts ``attach_adapter`` short and the adapter cannot be detached: the caller still sees
    the ``KeyboardInterrupt`` (a stop, not a failed job). After any other error, the failed cleanup is reported."""
    import liftlm.train

    def attach(model, cfg):
        raise KeyboardInterrupt if stop else ValueError("bad settings")

    def detach(model):
        raise RuntimeError("half-attached: cannot detach")

    monkeypatch.setattr(liftlm.train, "attach_adapter", attach)
    monkeypatch.setattr(liftlm.train, "detach_adapter", detach)
    doc = tiny_loaded.tokenizer.encode(TEXT, add_special_tokens=False)
    with pytest.raises(KeyboardInterrupt if stop else RuntimeError):
        liftlm.train.train_on_documents(tiny_loaded.model, [(doc, [])],
                                        LiftConfig(objective="ct", segment_length=32, context_tokens=16),
                                        PromptBuilder(tiny_loaded.tokenizer, 256), progress=False)


def test_a_window_too_small_is_one_clear_error_before_training(tiny_loaded):
    from liftlm.errors import LiftError
    from liftlm.train import train_on_documents

    doc = tiny_loaded.tokenizer.encode(TEXT, add_special_tokens=False)
    with pytest.raises(LiftError, match="--window/--segment-length"):
        train_on_documents(tiny_loaded.model, [(doc, [])], LiftConfig(objective="ct", segment_length=64),
                           PromptBuilder(tiny_loaded.tokenizer, 48), progress=False)
    assert not _has_lora(tiny_loaded.model)


def test_full_fine_tune_with_keep_base_leaves_the_base_untouched(tiny_loaded):
    from liftlm.train import train_on_documents

    base = tiny_loaded.model.float()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    doc = tiny_loaded.tokenizer.encode(TEXT, add_special_tokens=False)
    cfg = LiftConfig(objective="ct", segment_length=32, context_tokens=16, epochs=1, finetune="full", learning_rate=1e-3)
    trained = train_on_documents(base, [(doc, [])], cfg, PromptBuilder(tiny_loaded.tokenizer, 256),
                                 keep_base=True, progress=False)
    assert trained.model is not base
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in trained.model.state_dict().items())
