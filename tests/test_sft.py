import json
from pathlib import Path

import pytest

from liftlm.cli import main
from liftlm.errors import LiftError
from liftlm.sft import SFT_METADATA, load_corpus

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "loogle" / "shortdep_qa.jsonl"
DOC = "The harbour wall is built of red sandstone blocks, each marked with a small cross. " * 8


def test_corpus_formats(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"text": DOC, "qa": [{"question": "What marks the blocks?", "answer": "A cross."}]})
                 + "\n" + json.dumps({"input": DOC, "qa_pairs": "[{'Q': 'Colour?', 'A': 'Red', 'S': 'red'}]"})
                 + "\n" + json.dumps({"text": DOC}) + "\n")
    docs = load_corpus(p)
    assert [len(q) for _, q in docs] == [1, 1, 0]
    pair, evidence = docs[1][1][0]
    assert pair.question == "Colour?" and pair.answer == "Red" and evidence == ["red"]


@pytest.mark.skipif(not SHARED.is_file(), reason="shared LooGLE sample not present")
def test_loogle_file_is_a_corpus():
    docs = load_corpus(SHARED)
    assert len(docs) == 5 and all(len(text) > 10_000 and qa for text, qa in docs)


@pytest.mark.parametrize("content,message", [
    ("", "holds no documents"), ("{bad json\n", "not valid JSON"), ('{"qa": []}\n', "no document text"),
])
def test_corpus_errors(tmp_path, content, message):
    p = tmp_path / "c.jsonl"
    p.write_text(content)
    with pytest.raises(LiftError, match=message):
        load_corpus(p)


def test_sft_then_lift_on_top(tmp_path, tiny_model_dir, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": DOC, "qa": [{"question": "What marks the blocks?", "answer": "A cross."}]})
                      + "\n")
    out = tmp_path / "sft-model"
    small = ["--segment-length", "32", "--context-tokens", "32", "--epochs", "1", "--qa-epochs", "1",
             "--lora-rank", "4", "--window", "256", "--quiet"]
    assert main(["sft", "--corpus", str(corpus), "--out", str(out), "--model", str(tiny_model_dir), *small]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    meta = json.loads((out / SFT_METADATA).read_text())
    assert meta["documents"] == 1 and meta["qa_pairs"] == 1 and meta["training"]["tokens"] > 0
    assert meta["settings"]["objective"] == "ct" and meta["segments"] > 0  # SFT trains the paper's objective
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    assert not list(tmp_path.glob(".sft-model.*"))  # no temporary leftovers
    doc = tmp_path / "d.txt"
    doc.write_text("A different document about a brass telescope made in Glasgow. " * 6)
    code = main(["ask", "--document", str(doc), "--base", str(out), "--question", "Where?", "--json",
                 "--max-new-tokens", "3", "--store", str(tmp_path / "s"), *small])
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["trained"] is True
    meta = json.loads((Path(record["adapter"]) / "liftlm.json").read_text())
    assert meta["model_id"] == str(out.resolve())
    # refusing to overwrite, another objective, and a --base that is not an SFT model
    assert main(["sft", "--corpus", str(corpus), "--out", str(out), "--model", str(tiny_model_dir)]) == 2
    assert main(["sft", "--corpus", str(corpus), "--out", str(tmp_path / "other"), "--model", str(tiny_model_dir),
                 "--objective", "distill"]) == 2
    assert "pre-LIFT SFT trains the paper's objective" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    assert main(["ask", "--document", str(doc), "--base", str(tiny_model_dir), "--question", "Why?"]) == 2
    assert "not a model written by `liftlm sft`" in capsys.readouterr().err


def test_sft_cut_keeps_only_qa_inside_the_cut(tmp_path, tiny_model_dir):
    head = "The lighthouse keeper painted the tower white in the spring of that year. "
    tail = " The ferry to the island stopped running once the new bridge opened."
    text = head + "Waves broke on the rocks below the tower all through the night. " * 30 + tail
    qa = [{"Q": "What colour was the tower?", "A": "White", "S": head.strip()},
          {"Q": "Why did the ferry stop?", "A": "The bridge opened", "S": [tail.strip()]},
          {"Q": "No evidence given?", "A": "Kept"}]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"input": text, "qa_pairs": repr(qa)}) + "\n")
    docs = load_corpus(corpus)
    assert [e for _, e in docs[0][1]] == [[head.strip()], [tail.strip()], []]
    out = tmp_path / "sft-model"
    small = ["--segment-length", "32", "--context-tokens", "32", "--epochs", "1", "--qa-epochs", "1",
             "--lora-rank", "4", "--window", "256", "--quiet"]
    assert main(["sft", "--corpus", str(corpus), "--out", str(out), "--model", str(tiny_model_dir),
                 "--max-doc-tokens", "100", *small]) == 0
    meta = json.loads((out / SFT_METADATA).read_text())
    assert meta["qa_pairs"] == 2 and meta["qa_pairs_outside_cut"] == 1
    assert meta["document_tokens"] <= 101


def test_sft_recurrent_mode_over_several_documents(tmp_path, tiny_model_dir, capsys):
    """Recurrent training keeps one memory per document: each document's first span resets it and takes that
    document's own prompt, so a corpus of several documents trains every token of each once per epoch."""
    corpus = tmp_path / "c.jsonl"
    docs = [DOC, "A brass telescope was made in Glasgow and sold to a sailor from Leith. " * 6]
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = tmp_path / "sft-recurrent"
    assert main(["sft", "--corpus", str(corpus), "--out", str(out), "--model", str(tiny_model_dir),
                 "--training-mode", "recurrent", "--segment-length", "32", "--context-tokens", "32", "--epochs", "2",
                 "--lora-rank", "4", "--window", "256", "--quiet"]) == 0
    meta = json.loads((out / SFT_METADATA).read_text())
    assert meta["documents"] == 2 and meta["training"]["tokens"] == 2 * meta["document_tokens"]
