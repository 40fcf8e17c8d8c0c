"""Context distillation (beyond the paper): the adapter learns to answer what the same model answers *with a chunk
of the document in context*, not only to recite the document's words.

Peers that store a document in weights report that this generalises where next-token training does not
(Cartridges' self-study, arXiv 2506.06266; Knowledge Modules' deep context distillation, arXiv 2503.08727).
Here, for a document:

1. **Chunks**: the document cut like the segments (ℓ tokens every s tokens).
2. **Prompts** per chunk, of several kinds (``seed_prompts``): questions about the names in its whole sentences
   (four phrasings that all point at the text, as "According to the text, who or what is X?"; every name of the
   document is asked about ``ASK_EACH_NAME`` times, in different phrasings and chunks, before key phrases get a
   turn), then YAKE key phrases, a summary request and a "what happens next"
   request; plus **retention** prompts (a shipped list of general requests that have nothing to do with the
   document, ``retention_share`` of the items). With ``questions_per_sentence`` (``--distill-questions``),
   also **written questions**: the teacher, with the chunk in context, writes that many questions about each
   of its fact-bearing sentences (a name or a number; each sentence once per document) in words other than the
   sentence's (``WRITE_PROMPT``, parsed by ``written_questions``): the ways a reader asks for a fact, which the
   templates above cannot vary (Cartridges' self-study has the model write its own seed questions too).
3. **Teacher**: the base model (no adapter) with the chunk in context answers each prompt greedily; its top-k
   (``TOP_K``) log-probabilities at every answer token are kept (``teach``). The chunk is run once and each
   prompt continues from its keys/values. Answers to name, key-phrase and written questions that do not say
   what the chunk says (``grounded``) are left out. The items are cached per document (``DistillSource``).
4. **Student**: the adapted model sees what it will see when asked — the question alone (mode ``lift``) and the
   question after the head+tail view of the document (mode ``lift+icl``); the loss is the cross-entropy against
   the teacher's top-k distribution on the answer tokens (forward KL up to a constant). The head+tail view is
   the same for every item of a document: its keys/values are computed once, without gradients, and reused by
   ``PREFIX_REFRESH`` items in a row (``SoftSample`` with ``shared_prefix``).

``--objective ct`` (the paper), ``distill`` (items only) or ``ct+distill`` (the segments, then segments + items,
as the paper's two-stage schedule trains segments + QA).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from .config import DISTILL_KINDS
from .errors import LiftError
from .keys import DISTILL_VERSION, document_sha256, store_key
from .kvcache import cache_kwarg, kv_tensors, prefix_cache

TOP_K = 20
PREFIX_REFRESH = 8  # lift+icl items that reuse one computation of the shared head+tail view's keys/values
KINDS = DISTILL_KINDS
# prompts the teacher answers at once, from any chunks. On 2 CPU cores, the teacher of examples/kellmere.txt (8
# prompts a chunk, 144 asks) took 53 s at 32 rows, 62 s at 16 and 72-89 s at 8 with the embedded model; with
# Qwen2.5-Coder-1.5B one decoding step costs 0.70 s for 8 rows against 0.34 s for one.
TEACH_BATCH = 32
# Every phrasing points at the text: asked "Tell me about X." or "Who is X?", a 1.5B teacher answers about a made-up
# name from its own knowledge ("Busismere is an island in the Maldives") or refuses, with the chunk in context.
_TEMPLATES = {
    "about": "What does the text say about {x}?",
    "tell": "What does the passage tell us about {x}?",
    "what": "According to the text, who or what is {x}?",
    "details": "According to the passage, what is known about {x}?",
}
SUMMARY_PROMPT = "Summarize the passage in two or three sentences."
NEXT_PROMPT = 'What happens in the passage after "{x}"?'
# Asked with the chunk in context. "Clear without the passage": the student is asked with no passage (mode lift);
# a question that says "he" or "the passage" cannot be answered from the weights.
WRITE_PROMPT = ('Write {n} questions that the sentence "{s}" answers. Ask each in different words from the '
                'sentence, and make each question clear without the passage (name who or what it is about). '
                'One question per line.')
WRITE_TOKENS = 24  # most tokens the teacher writes per question it is asked for
_CHECKED = frozenset(_TEMPLATES) | {"asked"}  # kinds whose answers must say what their chunk says (``grounded``)


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
        return cls(d["kind"], d["prompt"], tuple(d["chunk"]), list(d["answer_ids"]), d["top_ids"], d["top_logprobs"])


# ---------------------------------------------------------------- prompts
_ENTITY = re.compile(r"\b[A-Z][a-z]+(?:\s+(?:of\s+|de\s+)?[A-Z][a-z]+)*")
_FUNCTION_WORDS = frozenset("""a an the this that these those it its he she they we i you his her their our my your
    in on at of for from by with to into after before when while if but and or so as since then there here what who
    which where why how one some all no not yes once many most every each such also later today yesterday""".split())
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d)]))(?:\s+|(?=[A-Z\"\u201c(]))|\n+")
ASK_EACH_NAME = 2  # a name is asked about at most this many times in a document, each time phrased another way


def _whole_sentences(text: str, first: bool, last: bool) -> list[str]:
    """The sentences of a chunk, less the pieces cut at its edges (unless it begins or ends the document)."""
    # a sentence ends at . ! ? (and a closing quote or bracket) before a space or a capital, or at a line break
    parts = [p.strip() for p in _SENTENCE_END.split(text.strip()) if p.strip()]
    if parts and not first:
        parts = parts[1:]
    if parts and not last and not re.search(r"[.!?][\"'\u201d)]?$", parts[-1]):
        parts = parts[:-1]
    return parts


def _names(sentences: list[str]) -> list[str]:
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


def seed_prompts(chunk_text: str, n: int, index: int = 0, asked: dict[str, list[str]] | None = None,
                 first: bool = True, last: bool = True) -> list[tuple[str, str]]:
    """``n`` (kind, prompt) pairs for one chunk. First the names of its whole sentences that the document has
    asked about fewer than ``ASK_EACH_NAME`` times (``asked``: name -> the phrasings used so far, updated here;
    the least asked first), each in a phrasing not yet used for it; then YAKE key phrases; then a summary and a
    what-happens-next request fill what is left. ``index`` shifts the phrasings, so that neighbouring chunks do
    not ask the same way; ``first``/``last``: the chunk begins/ends the document (else the sentences cut at its
    edges are left out)."""
    asked = {} if asked is None else asked
    kinds = list(_TEMPLATES)
    sentences = _whole_sentences(chunk_text, first, last)
    found = _names(sentences)
    names = [x for x in found if len(asked.get(x, [])) < ASK_EACH_NAME]
    names.sort(key=lambda x: len(asked.get(x, [])))
    prompts: list[tuple[str, str]] = []
    for j, x in enumerate(names[:n]):
        used = asked.setdefault(x, [])
        kind = next(k for r in range(len(kinds)) if (k := kinds[(index + j + r) % len(kinds)]) not in used)
        used.append(kind)
        prompts.append((kind, _TEMPLATES[kind].format(x=x)))
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
    return (prompts + extra)[: max(n, 1)]


_NUMBER = re.compile(r"(?<![\[\w])\d[\d,.]*(?![\]\w])")  # 1733, 10, 159 (not a footnote mark "[4]")
_LIST_MARK = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022]|(?:Q|Question)\s*\d*\s*[:.])\s*", re.IGNORECASE)


def fact_sentences(sentences: list[str]) -> list[str]:
    """The sentences that state a fact a reader may ask about: those with a name or a number in them."""
    return [s for s in sentences if _names([s]) or _NUMBER.search(s)]


def written_questions(reply: str, sentence: str, n: int, seen: set[str] | None = None) -> list[str]:
    """Up to ``n`` questions from the teacher's ``reply`` to ``WRITE_PROMPT``: one per line, list marks
    removed; kept if it ends with "?", has 3-30 words, is about the sentence (names one of its names, or,
    for a sentence without names, shares a content word with it) and is not already in ``seen`` (questions
    kept so far in the document, normalised; updated here)."""
    seen = set() if seen is None else seen
    names = [x.lower() for x in _names([sentence])]
    words = _content(sentence)
    out: list[str] = []
    for line in reply.splitlines():
        q = _LIST_MARK.sub("", line).strip().strip('"\u201c\u201d').strip()
        key = " ".join(re.findall(r"\w+", q.lower()))
        if (not q.endswith("?") or not 3 <= len(q.split()) <= 30 or key in seen
                or not (any(x in q.lower() for x in names) if names else _content(q) & words)):
            continue
        seen.add(key)
        out.append(q)
        if len(out) == n:
            break
    return out


# ---------------------------------------------------------------- the teacher
@torch.no_grad()
def teach(model, tokenizer, chat, doc_ids: list[int], asks: list[tuple[tuple[int, int], str, str]],
          max_new_tokens: int, top_k: int = TOP_K, batch_size: int = TEACH_BATCH,
          progress: Callable[[int], None] | None = None) -> list[DistillItem]:
    """The base ``model`` answers every ask — (chunk span, kind, prompt), in chunk order — greedily: [chat prefix]
    chunk, prompt [assistant cue] answer. Each chunk runs once; its keys/values are kept while asks about it
    remain. The asks are answered ``batch_size`` at a time, whichever chunks they are about: each row's chunk
    keys/values and its prompt are left-padded (the pads masked out, positions counted without them), so every
    row reads exactly its chunk + its prompt. Decoding one token for 8 rows costs about as much as for one on a
    CPU (reading the weights dominates), and batching across chunks leaves no batch half full where a chunk has
    few prompts. ``progress(done)``: asks answered so far, after each batch."""
    from .infer import base_model_context

    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    suffixes = [tokenizer.encode("\n\n" + prompt, add_special_tokens=False) + chat.after for _, _, prompt in asks]
    last_ask = {span: i for i, (span, _, _) in enumerate(asks)}  # after it, a chunk's keys/values are dropped
    chunk_kv: dict[tuple[int, int], list] = {}
    items = []
    with base_model_context(model):
        for start in range(0, len(asks), batch_size):
            batch = asks[start:start + batch_size]
            spans = [span for span, _, _ in batch]
            for span in dict.fromkeys(spans):
                if span not in chunk_kv:
                    chunk = torch.tensor([chat.before + list(doc_ids[span[0]:span[1]])], device=device)
                    chunk_kv[span] = kv_tensors(prefix_cache(model, chunk))
            lens = [chunk_kv[span][0][0].shape[2] for span in spans]
            n_prefix = max(lens)
            # each layer's keys and values for the batch: the rows' chunks, left-padded to the longest
            cache = DynamicCache(ddp_cache_data=[
                tuple(torch.cat([F.pad(chunk_kv[span][layer][j], (0, 0, n_prefix - n, 0))
                                 for span, n in zip(spans, lens)]) for j in (0, 1))
                for layer in range(len(chunk_kv[spans[0]]))])
            rows = suffixes[start:start + batch_size]
            b, width = len(rows), max(len(r) for r in rows)
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
            real = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
            chunk_mask = torch.tensor([[0] * (n_prefix - n) + [1] * n for n in lens], device=device)
            mask = torch.cat([chunk_mask.to(real.dtype), real], 1)
            positions = torch.tensor(lens, device=device)[:, None] + (real.cumsum(1) - 1).clamp(min=0)
            answers: list[list[int]] = [[] for _ in rows]
            tops: list[list[list[int]]] = [[] for _ in rows]
            lps: list[list[list[float]]] = [[] for _ in rows]
            done = [False] * b
            for _ in range(max_new_tokens):
                out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                            logits_to_keep=1, **{cache_kwarg(model): cache})
                top = F.log_softmax(out.logits[:, -1].float(), -1).topk(top_k)
                top_ids, top_lps = top.indices.tolist(), top.values.tolist()
                for r in range(b):
                    if done[r]:
                        continue
                    answers[r].append(top_ids[r][0])
                    tops[r].append(top_ids[r])
                    lps[r].append([round(x, 4) for x in top_lps[r]])
                    done[r] = top_ids[r][0] == eos
                if all(done):
                    break
                ids = top.indices[:, :1]
                mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype, device=device)], 1)
                positions = positions[:, -1:] + 1
            for r, (span, kind, prompt) in enumerate(batch):
                items.append(DistillItem(kind, prompt, span, answers[r], tops[r], lps[r]))
            for span in set(spans):
                if last_ask[span] < start + b:
                    del chunk_kv[span]
            if progress is not None:
                progress(start + b)
    return items


_NOT_CONTENT = frozenset("text passage mention mentions mentioned provide provides provided give gives given "
                         "does specific sorry assist".split())


def _content(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower())
            if len(w) > 3 and w not in _FUNCTION_WORDS and w not in _NOT_CONTENT}


def grounded(answer: str, prompt: str, chunk_text: str) -> bool:
    """Whether the teacher's answer says what the chunk says: at least half of its content words beyond the
    question's own occur in the chunk (and at least one does). A refusal ("I'm sorry, but I can't assist"), a
    "the text does not mention X", or an answer from the model's own knowledge ("Busismere is a small island in
    the Maldives") is not; distilling it would teach the adapter to refuse or to make things up."""
    new = _content(answer) - _content(prompt)
    found = new & _content(chunk_text)
    return bool(found) and 2 * len(found) >= len(new)


