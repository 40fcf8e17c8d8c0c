"""About how long ``liftlm internalize`` will take, said before it starts: the teacher's and the student's seconds
for a document of N tokens, from the settings, the model's size and the machine's matmul speed.

FLOPs are counted as ``liftlm.bench.cost`` counts them, with W the weights used in matrix products per token
(``matmul_weights``): a token the teacher runs costs 2·W, a token the student trains (LoRA, base frozen) 4·W, a
prefix token it runs forward only 2·W. Attention is added where it is not small against that: a token the
student trains after the head+tail view attends to its v tokens, 4·A·v FLOPs forward and as many backward (A:
layers × heads × head size, ``attention_width``), at a low share of the probe (``ATTENTION_SHARE``: a few
query tokens against thousands of keys), and computing the view costs 2·A·v² beside its 2·W·v, at a high one
(``PREFIX_SHARE``: one long sequence). At window 512 this is a few per cent; at the embedded model's own 8k window
the samples' attention is as many FLOPs as the weights' and twice their time. Seconds = FLOPs / (the matmul probe's FLOP/s × the
share of it that phase reaches). The token counts follow the recipe's structure (chunks, prompts per chunk, two
teacher passes, views, epochs) and the document's fact-bearing sentences, counted by the caller (else assumed at
``FACT_SENTENCES_PER_TOKEN``); what is only known after running (how long the answers are, how many the
grounding check keeps) and the shares reached come from the committed cost
measurements, experiments/results/cost-{embedded,qwen1.5b}/cost.json (2,000-token facts document, ℓ = 256,
window 512, 2-core CPU); docs/training.md gives the accuracy.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from .config import LiftConfig
from .distill.prompts import WRITE_TOKENS
from .probe import matmul_probe
from .segment import segment_spans

# The chat format's tokens before and after a user's message (24 and 5-6 for both measured models); the caller
# passes the real ones.
CHAT_BEFORE, CHAT_AFTER = 24, 6
# Calibrated on the two default rows (measured token counts, unless said otherwise):
FACT_SENTENCES_PER_TOKEN = 0.0173  # sentences the teacher writes questions about: 34 and 35 per 2,000 tokens
ASK_WIDTH = 28  # a prompt as batched ("\n\n" + prompt + cue, to its batch's longest): no-written row, 11248 teacher
#                 tokens = 20 chunks × (256 + 24) + 94 asks × (28 + 32 answer tokens)
WRITE_WIDTH = 85  # a question-writing prompt (instruction + sentence) as batched: the rest of the default rows'
#                   teacher tokens (21887, 22403), with pass 1 prefilling the chunks that have a new fact sentence
QUESTION_TOKENS = 31  # a prompt with its chat cue in a student sample: one-view rows, tokens / samples / epochs −
#                       answer tokens per item (29.8 Qwen, 32.4 embedded); the lift view adds the chat's start
ANSWER_SHARE = 0.74  # mean answer / --distill-answer-tokens: 2379/112/32 = 0.66 (Qwen), 1286/49/32 = 0.80 (embedded)
CLOZES_PER_SENTENCE = 0.66  # fact sentences asked as clozes (--distill-cloze): 23 of 35 in both facts documents
#                             (the others are fragments or lines of wrapped text); counted with --distill-prompts 0
#                             only: with slots, the clozes take the place of other prompts
BLANKED = (1.0, 1.83, 2.02)  # clozes per sentence asked with --distill-blanks 1, 2, 3 or more: 23, 42 and 46-47
#                             in the facts documents (a sentence has few names and numbers)
CLOZE_WIDTH = 40  # a cloze prompt (instruction + the sentence, blanked) with its chat cue
CLOZE_ANSWER = 4  # tokens of a cloze's answer with its end token (Qwen answers them in 1-3 tokens)
LONGEST_QUESTION = 40  # what the lift+icl view leaves for the longest question: prefixes of 432 and 439 tokens
PREFIX_REFRESH = 8  # lift+icl samples per computation of the view's keys/values, at least (liftlm.distill.student's
PREFIX_TOKENS_PER_REUSE = 64  # refresh_after): and one per this many tokens of the view
# The student at a wide window (RULER multi-query, 16k tokens, embedded model, window 8192; view 7,696 tokens): the
# view's computation ran at PREFIX_SHARE of the probe (every 8 samples, 3.3 s a sample; reused by its length, 1.6
# s: the difference is one computation, 4.1 TFLOP, per 16 samples), and the samples' attention to it at
# ATTENTION_SHARE (what is left of the 3,265 s of 126,312 trained tokens, the weights' part at the student's share)
PREFIX_SHARE = 0.77
ATTENTION_SHARE = 0.17
CT_PROMPT = 18  # tokens of a contextualized sample besides the context and the segment (instruction, cues)
# Per model, by matmul weights W (log-interpolated between the two, the nearer one outside): (W, share of the probe
# the teacher reaches, the student's one sample a step, share of the teacher's answers kept, written questions kept
# per one asked, the student's speed-up with batches of 8: wider products, measured on the same tokens; the share of
# the time that does not shrink when the probe reads faster than at calibration, on a CPU; the student's speed-up
# with its batches of 8 packed (``--pack-batches``, the default) against padded, on the same samples).
# The fixed share: a small model's products are too narrow to keep up with the probe's 1024-wide ones, so its time is
# mostly dispatch (the small ops between products). SmolLM2-135M reached about the same speed at probes of 151 to 195
# GFLOP/s (cost-curve-embedded*), and at a probe of 444 its RULER run at 32k tokens (eval/ruler-embedded-32k) took
# 2.0× (teacher) and 2.2× (student, per item) the time the probe-scaled shares gave: 0.8 of it fixed. Qwen 1.5B's
# runs at probes of 327-331 took no longer than its shares at 189 scaled by the probe gave (cost-qwen1.5b-batch,
# cost-curve-qwen1.5b: estimates 6-29 % over): none fixed.
QWEN_PACKED = 2520.23 / 2083.84  # the student padded / packed (cost-qwen1.5b-packed)
CALIBRATION = (
    (134_479_872, 0.501, 0.392, 49 / 119, 21 / 68, 0.49 / 0.33, 0.8, 133.62 / 102.13),  # SmolLM2-135M (cost-embedded,
    #                                                                                      -levers, -packed)
    (1_543_569_408, 0.617, 0.563, 112 / 144, 42 / 70, 0.607 / 0.509, 0.0, QWEN_PACKED),  # Qwen2.5-Coder-1.5B
    #                                                                         (cost-qwen1.5b, -batch, -packed)
)
CALIBRATION_PROBE = 190.0  # GFLOP/s: the probe of both calibration runs (189.8 and 189.2)
BATCH_MEASURED = 8  # the batch the speed-up was measured at; smaller batches get a linear share of it, larger none more
GROUPED_GAIN = 53.21 / 46.69  # --group-by-length: the student's speed-up with batches of about one length (fewer
#                              pads), batches of 8, embedded model (cost-embedded-grouped)
# On a GPU a call costs about the same at any of liftlm's widths (Python and kernel launches, not arithmetic), so
# each phase takes at least its sequential calls at this latency per layer of the model, measured on one H100
# (cost-h100): the teacher's 244 calls in 26.7 s with 30 layers; the student's steps 0.25-0.39 s with 28-30 layers,
# one sample or 8 or 32 a step. On a CPU the FLOPs always take longer, and the floor is not applied.
GPU_CALL_S_PER_LAYER = 0.0036
GPU_STEP_S_PER_LAYER = 0.0115


def matmul_weights(model) -> dict:
    """Weights used in matrix products per token: every ``nn.Linear`` (LoRA's excluded) incl. the LM head."""
    import torch

    head = model.get_output_embeddings()
    head_n = head.weight.numel() if head is not None else 0
    body = sum(m.weight.numel() for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and m is not head and "lora_" not in name)
    embed = model.get_input_embeddings()
    tied = head is not None and embed is not None and head.weight is embed.weight
    return {"body": body, "head": head_n, "total": body + head_n, "tied_embeddings": bool(tied)}


def attention_width(model) -> int:
    """A: the layers × attention heads × head size of ``model`` (a query token attending to one key costs 4·A
    FLOPs: the score and the weighted value); 0 when its config does not say."""
    config = getattr(model, "config", None)
    layers, heads = getattr(config, "num_hidden_layers", None), getattr(config, "num_attention_heads", None)
    if not layers or not heads:
        return 0
    head = getattr(config, "head_dim", None) or config.hidden_size // heads
    return layers * heads * head


@functools.cache
def machine_gflops(device: str = "cpu", dtype: str | None = None) -> float:
    """The matmul probe's GFLOP/s on ``device`` in ``dtype`` (a torch dtype's name), run once per process (~1 s):
    the best of 3 rounds of 0.3 s, as ``liftlm bench cost`` probes the machine, whose runs calibrated the shares. A
    shorter probe (0.05 s, best of 2) read 444 GFLOP/s before a run whose speed matched a probe of ~200."""
    import torch

    return matmul_probe(device, getattr(torch, dtype) if dtype else None, seconds=0.3, rounds=3)["gflops"]


@dataclass
class Estimate:
    """The estimate and the counts it assumed (tokens summed over passes and epochs)."""

    tokens: int  # the document's
    gflops: float  # the machine's matmul rate it assumed
    teacher_s: float
    student_s: float
    teacher: str  # "runs", "cached" (its items are read from the cache) or "none" (--objective ct)
    chunks: int = 0
    asks: int = 0  # prompts the teacher answers (pass 2)
    sentences: int = 0  # fact-bearing sentences: it writes questions about them (pass 1), asks them as clozes
    teacher_tokens: int = 0
    teacher_calls: int = 0  # the teacher's sequential forward calls, in the shape it runs in (``TeacherShape``)
    items: int = 0  # items the student trains on (each in every view)
    student_steps: int = 0  # the student's optimizer steps (one forward and backward call each)
    student_tokens: int = 0  # run forward and backward
    prefix_tokens: int = 0  # run forward only
    attention_flops: float = 0.0  # the student's samples' attention to the head+tail view (module docstring)
    view_tokens: int = 0  # the head+tail view's share of prefix_tokens (a long sequence: run at PREFIX_SHARE)
    view_flops: float = 0.0  # the attention within the view, each time it is computed
    student_done: float = 0.0  # the share of the student's samples a checkpoint holds (a resumed run)

    @property
    def student_left_s(self) -> float:
        return self.student_s * (1.0 - self.student_done)

    @property
    def total_s(self) -> float:
        """What is left to run: the teacher (unless cached) and the student's samples not yet trained."""
        return self.teacher_s + self.student_left_s

    def describe(self) -> str:
        """One line, e.g. ``estimated time: ~14 min (teacher ~4 min, student ~10 min) for 8,000 tokens at ~150
        GFLOP/s``; a resumed student says what is left, ``student ~6 min left: it resumes 40 % in``."""
        student = f"student {_duration(self.student_s)}"
        if self.student_done > 0:
            student = (f"student {_duration(self.student_left_s)} left: it resumes "
                       f"{math.floor(self.student_done * 100)} % in")
        parts = {"runs": f"teacher {_duration(self.teacher_s)}, {student}",
                 "cached": f"the teacher's items are cached; {student}",
                 "none": "training only, no teacher" + (f"; {student}" if self.student_done > 0 else "")}[
                     self.teacher]
        rate = f"{self.gflops / 1000:,.0f} TFLOP/s" if self.gflops >= 10_000 else f"{self.gflops:,.0f} GFLOP/s"
        return f"estimated time: {_duration(self.total_s)} ({parts}) for {self.tokens:,} tokens at ~{rate}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"~{max(seconds, 1):.0f} s"
    return f"~{seconds / 60:.0f} min" if seconds < 90 * 60 else f"~{seconds / 3600:.1f} h"


def _calibrated(weights: int) -> list[float]:
    (w0, *lo), (w1, *hi) = CALIBRATION
    t = min(max(math.log(max(weights, 1) / w0) / math.log(w1 / w0), 0.0), 1.0)
    return [a + t * (b - a) for a, b in zip(lo, hi)]


def estimate(n_tokens: int, cfg: LiftConfig, weights: int, gflops: float, window: int, teacher: bool = True,
             chat_before: int = CHAT_BEFORE, chat_after: int = CHAT_AFTER, attention: int = 0,
             device: str = "cpu", layers: int = 0, shape=None, sentences: int | None = None) -> Estimate:
    """The seconds of ``internalize`` on a document of ``n_tokens`` under ``cfg``, for a model of ``weights``
    matmul weights and ``attention`` width (``attention_width``; 0 leaves attention out) on a machine of
    ``gflops`` (the probe's). ``teacher=False``: the teacher's items are cached. Auxiliary QA synthesis
    (``--qa-pairs``) is not counted. On a GPU (``device`` not "cpu"), each phase takes at least its sequential
    calls at the latency measured per layer (``layers``: the model's) on one H100; ``shape``: the teacher's
    ``TeacherShape`` (default: a CPU's). ``sentences``: the document's fact-bearing sentences, counted
    (``liftlm.distill.teacher.document_fact_sentences``); None assumes ``FACT_SENTENCES_PER_TOKEN`` of them (the
    facts documents' rate: other texts hold 11 to 30 per 1k tokens)."""
    from .distill.teacher import TeacherShape

    shape = shape or TeacherShape()
    teacher_eff, student_eff, kept_share, written_rate, batch_gain, fixed, packed_gain = _calibrated(weights)
    if cfg.objective != "ct" and cfg.resolved_batch_size > 1:  # the distillation student's samples in batches
        share = min(cfg.resolved_batch_size - 1, BATCH_MEASURED - 1) / (BATCH_MEASURED - 1)
        student_eff *= 1 + (batch_gain - 1) * share
        if cfg.pack_batches:  # no pads left to group
            student_eff *= 1 + (packed_gain - 1) * share
        elif cfg.group_by_length:
            student_eff *= GROUPED_GAIN
    spans = segment_spans(n_tokens, cfg.segment_length, cfg.effective_stride)
    out = Estimate(n_tokens, gflops, 0.0, 0.0, "none" if cfg.objective == "ct" else "runs" if teacher else "cached",
                   chunks=len(spans))
    ct_epochs, item_epochs = cfg.epochs, 0
    if cfg.objective == "distill":
        ct_epochs, item_epochs = 0, cfg.epochs
    elif cfg.objective == "ct+distill":
        two = cfg.qa_schedule == "two-stage"
        ct_epochs, item_epochs = cfg.epochs + (cfg.qa_epochs if two else 0), cfg.qa_epochs if two else cfg.epochs
    if cfg.objective != "ct":
        _distill(out, cfg, spans, window, kept_share, written_rate, chat_before, chat_after, item_epochs, attention,
                 sentences)
        if out.teacher == "runs":
            out.teacher_calls = _teacher_calls(out, cfg, shape)
        batch = cfg.resolved_batch_size if cfg.objective == "distill" else 1
        per_chunk = math.ceil(out.items / max(out.chunks, 1) / batch) * out.chunks  # lift+chunk: by chunk
        out.student_steps = item_epochs * sum(per_chunk if v == "lift+chunk" else math.ceil(out.items / batch)
                                              for v in cfg.views)
    if ct_epochs:
        _ct(out, cfg, window, ct_epochs)
        out.student_steps += ct_epochs * out.chunks
    rate = cpu_rate(gflops, fixed) * 1e9 if device == "cpu" else gflops * 1e9
    if out.teacher == "runs":
        out.teacher_s = 2 * weights * out.teacher_tokens / (rate * teacher_eff)
    backward = 2 * cfg.backward_share
    out.student_s = (2 + backward) * weights * out.student_tokens / (rate * student_eff) \
        + 2 * weights * (out.prefix_tokens - out.view_tokens) / (rate * student_eff) \
        + (2 * weights * out.view_tokens + out.view_flops) / (rate * PREFIX_SHARE) \
        + out.attention_flops / (rate * ATTENTION_SHARE)
    if device != "cpu" and layers:  # a GPU: the sequential calls' latency is the floor
        out.teacher_s = max(out.teacher_s, out.teacher_calls * layers * GPU_CALL_S_PER_LAYER)
        out.student_s = max(out.student_s, out.student_steps * layers * GPU_STEP_S_PER_LAYER)
    return out


def cpu_rate(gflops: float, fixed: float) -> float:
    """The probe's GFLOP/s as the shares are to be applied to it on a CPU: the ``fixed`` share of the calibrated time
    stays at ``CALIBRATION_PROBE``'s speed, the rest follows the probe (the same at the calibration's probe)."""
    return 1 / (fixed / CALIBRATION_PROBE + (1 - fixed) / max(gflops, 1e-9))


def _teacher_calls(out: Estimate, cfg: LiftConfig, shape) -> int:
    """The teacher's sequential forward calls: its chunks' prefills, ``shape.prefill`` a call, and per group of
    ``shape.blocks`` blocks a writing pass (batches of ``shape.width`` rows, each decoding up to the written
    questions' tokens) and an answering pass (each batch up to the answer's tokens), the prompts spread over the
    groups as their chunks are."""
    from .distill.teacher import TEACH_BLOCK

    group = TEACH_BLOCK * shape.blocks
    calls = math.ceil(out.chunks / max(shape.prefill, 1))
    writes = out.sentences if cfg.distill_questions > 0 else 0
    for g0 in range(0, out.chunks, group):
        share = (min(g0 + group, out.chunks) - g0) / out.chunks
        if writes:
            calls += math.ceil(writes * share / shape.width) * WRITE_TOKENS * cfg.distill_questions
        calls += math.ceil(out.asks * share / shape.width) * cfg.distill_answer_tokens
    return calls


def _distill(out: Estimate, cfg: LiftConfig, spans, window: int, kept_share: float, written_rate: float,
             before: int, after: int, epochs: int, attention: int, sentences: int | None = None) -> None:
    """The teacher's tokens (both passes) and the student's, for the distillation items (``sentences``: the
    document's fact-bearing sentences, counted; None: at ``FACT_SENTENCES_PER_TOKEN``)."""
    chunks, answer = len(spans), cfg.distill_answer_tokens
    prefill = sum(b - a for a, b in spans) + chunks * before  # a chunk runs once per pass, after the chat's start
    written = 0.0
    teacher_tokens = prefill
    if cfg.distill_questions > 0 or cfg.distill_cloze:
        out.sentences = round(out.tokens * FACT_SENTENCES_PER_TOKEN) if sentences is None else sentences
    if cfg.distill_questions > 0:  # pass 1: questions written about each fact sentence, each once per document
        with_new = 1 - math.exp(-out.sentences / chunks) if chunks else 0.0  # chunks with a new fact sentence
        teacher_tokens += with_new * prefill + out.sentences * (WRITE_WIDTH + WRITE_TOKENS * cfg.distill_questions)
        written = out.sentences * cfg.distill_questions * written_rate
    clozes = 0.0
    if cfg.distill_cloze and cfg.distill_prompts == 0:
        clozes = out.sentences * CLOZES_PER_SENTENCE * BLANKED[min(cfg.distill_blanks, len(BLANKED)) - 1]
    doc_asks = chunks * cfg.distill_prompts + written + clozes
    out.asks = round(doc_asks / (1 - cfg.distill_retention))  # plus the retention prompts
    # every answer runs to the limit, but a cloze's (its row leaves the decoding batch when it ends)
    out.teacher_tokens = round(teacher_tokens + (out.asks - clozes) * (ASK_WIDTH + answer)
                               + clozes * (CLOZE_WIDTH + CLOZE_ANSWER))
    out.items = round(out.asks * kept_share)
    sample = QUESTION_TOKENS + ANSWER_SHARE * answer
    cloze_items = clozes * kept_share
    answered = (out.items - cloze_items) * ANSWER_SHARE * answer + cloze_items * CLOZE_ANSWER
    for view in cfg.views:
        lift = before if view == "lift" else 0
        asked = (out.items - cloze_items) * (QUESTION_TOKENS + lift) + cloze_items * (CLOZE_WIDTH + lift)
        if cfg.question_grad:
            out.student_tokens += round(epochs * (asked + answered))
        else:  # --no-question-grad: the questions run forward only
            out.student_tokens += round(epochs * answered)
            out.prefix_tokens += round(epochs * asked)
    # a view's trained tokens (lift+icl's, lift+chunk's), each attending to what precedes it
    trained = epochs * ((out.items - cloze_items) * sample + cloze_items * (CLOZE_WIDTH + CLOZE_ANSWER))
    if "lift+icl" in cfg.views:  # the head+tail view: as long as the window leaves room for, once per ~view/64 samples
        view = before + max(0, min(out.tokens, window - before - after - LONGEST_QUESTION - answer))
        reuse = cfg.prefix_refresh or max(PREFIX_REFRESH, view // PREFIX_TOKENS_PER_REUSE)
        _shared_view(out, view, math.ceil(epochs * out.items / reuse), trained, attention, cfg.backward_share)
    if "lift+chunk" in cfg.views:  # each chunk with the chat's start, once per epoch for its items (8 or fewer)
        view = before + cfg.segment_length
        reuse = cfg.prefix_refresh or max(PREFIX_REFRESH, view // PREFIX_TOKENS_PER_REUSE)
        computed = epochs * chunks * math.ceil(out.items / max(chunks, 1) / reuse)
        _shared_view(out, view, computed, trained, attention, cfg.backward_share)


def _shared_view(out: Estimate, view: int, computed: int, trained: float, attention: int, backward_share: float) -> None:
    """A prefix of ``view`` tokens computed ``computed`` times (forward only), and the ``trained`` tokens that
    attend to it."""
    out.prefix_tokens += computed * view
    out.view_tokens += computed * view
    out.attention_flops += 4 * attention * view * trained * (1 + backward_share)
    out.view_flops += computed * 2 * attention * view**2


def _ct(out: Estimate, cfg: LiftConfig, window: int, epochs: int) -> None:
    """The student's tokens for the paper's segments (``--training-mode overlap``/``recurrent``: each token trained
    once, the previous ℓ − s tokens and the context run forward only; recurrent counted as overlap)."""
    seg, stride = min(cfg.segment_length, out.tokens), cfg.effective_stride
    context = 0
    if cfg.contextualized:
        room = window - seg - CT_PROMPT
        given = cfg.context_tokens if cfg.context_tokens and cfg.context_tokens > 0 else room
        context = max(0, min(room, given, out.tokens)) + CT_PROMPT
    if cfg.training_mode == "paper":
        out.student_tokens += epochs * out.chunks * (seg + context)
    else:
        spans = math.ceil(out.tokens / stride)
        out.student_tokens += epochs * out.tokens
        out.prefix_tokens += epochs * spans * (context + seg - stride)
