"""The optimizer loop every trainer shares (``liftlm.train`` and ``liftlm.overlap`` build their trainers on it):
AdamW (β 0.9/0.98, as the paper) over samples in a seeded order (one at a time, or mini-batches a trainer
forms), ``grad_accum`` of them a step, clipping, a learning-rate schedule with warm-up, optional gradient
checkpointing, a progress bar with the running loss and the epoch's end, and hooks after every step and epoch.

The loss is computed only where labels are set: the logits of the prompt part of a contextualized sample are
never materialised (``logits_to_keep``), which saves the vocabulary projection for those positions.
"""
from __future__ import annotations

import bisect
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoint import rng_states
from .config import LiftConfig
from .context import IGNORE_INDEX
from .errors import LiftError
from .memory import out_of_memory, peak, reset_peak

if TYPE_CHECKING:
    from .checkpoint import Checkpoints

EpochHook = Callable[[int, "TrainResult"], None]
StepHook = Callable[["StepProgress"], None]


@dataclass
class StepProgress:
    """Where training stands after an optimizer step (given to an ``on_step`` hook, e.g. a service's progress).
    Before training, context distillation's teacher reports through the same hook with ``stage="teacher"``:
    ``step`` prompts answered of ``steps``, epoch 0, loss NaN."""

    epoch: int  # 0-based epoch the step belongs to
    epochs: int
    step: int  # optimizer steps done (1-based)
    steps: int  # optimizer steps in the whole run
    loss: float  # mean loss of this step
    stage: str = "training"  # or "teacher"


@dataclass
class TrainResult:
    loss_curve: list[float] = field(default_factory=list)  # mean loss of each optimizer step
    epoch_losses: list[float] = field(default_factory=list)  # mean loss of each epoch
    epoch_seconds: list[float] = field(default_factory=list)  # training time at the end of each epoch
    seconds: float = 0.0
    tokens: int = 0  # tokens run forward and backward
    prefix_tokens: int = 0  # tokens run forward only, without gradients (cached prefixes: keys/values reused)
    pad_tokens: int = 0  # pads run forward and backward beside a batch's shorter rows (not in ``tokens``)
    steps: int = 0
    peak_memory_gib: float | None = None  # the training's peak memory (``liftlm.memory``; None: not measured)
    peak_memory_since: str = "phase"  # "process": a CPU whose peak cannot be reset (the process's whole life)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def sample_loss(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions of one sample (shapes [1, L])."""
    labelled = (labels[0] != IGNORE_INDEX).nonzero()
    first = int(labelled[0]) if len(labelled) else input_ids.shape[1]
    # Position t predicts token t+1, so logits are needed from position first-1 on (at least 1 position back).
    keep = input_ids.shape[1] - max(first - 1, 0)
    logits = model(input_ids=input_ids, logits_to_keep=keep, use_cache=False).logits  # [1, keep, V]
    targets = labels[:, input_ids.shape[1] - keep + 1 :]  # [1, keep-1]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)


def epoch_plan(n_segments: int, n_qa: int, cfg: LiftConfig) -> list[list[int]]:
    """Which samples each epoch sees, in order. Indices < n_segments are segments, the rest QA pairs.

    two-stage (the paper): ``epochs`` epochs of segments, then ``qa_epochs`` epochs of segments + QA;
    mixed: ``epochs`` epochs of segments + QA. Without QA: ``epochs`` epochs of segments."""
    g = torch.Generator().manual_seed(cfg.seed)

    def perm(n: int) -> list[int]:
        return torch.randperm(n, generator=g).tolist()

    if n_qa == 0:
        return [perm(n_segments) for _ in range(cfg.epochs)]
    if n_segments == 0:  # auxiliary items alone (--objective distill)
        return [perm(n_qa) for _ in range(cfg.epochs)]
    both = n_segments + n_qa
    if cfg.qa_schedule == "mixed":
        return [perm(both) for _ in range(cfg.epochs)]
    return [perm(n_segments) for _ in range(cfg.epochs)] + [perm(both) for _ in range(cfg.qa_epochs)]


