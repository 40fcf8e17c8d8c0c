"""The cost benchmark on the tiny model: teacher and student timed apart, per recipe, against the first recipe."""
from __future__ import annotations

import json

import pytest
import torch

from liftlm.bench.cli import main
from liftlm.bench.cost import ForwardTokens, parse_recipe
from liftlm.bench.cost import measure as REAL_MEASURE
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
        assert row["student"]["peak_memory_gib"] > 0  # measured (liftlm.memory): the model is resident
    assert distill["teacher"]["peak_memory_gib"] > 0 and "peak_memory_gib" not in ct["teacher"]  # no teacher ran
    md = (out / "cost.md").read_text()
    assert "peak GiB (teacher / student)" in md and " / – |" not in md.split("| distill |")[1].split("\n")[0]
    assert "| ct |" in md and "`--objective ct`" in md
    assert (out / "cost.png").stat().st_size > 0


def _cost_rows(model_dir, haystack_dir, out, *recipes: str) -> list[dict]:
    """The rows of a cost run of ``recipes`` on the tiny model's 200-token document (written to ``out``)."""
    assert main(["cost", "--model", str(model_dir), "--haystack", str(haystack_dir), "--tokens", "200", "--threads",
                 "1", "--quiet", *SMALL, *(x for r in recipes for x in ("--recipe", r)), "--out", str(out)]) == 0
    return json.loads((out / "cost.json").read_text())["recipes"]


def test_a_recipe_that_changes_only_the_student_reuses_the_teacher(tiny_model_dir, haystack_dir, tmp_path):
    out = tmp_path / "cost"
    two, one = _cost_rows(tiny_model_dir, haystack_dir, out, "two-views=", "one-view=--distill-views lift+icl")
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


