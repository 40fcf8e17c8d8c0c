"""The cost benchmark on the tiny model: teacher and student timed apart, per recipe, against the first recipe."""
from __future__ import annotations

import json

import pytest
import torch

from liftlm.bench.cli import main
from liftlm.bench.cost import ForwardTokens, parse_recipe
from liftlm.config import LiftConfig
from liftlm.errors import LiftError

SMALL = ["--segment-length", "32", "--context-tokens", "32", "--lora-rank", "4", "--epochs", "1",
         "--distill-prompts", "2", "--distill-answer-tokens", "6", "--distill-questions", "0"]


def test_cost_of_two_recipes(tiny_model_dir, haystack_dir, tmp_path, capsys):
    out = tmp_path / "cost"
    status = main(["cost", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", "200",
                   "--threads", "1", "--quiet", *SMALL, "--recipe", "distill=", "--recipe", "ct=--objective ct",
                   "--out", str(out)])
    assert status == 0
    assert "| distill |" in capsys.readouterr().out
    report = json.loads((out / "cost.json").read_text())
    assert report["reference"] == "distill" and report["document_tokens"] == 200
    distill, ct = report["recipes"]
    # the distillation recipe runs a teacher; the paper's objective has none and trains the segments
    assert distill["teacher"]["tokens"] > 0 and distill["teacher"]["items"] > 0
    assert distill["settings"]["objective"] == "distill" and distill["student"]["prefix_tokens"] > 0
    assert ct["teacher"]["tokens"] == 0 and ct["teacher"]["items"] == 0
    assert ct["settings"]["objective"] == "ct" and ct["student"]["tokens"] > 0
    assert ct["settings"]["segment_length"] == 32  # the command's flags hold for every recipe
    assert distill["speedup"] == 1.0
    assert ct["speedup"] == pytest.approx(distill["seconds"] / ct["seconds"], rel=0.02)
    for row in report["recipes"]:
        assert row["seconds"] == pytest.approx(row["teacher"]["seconds"] + row["student"]["seconds"], abs=0.02)
        assert row["trained_tokens_per_document_token"] == pytest.approx(row["student"]["tokens"] / 200, abs=0.01)
        assert 0 < row["student"]["ceiling_fraction"]
    md = (out / "cost.md").read_text()
    assert "| ct |" in md and "`--objective ct`" in md
    assert (out / "cost.png").stat().st_size > 0


def test_a_recipe_that_changes_only_the_student_reuses_the_teacher(tiny_model_dir, haystack_dir, tmp_path):
    out = tmp_path / "cost"
    assert main(["cost", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", "200",
                 "--threads", "1", "--quiet", *SMALL, "--recipe", "two-views=",
                 "--recipe", "one-view=--distill-views lift+icl", "--out", str(out)]) == 0
    report = json.loads((out / "cost.json").read_text())
    two, one = report["recipes"]
    assert "shared_with" not in two["teacher"] and one["teacher"]["shared_with"] == "two-views"
    assert one["teacher"]["seconds"] == two["teacher"]["seconds"] and one["teacher"]["tokens"] > 0
    assert one["student"]["items"] * 2 == two["student"]["items"]  # one view: half the samples
    assert one["seconds"] == pytest.approx(one["teacher"]["seconds"] + one["student"]["seconds"], abs=0.02)
    assert "(as `two-views`)" in (out / "cost.md").read_text()


def test_the_facts_document_is_the_facts_benchmarks(tiny_model_dir, tiny_tokenizer, haystack_dir, tmp_path):
    from liftlm.bench.common import read_haystack
    from liftlm.eval.facts import make_facts_document

    out = tmp_path / "cost"
    assert main(["cost", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", "300",
                 "--facts", "2", "--data-seed", "1", "--threads", "1", "--quiet", *SMALL, "--objective", "ct",
                 "--out", str(out)]) == 0
    report = json.loads((out / "cost.json").read_text())
    doc = make_facts_document(read_haystack(haystack_dir), tiny_tokenizer, 300, 2, seed=1)
    assert report["document"] == "facts document (2 facts, data seed 1)"
    assert report["document_tokens"] == len(tiny_tokenizer.encode(doc.text, add_special_tokens=False))
    assert [r["recipe"] for r in report["recipes"]] == ["default"]


def test_forward_tokens_counts_every_row(tiny_loaded):
    model = tiny_loaded.model
    counter = ForwardTokens(model)
    with torch.no_grad():
        model(input_ids=torch.ones(3, 5, dtype=torch.long))
        model(torch.ones(1, 4, dtype=torch.long))
    counter.close()
    model(input_ids=torch.ones(1, 2, dtype=torch.long))  # after close: not counted
    assert counter.count == 19


def test_recipe_flags_are_read_as_internalize_reads_them():
    base = LiftConfig(epochs=1)
    r = parse_recipe("one-view=--distill-views lift+icl --learning-rate 3e-4", base)
    assert r.name == "one-view" and r.config.distill_views == "lift+icl" and r.config.learning_rate == 3e-4
    assert r.config.epochs == 1
    assert parse_recipe("same=", base).config == base
    with pytest.raises(LiftError, match="NAME=FLAGS"):
        parse_recipe("--epochs 2", base)
    with pytest.raises(LiftError, match="not a LIFT setting: --bogus"):
        parse_recipe("x=--bogus 1", base)
    with pytest.raises(LiftError, match="--recipe x"):
        parse_recipe("x=--epochs two", base)


def test_recipe_names_must_differ(tiny_model_dir, haystack_dir, capsys):
    status = main(["cost", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", "100",
                   "--quiet", "--recipe", "a=", "--recipe", "a=--epochs 2"])
    assert status == 2 and "names must differ" in capsys.readouterr().err
