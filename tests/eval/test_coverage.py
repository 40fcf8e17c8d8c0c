"""Which facts the teacher's items carry (liftlm.eval.coverage): the count per fact from an adapter's stored items,
the summary by bins, the report's section and plot, and the eval run recording the count for adapter answers."""
from __future__ import annotations

import argparse
import json

import pytest

from liftlm.eval.cli import register, run
from liftlm.eval.coverage import ItemAnswers, annotate, coverage_summary, coverage_table
from liftlm.eval.report import write_report


def _item(tok, kind: str, chunk, answer: str) -> dict:
    return {"kind": kind, "prompt": "?", "chunk": chunk, "answer_ids": tok.encode(answer, add_special_tokens=False),
            "top_ids": [], "top_logprobs": []}


@pytest.fixture
def adapter(tmp_path, tiny_tokenizer):
    """An adapter folder whose items: the fact's chunk [100, 356) says "Katar" twice (two kinds) and "10" once
    inside "100"; another chunk says "Katar" and "10"."""
    d = tmp_path / "adapter"
    d.mkdir()
    rows = [_item(tiny_tokenizer, "about", [100, 356], "The tongue of Brynmoor is Katar."),
            _item(tiny_tokenizer, "written", [100, 356], "People there speak Katar, the text says."),
            _item(tiny_tokenizer, "summary", [100, 356], "A town of 100 houses and a harbour."),
            _item(tiny_tokenizer, "retention", [100, 356], "Bees make honey."),
            _item(tiny_tokenizer, "about", [356, 612], "Katar again, and the 10 bridges of Ulm.")]
    (d / "distill.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _record(adapter, gold, token, method="lift", score=1.0, kind="fact") -> dict:
    return {"id": f"facts/2000/0/{gold[0]}", "task": "facts", "column": "fact recall", "metric": "facts",
            "method": method, "question": "?", "gold": gold, "score": score,
            "prediction": "", "seconds": 1.0, "adapter": str(adapter) if adapter else None,
            "meta": {"kind": kind, "fact_token": token, "depth": 0.1, "length": 2000}}


def test_items_carry_a_fact_from_its_chunk_with_its_answer(adapter, tiny_tokenizer):
    answers = ItemAnswers(tiny_tokenizer)
    assert answers.carrying(adapter, 120, ["Katar"]) == {"about": 1, "written": 1}  # not the other chunk's
    assert answers.carrying(adapter, 400, ["Katar"]) == {"about": 1}
    assert answers.carrying(adapter, 120, ["10", "ten"]) == {}  # "100" is not "10"
    assert answers.carrying(adapter, 400, ["10", "ten"]) == {"about": 1}
    assert answers.carrying(adapter, 50, ["Katar"]) == {}  # before every chunk
    assert answers.carrying(adapter.parent / "gone", 120, ["Katar"]) is None  # no items stored


def test_annotate_counts_adapter_fact_records_only(adapter, tiny_tokenizer):
    answers = ItemAnswers(tiny_tokenizer)
    fact = annotate(_record(adapter, ["Katar"], 120), answers)
    assert fact["items_carrying"] == 2 and fact["items_carrying_kinds"] == {"about": 1, "written": 1}
    for untouched in (_record(None, ["Katar"], 120, method="icl"), _record(adapter, ["Paris"], 120, kind="control"),
                      _record(adapter.parent / "ct-adapter", ["Katar"], 120)):
        assert "items_carrying" not in annotate(untouched, answers)


def test_summary_bins_recall_by_items_carrying():
    recs = []
    for count, score in ((0, 0.0), (0, 0.0), (1, 1.0), (1, 0.0), (2, 1.0), (5, 1.0), (9, 1.0)):
        r = _record("a", ["x"], 0, score=score)
        r["items_carrying"] = count
        recs.append(r)
    recs.append(_record("a", ["x"], 0, method="icl"))  # not counted: no items_carrying
    summary = coverage_summary(recs)
    assert list(summary) == ["lift"]
    row = summary["lift"]
    assert row["facts"] == 7 and row["uncarried"] == 2 and row["mean"] == pytest.approx(18 / 7)
    assert row["bins"]["0"] == {"facts": 2, "recalled": 0}
    assert row["bins"]["1"] == {"facts": 2, "recalled": 1}
    assert row["bins"]["4-5"] == {"facts": 1, "recalled": 1} and row["bins"]["6+"] == {"facts": 1, "recalled": 1}
    assert row["bins"]["3"] == {"facts": 0, "recalled": 0}
    table = coverage_table(summary)
    assert "| lift | 0 / 2 | 1 / 2 | 1 / 1 | – | 1 / 1 | 1 / 1 | 2.6 |" in table


def test_report_has_the_coverage_section_and_plot_only_when_counted(tmp_path, adapter, tiny_tokenizer):
    answers = ItemAnswers(tiny_tokenizer)
    out = tmp_path / "run"
    out.mkdir()
    recs = [annotate(_record(adapter, ["Katar"], 120), answers), _record(None, ["Katar"], 120, method="icl")]
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    written = write_report(out)
    assert (out / "facts_coverage.png").read_bytes()[:4] == b"\x89PNG" and "facts_coverage.png" in written
    assert "## Facts by the teacher items that carry them" in (out / "summary.md").read_text()
    assert json.loads((out / "summary.json").read_text())["items_carrying"]["lift"]["bins"]["2"]["recalled"] == 1
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "predictions.jsonl").write_text(json.dumps(recs[1]) + "\n")
    assert "facts_coverage.png" not in write_report(bare)
    assert "carry them" not in (bare / "summary.md").read_text()


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_eval_records_the_items_carrying_each_fact(tmp_path, tiny_model_dir, tiny_tokenizer, haystack, one_thread):
    essays = tmp_path / "essays"
    essays.mkdir()
    (essays / "a.txt").write_text(haystack)
    out = tmp_path / "out"
    parser = argparse.ArgumentParser(prog="liftlm")
    register(parser.add_subparsers(dest="verb"))
    args = parser.parse_args([
        "eval", "--benchmark", "facts", "--data", str(essays), "--lengths", "400", "--facts", "2", "--controls", "1",
        "--methods", "icl,lift", "--model", str(tiny_model_dir), "--store", str(tmp_path / "s"), "--out", str(out),
        "--objective", "distill", "--distill-prompts", "2", "--distill-questions", "0", "--distill-answer-tokens", "6",
        "--segment-length", "64", "--epochs", "1", "--lora-rank", "4", "--window", "256", "--max-new-tokens", "6",
        "--quiet"])
    assert run(args) == 0
    recs = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    lifted = [r for r in recs if r["method"] == "lift" and r["meta"]["kind"] == "fact"]
    assert len(lifted) == 2 and all("items_carrying" not in r for r in recs if r not in lifted)
    answers = ItemAnswers(tiny_tokenizer)  # the same count, from the adapter's stored items
    for r in lifted:
        kinds = answers.carrying(r["adapter"], r["meta"]["fact_token"], r["gold"])
        assert r["items_carrying_kinds"] == kinds and r["items_carrying"] == sum(kinds.values())
    assert answers.items(lifted[0]["adapter"])  # the adapter's items were read (the count is of something)
    assert "## Facts by the teacher items that carry them" in (out / "summary.md").read_text()
    assert (out / "facts_coverage.png").is_file()
