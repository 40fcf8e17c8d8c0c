"""Training on documents: the samples of a training mode, a LoRA adapter (PEFT) or the whole model, and the
trainer of that mode; ``train_on_documents`` puts them together and is what every caller uses (the ``Lift``
recipe, pre-LIFT SFT, the benchmarks).

Training modes (``--training-mode``), registered in ``TRAINERS``:

* ``paper``: the paper's overlapping segments (§3.1), each a sample trained whole (``train``, below);
* ``overlap`` / ``recurrent``: each document token trained once per epoch (``liftlm.overlap``).

Samples are trained one at a time (batch 1, no padding, as the paper), except the distillation student's: those
that share a prefix train ``--batch-size`` at a time (``batch_plan``); the loop is ``liftlm.loop.optimize``.
"""
from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .config import LiftConfig
from .context import PromptBuilder, Sample
from .distill import SoftLoss, SoftSample, student_samples
from .errors import LiftError
from .loop import (
    EpochHook,
    StepHook,
    StepProgress,
    TrainResult,
    epoch_plan,
    optimize,
    sample_loss,
)
from .overlap import build_stride_samples, train_overlap, train_recurrent
from .segment import segment_spans

__all__ = ["TRAINERS", "StepProgress", "Trained", "TrainResult", "attach_adapter", "batch_plan", "build_samples",
           "detach_adapter", "epoch_plan", "optimize", "sample_loss", "train", "train_on_documents"]


def attach_adapter(model, cfg: LiftConfig):
    """Return the model to train: a PEFT LoRA wrapper, or the model itself with every weight trainable."""
    torch.manual_seed(cfg.seed)  # LoRA's A matrices are initialised randomly
    if cfg.finetune == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    layers = None  # all
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if cfg.lora_layers < 1 and n_layers:  # the top share of the layers
        layers = list(range(n_layers - max(1, round(cfg.lora_layers * n_layers)), n_layers))
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():  # PEFT 0.21 reads transformers 5's deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, lora)
    except ValueError as e:
        from .errors import LiftError

        raise LiftError(f"--target-modules: {e}") from None


def detach_adapter(model):
    """The base model of ``model`` without LoRA layers (PEFT's ``unload``); ``model`` itself when it has none."""
    if not hasattr(model, "peft_config"):
        return model
    base = model.unload()
    if hasattr(base, "peft_config"):  # left behind by unload(); PEFT would warn on the next wrap
        del base.peft_config
    return base


def build_samples(doc_ids: list[int], cfg: LiftConfig, prompts: PromptBuilder) -> list:
    """Segments of the document (paper §3.1), each made a training sample (plain or contextualized, §3.2);
    stride samples with a cached prefix in ``overlap`` and ``recurrent`` modes (``liftlm.overlap``)."""
    if cfg.training_mode in ("overlap", "recurrent"):
        return build_stride_samples(doc_ids, cfg, prompts)
    spans = segment_spans(len(doc_ids), cfg.segment_length, cfg.effective_stride)
    if not cfg.contextualized:
        if cfg.segment_length > prompts.window:
            raise ValueError(f"segment length {cfg.segment_length} exceeds the window {prompts.window}")
        return [prompts.plain_sample(doc_ids[a:b]) for a, b in spans]
    return [prompts.ct_sample(doc_ids, doc_ids[a:b], cfg.context_tokens, cfg.ct_format) for a, b in spans]


def train(model, samples: list[Sample], cfg: LiftConfig, progress: bool = True, desc: str = "LIFT",
          qa_samples: list[Sample] | None = None, on_epoch: EpochHook | None = None,
          on_step: StepHook | None = None, checkpoints=None) -> TrainResult:
    """Train ``model`` (already wrapped by ``attach_adapter``) in place on the segment ``samples`` and, per
    ``epoch_plan``, the auxiliary ``qa_samples`` (their loss weighted by ``cfg.qa_weight``). ``on_epoch``,
    ``on_step`` and ``checkpoints``: see ``optimize``."""
    result = TrainResult()
    qa_samples = qa_samples or []
    n_segments = len(samples)
    device = next(model.parameters()).device
    everything = list(samples) + list(qa_samples)
    soft = [i for i, s in enumerate(everything) if isinstance(s, SoftSample)]  # context-distillation items
    soft_loss = SoftLoss(model, [everything[i] for i in soft], cfg.distill_loss, cfg.prefix_refresh, cfg.pack_batches,
                         cfg.question_grad)
    soft_index = {i: k for k, i in enumerate(soft)}
    tensors = [  # tokenised once, moved once: nothing but model compute inside the loop
        None if i in soft_index else (torch.tensor([s.input_ids], device=device), torch.tensor([s.labels], device=device))
        for i, s in enumerate(everything)
    ]

    def compute(batch: list[int]) -> tuple[torch.Tensor, float]:
        weight = cfg.qa_weight if batch[0] >= n_segments else 1.0
        if batch[0] in soft_index:
            loss, tokens = soft_loss([soft_index[i] for i in batch])
            result.tokens += tokens
            return loss, weight
        ids, labels = tensors[batch[0]]
        result.tokens += ids.shape[1]
        return sample_loss(model, ids, labels), weight

    prefix_of = [tuple(s.shared_prefix) if isinstance(s, SoftSample) and s.shared_prefix else None
                 for s in everything]
    lengths = [len(s.input_ids) for s in everything] if cfg.group_by_length else None
    plan = batch_plan(epoch_plan(n_segments, len(qa_samples), cfg), prefix_of, cfg.resolved_batch_size, lengths)
    optimize(model, plan, compute, cfg, result, progress, desc, on_epoch, on_step, checkpoints,
             on_save=soft_loss.forget)
    result.prefix_tokens += soft_loss.prefix_tokens  # the shared prefixes run forward only
    result.pad_tokens += soft_loss.pad_tokens
    return result


