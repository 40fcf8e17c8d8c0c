"""Truncation and prompts: what the model sees around the document.

* ``truncate_head_tail`` keeps the beginning and the end of the document joined by "..." (paper §3.2 and its
  ICL baseline).
* ``ct_sample`` builds one contextualized-training sample: the truncated document, an instruction to recite the
  following segment, then the segment; the loss is on the segment tokens only. As raw text by default, as the
  authors build them (``ct_format="raw"``: no chat template, so no system turn that a template would insert and
  that training would then tie to the document), or inside one chat turn (``"chat"``).
* ``question_prompt`` builds the prompt of the three inference modes (icl, lift, lift+icl).

Question prompts go through the tokenizer's chat template when it has one. Everything is assembled at the token level
(template text around a slot, document ids spliced in), so a truncation is exact to the token.
"""
from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100  # label of positions that carry no loss (PyTorch's cross-entropy default)

ELLIPSIS = "\n...\n"
RECITE_INSTRUCTION = "Given the above context, please recite the following segment of the context."
CT_FORMATS = ("raw", "chat")
ICL_INSTRUCTION = "Please answer the question based on the text above."
LIFT_INSTRUCTION = "Please answer the question based on the document you have read."

_SLOT = "\u2063LIFTLM_SLOT\u2063"  # an invisible separator that no template or text contains


