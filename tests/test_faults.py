"""Fault injection on the store and the trainer (issue 15): kill -9 and Ctrl-C during training then resume, two
processes on one document, a flipped byte in the weights, a full disk, a failing training, --force, the store
key, an empty QA synthesis. Tiny random model, small settings."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from liftlm import Lift, LiftConfig, LiftError
from liftlm.adapters import ADAPTER_WEIGHTS, METADATA, read_metadata
from liftlm.cli import main

DOC = ("The brass telescope in the museum was made in Glasgow in 1881 and still works. The keeper's daughter "
       "drew the map beside it and later captained the first ferry on the fjord. ") * 5
CFG = dict(objective="ct", segment_length=32, context_tokens=32, window=256, epochs=3, learning_rate=5e-3, lora_rank=4, seed=3)
SMALL = ["--objective", "ct", "--segment-length", "32", "--context-tokens", "32", "--window", "256", "--learning-rate", "5e-3",
         "--lora-rank", "4", "--seed", "3", "--quiet"]


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model gains nothing from threads, and on a busy machine OpenMP's spinning threads make it 20-40x
    slower (measured here: 3 epochs in 0.6 s on one thread, 20-37 s on two beside other jobs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(model_dir, store, on_step=None, **kw) -> Lift:
    return Lift(str(model_dir), LiftConfig(**{**CFG, **kw}), store=store, device="cpu", progress=False,
                on_step=on_step)


def weights(adapter: Path) -> dict:
    return load_file(str(adapter / ADAPTER_WEIGHTS))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6)


def stop_at(epoch: int, exc=KeyboardInterrupt):
    """An on_step hook that interrupts training at the first optimizer step of ``epoch`` (0-based)."""
    def hook(progress):
        if progress.epoch == epoch:
            raise exc()
    return hook


def no_lora(lift: Lift) -> bool:
    return not any("lora" in name for name, _ in lift._base.named_modules())


def icl_answer(lift: Lift) -> str:
    lift.read(DOC)
    return lift.ask("Where was the telescope made?", mode="icl", max_new_tokens=6).answer


# ---------------------------------------------------------------- interruption and resume, in process
@pytest.mark.parametrize("mode,extra,stop", [
    ("paper", {}, 1),
    ("overlap", {}, 2),
    ("recurrent", {}, 1),
    ("paper", {"qa_pairs": 3, "qa_generator": "keyphrase", "qa_epochs": 2}, 4),  # inside AT stage 2
])
def test_resumed_training_ends_with_the_weights_of_an_uninterrupted_one(tiny_model_dir, tmp_path, capsys, mode,
                                                                        extra, stop):
    kw = {"training_mode": mode, **extra}
    whole = make(tiny_model_dir, tmp_path / "a", **kw).internalize(DOC)
    assert whole.trained and whole.resumed_epoch is None
    cut = make(tiny_model_dir, tmp_path / "b", on_step=stop_at(stop), **kw)
    with pytest.raises(KeyboardInterrupt):
        cut.internalize(DOC)
    assert no_lora(cut)  # the interrupted Lift is usable
    key = whole.adapter.name
    info = json.loads((tmp_path / "b" / ".work" / key / "checkpoint" / "checkpoint.json").read_text())
    assert info["epoch"] == stop - 1  # at most the interrupted epoch is lost
    assert not (tmp_path / "b" / key).exists()  # nothing in the store yet
    capsys.readouterr()
    resumed = make(tiny_model_dir, tmp_path / "b", **kw).internalize(DOC)
    err = capsys.readouterr().err
    assert f"resuming from the checkpoint after epoch {stop} of " in err, err
    if extra:
        assert "AT stage: 2, segments + auxiliary items" in err
    assert resumed.trained and resumed.resumed_epoch == stop and resumed.adapter.name == key
    assert_same_weights(whole.adapter, resumed.adapter)
    assert resumed.metadata["training"]["steps"] == whole.metadata["training"]["steps"]
    assert resumed.metadata["training"]["loss_curve"] == pytest.approx(whole.metadata["training"]["loss_curve"])
    assert not (tmp_path / "b" / ".work" / key).exists()  # checkpoints removed once the adapter is stored


def test_a_checkpoint_of_another_plan_is_ignored(tiny_model_dir, tmp_path, capsys):
    cut = make(tiny_model_dir, tmp_path, on_step=stop_at(1))
    with pytest.raises(KeyboardInterrupt):
        cut.internalize(DOC)
    key = cut.key()
    info_path = tmp_path / ".work" / key / "checkpoint" / "checkpoint.json"
    info = json.loads(info_path.read_text())
    info["identity"]["plan"] = [1, 2, 3]  # as if the samples had changed (another liftlm version)
    info_path.write_text(json.dumps(info))
    capsys.readouterr()
    done = make(tiny_model_dir, tmp_path).internalize(DOC)
    assert done.resumed_epoch is None and "belongs to another training plan" in capsys.readouterr().err


# ---------------------------------------------------------------- a failing training leaves a usable Lift
def test_a_failed_training_leaves_the_base_model_clean(tiny_model_dir, tmp_path, monkeypatch):
    fresh = icl_answer(make(tiny_model_dir, tmp_path / "fresh"))
    lift = make(tiny_model_dir, tmp_path, training_mode="recurrent")
    import liftlm.overlap as overlap

    monkeypatch.setattr(overlap, "_rotary", lambda model: None)  # a model without RoPE: refused after LoRA is in
    with pytest.raises(LiftError, match="recurrent needs a model with plain rotary"):
        lift.internalize(DOC)
    assert no_lora(lift)
    assert icl_answer(lift) == fresh
    monkeypatch.undo()
    lift2 = make(tiny_model_dir, tmp_path, on_step=stop_at(0, RuntimeError))
    with pytest.raises(RuntimeError):
        lift2.internalize(DOC)
    assert no_lora(lift2) and icl_answer(lift2) == fresh


# ---------------------------------------------------------------- full disk
def test_enospc_on_the_adapter_write_leaves_nothing_half_written(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import liftlm.adapters as adapters

    store = tmp_path / "store"
    fresh = icl_answer(make(tiny_model_dir, tmp_path / "fresh"))
    real = adapters.file_sha256

    def full(path):  # the weights are written; the disk fills up before liftlm.json is
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(adapters, "file_sha256", full)
    lift = make(tiny_model_dir, store)
    with pytest.raises(LiftError, match="cannot write the adapter .*No space left on device.*checkpointed"):
        lift.internalize(DOC)
    assert sorted(p.name for p in store.iterdir()) == [".work"]  # no adapter, no temporary directory
    assert no_lora(lift) and icl_answer(lift) == fresh
    monkeypatch.setattr(adapters, "file_sha256", real)
    capsys.readouterr()
    done = make(tiny_model_dir, store).internalize(DOC)  # the disk has room again: stored without training again
    assert done.resumed_epoch == CFG["epochs"] and done.metadata["training"]["steps"] > 0
    assert "resuming from the checkpoint after epoch 3 of 3" in capsys.readouterr().err
    read_metadata(done.adapter)


def test_enospc_on_a_checkpoint_costs_only_the_checkpoint(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import liftlm.checkpoint as checkpoint

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, "save", full)
    done = make(tiny_model_dir, tmp_path).internalize(DOC)
    assert done.trained and read_metadata(done.adapter)
    assert "could not write the checkpoint after epoch 1 of 3 (AT stage: segments) (No space left on device)" in capsys.readouterr().err
    assert not list((tmp_path / ".work").glob(f"{done.adapter.name}/**/.tmp-*"))


def test_enospc_through_the_cli_is_one_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import liftlm.adapters as adapters

    doc = tmp_path / "doc.txt"
    doc.write_text(DOC)

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(adapters.Path, "write_text", full)  # liftlm.json / document.txt into the new adapter
    code = main(["internalize", "--document", str(doc), "--model", str(tiny_model_dir), "--store",
                 str(tmp_path / "s"), "--epochs", "1", *SMALL])
    out, err = capsys.readouterr()
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and out == "" and lines[-1].startswith("liftlm: error: --store: cannot write the adapter")
    assert [p.name for p in (tmp_path / "s").iterdir()] == [".work"]


# ---------------------------------------------------------------- a flipped byte
def flip_a_weight_byte(adapter: Path) -> None:
    f = adapter / ADAPTER_WEIGHTS
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01  # inside the tensor data, past the header: the header still parses
    f.write_bytes(bytes(data))


def test_a_flipped_byte_in_the_weights(tiny_model_dir, tmp_path, capsys):
    store = tmp_path / "store"
    done = make(tiny_model_dir, store).internalize(DOC)
    flip_a_weight_byte(done.adapter)
    # a user-given --adapter: a clear error
    code = main(["ask", "--adapter", str(done.adapter), "--question", "Where?", "--model", str(tiny_model_dir),
                 "--quiet"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip().startswith("liftlm: error: --adapter: ") and "sha256 differs" in err
    # the store's own: reported as the store's, with its path, and trained again in its place
    again = make(tiny_model_dir, store).internalize(DOC)
    err = capsys.readouterr().err
    assert f"warning: the adapter store: {done.adapter / ADAPTER_WEIGHTS} is corrupted" in err
    assert again.trained and again.replaced and again.adapter == done.adapter
    assert read_metadata(again.adapter)["weights_sha256"]


# ---------------------------------------------------------------- --force
def test_force_replaces_the_stored_adapter(tiny_model_dir, tmp_path, capsys):
    store = tmp_path / "store"
    doc = tmp_path / "doc.txt"
    doc.write_text(DOC)
    argv = ["internalize", "--document", str(doc), "--model", str(tiny_model_dir), "--store", str(store),
            "--epochs", "1", *SMALL]
    assert main(argv) == 0
    first = Path(capsys.readouterr().out.strip())
    (first / "left-by-the-old-one").write_text("x")
    created = json.loads((first / METADATA).read_text())["training"]
    assert main([*argv, "--force"]) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip()) == first and "trained on" in err
    assert not (first / "left-by-the-old-one").exists()  # the new one is in place, not the old one kept
    meta = json.loads((first / METADATA).read_text())
    assert meta["training"] != created or meta["created"]  # the new metadata
    assert sorted(p.name for p in store.iterdir()) == [".work", first.name]  # no .old/.tmp leftovers
    read_metadata(first)


# ---------------------------------------------------------------- store key and metadata
def test_the_store_key_holds_only_what_changes_the_weights(tiny_model_dir, tmp_path):
    import dataclasses

    base = make(tiny_model_dir, tmp_path)
    base.read(DOC)
    key = base.key()
    for change in ({"qa_generator": "llm"}, {"qa_epochs": 7}, {"grad_checkpointing": True}, {"distill_prompts": 3},
                   {"stride": (3 * 32) // 8}):  # no QA: QA settings do nothing; the default stride spelled out
        other = make(tiny_model_dir, tmp_path, **change)
        other.read(DOC)
        assert other.key() == key, change
    for change in ({"learning_rate": 1e-3}, {"qa_pairs": 2}, {"epochs": 2}, {"objective": "ct+distill"}):
        other = make(tiny_model_dir, tmp_path, **change)
        other.read(DOC)
        assert other.key() != key, change
    # a setting added later, at its default (which trains as before), keeps every key
    field = dataclasses.field(default=0, metadata={"help": "new", "key": True})
    Newer = dataclasses.make_dataclass("Newer", [("new_knob", int, field)], bases=(LiftConfig,))
    assert Newer(**CFG).key_dict() == LiftConfig(**CFG).key_dict()
    assert Newer(**CFG, new_knob=1).key_dict()["new_knob"] == 1


def test_metadata_with_fields_this_liftlm_does_not_know(tiny_model_dir, tmp_path, capsys):
    done = make(tiny_model_dir, tmp_path, epochs=1).internalize(DOC)
    meta = json.loads((done.adapter / METADATA).read_text())
    meta["from_the_future"] = {"x": 1}
    meta["settings"]["future_knob"] = 3
    (done.adapter / METADATA).write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="future_knob"):
        cfg = LiftConfig.from_dict(meta["settings"])
    assert cfg.epochs == 1
    capsys.readouterr()
    code = main(["ask", "--adapter", str(done.adapter), "--question", "Where?", "--model", str(tiny_model_dir),
                 "--max-new-tokens", "3", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "liftlm: warning: ignoring LIFT settings this liftlm does not know: future_knob" in err


# ---------------------------------------------------------------- empty QA synthesis
def test_an_empty_qa_synthesis_is_an_error_and_never_cached(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import liftlm.synth as synth

    lift = make(tiny_model_dir, tmp_path / "store", qa_pairs=3, qa_generator="keyphrase", epochs=1, qa_epochs=1)
    monkeypatch.setattr(synth, "keyphrase_pairs", lambda text, n: [])
    with pytest.raises(LiftError, match="synthesis made no QA pairs"):
        lift.internalize(DOC)
    cache = lift.qa.cache_path(DOC)
    assert not cache.exists()
    monkeypatch.undo()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("")  # a poisoned cache from an older liftlm
    done = make(tiny_model_dir, tmp_path / "store", qa_pairs=3, qa_generator="keyphrase", epochs=1,
                qa_epochs=1).internalize(DOC)
    assert done.trained and done.metadata["qa"]["pairs"] > 0 and cache.stat().st_size > 0
    assert "ignoring the QA cache" in capsys.readouterr().err


# ---------------------------------------------------------------- real processes: kill -9, Ctrl-C, two at once
def cli(store: Path, doc: Path, model_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "liftlm", "internalize", "--document", str(doc), "--model", str(model_dir),
            "--store", str(store), *SMALL, *extra]


def env(tmp_path: Path) -> dict:
    return {**os.environ, "LIFTLM_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


# `liftlm ...` that freezes itself (SIGSTOP) right after writing its first checkpoint: the test then signals a
# process that is certainly mid-training, however fast this machine or however starved the test process is.
# (It also takes Ctrl-C as an interactive run does: a test run started in the background, e.g. `nohup ... &`,
# passes SIGINT on as ignored, and Python then leaves it ignored.)
STOP_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from liftlm.checkpoint import Checkpoints
from liftlm.cli import main
save = Checkpoints.save
def save_then_stop(self, *args, **kwargs):
    save(self, *args, **kwargs)
    if not getattr(Checkpoints, "stopped_once", False):
        Checkpoints.stopped_once = True
        os.kill(os.getpid(), signal.SIGSTOP)
Checkpoints.save = save_then_stop
sys.exit(main(sys.argv[1:]))
"""