def test_a_list_of_lengths_measures_the_cost_curve(tiny_model_dir, haystack_dir, tmp_path, capsys):
    out = tmp_path / "curve"
    assert main(["cost", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", "200,100",
                 "--threads", "1", *SMALL, "--recipe", "one-view=--distill-views lift+icl", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "[1/2] 100 tokens, recipe one-view" in captured.err and "[2/2] 200 tokens" in captured.err
    report = json.loads((out / "cost.json").read_text())
    assert report["lengths"] == [100, 200] and report["document_tokens"] == 200
    short, long = report["recipes"]  # a row per (length, recipe), the shorter first
    assert (short["document_tokens"], long["document_tokens"]) == (100, 200)
    assert short["speedup"] == long["speedup"] == 1.0  # each against the reference at its own length
    curve = report["curve"]
    assert curve["target_ratio"] == 1.15 and curve["extrapolate_tokens"] == 100_000
    (c,) = curve["recipes"]
    assert c["recipe"] == "one-view" and [p["document_tokens"] for p in c["points"]] == [100, 200]
    for point, row in zip(c["points"], (short, long)):
        assert point["total_seconds"] == row["seconds"]
        assert point["total_s_per_token"] == pytest.approx(row["seconds"] / row["document_tokens"], abs=1e-6)
        assert point["teacher_s_per_token"] == pytest.approx(row["teacher"]["seconds"] / row["document_tokens"],
                                                             abs=1e-6)
    for point, row in zip(c["points"], (short, long)):  # the document's fact-bearing sentences, per 1k tokens
        assert row["fact_sentences"] >= 0
        assert point["fact_sentences_per_1k"] == pytest.approx(1000 * row["fact_sentences"] / row["document_tokens"],
                                                               abs=0.01)
    ratio = (long["seconds"] / 200) / (short["seconds"] / 100)
    assert c["ratio"] == pytest.approx(ratio, abs=1e-3) and c["target_met"] == (c["ratio"] <= 1.15)
    slope = (long["seconds"] - short["seconds"]) / 100  # two points: the line goes through both
    intercept = short["seconds"] - slope * 100
    assert c["fit"]["slope_s_per_1k_tokens"] == pytest.approx(slope * 1000, abs=1e-3)
    assert c["fit"]["intercept_s"] == pytest.approx(intercept, abs=1e-2) and c["fit"]["r2"] == 1.0
    assert c["extrapolated_s"] == pytest.approx(slope * 100_000 + intercept, abs=0.1)
    assert c["extrapolated_h"] == pytest.approx(c["extrapolated_s"] / 3600, abs=0.01)
    md = (out / "cost.md").read_text()
    assert "## Cost curve" in md and "| one-view | 100 |" in md and "| one-view | 200 |" in md
    assert f"{c['extrapolated_s']:,} s" in md and ("target is met" in md or "target is missed" in md)
    if c["fact_sentence_ratio"] is not None:
        assert f"= {c['fact_sentence_ratio']}×." in md
    assert (out / "cost.png").stat().st_size > 0 and (out / "cost_curve.png").stat().st_size > 0


class Stopped(Exception):
    """The run stopped from outside (as by Ctrl-C or a machine going away)."""


def _interrupt_measure(monkeypatch, after: int) -> list:
    """Let ``after`` rows of a cost run be measured, then stop it; returns the calls made."""
    from liftlm.bench import cost

    calls = []

    def measure(*args, **kwargs):
        if len(calls) == after:
            raise Stopped
        calls.append(args[1].name)
        return REAL_MEASURE(*args, **kwargs)

    monkeypatch.setattr(cost, "measure", measure)
    return calls


def test_an_interrupted_cost_run_resumes_from_its_finished_rows(tiny_model_dir, haystack_dir, tmp_path, capsys,
                                                                 monkeypatch):
    out = tmp_path / "curve"
    command = ["cost", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", "100,200",
               "--threads", "1", *SMALL, "--recipe", "two-views=", "--recipe", "one-view=--distill-views lift+icl",
               "--out", str(out)]
    calls = _interrupt_measure(monkeypatch, after=2)
    with pytest.raises(Stopped):
        main(command)
    assert calls == ["two-views", "one-view"] and not (out / "cost.json").exists()
    kept = [json.loads(line) for line in (out / ".cost-work" / "rows.jsonl").read_text().splitlines()]
    assert [(r["recipe"], r["document_tokens"]) for r in kept] == [("two-views", 100), ("one-view", 100)]
    # the second length's teacher was cut short: its record to resume from is dropped, so it is timed whole
    (out / ".cost-work" / "items" / "teacher-batch-auto" / "cut.partial.jsonl").write_text("{}\n")

    calls = _interrupt_measure(monkeypatch, after=1)  # the 200-token teacher's row, then stopped again
    with pytest.raises(Stopped):
        main(command)
    assert calls == ["two-views"] and not list((out / ".cost-work").rglob("*.partial.jsonl"))

    capsys.readouterr()
    calls = _interrupt_measure(monkeypatch, after=99)
    assert main(command) == 0
    err = capsys.readouterr().err
    assert "3 rows measured before are kept" in err and err.count("measured before (") == 3
    assert calls == ["one-view"]  # only the last row is measured now, on the kept teacher's items
    report = json.loads((out / "cost.json").read_text())
    assert report["rows_kept_from_an_interrupted_run"] == 3 and report["lengths"] == [100, 200]
    rows = report["recipes"]
    for before, row in zip(kept, rows[:2]):  # kept as measured, with when and at what probe
        assert row["seconds"] == before["seconds"] and row["measured_at"] == before["measured_at"]
        assert row["probe_gflops"] > 0 and "key" not in row and "kept" not in row
    assert rows[1]["teacher"]["shared_with"] == rows[3]["teacher"]["shared_with"] == "two-views"
    assert rows[3]["teacher"]["seconds"] == rows[2]["teacher"]["seconds"] > 0
    assert "interrupted and resumed: 3 of its rows were kept" in (out / "cost.md").read_text()
    assert not (out / ".cost-work").exists()  # the rows are in the report now

    calls = _interrupt_measure(monkeypatch, after=99)  # a finished run, run again, measures afresh
    assert main(command) == 0 and len(calls) == 4
    assert "rows_kept_from_an_interrupted_run" not in json.loads((out / "cost.json").read_text())


def test_a_row_stopped_in_its_student_times_its_teacher_again(tiny_model_dir, haystack_dir, tmp_path, monkeypatch):
    """The teacher finished and cached its items, then the run stopped in the student: the rerun must not find
    those items and charge the row a teacher of no time."""
    import liftlm.train

    out = tmp_path / "cost"
    command = ["cost", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", "100",
               "--threads", "1", "--quiet", *SMALL, "--out", str(out)]
    real = liftlm.train.train_on_documents

    def stopped(*args, **kwargs):
        raise Stopped

    monkeypatch.setattr(liftlm.train, "train_on_documents", stopped)
    with pytest.raises(Stopped):
        main(command)
    assert list((out / ".cost-work" / "items").rglob("*.jsonl"))  # the teacher's items were cached
    monkeypatch.setattr(liftlm.train, "train_on_documents", real)
    assert main(command) == 0
    (row,) = json.loads((out / "cost.json").read_text())["recipes"]
    assert row["teacher"]["tokens"] > 0 and row["teacher_report"].get("used") != "cache"


def test_a_kept_row_whose_items_are_gone_lets_the_next_recipe_run_its_teacher(tiny_model_dir, haystack_dir,
                                                                               tmp_path, monkeypatch):
    out = tmp_path / "cost"
    command = ["cost", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", "100",
               "--threads", "1", "--quiet", *SMALL, "--recipe", "two-views=",
               "--recipe", "one-view=--distill-views lift+icl", "--out", str(out)]
    _interrupt_measure(monkeypatch, after=1)
    with pytest.raises(Stopped):
        main(command)
    for f in (out / ".cost-work" / "items").rglob("*.jsonl"):
        f.unlink()
    calls = _interrupt_measure(monkeypatch, after=99)
    assert main(command) == 0 and calls == ["one-view"]
    two, one = json.loads((out / "cost.json").read_text())["recipes"]
    assert "shared_with" not in one["teacher"] and one["teacher"]["tokens"] > 0


def test_the_line_fit_is_least_squares():
    from liftlm.bench.cost_curve import linear_fit

    slope, intercept, r2 = linear_fit([1000, 2000, 4000], [12.0, 21.0, 41.0])
    assert slope == pytest.approx(0.0097143, rel=1e-4) and intercept == pytest.approx(2.0, rel=1e-6)
    assert r2 == pytest.approx(0.99935, abs=1e-5)


@pytest.mark.parametrize("tokens", ["2k,lots", ",", "2k,0"])
def test_a_bad_list_of_lengths_is_one_clear_error(tiny_model_dir, haystack_dir, tokens, capsys):
    status = main(["cost", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", tokens,
                   "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("liftlm: error: --tokens") == 1 and "Traceback" not in err


def test_one_document_file_has_one_length(tiny_model_dir, tmp_path, capsys):
    doc = tmp_path / "doc.txt"
    doc.write_text("A short document.")
    assert main(["cost", "--model", str(tiny_model_dir), "--document", str(doc), "--tokens", "1k,2k",
                 "--quiet"]) == 2
    assert "--document: one document has one length" in capsys.readouterr().err


def _items_file(path, spans):
    """A distill.jsonl of one made-up item per chunk (a teacher's cache file has this form)."""
    from liftlm.distill.cache import write_items
    from liftlm.distill.prompts import DistillItem

    write_items(path, [DistillItem("about", f"What does part {i} say?", span, [5, 6, 7], [[5, 9], [6, 9], [7, 9]],
                                   [[-0.1, -2.5]] * 3) for i, span in enumerate(spans)])
    return path


def test_items_from_a_file_time_the_student_alone(tiny_model_dir, haystack_dir, tmp_path, capsys):
    from liftlm.segment import segment_spans

    spans = segment_spans(200, 32, LiftConfig(segment_length=32).effective_stride)
    items = _items_file(tmp_path / "distill.jsonl", spans)
    out = tmp_path / "cost"
    assert main(["cost", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", "200",
                 "--threads", "1", "--quiet", *SMALL, "--items", str(items), "--recipe", "one-epoch=",
                 "--recipe", "two-epochs=--epochs 2", "--out", str(out)]) == 0
    report = json.loads((out / "cost.json").read_text())
    assert report["items_file"] == str(items)
    one, two = report["recipes"]
    for row in (one, two):  # no teacher ran: nothing timed or counted for it, and the total is the student's
        assert row["teacher"]["given"] == str(items) and "shared_with" not in row["teacher"]
        assert row["teacher"]["seconds"] == 0 and row["teacher"]["tokens"] == 0
        assert row["teacher_report"] == {"items": len(spans), "used": "file", "file": str(items)}
        assert row["seconds"] == row["student"]["seconds"] > 0
    assert one["student"]["items"] == 2 * len(spans)  # both views of every item of the file
    assert two["student"]["tokens"] == 2 * one["student"]["tokens"]
    assert two["speedup"] == pytest.approx(one["seconds"] / two["seconds"], rel=0.02)
    md = (out / "cost.md").read_text()
    assert "| one-epoch | 0.0 (items given) |" in md and "(`--items`): no teacher ran" in md


@pytest.mark.parametrize("case, message", [
    ("stray", "items: 1 are about chunks"),
    ("missing", "--items: no such file"),
    ("empty", "holds no items"),
    ("not-items", "is not a file of distillation items"),
    ("lengths", "--items: a teacher's items are about one document"),
    ("ct", "trains the segments (--objective ct), not items"),
])
def test_a_bad_items_file_is_one_clear_error(tiny_model_dir, haystack_dir, tmp_path, capsys, case, message):
    from liftlm.segment import segment_spans

    path = tmp_path / "distill.jsonl"
    spans = segment_spans(200, 32, LiftConfig(segment_length=32).effective_stride)
    if case == "stray":  # a chunk this document does not have: another document's items
        _items_file(path, spans + [(0, 999)])
    elif case == "empty":
        path.write_text("")
    elif case == "not-items":
        path.write_text('{"kind": "about"}\n')
    elif case != "missing":
        _items_file(path, spans)
    tokens = "100,200" if case == "lengths" else "200"
    recipe = "a=--objective ct" if case == "ct" else "a="
    status = main(["cost", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", tokens,
                   "--quiet", *SMALL, "--items", str(path), "--recipe", recipe])
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("liftlm: error:") == 1 and "Traceback" not in err


def test_random_qwen_shapes_match_the_real_model():
    from liftlm.bench.common import check_random_size, estimate_params, random_shapes

    shapes = random_shapes("qwen2.5-1.5b")
    # Qwen2.5-1.5B: 1.54B parameters, of which 1.31B outside the (tied) embeddings
    assert estimate_params(shapes) == pytest.approx(1.5436e9, rel=1e-3)
    with pytest.raises(LiftError, match="meant for a GPU"):
        check_random_size("qwen2.5-1.5b", "cpu", force=False)


def test_a_wider_teacher_runs_afresh_and_counts_its_calls(tiny_model_dir, haystack_dir, tmp_path):
    """Recipes that differ in --teacher-batch each run their teacher (the same items, other calls), each with its
    number of forward calls: what a GPU's teacher costs."""
    out = tmp_path / "cost"
    cpu, gpu = _cost_rows(tiny_model_dir, haystack_dir, out, "cpu-shape=", "gpu-shape=--teacher-batch 128")
    assert "shared_with" not in gpu["teacher"]
    assert cpu["teacher"]["shape"] == {"width": 32, "blocks": 1, "prefill": 1}
    assert gpu["teacher"]["shape"] == {"width": 128, "blocks": 2, "prefill": 16}
    assert cpu["teacher"]["items"] == gpu["teacher"]["items"] and gpu["student"]["items"] == cpu["student"]["items"]
    assert 0 < gpu["teacher"]["calls"] < cpu["teacher"]["calls"]
    assert f"| {cpu['teacher']['calls']} |" in (out / "cost.md").read_text()


def test_a_saved_teacher_is_replayed_call_for_call(tiny_model_dir, haystack_dir, tmp_path):
    """--save-teacher leaves the teacher's items and trace; --replay-teacher runs exactly its calls again (the same
    forward calls and tokens in the same shape: what random weights of a model's shapes time on a GPU its weights
    cannot reach), in each recipe's shape, and trains the student on the saved items."""
    saved, out = tmp_path / "teacher", tmp_path / "cost"
    common = ["cost", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", "200",
              "--threads", "1", "--quiet", *SMALL]
    assert main([*common, "--save-teacher", str(saved), "--out", str(tmp_path / "made")]) == 0
    made = json.loads((tmp_path / "made" / "cost.json").read_text())["recipes"][0]
    trace = json.loads((saved / "trace.json").read_text())
    assert trace["document_tokens"] == 200 and trace["answer_tokens"] == 6 and trace["blocks"]
    asks = [r for block in trace["blocks"] for key in ("writes", "asks") for r in block[key]]
    assert len(asks) == made["teacher"]["items"]  # every prompt it answered, kept or not
    assert all(1 <= r[-1] <= 6 for r in asks)
    assert main([*common, "--replay-teacher", str(saved), "--recipe", "cpu-shape=",
                 "--recipe", "wide=--teacher-batch 128", "--out", str(out)]) == 0
    report = json.loads((out / "cost.json").read_text())
    assert report["replayed_teacher"] == str(saved)
    cpu, wide = report["recipes"]
    assert cpu["teacher"]["calls"] == made["teacher"]["calls"] and cpu["teacher"]["tokens"] == made["teacher"]["tokens"]
    assert cpu["teacher"]["items"] == len(asks) and cpu["teacher"]["replayed"] == str(saved)
    assert wide["teacher"]["shape"]["width"] == 128 and wide["teacher"]["calls"] < cpu["teacher"]["calls"]
    assert cpu["student"]["tokens"] == made["student"]["tokens"]  # the saved items, trained as before
    assert "(replayed)" in (out / "cost.md").read_text()


@pytest.mark.parametrize("case, message", [
    ("no-trace", "no trace.json in"),
    ("other-length", "the trace is of a 200-token document"),
    ("both", "--items and --replay-teacher: give one of them"),
    ("ct-first", "--save-teacher: the first recipe (a) has no teacher"),
])
def test_a_bad_replay_is_one_clear_error(tiny_model_dir, haystack_dir, tmp_path, capsys, case, message):
    saved = tmp_path / "teacher"
    common = ["cost", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--threads", "1", "--quiet",
              *SMALL]
    if case == "ct-first":
        assert main([*common, "--tokens", "200", "--save-teacher", str(saved), "--recipe", "a=--objective ct"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("liftlm: error:") == 1 and not saved.exists()
        return
    assert main([*common, "--tokens", "200", "--save-teacher", str(saved)]) == 0
    capsys.readouterr()
    if case == "no-trace":
        (saved / "trace.json").unlink()
    extra = ["--items", str(saved / "items.jsonl")] if case == "both" else []
    tokens = "150" if case == "other-length" else "200"
    assert main([*common, "--tokens", tokens, "--replay-teacher", str(saved), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("liftlm: error:") == 1 and "Traceback" not in err


def test_a_rows_key_leaves_out_the_answer_time_settings():
    """A kept row stays kept when only an answer-time setting (--adapter-scale) differs, or did not exist when it
    was measured: no internalization depends on one. Any other setting makes it another measurement."""
    from types import SimpleNamespace

    from liftlm.bench.cost_work import row_key
    from liftlm.config import ANSWER_FIELDS

    loaded = SimpleNamespace(model_id="m", device="cpu")

    def key(**kw):
        return row_key(loaded, SimpleNamespace(name="r", config=LiftConfig(**kw)), "text", None)

    assert "adapter_scale" in ANSWER_FIELDS
    assert key() == key(adapter_scale=0.5)
    assert key() != key(epochs=1) and key() != key(teacher_batch=4)
