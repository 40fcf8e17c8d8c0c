"""Loaders (on our fixture, on small files written here and on the shared LooGLE sample) and cut_document."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from liftlm.documents import token_offsets
from liftlm.eval.datasets import (
    LONGBENCH_TASKS,
    TASKS,
    Example,
    cut_document,
    get_task,
    load_longbench,
    load_loogle,
)

SAMPLE = Path(__file__).parent / "fixtures" / "longbench_sample.jsonl"


# ---------------------------------------------------------------- LongBench


def test_load_longbench_fixture():
    examples = load_longbench(SAMPLE)
    assert [e.task for e in examples] == ["narrativeqa", "musique", "passage_retrieval_en", "gov_report"]
    first = examples[0]
    assert first.id == "nqa-0001"
    assert first.question == "Why does Mira leave the lighthouse?"
    assert first.document.startswith("Mira kept the lighthouse")
    assert first.answers == ["to care for her ill mother", "her mother was ill"]
    assert first.evidence == []
    assert first.metadata["all_classes"] is None and first.metadata["length"] == 52
    assert load_longbench(SAMPLE, limit=2) == examples[:2]
    assert {e.task for e in load_longbench(SAMPLE, task="qmsum")} == {"qmsum"}


def test_longbench_folder_of_task_files(tmp_path):
    (tmp_path / "musique.jsonl").write_text(SAMPLE.read_text().splitlines()[1] + "\n")
    (examples,) = load_longbench(tmp_path, task="musique")
    assert examples.answers == ["Bergen"]
    with pytest.raises(ValueError, match="is a folder: pass task="):
        load_longbench(tmp_path)


def test_task_specs():
    expected = {
        "narrativeqa": ("qa_f1", 128),
        "musique": ("qa_f1", 32),
        "qmsum": ("rouge", 512),
        "gov_report": ("rouge", 512),
        "passage_retrieval_en": ("retrieval", 32),
    }
    assert set(LONGBENCH_TASKS) == set(expected)
    for name, (metric, max_len) in expected.items():
        spec = get_task(name)
        assert (spec.metric, spec.max_new_tokens) == (metric, max_len)
    example = Example("x", "DOCUMENT TEXT", "THE QUESTION?", ["a"], "narrativeqa")
    for spec in TASKS.values():
        with_doc = spec.build_prompt(example, example.document)
        without = spec.build_prompt(example, None)
        assert "DOCUMENT TEXT" in with_doc and "DOCUMENT TEXT" not in without
        if spec.name != "gov_report":  # a summary has no question
            assert "THE QUESTION?" in with_doc and "THE QUESTION?" in without
    with pytest.raises(ValueError, match="unknown task 'narativeqa'; did you mean 'narrativeqa'"):
        get_task("narativeqa")


def test_loader_errors_name_file_and_line(tmp_path):
    with pytest.raises(ValueError, match="no_such.jsonl: no such file"):
        load_longbench(tmp_path / "no_such.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(SAMPLE.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        load_longbench(bad)
    row = json.loads(SAMPLE.read_text().splitlines()[0])
    del row["context"]
    bad.write_text("\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: missing field 'context'"):
        load_longbench(bad)
    bad.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected a JSON object"):
        load_longbench(bad)


def test_hub_id_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail; nothing is downloaded
    with pytest.raises(ImportError, match="pip install datasets"):
        load_loogle("bigainlco/LooGLE", "shortdep_qa")
    with pytest.raises(ImportError, match="pip install datasets"):
        load_longbench("THUDM/LongBench", "narrativeqa")


# ---------------------------------------------------------------- LooGLE


def _loogle_line(document, qa_pairs):
    return json.dumps({"input": document, "title": "Harbour", "qa_pairs": repr(qa_pairs), "output": "none"})


def test_load_loogle_short_and_long(tmp_path):
    doc = "The harbour opened in 1881. Its first master was Edda Lund. The pier was rebuilt in 1920."
    short = tmp_path / "shortdep_qa.jsonl"
    short.write_text(
        _loogle_line(
            doc, [{"S": "Its first master was Edda Lund.", "Q": "Who was first master?", "A": "Edda Lund"}]
        )
        + "\n"
    )
    (ex,) = load_loogle(short)
    assert (ex.id, ex.task, ex.question, ex.answers) == (
        "shortdep_qa/0/0",
        "shortdep_qa",
        "Who was first master?",
        ["Edda Lund"],
    )
    assert ex.evidence == ["Its first master was Edda Lund."] and ex.metadata["title"] == "Harbour"

    long = tmp_path / "longdep_qa.jsonl"
    qa = {
        "Q": "How many years between opening and rebuilding?",
        "A": "39",
        "type": "computation",
        "S": ["The harbour opened in 1881.", "The pier was rebuilt in 1920."],
    }
    long.write_text(_loogle_line(doc, [qa, dict(qa, Q="Again?")]) + "\n")
    examples = load_loogle(long)
    assert [e.id for e in examples] == ["longdep_qa/0/0", "longdep_qa/0/1"]
    assert examples[0].evidence == qa["S"] and examples[0].metadata["type"] == "computation"
    assert load_loogle(tmp_path, "longdep_qa", limit=1) == examples[:1]


def test_loogle_errors(tmp_path):
    path = tmp_path / "shortdep_qa.jsonl"
    path.write_text(json.dumps({"input": "x", "qa_pairs": "__import__('os').getcwd()"}) + "\n")
    with pytest.raises(ValueError, match=r"shortdep_qa.jsonl:1: cannot parse qa_pairs"):
        load_loogle(path)
    path.write_text(json.dumps({"input": "x", "qa_pairs": "[{'Q': 'q'}]"}) + "\n")
    with pytest.raises(ValueError, match="has no 'A' field"):
        load_loogle(path)
    other = tmp_path / "other.jsonl"
    other.write_text("")
    with pytest.raises(ValueError, match="cannot tell the LooGLE task"):
        load_loogle(other)
    with pytest.raises(ValueError, match="unsupported LooGLE task 'shortdep_cloze'"):
        load_loogle(path, "shortdep_cloze")


def test_real_loogle_sample(shared_data):
    short = load_loogle(shared_data / "loogle" / "shortdep_qa.jsonl")
    long = load_loogle(shared_data / "loogle" / "longdep_qa.jsonl")
    assert len(short) == 80 and len(long) == 43
    assert len({e.document for e in short}) == 5
    assert Counter(e.metadata["type"] for e in long) == {
        "comprehension_and_reasoning": 15,
        "multiple_information_retrieval": 15,
        "computation": 10,
        "timeline_reorder": 3,
    }
    assert all(e.question and e.answers[0] and e.evidence for e in short + long)


def test_cut_real_loogle_example(shared_data, tiny_tokenizer):
    example = load_loogle(shared_data / "loogle" / "shortdep_qa.jsonl", limit=1)[0]
    kept = cut_document(example, tiny_tokenizer, 200_000)
    assert kept is example  # the whole document fits
    assert cut_document(example, tiny_tokenizer, 50) is None  # evidence is further in than 50 tokens


# ---------------------------------------------------------------- cut_document


def _example(evidence):
    doc = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(60))
    return Example("e", doc, "q", ["a"], "t", evidence=evidence, metadata={"title": "T"})


def test_cut_document_keeps_evidence_inside(tiny_tokenizer):
    ex = _example(["Sentence number 2 talks  about\ntopic 2."])  # whitespace differs from the document
    cut = cut_document(ex, tiny_tokenizer, 100)
    assert cut is not None and ex.document.startswith(cut.document) and len(cut.document) < len(ex.document)
    assert len(token_offsets(tiny_tokenizer, cut.document)[0]) <= 100
    assert cut.metadata["title"] == "T" and cut.metadata["cut_tokens"] == 100
    assert cut.metadata["unlocated_evidence"] == 0


def test_cut_document_drops_lost_evidence(tiny_tokenizer):
    assert cut_document(_example(["Sentence number 50 talks about topic 50."]), tiny_tokenizer, 100) is None


def test_cut_document_loosely_quoted_evidence(tiny_tokenizer):
    # not verbatim (sentences joined, a citation mark added): located through its 4-word shingles
    early = "Sentence number 1 talks about topic 1.[3] Sentence number 3 talks about topic 3."
    late = "Sentence number 1 talks about topic 1.[3] Sentence number 55 talks about topic 55."
    assert cut_document(_example([early]), tiny_tokenizer, 100) is not None
    assert cut_document(_example([late]), tiny_tokenizer, 100) is None
    unlocated = cut_document(_example(["Nothing of this is in the text at all."]), tiny_tokenizer, 100)
    assert unlocated is not None and unlocated.metadata["unlocated_evidence"] == 1


def test_cut_document_arguments(tiny_tokenizer):
    ex = _example([])
    assert cut_document(ex, tiny_tokenizer, 10**6) is ex
    with pytest.raises(ValueError, match="max_doc_tokens must be a positive"):
        cut_document(ex, tiny_tokenizer, 0)


def test_cut_documents_matches_cut_document_per_example(tiny_tokenizer):
    from liftlm.eval.datasets import cut_documents

    examples = [_example(["Sentence number 2 talks about topic 2."]),
                _example(["Sentence number 50 talks about topic 50."]),
                _example([]), Example("short", "A short one.", "q", ["a"], "t")]
    one_by_one = [c for c in (cut_document(ex, tiny_tokenizer, 100) for ex in examples) if c is not None]
    assert cut_documents(examples, tiny_tokenizer, 100) == one_by_one
    assert len(one_by_one) == 3 and one_by_one[-1] is examples[-1]