def stop_at_step(step: int, exc=KeyboardInterrupt):
    """An on_step hook that interrupts training at optimizer step ``step`` (1-based), before that step's checkpoint."""
    def hook(progress):
        if progress.stage == "training" and progress.step == step:
            raise exc()
    return hook


@pytest.mark.parametrize("mode", ["paper", "overlap"])
def test_a_timed_checkpoint_within_an_epoch_resumes_exactly(tiny_model_dir, tmp_path, capsys, mode):
    """--checkpoint-minutes: a run stopped in the middle of an epoch resumes from the last timed checkpoint there
    (here one after every step) and ends with the weights of an uninterrupted run."""
    every_step = 1e-9  # minutes: every optimizer step is due
    whole = make(tiny_model_dir, tmp_path / "a", training_mode=mode, checkpoint_minutes=0).internalize(DOC)
    plan = whole.metadata["training"]["steps"]
    per_epoch = plan // CFG["epochs"]
    stop = per_epoch + per_epoch // 2 + 1  # in the middle of the second epoch
    cut = make(tiny_model_dir, tmp_path / "b", training_mode=mode, checkpoint_minutes=every_step,
               on_step=stop_at_step(stop))
    with pytest.raises(KeyboardInterrupt):
        cut.internalize(DOC)
    err = capsys.readouterr().err
    key = whole.adapter.name
    info = json.loads((tmp_path / "b" / ".work" / key / "checkpoint" / "checkpoint.json").read_text())
    assert (info["epoch"], info["done"]) == (0, stop - 1)  # one finished epoch, and the steps before the stop
    assert f"interrupted: training up to sample {stop - 1} of {plan} (in epoch 2 of 3, AT stage: segments) is checkpointed in" in err, err
    resumed = make(tiny_model_dir, tmp_path / "b", training_mode=mode, checkpoint_minutes=every_step).internalize(DOC)
    err = capsys.readouterr().err
    assert f"resuming from the checkpoint after sample {stop - 1} of {plan} (in epoch 2 of 3, AT stage: segments)" in err, err
    assert resumed.resumed_epoch == 1 and resumed.resumed_at == stop - 1
    assert resumed.metadata["training"]["resumed_at_sample"] == stop - 1
    assert_same_weights(whole.adapter, resumed.adapter)
    assert resumed.metadata["training"]["loss_curve"] == pytest.approx(whole.metadata["training"]["loss_curve"])
    assert resumed.metadata["training"]["epoch_losses"] == pytest.approx(whole.metadata["training"]["epoch_losses"])