LENGTH_RUN = 8  # with lengths, batches whose samples are sorted together (``batch_plan``)


def batch_plan(plan: list[list[int]], prefix_of: list, size: int,
               lengths: list[int] | None = None) -> list[list[list[int]]]:
    """``plan``'s epochs as mini-batches: samples that share a prefix (``prefix_of[i]``, None for a sample that
    shares none: it trains alone) are batched ``size`` at a time, in the epoch's order (a batch takes its place
    where its last sample was; a prefix's last batch, smaller, where its last sample of the epoch was: the items
    of one chunk, in view ``lift+chunk``, train where they fall, not all at the epoch's end).
    With ``lengths`` (a sample's tokens; ``--group-by-length``), a prefix's samples are gathered ``LENGTH_RUN``
    batches' worth at a time in the epoch's order, sorted by length (ties in that order) and cut into batches
    there, shortest first: a batch's rows are then about as long, and fewer pads run beside them."""
    run = size * (LENGTH_RUN if lengths is not None else 1)
    out = []
    for epoch in plan:
        batches, pending = [], {}
        left = Counter(prefix_of[i] for i in epoch)
        for i in epoch:
            if prefix_of[i] is None or size == 1:
                batches.append([i])
                continue
            group = pending.setdefault(prefix_of[i], [])
            group.append(i)
            left[prefix_of[i]] -= 1
            if len(group) == run or not left[prefix_of[i]]:
                group = pending.pop(prefix_of[i])
                if lengths is not None:
                    group.sort(key=lambda j: lengths[j])
                batches.extend(group[k:k + size] for k in range(0, len(group), size))
        out.append(batches)
    return out


TRAINERS = {"paper": train, "overlap": train_overlap, "recurrent": train_recurrent}


@dataclass
class Trained:
    """What ``train_on_documents`` returns: the trained model (the PEFT wrapper around the base for LoRA, a
    trained copy or the base itself for a full fine-tune), the trainer's result and the sample counts."""

    model: torch.nn.Module
    result: TrainResult
    samples: int
    qa_samples: int


def train_on_documents(base, documents: Sequence[tuple[list[int], Sequence]], cfg: LiftConfig,
                       prompts: PromptBuilder, *, keep_base: bool = False, progress: bool = True,
                       desc: str = "LIFT", on_epoch: EpochHook | None = None,
                       on_step: StepHook | None = None, checkpoints=None) -> Trained:
    """LIFT's training, for one document or several (pre-LIFT SFT): every document's samples (its segments per
    ``cfg.training_mode``, and its auxiliary QA pairs as QA samples), an adapter on ``base`` (``attach_adapter``),
    then the mode's trainer over all of them.

    ``documents``: (token ids, QA pairs) per document, or (token ids, QA pairs, distillation items); a QA pair has
    ``question`` and ``answer``; distillation items (``liftlm.distill``) train in ``cfg.views``. With
    ``cfg.objective == "distill"`` the segments are left out.
    ``keep_base``: a full fine-tune trains a copy and leaves ``base`` untouched (LoRA never changes it).
    A window too small for the samples raises ``LiftError`` before any training. If training fails (any
    exception, Ctrl-C included), the LoRA layers are taken out of ``base`` again before the error goes on, so
    ``base`` stays usable. ``checkpoints`` (``liftlm.checkpoint.Checkpoints``): resume from / write epoch-end
    checkpoints (see ``optimize``)."""
    samples: list = []
    qa_samples: list[Sample] = []
    try:
        for doc_ids, qa, *items in documents:
            if cfg.objective != "distill":
                samples += build_samples(doc_ids, cfg, prompts)
            qa_samples += [prompts.qa_sample(doc_ids, p.question, p.answer, cfg.qa_context) for p in qa]
            if items and items[0]:
                qa_samples += student_samples(items[0], prompts, doc_ids, cfg.views)
    except ValueError as e:
        raise LiftError(f"--window/--segment-length: {e}") from None
    target = copy.deepcopy(base) if keep_base and cfg.finetune == "full" else base
    model = None
    try:
        model = attach_adapter(target, cfg)
        result = TRAINERS[cfg.training_mode](model, samples, cfg, progress=progress, desc=desc,
                                             qa_samples=qa_samples, on_epoch=on_epoch, on_step=on_step,
                                             checkpoints=checkpoints)
    except BaseException as e:
        try:
            detach_adapter(model if model is not None else target)
        except Exception:
            if not isinstance(e, KeyboardInterrupt):
                raise
            # a stop stays a stop (the caller drops or reloads the model)
        raise
    return Trained(model, result, len(samples), len(qa_samples))
