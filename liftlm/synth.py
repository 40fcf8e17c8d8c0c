"""Auxiliary tasks (paper §3.3): question–answer pairs about the document, trained beside its segments.

Two synthesizers, both returning verified ``QAPair``s with the character span of the text they are about:

* ``llm``: the paper's recipe. A generator model reads a window of consecutive sentences and writes a question,
  its answer and verbatim evidence; a pair is kept only when the evidence occurs in the window (after whitespace
  and case normalisation) and the answer is not empty; a failed window is retried on the next window a few times.
* ``keyphrase``: needs no capable generator. For a sentence, YAKE key phrases make questions
  "What does the document say about <phrase>?" answered by the sentence itself. Cheap enough to cover every
  sentence: a fact can only be recalled from the weights if some item touched it.

``auto`` probes the LLM generator on a few windows and falls back to ``keyphrase`` when its verified yield is
below ``MIN_LLM_YIELD`` (a small model that cannot write verified pairs gets key phrases instead; what the
embedded model yields: docs/training.md).
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import LiftError
from .keys import SYNTH_VERSION, document_sha256, qa_key_settings, store_key

GENERATORS = ("auto", "keyphrase", "llm")
MIN_LLM_YIELD = 0.5
PROBE_WINDOWS = 3
KEYPHRASE_QUESTION = "What does the document say about {phrase}?"
# "<subject> is/are/was/were <rest>." -> "What is <subject>?": the question a reader asks of a defining sentence.
_COPULA = re.compile(r"^(?P<subject>[A-Za-z][^,;:()\"]{2,80}?)\s+(?P<verb>is|are|was|were)\s+(?P<rest>\S.*)$", re.DOTALL)
# words that make a subject a clause ("When I was young, it"): no clean question then
_CLAUSE_WORDS = {"i", "we", "you", "he", "she", "they", "it", "when", "if", "because", "that", "which", "who",
                 "whom", "whose", "what", "while", "although", "though", "since", "unless", "until", "as"}
# subjects that leave the question without its topic ("What is it?")
_VAGUE_SUBJECT = {"it", "this", "that", "there", "he", "she", "they", "i", "we", "you", "these", "those", "which",
                  "what", "who", "here", "one", "all", "so", "and", "but", "or", "if", "when", "because",
                  "what's", "it's", "that's", "there's", "how", "why", "in", "at", "on", "for", "with", "none",
                  "no", "fortunately", "unfortunately", "then", "now", "also", "still", "perhaps", "maybe"}
# common sentence openers, lower-cased inside the question (other capitalised words may be names: "Paul Graham")
_OPENERS = {"the", "a", "an", "my", "our", "your", "his", "her", "its", "their", "most", "many", "some", "every",
            "each", "no", "any", "another", "other", "such", "much", "more", "few"}
LLM_PROMPT = """Read the passage and write one question that can be answered from it.
Reply in exactly this format:
Question: <the question>
Answer: <a short answer>
Evidence: <a sentence copied word for word from the passage>

