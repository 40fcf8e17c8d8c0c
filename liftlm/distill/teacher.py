"""The teacher: the base model (no adapter) with a chunk of the document in context answers the prompts about it.

``make_items`` builds a document's items in two passes of ``teach``: first (with ``questions_per_sentence`` > 0)
the teacher writes questions about each fact-bearing sentence; then it answers every prompt — the seed prompts
of each chunk, the questions it wrote, and the retention prompts — keeping its top-k (``TOP_K``)
log-probabilities at every answer token. Answers that do not say what their chunk says (``grounded``) are left
out.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..kvcache import as_cache, cache_kwarg, kv_tensors, left_padded, prefix_cache
from .prompts import (
    GROUNDED_KINDS,
    WRITE_PROMPT,
    WRITE_TOKENS,
    DistillItem,
    fact_sentences,
    grounded,
    retention_prompts,
    seed_prompts,
    whole_sentences,
    written_questions,
)

TOP_K = 20
# Prompts the teacher answers at once, from any chunks: on a CPU, one decoding step for many rows costs little
# more than for one (reading the weights dominates), so the wider the batch, the sooner the teacher is done.
TEACH_BATCH = 32


@torch.no_grad()
def teach(model, tokenizer, chat, doc_ids: list[int], asks: list[tuple[tuple[int, int], str, str]],
          max_new_tokens: int, top_k: int = TOP_K, batch_size: int = TEACH_BATCH,
          progress: Callable[[int], None] | None = None) -> list[DistillItem]:
    """The base ``model`` answers every ask — (chunk span, kind, prompt), in chunk order — greedily: [chat prefix]
    chunk, prompt [assistant cue] answer. Each chunk runs once; its keys/values are kept while asks about it
    remain. The asks are answered ``batch_size`` at a time, whichever chunks they are about: each row's chunk
    keys/values and its prompt are left-padded (the pads masked out, positions counted without them), so every
    row reads exactly its chunk + its prompt. Decoding one token for a batch of rows costs about as much as for
    one on a CPU (reading the weights dominates), and batching across chunks leaves no batch half full where a
    chunk has few prompts. ``progress(done)``: asks answered so far, after each batch."""
    from ..infer import base_model_context

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
            # each layer's keys and values for the batch: the rows' chunks, left-padded to the longest
            kv, lens = left_padded([chunk_kv[span] for span in spans])
            rows = suffixes[start:start + batch_size]
            answers = _decode(model, as_cache(kv), lens, rows, pad, eos, max_new_tokens, top_k)
            for (span, kind, prompt), (answer, tops, lps) in zip(batch, answers):
                items.append(DistillItem(kind, prompt, span, answer, tops, lps))
            for span in set(spans):
                if last_ask[span] < start + len(rows):
                    del chunk_kv[span]
            if progress is not None:
                progress(start + len(rows))
    return items


def _decode(model, cache, lens: list[int], rows: list[list[int]], pad: int, eos: int | None, max_new_tokens: int,
            top_k: int) -> list[tuple[list[int], list[list[int]], list[list[float]]]]:
    """Greedy answers of a batch: row r reads its chunk (the last ``lens[r]`` positions of ``cache``, left-padded
    to the longest) and then its prompt ``rows[r]`` (left-padded too). Per row: the answer ids, and the top-k ids
    and log-probabilities (rounded to 4 decimals) at each answer token; a row stops at ``eos``."""
    device = next(model.parameters()).device
    n_prefix = max(lens)
    b, width = len(rows), max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)  # [B, W]
    real = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)  # [B, W]
    chunk_mask = torch.tensor([[0] * (n_prefix - n) + [1] * n for n in lens], device=device)  # [B, n_prefix]
    mask = torch.cat([chunk_mask.to(real.dtype), real], 1)
    positions = torch.tensor(lens, device=device)[:, None] + (real.cumsum(1) - 1).clamp(min=0)  # pads not counted
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
    return list(zip(answers, tops, lps))


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
    phrasings: dict[str, list[str]] = {}  # name -> the phrasings it was asked in so far
    per_chunk = [seed_prompts(t, prompts_per_chunk, i, phrasings, first=a == 0, last=b == len(doc_ids))
                 for i, (t, (a, b)) in enumerate(zip(texts, spans))]
    counts = {"not_grounded": 0}
    n_writes = 0  # asks of pass 1, answered before pass 2's
    if questions_per_sentence > 0:  # pass 1: the teacher writes questions about the fact-bearing sentences
        n_writes, written = _write_questions(model, tokenizer, chat, doc_ids, spans, texts, per_chunk,
                                             questions_per_sentence, progress)
        counts |= {"sentences": n_writes, "written": written}
    n_doc = sum(len(p) for p in per_chunk)
    general = retention_prompts()
    n_ret = round(n_doc * retention_share / (1 - retention_share)) if retention_share > 0 else 0
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(general), generator=g).tolist()
    for j in range(n_ret):
        per_chunk[j % len(spans)].append(("retention", general[order[j % len(general)]]))
    # pass 2: the teacher answers every prompt
    chunk_of = [i for i, prompts in enumerate(per_chunk) for _ in prompts]
    asks = [(spans[i], kind, prompt) for i, prompts in enumerate(per_chunk) for kind, prompt in prompts]
    answered = teach(model, tokenizer, chat, doc_ids, asks, answer_tokens,
                     progress=None if progress is None else lambda done: progress(n_writes + done,
                                                                                  n_writes + len(asks)))
    items: list[DistillItem] = []
    for i, it in zip(chunk_of, answered):
        if it.kind not in GROUNDED_KINDS or grounded(tokenizer.decode(it.answer_ids, skip_special_tokens=True),
                                                     it.prompt, texts[i]):
            items.append(it)
        else:
            counts["not_grounded"] += 1
    return items, counts


def _write_questions(model, tokenizer, chat, doc_ids: list[int], spans: list[tuple[int, int]], texts: list[str],
                     per_chunk: list[list[tuple[str, str]]], questions_per_sentence: int,
                     progress: Callable[[int, int], None] | None) -> tuple[int, int]:
    """Pass 1 of ``make_items``: the teacher, with the chunk in context, writes ``questions_per_sentence``
    questions about each fact-bearing whole sentence of each chunk (each sentence once per document); the kept
    ones (``written_questions``) join their chunk's prompts in ``per_chunk`` as kind ``written``. Returns the
    sentences asked about and the questions kept."""
    done_sentences: set[str] = set()
    writes: list[tuple[int, str]] = []  # (chunk, sentence), each sentence once per document
    for i, ((a, b), t) in enumerate(zip(spans, texts)):
        sentences = [x for x in dict.fromkeys(fact_sentences(whole_sentences(t, a == 0, b == len(doc_ids))))
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
    written = 0
    for (i, x), reply in zip(writes, replies):
        questions = written_questions(tokenizer.decode(reply.answer_ids, skip_special_tokens=True), x,
                                      questions_per_sentence, seen)
        per_chunk[i].extend(("written", q) for q in questions)
        written += len(questions)
    return n_writes, written
