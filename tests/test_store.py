"""The adapter store: PEFT format on disk, reuse by key, atomic writes, validation of what is read back."""
import json

import pytest
import torch

from liftlm import Lift, LiftConfig, LiftError
from liftlm.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, DOCUMENT, METADATA, AdapterStore

DOC = "The brass telescope in the museum was made in Glasgow in 1881 and still works. " * 12
CFG = dict(objective="ct", segment_length=32, context_tokens=48, window=256, epochs=2, learning_rate=5e-3, lora_rank=4)


def make(model_dir, store, **kw):
    """A Lift on its own copy of the tiny model (a LoRA adapter is injected into the model it is given)."""
    return Lift(str(model_dir), LiftConfig(**{**CFG, **kw}), store=store, device="cpu", progress=False)


def logits(lift, text="Where was the telescope made?"):
    ids = torch.tensor([lift.tokenizer.encode(text)])
    with torch.no_grad():
        return lift._adapted(input_ids=ids).logits


def test_internalize_writes_peft_format_and_metadata(tiny_model_dir, store):
    lift = make(tiny_model_dir, store)
    done = lift.internalize(DOC)
    assert done.trained and done.adapter.parent == store
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, METADATA, DOCUMENT):
        assert (done.adapter / name).is_file()
    meta = json.loads((done.adapter / METADATA).read_text())
    assert meta["document_sha256"] and meta["model_id"] == str(tiny_model_dir.resolve())
    assert meta["settings"]["segment_length"] == 32 and meta["settings"]["window"] == 256
    assert len(meta["training"]["loss_curve"]) == meta["training"]["steps"] > 0
    assert meta["training"]["seconds"] > 0
    assert (done.adapter / DOCUMENT).read_text() == DOC
    assert [p.name for p in store.iterdir() if p.name != ".work"] == [done.adapter.name]  # no temporary leftovers
    # the work area keeps only the key's lock file: the checkpoints went once the adapter was stored
    assert [p.name for p in (store / ".work").iterdir()] == [f"{done.adapter.name}.lock"]
    assert set(meta["weights_sha256"]) == {ADAPTER_WEIGHTS}
    # a PEFT user can load it directly
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(done.adapter)).r == 4


def test_second_internalize_reuses_without_training(tiny_model_dir, store):
    first = make(tiny_model_dir, store)
    done = first.internalize(DOC)
    expected = logits(first)
    second = make(tiny_model_dir, store)
    again = second.internalize(DOC)
    assert not again.trained and again.adapter == done.adapter
    torch.testing.assert_close(logits(second), expected)  # the stored adapter is the trained one
    answer = second.ask("Where was the telescope made?", mode="lift", max_new_tokens=4)
    assert answer.trained is False and answer.adapter == str(done.adapter)


def test_other_settings_or_document_get_another_adapter(tiny_model_dir, store):
    lift = make(tiny_model_dir, store)
    a = lift.internalize(DOC).adapter
    b = make(tiny_model_dir, store, learning_rate=1e-3).internalize(DOC).adapter
    c = make(tiny_model_dir, store).internalize(DOC + " One more sentence.").adapter
    assert len({a, b, c}) == 3
    # a setting that does not change what is learned keeps the key
    d = make(tiny_model_dir, store, grad_checkpointing=True).internalize(DOC)
    assert d.adapter == a and not d.trained