def test_the_batched_distillation_student_resumes_exactly(tiny_model_dir, tmp_path, capsys):
    """--objective distill --batch-size 2: stopped in the middle of an epoch, the student resumes from the last
    timed checkpoint (its shared prefixes computed afresh there, as the uninterrupted run does after a checkpoint)
    and ends with the uninterrupted run's weights."""
    kw = dict(objective="distill", distill_prompts=2, distill_questions=0, distill_answer_tokens=4, batch_size=2,
              checkpoint_minutes=1e-9)
    whole = make(tiny_model_dir, tmp_path / "a", **kw).internalize(DOC)
    steps = whole.metadata["training"]["steps"]
    assert steps < whole.metadata["distill"]["student_samples"] * CFG["epochs"]  # batched: fewer steps than samples
    stop = steps // CFG["epochs"] + 2  # early in the second epoch
    cut = make(tiny_model_dir, tmp_path / "b", on_step=stop_at_step(stop), **kw)
    with pytest.raises(KeyboardInterrupt):
        cut.internalize(DOC)
    err = capsys.readouterr().err
    assert f"interrupted: training up to batch {stop - 1} of {steps} (in epoch 2 of 3" in err, err
    resumed = make(tiny_model_dir, tmp_path / "b", **kw).internalize(DOC)
    assert resumed.resumed_at == stop - 1
    assert_same_weights(whole.adapter, resumed.adapter)
    assert resumed.metadata["training"]["loss_curve"] == pytest.approx(whole.metadata["training"]["loss_curve"])


