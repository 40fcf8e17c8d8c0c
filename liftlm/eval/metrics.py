"""Answer scoring for the evaluation harness; every score is a float in [0, 1].

Each metric has the signature ``metric(prediction, answers, *, all_classes=None) -> float`` where
``answers`` is one gold string or a list of them. The LongBench-style metrics (``qa_f1``, ``rouge``,
``retrieval``, ``classification``) take the maximum over the gold answers; the needle metrics (``niah``,
``ruler``) treat the list as things that must all appear and return the fraction found; ``facts`` treats it
as accepted variants of one answer (1 when any appears as whole words).
"""

from __future__ import annotations

import difflib
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

Answers = str | Sequence[str]
Metric = Callable[..., float]

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _golds(answers: Answers) -> list[str]:
    """Turn one gold string or a sequence of them into a non-empty list of strings."""
    golds = [answers] if isinstance(answers, str) else list(answers)
    if not golds:
        raise ValueError("no gold answers given: pass at least one reference string")
    bad = [g for g in golds if not isinstance(g, str)]
    if bad:
        raise ValueError(f"gold answers must be strings, got {type(bad[0]).__name__}: {bad[0]!r}")
    return golds


def normalize_answer(text: str) -> str:
    """LongBench/SQuAD normalisation: lowercase, drop punctuation, drop articles a/an/the, squeeze spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    """Token-level F1 between two normalised strings (bag of words); 0 when nothing overlaps."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def qa_f1_score(prediction: str, answers: Answers, **_: object) -> float:
    """LongBench QA F1: the best :func:`token_f1` over the gold answers."""
    return max(token_f1(prediction, gold) for gold in _golds(answers))


@lru_cache(maxsize=4)
def _rouge_scorer(use_stemmer: bool):
    try:
        from rouge_score import rouge_scorer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'rouge' metric needs the rouge-score package: pip install rouge-score"
        ) from err
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def rouge_l(prediction: str, gold: str, use_stemmer: bool = False) -> float:
    """ROUGE-L F-measure (longest common subsequence) between two texts, via the rouge-score package.

    rouge-score lowercases and keeps only ASCII letters and digits as tokens; an empty side scores 0.
    No stemming by default, as LongBench's scorer does not stem.
    """
    return float(_rouge_scorer(use_stemmer).score(gold, prediction)["rougeL"].fmeasure)


def rouge_score(prediction: str, answers: Answers, **_: object) -> float:
    """The best ROUGE-L F-measure over the gold answers."""
    return max(rouge_l(prediction, gold) for gold in _golds(answers))


_PARAGRAPH_ID = re.compile(r"Paragraph\s*(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")


def _paragraph_id(gold: str) -> str:
    match = _PARAGRAPH_ID.search(gold)
    if match:
        return match.group(1)
    if gold.strip().isdigit():
        return gold.strip()
    raise ValueError(
        f"retrieval gold answer {gold!r} names no paragraph: expected e.g. 'Paragraph 12' or '12'"
    )


def retrieval_score(prediction: str, answers: Answers, **_: object) -> float:
    """LongBench passage retrieval: share of the numbers in the prediction that equal the gold paragraph id.

    Gold answers look like ``"Paragraph 12"``. A prediction with no number at all scores 0, so
    ``"Paragraph 12"`` scores 1 and ``"Paragraph 3 or Paragraph 12"`` scores 0.5.
    """
    numbers = _NUMBER.findall(prediction)
    if not numbers:
        _golds(answers)  # still validate the golds
        return 0.0
    best = 0.0
    for gold in _golds(answers):
        gold_id = _paragraph_id(gold)
        best = max(best, sum(1 for n in numbers if n == gold_id) / len(numbers))
    return best


def classification_score(
    prediction: str, answers: Answers, *, all_classes: Sequence[str] | None = None, **_: object
) -> float:
    """LongBench classification: 1/m if the gold class is among the m class names found in the prediction.

    Class names that occur in the prediction are collected, except those that are a strict substring of the
    gold class (so gold "New York City" is not penalised for also containing "New York").
    """
    if not all_classes:
        raise ValueError("the 'classification' metric needs all_classes, the list of class names")
    best = 0.0
    for gold in _golds(answers):
        found = [c for c in all_classes if c in prediction and not (c in gold and c != gold)]
        if gold in found:
            best = max(best, 1.0 / len(found))
    return best


def _fraction_found(prediction: str, needles: Answers) -> float:
    wanted = _golds(needles)
    low = prediction.lower()
    return sum(1 for w in wanted if w.lower() in low) / len(wanted)


def niah_keyword_score(prediction: str, answers: Answers, **_: object) -> float:
    """Needle-in-a-haystack: fraction of the keywords found (case-insensitive substring) in the answer."""
    return _fraction_found(prediction, answers)


def ruler_score(prediction: str, answers: Answers, **_: object) -> float:
    """RULER string-match-all: fraction of the expected values found (case-insensitive) in the answer."""
    return _fraction_found(prediction, answers)


def facts_metric(prediction: str, answers: Answers, **_: object) -> float:
    """Facts benchmark: 1 when the answer contains any accepted variant as whole words (liftlm.eval.facts)."""
    from .facts import facts_score

    return facts_score(prediction, answers)


METRICS: dict[str, Metric] = {
    "qa_f1": qa_f1_score,
    "rouge": rouge_score,
    "retrieval": retrieval_score,
    "classification": classification_score,
    "niah": niah_keyword_score,
    "ruler": ruler_score,
    "facts": facts_metric,
}


def get_metric(name: str) -> Metric:
    """Look a metric up by name; an unknown name raises ValueError with suggestions."""
    try:
        return METRICS[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(str(name), METRICS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown metric {name!r}; {hint}available: {', '.join(sorted(METRICS))}")


def score(name: str, prediction: str, answers: Answers, *, all_classes: Sequence[str] | None = None) -> float:
    """Score one prediction with the metric called ``name``."""
    return get_metric(name)(prediction, answers, all_classes=all_classes)
