"""``liftlm bench overlap-vs-paper``: the speed-up arithmetic, the committed results re-summarised byte for byte,
and one tiny real run end to end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from liftlm.bench.overlap_vs_paper import parse_modes, replot, summarize, time_to_reach
from liftlm.errors import LiftError

COMMITTED = Path(__file__).parents[2] / "experiments" / "results" / "overlap-vs-paper"


def test_time_to_reach_interpolates_between_epoch_ends():
    curve = [(0.0, 3.0), (10.0, 2.0), (20.0, 1.5)]
    assert time_to_reach(curve, 2.5) == pytest.approx(5.0)
    assert time_to_reach(curve, 2.0) == pytest.approx(10.0)
    assert time_to_reach(curve, 1.75) == pytest.approx(15.0)
    assert time_to_reach(curve, 1.0) is None  # never reached


def test_summary_speedups_are_medians_over_rounds():
    rows = []
    for rnd, (paper_s, fast_s) in enumerate([(10.0, 4.0), (12.0, 4.0), (11.0, 5.5)], 1):
        rows += [{"mode": "paper", "epoch": 1, "seconds": paper_s, "document_nll": 2.0, "round": rnd},
                 {"mode": "recurrent", "epoch": 1, "seconds": fast_s / 2, "document_nll": 2.5, "round": rnd},
                 {"mode": "recurrent", "epoch": 2, "seconds": fast_s, "document_nll": 2.0, "round": rnd}]
    summary = summarize(3.0, rows, ["paper", "recurrent"])
    (speedup,) = summary["speedups"]
    assert speedup["speedup_median"] == pytest.approx(2.5)  # 10/4, 12/4, 11/5.5 → 2.5, 3.0, 2.0
    assert (speedup["speedup_min"], speedup["speedup_max"]) == (2.0, 3.0)
    assert speedup["rounds_reached"] == 3 and summary["rounds"] == 3


@pytest.mark.skipif(not (COMMITTED / "results.json").is_file(), reason="no committed overlap-vs-paper results")
def test_committed_results_resummarise_byte_identically(tmp_path):
    out = tmp_path / "ovp"
    shutil.copytree(COMMITTED, out)
    replot(out)
    for name in ("results.json", "summary.json", "summary.md"):
        assert (out / name).read_bytes() == (COMMITTED / name).read_bytes(), name
    assert (out / "curves.png").stat().st_size > 10_000


@pytest.mark.parametrize("spec", ["recurrent:3", "paper:0", "paper", "fast:2,paper:1", ""])
def test_bad_modes_are_refused(spec):
    with pytest.raises(LiftError, match="--modes"):
        parse_modes(spec)


def test_tiny_run_end_to_end(tmp_path, tiny_loaded, monkeypatch):
    """Two modes, one round, on the tiny model: rows per epoch, NLL falling, outputs written."""
    import liftlm.models
    from liftlm.bench import overlap_vs_paper as ovp

    haystack = tmp_path / "hay"
    haystack.mkdir()
    (haystack / "a.txt").write_text("The keeper lit the lamp at dusk and wrote the ships in his ledger. " * 40)
    monkeypatch.setattr(liftlm.models, "load_model", lambda *a, **k: tiny_loaded)
    monkeypatch.setattr(ovp, "LiftConfig", lambda **kw: _small_config(**kw))
    summary = ovp.run_overlap_vs_paper(ovp.OverlapOptions(tokens=200, haystack=str(haystack), modes="paper:2,recurrent:2",
                                                          rounds=1, out=tmp_path / "out", progress=False))
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["mode"], r["epoch"]) for r in data["rows"]] == [("paper", 1), ("paper", 2), ("recurrent", 1), ("recurrent", 2)]
    paper = [r["document_nll"] for r in data["rows"] if r["mode"] == "paper"]
    assert paper[1] < paper[0] < data["base_nll"]  # the adapter learns the document
    assert {s["mode"] for s in summary["speedups"]} == {"recurrent"}
    assert (tmp_path / "out" / "curves.png").is_file() and (tmp_path / "out" / "summary.md").is_file()
    assert not hasattr(tiny_loaded.model, "peft_config")  # the base model is handed back without LoRA


def _small_config(**kw):
    from liftlm.config import LiftConfig

    return LiftConfig(**{"objective": "ct", "segment_length": 32, "context_tokens": 16, "learning_rate": 5e-3, **kw})