def interrupt_in_unit(monkeypatch, unit: int) -> None:
    """Ctrl-C while the ``unit``-th unit of the run (1-based) runs forward and backward."""
    import liftlm.loop as loop

    real, calls = loop._forward_backward, []

    def forward_backward(*args, **kwargs):
        calls.append(1)
        if len(calls) == unit:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "_forward_backward", forward_backward)


@pytest.mark.parametrize("mode", ["paper", "overlap"])
def test_ctrl_c_within_a_step_checkpoints_the_last_finished_step(tiny_model_dir, tmp_path, capsys, monkeypatch, mode):
    """No timed checkpoint is due (--checkpoint-minutes 10), yet a run stopped in the middle of its second epoch
    loses only the step it was in: the loop checkpoints the last finished one on its way out, and the resumed run
    ends with the weights, loss curve and token count of an uninterrupted one."""
    whole = make(tiny_model_dir, tmp_path / "a", training_mode=mode).internalize(DOC)
    plan = whole.metadata["training"]["steps"]
    stop = plan // CFG["epochs"] + 3  # the third step of the second epoch
    cut = make(tiny_model_dir, tmp_path / "b", training_mode=mode)
    with monkeypatch.context() as patch:
        interrupt_in_unit(patch, stop)
        with pytest.raises(KeyboardInterrupt):
            cut.internalize(DOC)
    err = capsys.readouterr().err
    key = whole.adapter.name
    info = json.loads((tmp_path / "b" / ".work" / key / "checkpoint" / "checkpoint.json").read_text())
    assert (info["epoch"], info["done"], info["steps"]) == (0, stop - 1, stop - 1)
    assert f"interrupted: training up to sample {stop - 1} of {plan} (in epoch 2 of 3, AT stage: segments)" in err, err
    resumed = make(tiny_model_dir, tmp_path / "b", training_mode=mode).internalize(DOC)
    assert f"{stop - 1:,} of {plan:,} samples were trained before the interruption" in capsys.readouterr().err
    assert resumed.resumed_at == stop - 1
    assert_same_weights(whole.adapter, resumed.adapter)
    for field in ("loss_curve", "epoch_losses"):
        assert resumed.metadata["training"][field] == pytest.approx(whole.metadata["training"][field])
    assert resumed.metadata["training"]["tokens"] == whole.metadata["training"]["tokens"]


