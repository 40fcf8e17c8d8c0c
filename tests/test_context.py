import pytest

from liftlm.context import (
    ELLIPSIS,
    IGNORE_INDEX,
    RECITE_INSTRUCTION,
    ChatFormat,
    PromptBuilder,
    truncate_head_tail,
)

DEFAULT_SYSTEM = "You are a tiny test assistant."  # the default system turn of the fixture template (conftest.py)


def test_truncate_keeps_head_and_tail_exactly():
    ids, sep = list(range(100)), [-1, -2]
    out = truncate_head_tail(ids, 20, sep)
    assert len(out) == 20
    assert out == list(range(9)) + sep + list(range(91, 100))  # 18 kept: 9 head, 9 tail
    assert truncate_head_tail(ids, 100, sep) == ids
    assert truncate_head_tail(ids, 21, sep)[:10] == list(range(10))  # odd split: head gets the extra one


def test_chat_format_wraps_the_user_turn(tiny_tokenizer):
    chat = ChatFormat.for_tokenizer(tiny_tokenizer)
    # the template inserts its default system turn, as SmolLM2's and Qwen2.5's do
    assert tiny_tokenizer.decode(chat.before) == (f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
                                                  "<|im_start|>user\n")
    assert tiny_tokenizer.decode(chat.after) == "<|im_end|>\n<|im_start|>assistant\n"