def test_interrupted_write_leaves_nothing(tiny_model_dir, store, monkeypatch):
    import liftlm.adapters as adapters

    def fail(directory, *a, **k):
        (directory / "partial.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(adapters, "write_adapter", fail)
    with pytest.raises(KeyboardInterrupt):
        make(tiny_model_dir, store).internalize(DOC)
    assert [p.name for p in store.iterdir()] == [".work"]  # no adapter, no temporary directory
    # what is kept is the last epoch's checkpoint: a rerun stores the adapter without training again
    assert (store / ".work").is_dir() and list((store / ".work").glob("*/checkpoint/trainable.safetensors"))


@pytest.mark.parametrize("damage", ["metadata_missing", "metadata_garbage", "weights_truncated", "weights_missing",
                                    "document_changed", "metadata_fields"])
def test_corrupted_adapter_is_refused(tiny_model_dir, store, damage, capsys):
    path = make(tiny_model_dir, store).internalize(DOC).adapter
    if damage == "metadata_missing":
        (path / METADATA).unlink()
    elif damage == "metadata_garbage":
        (path / METADATA).write_text("{not json")
    elif damage == "weights_truncated":
        data = (path / ADAPTER_WEIGHTS).read_bytes()
        (path / ADAPTER_WEIGHTS).write_bytes(data[: len(data) // 3])
    elif damage == "weights_missing":
        (path / ADAPTER_WEIGHTS).unlink()
    elif damage == "document_changed":
        (path / DOCUMENT).write_text("another text")
    else:
        (path / METADATA).write_text(json.dumps({"format_version": 1}))
    with pytest.raises(LiftError, match="--adapter"):
        make(tiny_model_dir, store).use_adapter(path)
    # in the store, it is reported as the store's (with its path) and trained again in its place
    capsys.readouterr()
    again = make(tiny_model_dir, store).internalize(DOC)
    err = capsys.readouterr().err
    assert "warning: the adapter store: " in err and str(path) in err and "--adapter" not in err, err
    assert again.trained and again.replaced and again.adapter == path
    assert make(tiny_model_dir, store).internalize(DOC).trained is False  # whole again: reused


def test_adapter_of_another_model_is_refused(tiny_model_dir, store):
    path = make(tiny_model_dir, store).internalize(DOC).adapter
    meta = json.loads((path / METADATA).read_text())
    meta["model_id"] = "someone/else-7b"
    (path / METADATA).write_text(json.dumps(meta))
    with pytest.raises(LiftError, match="trained for model"):
        make(tiny_model_dir, store).use_adapter(path)


def test_full_finetune_round_trip(tiny_model_dir, store):
    lift = make(tiny_model_dir, store, finetune="full", epochs=1)
    done = lift.internalize(DOC)
    expected = logits(lift)
    assert (done.adapter / "config.json").is_file()
    other = make(tiny_model_dir, store, finetune="full", epochs=1)
    assert not other.internalize(DOC).trained
    torch.testing.assert_close(logits(other), expected)
    # the ICL baseline still runs on the untouched base weights
    base_answer = other.ask("Where?", mode="icl", max_new_tokens=3)
    assert base_answer.adapter is None


def test_store_lookup_missing_key(tmp_path):
    assert AdapterStore(tmp_path).lookup("0" * 20) is None


def test_rag_prompt_holds_the_retrieved_chunk(tiny_model_dir, store):
    lift = make(tiny_model_dir, store, window=128)
    filler = "The harbour wall is built of red sandstone blocks. " * 30
    lift.read(filler + "The telescope was made in Glasgow in 1881. " + filler)
    ids = lift.retrieve("Where was the telescope made in Glasgow?", 60)
    assert len(ids) <= 60 and "Glasgow" in lift.tokenizer.decode(ids)


def test_auxiliary_qa_generated_cached_and_stored(tiny_model_dir, store):
    from liftlm.synth import read_qa

    lift = make(tiny_model_dir, store, qa_pairs=5, qa_generator="keyphrase", qa_epochs=1)
    done = lift.internalize(DOC + " The committee will open the strongbox only in the year 2214.")
    pairs = read_qa(done.adapter / "qa.jsonl")
    assert len(pairs) >= 2 and all(p.source in ("keyphrase", "statement") for p in pairs)
    assert done.metadata["qa"]["used"] == "keyphrase" and done.metadata["qa"]["pairs"] == len(pairs)
    # stage 1 (2 epochs of segments) + stage 2 (1 epoch of segments + QA)
    assert len(done.result.epoch_losses) == 3
    # the pairs are cached by document: other training settings reuse them without synthesis
    other = make(tiny_model_dir, store, qa_pairs=5, qa_generator="keyphrase", qa_epochs=1, learning_rate=1e-3)
    again = other.internalize(DOC + " The committee will open the strongbox only in the year 2214.")
    assert again.trained and again.metadata["qa"]["used"] == "cache"
    assert read_qa(again.adapter / "qa.jsonl") == pairs


def test_user_qa_file_changes_the_key(tiny_model_dir, store, tmp_path):
    from liftlm.synth import QAPair, write_qa

    plain = make(tiny_model_dir, store).internalize(DOC).adapter
    qa = tmp_path / "qa.jsonl"
    write_qa(qa, [QAPair("Where was the telescope made?", "In Glasgow.", "", -1, -1)])
    lift = Lift(str(tiny_model_dir), LiftConfig(**CFG), store=store, device="cpu", progress=False, qa_file=qa)
    done = lift.internalize(DOC)
    assert done.trained and done.adapter != plain and (done.adapter / "qa.jsonl").is_file()
    write_qa(qa, [QAPair("Where was the telescope made?", "In Paris.", "", -1, -1)])
    lift = Lift(str(tiny_model_dir), LiftConfig(**CFG), store=store, device="cpu", progress=False, qa_file=qa)
    assert lift.internalize(DOC).adapter not in (plain, done.adapter)