def make_items(model, tokenizer, chat, doc_ids: list[int], spans: list[tuple[int, int]], prompts_per_chunk: int,
               answer_tokens: int, retention_share: float, seed: int = 0,
               progress: Callable[[int, int], None] | None = None,
               questions_per_sentence: int = 0) -> tuple[list[DistillItem], dict]:
    """The teacher's items for a document: ``prompts_per_chunk`` seed prompts per chunk, with
    ``questions_per_sentence`` > 0 the questions the teacher writes about each fact-bearing sentence, and
    retention prompts (``retention_share`` of all items) asked with chunks in context, spread over the chunks.
    Returns the items and counts: ``not_grounded`` (answers to questions about names, key phrases or
    sentences that do not say what their chunk says: left out; summaries and what-happens-next answers
    paraphrase by nature and are kept), and with written questions ``sentences`` asked about and ``written``
    (questions kept). ``progress(done, total)``: asks answered (writing, then answering), after each batch."""
    texts = [tokenizer.decode(doc_ids[a:b]) for a, b in spans]
    asked: dict[str, list[str]] = {}  # name -> the phrasings it was asked in so far
    per_chunk = [seed_prompts(t, prompts_per_chunk, i, asked, first=a == 0, last=b == len(doc_ids))
                 for i, (t, (a, b)) in enumerate(zip(texts, spans))]
    counts = {"not_grounded": 0}
    n_writes = 0  # asks of pass 1, answered before pass 2's
    if questions_per_sentence > 0:  # pass 1: the teacher writes questions about the fact-bearing sentences
        done_sentences: set[str] = set()
        writes: list[tuple[int, str]] = []  # (chunk, sentence), each sentence once per document
        for i, ((a, b), t) in enumerate(zip(spans, texts)):
            sentences = [x for x in dict.fromkeys(fact_sentences(_whole_sentences(t, a == 0, b == len(doc_ids))))
                         if x not in done_sentences]
            done_sentences.update(sentences)
            writes.extend((i, x) for x in sentences)
        n_writes = len(writes)
        later = sum(len(p) for p in per_chunk)  # pass 2's asks so far (the written ones and retention come later)
        replies = teach(model, tokenizer, chat, doc_ids,
                        [(spans[i], "write", WRITE_PROMPT.format(n=questions_per_sentence, s=x)) for i, x in writes],
                        WRITE_TOKENS * questions_per_sentence, top_k=1,
                        progress=None if progress is None else lambda done: progress(done, n_writes + later))
        seen: set[str] = set()
        counts |= {"sentences": n_writes, "written": 0}
        for (i, x), reply in zip(writes, replies):
            questions = written_questions(tokenizer.decode(reply.answer_ids, skip_special_tokens=True), x,
                                          questions_per_sentence, seen)
            per_chunk[i].extend(("asked", q) for q in questions)
            counts["written"] += len(questions)
    n_doc = sum(len(p) for p in per_chunk)
    general = retention_prompts()
    n_ret = round(n_doc * retention_share / (1 - retention_share)) if retention_share > 0 else 0
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(general), generator=g).tolist()
    for j in range(n_ret):
        per_chunk[j % len(spans)].append(("retention", general[order[j % len(general)]]))
    chunk_of = [i for i, prompts in enumerate(per_chunk) for _ in prompts]
    asks = [(spans[i], kind, prompt) for i, prompts in enumerate(per_chunk) for kind, prompt in prompts]
    answered = teach(model, tokenizer, chat, doc_ids, asks, answer_tokens,
                     progress=None if progress is None else lambda done: progress(n_writes + done,
                                                                                  n_writes + len(asks)))
    items: list[DistillItem] = []
    for i, it in zip(chunk_of, answered):
        if it.kind not in _CHECKED or grounded(tokenizer.decode(it.answer_ids, skip_special_tokens=True),
                                               it.prompt, texts[i]):
            items.append(it)
        else:
            counts["not_grounded"] += 1
    return items, counts


