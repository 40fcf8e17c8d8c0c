"""The CLI on the tiny model: every bad input gives one clear line on stderr, exit 2, and writes nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from liftlm.cli import main, trained_samples

DOC = "The lighthouse keeper of Varnholm kept a ledger of every ship that passed the northern cape. " * 10
SMALL = ["--objective", "ct", "--segment-length", "32", "--context-tokens", "32", "--epochs", "1", "--lora-rank", "4", "--quiet"]


@pytest.fixture
def doc(tmp_path):
    p = tmp_path / "doc.txt"
    p.write_text(DOC)
    return p


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("liftlm: error: ")
    return lines[0]


def test_internalize_then_ask_with_the_adapter(capsys, tmp_path, doc, tiny_model_dir):
    store = tmp_path / "store"
    code, out, err = run(capsys, "internalize", "--document", doc, "--model", tiny_model_dir, "--store", store,
                         "--window", 256, *SMALL)
    assert code == 0, err
    adapter = out.strip()
    assert os.path.isdir(adapter) and os.path.dirname(adapter) == str(store)
    assert "trained on" in err and "GiB" in err  # ... with the training's measured peak memory
    meta = json.loads((Path(adapter) / "liftlm.json").read_text())
    assert f"({meta['samples']:,} segment samples)" in err
    assert meta["training"]["peak_memory_gib"] > 0
    # ask with the adapter alone: model and settings come from its metadata, no training
    code, out, err = run(capsys, "ask", "--adapter", adapter, "--question", "Who kept a ledger?", "--json",
                         "--max-new-tokens", 5, "--model", tiny_model_dir)
    assert code == 0, err
    record = json.loads(out)
    assert set(record) == {"question", "answer", "mode", "adapter", "trained", "seconds"}
    assert record["mode"] == "lift+icl" and record["adapter"] == adapter and record["trained"] is False
    # ask with the document: the stored adapter is found by key and reused
    code, out, err = run(capsys, "ask", "--document", doc, "--model", tiny_model_dir, "--store", store,
                         "--window", 256, "--question", "Who?", "--json", "--max-new-tokens", 3, *SMALL)
    assert code == 0 and json.loads(out)["trained"] is False and json.loads(out)["adapter"] == adapter


def test_the_trained_line_counts_what_each_objective_trained():
    """A distillation adapter has no segment samples: the line names its student samples and teacher items."""
    distill = {"samples": 0, "qa": {"pairs": 0}, "distill": {"items": 114, "student_samples": 228}}
    assert trained_samples(distill) == "228 student samples of 114 teacher items"
    assert trained_samples({"samples": 1200, "qa": {"pairs": 40}}) == "1,200 segment samples, 40 QA pairs"
    assert trained_samples({"samples": 0, "qa": {"pairs": 0}}) == "0 samples"


def test_a_stored_adapter_takes_an_answer_time_setting_and_refuses_a_training_one(capsys, tmp_path, doc,
                                                                                  tiny_model_dir):
    code, out, err = run(capsys, "internalize", "--document", doc, "--model", tiny_model_dir, "--store",
                         tmp_path / "store", "--window", 256, *SMALL)
    assert code == 0, err
    adapter = out.strip()
    answers = {}
    for scale in ("1", "0"):
        code, out, err = run(capsys, "ask", "--adapter", adapter, "--model", tiny_model_dir, "--question",
                             "Who kept a ledger?", "--mode", "lift,icl", "--json", "--max-new-tokens", 4,
                             "--adapter-scale", scale)
        assert code == 0, err
        answers[scale] = [json.loads(line)["answer"] for line in out.splitlines()]
    assert answers["0"][1] == answers["1"][1]  # icl: the base model, whatever the scale
    code, out, err = run(capsys, "ask", "--adapter", adapter, "--model", tiny_model_dir, "--question", "Who?",
                         "--adapter-scale", 0.5, "--epochs", 3)
    assert code == 2 and "drop --epochs" in one_error_line(err)


def test_questions_file_one_lift_many_answers(capsys, tmp_path, doc, tiny_model_dir):
    questions = tmp_path / "q.txt"
    questions.write_text("Who kept a ledger?\n\nWhat did he count?\n")
    code, out, err = run(capsys, "ask", "--document", doc, "--model", tiny_model_dir, "--store", tmp_path / "s",
                         "--window", 256, "--questions-file", questions, "--json", "--max-new-tokens", 3, *SMALL)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["question"] for r in records] == ["Who kept a ledger?", "What did he count?"]
    assert [r["trained"] for r in records] == [True, True]  # this run trained; both answers use that adapter
    assert len({r["adapter"] for r in records}) == 1
    assert len([name for name in os.listdir(tmp_path / "s") if name != ".work"]) == 1  # + the work area (locks)


def test_icl_mode_trains_nothing(capsys, tmp_path, doc, tiny_model_dir):
    code, out, err = run(capsys, "ask", "--document", doc, "--model", tiny_model_dir, "--store", tmp_path / "s",
                         "--mode", "icl", "--window", 256, "--question", "Who?", "--json", "--max-new-tokens", 3)
    assert code == 0, err
    assert json.loads(out)["adapter"] is None and not (tmp_path / "s").exists()


def test_several_modes_side_by_side(capsys, tmp_path, doc, tiny_model_dir):
    """``--mode icl,lift+icl``: one LIFT, each question answered in each mode, labelled; JSON: one object each."""
    base = ["ask", "--document", doc, "--model", tiny_model_dir, "--store", tmp_path / "s", "--window", 256,
            "--question", "Who kept a ledger?", "--max-new-tokens", 3, *SMALL]
    code, out, err = run(capsys, *base, "--mode", "icl,lift+icl")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("     icl: ") and lines[1].startswith("lift+icl: ")
    code, out, err = run(capsys, *base, "--mode", "lift+icl, icl", "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["mode"] for r in records] == ["lift+icl", "icl"]
    assert records[0]["adapter"] and records[1]["adapter"] is None
    assert len([name for name in os.listdir(tmp_path / "s") if name != ".work"]) == 1  # + the work area (locks)
    code, out, err = run(capsys, *base, "--mode", "icl,recite")
    assert code == 2 and "--mode must be one or more of" in one_error_line(err) and not out


def write(path, data: bytes):
    path.write_bytes(data)
    return path


BAD_DOCUMENTS = {
    "missing": (None, "no such file"),
    "empty": (b"", "empty"),
    "whitespace": (b"  \n\t \n", "empty"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    "latin1": ("Café crème brûlée".encode("latin-1"), "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
@pytest.mark.parametrize("verb", ["ask", "internalize"])
def test_bad_documents(capsys, tmp_path, tiny_model_dir, case, verb):
    data, message = BAD_DOCUMENTS[case]
    path = tmp_path / "doc.txt"
    if data is not None:
        path.write_bytes(data)
    extra = ["--question", "Why?"] if verb == "ask" else []
    code, out, err = run(capsys, verb, "--document", path, "--model", tiny_model_dir, "--store", tmp_path / "s",
                         *extra)
    assert code == 2 and out == ""
    assert message in one_error_line(err)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("argv,message", [
    (["--question", "   "], "--question is empty"),
    (["--question", "Why?", "--window", 100000], "larger than the model's context limit"),
    (["--question", "why " * 300, "--window", 256], "too small to hold the question"),
    (["--question", "Why?", "--window", 256, "--mode", "lift", "--max-new-tokens", 300], "too small"),
    (["--question", "Why?", "--epochs", -1], "--epochs"),
    (["--question", "Why?", "--finetune", "qlora"], "--finetune"),
    (["--question", "Why?", "--objective", "ct", "--segment-length", 240, "--window", 256], "--window"),
    (["--questions-file", "/nonexistent/q.txt"], "--questions-file"),
    (["--question", "Why?", "--adapter-scale", 9], "--adapter-scale must be between 0 and 4"),
    (["--question", "Why?", "--adapter-scale", 0.5, "--finetune", "full"], "--adapter-scale scales a LoRA adapter"),
])
def test_bad_arguments(capsys, tmp_path, doc, tiny_model_dir, argv, message):
    code, out, err = run(capsys, "ask", "--document", doc, "--model", tiny_model_dir, "--store", tmp_path / "s",
                         *argv)
    assert code == 2 and out == ""
    assert message in one_error_line(err)
    assert not (tmp_path / "s").exists()


def test_empty_questions_file(capsys, tmp_path, doc, tiny_model_dir):
    q = write(tmp_path / "q.txt", b"\n  \n")
    code, _, err = run(capsys, "ask", "--document", doc, "--model", tiny_model_dir, "--questions-file", q)
    assert code == 2 and "holds no questions" in one_error_line(err)


@pytest.mark.parametrize("model", ["/nonexistent/model-dir", "no-such-org/no-such-model-xyz", "missing.gguf"])
def test_model_not_found_offline(tmp_path, doc, model):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LIFTLM_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "liftlm", "ask", "--document", str(doc), "--question", "Why?",
                           "--model", model], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    line = one_error_line(proc.stderr)
    assert "--model" in line
    assert not (tmp_path / "home" / "adapters").exists()


def test_corrupted_and_mismatched_adapters(capsys, tmp_path, doc, tiny_model_dir):
    code, out, _ = run(capsys, "internalize", "--document", doc, "--model", tiny_model_dir, "--store",
                       tmp_path / "s", "--window", 256, *SMALL)
    adapter = out.strip()
    meta_path = os.path.join(adapter, "liftlm.json")
    meta = json.load(open(meta_path))
    # trained on another model
    json.dump({**meta, "model_id": "someone/else"}, open(meta_path, "w"))
    code, out, err = run(capsys, "ask", "--adapter", adapter, "--question", "Why?", "--model", tiny_model_dir)
    assert code == 2 and "trained for model" in one_error_line(err)
    # trained on another document than the one given
    json.dump(meta, open(meta_path, "w"))
    other = write(tmp_path / "other.txt", b"A different document entirely, about the sea.")
    from liftlm.config import LiftConfig
    from liftlm.errors import LiftError
    from liftlm.recipe import Lift  # the API checks the pairing when both are given

    lift = Lift(str(tiny_model_dir), LiftConfig.from_dict(meta["settings"]), progress=False)
    lift.read(other.read_text())
    with pytest.raises(LiftError, match="another document"):
        lift.use_adapter(adapter)
    # corrupted weights
    weights = os.path.join(adapter, "adapter_model.safetensors")
    open(weights, "wb").write(b"\x00garbage")
    code, out, err = run(capsys, "ask", "--adapter", adapter, "--question", "Why?", "--model", tiny_model_dir)
    assert code == 2 and "corrupted" in one_error_line(err)
    # not an adapter at all
    code, out, err = run(capsys, "ask", "--adapter", tmp_path, "--question", "Why?")
    assert code == 2 and "not a liftlm adapter" in one_error_line(err)


def test_python_dash_m_and_help():
    proc = subprocess.run([sys.executable, "-m", "liftlm", "ask", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--segment-length" in proc.stdout and "--mode" in proc.stdout


def test_rag_modes(capsys, tmp_path, tiny_model_dir):
    doc = tmp_path / "doc.txt"
    doc.write_text(DOC + " The telescope was made in Glasgow in 1881. " + DOC)
    code, out, err = run(capsys, "ask", "--document", doc, "--model", tiny_model_dir, "--store", tmp_path / "s",
                         "--mode", "rag", "--window", 128, "--question", "Where was the telescope made?", "--json",
                         "--max-new-tokens", 3)
    assert code == 0, err
    assert json.loads(out)["adapter"] is None and not (tmp_path / "s").exists()
    code, out, err = run(capsys, "ask", "--document", doc, "--model", tiny_model_dir, "--store", tmp_path / "s",
                         "--mode", "lift+rag", "--window", 128, "--question", "Where was the telescope made?",
                         "--json", "--max-new-tokens", 3, *SMALL)
    assert code == 0, err
    assert json.loads(out)["trained"] is True


def test_adapter_with_training_flags_is_refused(capsys, tmp_path):
    code, out, err = run(capsys, "ask", "--adapter", tmp_path, "--question", "Why?", "--epochs", 3)
    assert code == 2 and "--adapter carries its own training settings; drop --epochs" in one_error_line(err)


@pytest.mark.parametrize("verb", ["internalize", "ask", "sft", "eval", "bench-scaling", "bench-throughput"])
def test_a_device_this_machine_lacks_is_one_line(capsys, tmp_path, doc, tiny_model_dir, verb, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this CPU machine, also on a GPU one
    argv = {"internalize": ["internalize", "--document", doc],
            "ask": ["ask", "--document", doc, "--question", "q"],
            "sft": ["sft", "--corpus", tmp_path / "c.jsonl", "--out", tmp_path / "out"],
            "eval": ["eval", "--benchmark", "niah", "--out", tmp_path / "out"],
            "bench-scaling": ["bench", "scaling", "--out", tmp_path / "out"],
            "bench-throughput": ["bench", "throughput"]}[verb]
    code, out, err = run(capsys, *argv, "--model", tiny_model_dir, "--device", "cuda")
    assert code == 2 and out == ""
    assert "--device cuda: CUDA is not available" in one_error_line(err)
    assert not (tmp_path / "out").exists()
    code, _, err = run(capsys, *argv, "--model", tiny_model_dir, "--device", "gpu0")
    assert code == 2 and "--device: 'gpu0' is not a device" in one_error_line(err)


def test_sft_negative_max_doc_tokens_is_one_line(capsys, tmp_path, tiny_model_dir):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": DOC}) + "\n")
    code, out, err = run(capsys, "sft", "--corpus", corpus, "--out", tmp_path / "out", "--model", tiny_model_dir,
                         "--max-doc-tokens", "-1", *SMALL)
    assert code == 2 and "--max-doc-tokens must be at least 1 (got -1)" in one_error_line(err)
    assert not (tmp_path / "out").exists()
