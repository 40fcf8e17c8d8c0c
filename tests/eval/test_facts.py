"""The facts benchmark: seeded generation, facts placed once at their depths, paraphrased questions that share
little wording with their facts, answer variants, the control list; `liftlm eval --benchmark facts` and the
oracle method on the tiny model; flags refused before anything loads."""
from __future__ import annotations

import argparse
import json
import random
import re

import pytest

from liftlm.documents import token_offsets
from liftlm.errors import LiftError
from liftlm.eval import runner
from liftlm.eval.cli import register, run
from liftlm.eval.facts import (
    CONTROLS,
    TEMPLATES,
    _Draw,
    content_words,
    default_depths,
    facts_score,
    make_fact,
    make_facts_document,
    number_variants,
    number_words,
    word_overlap,
)
from liftlm.eval.metrics import score
from liftlm.eval.report import facts_summary

MAX_OVERLAP = 0.34  # at most a third of a question's content words occur in its fact (the entity's name)
MAX_MEAN_OVERLAP = 0.25


# ---------------------------------------------------------------- generation


def test_generation_is_seeded_and_deterministic(haystack, tiny_tokenizer):
    a = make_facts_document(haystack, tiny_tokenizer, 600, 6, seed=4, n_controls=3)
    b = make_facts_document(haystack, tiny_tokenizer, 600, 6, seed=4, n_controls=3)
    c = make_facts_document(haystack, tiny_tokenizer, 600, 6, seed=5, n_controls=3)
    assert a == b
    assert [e.__dict__ for e in a.to_examples()] == [e.__dict__ for e in b.to_examples()]
    assert a.text != c.text and [f.sentence for f in a.facts] != [f.sentence for f in c.facts]


@pytest.mark.parametrize("length, n_facts, depths", [(600, 6, None), (1000, 10, None), (500, 4, (0.0, 0.5, 1.0))])
def test_every_fact_lands_once_at_its_depth(haystack, tiny_tokenizer, length, n_facts, depths):
    doc = make_facts_document(haystack, tiny_tokenizer, length, n_facts, depths, seed=1)
    ids, offsets = token_offsets(tiny_tokenizer, doc.text)
    assert len(ids) == length == doc.length
    want = depths or default_depths(n_facts)
    fact_tokens = [len(token_offsets(tiny_tokenizer, " " + f.sentence + " ")[0]) for f in doc.facts]
    budget = length - sum(fact_tokens)
    assert len({f.kind for f in doc.facts}) == n_facts  # one template kind per fact
    for i, f in enumerate(doc.facts):
        assert doc.text.count(f.sentence) == 1
        assert doc.text[f.char : f.char + len(f.sentence)] == f.sentence
        assert f.depth == want[i % len(want)]
        # its first token sits where its depth says: the haystack tokens before it are depth × the haystack's
        # tokens, less at most one sentence (moved back to a sentence end), plus the facts placed before it
        before = sum(n for j, n in enumerate(fact_tokens) if doc.facts[j].char < f.char)
        target = int(f.depth * budget) + before
        assert target - 40 <= f.token <= target + 2, (f.depth, f.token, target)
        assert offsets[f.token][0] <= f.char <= offsets[f.token][1] + 1
    # the made-up entities never occur in the haystack, so the facts are the only place to learn them
    low = haystack.lower()
    for f in doc.facts:
        assert not any(a.lower() in low for a in f.answers if not a.isdigit())


def test_questions_share_few_content_words_with_their_facts(haystack):
    overlaps = []
    for seed in range(12):
        draw = _Draw(random.Random(seed), haystack.lower())
        for template in TEMPLATES:
            fact = make_fact(template, draw)
            assert fact.overlap == pytest.approx(word_overlap(fact.question, fact.sentence), abs=1e-4)
            assert fact.overlap <= MAX_OVERLAP, (fact.sentence, fact.question)
            overlaps.append(fact.overlap)
            # what is shared is the name the question is about, never the wording
            shared = content_words(fact.question) & content_words(fact.sentence)
            names = {w.lower() for w in re.findall(r"\b[A-Z][a-z]+\b", fact.sentence)}
            assert all(any(n.startswith(s) for n in names) for s in shared), (shared, fact.sentence)
            assert len(content_words(fact.question)) >= 3
            # the key answer is in the fact and not in the question
            assert fact.answers[0] in fact.sentence
            assert facts_score(fact.question, fact.answers) == 0.0
            assert facts_score(fact.sentence, fact.answers) == 1.0
    assert sum(overlaps) / len(overlaps) <= MAX_MEAN_OVERLAP


