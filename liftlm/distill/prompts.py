"""What the teacher is asked (no torch here): the sentences and names of a chunk, the seed prompts about them,
the questions the teacher writes, the check that an answer says what its chunk says, and ``DistillItem``.

Each chunk gets prompts of several kinds (``KINDS``, named as ``--distill-kinds`` names them):

* ``about``, ``tell``, ``what``, ``details``: a question about a name in the chunk's whole sentences, in one of
  four phrasings that all point at the text (``seed_prompts``); every name of the document is asked about
  ``ASK_EACH_NAME`` times, in different phrasings and chunks, before YAKE key phrases get a turn;
* ``written``: the questions the teacher wrote about a fact-bearing sentence of the chunk (``WRITE_PROMPT``,
  parsed by ``written_questions``): the ways a reader asks for a fact, which the templates cannot vary;
* ``cloze`` (with ``--distill-cloze``): a fact-bearing sentence with its fact blanked (``cloze``), every such
  sentence of the document once, in the slots key phrases, a summary or a what-happens-next request would take
  (and beyond them in the last chunk that holds the sentence whole): the facts that no name points at (a number,
  a lowercase key) are asked about too;
* ``summary`` and ``next``: a summary and a what-happens-next request;
* ``retention``: general requests that have nothing to do with any document (``retention_prompts``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources

from ..config import DISTILL_KINDS

KINDS = DISTILL_KINDS
# Every phrasing points at the text: asked "Tell me about X." or "Who is X?", a small teacher answers about a
# made-up name from its own knowledge ("Busismere is an island in the Maldives") or refuses, with the chunk in context.
_TEMPLATES = {
    "about": "What does the text say about {x}?",
    "tell": "What does the passage tell us about {x}?",
    "what": "According to the text, who or what is {x}?",
    "details": "According to the passage, what is known about {x}?",
}
SUMMARY_PROMPT = "Summarize the passage in two or three sentences."
NEXT_PROMPT = 'What happens in the passage after "{x}"?'
# (asked of the 135M teacher about the 16k RULER document's four needles with their chunks in context, "Complete
# the sentence as the text has it" got the four values; "Fill in the blank ___ with the words of the text" two, and
# one wrong answer)
CLOZE_PROMPT = 'Complete the sentence as the text has it: "{s}"'
# Asked with the chunk in context. "Clear without the passage": the student is asked with no passage (mode lift);
# a question that says "he" or "the passage" cannot be answered from the weights.
WRITE_PROMPT = ('Write {n} questions that the sentence "{s}" answers. Ask each in different words from the '
                'sentence, and make each question clear without the passage (name who or what it is about). '
                'One question per line.')
WRITE_TOKENS = 24  # most tokens the teacher writes per question it is asked for
# kinds whose answers must say what their chunk says (``grounded``); summaries and what-happens-next answers
# paraphrase by nature, and retention answers are about no chunk
GROUNDED_KINDS = frozenset(_TEMPLATES) | {"written", "cloze"}
CLOZE_WORDS = 6  # the fewest words of a sentence asked as a cloze
ASK_EACH_NAME = 2  # a name is asked about at most this many times in a document, each time phrased another way


def retention_prompts() -> list[str]:
    """General requests that have nothing to do with any document (shipped with the package)."""
    text = resources.files("liftlm").joinpath("data/general_prompts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@dataclass
class DistillItem:
    """One teacher answer: the prompt, the chunk the teacher read, its greedy answer and top-k log-probabilities."""

    kind: str
    prompt: str
    chunk: tuple[int, int]  # token span of the document the teacher had in context
    answer_ids: list[int]
    top_ids: list[list[int]] = field(default_factory=list)  # [T][k]
    top_logprobs: list[list[float]] = field(default_factory=list)  # [T][k]

    @classmethod
    def from_dict(cls, d: dict) -> DistillItem:
        """An item as ``items_jsonl`` stores it; kind ``asked`` (the old name of ``written``, in the caches and
        adapters of earlier versions) is read as ``written``."""
        kind = "written" if d["kind"] == "asked" else d["kind"]
        return cls(kind, d["prompt"], tuple(d["chunk"]), list(d["answer_ids"]), d["top_ids"], d["top_logprobs"])


# ---------------------------------------------------------------- sentences and names
_ENTITY = re.compile(r"\b[A-Z][a-z]+(?:\s+(?:of\s+|de\s+)?[A-Z][a-z]+)*")
_FUNCTION_WORDS = frozenset("""a an the this that these those it its he she they we i you his her their our my your
    in on at of for from by with to into after before when while if but and or so as since then there here what who
    which where why how one some all no not yes once many most every each such also later today yesterday""".split())
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d)]))(?:\s+|(?=[A-Z\"\u201c(]))|\n+")


def whole_sentences(text: str, first: bool, last: bool) -> list[str]:
    """The sentences of a chunk, less the pieces cut at its edges (unless it begins or ends the document)."""
    # a sentence ends at . ! ? (and a closing quote or bracket) before a space or a capital, or at a line break
    parts = [p.strip() for p in _SENTENCE_END.split(text.strip()) if p.strip()]
    if parts and not first:
        parts = parts[1:]
    if parts and not last and not re.search(r"[.!?][\"'\u201d)]?$", parts[-1]):
        parts = parts[:-1]
    return parts


def sentence_names(sentences: list[str]) -> list[str]:
    """Capitalised names in the sentences (one word or several), in order, without a leading function word ("The
    Tullby"). A lone capitalised word that opens a sentence counts only if it is capitalised inside a sentence
    too ("Smoking rapidly became..." is not a name)."""
    found: list[tuple[str, bool]] = []  # (name, opens its sentence)
    for sentence in sentences:
        for m in _ENTITY.finditer(sentence):
            words = m.group(0).split()
            opens = not re.search(r"\w", sentence[: m.start()])
            while words and words[0].lower() in _FUNCTION_WORDS:
                words, opens = words[1:], False
            if words and not (len(words) == 1 and len(words[0]) < 3):
                found.append((" ".join(words), opens and len(words) == 1))
    inside = {name for name, opens in found if not opens}
    return list(dict.fromkeys(name for name, opens in found if not opens or name in inside))


def _phrases(text: str, n: int) -> list[str]:
    """Up to ``n`` YAKE key phrases of ``text``, no near-duplicates."""
    import yake

    found = [p for p, _ in yake.KeywordExtractor(lan="en", n=3, top=2 * n, dedupLim=0.7).extract_keywords(text)]
    out: list[str] = []
    for p in found:
        low = p.lower()
        if len(p) > 2 and not any(low in q.lower() or q.lower() in low for q in out):
            out.append(p)
        if len(out) == n:
            break
    return out


# ---------------------------------------------------------------- the prompts of a chunk
def seed_prompts(chunk_text: str, n: int, index: int = 0, phrasings: dict[str, list[str]] | None = None,
                 first: bool = True, last: bool = True, clozed: set[str] | None = None,
                 due: frozenset[str] | set[str] = frozenset(), blanks: int = 1) -> list[tuple[str, str]]:
    """``n`` (kind, prompt) pairs for one chunk. First the names of its whole sentences that the document has
    asked about fewer than ``ASK_EACH_NAME`` times (``phrasings``: name -> the phrasings (kinds) asked in so far,
    updated here; the least asked first), each in a phrasing not yet used for it; then YAKE key phrases; then a
    summary and a what-happens-next request fill what is left. ``index`` shifts the phrasings, so that
    neighbouring chunks do not ask the same way; ``first``/``last``: the chunk begins/ends the document (else the
    sentences cut at its edges are left out). ``n`` = 0: only the clozes ``due`` here.

    ``clozed`` (``--distill-cloze``; None: off): the fact-bearing sentences of the document asked as a ``cloze``
    so far, updated here. Then the chunk's other fact-bearing sentences come after the names, each as its
    ``clozes`` (``blanks`` of them, asked together), in the slots left (before key phrases, summary and
    what-happens-next); those in ``due`` (the sentences this chunk is the last to hold whole) are asked even
    beyond ``n``, so that every one is asked once."""
    phrasings = {} if phrasings is None else phrasings
    kinds = list(_TEMPLATES)
    sentences = whole_sentences(chunk_text, first, last)
    found = sentence_names(sentences)
    names = [x for x in found if len(phrasings.get(x, [])) < ASK_EACH_NAME]
    names.sort(key=lambda x: len(phrasings.get(x, [])))
    prompts: list[tuple[str, str]] = []
    for j, x in enumerate(names[:n]):
        used = phrasings.setdefault(x, [])
        kind = next(k for r in range(len(kinds)) if (k := kinds[(index + j + r) % len(kinds)]) not in used)
        used.append(kind)
        prompts.append((kind, _TEMPLATES[kind].format(x=x)))
    if clozed is not None:
        facts = [(x, cs) for x in dict.fromkeys(fact_sentences(sentences)) if x not in clozed
                 and (cs := clozes(x, blanks))]
        for x, cs in facts:  # a sentence's clozes go together: where they fit, or where it is due
            if len(prompts) + len(cs) <= n or x in due:
                clozed.add(x)
                prompts.extend(("cloze", CLOZE_PROMPT.format(s=c)) for c in cs)
    forced = max(len(prompts) - n, 0)  # clozes asked beyond n
    if len(prompts) < n:
        taken = [x.lower() for x in found]  # (a phrase that holds a name is asked as the name)
        phrases = [x for x in _phrases(" ".join(sentences) or chunk_text, n)
                   if not any(x.lower() in t or t in x.lower() for t in taken)]
        for k, x in enumerate(phrases[: max(n - len(prompts) - 2, 0)]):
            kind = kinds[(k + index) % len(kinds)]
            prompts.append((kind, _TEMPLATES[kind].format(x=x)))
    words = chunk_text.split()
    extra = [("summary", SUMMARY_PROMPT)]
    if len(words) > 12:  # (the chunk may begin inside a word: start at its second word)
        extra.append(("next", NEXT_PROMPT.format(x=" ".join(words[1:9]).strip(",;:"))))
    return (prompts + extra)[: n + forced]


# ---------------------------------------------------------------- the questions the teacher writes
_NUMBER = re.compile(r"(?<![\[\w])\d[\d,.]*(?![\]\w])")  # 1733, 10, 159 (not a footnote mark "[4]")
_LIST_MARK = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022]|(?:Q|Question)\s*\d*\s*[:.])\s*", re.IGNORECASE)


def fact_sentences(sentences: list[str]) -> list[str]:
    """The sentences that state a fact a reader may ask about: those with a name or a number in them."""
    return [s for s in sentences if sentence_names([s]) or _NUMBER.search(s)]


def cloze(sentence: str) -> str | None:
    """The sentence with its fact blanked (``___``): its last number; else the name it ends with; else its last
    word. None for a sentence with no name and no number, or a fragment the sentence splitter left (fewer than
    ``CLOZE_WORDS`` words: "in the last 20 years."; or no full stop, ! or ? at its end: a line of a hard-wrapped
    text).
    "One of the special magic numbers for zovobip is: 2237192." -> "... for zovobip is: ___."
    "The garden of the Pufilmoor monastery is full of dahlias." -> "... is full of ___." """
    found = clozes(sentence)
    return found[0] if found else None


def clozes(sentence: str, most: int = 1) -> list[str]:
    """Up to ``most`` clozes of the sentence, each with another of its facts blanked: ``cloze``'s first; then its
    other numbers (the last first), its names (the last first) and its last word, each unless it overlaps a
    part blanked before. [] where ``cloze`` gives None.
    "Henrike Tessaro opened the first bakery in Busismere." -> "... bakery in ___.", "___ opened the first bakery
    in Busismere." """
    if (len(sentence.split()) < CLOZE_WORDS or not re.search(r"[.!?][\"'\u201d)]?$", sentence)
            or not fact_sentences([sentence])):
        return []
    body = re.sub(r"[\W_]*$", "", sentence)  # the sentence less its closing punctuation
    numbers = []
    for m in reversed(list(_NUMBER.finditer(sentence))):
        a, b = m.span()
        while b > a + 1 and sentence[b - 1] in ".,":  # "2237192." ends the sentence: keep its full stop
            b -= 1
        numbers.append((a, b))
    names = [(a, a + len(x)) for x in reversed(sentence_names([sentence])) if (a := sentence.find(x)) >= 0]
    last_word = (body.rfind(" ") + 1, len(body))
    if numbers:
        first = numbers[0]
    elif names and body.endswith(sentence[slice(*names[0])]):
        first = (len(body) - (names[0][1] - names[0][0]), len(body))
    else:
        first = last_word
    spans: list[tuple[int, int]] = []
    for a, b in [first, *numbers, *names, last_word]:
        if len(spans) < most and not any(a < d and c < b for c, d in spans):
            spans.append((a, b))
    return [sentence[:a] + "___" + sentence[b:] for a, b in spans]


def written_questions(reply: str, sentence: str, n: int, seen: set[str] | None = None,
                      check: str = "names") -> list[str]:
    """Up to ``n`` questions from the teacher's ``reply`` to ``WRITE_PROMPT``: one per line, list marks
    removed; kept if it ends with "?", has 3-30 words, is about the sentence and is not already in ``seen``
    (questions kept so far in the document, normalised; updated here). About the sentence, by ``check``:
    ``names``, it names one of the sentence's names, or, for a sentence without names, shares a content word
    with it; ``words``, either (a question may say "the book" where its sentence's only name is "Spain")."""
    seen = set() if seen is None else seen
    names = [x.lower() for x in sentence_names([sentence])]
    words = _content(sentence)
    out: list[str] = []
    for line in reply.splitlines():
        q = _LIST_MARK.sub("", line).strip().strip('"\u201c\u201d').strip()
        key = " ".join(re.findall(r"\w+", q.lower()))
        about = any(x in q.lower() for x in names) or ((check == "words" or not names) and _content(q) & words)
        if not q.endswith("?") or not 3 <= len(q.split()) <= 30 or key in seen or not about:
            continue
        seen.add(key)
        out.append(q)
        if len(out) == n:
            break
    return out


# ---------------------------------------------------------------- the check of an answer
_NOT_CONTENT = frozenset("text passage mention mentions mentioned provide provides provided give gives given "
                         "does specific sorry assist".split())


def _content(text: str) -> set[str]:
    """The words that carry content: longer than 3 letters, or with a digit (a cloze's "10", a "159 km": a number
    is what a fact-bearing sentence is often asked for), less function words and the words of a refusal."""
    return {w for w in re.findall(r"[a-z0-9]+", text.lower())
            if (len(w) > 3 or any(c.isdigit() for c in w)) and w not in _FUNCTION_WORDS and w not in _NOT_CONTENT}


def grounded(answer: str, prompt: str, chunk_text: str) -> bool:
    """Whether the teacher's answer says what the chunk says: at least half of its content words beyond the
    question's own occur in the chunk (and at least one does). A refusal ("I'm sorry, but I can't assist"), a
    "the text does not mention X", or an answer from the model's own knowledge ("Busismere is a small island in
    the Maldives") is not; distilling it would teach the adapter to refuse or to make things up."""
    new = _content(answer) - _content(prompt)
    found = new & _content(chunk_text)
    return bool(found) and 2 * len(found) >= len(new)