Passage:
{window}"""


@dataclass
class QAPair:
    question: str
    answer: str
    evidence: str
    start: int  # character span of the window (or sentence) the pair is about
    end: int
    source: str = "user"

    @classmethod
    def from_dict(cls, d: dict) -> QAPair:
        return cls(str(d["question"]), str(d["answer"]), str(d.get("evidence", "")), int(d.get("start", -1)),
                   int(d.get("end", -1)), str(d.get("source", "user")))


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def verified(pair: QAPair, window: str) -> bool:
    """Kept only if the answer is non-empty and the evidence occurs in the window (whitespace/case-insensitive)."""
    ev = normalize(pair.evidence).strip(" \"'")
    return bool(pair.answer.strip()) and bool(pair.question.strip()) and bool(ev) and ev in normalize(window)


MAX_SENTENCE_WORDS = 80
# A sentence end that pysbd missed: . ! ? (and closing quotes/brackets), then a space or none, then a capital.
_SENTENCE_END = re.compile(r"(?<=[^\s.A-Z][.!?])[\"”’)\]]*(?:\s+|(?=[A-Z]))(?=[\"“‘(\[]?[A-Z0-9])")


def split_sentences(text: str, max_words: int = MAX_SENTENCE_WORDS) -> list[tuple[int, int]]:
    """Character spans of the sentences (pysbd: rule-based, no download), whitespace trimmed.

    pysbd keeps everything between mismatched quotation marks as one "sentence" (over a thousand words in
    some Wikipedia articles); a span longer than ``max_words`` is split again at sentence ends, and what is
    still too long is cut every ``max_words`` words, so that no item built from a sentence outgrows the window.
    """
    import pysbd

    spans = []
    for s in pysbd.Segmenter(language="en", clean=False, char_span=True).segment(text):
        for a, b in _bounded(text, s.start, s.end, max_words):
            while a < b and text[a].isspace():
                a += 1
            while b > a and text[b - 1].isspace():
                b -= 1
            if b > a:
                spans.append((a, b))
    return spans


def _bounded(text: str, a: int, b: int, max_words: int) -> list[tuple[int, int]]:
    if len(text[a:b].split()) <= max_words:
        return [(a, b)]
    cuts = [a] + [a + m.end() for m in _SENTENCE_END.finditer(text[a:b])] + [b]
    out = []
    for x, y in zip(cuts, cuts[1:]):
        words = [m.span() for m in re.finditer(r"\S+", text[x:y])]
        for i in range(0, len(words), max_words):
            chunk = words[i : i + max_words]
            out.append((x + chunk[0][0], x + chunk[-1][1]))
    return out


def sentence_windows(n_sentences: int, size: int, count: int) -> list[tuple[int, int]]:
    """``count`` windows of ``size`` consecutive sentences (index ranges), spread evenly over the document."""
    if n_sentences == 0 or count <= 0:
        return []
    size = min(size, n_sentences)
    last = n_sentences - size
    if count == 1:
        return [(last // 2, last // 2 + size)]
    starts = sorted({round(i * last / (count - 1)) for i in range(count)})
    return [(a, a + size) for a in starts]


def dedupe(pairs: list[QAPair]) -> list[QAPair]:
    seen, out = set(), []
    for p in pairs:
        k = normalize(p.question)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out


# --- keyphrase synthesizer ---
def keyphrase_pairs(text: str, n: int, phrases_per_sentence: int = 2, min_words: int = 5,
                    statements: bool = True) -> list[QAPair]:
    """Up to ``n`` items about the sentences, spread over all of them, each answered by its sentence: for a
    sentence of the shape "<subject> is <rest>", the question it answers ("What is <subject>?", ``statements``);
    and "What does the document say about <phrase>?" for its YAKE key phrases (``phrases_per_sentence`` items
    per sentence in all)."""
    import yake

    extractor = yake.KeywordExtractor(lan="en", n=3, top=phrases_per_sentence, dedupLim=0.7)
    sentences = [(a, b) for a, b in split_sentences(text) if len(text[a:b].split()) >= min_words]
    if not sentences or n <= 0:
        return []
    per = max(1, min(phrases_per_sentence, -(-n // len(sentences))))
    chosen = sentences if n >= len(sentences) else [sentences[a] for a, _ in sentence_windows(len(sentences), 1, n)]
    pairs = []
    for a, b in chosen:
        sentence = text[a:b]
        asked = statement_question(sentence) if statements else None
        if asked:
            pairs.append(QAPair(asked, sentence, sentence, a, b, "statement"))
        for phrase, _score in extractor.extract_keywords(sentence)[: per - bool(asked) if per > 1 else per]:
            pairs.append(QAPair(KEYPHRASE_QUESTION.format(phrase=phrase), sentence, sentence, a, b, "keyphrase"))
    return dedupe(pairs)[:n]


def statement_question(sentence: str) -> str | None:
    """The question a sentence "<subject> is <rest>" answers ("What is <subject>?"), or None for other shapes
    and for subjects without a topic of their own (pronouns, "there", one-word subjects)."""
    m = _COPULA.match(sentence.strip())
    if m is None:
        return None
    subject = m.group("subject").strip()
    words = subject.split()
    if (len(words) < 2 or len(words) > 12 or not words[0][:1].isupper() or words[0].lower() in _VAGUE_SUBJECT
            or any(w.lower() in _CLAUSE_WORDS for w in words)):
        return None
    first = words[0]
    if first.lower() in _OPENERS and not (len(first) > 1 and first[1:].isupper()):  # "The" -> "the"; keep "THE"
        subject = subject[0].lower() + subject[1:]
    return f"What {m.group('verb')} {subject}?"


# --- LLM synthesizer ---
_FIELD = re.compile(r"^\s*(question|answer|evidence)\s*:\s*(.*)$", re.IGNORECASE)


def parse_qa(reply: str) -> tuple[str, str, str] | None:
    fields: dict[str, str] = {}
    current = None
    for line in reply.splitlines():
        m = _FIELD.match(line)
        if m:
            current = m.group(1).lower()
            fields.setdefault(current, m.group(2).strip())
        elif current and line.strip() and current in fields and not fields[current]:
            fields[current] = line.strip()
    if {"question", "answer", "evidence"} <= set(fields):
        return fields["question"], fields["answer"], fields["evidence"]
    return None


def llm_pairs(text: str, n: int, complete: Callable[[str], str], window_sentences: int = 8, retries: int = 3,
              progress: bool = False) -> tuple[list[QAPair], int]:
    """Up to ``n`` verified pairs from a generator; returns (pairs, attempts)."""
    from tqdm.auto import tqdm

    sentences = split_sentences(text)
    windows = sentence_windows(len(sentences), window_sentences, max(n * (retries + 1), 1))
    pairs: list[QAPair] = []
    attempts = 0
    bar = tqdm(total=n, desc="QA synthesis", unit="pair", disable=not progress)
    # Window i is tried first for pair i; its neighbours serve as the retries.
    stride = retries + 1
    for i in range(n):
        for r in range(stride):
            j = i * stride + r
            if j >= len(windows):
                break
            a, b = sentences[windows[j][0]][0], sentences[windows[j][1] - 1][1]
            window = text[a:b]
            attempts += 1
            parsed = parse_qa(complete(LLM_PROMPT.format(window=window)))
            if parsed and verified(pair := QAPair(*parsed, a, b, "llm"), window):
                if normalize(pair.question) not in {normalize(p.question) for p in pairs}:
                    pairs.append(pair)
                    bar.update(1)
                    break
    bar.close()
    return pairs, attempts


def local_completer(model, tokenizer, max_new_tokens: int = 160) -> Callable[[str], str]:
    """Greedy chat completion with a loaded model (the model being adapted, or ``--qa-model``)."""
    from .context import ChatFormat
    from .infer import base_model_context, generate

    chat = ChatFormat.for_tokenizer(tokenizer)

    def complete(prompt: str) -> str:
        ids = chat.before + tokenizer.encode(prompt, add_special_tokens=False) + chat.after
        with base_model_context(model):
            return generate(model, tokenizer, ids, max_new_tokens)

    return complete


def openai_completer(spec: str) -> Callable[[str], str]:
    """Chat completion through an OpenAI-compatible endpoint ``http(s)://HOST/v1#MODEL`` (key in
    ``LIFTLM_QA_API_KEY`` or ``OPENAI_API_KEY``; the model name defaults to ``default``)."""
    from .endpoint import ChatEndpoint

    endpoint = ChatEndpoint(spec, "--qa-model", ("LIFTLM_QA_API_KEY", "OPENAI_API_KEY"), default_model="default")
    return lambda prompt: endpoint.chat([{"role": "user", "content": prompt}])


def synthesize(text: str, n: int, generator: str = "auto", complete: Callable[[str], str] | None = None,
               window_sentences: int = 8, progress: bool = False) -> tuple[list[QAPair], dict]:
    """``n`` QA pairs about ``text`` and a report of how they were made (generator used, LLM yield)."""
    if generator not in GENERATORS:
        raise LiftError(f"--qa-generator must be one of {', '.join(GENERATORS)} (got {generator!r})")
    report: dict = {"requested": n, "generator": generator}
    if n <= 0:
        return [], report
    if generator in ("auto", "llm") and complete is not None:
        if generator == "auto":
            probe, attempts = llm_pairs(text, min(PROBE_WINDOWS, n), complete, window_sentences, retries=0)
            report["probe_yield"] = len(probe) / max(attempts, 1)
            if report["probe_yield"] < MIN_LLM_YIELD:
                report["used"] = "keyphrase"
                return keyphrase_pairs(text, n), report
        pairs, attempts = llm_pairs(text, n, complete, window_sentences, progress=progress)
        report.update(used="llm", attempts=attempts, verified=len(pairs))
        return pairs, report
    if generator == "llm":
        raise LiftError("--qa-generator llm needs a generator model")
    report["used"] = "keyphrase"
    return keyphrase_pairs(text, n), report


# --- QA files (JSONL: question, answer, evidence, start, end, source) ---
def qa_jsonl(pairs: list[QAPair]) -> str:
    """The pairs as JSONL text (one record a line)."""
    return "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in pairs)


def write_qa(path: str | Path, pairs: list[QAPair]) -> None:
    """Write the pairs as JSONL, atomically (a reader never sees half a file)."""
    from .fileio import write_text_atomic

    write_text_atomic(path, qa_jsonl(pairs))


def read_qa(path: str | Path) -> list[QAPair]:
    p = Path(path)
    if not p.is_file():
        raise LiftError(f"--qa-file: no such file: {path}")
    pairs = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            pair = QAPair.from_dict(d)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise LiftError(f"--qa-file: {path}:{i}: not a QA record ({e}); expected JSON with "
                            "\"question\" and \"answer\"") from None
        if not pair.question.strip() or not pair.answer.strip():
            raise LiftError(f"--qa-file: {path}:{i}: empty question or answer")
        pairs.append(pair)
    if not pairs:
        raise LiftError(f"--qa-file: {path} holds no QA pairs")
    return pairs


# --- the QA source of one LIFT setup: the user's file, or synthesized pairs cached per document ---
class QASource:
    """Where a document's auxiliary QA pairs come from: the user's pairs (``--qa-file``), none (``qa_pairs``
    0), or ``synthesize`` with the configured generator, cached under ``cache_dir`` by document, model and the
    synthesis settings (the LLM generator is slow; a cached document costs nothing the second time).

    ``completer``: a function returning the ``complete(prompt) -> reply`` of the LLM generator, called only
    when a generator is needed."""

    SETTINGS = ("qa_pairs", "qa_generator", "qa_model", "qa_window_sentences")

    def __init__(self, cfg, model_id: str, cache_dir: str | Path, completer: Callable[[], Callable[[str], str]],
                 user_pairs: list[QAPair] | None = None, progress: bool = False):
        self.cfg = cfg
        self.model_id = model_id
        self.cache_dir = Path(cache_dir)
        self.completer = completer
        self.user_pairs = user_pairs
        self.progress = progress

    def key_settings(self) -> dict:
        """What the pairs add to the adapter's store key: the user's pairs' hash, or the synthesizer version."""
        return qa_key_settings(self.cfg, None if self.user_pairs is None else [asdict(p) for p in self.user_pairs])

    def cache_path(self, text: str) -> Path:
        key = store_key(document_sha256(text), self.model_id,
                        {k: getattr(self.cfg, k) for k in self.SETTINGS} | {"synthesizer": SYNTH_VERSION})
        return self.cache_dir / f"{key}.jsonl"

    def pairs(self, text: str) -> tuple[list[QAPair], dict]:
        """The pairs for ``text`` and a report of where they came from."""
        cfg = self.cfg
        if self.user_pairs is not None:
            return self.user_pairs, {"generator": "user", "used": "user"}
        if cfg.qa_pairs == 0:
            return [], {}
        cache = self.cache_path(text)
        if cache.is_file():
            try:
                return read_qa(cache), {"generator": cfg.qa_generator, "used": "cache", "cache": str(cache)}
            except LiftError as e:  # an empty or damaged cache (e.g. written by an older liftlm): made again
                print(f"liftlm: warning: ignoring the QA cache {cache} ({e}); synthesizing again", file=sys.stderr)
        complete = self.completer() if cfg.qa_generator != "keyphrase" else None
        pairs, report = synthesize(text, cfg.qa_pairs, cfg.qa_generator, complete, cfg.qa_window_sentences,
                                   progress=self.progress)
        if not pairs:  # never cached: a later run would train on nothing, or fail on the empty file
            raise LiftError(f"--qa-pairs {cfg.qa_pairs}: synthesis made no QA pairs for this document "
                            f"(generator {report.get('used', cfg.qa_generator)}); try --qa-generator keyphrase, "
                            "give --qa-file, or --qa-pairs 0")
        write_qa(cache, pairs)
        return pairs, {**report, "cache": str(cache)}
