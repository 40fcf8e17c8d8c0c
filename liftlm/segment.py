"""Segmentation (paper §3.1): cut the tokenized document into overlapping segments.

Segments start at 0, s, 2s, … and are ℓ tokens long, so neighbours overlap by ℓ − s tokens (the paper:
ℓ = 2048, s = 768, overlap 5/8·ℓ) and the document's order is kept. Where the last regular segment stops
short of the end, one more full-length segment is aligned to the end, so every token is covered and every
segment has ℓ tokens (a document shorter than ℓ is one segment).
"""
from __future__ import annotations


def segment_spans(n_tokens: int, length: int, stride: int) -> list[tuple[int, int]]:
    """Half-open token spans ``[start, end)`` of the segments of an ``n_tokens``-long document."""
    if length < 1 or not 0 < stride <= length:
        raise ValueError(f"need 0 < stride <= length, got length={length}, stride={stride}")
    if n_tokens <= 0:
        return []
    if n_tokens <= length:
        return [(0, n_tokens)]
    spans = [(start, start + length) for start in range(0, n_tokens - length + 1, stride)]
    if spans[-1][1] < n_tokens:  # the tail: one more segment ending exactly at the document's end
        spans.append((n_tokens - length, n_tokens))
    return spans


def segment_ids(ids: list[int], length: int, stride: int) -> list[list[int]]:
    """The segments themselves, in document order."""
    return [ids[a:b] for a, b in segment_spans(len(ids), length, stride)]