def test_ctrl_c_within_an_epoch_of_recurrent_training_keeps_the_epochs_checkpoint(tiny_model_dir, tmp_path,
                                                                                  monkeypatch):
    """Its memory within an epoch is not saved, so the last finished step is no exact resume point: the last
    epoch's checkpoint stands."""
    whole = make(tiny_model_dir, tmp_path / "a", training_mode="recurrent").internalize(DOC)
    per_epoch = whole.metadata["training"]["steps"] // CFG["epochs"]
    cut = make(tiny_model_dir, tmp_path / "b", training_mode="recurrent")
    interrupt_in_unit(monkeypatch, per_epoch + 3)
    with pytest.raises(KeyboardInterrupt):
        cut.internalize(DOC)
    info = json.loads(next((tmp_path / "b").glob(".work/*/checkpoint/checkpoint.json")).read_text())
    assert (info["epoch"], info["done"]) == (0, per_epoch)


def test_recurrent_training_gets_no_timed_checkpoint(tiny_model_dir, tmp_path):
    """Its Transformer-XL memory is carried from step to step within an epoch and not saved: only an epoch's end
    is an exact resume point, so a timed checkpoint is never written there."""
    seen = []

    def look(progress):
        info = next((tmp_path / "s").glob(".work/*/checkpoint/checkpoint.json"), None)
        seen.append(None if info is None else json.loads(info.read_text())["done"])

    done = make(tiny_model_dir, tmp_path / "s", training_mode="recurrent", checkpoint_minutes=1e-9,
                on_step=look).internalize(DOC)
    per_epoch = done.metadata["training"]["steps"] // CFG["epochs"]
    assert done.trained and set(seen) == {None, per_epoch, 2 * per_epoch}


