"""Reports from records alone (no model): the summary table with the paper's numbers, the grids and the plots."""
from __future__ import annotations

import json

import pytest

from liftlm.eval import report


def rec(task, method, score, metric="qa_f1", column=None, **meta):
    return {"id": f"{task}/{meta.get('length', 0)}/{meta.get('depth', meta.get('seed', 0))}", "task": task,
            "column": column or task, "method": method, "question": "q", "gold": ["g"], "prediction": "p",
            "score": score, "metric": metric, "seconds": 0.5, "meta": meta}


def niah_records():
    out = []
    for method, base in (("icl", 1.0), ("lift+icl", 0.5)):
        for length in (1000, 2000):
            for depth in (0.0, 0.5, 1.0):
                score = base if depth != 0.5 else 0.0
                out.append(rec("niah", method, score, "niah", length=length, depth=depth))
    return out


def test_summary_means_and_paper_numbers():
    records = [rec("narrativeqa", "icl", 1.0), rec("narrativeqa", "icl", 0.5), rec("narrativeqa", "lift+icl", 0.25),
               rec("gov_report", "icl", 0.1, "rouge"), rec("gov_report", "rag", 0.3, "rouge")]
    summary = report.summarize(records)
    assert summary["methods"] == ["icl", "lift+icl", "rag"]
    assert [c["column"] for c in summary["columns"]] == ["narrativeqa", "gov_report"]  # the paper's order
    assert summary["cells"]["icl"]["narrativeqa|qa_f1"] == {"mean": 75.0, "n": 2}
    table = report.summary_table(summary)
    assert "| icl | 75.00 (20.73) | 10.00 (29.39) |" in table
    assert "| lift+icl | 25.00 (25.84) | – (31.26) |" in table
    assert "| rag | – | 30.00 |" in table  # no paper number for rag
    assert table.splitlines()[-1] == "| n | 2 | 1 |"


def test_loogle_paper_figure_goes_beside_the_judge_column():
    plain = [rec("shortdep_qa", "icl", 0.2, "rouge")]
    table = report.summary_table(report.summarize(plain))
    assert "20.00 (44.23†)" in table  # a judge score beside ROUGE-L, marked as not comparable
    assert "†" in report.summary_markdown(plain, {})
    judged = [dict(plain[0], judge=1.0)]
    summary = report.summarize(judged)
    assert [(c["column"], c["metric"]) for c in summary["columns"]] == [
        ("shortdep_qa", "rouge"), ("shortdep_qa", "qa_f1"), ("shortdep_qa", "judge")]
    assert "| icl | 20.00 | 0.00 | 100.00 (44.23) |" in report.summary_table(summary)


def test_loogle_reports_f1_beside_rouge():
    stored = dict(rec("shortdep_qa", "icl", 0.5, "rouge"), scores={"qa_f1": 0.25})
    recomputed = dict(rec("shortdep_qa", "icl", 0.5, "rouge"), gold=["the red house"], prediction="a red house")
    cells = report.summarize([stored, recomputed])["cells"]["icl"]
    assert cells["shortdep_qa|qa_f1"] == {"mean": 62.5, "n": 2}  # 0.25 stored, 1.0 recomputed (articles dropped)
    assert cells["shortdep_qa|rouge"]["mean"] == 50.0


def test_niah_grid_values_and_tables():
    rows, lengths, values = report.grid(niah_records(), "lift+icl", "depth")
    assert rows == [0.0, 0.5, 1.0] and lengths == [1000, 2000]
    assert values == [[0.5, 0.5], [0.0, 0.0], [0.5, 0.5]]
    tables = report.grid_tables(niah_records())
    assert "**icl**" in tables and "| 0.5 | 0 | 0 |" in tables and "| 1 | 100 | 100 |" in tables


def test_plots_are_pngs(tmp_path):
    records = niah_records()
    heat = report.plot_heatmap(records, tmp_path / "heat.png")
    bars = report.plot_summary(report.summarize(records + [rec("narrativeqa", "icl", 0.4)]), tmp_path / "bars.png")
    for path in (heat, bars):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
    ruler = [rec("ruler", "icl", 1.0, "ruler", column=f"ruler/{v}", variant=v, length=n, seed=0)
             for v in ("single", "multikey") for n in (500, 1000)]
    assert report.plot_heatmap(ruler, tmp_path / "ruler.png", "variant").is_file()


def test_write_report_merges_judgments_and_tolerates_a_torn_line(tmp_path):
    records = [rec("longdep_qa", "lift+icl", 0.3, "rouge")]
    (tmp_path / "predictions.jsonl").write_text(json.dumps(records[0]) + "\n" + '{"id": "x", "ta')
    (tmp_path / "judge.jsonl").write_text(json.dumps({"id": records[0]["id"], "method": "lift+icl", "judge": 0.0}) + "\n")
    meta = {"benchmark": "loogle", "model_id": "tiny", "window": 256, "seed": 1, "data_seed": 0,
            "git": {"commit": "0123456789abcdef", "dirty": True}, "date": "2025-01-01T00:00:00+00:00",
            "config": {"segment_length": 32}, "judge": "http://x/v1#m"}
    (tmp_path / "run.json").write_text(json.dumps(meta))
    written = report.write_report(tmp_path)
    assert set(written) == {"summary.md", "summary.json", "summary.png"}
    md = written["summary.md"].read_text()
    assert "0123456789ab (with local changes)" in md and "seed: 1" in md and "segment_length=32" in md
    assert "| lift+icl | 30.00 | 0.00 | 0.00 (33.42) |" in md  # ROUGE-L, F1, judge
    data = json.loads(written["summary.json"].read_text())
    assert data["run"]["model_id"] == "tiny" and data["cells"]["lift+icl"]["longdep_qa|judge"]["n"] == 1


def test_empty_directory_writes_nothing(tmp_path):
    assert report.write_report(tmp_path) == {}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("reply, verdict", [("True", True), ("false.", False), ("**TRUE**, it matches", True),
                                            ("It is False that ... True", False), ("maybe", False), ("", False)])
def test_judge_verdicts(reply, verdict):
    from liftlm.eval.judge import parse_verdict

    assert parse_verdict(reply) is verdict


def test_endpoint_judge_needs_a_model_name():
    from liftlm.errors import LiftError
    from liftlm.eval.judge import make_judge

    with pytest.raises(LiftError, match="^--judge: name the endpoint's model after '#'"):
        make_judge("http://localhost:9/v1")