def test_word_overlap_counts_shared_stems():
    assert word_overlap("Who painted the ferry?", "The ferry was painted ochre.") == 1.0
    assert word_overlap("What colour did the boat get?", "The ferry was painted ochre.") == 0.0
    shared = word_overlap("Who owns the mills of Varnholm?", "The mill at Varnholm belongs to Ilsa.")
    assert shared == pytest.approx(2 / 3)


def test_templates_are_well_formed(haystack):
    assert len(TEMPLATES) >= 30 and len({t.kind for t in TEMPLATES}) == len(TEMPLATES)
    assert len({t.answer for t in TEMPLATES}) >= 12  # names, places, numbers, years, colours, materials, …
    draw = _Draw(random.Random(0), haystack.lower())
    for template in TEMPLATES:
        fact = make_fact(template, draw)
        assert "{" not in fact.sentence + fact.question and fact.question.endswith("?")
        assert fact.answers and all(a.strip() for a in fact.answers)


def test_bad_counts_are_refused(haystack, tiny_tokenizer):
    with pytest.raises(ValueError, match="number of facts"):
        make_facts_document(haystack, tiny_tokenizer, 500, 0)
    with pytest.raises(ValueError, match="number of facts"):
        make_facts_document(haystack, tiny_tokenizer, 500, len(TEMPLATES) + 1)
    with pytest.raises(ValueError, match="control questions"):
        make_facts_document(haystack, tiny_tokenizer, 500, 3, n_controls=len(CONTROLS) + 1)


def test_examples_carry_kind_depth_length_and_template(haystack, tiny_tokenizer):
    doc = make_facts_document(haystack, tiny_tokenizer, 500, 3, seed=2, n_controls=2)
    examples = doc.to_examples()
    assert [e.metadata["kind"] for e in examples] == ["fact"] * 3 + ["control"] * 2
    assert len({e.id for e in examples}) == 5 and {e.document for e in examples} == {doc.text}
    for e, f in zip(examples, doc.facts):
        assert e.metadata["template"] == f.kind and e.metadata["depth"] == f.depth and e.metadata["length"] == 500
        assert e.evidence == [f.sentence] and e.answers == list(f.answers) and e.task == "facts"
    assert all(e.metadata["template"] == "control" and (e.question, tuple(e.answers)) in CONTROLS
               for e in examples[3:])


# ---------------------------------------------------------------- scoring


def test_number_words():
    assert [number_words(n) for n in (0, 8, 13, 40, 42, 100, 412, 1931, 20001)] == [
        "zero", "eight", "thirteen", "forty", "forty-two", "one hundred", "four hundred and twelve",
        "one thousand nine hundred and thirty-one", "twenty thousand and one"]
    assert number_variants(412) == ["412", "four hundred and twelve", "four hundred twelve"]
    with pytest.raises(ValueError):
        number_words(-1)