def stopping_cli(*argv: str) -> list[str]:
    assert argv[1:3] == ("-m", "liftlm")
    return [sys.executable, "-c", STOP_AFTER_FIRST_CHECKPOINT, *argv[3:]]


def wait_until_stopped(proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"the training ended (rc {proc.returncode}) before its first checkpoint: "
                        f"{proc.stderr.read() if proc.stderr else ''}")
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":  # stopped
                return
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the training did not reach its first checkpoint")


@pytest.mark.parametrize("sig,code", [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_killed_or_interrupted_process_then_resume(tiny_model_dir, tmp_path, sig, code):
    doc = tmp_path / "doc.txt"
    doc.write_text(DOC)
    store = tmp_path / "store"
    epochs = ["--epochs", "25"]
    proc = subprocess.Popen(stopping_cli(*cli(store, doc, tiny_model_dir, *epochs)), env=env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until_stopped(proc)  # frozen right after its first checkpoint
    assert list(store.glob(".work/*/checkpoint/checkpoint.json"))
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)  # a SIGINT is delivered as it continues
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert out == ""  # no adapter path printed
    if sig != signal.SIGKILL:  # Ctrl-C, and a stop (SIGTERM) taken as Ctrl-C is
        assert "is checkpointed in" in err and "rerun the same command to resume" in err
    stored = [p for p in store.iterdir() if p.name != ".work"]
    assert stored == []  # nothing half-written in the store (no adapter, no temporary directory)
    info = json.loads(next(store.glob(".work/*/checkpoint/checkpoint.json")).read_text())
    assert info["epoch"] == 0  # stopped after the first epoch
    again = subprocess.run(cli(store, doc, tiny_model_dir, *epochs), env=env(tmp_path), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resuming from the checkpoint after epoch" in again.stderr
    adapter = Path(again.stdout.strip())
    meta = read_metadata(adapter)
    assert meta["training"]["resumed_after_epoch"] >= info["epoch"] + 1
    # the same weights as one uninterrupted run
    whole = make(tiny_model_dir, tmp_path / "whole", epochs=25).internalize(DOC)
    assert whole.adapter.name == adapter.name
    assert_same_weights(whole.adapter, adapter)
    assert not list(store.glob(".work/*/checkpoint"))


def test_two_processes_on_one_document_train_once(tiny_model_dir, tmp_path):
    """This process holds the key's lock (as a training process does from lookup to save); a second process
    waits for it, then reuses the adapter this one stores instead of training."""
    doc = tmp_path / "doc.txt"
    doc.write_text(DOC)
    store = tmp_path / "store"
    lift = make(tiny_model_dir, store, epochs=1)
    lift.read(DOC)
    with lift.store.lock(lift.key()):
        other = subprocess.Popen(cli(store, doc, tiny_model_dir, "--epochs", "1"), env=env(tmp_path),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = ""
        while "another process is training this adapter" not in seen:  # until it says it waits (or ends)
            line = other.stderr.readline()
            assert line, seen + other.stderr.read()
            seen += line
        done = lift.internalize(DOC)  # the lock is reentrant in its own process
        assert done.trained
    out, err = other.communicate(timeout=300)
    assert other.returncode == 0, err
    assert Path(out.strip()) == done.adapter
    assert "reusing the adapter the other process stored" in err and "trained on" not in err
    assert "reused the stored adapter (no training)" in err


def test_two_processes_at_once_without_a_helper(tiny_model_dir, tmp_path):
    """Two CLI processes started together on one document: exactly one trains, the other reuses its adapter."""
    doc = tmp_path / "doc.txt"
    doc.write_text(DOC)
    store = tmp_path / "store"
    argv = cli(store, doc, tiny_model_dir, "--epochs", "30")
    procs = [subprocess.Popen(argv, env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    trained = [err for _, err in results if "trained on" in err]
    assert len(trained) == 1, results  # never both
    assert sorted(p.name for p in store.iterdir()) == [".work", Path(paths.pop()).name]


# ---------------------------------------------------------------- running out of memory
DISTILL = dict(objective="distill", distill_prompts=1, distill_answer_tokens=3, distill_questions=0,
               distill_retention=0.0, batch_size=4, epochs=1)


def test_a_student_out_of_memory_says_which_settings_to_lower(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from liftlm.distill import student

    def no_memory(self, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    store = tmp_path / "s"
    monkeypatch.setattr(student.SoftLoss, "__call__", no_memory)
    with pytest.raises(LiftError, match=r"out of memory in a training step of \d samples on cpu: try --batch-size "
                                        r"\d --grad-accum 2 \(the same samples an optimizer step, half at a time\); "
                                        "the teacher's items are cached"):
        make(tiny_model_dir, store, **DISTILL).internalize(DOC)
    assert not store.exists() or not any(p.name != ".work" for p in store.iterdir())  # nothing stored
    assert list((tmp_path / "distill").glob("*.jsonl"))  # ... but the teacher's items, as the error says
    # the CLI: one line, exit 2
    doc = tmp_path / "doc.txt"
    doc.write_text(DOC)
    args = ["internalize", "--document", str(doc), "--model", str(tiny_model_dir), "--store", str(store), "--quiet"]
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**CFG, **DISTILL}.items()]
    assert main(args + flags) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("liftlm")]  # (not the weights' loading bar)
    assert len(err) == 1 and "out of memory in a training step" in err[0]


def test_one_sample_out_of_memory_asks_for_shorter_samples(tiny_model_dir, tmp_path, monkeypatch):
    from liftlm import train

    monkeypatch.setattr(train, "sample_loss", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(LiftError, match="of 1 sample on cpu: try a smaller --window"):
        make(tiny_model_dir, tmp_path / "s").internalize(DOC)


def test_a_teacher_out_of_memory_asks_for_a_narrower_teacher(tiny_model_dir, tmp_path, monkeypatch):
    from liftlm.distill import teacher

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(teacher, "teach", no_memory)
    with pytest.raises(LiftError, match=r"the teacher ran out of memory answering 32 prompts at once: try "
                                        r"--teacher-batch 16 \(the same items\)"):
        make(tiny_model_dir, tmp_path / "s", **DISTILL).internalize(DOC)
    monkeypatch.setattr(teacher, "teach", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not taken for memory
        make(tiny_model_dir, tmp_path / "s2", **DISTILL).internalize(DOC)