def at_stages(cfg: LiftConfig, n_aux: int) -> list[str]:
    """The auxiliary-task stage of each epoch of ``epoch_plan``'s schedule, for checkpoint messages. ``n_aux``:
    auxiliary items (QA pairs and distillation items)."""
    if n_aux == 0:
        return ["segments"] * cfg.epochs
    if cfg.objective == "distill":
        return ["auxiliary items"] * cfg.epochs
    if cfg.qa_schedule == "mixed":
        return ["segments + auxiliary items (mixed)"] * cfg.epochs
    return ["1, segments"] * cfg.epochs + ["2, segments + auxiliary items"] * cfg.qa_epochs


def optimize(model, plan: list[list[int]], compute, cfg: LiftConfig, result: TrainResult, progress: bool,
             desc: str, on_epoch: EpochHook | None = None, on_step: StepHook | None = None,
             checkpoints: Checkpoints | None = None, exact_epochs: bool = False,
             on_save: Callable[[], None] | None = None) -> TrainResult:
    """The loop the trainers share: AdamW over the samples in ``plan`` (epochs of units: a sample index, or a
    mini-batch of them as a list), ``cfg.grad_accum`` units a step. ``compute(unit)`` returns the unit's loss (a
    batch's: the mean of its samples') and its weight. The progress bar counts samples, and says when the current
    epoch will end.

    ``on_epoch(epoch, result)`` is called after each epoch's last optimizer step, with the model in eval mode
    (e.g. to measure what the adapter knows so far); its time is not counted in ``result.seconds`` nor in
    ``result.epoch_seconds``. ``on_step(StepProgress)`` is called after every optimizer step (keep it cheap: its
    time counts as training time).

    ``checkpoints`` (``liftlm.checkpoint.Checkpoints``): the loop starts from its last checkpoint when it has one
    for this plan, and writes one after the optimizer step that ends each epoch and, when one is due
    (``Checkpoints.due``), after any other step (trainable weights, optimizer, scheduler, RNG states, samples
    done, the result so far); not counted as training time. With ``grad_accum`` > 1 the step that ends an epoch
    may take the first samples of the next; ``exact_epochs`` (a trainer that carries state from step to step
    within an epoch, as ``recurrent``) then skips that epoch's checkpoint, and every timed one. A
    ``KeyboardInterrupt`` (Ctrl-C; SIGTERM from the CLI) while a step's units run writes a checkpoint of the last
    finished step before it propagates (not with ``exact_epochs``). ``on_save()``:
    called after each checkpoint is written, for a ``compute`` that keeps something from step to step (the
    student's shared prefixes) to start it afresh there, as a run resumed from that checkpoint does."""
    if not any(plan):
        return result
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=cfg.resolved_learning_rate, betas=(0.9, 0.98), eps=1e-8, weight_decay=cfg.weight_decay
    )
    order = [u for epoch in plan for u in epoch]
    sizes = [len(u) if isinstance(u, list) else 1 for u in order]  # samples in each unit
    epoch_ends = list(itertools.accumulate(len(e) for e in plan))  # units done when each epoch ends
    total_steps = math.ceil(len(order) / cfg.grad_accum)
    scheduler = _scheduler(opt, cfg, total_steps)
    saver = _Saver(checkpoints, model, opt, scheduler, result, on_save, exact_epochs)
    first, elapsed = saver.resume(plan, sizes, cfg)
    step_losses = saver.step_losses
    if cfg.grad_checkpointing:
        _checkpointing(model, True)
    model.train()
    bar = tqdm(total=sum(sizes), initial=sum(sizes[:first]), desc=desc, unit="sample", disable=not progress,
               dynamic_ncols=True)
    start = time.perf_counter() - elapsed
    hook_seconds = 0.0
    eta = _EpochEta(sizes, epoch_ends, first)
    since = reset_peak(device := params[0].device if params else "cpu")  # the training's peak memory from here
    saver.settle(first)
    try:
        for k in range(first, len(order), cfg.grad_accum):
            group = order[k : k + cfg.grad_accum]
            for unit in group:
                step_losses.append(_forward_backward(compute, unit, len(group), cfg, device))
                bar.update(len(unit) if isinstance(unit, list) else 1)
            saver.settled = None  # (until this step has updated the weights and kept its books)
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            scheduler.step()
            opt.zero_grad(set_to_none=True)
            result.loss_curve.append(sum(step_losses[-len(group) :]) / len(group))
            result.steps += 1
            done = k + len(group)
            bar.set_postfix_str(f"loss={result.loss_curve[-1]:.3f}, {eta.say(done)}", refresh=False)
            if on_step is not None:
                epoch = bisect.bisect_right(epoch_ends, k)  # the epoch of its first sample
                on_step(StepProgress(epoch, len(plan), result.steps, total_steps, result.loss_curve[-1]))
            while len(result.epoch_losses) < len(epoch_ends) and epoch_ends[len(result.epoch_losses)] <= done:
                e = len(result.epoch_losses)
                begin = epoch_ends[e - 1] if e else 0
                result.epoch_losses.append(sum(step_losses[begin : epoch_ends[e]]) / (epoch_ends[e] - begin))
                result.epoch_seconds.append(time.perf_counter() - start - hook_seconds)
                if on_epoch is not None:
                    hook_start = time.perf_counter()
                    model.eval()
                    with torch.no_grad():
                        on_epoch(e, result)
                    model.train()
                    hook_seconds += time.perf_counter() - hook_start
                if done == epoch_ends[e] or not exact_epochs:
                    hook_seconds += saver.save(e, done, start, hook_seconds)
            if not exact_epochs and done < len(order) and saver.due():  # a timed one within the epoch
                hook_seconds += saver.save(len(result.epoch_losses) - 1, done, start, hook_seconds)
            saver.settle(done)
    except KeyboardInterrupt:
        saver.interrupted(start, hook_seconds)
        raise
    finally:
        bar.close()
        model.eval()
        if cfg.grad_checkpointing:
            _checkpointing(model, False)
    result.seconds = time.perf_counter() - start - hook_seconds
    most = peak(device, since)
    if most is not None:
        result.peak_memory_gib, result.peak_memory_since = most.gib, most.since
    return result