@dataclass(frozen=True)
class ChatFormat:
    """Token ids before and after the user's message, ending where the assistant's reply begins."""

    before: list[int]
    after: list[int]

    @classmethod
    def for_tokenizer(cls, tokenizer) -> ChatFormat:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": _SLOT}], tokenize=False, add_generation_prompt=True
            )
            head, tail = text.split(_SLOT)
            return cls(_encode(tokenizer, head), _encode(tokenizer, tail))
        # A base model without a chat template: plain text, optional BOS, and an "Answer:" cue.
        bos = [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None else []
        return cls(bos, _encode(tokenizer, "\nAnswer:"))

    @property
    def overhead(self) -> int:
        return len(self.before) + len(self.after)


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def _default_prefix(tokenizer) -> list[int]:
    """The special tokens the tokenizer adds in front of plain text by default (Llama's BOS; none for ChatML
    models such as Qwen2.5 and SmolLM2)."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    return full[: len(full) - len(plain)] if full[len(full) - len(plain):] == plain else []


def truncate_head_tail(ids: list[int], budget: int, sep: list[int]) -> list[int]:
    """Keep the first and last tokens of ``ids`` joined by ``sep`` so that the result has at most ``budget``
    tokens; ``ids`` unchanged when it fits. The head gets the extra token when the split is odd."""
    if budget < 0:
        raise ValueError(f"negative budget {budget}")
    if len(ids) <= budget:
        return list(ids)
    keep = budget - len(sep)
    if keep <= 0:
        return list(ids[:budget])
    head = (keep + 1) // 2
    tail = keep - head
    return list(ids[:head]) + list(sep) + (list(ids[-tail:]) if tail else [])


@dataclass
class Sample:
    """One training sample: token ids and labels (``IGNORE_INDEX`` where no loss is taken)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def n_loss_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


class PromptBuilder:
    """Builds training samples and question prompts for one tokenizer and one window."""

    def __init__(self, tokenizer, window: int):
        self.tokenizer = tokenizer
        self.window = window
        self.chat = ChatFormat.for_tokenizer(tokenizer)
        self.sep = _encode(tokenizer, ELLIPSIS)
        self.recite = _encode(tokenizer, "\n\n" + RECITE_INSTRUCTION)
        self.raw_before = _default_prefix(tokenizer)  # what the tokenizer puts before plain text (a BOS, or nothing)
        self.raw_after = _encode(tokenizer, ":\n")

    # --- training ---
    def plain_sample(self, segment: list[int]) -> Sample:
        """Next-token loss on the segment itself (every token but the first is a target)."""
        return Sample(list(segment), list(segment))

    def ct_sample(self, doc_ids: list[int], segment: list[int], context_tokens: int | None,
                  fmt: str = "raw") -> Sample:
        """Truncated document + recite instruction + segment, as raw text (``fmt="raw"``) or inside the chat
        format (``"chat"``: [chat prefix] ... [assistant cue]); loss on the segment only."""
        if fmt not in CT_FORMATS:
            raise ValueError(f"unknown CT format {fmt!r}; choose from {', '.join(CT_FORMATS)}")
        before, after = (self.raw_before, self.raw_after) if fmt == "raw" else (self.chat.before, self.chat.after)
        room = self.window - len(before) - len(after) - len(self.recite) - len(segment)
        if context_tokens is not None and context_tokens > 0:
            room = min(room, context_tokens)
        if room <= len(self.sep):
            raise ValueError(
                f"window {self.window} cannot hold a segment of {len(segment)} tokens with its context; "
                "use a smaller segment length or a larger window"
            )
        context = truncate_head_tail(doc_ids, room, self.sep)
        prompt = before + context + self.recite + after
        return Sample(prompt + list(segment), [IGNORE_INDEX] * len(prompt) + list(segment))

    def qa_sample(self, doc_ids: list[int], question: str, answer: str, context_tokens: int | None) -> Sample:
        """An auxiliary-task sample (paper §3.3): the question prompt of mode ``lift+icl`` (truncated document
        + question) and the answer; loss on the answer tokens and the end-of-turn token only.
        ``context_tokens == 0``: the prompt of mode ``lift`` (the question alone)."""
        answer_ids = _encode(self.tokenizer, answer.strip())
        if self.tokenizer.eos_token_id is not None:
            answer_ids.append(self.tokenizer.eos_token_id)  # so the model learns to stop after the answer
        if context_tokens == 0:
            prompt = self.question_prompt(question, None, len(answer_ids))
            return Sample(prompt + answer_ids, [IGNORE_INDEX] * len(prompt) + answer_ids)
        tail = self.question_tail(question)
        room = self.window - self.chat.overhead - len(tail) - len(answer_ids)
        if context_tokens is not None and context_tokens > 0:
            room = min(room, context_tokens)
        if room < 1:
            raise ValueError(f"window {self.window} cannot hold the QA pair {question[:40]!r}…")
        prompt = self.chat.before + truncate_head_tail(doc_ids, room, self.sep) + tail + self.chat.after
        return Sample(prompt + answer_ids, [IGNORE_INDEX] * len(prompt) + answer_ids)

    # --- prompts of one's own (e.g. a benchmark's task templates) ---
    def chat_prompt(self, before: list[int], after: list[int] = ()) -> tuple[list[int], list[int]]:
        """The ids before and after a slot inside one user turn, with the chat format around them."""
        return self.chat.before + list(before), list(after) + self.chat.after

    def truncate(self, doc_ids: list[int], budget: int) -> list[int]:
        """The document's head and tail within ``budget`` tokens, joined as every prompt here joins them."""
        return truncate_head_tail(doc_ids, budget, self.sep)

    # --- inference ---
    def question_prompt(self, question: str, doc_ids: list[int] | None, max_new_tokens: int) -> list[int]:
        """The prompt for one question; ``doc_ids`` None means no document in context (mode ``lift``).

        With a document, it is cut (head + tail) so that prompt + answer fit in the window."""
        if doc_ids is None:
            body = _encode(self.tokenizer, f"{LIFT_INSTRUCTION}\nQuestion: {question}")
            prompt = self.chat.before + body + self.chat.after
            if len(prompt) + max_new_tokens > self.window:
                raise ValueError(f"window {self.window} is too small to hold the question ({len(prompt)} tokens "
                                 f"with the prompt format) and {max_new_tokens} answer tokens")
            return prompt
        tail = self.question_tail(question)
        room = self._room(tail, max_new_tokens)
        return self.chat.before + truncate_head_tail(doc_ids, room, self.sep) + tail + self.chat.after

    def document_room(self, question: str, max_new_tokens: int) -> int:
        """Tokens of document that fit beside the question, the prompt format and the answer."""
        return self._room(self.question_tail(question), max_new_tokens)

    def _room(self, tail: list[int], max_new_tokens: int) -> int:
        room = self.window - max_new_tokens - self.chat.overhead - len(tail)
        if room < 1:
            raise ValueError(
                f"window {self.window} is too small to hold the question ({len(tail)} tokens with the "
                f"instruction, {self.chat.overhead} of prompt format) and {max_new_tokens} answer tokens"
            )
        return room

    def question_tail(self, question: str) -> list[int]:
        """The ids that follow the document in a prompt with one (modes ``lift+icl`` and ``icl``, QA samples,
        distillation students): the instruction and the question, before the assistant cue (``chat.after``)."""
        return _encode(self.tokenizer, f"\n\n{ICL_INSTRUCTION}\nQuestion: {question}")
