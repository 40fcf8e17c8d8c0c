import json

import pytest

from liftlm.errors import LiftError
from liftlm.synth import (
    QAPair,
    keyphrase_pairs,
    llm_pairs,
    parse_qa,
    read_qa,
    sentence_windows,
    split_sentences,
    statement_question,
    synthesize,
    verified,
    write_qa,
)

TEXT = ("The museum keeps a small iron key. It was found in 1988 under the floor of the Moot Hall. "
        "The key opens the strongbox of the regatta committee, kept in the bank on Quay Street. "
        "The committee will open the strongbox only in the year 2214. "
        "The password written on its lid is green lantern seven. Mr. Olwen, the keeper, wrote about it in 2001.")


def test_split_sentences_spans():
    spans = split_sentences(TEXT)
    sentences = [TEXT[a:b] for a, b in spans]
    assert len(sentences) == 6
    assert sentences[1] == "It was found in 1988 under the floor of the Moot Hall."
    assert sentences[-1].startswith("Mr. Olwen")  # no split after "Mr."


def test_overlong_spans_are_split_again():
    # a stray opening quote makes pysbd keep the rest as one sentence, as in LooGLE's Wikipedia text
    text = ("He signed the ''Manifiesto de la Alhambra'' of 1952, one of “the best texts\", by him. "
            + " ".join(f'It had {i} walls.Then it grew. The town "was big".' for i in range(8)))
    spans = split_sentences(text, max_words=20)
    pieces = [text[a:b] for a, b in spans]
    assert all(len(p.split()) <= 20 for p in pieces)
    assert "It had 7 walls." in pieces and "Then it grew." in pieces  # split at a missing space too
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")  # nothing lost, nothing repeated
    words = " ".join(["word"] * 50)  # no sentence end at all: cut every max_words words
    assert [b - a for a, b in split_sentences(words, max_words=20)] == [99, 99, 49]


def test_sentence_windows_spread_over_the_document():
    assert sentence_windows(10, 3, 4) == [(0, 3), (2, 5), (5, 8), (7, 10)]
    assert sentence_windows(10, 3, 1) == [(3, 6)]
    assert sentence_windows(2, 5, 3) == [(0, 2)]  # window larger than the document
    assert sentence_windows(0, 3, 3) == [] and sentence_windows(5, 3, 0) == []


@pytest.mark.parametrize("evidence,answer,kept", [
    ("It was found in 1988 under the floor of the Moot Hall.", "1988", True),
    ("it was  FOUND in 1988\nunder the floor", "1988", True),  # whitespace and case normalised
    ('"The password written on its lid is green lantern seven."', "green lantern seven", True),  # quotes
    ("It was found in 1989 under the floor", "1989", False),  # not in the window
    ("The key was found in 1988.", "1988", False),  # a paraphrase, not verbatim
    ("It was found in 1988", "   ", False),  # empty answer
    ("", "1988", False),  # no evidence
])
def test_evidence_verification(evidence, answer, kept):
    assert verified(QAPair("When was the key found?", answer, evidence, 0, len(TEXT), "llm"), TEXT) is kept


def test_parse_qa():
    reply = "Sure!\nQuestion: When was the key found?\nAnswer: In 1988.\nEvidence: It was found in 1988."
    assert parse_qa(reply) == ("When was the key found?", "In 1988.", "It was found in 1988.")
    assert parse_qa("Question: What?\nAnswer: yes") is None


def test_keyphrase_pairs_cover_every_sentence():
    pairs = keyphrase_pairs(TEXT, 1000, phrases_per_sentence=2)
    covered = {(p.start, p.end) for p in pairs}
    assert covered == set(split_sentences(TEXT))
    for p in pairs:
        assert p.answer == TEXT[p.start:p.end] and verified(p, TEXT)
        if p.source == "statement":
            assert p.question == statement_question(p.answer)
        else:
            assert p.question.startswith("What does the document say about ")
    assert [p.question for p in pairs if p.source == "statement"] == ["What is the password written on its lid?"]
    plain = keyphrase_pairs(TEXT, 1000, statements=False)
    assert all(p.source == "keyphrase" for p in plain)
    assert len({p.question for p in pairs}) == len(pairs)  # no duplicate questions
    few = keyphrase_pairs(TEXT, 3)
    assert len(few) == 3 and len({(p.start, p.end) for p in few}) == 3  # spread: one per sentence


@pytest.mark.parametrize("sentence,question", [
    ("The best thing to do in Lisbon is eat a pastry by the river.", "What is the best thing to do in Lisbon?"),
    ("Y Combinator is a startup accelerator.", "What is Y Combinator?"),
    ("The first version was mostly written in Lisp.", "What was the first version?"),
    ("Programming languages are just tools.", "What are Programming languages?"),
    ("It is a good idea.", None),  # pronoun subject: no topic
    ("There are many startups.", None),
    ("When I was young it was hard.", None),  # a clause, not a subject
    ("The museum keeps a key.", None),  # no copula
    ("Lisp is fun.", None),  # one-word subject: too vague to ask about
])
def test_statement_question(sentence, question):
    assert statement_question(sentence) == question


def test_llm_pairs_keep_only_verified_and_retry():
    calls = []

    def fake(prompt: str) -> str:
        calls.append(prompt)
        window = prompt.split("Passage:\n", 1)[1]
        if len(calls) % 2:  # every other reply invents its evidence
            return "Question: Who?\nAnswer: Nobody\nEvidence: This sentence is not in the passage."
        first = split_sentences(window)[0]
        return f"Question: What about {len(calls)}?\nAnswer: This.\nEvidence: {window[first[0]:first[1]]}"

    pairs, attempts = llm_pairs(TEXT, 2, fake, window_sentences=2, retries=2)
    assert len(pairs) == 2 and attempts == 4
    assert all(p.source == "llm" and verified(p, TEXT[p.start:p.end]) for p in pairs)


def test_auto_falls_back_to_keyphrase_when_the_generator_fails():
    pairs, report = synthesize(TEXT, 4, "auto", complete=lambda prompt: "What is the answer to the question?")
    assert report["used"] == "keyphrase" and report["probe_yield"] == 0 and len(pairs) == 4
    pairs, report = synthesize(TEXT, 4, "keyphrase")
    assert report["used"] == "keyphrase" and all(p.source in ("keyphrase", "statement") for p in pairs)
    with pytest.raises(LiftError, match="--qa-generator"):
        synthesize(TEXT, 4, "magic")


def test_qa_file_round_trip_and_errors(tmp_path):
    pairs = [QAPair("When?", "1988", "found in 1988", 10, 60, "llm"), QAPair("What?", "green lantern", "", -1, -1)]
    write_qa(tmp_path / "qa.jsonl", pairs)
    assert read_qa(tmp_path / "qa.jsonl") == pairs
    (tmp_path / "min.jsonl").write_text(json.dumps({"question": "Q?", "answer": "A"}) + "\n\n")
    assert read_qa(tmp_path / "min.jsonl")[0].answer == "A"
    (tmp_path / "bad.jsonl").write_text('{"question": "Q?"}\n')
    with pytest.raises(LiftError, match="bad.jsonl:1"):
        read_qa(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(LiftError, match="no QA pairs"):
        read_qa(tmp_path / "empty.jsonl")
    with pytest.raises(LiftError, match="no such file"):
        read_qa(tmp_path / "missing.jsonl")