def _forward_backward(compute, unit, units: int, cfg: LiftConfig, device) -> float:
    """One unit's loss and its gradients (weighted as one of ``units`` a step); returns the loss. Running out of
    memory is a ``LiftError`` that says which settings to lower."""
    try:
        loss, weight = compute(unit)
        (loss * (weight / units)).backward()
    except Exception as e:
        if not out_of_memory(e):
            raise
        n = len(unit) if isinstance(unit, list) else 1
        lower = (f"--batch-size {max(1, n // 2)} --grad-accum {cfg.grad_accum * 2} (the same samples an optimizer "
                 "step, half at a time)" if n > 1 else "a smaller --window (shorter samples), or --grad-checkpointing")
        cached = "; the teacher's items are cached, so only the student runs again" if cfg.objective != "ct" else ""
        raise LiftError(f"out of memory in a training step of {n} sample{'s' if n > 1 else ''} on {device}: try "
                        f"{lower}{cached}") from None
    return loss.item()


class _Saver:
    """``optimize``'s checkpoints (``checkpoints``: a ``liftlm.checkpoint.Checkpoints``, or None: none). Besides
    the epochs' and the timed ones, a ``KeyboardInterrupt`` while a step's units run forward and backward (most of
    the time) checkpoints the last finished step on the way out: ``settled`` units done then, with the RNG
    states, clock and token counts of that moment. While a step updates the weights, keeps its books or writes a
    checkpoint (``settled`` None), the last checkpoint written stands. With ``exact_epochs`` only epoch ends are
    saved."""

    def __init__(self, checkpoints: Checkpoints | None, model, opt, scheduler, result: TrainResult, on_save,
                 exact_epochs: bool):
        self.checkpoints, self.model, self.opt, self.scheduler = checkpoints, model, opt, scheduler
        self.result, self.on_save, self.exact_epochs = result, on_save, exact_epochs
        self.step_losses: list[float] = []  # each unit's loss so far (resumed ones included)
        self.saved = 0  # units done at the last checkpoint
        self.settled: int | None = None  # units done at the last finished step (None: within a step's update)
        self._moment: tuple | None = None  # (RNG states, clock, token counts) when ``settled`` was reached

    def resume(self, plan: list[list], sizes: list[int], cfg: LiftConfig) -> tuple[int, float]:
        """(units done, training seconds before) from the last checkpoint of this plan; (0, 0.0) without one."""
        if self.checkpoints is None:
            return 0, 0.0
        batched = {"unit": "batch", "batch_size": cfg.resolved_batch_size} if max(sizes) > 1 else {}
        self.checkpoints.describe(plan=[len(e) for e in plan], grad_accum=cfg.grad_accum, **batched,
                                  trainable=[(n, list(p.shape)) for n, p in self.model.named_parameters()
                                             if p.requires_grad])
        resumed = self.checkpoints.restore(self.model, self.opt, self.scheduler, self.result)
        if resumed is None:
            return 0, 0.0
        self.step_losses[:] = resumed.step_losses
        self.saved = resumed.done
        return resumed.done, resumed.seconds

    def due(self) -> bool:
        return self.checkpoints is not None and self.checkpoints.due()

    def settle(self, done: int) -> None:
        """A step has finished with ``done`` units: the point an interrupt from now on checkpoints."""
        if self.checkpoints is not None and not self.exact_epochs:
            r = self.result
            self._moment = rng_states(), time.perf_counter(), (r.tokens, r.prefix_tokens, r.pad_tokens)
        self.settled = done  # (last: an interrupt before this line finds None and writes nothing)

    def save(self, epoch: int, done: int, start: float, hook_seconds: float, rng: tuple | None = None,
             at: float | None = None) -> float:
        """A checkpoint (``on_save`` after it); the seconds it took, which training time leaves out. ``rng`` and
        ``at``: the RNG states and the clock when ``done`` was reached (default: now)."""
        if self.checkpoints is None:
            return 0.0
        began = time.perf_counter()
        self.result.seconds = (at or began) - start - hook_seconds
        self.checkpoints.save(self.model, self.opt, self.scheduler, self.result, epoch=epoch, done=done,
                              step_losses=self.step_losses, rng=rng)
        self.saved = done
        if self.on_save is not None:
            self.on_save()
        return time.perf_counter() - began

    def interrupted(self, start: float, hook_seconds: float) -> None:
        """On the way out of a ``KeyboardInterrupt``: checkpoint the last finished step, if it can and is new."""
        if self.checkpoints is None or self.exact_epochs or self.settled is None or self.settled <= self.saved:
            return
        rng, at, counts = self._moment
        del self.step_losses[self.settled :]  # the interrupted step's units, and their tokens
        self.result.tokens, self.result.prefix_tokens, self.result.pad_tokens = counts
        self.save(len(self.result.epoch_losses) - 1, self.settled, start, hook_seconds, rng=rng, at=at)


