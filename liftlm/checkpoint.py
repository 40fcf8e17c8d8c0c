"""Checkpoints of one training, so that an interrupted run (Ctrl-C, a killed process, a full disk, a session
that ends) resumes where its last checkpoint left it instead of starting over: after each epoch, within an
epoch every ``--checkpoint-minutes`` (10 by default: an epoch of a distillation student on a larger model can
take far longer than that on a CPU), and on the way out of a run stopped by Ctrl-C or SIGTERM (the last finished
optimizer step: only the step it was in is lost; a killed process loses what it did since the last timed one).

A checkpoint lives in the store's work area, ``<store>/.work/<key>/checkpoint/`` (``AdapterStore.work``), and is
replaced atomically at each save (``liftlm.fileio.atomic_directory``: a reader sees the previous one or the
new one, never half of one):

    checkpoint.json          what it is: epoch, AT stage, samples and steps done, the plan it belongs to
    trainable.safetensors    the trainable weights (LoRA's A and B)
    state.pt                 AdamW's moments, the scheduler, the RNG states (CPU, CUDA), the loss curve so far

``liftlm.loop.optimize`` restores it (when it belongs to the same plan: same samples per epoch, accumulation and
trainable tensors; anything else is ignored with a warning and overwritten) and skips the samples already done.
Everything a step depends on is then as it was: weights, optimizer moments, learning rate, the sample order (a
function of the seed) and the RNG streams (dropout), so the resumed run ends with the weights of an uninterrupted
one (tests/test_faults.py). The ``recurrent`` trainer's Transformer-XL memory is not saved: it starts empty at
every epoch's first span (the prompt's keys/values are recomputed there too), so an epoch boundary is an exact
resume point for it and nothing within an epoch is; it gets no timed checkpoints, and with ``--grad-accum`` > 1
an optimizer step can straddle a boundary, and that epoch then gets no checkpoint (``exact_epochs``). A
distillation student resumed mid-run recomputes the head+tail view's keys/values with the restored weights
(``distill.SoftLoss`` refreshes them every few items anyway), so its weights match an uninterrupted run's to
within that refresh, not bit for bit.

Full fine-tuning gets no checkpoints: the weights and AdamW's two moments are three copies of the model per epoch
(18 GB for a 1.5B model in fp32), so ``Lift`` only checkpoints LoRA training (``--finetune lora``, the default).
The checkpoint is removed once the adapter is stored.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from .fileio import atomic_directory

CHECKPOINT = "checkpoint"
INFO = "checkpoint.json"
WEIGHTS = "trainable.safetensors"
STATE = "state.pt"


@dataclass
class Resumed:
    epoch: int  # the last finished epoch (0-based; -1: the checkpoint is within the first epoch)
    done: int  # samples of the plan already trained
    step_losses: list[float]
    seconds: float  # training time before the interruption


def rng_states() -> tuple:
    """The RNG states a checkpoint keeps: (CPU, [each CUDA device's])."""
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


def trained_share(directory: str | Path) -> float:
    """The share of its plan the checkpoint in ``directory`` (``AdapterStore.work(key)``) holds as trained, for
    the time estimate of a resumed run: 0.0 when there is none (or it cannot be read)."""
    try:
        info = json.loads((Path(directory) / CHECKPOINT / INFO).read_text(encoding="utf-8"))
        return min(max(info["done"] / info["samples"], 0.0), 1.0)
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return 0.0


def _say(message: str) -> None:
    print(f"liftlm: {message}", file=sys.stderr, flush=True)


class Checkpoints:
    """The checkpoints of one training (one store key) under ``directory``.

    ``identity``: what the training is (the store key, the trainer); ``stages``: the AT stage of each epoch, for
    the messages (e.g. ["segments", "segments", "segments + QA"]); ``every_seconds``: also save within an epoch
    once this long has passed since the last save (or the start); None: at epoch ends only."""

    def __init__(self, directory: str | Path, identity: dict, stages: list[str] | None = None,
                 every_seconds: float | None = None):
        self.directory = Path(directory)
        self.identity = dict(identity)
        self.stages = stages or []
        self.every_seconds = every_seconds
        self.saved_where: str | None = None  # where the checkpoint saved or restored here is ("epoch 1 of 2", ...)
        self.resumed_epoch: int | None = None  # the epoch (0-based) this run resumed after, if it did (-1: within the first)
        self.resumed_done: int | None = None  # the samples trained before the resume, if it resumed
        self._last = time.monotonic()

    @property
    def path(self) -> Path:
        return self.directory / CHECKPOINT

    def describe(self, **plan) -> None:
        """Add what ``optimize`` knows of the run (samples per epoch, accumulation, trainable tensors)."""
        self.identity.update(plan)

    def stage(self, epoch: int) -> str:
        return self.stages[epoch] if 0 <= epoch < len(self.stages) else ""

    def _where(self, epoch: int, epochs: int) -> str:
        stage = self.stage(epoch)
        return f"epoch {epoch + 1} of {epochs}" + (f" (AT stage: {stage})" if stage else "")

    def where(self, epoch: int, done: int) -> str:
        """A checkpoint's place in words: "epoch 2 of 3" at an epoch's end, else "sample 1,234 of 2,000 (in epoch
        2 of 3)" (``epoch``: the last finished epoch, ``done``: the samples, or batches, trained)."""
        plan = self.identity.get("plan", [])
        if epoch >= 0 and done == sum(plan[: epoch + 1]):
            return self._where(epoch, len(plan))
        stage = self.stage(epoch + 1)
        unit = self.identity.get("unit", "sample")  # or "batch" (mini-batches of the distillation student)
        return (f"{unit} {done:,} of {sum(plan):,} (in epoch {epoch + 2} of {len(plan)}"
                + (f", AT stage: {stage}" if stage else "") + ")")

    def due(self) -> bool:
        """Whether a timed checkpoint is due within the epoch (``every_seconds`` since the last save)."""
        return self.every_seconds is not None and time.monotonic() - self._last >= self.every_seconds

    def info(self) -> dict | None:
        try:
            return json.loads((self.path / INFO).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def restore(self, model, opt, scheduler, result) -> Resumed | None:
        """Load the last checkpoint into ``model`` (trainable tensors), ``opt``, ``scheduler``, the RNG states and
        ``result``, if there is one for this very run; say so on stderr. None when there is nothing to resume."""
        info = self.info()
        if info is None:
            if self.path.exists():
                _say(f"warning: ignoring an unreadable checkpoint in {self.path}")
            return None
        if info.get("identity") != json.loads(json.dumps(self.identity)):
            _say(f"warning: ignoring the checkpoint in {self.path}: it belongs to another training plan")
            return None
        try:
            from safetensors.torch import load_file

            weights = load_file(str(self.path / WEIGHTS))
            state = torch.load(self.path / STATE, map_location="cpu", weights_only=True)
            named = dict(model.named_parameters())
            with torch.no_grad():
                for name, tensor in weights.items():
                    named[name].copy_(tensor.to(named[name].device, named[name].dtype))
            opt.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except Exception as e:  # a damaged file: start over rather than fail
            _say(f"warning: ignoring a damaged checkpoint in {self.path} ({type(e).__name__}: {e})")
            return None
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        for f in fields(result):
            if f.name in state["result"]:
                setattr(result, f.name, state["result"][f.name])
        self.resumed_epoch = info["epoch"]
        self.saved_where = self.where(info["epoch"], info["done"])
        self.resumed_done = info["done"]
        self._last = time.monotonic()
        units = "batches" if self.identity.get("unit") == "batch" else "samples"
        _say(f"resuming from the checkpoint after {self.saved_where} in {self.path}: "
             f"{info['done']:,} of {info['samples']:,} {units} were trained before the interruption")
        return Resumed(info["epoch"], info["done"], list(state["step_losses"]), float(state["result"]["seconds"]))

    def save(self, model, opt, scheduler, result, *, epoch: int, done: int, step_losses: list[float],
             rng: tuple | None = None) -> None:
        """Write the checkpoint with ``done`` samples trained, ``epoch`` the last finished epoch (-1: none yet),
        replacing the previous one atomically. ``rng``: the RNG states to keep (``rng_states()`` taken when
        ``done`` was reached; default: now). A write that fails (e.g. a full disk) costs the checkpoint, not the
        training: a warning, and on."""
        from safetensors.torch import save_file

        weights = {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}
        rng_cpu, rng_cuda = rng or rng_states()
        state = {
            "optimizer": opt.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng_cpu": rng_cpu,
            "rng_cuda": rng_cuda,
            "step_losses": list(step_losses),
            "result": {f.name: getattr(result, f.name) for f in fields(result)},
        }
        plan = self.identity.get("plan", [])
        info = {"epoch": epoch, "epochs": len(plan), "stage": self.stage(epoch), "done": done,
                "samples": sum(plan), "steps": result.steps, "identity": self.identity}
        try:
            with atomic_directory(self.path, if_exists="replace") as tmp:
                save_file(weights, str(tmp / WEIGHTS))
                torch.save(state, tmp / STATE)
                (tmp / INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            _say(f"warning: could not write the checkpoint after {self.where(epoch, done)} ({e.strerror or e}); "
                 "training goes on without it")
            self._last = time.monotonic()  # (not again at every step of a full disk)
            return
        self.saved_where, self._last = self.where(epoch, done), time.monotonic()

    def clear(self) -> None:
        """Remove the checkpoints (the adapter is stored)."""
        shutil.rmtree(self.directory, ignore_errors=True)
