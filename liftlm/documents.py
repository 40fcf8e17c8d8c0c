"""A document as liftlm reads it: checked text, token offsets, and cuts to a number of tokens.

* ``read_document_file`` / ``check_document``: one clear error for a missing, binary, non-UTF-8 or empty input;
* ``token_offsets`` / ``cut_offset``: token ids with their character spans, to cut text at a token boundary;
* ``DocumentCut``: the first N tokens of a document, and whether some evidence lies inside that cut (used by
  ``liftlm sft --max-doc-tokens`` and by the evaluation's document cuts).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LiftError


def check_document(text: str, source: str = "document") -> str:
    if not text.strip():
        raise LiftError(f"{source} is empty (or only whitespace); give a text document")
    if "\x00" in text:
        raise LiftError(f"{source} looks binary (it contains NUL bytes); give a UTF-8 text document")
    return text


def read_document_file(path: str | Path) -> str:
    """Read a UTF-8 text file, with one clear error for a missing, binary, non-UTF-8 or empty file."""
    p = Path(path)
    if not p.is_file():
        raise LiftError(f"--document: no such file: {path}")
    data = p.read_bytes()
    if b"\x00" in data:
        raise LiftError(f"--document: {path} is a binary file; give a UTF-8 text document")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LiftError(f"--document: {path} is not UTF-8 text (byte {e.start}); convert it to UTF-8") from None
    return check_document(text.removeprefix("\ufeff"), f"--document {path}")


def token_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` (no special tokens) and each token's (start, end) character span.

    Needs a tokenizer that reports offsets (a Hugging Face "fast" tokenizer).
    """
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    except (NotImplementedError, TypeError, ValueError) as err:
        raise ValueError(
            f"{type(tokenizer).__name__} cannot report token offsets ({err}); use a fast tokenizer "
            "(AutoTokenizer.from_pretrained(..., use_fast=True))"
        ) from None
    return list(enc["input_ids"]), [tuple(span) for span in enc["offset_mapping"]]


def cut_offset(offsets: list[tuple[int, int]], n_tokens: int) -> int:
    """Character offset that ends the first ``n_tokens`` tokens (0 for none, the end for all or more).

    A character split over tokens ``n_tokens - 1`` and ``n_tokens`` (a byte-level piece of a multi-byte
    character) is left out, so the cut never holds more than ``n_tokens`` tokens' worth of text.
    """
    if n_tokens <= 0 or not offsets:
        return 0
    if n_tokens >= len(offsets):
        return offsets[-1][1]
    return min(offsets[n_tokens - 1][1], offsets[n_tokens][0])


def normalize_ws(text: str) -> str:
    """Collapse every run of whitespace to one space and strip the ends."""
    return " ".join(text.split())


_WORD = re.compile(r"\w+")
_SHINGLE = 4


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) <= _SHINGLE:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + _SHINGLE]) for i in range(len(words) - _SHINGLE + 1)}


class _Located:
    """Lazily built views of the full and the cut document for evidence look-ups."""

    def __init__(self, full: str, cut: str):
        self.full, self.cut = normalize_ws(full), normalize_ws(cut)
        self._full_sh: set | None = None
        self._cut_sh: set | None = None

    def inside(self, evidence: str) -> bool | None:
        """True/False: the evidence is / is not inside the cut; None: it cannot be found in the document."""
        ev = normalize_ws(evidence)
        if not ev:
            return None
        if ev in self.full:
            return ev in self.cut
        # Not verbatim (benchmarks often quote loosely): every 4-word shingle of the evidence that the
        # document contains must also be in the cut.
        if self._full_sh is None:
            self._full_sh, self._cut_sh = _shingles(self.full), _shingles(self.cut)
        found = _shingles(ev) & self._full_sh
        if not found:
            return None
        return found <= self._cut_sh


@dataclass
class DocumentCut:
    """A document, its token count, and (when it is too long) its cut and the evidence look-up."""

    document: str
    max_doc_tokens: int
    n_tokens: int
    located: _Located | None = None
    cut: str | None = None

    @classmethod
    def of(cls, document: str, tokenizer: Any, max_doc_tokens: int) -> DocumentCut:
        """Tokenize ``document`` and cut it after ``max_doc_tokens`` tokens (at a character boundary)."""
        if max_doc_tokens <= 0:
            raise ValueError(f"max_doc_tokens must be a positive number of tokens, got {max_doc_tokens}")
        ids, offsets = token_offsets(tokenizer, document)
        if len(ids) <= max_doc_tokens:
            return cls(document, max_doc_tokens, len(ids))
        cut = document[: cut_offset(offsets, max_doc_tokens)]
        return cls(document, max_doc_tokens, len(ids), _Located(document, cut), cut)

    @property
    def text(self) -> str:
        """The document as kept: the cut, or the whole document when it fits."""
        return self.document if self.cut is None else self.cut

    def keeps(self, evidence: Iterable[str]) -> bool:
        """False when some of the evidence is in the document but outside the cut (unlocatable evidence
        does not count against it)."""
        return self.located is None or all(self.located.inside(e) is not False for e in evidence)