class _EpochEta:
    """When the current epoch will end, from the samples per second since this run (or resume) started."""

    def __init__(self, sizes: list[int], epoch_ends: list[int], first: int):
        self.sizes, self.epoch_ends = sizes, epoch_ends
        self.samples_before = list(itertools.accumulate(sizes, initial=0))  # samples done before each unit
        self.first, self.start = first, time.perf_counter()

    def say(self, done: int) -> str:
        """"epoch 1/2 ends in 03:12" after ``done`` units (or "epoch 1/2 done" at its end)."""
        e = min(bisect.bisect_right(self.epoch_ends, done - 1), len(self.epoch_ends) - 1)
        left = self.samples_before[self.epoch_ends[e]] - self.samples_before[done]
        if left <= 0:
            return f"epoch {e + 1}/{len(self.epoch_ends)} done"
        rate = (self.samples_before[done] - self.samples_before[self.first]) / max(time.perf_counter() - self.start,
                                                                                   1e-9)
        return f"epoch {e + 1}/{len(self.epoch_ends)} ends in {tqdm.format_interval(left / rate)}"


def _checkpointing(model, on: bool) -> None:
    # transformers 5 renamed gradient_* to activation_checkpointing_* (the old names warn)
    prefix = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
    if on:
        getattr(model, f"{prefix}_checkpointing_enable")(**{f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}})
    else:
        getattr(model, f"{prefix}_checkpointing_disable")()


def _scheduler(opt, cfg: LiftConfig, total_steps: int):
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.lr_schedule]
    return get_scheduler(name, opt, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                         num_training_steps=total_steps)