def test_chat_format_without_template(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    chat = ChatFormat.for_tokenizer(tok)
    assert chat.before == [tok.bos_token_id]
    assert tok.decode(chat.after) == "\nAnswer:"


@pytest.mark.parametrize("fmt", ["raw", "chat"])
def test_ct_sample_masks_token_by_token(tiny_tokenizer, fmt):
    b = PromptBuilder(tiny_tokenizer, window=200)
    doc = tiny_tokenizer.encode("The lighthouse keeper of Varnholm kept a ledger of every ship. " * 40)
    segment = doc[300:364]
    s = b.ct_sample(doc, segment, context_tokens=None, fmt=fmt)
    before, after = (b.raw_before, b.raw_after) if fmt == "raw" else (b.chat.before, b.chat.after)
    assert len(s.input_ids) == len(s.labels) <= 200
    n_prompt = len(s.input_ids) - len(segment)
    # loss on the segment tokens only, and exactly on them
    assert s.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert s.labels[n_prompt:] == segment == s.input_ids[n_prompt:]
    assert s.n_loss_tokens == len(segment)
    # the prompt: prefix (chat turn or none), head of the document, "...", tail, instruction, cue
    prompt = s.input_ids[:n_prompt]
    assert prompt[: len(before)] == before
    assert prompt[-len(after):] == after
    context = prompt[len(before): n_prompt - len(after) - len(b.recite)]
    assert prompt[n_prompt - len(after) - len(b.recite): n_prompt - len(after)] == b.recite
    head = (len(context) - len(b.sep) + 1) // 2
    tail = len(context) - len(b.sep) - head
    assert context == doc[:head] + b.sep + doc[-tail:]
    assert tiny_tokenizer.decode(b.sep) == ELLIPSIS
    assert RECITE_INSTRUCTION in tiny_tokenizer.decode(b.recite)
    assert len(s.input_ids) == 200  # the context fills the window when not capped


def test_ct_sample_context_cap(tiny_tokenizer):
    b = PromptBuilder(tiny_tokenizer, window=1000)
    doc = tiny_tokenizer.encode("Questions and answers: what is the capital of France? Paris. " * 30)
    s = b.ct_sample(doc, doc[:32], context_tokens=50)
    assert len(s.input_ids) == len(b.raw_before) + 50 + len(b.recite) + len(b.raw_after) + 32
    s = b.ct_sample(doc, doc[:32], context_tokens=50, fmt="chat")
    assert len(s.input_ids) == b.chat.overhead + 50 + len(b.recite) + 32


def test_ct_sample_whole_short_document_in_context(tiny_tokenizer):
    b = PromptBuilder(tiny_tokenizer, window=1000)
    doc = tiny_tokenizer.encode("A short text about a brass telescope.")
    s = b.ct_sample(doc, doc, context_tokens=None)
    assert s.input_ids[len(b.raw_before): len(b.raw_before) + len(doc)] == doc


def test_ct_sample_too_small_window(tiny_tokenizer):
    b = PromptBuilder(tiny_tokenizer, window=40)
    doc = tiny_tokenizer.encode("word " * 200)
    with pytest.raises(ValueError, match="window"):
        b.ct_sample(doc, doc[:32], context_tokens=None)


def test_plain_sample_is_the_segment(tiny_tokenizer):
    b = PromptBuilder(tiny_tokenizer, window=100)
    s = b.plain_sample([5, 6, 7])
    assert s.input_ids == s.labels == [5, 6, 7]


def test_question_prompts_per_mode(tiny_tokenizer):
    b = PromptBuilder(tiny_tokenizer, window=160)
    doc = tiny_tokenizer.encode("The telescope was made in Glasgow in 1881 and still works. " * 30)
    icl = b.question_prompt("Where was it made?", doc, max_new_tokens=20)
    assert len(icl) + 20 <= 160
    assert doc[:5] == icl[len(b.chat.before): len(b.chat.before) + 5]  # head of the document
    text = tiny_tokenizer.decode(icl)
    assert "..." in text and text.rstrip().endswith("assistant")
    lift = b.question_prompt("Where was it made?", None, max_new_tokens=20)
    assert "telescope" not in tiny_tokenizer.decode(lift) and "Where was it made?" in tiny_tokenizer.decode(lift)


def test_question_too_long_for_window(tiny_tokenizer):
    b = PromptBuilder(tiny_tokenizer, window=60)
    with pytest.raises(ValueError, match="too small to hold the question"):
        b.question_prompt("why " * 80, [1, 2, 3], max_new_tokens=10)


def test_qa_sample_loss_on_the_answer_only(tiny_tokenizer):
    b = PromptBuilder(tiny_tokenizer, window=300)
    doc = tiny_tokenizer.encode("The telescope was made in Glasgow in 1881 and still works. " * 30)
    s = b.qa_sample(doc, "Where was the telescope made?", " Glasgow ", context_tokens=64)
    answer = tiny_tokenizer.encode("Glasgow") + [tiny_tokenizer.eos_token_id]
    n_prompt = len(s.input_ids) - len(answer)
    assert s.input_ids[n_prompt:] == answer and s.labels[n_prompt:] == answer
    assert s.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    # the prompt is exactly the lift+icl question prompt with a 64-token document view
    prompt = s.input_ids[:n_prompt]
    assert prompt[: len(b.chat.before)] == b.chat.before and prompt[-len(b.chat.after):] == b.chat.after
    assert "Question: Where was the telescope made?" in tiny_tokenizer.decode(prompt)
    assert len(prompt) == b.chat.overhead + 64 + len(b.question_tail("Where was the telescope made?"))


def test_qa_sample_without_context_is_the_lift_prompt(tiny_tokenizer):
    b = PromptBuilder(tiny_tokenizer, window=300)
    s = b.qa_sample([1, 2, 3] * 50, "Where was the telescope made?", "Glasgow", context_tokens=0)
    n_answer = len(tiny_tokenizer.encode("Glasgow")) + 1
    assert s.input_ids[:-n_answer] == b.question_prompt("Where was the telescope made?", None, 1)
    assert s.n_loss_tokens == n_answer


def test_raw_ct_samples_carry_no_chat_turn_and_no_target_holds_the_system_message(tiny_tokenizer):
    """The default CT layout is the authors' raw text: the template's default system turn is nowhere in it; and in
    no layout is that text ever a training target (it would teach the model to say it)."""
    from liftlm.config import LiftConfig
    from liftlm.train import build_samples

    b = PromptBuilder(tiny_tokenizer, window=200)
    doc = tiny_tokenizer.encode("The lighthouse keeper of Varnholm kept a ledger of every ship. " * 40)
    for fmt, mode in [("raw", "paper"), ("chat", "paper"), ("raw", "overlap"), ("raw", "recurrent")]:
        cfg = LiftConfig(objective="ct", segment_length=64, ct_format=fmt, training_mode=mode)
        for s in build_samples(doc, cfg, b):
            ids = s.input_ids if mode == "paper" else s.prefix_ids + s.target_ids
            targets = [t for t in s.labels if t != IGNORE_INDEX] if mode == "paper" else s.target_ids
            assert DEFAULT_SYSTEM not in tiny_tokenizer.decode(targets)
            text = tiny_tokenizer.decode(ids)
            assert (DEFAULT_SYSTEM in text) == (fmt == "chat")
            assert ("<|im_start|>" in text) == (fmt == "chat")
    qa = b.qa_sample(doc, "Who kept the ledger?", "The keeper.", context_tokens=64)
    assert DEFAULT_SYSTEM not in tiny_tokenizer.decode([t for t in qa.labels if t != IGNORE_INDEX])
