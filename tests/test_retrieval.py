"""BM25 retrieval over document chunks and the RAG context builder."""

from __future__ import annotations

import itertools

import pytest

from liftlm.documents import token_offsets
from liftlm.retrieval import bm25_scores, build_rag_context, chunk_document, rank_chunks, retrieve

TOPICS = [
    "The harbour master counted the boats twice because he did not believe the number.",
    "The ferry crossed the fjord every morning, even in the worst of the winter storms.",
    "A brass telescope made in Glasgow in 1881 stands in the museum and still works.",
    "The keeper's daughter drew a map of the coast with every rock and shoal marked.",
    "Forty-one vessels sought shelter in the bay during the great storm of that year.",
]


def n_tokens(tokenizer, text):
    return len(token_offsets(tokenizer, text)[0])


@pytest.fixture(scope="module")
def document():
    return "\n\n".join(f"Part {i}. " + TOPICS[i % len(TOPICS)] for i in range(30))


def test_chunks_cover_the_text(document, tiny_tokenizer):
    chunks = chunk_document(document, tiny_tokenizer, 50)
    assert "".join(chunks) == document
    sizes = [n_tokens(tiny_tokenizer, c) for c in chunks]
    assert all(s <= 50 for s in sizes) and all(s == 50 for s in sizes[:-1])
    assert len(chunks) == -(-n_tokens(tiny_tokenizer, document) // 50)


def test_chunk_overlap(document, tiny_tokenizer):
    chunks = chunk_document(document, tiny_tokenizer, 40, overlap=10)
    plain = chunk_document(document, tiny_tokenizer, 40)
    assert len(chunks) > len(plain)
    for a, b in itertools.pairwise(chunks):
        shared = a[-8:]
        assert shared in b[: len(a)]  # the next chunk starts inside the previous one
    assert chunk_document("", tiny_tokenizer, 10) == []
    with pytest.raises(ValueError, match="overlap must be in"):
        chunk_document(document, tiny_tokenizer, 10, overlap=10)
    with pytest.raises(ValueError, match="chunk_tokens must be a positive"):
        chunk_document(document, tiny_tokenizer, 0)


def test_retrieve_returns_best_chunks_in_document_order():
    chunks = [
        "The cat sat on the mat.",
        "Dogs chase the ball.",
        "A cat and a dog play.",
        "Fish swim in a bowl.",
    ]
    scores = bm25_scores(chunks, "fish cat")
    assert scores[1] == 0.0 and scores[3] > scores[0] > 0.0
    ranked = rank_chunks(chunks, "fish cat")
    assert ranked[0] == 3 and ranked[-1] == 1
    top = retrieve(chunks, "fish cat", 2)
    assert top == [chunks[i] for i in sorted(ranked[:2])]
    assert chunks[3] in top and top.index(chunks[3]) == 1  # document order, not score order
    assert retrieve(chunks, "fish", 10) == chunks  # k beyond the chunk count gives them all
    assert retrieve(chunks, "fish", 0) == []
    assert retrieve(chunks, "zebra", 2) == chunks[:2]  # no match: ties keep document order
    assert retrieve(chunks, "", 1) == chunks[:1]
    assert retrieve([], "fish", 3) == []
    with pytest.raises(ValueError, match="k must be >= 0"):
        retrieve(chunks, "fish", -1)


def test_build_rag_context(document, tiny_tokenizer):
    question = "Where was the brass telescope made?"
    context = build_rag_context(
        document, question, tiny_tokenizer, budget_tokens=120, chunk_tokens=30, separator=" | "
    )
    assert 90 <= n_tokens(tiny_tokenizer, context) <= 120
    chunks = chunk_document(document, tiny_tokenizer, 30)
    picked = [chunks.index(p) for p in context.split(" | ")]
    assert picked == sorted(picked)  # document order
    # the three best chunks fill 90 + 2 separators; the fourth best is skipped as too big for what is left,
    # and the short last chunk (13 tokens) fills the gap
    assert set(rank_chunks(chunks, question)[:3]) < set(picked)
    assert picked[-1] == len(chunks) - 1
    assert any("telescope" in chunks[i] for i in picked)
    # a document that fits is returned whole
    assert build_rag_context(TOPICS[0], question, tiny_tokenizer, budget_tokens=500) == TOPICS[0]
    # no room for even one chunk
    assert build_rag_context(document, question, tiny_tokenizer, budget_tokens=5, chunk_tokens=30) == ""
    with pytest.raises(ValueError, match="budget_tokens must be a positive"):
        build_rag_context(document, question, tiny_tokenizer, budget_tokens=0)


def test_bm25_does_not_log_debug_lines(caplog):
    import logging

    logging.warning("configure the root logger, as some libraries do")
    with caplog.at_level(logging.NOTSET):
        rank_chunks(["red apples grow here", "blue sea"], "apples")
    assert not [r for r in caplog.records if r.name.startswith("bm25s") and r.levelno < logging.WARNING]