@pytest.mark.parametrize("prediction, answers, expected", [
    ("It was Ilsa Brandt.", ["Ilsa Brandt", "Brandt"], 1.0),
    ("BRANDT built it", ["Ilsa Brandt", "Brandt"], 1.0),
    ("Brandtson built it", ["Ilsa Brandt", "Brandt"], 0.0),
    ("Ilsa Keller", ["Ilsa Brandt", "Brandt"], 0.0),
    ("A spider has eight legs.", ["8", "eight"], 1.0),
    ("8 legs", ["8", "eight"], 1.0),
    ("eighteen", ["8", "eight"], 0.0),
    ("In 1984.", ["8", "eight"], 0.0),
    ("Forty two metres", number_variants(42), 1.0),
    ("forty-two", number_variants(42), 1.0),
    ("about 41 metres", number_variants(42), 0.0),
    ("1,200 people", number_variants(1200), 1.0),
    ("one thousand two hundred", number_variants(1200), 1.0),
    ("It is painted ochre", ["ochre"], 1.0),
    ("It is red", ["ochre"], 0.0),
    ("", ["Paris"], 0.0),
    ("paris, of course", ["Paris"], 1.0),
])
def test_scoring_accepts_variants_and_rejects_wrong_answers(prediction, answers, expected):
    assert facts_score(prediction, answers) == expected
    assert score("facts", prediction, answers) == expected


def test_scoring_needs_an_answer():
    with pytest.raises(ValueError):
        facts_score("Paris", [])
    with pytest.raises(ValueError):
        facts_score("Paris", [" "])


def test_control_list_is_well_formed():
    assert len(CONTROLS) >= 20
    assert len({q for q, _ in CONTROLS}) == len(CONTROLS)
    for question, answers in CONTROLS:
        assert question.endswith("?") and answers and all(a.strip() for a in answers)
        # a number is accepted as digits and as words
        digits = [a for a in answers if a.isdigit()]
        for d in digits:
            assert any(facts_score(w, answers) for w in number_variants(int(d))[1:])
        assert facts_score(" ".join(answers), answers) == 1.0
        assert facts_score("I do not know.", answers) == 0.0


# ---------------------------------------------------------------- the run, on the tiny model

SMALL = ["--objective", "ct", "--segment-length", "32", "--context-tokens", "32", "--epochs", "1", "--lora-rank", "4", "--quiet",
         "--window", "256", "--max-new-tokens", "6"]


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def evaluate(*argv) -> int:
    parser = argparse.ArgumentParser(prog="liftlm")
    register(parser.add_subparsers(dest="verb"))
    return run(parser.parse_args(["eval", *[str(a) for a in argv]]))


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture
def haystack_dir(tmp_path, haystack):
    d = tmp_path / "essays"
    d.mkdir()
    (d / "a.txt").write_text(haystack)
    return d


