"""BM25 retrieval over chunks of one long document: the retrieval-augmented (RAG) baseline.

Scoring uses the ``bm25s`` package (BM25, Lucene variant, numpy only), with its English stop words and
word tokenizer; chunks are cut by the model's own tokenizer so that the context budget is in model tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from .documents import cut_offset, token_offsets


def chunk_document(text: str, tokenizer: Any, chunk_tokens: int, overlap: int = 0) -> list[str]:
    """Split ``text`` into windows of ``chunk_tokens`` tokens; consecutive windows share ``overlap`` tokens.

    Chunks are slices of the original text (cut at token boundaries), so joining them without overlap
    gives back the text. The last chunk may be shorter.
    """
    if chunk_tokens <= 0:
        raise ValueError(f"chunk_tokens must be a positive number of tokens, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise ValueError(
            f"overlap must be in [0, chunk_tokens), got overlap={overlap}, chunk_tokens={chunk_tokens}"
        )
    ids, offsets = token_offsets(tokenizer, text)
    if not ids:
        return []
    step = chunk_tokens - overlap
    chunks: list[str] = []
    start = 0
    while True:
        end = min(start + chunk_tokens, len(ids))
        lo = 0 if start == 0 else cut_offset(offsets, start)
        hi = len(text) if end == len(ids) else cut_offset(offsets, end)
        chunks.append(text[lo:hi])
        if end == len(ids):
            return chunks
        start += step


def _tokenize(texts: Sequence[str]) -> list[list[str]]:
    try:
        import bm25s
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("BM25 retrieval needs the bm25s package: pip install bm25s") from err
    # bm25s sets its logger to DEBUG; once anything configures the root logger, every index build would print
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


def bm25_scores(text_chunks: Sequence[str], query: str) -> list[float]:
    """The BM25 score of each chunk for ``query`` (0 for chunks sharing no word with it)."""
    if not text_chunks:
        return []
    import bm25s

    corpus = _tokenize(text_chunks)
    query_tokens = _tokenize([query])[0]
    if not query_tokens or not any(corpus):
        return [0.0] * len(text_chunks)
    index = bm25s.BM25()
    index.index(corpus, show_progress=False)
    return [float(s) for s in index.get_scores(query_tokens)]


def rank_chunks(text_chunks: Sequence[str], query: str) -> list[int]:
    """Chunk indices, best BM25 score first; ties keep document order."""
    scores = bm25_scores(text_chunks, query)
    return sorted(range(len(text_chunks)), key=lambda i: (-scores[i], i))


def retrieve(text_chunks: Sequence[str], query: str, k: int) -> list[str]:
    """The ``k`` chunks that best match ``query`` by BM25, returned in document order."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    best = sorted(rank_chunks(text_chunks, query)[:k])
    return [text_chunks[i] for i in best]


def build_rag_context(
    document: str,
    question: str,
    tokenizer: Any,
    budget_tokens: int,
    chunk_tokens: int = 256,
    overlap: int = 0,
    separator: str = "\n\n",
) -> str:
    """Fill a context of at most ``budget_tokens`` tokens with the chunks of ``document`` that best match
    ``question`` (BM25), joined by ``separator`` in document order.

    Chunks are taken best first while they fit (a chunk too big for the space left is skipped); the joined
    text is re-encoded and the last-taken chunk dropped while it is over budget. A document that fits is
    returned whole. If no chunk matches the question at all, the document's first chunks are used.
    """
    if budget_tokens <= 0:
        raise ValueError(f"budget_tokens must be a positive number of tokens, got {budget_tokens}")
    ids, _ = token_offsets(tokenizer, document)
    if len(ids) <= budget_tokens:
        return document
    chunks = chunk_document(document, tokenizer, chunk_tokens, overlap)
    sizes = [len(token_offsets(tokenizer, c)[0]) for c in chunks]
    sep_size = len(token_offsets(tokenizer, separator)[0]) if separator else 0

    chosen: list[int] = []  # in the order taken
    used = 0
    for i in rank_chunks(chunks, question):
        cost = sizes[i] + (sep_size if chosen else 0)
        if used + cost <= budget_tokens:
            chosen.append(i)
            used += cost

    while chosen:
        context = separator.join(chunks[i] for i in sorted(chosen))
        if len(token_offsets(tokenizer, context)[0]) <= budget_tokens:
            return context
        chosen.pop()
    return ""
