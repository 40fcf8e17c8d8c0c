"""The teacher: the base model (no adapter) with a chunk of the document in context answers the prompts about it.

``make_items`` builds a document's items ``TEACH_BLOCK`` chunks at a time, in two passes of ``teach`` over each
block that share the chunks' keys/values: first (with ``questions_per_sentence`` > 0) the teacher writes questions
about each fact-bearing sentence; then it answers every prompt — the seed prompts of each chunk, the questions it
wrote, and the retention prompts — keeping its top-k (``TOP_K``) log-probabilities at every answer token. Answers
that do not say what their chunk says (``grounded``) are left out. A decoding batch drops its rows as they finish.

How that work is laid out in model calls (``TeacherShape``) follows the device and changes no item: on a CPU a call
costs its FLOPs, and decoding batches of 32 prompts, one block at a time, suit it; on a GPU a call costs about the
same whatever its width (Python and kernel launches dominate), so the teacher there decodes as many prompts at
once as a quarter of the free memory holds (``teacher_shape``), teaches several blocks together and prefills
their chunks together: fewer sequential calls for the same answers.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..kvcache import cache_kwarg, decoding_cache, kv_tensors, output_cache, prefix_cache
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
TEACH_BLOCK = 16  # chunks taught at a time: both passes over them share their keys/values, then these are dropped
GPU_WIDTH = 256  # most prompts a GPU decodes at once
GPU_MEMORY_SHARE = 0.25  # of a GPU's free memory, for the keys/values of the rows decoded at once
PROMPT_TOKENS = 128  # room for a prompt (and the chat turn around it) in a row's keys/values


@dataclass(frozen=True)
class TeacherShape:
    """How the teacher's work is laid out in model calls; no item depends on it (every ask is answered greedily
    from its own chunk, and the blocks' bookkeeping runs in document order whatever the shape). ``width``: asks
    decoded at once; ``blocks``: blocks of ``TEACH_BLOCK`` chunks taught together (one writing pass and one
    answering pass over all of them); ``prefill``: chunks of equal length run in one call."""

    width: int = TEACH_BATCH
    blocks: int = 1
    prefill: int = 1


def teacher_shape(model, setting: int | None, chunk_tokens: int, answer_tokens: int) -> TeacherShape:
    """The shape for ``model``'s device. ``setting`` (``--teacher-batch``): asks decoded at once, if given; else
    ``TEACH_BATCH`` on a CPU (or any device but a CUDA GPU), and on a CUDA GPU as many rows as ``GPU_MEMORY_SHARE``
    of its free memory holds the keys/values of (``gpu_width``: each row its chunk, a prompt and an answer), up to
    ``GPU_WIDTH``. Wider than ``TEACH_BATCH``, as many blocks are taught together as fill one batch (a block asks
    about 100 prompts: one block per 64 rows) and a block's chunks are prefilled together."""
    width = setting
    if width is None:
        width = TEACH_BATCH
        device = next(model.parameters()).device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            width = gpu_width(free, row_bytes(model, chunk_tokens + PROMPT_TOKENS + answer_tokens))
    if width <= TEACH_BATCH:
        return TeacherShape(width=width)
    return TeacherShape(width=width, blocks=max(1, width // 64), prefill=TEACH_BLOCK)


def row_bytes(model, tokens: int) -> int:
    """Bytes of one decoding row's keys/values: ``tokens`` positions in every layer (a batch holds a copy of each
    row's chunk, so the rows, not the chunks, are what a wide batch costs)."""
    c = model.config
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    return c.num_hidden_layers * 2 * kv_heads * head_dim * tokens * next(model.parameters()).element_size()


def gpu_width(free_bytes: int, per_row: int) -> int:
    """Rows a GPU decodes at once: as many as ``GPU_MEMORY_SHARE`` of ``free_bytes`` holds, between
    ``TEACH_BATCH`` and ``GPU_WIDTH``."""
    return max(TEACH_BATCH, min(GPU_WIDTH, int(free_bytes * GPU_MEMORY_SHARE) // max(per_row, 1)))


@torch.no_grad()
def teach(model, tokenizer, chat, doc_ids: list[int], asks: list[tuple[tuple[int, int], str, str]],
          max_new_tokens: int, top_k: int = TOP_K, batch_size: int = TEACH_BATCH,
          progress: Callable[[int], None] | None = None, chunk_kv: dict | None = None,
          prefill: int = 1, lengths: list[int] | None = None) -> list[DistillItem]:
    """The base ``model`` answers every ask — (chunk span, kind, prompt), in chunk order — greedily: [chat prefix]
    chunk, prompt [assistant cue] answer. Each chunk runs once; its keys/values are kept while asks about it
    remain. The asks are answered ``batch_size`` at a time, whichever chunks they are about: each row's chunk
    keys/values and its prompt are left-padded (the pads masked out, positions counted without them), so every
    row reads exactly its chunk + its prompt. Decoding one token for a batch of rows costs about as much as for
    one on a CPU (reading the weights dominates), and batching across chunks leaves no batch half full where a
    chunk has few prompts. ``progress(done)``: asks answered so far, after each batch. ``chunk_kv``: the caller's
    store of chunk keys/values (by span), kept for its next call about the same chunks; by default each chunk's
    are dropped after its last ask. ``prefill``: a batch's new chunks of equal length run this many at a time in
    one call (1: each on its own). ``lengths`` (a replay, ``replay``): each ask's answer is cut at its given
    length instead of at the end token, so that the calls are those of a recorded teacher whatever the weights."""
    from ..infer import base_model_context

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    suffixes = [tokenizer.encode("\n\n" + prompt, add_special_tokens=False) + chat.after for _, _, prompt in asks]
    last_ask = {span: i for i, (span, _, _) in enumerate(asks)}  # after it, a chunk's keys/values are dropped
    keep = chunk_kv is not None
    chunk_kv = {} if chunk_kv is None else chunk_kv
    items = []
    with base_model_context(model):
        for start in range(0, len(asks), batch_size):
            batch = asks[start:start + batch_size]
            spans = [span for span, _, _ in batch]
            _prefill(model, chat, doc_ids, [x for x in dict.fromkeys(spans) if x not in chunk_kv], chunk_kv, prefill)
            # each layer's keys and values for the batch: the rows' chunks, left-padded to the longest, with room
            # for the prompts and answers (written in place as they decode)
            rows = suffixes[start:start + batch_size]
            cache, lens = decoding_cache([chunk_kv[span] for span in spans], max(map(len, rows)) + max_new_tokens)
            answers = _decode(model, cache, lens, rows, pad, eos, max_new_tokens, top_k,
                              None if lengths is None else lengths[start:start + batch_size])
            for (span, kind, prompt), (answer, tops, lps) in zip(batch, answers):
                items.append(DistillItem(kind, prompt, span, answer, tops, lps))
            for span in set(spans):
                if not keep and last_ask[span] < start + len(rows):
                    del chunk_kv[span]
            if progress is not None:
                progress(start + len(rows))
    return items


def _prefill(model, chat, doc_ids: list[int], spans: list[tuple[int, int]], chunk_kv: dict, together: int) -> None:
    """Each chunk of ``spans`` run once ([chat prefix] chunk), its keys/values stored in ``chunk_kv`` by span:
    chunks of equal length ``together`` at a time in one call (the rows' slices of that call's keys/values)."""
    device = next(model.parameters()).device
    by_length: dict[int, list[tuple[int, int]]] = {}
    for span in spans:
        by_length.setdefault(span[1] - span[0], []).append(span)
    for same in by_length.values():
        for at in range(0, len(same), max(together, 1)):
            run = same[at:at + max(together, 1)]
            ids = torch.tensor([chat.before + list(doc_ids[a:b]) for a, b in run], device=device)
            kv = kv_tensors(prefix_cache(model, ids))
            for j, span in enumerate(run):
                chunk_kv[span] = kv if len(run) == 1 else [(k[j:j + 1], v[j:j + 1]) for k, v in kv]


def _decode(model, cache, lens: list[int], rows: list[list[int]], pad: int, eos: int | None, max_new_tokens: int,
            top_k: int, lengths: list[int] | None = None) -> list[tuple[list[int], list[list[int]], list[list[float]]]]:
    """Greedy answers of a batch: row r reads its chunk (the last ``lens[r]`` positions of ``cache``, left-padded
    to the longest) and then its prompt ``rows[r]`` (left-padded too). Per row: the answer ids, and the top-k ids
    and log-probabilities (rounded to 4 decimals) at each answer token; a row stops at ``eos``, and rows that have
    stopped leave the batch (``_drop_done``) so that the others decode without them. With ``lengths``, row r stops
    after ``lengths[r]`` tokens instead (a replay)."""
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
    live = list(range(b))  # the rows still decoding, in batch order
    for _ in range(max_new_tokens):
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                    logits_to_keep=1, **{cache_kwarg(model): cache})
        top = F.log_softmax(out.logits[:, -1].float(), -1).topk(top_k)
        top_ids, top_lps = top.indices.tolist(), top.values.tolist()
        going = []  # positions in the batch of the rows that go on
        for j, r in enumerate(live):
            answers[r].append(top_ids[j][0])
            tops[r].append(top_ids[j])
            lps[r].append([round(x, 4) for x in top_lps[j]])
            if (top_ids[j][0] != eos) if lengths is None else len(answers[r]) < lengths[r]:
                going.append(j)
        if not going:
            break
        ids = top.indices[:, :1]
        mask = torch.cat([mask, torch.ones(len(live), 1, dtype=mask.dtype, device=device)], 1)
        positions = positions[:, -1:] + 1
        if len(going) < len(live):
            cache, ids, mask, positions = _drop_done(output_cache(out), going, ids, mask, positions)
            live = [live[j] for j in going]
    return list(zip(answers, tops, lps))


def _drop_done(cache, going: list[int], *tensors: torch.Tensor):
    """The decoding state of the rows ``going`` only: the cache (narrowed in place) and each of ``tensors``
    ([B, ...]) narrowed to those rows (a finished row would otherwise be decoded to the end of the batch's longest
    answer)."""
    index = torch.tensor(going, device=tensors[0].device)
    cache.batch_select_indices(index)
    return (cache, *(t.index_select(0, index) for t in tensors))


def make_items(model, tokenizer, chat, doc_ids: list[int], spans: list[tuple[int, int]], prompts_per_chunk: int,
               answer_tokens: int, retention_share: float, seed: int = 0, progress: Callable[[int, int], None] | None = None,
               questions_per_sentence: int = 0, cloze: bool = False, blanks: int = 1, question_check: str = "names",
               blocks_done: list[dict] = (), on_block: Callable[[dict], None] | None = None,
               shape: TeacherShape = TeacherShape(), trace: list | None = None) -> tuple[list[DistillItem], dict]:
    """The teacher's items for a document: ``prompts_per_chunk`` seed prompts per chunk, with
    ``questions_per_sentence`` > 0 the questions the teacher writes about each fact-bearing sentence, and
    retention prompts (``retention_share`` of all items) asked with chunks in context, spread over the chunks.

    The document goes ``TEACH_BLOCK`` chunks at a time, each chunk run once for both passes over it: the teacher
    writes the questions about the block's sentences, then answers every prompt of the block (memory stays that of
    one block whatever the document's length). Returns the items and counts: ``not_grounded`` (answers to questions
    about names, key phrases or sentences that do not say what their chunk says: left out; summaries and
    what-happens-next answers paraphrase by nature and are kept), and with written questions ``sentences`` asked
    about and ``written`` (questions kept); with ``cloze``, every fact-bearing sentence is asked once as a cloze
    (``seed_prompts``: in a chunk's free slots, at the latest in the last chunk that holds it whole; ``blanks``
    clozes a sentence, each with another fact blanked) and ``clozes`` counts them. ``progress(done, total)``:
    asks answered (writing and answering), after each batch; the total counts the questions not yet written at
    ``questions_per_sentence`` a sentence.

    Resumable by block: after each block ``on_block(record)`` receives what the block added (a JSON-able dict:
    its items, the written questions it kept, the counts and tallies so far); given those records of an
    interrupted run as ``blocks_done``, the teacher goes on after their last block and returns what one
    uninterrupted run returns (every block's prompts are fixed before any is asked; the blocks carry over only
    the written questions kept, how many retention prompts were used, and the counts).

    ``shape`` (``TeacherShape``): with ``shape.blocks`` > 1 both passes run over that many blocks at once, each block
    then finished in document order, so that the items and records are those of one block at a time.
    ``trace``: gets, per block, every prompt asked with its answer's length (``replay``). ``question_check``: which
    written questions are kept (``written_questions``' ``check``)."""
    texts = [tokenizer.decode(doc_ids[a:b]) for a, b in spans]
    phrasings: dict[str, list[str]] = {}  # name -> the phrasings it was asked in so far
    clozed: set[str] | None = set() if cloze else None  # the fact-bearing sentences asked as clozes so far
    due = _last_whole(texts, spans, len(doc_ids)) if cloze else [frozenset()] * len(spans)
    per_chunk = [seed_prompts(t, prompts_per_chunk, i, phrasings, first=a == 0, last=b == len(doc_ids),
                              clozed=clozed, due=due[i], blanks=blanks)
                 for i, (t, (a, b)) in enumerate(zip(texts, spans))]
    to_write = _sentences_to_write(texts, spans, len(doc_ids)) if questions_per_sentence > 0 else [[]] * len(spans)
    general = retention_prompts()
    general = [general[j] for j in torch.randperm(len(general), generator=torch.Generator().manual_seed(seed))]
    share = retention_share / (1 - retention_share) if retention_share > 0 else 0.0
    counts = {"not_grounded": 0} | ({"sentences": sum(map(len, to_write)), "written": 0}
                                    if questions_per_sentence > 0 else {})
    if cloze:
        counts["clozes"] = sum(kind == "cloze" for prompts in per_chunk for kind, _ in prompts)
    items: list[DistillItem] = []
    seen: set[str] = set()  # the written questions kept so far
    n_ret = done = 0
    for record in blocks_done:  # an interrupted run's blocks: their items and tallies, not asked again
        if record["spans"] != len(spans):
            raise ValueError(f"a teacher record of a document with {record['spans']} chunks, not {len(spans)}")
        items += [DistillItem.from_dict(d) for d in record["items"]]
        seen.update(record["seen"])
        counts, n_ret, done = dict(record["counts"]), record["n_ret"], record["done"]

    def future(end: int) -> int:  # the asks of the chunks from ``end`` on: at most, their writes not yet made
        writes = sum(len(w) for w in to_write[end:])
        return writes + round((sum(map(len, per_chunk[end:])) + writes * questions_per_sentence) * (1 + share))

    def advance(n: int, after: int, end: int) -> Callable[[int], None] | None:
        """``progress`` for a call of ``teach`` with ``n`` asks, ``after`` more to come in its block."""
        if progress is None:
            return None
        return lambda k: progress(done + k, done + n + after + future(end))

    q = questions_per_sentence
    group = TEACH_BLOCK * shape.blocks
    for g0 in range(len(blocks_done) * TEACH_BLOCK, len(spans), group):
        blocks = [range(b0, min(b0 + TEACH_BLOCK, len(spans)))
                  for b0 in range(g0, min(g0 + group, len(spans)), TEACH_BLOCK)]
        stop = blocks[-1].stop
        chunk_kv: dict = {}  # the group's chunks' keys/values, for both passes
        writes = [(i, x) for block in blocks for i in block for x in to_write[i]]
        later = round((sum(len(per_chunk[i]) for block in blocks for i in block) + len(writes) * q) * (1 + share))
        replies = []
        if writes:  # pass 1: the teacher writes questions about the group's fact-bearing sentences
            replies = teach(model, tokenizer, chat, doc_ids,
                            [(spans[i], "write", WRITE_PROMPT.format(n=q, s=x)) for i, x in writes],
                            WRITE_TOKENS * q, top_k=1, batch_size=shape.width, prefill=shape.prefill,
                            progress=advance(len(writes), later, stop), chunk_kv=chunk_kv)
            done += len(writes)
        # each block in document order: the questions it wrote (none asked twice in the document), its retention
        # prompts (the block's share), then what its record will hold
        finished = []
        for block in blocks:
            seen_before = set(seen)
            mine = [(w, r) for w, r in zip(writes, replies) if w[0] in block]
            written = _keep_written(tokenizer, mine, per_chunk, q, seen, question_check) if mine else 0
            n_ret = _add_retention(per_chunk, block, share, n_ret, general)
            finished.append((block, mine, written, n_ret, sorted(seen - seen_before)))
        # pass 2: the teacher answers every prompt of the group
        chunk_of = [i for block in blocks for i in block for _ in per_chunk[i]]
        asks = [(spans[i], kind, prompt) for block in blocks for i in block for kind, prompt in per_chunk[i]]
        answered = teach(model, tokenizer, chat, doc_ids, asks, answer_tokens, batch_size=shape.width,
                         prefill=shape.prefill, progress=advance(len(asks), 0, stop), chunk_kv=chunk_kv)
        del chunk_kv
        _finish_blocks(tokenizer, texts, len(spans), finished, per_chunk, list(zip(chunk_of, answered)), items,
                       counts, done - len(writes), on_block, trace)
        done += len(asks)
    return items, counts


def replay(model, tokenizer, chat, doc_ids: list[int], blocks: list[dict], write_tokens: int, answer_tokens: int,
           shape: TeacherShape = TeacherShape()) -> int:
    """The teacher's model calls again, from a ``trace`` of ``make_items`` (per block: its writing prompts and its
    prompts, each with its answer's length), laid out in ``shape``: both passes over ``shape.blocks`` blocks at a
    time, each answer cut at its recorded length. The calls, their widths and lengths are those of the recorded
    teacher in that shape whatever the weights, so that random weights of a model's shapes time its teacher (on a
    machine its weights cannot reach); nothing is kept. Returns the prompts answered."""
    asked = 0
    for g in range(0, len(blocks), shape.blocks):
        group = blocks[g:g + shape.blocks]
        chunk_kv: dict = {}
        for key, tokens, top_k in (("writes", write_tokens, 1), ("asks", answer_tokens, TOP_K)):
            rows = [row for block in group for row in block[key]]
            if rows:
                teach(model, tokenizer, chat, doc_ids, [((r[0], r[1]), *r[2:-1]) if key == "asks" else
                                                         ((r[0], r[1]), "write", r[2]) for r in rows],
                      tokens, top_k=top_k, batch_size=shape.width, prefill=shape.prefill, chunk_kv=chunk_kv,
                      lengths=[r[-1] for r in rows])
                asked += len(rows)
    return asked


def document_fact_sentences(tokenizer, doc_ids: list[int], spans: list[tuple[int, int]]) -> int:
    """The fact-bearing whole sentences of a document cut into ``spans`` (each once): what the teacher writes
    questions about, so that its asks, and the student's samples, grow with them (``liftlm bench cost``'s curve)."""
    texts = [tokenizer.decode(doc_ids[a:b]) for a, b in spans]
    return sum(map(len, _sentences_to_write(texts, spans, len(doc_ids))))


def _chunk_facts(texts: list[str], spans: list[tuple[int, int]], n_doc: int) -> list[list[str]]:
    """Per chunk, its fact-bearing whole sentences (in order, each once)."""
    return [list(dict.fromkeys(fact_sentences(whole_sentences(t, a == 0, b == n_doc))))
            for (a, b), t in zip(spans, texts)]


def _last_whole(texts: list[str], spans: list[tuple[int, int]], n_doc: int) -> list[frozenset[str]]:
    """Per chunk, the fact-bearing sentences it is the last chunk to hold whole (where a cloze not asked yet must
    be asked)."""
    last = {x: i for i, facts in enumerate(_chunk_facts(texts, spans, n_doc)) for x in facts}
    return [frozenset(x) for x in _by_chunk(last, len(spans))]


def _sentences_to_write(texts: list[str], spans: list[tuple[int, int]], n_doc: int) -> list[list[str]]:
    """Per chunk, the fact-bearing whole sentences the teacher writes questions about: each sentence once per
    document, with the first chunk that holds it whole."""
    first = {}
    for i, facts in enumerate(_chunk_facts(texts, spans, n_doc)):
        for x in facts:
            first.setdefault(x, i)
    return _by_chunk(first, len(spans))


def _by_chunk(chunk_of: dict[str, int], n: int) -> list[list[str]]:
    """The sentences of ``chunk_of`` (sentence -> chunk index) grouped per chunk, in the dict's order."""
    out: list[list[str]] = [[] for _ in range(n)]
    for x, i in chunk_of.items():
        out[i].append(x)
    return out


def _add_retention(per_chunk: list[list[tuple[str, str]]], block: range, share: float, n_ret: int,
                   general: list[str]) -> int:
    """A block's share of retention prompts (``share`` per prompt it has), spread over its chunks, continuing the
    document's shuffled list ``general`` at ``n_ret``; returns the retention prompts used so far."""
    ret = round(sum(len(per_chunk[i]) for i in block) * share)
    for j in range(n_ret, n_ret + ret):
        per_chunk[block[j % len(block)]].append(("retention", general[j % len(general)]))
    return n_ret + ret


def _finish_blocks(tokenizer, texts: list[str], n_spans: int, finished: list[tuple], per_chunk, answered: list,
                   items: list[DistillItem], counts: dict, done: int, on_block: Callable[[dict], None] | None,
                   trace: list | None = None) -> None:
    """After pass 2 of ``make_items`` over a group of blocks, each block in document order: its answers (``answered``:
    (chunk index, item), the group's in order) kept where grounded, its counts, and its record for ``on_block``, as
    one block at a time would have made them. ``finished``: per block (block, its writes with their replies, written
    questions kept, retention prompts used so far, questions newly seen); ``done``: asks answered before the group;
    ``trace``: gets the block's prompts and their answers' lengths."""
    at = 0
    for block, writes, written, n_ret, new_seen in finished:
        n_items = len(items)
        n_asks = sum(len(per_chunk[i]) for i in block)
        if trace is not None:
            trace.append({"block": block.start // TEACH_BLOCK,
                          "writes": [[*r.chunk, r.prompt, len(r.answer_ids)] for _, r in writes],
                          "asks": [[*it.chunk, it.kind, it.prompt, len(it.answer_ids)]
                                   for _, it in answered[at:at + n_asks]]})
        for i, it in answered[at:at + n_asks]:
            if it.kind not in GROUNDED_KINDS or grounded(tokenizer.decode(it.answer_ids, skip_special_tokens=True),
                                                         it.prompt, texts[i]):
                items.append(it)
            else:
                counts["not_grounded"] += 1
        at += n_asks
        done += len(writes) + n_asks
        if "written" in counts:
            counts["written"] += written
        if on_block is not None:
            on_block({"block": block.start // TEACH_BLOCK, "spans": n_spans, "done": done, "n_ret": n_ret,
                      "counts": dict(counts), "seen": new_seen, "items": [asdict(it) for it in items[n_items:]]})


def _keep_written(tokenizer, writes: list[tuple[tuple[int, str], DistillItem]],
                  per_chunk: list[list[tuple[str, str]]], questions_per_sentence: int, seen: set[str],
                  check: str = "names") -> int:
    """After pass 1 of ``make_items``, for one block: each ((chunk, sentence), the teacher's reply) of ``writes``
    gives up to ``questions_per_sentence`` questions (``written_questions``; none asked twice in a document:
    ``seen``), which join their chunk's prompts in ``per_chunk`` as kind ``written``. Returns the questions kept."""
    written = 0
    for (i, x), reply in writes:
        questions = written_questions(tokenizer.decode(reply.answer_ids, skip_special_tokens=True), x,
                                      questions_per_sentence, seen, check)
        per_chunk[i].extend(("written", q) for q in questions)
        written += len(questions)
    return written