def test_facts_end_to_end_with_the_oracle(tmp_path, tiny_model_dir, haystack_dir, monkeypatch):
    prompts: list[tuple[str, int]] = []
    generate = runner.generate_answer

    def spy(lift, prompt, mode, max_new_tokens):
        prompts.append((mode, len(prompt)))
        return generate(lift, prompt, mode, max_new_tokens)

    monkeypatch.setattr(runner, "generate_answer", spy)
    out = tmp_path / "out"
    assert evaluate("--benchmark", "facts", "--data", haystack_dir, "--lengths", "400", "--facts", "4",
                    "--controls", "2", "--methods", "icl,oracle,lift+icl", "--model", tiny_model_dir,
                    "--store", tmp_path / "s", "--out", out, *SMALL) == 0
    recs = records(out)
    assert len(recs) == (4 + 2) * 3
    assert sorted(r["meta"]["kind"] for r in recs) == ["control"] * 6 + ["fact"] * 12
    assert {r["column"] for r in recs} == {"fact recall", "control retention"}
    assert all(r["metric"] == "facts" and r["meta"]["length"] == 400 for r in recs)
    assert all("depth" in r["meta"] and "template" in r["meta"] for r in recs if r["meta"]["kind"] == "fact")
    assert len({r["adapter"] for r in recs if r["method"] == "lift+icl"}) == 1  # one LIFT for the document
    assert not any("adapter" in r for r in recs if r["method"] != "lift+icl")
    # the oracle reads the whole 400-token document, past the 256-token window; icl is cut to the window
    assert all(n > 400 for mode, n in prompts if mode == "oracle")
    assert all(n <= 256 - 6 for mode, n in prompts if mode != "oracle")
    summary = (out / "summary.md").read_text()
    assert "| method | fact recall | control retention | recall vs oracle |" in summary
    assert "| oracle |" in summary and "## Fact recall by depth and length" in summary
    data = json.loads((out / "summary.json").read_text())
    assert set(data["facts"]["methods"]) == {"oracle", "icl", "lift+icl"}
    assert data["facts"]["methods"]["icl"]["facts"] == 4 and data["facts"]["methods"]["icl"]["controls"] == 2
    assert (out / "facts_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "summary.png").is_file()
    run_meta = json.loads((out / "run.json").read_text())
    assert run_meta["grid"]["facts"] == 4 and run_meta["identity"]["controls"] == 2
    # other --facts into the same --out: refused, naming the flag
    with pytest.raises(LiftError, match="differs in: --facts"):
        evaluate("--benchmark", "facts", "--data", haystack_dir, "--lengths", "400", "--facts", "3",
                 "--controls", "2", "--methods", "icl", "--model", tiny_model_dir, "--out", out, *SMALL)


def test_oracle_refuses_a_document_over_the_model_limit(tmp_path, tiny_model_dir, haystack_dir, monkeypatch):
    import liftlm.train

    def no_training(*a, **k):
        raise AssertionError("nothing may be trained before the prompts are checked")

    monkeypatch.setattr(liftlm.train, "train_on_documents", no_training)
    out = tmp_path / "out"
    # the tiny model's own limit is 1024 tokens: a 1100-token document cannot be read whole, whatever --window
    with pytest.raises(LiftError) as err:
        evaluate("--benchmark", "facts", "--data", haystack_dir, "--lengths", "1100", "--facts", "3",
                 "--methods", "lift+icl,oracle", "--model", tiny_model_dir, "--store", tmp_path / "s", "--out", out,
                 *SMALL)
    message = str(err.value)
    assert message.startswith("method oracle:") and "context limit of 1024" in message and "\n" not in message
    assert not (out / "predictions.jsonl").exists()


def test_oracle_works_for_other_benchmarks(tmp_path, tiny_model_dir, haystack_dir):
    out = tmp_path / "out"
    evaluate("--benchmark", "niah", "--data", haystack_dir, "--lengths", "300", "--depths", "0.5",
             "--methods", "icl,oracle", "--model", tiny_model_dir, "--out", out, *SMALL)
    recs = records(out)
    assert sorted(r["method"] for r in recs) == ["icl", "oracle"]
    assert "| oracle |" in (out / "summary.md").read_text()


# ---------------------------------------------------------------- the report


def _rec(method, kind, value):
    return {"method": method, "task": "facts", "score": value, "meta": {"kind": kind, "overlap": 0.2}}


def test_facts_summary_relates_recall_to_the_oracle():
    recs = [_rec("oracle", "fact", 1.0), _rec("oracle", "fact", 1.0), _rec("oracle", "fact", 0.0),
            _rec("oracle", "control", 1.0), _rec("lift+icl", "fact", 1.0), _rec("lift+icl", "fact", 0.0),
            _rec("lift+icl", "fact", 0.0), _rec("lift+icl", "control", 0.0), _rec("icl", "fact", 0.0),
            _rec("icl", "fact", 0.0), _rec("icl", "fact", 0.0)]
    s = facts_summary(recs)
    assert s["oracle_recall"] == pytest.approx(200 / 3)
    assert s["methods"]["lift+icl"]["recall"] == pytest.approx(100 / 3)
    assert s["methods"]["lift+icl"]["vs_oracle"] == pytest.approx(0.5)
    assert s["methods"]["lift+icl"]["retention"] == 0.0 and s["methods"]["oracle"]["retention"] == 100.0
    assert s["methods"]["icl"]["vs_oracle"] == 0.0 and s["methods"]["icl"]["retention"] is None
    assert s["methods"]["oracle"]["vs_oracle"] is None
    no_oracle = facts_summary([r for r in recs if r["method"] != "oracle"])
    assert no_oracle["oracle_recall"] is None and no_oracle["methods"]["lift+icl"]["vs_oracle"] is None
