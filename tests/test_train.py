import torch

from liftlm.config import LiftConfig
from liftlm.context import IGNORE_INDEX, PromptBuilder
from liftlm.recipe import build_samples
from liftlm.train import attach_adapter, epoch_plan, sample_loss, train

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
    a, b = epoch_plan(7, 0, LiftConfig(epochs=3, seed=1)), epoch_plan(7, 0, LiftConfig(epochs=3, seed=1))
    assert a == b and len(a) == 3 and all(sorted(e) == list(range(7)) for e in a)
    assert epoch_plan(7, 0, LiftConfig(epochs=3, seed=2)) != a


def test_two_stage_schedule_sees_qa_only_in_stage_two():
    plan = epoch_plan(5, 3, LiftConfig(epochs=2, qa_epochs=3, qa_pairs=3))
    assert len(plan) == 5
    assert all(sorted(e) == list(range(5)) for e in plan[:2])  # stage 1: segments only
    assert all(sorted(e) == list(range(8)) for e in plan[2:])  # stage 2: segments + QA
    mixed = epoch_plan(5, 3, LiftConfig(epochs=2, qa_schedule="mixed", qa_pairs=3))
    assert len(mixed) == 2 and all(sorted(e) == list(range(8)) for e in mixed)
    assert epoch_plan(5, 0, LiftConfig(epochs=2, qa_epochs=3)) == epoch_plan(5, 0, LiftConfig(epochs=2))


def test_qa_loss_weight_scales_the_gradient(tiny_model_dir):
    """The QA loss weight reaches the update: weights 0 and 1 train different adapters."""
    from liftlm.models import load_model

    tok = load_model(str(tiny_model_dir), device="cpu").tokenizer
    prompts = PromptBuilder(tok, 256)
    qa = [prompts.qa_sample(tok.encode(TEXT), "Who kept a ledger?", "The keeper.", 32)]
    curves = []
    for weight in (0.0, 1.0):
        loaded = load_model(str(tiny_model_dir), device="cpu")
        cfg = LiftConfig(segment_length=32, context_tokens=32, epochs=1, qa_schedule="mixed", qa_weight=weight,
                         lora_rank=4, learning_rate=1e-2)
        samples = build_samples(tok.encode(TEXT), cfg, prompts)
        model = attach_adapter(loaded.model, cfg)
        train(model, samples, cfg, progress=False, qa_samples=qa)
        with torch.no_grad():
            curves.append(model(input_ids=torch.tensor([samples[0].input_ids])).logits)
    assert not torch.allclose(curves[0], curves[1])


def test_loss_goes_down_on_a_repeated_text(tiny_loaded):
    tok = tiny_loaded.tokenizer
    cfg = LiftConfig(segment_length=32, context_tokens=32, epochs=8, learning_rate=1e-2, lora_rank=8)
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
    cfg = LiftConfig(segment_length=32, contextualized=False, epochs=2, grad_accum=3, finetune="full",
                     learning_rate=1e-3, lr_schedule="cosine", warmup_ratio=0.2)
    samples = build_samples(tok.encode(TEXT), cfg, PromptBuilder(tok, 256))
    before = {n: p.detach().clone() for n, p in tiny_loaded.model.named_parameters()}
    model = attach_adapter(tiny_loaded.model, cfg)
    result = train(model, samples, cfg, progress=False)
    assert result.steps == -(-2 * len(samples) // 3)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)


def test_gradient_checkpointing_gives_the_same_update(tiny_model_dir):
    from liftlm.models import load_model

    tok = load_model(str(tiny_model_dir), device="cpu").tokenizer
    results = []
    for gc in (False, True):
        loaded = load_model(str(tiny_model_dir), device="cpu")
        cfg = LiftConfig(segment_length=32, context_tokens=32, epochs=1, grad_checkpointing=gc, lora_rank=4)
        samples = build_samples(tok.encode(TEXT), cfg, PromptBuilder(tok, 256))
        model = attach_adapter(loaded.model, cfg)
        results.append(train(model, samples, cfg, progress=False).loss_curve)
    torch.testing.assert_close(torch.tensor(results[0]), torch.tensor(results[1]), rtol=1e-4, atol=1e-5)


def test_zero_epochs_trains_nothing(tiny_loaded):
    cfg = LiftConfig(epochs=0)
    assert train(attach_adapter(tiny_loaded.model, cfg), [], cfg, progress=False).steps == 0
