"""Metrics, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

from liftlm.eval.metrics import (
    METRICS,
    classification_score,
    get_metric,
    niah_keyword_score,
    normalize_answer,
    qa_f1_score,
    retrieval_score,
    rouge_score,
    ruler_score,
    score,
    token_f1,
)


def test_normalize_answer():
    assert normalize_answer("The  Quick, brown-fox!  an Apple") == "quick brownfox apple"
    assert normalize_answer("  A  ") == ""
    assert normalize_answer("theatre anthem") == "theatre anthem"  # articles only as whole words


def test_qa_f1_hand_computed():
    # pred -> "cat sat on mat", gold -> "cat on mat": 3 common, P = 3/4, R = 1 -> F1 = 6/7
    assert math.isclose(qa_f1_score("The cat sat on the mat.", ["a cat on a mat"]), 6 / 7)
    # repeated tokens: "x x y" vs "x y y" -> common = 1 + 1 = 2, P = R = 2/3
    assert math.isclose(token_f1("x x y", "x y y"), 2 / 3)
    assert qa_f1_score("Paris", "paris.") == 1.0
    assert qa_f1_score("London", ["Paris"]) == 0.0
    assert qa_f1_score("", ["Paris"]) == 0.0
    assert qa_f1_score("the", ["the"]) == 0.0  # nothing left after normalisation


def test_qa_f1_takes_the_best_gold():
    # "cat" vs "dog" = 0, "cat" vs "cat sat" = P 1, R 1/2 -> 2/3
    assert math.isclose(qa_f1_score("the cat", ["dog", "cat sat"]), 2 / 3)


def test_rouge_l_hand_computed():
    # LCS("the cat sat", "the cat was sitting") = 2 -> P = 2/3, R = 1/2, F = 4/7
    assert math.isclose(rouge_score("the cat sat", ["the cat was sitting"]), 4 / 7, rel_tol=1e-6)
    assert math.isclose(rouge_score("The cat sat.", "the cat sat"), 1.0)
    assert rouge_score("", ["the cat"]) == 0.0
    assert math.isclose(rouge_score("the cat sat", ["dog", "the cat sat"]), 1.0)


def test_retrieval_score():
    assert retrieval_score("Paragraph 12", ["Paragraph 12"]) == 1.0
    assert retrieval_score("paragraph 12.", ["Paragraph 12"]) == 1.0
    assert retrieval_score("Paragraph 3 or Paragraph 12", ["Paragraph 12"]) == 0.5
    assert retrieval_score("Paragraph 112", ["Paragraph 12"]) == 0.0
    assert retrieval_score("I do not know", ["Paragraph 12"]) == 0.0
    assert retrieval_score("12", ["12"]) == 1.0
    with pytest.raises(ValueError, match="names no paragraph"):
        retrieval_score("12", ["twelve"])


def test_classification_score():
    classes = ["Sports", "Politics", "Science"]
    assert classification_score("This is about Sports.", ["Sports"], all_classes=classes) == 1.0
    assert classification_score("Sports or Politics", ["Sports"], all_classes=classes) == 0.5
    assert classification_score("Science", ["Sports"], all_classes=classes) == 0.0
    # a class that is part of the gold's name does not count against it
    cities = ["New York", "New York City", "Boston"]
    assert classification_score("New York City", "New York City", all_classes=cities) == 1.0
    assert classification_score("New York or Boston", "New York City", all_classes=cities) == 0.0
    with pytest.raises(ValueError, match="all_classes"):
        classification_score("Sports", ["Sports"])


def test_needle_scores():
    keywords = ["sandwich", "dolores park", "sunny"]
    assert math.isclose(niah_keyword_score("Eat a Sandwich in Dolores Park.", keywords), 2 / 3)
    assert niah_keyword_score("EAT A SANDWICH IN DOLORES PARK ON A SUNNY DAY", keywords) == 1.0
    assert niah_keyword_score("", keywords) == 0.0
    assert ruler_score("The number is 1234567.", ["1234567", "7654321"]) == 0.5
    assert ruler_score("7654321, 1234567", ["1234567", "7654321"]) == 1.0


def test_registry_and_errors():
    assert get_metric("qa_f1") is qa_f1_score
    assert score("niah", "sunny", ["sunny", "park"]) == 0.5
    with pytest.raises(ValueError, match=r"unknown metric 'rogue'; did you mean 'rouge'\? available: "):
        get_metric("rogue")
    with pytest.raises(ValueError, match="available: classification, facts, niah, qa_f1"):
        get_metric("zzz")
    with pytest.raises(ValueError, match="no gold answers"):
        qa_f1_score("x", [])


@pytest.mark.parametrize("name", sorted(METRICS))
def test_scores_are_floats_in_unit_interval(name):
    cases = [
        ("Paragraph 2, the cat sat", ["Paragraph 2"]),
        ("", ["Paragraph 7"]),
        ("Paragraph 7 Paragraph 7", ["Paragraph 7", "Paragraph 1"]),
    ]
    for prediction, answers in cases:
        value = score(name, prediction, answers, all_classes=["Paragraph 2", "Paragraph 7"])
        assert isinstance(value, float) and 0.0 <= value <= 1.0