def _kind_counts(items: list[DistillItem]) -> dict[str, int]:
    """How many items of each kind (the kinds present, in ``KINDS`` order)."""
    return {k: n for k in KINDS if (n := sum(it.kind == k for it in items))}


def items_jsonl(items: list[DistillItem]) -> str:
    """The items as JSONL text (one record a line)."""
    return "".join(json.dumps(asdict(it)) + "\n" for it in items)


def write_items(path: Path, items: list[DistillItem]) -> None:
    from .fileio import write_text_atomic

    write_text_atomic(path, items_jsonl(items))


def read_items(path: Path) -> list[DistillItem]:
    return [DistillItem.from_dict(json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- the student
@dataclass
class SoftSample:
    """A student sample: ``input_ids`` whose last ``len(top_ids)`` tokens are the teacher's answer, trained
    against the teacher's top-k distribution. ``shared_prefix``: the head+tail view that precedes ``input_ids``
    (its keys/values are computed once for many samples), or None."""

    input_ids: list[int]
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]
    shared_prefix: list[int] | None = None
    view: str = "lift"

    @property
    def n_loss_tokens(self) -> int:
        return len(self.top_ids)


def student_samples(items: list[DistillItem], prompts, doc_ids: list[int], views: tuple[str, ...]) -> list[SoftSample]:
    """Each item in each view: ``lift`` (the question alone) and ``lift+icl`` (after the head+tail view of the
    document, one view shared by all items: the room left by the longest question and answer)."""
    out: list[SoftSample] = []
    if "lift+icl" in views and items:
        longest = max(len(prompts.question_tail(it.prompt)) + len(it.answer_ids) for it in items)
        room = prompts.window - prompts.chat.overhead - longest
        if room < 1:
            raise ValueError(f"window {prompts.window} cannot hold the distillation items with the document")
        shared = prompts.chat.before + prompts.truncate(doc_ids, room)
    for it in items:
        if "lift" in views:
            prompt = prompts.question_prompt(it.prompt, None, len(it.answer_ids))
            out.append(SoftSample(prompt + it.answer_ids, it.top_ids, it.top_logprobs, None, "lift"))
        if "lift+icl" in views:
            suffix = prompts.question_tail(it.prompt) + prompts.chat.after + it.answer_ids
            out.append(SoftSample(suffix, it.top_ids, it.top_logprobs, shared, "lift+icl"))
    return out


def soft_loss(logits: torch.Tensor, top_ids: torch.Tensor, top_logprobs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's ``logits`` ([T, V]) against the teacher's top-k distribution (``top_ids``,
    ``top_logprobs``: [T, k], renormalised over the k): forward KL(teacher ‖ student) up to a constant."""
    target = F.softmax(top_logprobs.float(), -1)
    logq = F.log_softmax(logits.float(), -1).gather(-1, top_ids)
    return -(target * logq).sum(-1).mean()


def hard_loss(logits: torch.Tensor, top_ids: torch.Tensor, top_logprobs: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the teacher's greedy answer (its top-1 token at every position): the same
    items as plain targets, the ablation of ``soft_loss``."""
    return F.cross_entropy(logits.float(), top_ids[:, 0])


class SoftLoss:
    """Computes ``SoftSample`` losses for a trainer, reusing the shared prefix's keys/values (no gradients)
    for ``PREFIX_REFRESH`` samples in a row (they are recomputed with the current adapter after that, and at once
    for a sample with another prefix: another document's).
    ``loss``: ``"kl"`` (``soft_loss``, distillation) or ``"ce"`` (``hard_loss``)."""

    def __init__(self, model, samples: list[SoftSample], loss: str = "kl"):
        self.model = model
        self.loss = {"kl": soft_loss, "ce": hard_loss}[loss]
        device = next(model.parameters()).device
        self.tensors = [(torch.tensor([s.input_ids], device=device), torch.tensor(s.top_ids, device=device),
                         torch.tensor(s.top_logprobs, device=device)) for s in samples]
        self.samples = samples
        self.prefix_kv: list | None = None
        self.prefix_of: list[int] | None = None  # the shared prefix whose keys/values prefix_kv holds
        self.prefix_len = 0
        self.age = PREFIX_REFRESH
        self.prefix_tokens = 0

    def __call__(self, i: int) -> tuple[torch.Tensor, int]:
        """The loss of sample ``i`` and the tokens run forward and backward."""
        s = self.samples[i]
        ids, top_ids, top_lp = self.tensors[i]
        n = len(s.top_ids)
        if s.shared_prefix is None:
            logits = self.model(input_ids=ids, logits_to_keep=n + 1, use_cache=False).logits[0, :-1]
            return self.loss(logits, top_ids, top_lp), ids.shape[1]
        if self.age >= PREFIX_REFRESH or s.shared_prefix != self.prefix_of:  # None at first
            # another document's samples (several documents train together) bring their own prefix
            prefix = torch.tensor([s.shared_prefix], device=ids.device)
            self.prefix_kv, self.prefix_len, self.age = kv_tensors(prefix_cache(self.model, prefix)), prefix.shape[1], 0
            self.prefix_of = s.shared_prefix
            self.prefix_tokens += prefix.shape[1]
        self.age += 1
        positions = torch.arange(self.prefix_len, self.prefix_len + ids.shape[1], device=ids.device)[None]
        cache = DynamicCache(ddp_cache_data=list(self.prefix_kv))
        out = self.model(input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=n + 1,
                         **{cache_kwarg(self.model): cache})
        return self.loss(out.logits[0, :-1], top_ids, top_lp), ids.shape[1]


# ---------------------------------------------------------------- the items of one LIFT setup, cached
class DistillSource:
    """A document's distillation items: made by the teacher once (``make_items``), then read from
    ``cache_dir`` (keyed by document, model and the settings that shape the items)."""

    SETTINGS = ("segment_length", "stride", "distill_prompts", "distill_answer_tokens", "distill_retention", "seed")

    def __init__(self, cfg, model_id: str, cache_dir: str | Path, progress: bool = False, on_step=None):
        self.cfg = cfg
        self.model_id = model_id
        self.cache_dir = Path(cache_dir)
        self.progress = progress
        self.on_step = on_step  # given a StepProgress with stage "teacher" after each batch of the teacher

    def cache_path(self, text: str) -> Path:
        settings = {k: getattr(self.cfg, k) for k in self.SETTINGS} | {"distill_version": DISTILL_VERSION}
        if self.cfg.distill_questions:  # (only when asked for: the items of every earlier setup keep their key)
            settings["distill_questions"] = self.cfg.distill_questions
        return self.cache_dir / f"{store_key(document_sha256(text), self.model_id, settings)}.jsonl"

    def items(self, text: str, doc_ids: list[int], model, tokenizer, chat) -> tuple[list[DistillItem], dict]:
        """The items for ``text`` the student trains on (``model``: the base model, the teacher; only the kinds
        of ``--distill-kinds``) and a report (count, teacher time; ``made``: all the teacher made, if fewer)."""
        if self.cfg.objective == "ct":
            return [], {}
        items, report = self._made(text, doc_ids, model, tokenizer, chat)
        if set(self.cfg.kinds) != set(KINDS):  # the ablation: the student trains on some kinds only
            made = len(items)
            items = [it for it in items if it.kind in self.cfg.kinds]
            if not items:
                raise LiftError(f"none of the teacher's {made} items is of a kind in --distill-kinds "
                                f"{self.cfg.distill_kinds}")
            kinds = _kind_counts(items)
            report |= {"items": len(items), "made": made, "kinds": kinds}
        return items, report

    def _made(self, text: str, doc_ids: list[int], model, tokenizer, chat) -> tuple[list[DistillItem], dict]:
        """Every item the teacher makes for ``text``: from the cache, or made now (then cached)."""
        import time

        from .segment import segment_spans

        cache = self.cache_path(text)
        if cache.is_file():
            items = read_items(cache)
            return items, {"items": len(items), "used": "cache", "cache": str(cache)}
        spans = segment_spans(len(doc_ids), self.cfg.segment_length, self.cfg.effective_stride)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=None, desc="teacher", unit="prompt", dynamic_ncols=True)  # total: set by the first batch

        def advance(done: int, total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)
            if self.on_step is not None:
                from .loop import StepProgress

                self.on_step(StepProgress(0, self.cfg.epochs, done, total, float("nan"), stage="teacher"))

        start = time.perf_counter()
        try:
            items, counts = make_items(model, tokenizer, chat, doc_ids, spans, self.cfg.distill_prompts,
                                       self.cfg.distill_answer_tokens, self.cfg.distill_retention, self.cfg.seed,
                                       advance if bar is not None or self.on_step else None, self.cfg.distill_questions)
        finally:
            if bar is not None:  # (a tqdm without a total refuses bool())
                bar.close()
        seconds = time.perf_counter() - start
        if not items:
            raise LiftError(f"none of the teacher's {counts['not_grounded']} answers about the document says what "
                            "its chunk says (see distill.grounded): nothing to distil; try --objective ct or "
                            "--distill-retention")
        write_items(cache, items)
        kinds = _kind_counts(items)
        return items, {"items": len(items), "kinds": kinds, **counts,
                       "teacher_seconds": round(seconds, 2), "answer_tokens": sum(len(it.answer_ids) for it in items),
                       "cache": str(cache)}
