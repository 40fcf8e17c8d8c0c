"""Context distillation: prompts, the teacher's cached answers, the student's soft loss (with and without the
shared head+tail prefix), and the objective end to end through ``Lift``."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from liftlm.config import LiftConfig
from liftlm.context import PromptBuilder
from liftlm.distill import (
    CLOZE_PROMPT,
    DistillItem,
    SoftLoss,
    cloze,
    clozes,
    fact_sentences,
    grounded,
    hard_loss,
    retention_prompts,
    seed_prompts,
    sentence_names,
    soft_loss,
    student_samples,
    teach,
    whole_sentences,
    written_questions,
)
from liftlm.errors import LiftError

TEXT = ("The ferry at Varnholm was painted ochre by Ilsa Brandt in 1931. The keeper's ledger lists forty-one "
        "ships that sheltered in the bay during the great storm. A brass telescope from Glasgow stands beside it. ")


def test_seed_prompts_are_diverse_and_about_the_chunk():
    prompts = seed_prompts(TEXT * 2, 6)
    kinds = [k for k, _ in prompts]
    assert len(prompts) == 6 and "summary" in kinds
    questions = [p for k, p in prompts if k not in ("summary", "next")]
    assert len({k for k in kinds if k not in ("summary", "next")}) >= 3  # several phrasings
    assert questions[:3] == ["What does the text say about Varnholm?", "What does the passage tell us about Ilsa "
                             "Brandt?", "According to the text, who or what is Glasgow?"]  # names first, in order
    assert seed_prompts(TEXT * 2, 6, index=1) != prompts  # neighbouring chunks rotate the phrasings


def test_each_name_is_asked_twice_per_document_in_two_phrasings():
    phrasings: dict[str, list[str]] = {}
    chunks = [seed_prompts(TEXT, 4, i, phrasings) for i in range(4)]
    about = {}
    for prompts in chunks:
        for kind, prompt in prompts:
            for name in (() if kind == "next" else ("Varnholm", "Ilsa Brandt", "Glasgow")):
                if name in prompt:
                    about.setdefault(name, []).append(kind)
    assert {name: len(kinds) for name, kinds in about.items()} == {"Varnholm": 2, "Ilsa Brandt": 2, "Glasgow": 2}
    assert all(len(set(kinds)) == 2 for kinds in about.values())  # a second phrasing, not the same question
    assert phrasings == about
    assert [k for k, _ in chunks[-1]] == ["summary", "next"] or "summary" in dict(chunks[-1])  # names used up


def test_names_come_from_whole_sentences_and_not_from_capitalised_openers():
    text = ("ing the harbour of Tullby. Smoking rapidly became a habit. Later the keeper moved to Morness and "
            "Smoking was banned there. The ferry was painted by Ansel")
    middle = " ".join(p for k, p in seed_prompts(text, 8, first=False, last=False) if k != "next")
    assert "Tullby" not in middle and "Ansel" not in middle  # the sentences cut at the chunk's edges
    assert "Morness" in middle and "Smoking" in middle  # capitalised inside a sentence too: a name
    assert "Later" not in middle
    whole = " ".join(p for _, p in seed_prompts(text, 8, first=True, last=True))
    assert "Tullby" in whole and "Ansel" in whole
    assert sentence_names(["Smoking rapidly became a habit.", "Later it was banned.", "\"Good\" is a word."]) == []
    assert sentence_names(["The Tullby ferry was painted by Ilsa Brandt.", "Tullby is small."]) == ["Tullby", "Ilsa Brandt"]


def test_a_cloze_blanks_the_sentences_fact():
    assert cloze("One of the special magic numbers for zovobip is: 2237192.") == (
        "One of the special magic numbers for zovobip is: ___.")
    assert cloze("The ferry at Varnholm was painted ochre by Ilsa Brandt in 1931.") == (
        "The ferry at Varnholm was painted ochre by Ilsa Brandt in ___.")  # the number, not the names
    assert cloze("The tongue spoken in Morness is Kevar.") == "The tongue spoken in Morness is ___."
    assert cloze("The tongue spoken in Morness is Kevar Old.") == "The tongue spoken in Morness is ___."  # the name
    assert cloze("The garden of the Pufilmoor monastery is full of dahlias.") == (
        "The garden of the Pufilmoor monastery is full of ___.")  # the name is not the end: the last word
    assert cloze("the keeper slept in the old tower.") is None  # no name, no number: no fact to ask for
    assert cloze("in the last 20 years.") is None  # a fragment
    assert cloze("the Internet got me in 2009 because it became addictive while I was") is None  # a wrapped line


def _keyed_document(n: int) -> str:
    """Sentences, each a fact that no name points at (a lowercase key and its number), between named ones."""
    return " ".join(f"The value for key{chr(97 + i % 26)}{i} is {1000 + i}. Ansel met Brenna and Corwin at Dunmore."
                    for i in range(n))


def _asked_by_chunk(n_prompts: int, blanks: int = 1):
    """``_keyed_document(12)`` cut into overlapping chunks of 40 words, 15 apart, and each chunk's seed prompts with
    clozes at ``n_prompts`` a chunk, in document order: (chunk texts, spans, its length in words, the sentences each chunk is the
    last to hold whole, the sentences asked as clozes, the prompts per chunk)."""
    from liftlm.distill.teacher import _last_whole

    words = _keyed_document(12).split(" ")
    spans = [(a, min(a + 40, len(words))) for a in range(0, len(words) - 15, 15)]
    texts = [" ".join(words[a:b]) for a, b in spans]
    n = spans[-1][1]
    due = _last_whole(texts, spans, n)
    clozed: set[str] = set()
    asked = [seed_prompts(t, n_prompts, i, {}, first=a == 0, last=b == n, clozed=clozed, due=due[i], blanks=blanks)
             for i, (t, (a, b)) in enumerate(zip(texts, spans))]
    return texts, spans, n, due, clozed, asked


def test_more_blanks_ask_for_each_fact_of_the_sentence_in_turn():
    s = "Henrike Dalgren taught Bertil Rurinas to play the viola."
    assert clozes(s) == [cloze(s)] == ["Henrike Dalgren taught Bertil Rurinas to play the ___."]
    assert clozes(s, 3) == [cloze(s), "Henrike Dalgren taught ___ to play the viola.",
                            "___ taught Bertil Rurinas to play the viola."]
    assert len(clozes(s, 10)) == 3  # nothing else to blank
    # the number first, then the names; a name's last word is not blanked on its own
    assert clozes("Thora Lorrimer was born in Vidolsund in 1785.", 3) == [
        "Thora Lorrimer was born in Vidolsund in ___.", "Thora Lorrimer was born in ___ in 1785.",
        "___ was born in Vidolsund in 1785."]
    assert clozes("The portrait in the Skarthorpe library was painted by Tomas Brenmark.", 3) == [
        "The portrait in the Skarthorpe library was painted by ___.",
        "The portrait in the ___ library was painted by Tomas Brenmark."]
    assert clozes("in the last 20 years.", 3) == []
    with pytest.raises(LiftError, match="--distill-blanks"):
        LiftConfig(distill_cloze=True, distill_blanks=0)
    one, three = LiftConfig(distill_cloze=True), LiftConfig(distill_cloze=True, distill_blanks=3)
    assert "distill_blanks" not in one.key_dict() and three.key_dict()["distill_blanks"] == 3
    assert "distill_blanks" not in LiftConfig(distill_blanks=3).key_dict()  # no clozes: nothing blanked
    from liftlm.distill import DistillSource

    assert DistillSource(one, "m", "/c").cache_path("d") != DistillSource(three, "m", "/c").cache_path("d")
    # every sentence's clozes asked together, once in the document
    *_, clozed, by_chunk = _asked_by_chunk(0, blanks=3)
    asked = [p for prompts in by_chunk for _, p in prompts]
    expected = [CLOZE_PROMPT.format(s=c) for x in clozed for c in clozes(x, 3)]
    assert sorted(asked) == sorted(expected) and len(asked) > len(clozed)


def test_with_cloze_every_fact_sentence_is_asked_once_in_the_document():
    """Names fill every slot of these chunks (4 names, 4 prompts), yet each sentence with a number is asked as a
    cloze exactly once: in a free slot, or at the latest in the last chunk that holds it whole. Off, the prompts
    are as before."""
    texts, spans, n, _, _, asked = _asked_by_chunk(4)
    asked_clozes = [p for prompts in asked for k, p in prompts if k == "cloze"]
    facts = {x for t, (a, b) in zip(texts, spans) for x in fact_sentences(whole_sentences(t, a == 0, b == n))
             if any(c.isdigit() for c in x)}
    assert len(facts) >= 10
    for x in facts:  # each once, with its number blanked
        assert sum(f'"{cloze(x)}"' in p for p in asked_clozes) == 1, x
    assert all(p.startswith(CLOZE_PROMPT.split("{")[0]) and "___" in p for p in asked_clozes)
    assert max(len(prompts) for prompts in asked) > 4  # some had to go beyond the chunk's 4 slots
    off = [seed_prompts(t, 4, i, {}, first=a == 0, last=b == n) for i, (t, (a, b)) in enumerate(zip(texts, spans))]
    assert all(len(prompts) <= 4 and "cloze" not in dict(prompts) for prompts in off)


def test_with_no_prompts_per_chunk_only_the_clozes_are_asked_each_once():
    """--distill-prompts 0 --distill-cloze: no names, key phrases, summaries or what-happens-next requests; each
    fact-bearing sentence asked once, in the last chunk that holds it whole."""
    texts, spans, n, due, _, asked = _asked_by_chunk(0)
    assert {k for prompts in asked for k, _ in prompts} == {"cloze"}
    facts = {x for t, (a, b) in zip(texts, spans) for x in fact_sentences(whole_sentences(t, a == 0, b == n))
             if cloze(x)}
    assert sum(map(len, asked)) == len(facts) >= 10
    for i, prompts in enumerate(asked):  # each where the sentence is last whole
        assert sorted(p for _, p in prompts) == sorted(CLOZE_PROMPT.format(s=cloze(x)) for x in due[i] if cloze(x))
    assert seed_prompts(texts[0], 0, 0, {}, first=True, last=False) == []  # without clozes: nothing


def test_no_prompts_per_chunk_needs_clozes_or_written_questions():
    with pytest.raises(LiftError, match="--distill-prompts 0 asks nothing"):
        LiftConfig(objective="distill", distill_prompts=0, distill_questions=0)
    with pytest.raises(LiftError, match="--distill-prompts must be 0 or more"):
        LiftConfig(objective="distill", distill_prompts=-1)
    LiftConfig(objective="distill", distill_prompts=0, distill_questions=0, distill_cloze=True)
    LiftConfig(objective="distill", distill_prompts=0)  # the written questions
    LiftConfig(objective="ct", distill_prompts=0, distill_questions=0)  # (no items at all)
    lean, default = (LiftConfig(distill_prompts=p, distill_cloze=True) for p in (0, 4))
    assert lean.key_dict() != default.key_dict()


def test_the_cloze_setting_keys_items_and_adapters_apart(tmp_path):
    from liftlm.distill import DistillSource
    from liftlm.keys import training_settings

    on, off = LiftConfig(distill_cloze=True), LiftConfig()
    assert "distill_cloze" not in off.key_dict() and on.key_dict()["distill_cloze"] is True
    assert training_settings(on, 512) != training_settings(off, 512)
    assert "distill_cloze" not in LiftConfig(objective="ct", distill_cloze=True).key_dict()
    paths = {DistillSource(c, "m", tmp_path).cache_path("a document") for c in (on, off)}
    assert len(paths) == 2
    assert "cloze" in LiftConfig(distill_kinds="cloze,retention").kinds


def test_teacher_answers_must_say_what_the_chunk_says():
    chunk = "Every morning Gustav Tusozur ate herring for breakfast. Henrike Tessaro opened the first bakery in Busismere."
    assert grounded("Henrike Tessaro opened the first bakery in Busismere.", "What does the text say about Busismere?",
                    chunk)
    assert grounded("Gustav Tusozur is a person who eats herring for breakfast every morning.",
                    "According to the text, who or what is Gustav Tusozur?", chunk)
    assert not grounded("Busismere is a small island in the Maldives, located in the Indian Ocean.",
                        "Who or what is Busismere?", chunk)  # from the model's own knowledge
    assert not grounded("I'm sorry, but I can't assist with that.", "Tell me about Gustav Tusozur.", chunk)
    assert not grounded("The text does not mention Gustav Tusozur.", "What does the text say about Gustav Tusozur?",
                        chunk)


def test_a_short_number_from_the_chunk_is_grounded():
    """A cloze's answer is often a bare number: one of three digits or fewer says what the chunk says when the chunk
    has it, and does not when it has not (before items v5 every such answer was thrown away)."""
    chunk = "Bertil Haugen served as mayor of Nakurmoor for 10 years. The only road out of Tullby runs 159 kilometres."
    cloze = 'Complete the sentence as the text has it: "Bertil Haugen served as mayor of Nakurmoor for ___ years."'
    assert grounded("10", cloze, chunk) and grounded("10.", cloze, chunk)
    assert not grounded("12", cloze, chunk)
    assert grounded("159 kilometres", "How far is the coast from Tullby, in kilometres?", chunk)
    assert not grounded("It is 95 kilometres.", "How far is the coast from Tullby, in kilometres?", chunk)


def test_fact_sentences_have_a_name_or_a_number():
    sentences = ["The garden of the Pufilmoor monastery is full of dahlias.", "The road runs 159 kilometres.",
                 "Most people I know have problems with this.[4]", "it got worse in 2010 and after."]
    assert fact_sentences(sentences) == [sentences[0], sentences[1], sentences[3]]  # a footnote mark is no number


def test_written_questions_are_parsed_checked_and_not_repeated():
    sentence = "Bertil Haugen served as mayor of Nakurmoor for 10 years."
    reply = ("1. How long was Bertil Haugen the mayor of Nakurmoor?\n"
             "2. How long did he serve as mayor?\n"  # no name: unclear without the passage
             "- Which town did Bertil Haugen lead?\n"
             "Question 3: Who led Nakurmoor for a decade?\n"
             "Nakurmoor is a town.\n"  # not a question
             "4. How long was Bertil Haugen the mayor of Nakurmoor?")  # a repeat
    seen: set[str] = set()
    got = written_questions(reply, sentence, 5, seen)
    assert got == ["How long was Bertil Haugen the mayor of Nakurmoor?", "Which town did Bertil Haugen lead?",
                   "Who led Nakurmoor for a decade?"]
    assert written_questions(reply, sentence, 5, seen) == []  # asked already in this document
    assert written_questions(reply, sentence, 1) == got[:1]
    # a sentence without names: the question must share a content word with it
    plain = "The road to the coast runs 159 kilometres."
    assert written_questions("How far is the coast?\nWhat is your name?", plain, 2) == ["How far is the coast?"]


def test_the_words_check_keeps_a_question_that_names_its_subject_by_another_word():
    """LooGLE's Picardo document: asked about "The book is long out of print and virtually unknown in Spain, ...",
    the teacher wrote "Where can you find the book?" (answered "second-hand"), which names no name of the
    sentence; ``check="words"`` keeps it, the default drops it, and neither keeps a question about nothing in it."""
    sentence = ("The book is long out of print and virtually unknown in Spain, and not at all elsewhere, "
                "but is available second-hand.")
    reply = "1. Where can you find the book?\n2. What is your favourite colour?\n3. Is the book known in Spain?"
    assert written_questions(reply, sentence, 3) == ["Is the book known in Spain?"]
    assert written_questions(reply, sentence, 3, check="words") == ["Where can you find the book?",
                                                                     "Is the book known in Spain?"]
    plain = "The road to the coast runs 159 kilometres."  # no names: the same under both checks
    assert written_questions("How far is the coast?\nWhat is your name?", plain, 2, check="words") == \
        ["How far is the coast?"]


def test_the_question_check_keys_items_and_adapters_apart(tmp_path):
    from liftlm.distill import DistillSource
    from liftlm.keys import training_settings

    words, names = LiftConfig(distill_question_check="words"), LiftConfig()
    assert "distill_question_check" not in names.key_dict()  # the keys from before the setting existed
    assert words.key_dict()["distill_question_check"] == "words"
    assert training_settings(words, 512) != training_settings(names, 512)
    assert "distill_question_check" not in LiftConfig(distill_question_check="words", distill_questions=0,
                                                      distill_cloze=True).key_dict()  # no written questions
    assert len({DistillSource(c, "m", tmp_path).cache_path("a document") for c in (words, names)}) == 2
    with pytest.raises(LiftError, match="--distill-question-check must be one of names, words"):
        LiftConfig(distill_question_check="any")


def test_retention_prompts_ship_with_the_package():
    general = retention_prompts()
    assert len(general) >= 20 and "What is the capital of France?" in general
    assert not any(p.startswith("#") for p in general)


def test_teacher_answers_are_its_greedy_answers_with_the_chunk_in_context(tiny_loaded):
    """Continuing from each chunk's keys/values, one prompt at a time or a left-padded batch of prompts of unequal
    lengths about chunks of unequal lengths, gives the answers of running each chunk + prompt whole."""
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    prompts = PromptBuilder(tok, 512)
    doc = tok.encode(TEXT, add_special_tokens=False)
    whole, short = (0, len(doc)), (5, len(doc) - 17)
    asks = [(whole, "about", "What does the text say about the ferry?"), (whole, "summary", "Summarize the passage."),
            (short, "written", "Which harbour did the ferry leave from, and how long did the crossing take?"),
            (short, "next", "What happens next?"), (whole, "retention", "What is the capital of France?")]
    batched = []
    items = teach(model, tok, prompts.chat, doc, asks, 6, top_k=5, batch_size=3, progress=batched.append)
    assert batched == [3, 5]
    one_by_one = teach(model, tok, prompts.chat, doc, asks, 6, top_k=5, batch_size=1)
    assert [it.answer_ids for it in items] == [it.answer_ids for it in one_by_one]
    for it, alone in zip(items, one_by_one):
        assert torch.allclose(torch.tensor(it.top_logprobs), torch.tensor(alone.top_logprobs), atol=1e-3)
    for ((a, b), kind, prompt), item in zip(asks, items):
        ids = (prompts.chat.before + doc[a:b] + tok.encode("\n\n" + prompt, add_special_tokens=False)
               + prompts.chat.after)
        out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        expected = out[0, len(ids):].tolist()
        assert item.answer_ids == expected[: len(item.answer_ids)] and (item.kind, item.chunk) == (kind, (a, b))
        assert [t[0] for t in item.top_ids] == item.answer_ids  # greedy: the top token is the answer token
        assert all(lp == sorted(lp, reverse=True) and len(lp) == 5 for lp in item.top_logprobs)


def test_rows_that_finish_leave_the_teachers_batch_without_changing_the_others(tiny_loaded):
    """A row that reaches the end token stops there and leaves the batch; the rows that go on decode as they
    would alone."""
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    prompts = PromptBuilder(tok, 512)
    doc = tok.encode(TEXT, add_special_tokens=False)
    asks = [((0, len(doc)), "about", f"What does the text say about the {w}?") for w in ("ferry", "ledger", "storm")]
    free = teach(model, tok, prompts.chat, doc, asks, 8, top_k=3, batch_size=1)
    others = set(free[0].answer_ids + free[2].answer_ids)
    j, stop = next((j, t) for j, t in enumerate(free[1].answer_ids) if t not in others)
    ender = copy.copy(tok)
    ender.eos_token_id = stop  # the second row ends there, the others never
    together = teach(model, ender, prompts.chat, doc, asks, 8, top_k=3, batch_size=3)
    alone = teach(model, ender, prompts.chat, doc, asks, 8, top_k=3, batch_size=1)
    assert [it.answer_ids for it in together] == [it.answer_ids for it in alone]
    assert together[1].answer_ids == free[1].answer_ids[: j + 1] and j + 1 < 8
    assert [together[0].answer_ids, together[2].answer_ids] == [free[0].answer_ids, free[2].answer_ids]
    for it, one in zip(together, alone):
        assert torch.allclose(torch.tensor(it.top_logprobs), torch.tensor(one.top_logprobs), atol=1e-3)


def test_the_teachers_cache_decodes_in_place_as_a_growing_cache_would(tiny_loaded):
    """``decoding_cache``: rows of unequal lengths left-padded into buffers with room; decoding writes each token
    into the room (no layer's keys/values reallocated while it lasts) and gives the logits of a ``DynamicCache``
    that grows by concatenation; out of room it grows; dropping rows keeps the others' keys/values."""
    from liftlm.kvcache import cache_kwarg, decoding_cache, kv_tensors, prefix_cache

    model = tiny_loaded.model
    a, b = prefix_cache(model, torch.tensor([[5, 9, 14, 3, 7]])), prefix_cache(model, torch.tensor([[8, 2, 11]]))
    cache, lens = decoding_cache([kv_tensors(a), kv_tensors(b)], room=2)
    assert lens == [5, 3] and cache.get_seq_length() == 5
    assert torch.equal(kv_tensors(cache)[0][0][1, :, :2], torch.zeros_like(kv_tensors(cache)[0][0][1, :, :2]))
    buffers = [layer._keys.data_ptr() for layer in cache.layers]
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    kw = cache_kwarg(model)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[4], [6]]), attention_mask=mask,
                    position_ids=torch.tensor([[5], [3]]), use_cache=True, **{kw: cache})
        assert [layer._keys.data_ptr() for layer in cache.layers] == buffers  # written in place
        for row, ids in enumerate(([5, 9, 14, 3, 7, 4], [8, 2, 11, 6])):
            whole = model(input_ids=torch.tensor([ids])).logits[0, -1]
            assert torch.allclose(out.logits[row, -1], whole, atol=1e-4)
        cache.batch_select_indices(torch.tensor([1]))  # the first row leaves; the second goes on
        out = model(input_ids=torch.tensor([[12, 10]]), attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]]),
                    position_ids=torch.tensor([[4, 5]]), use_cache=True, **{kw: cache})  # past the room: grows
    assert cache.get_seq_length() == 8 and cache.layers[0]._keys.shape[2] >= 8
    whole = model(input_ids=torch.tensor([[8, 2, 11, 6, 12, 10]])).logits[0, -1]
    assert torch.allclose(out.logits[0, -1], whole, atol=1e-4)


def test_soft_loss_is_cross_entropy_against_the_teachers_top_k():
    logits = torch.randn(3, 50)
    top_ids = torch.randint(0, 50, (3, 4))
    top_lp = torch.log_softmax(torch.randn(3, 4), -1)
    expected = -(top_lp.exp() * F.log_softmax(logits, -1).gather(-1, top_ids)).sum(-1).mean()
    torch.testing.assert_close(soft_loss(logits, top_ids, top_lp), expected)
    # a one-hot teacher is plain cross-entropy on its token
    one_hot = torch.tensor([[0.0] + [-1e4] * 3] * 3)
    torch.testing.assert_close(soft_loss(logits, top_ids, one_hot), F.cross_entropy(logits, top_ids[:, 0]))
    # the ablation's hard targets: the teacher's greedy tokens, whatever its distribution
    torch.testing.assert_close(hard_loss(logits, top_ids, top_lp), F.cross_entropy(logits, top_ids[:, 0]))


def _item(tok, prompt="Who painted the ferry?", answer="Ilsa Brandt painted it."):
    ids = tok.encode(answer, add_special_tokens=False) + [tok.eos_token_id]
    g = torch.Generator().manual_seed(len(prompt))
    top = [[t] + torch.randint(0, len(tok), (3,), generator=g).tolist() for t in ids]
    lps = [torch.log_softmax(torch.randn(4, generator=g), -1).tolist() for _ in ids]
    return DistillItem("about", prompt, (0, 10), ids, top, lps)


def test_student_views_and_the_shared_prefix_match_a_full_forward_pass(tiny_loaded):
    """The lift+icl view reuses the head+tail prefix's keys/values: its loss equals that of one forward pass over
    prefix + question + answer."""
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    prompts = PromptBuilder(tok, 160)
    doc = tok.encode(TEXT * 6, add_special_tokens=False)
    items = [_item(tok), _item(tok, "What colour is the ferry?", "Ochre.")]
    samples = student_samples(items, prompts, doc, ("lift+icl", "lift"))
    assert [s.view for s in samples] == ["lift", "lift+icl", "lift", "lift+icl"]
    shared = samples[1].shared_prefix
    assert shared is samples[3].shared_prefix and len(shared) + len(samples[1].input_ids) <= 160
    assert tok.decode(samples[0].input_ids).count("Who painted the ferry?") == 1
    losses, hard = SoftLoss(model, samples), SoftLoss(model, samples, "ce")
    with torch.no_grad():
        for k, s in enumerate(samples):
            ids = (s.shared_prefix or []) + s.input_ids
            n = len(s.top_ids)
            logits = model(input_ids=torch.tensor([ids])).logits[0, -n - 1 : -1]
            expected = soft_loss(logits, torch.tensor(s.top_ids), torch.tensor(s.top_logprobs))
            got, tokens = losses([k])
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
            assert tokens == len(s.input_ids)
            ce = F.cross_entropy(logits, torch.tensor([t[0] for t in s.top_ids]))  # the greedy answer
            torch.testing.assert_close(hard([k])[0], ce, atol=1e-4, rtol=1e-4)
    # each view's prefix computed once for both its samples: the chat turn's start, the head+tail view
    assert samples[0].shared_prefix == prompts.chat.before and len(prompts.chat.before) > 0
    assert losses.prefix_tokens == len(shared) + len(prompts.chat.before)


def _losses_match_full_passes(model, samples: list) -> SoftLoss:
    """Each sample's loss through ``SoftLoss`` (its prefix's keys/values reused) equals that of one forward pass
    over prefix + sample; returns the ``SoftLoss``, for its counts."""
    losses = SoftLoss(model, samples)
    with torch.no_grad():
        for k, s in enumerate(samples):
            n = len(s.top_ids)
            logits = model(input_ids=torch.tensor([s.shared_prefix + s.input_ids])).logits[0, -n - 1 : -1]
            expected = soft_loss(logits, torch.tensor(s.top_ids), torch.tensor(s.top_logprobs))
            torch.testing.assert_close(losses([k])[0], expected, atol=1e-4, rtol=1e-4)
    return losses


def test_the_chunk_view_puts_the_teachers_chunk_before_the_question(tiny_loaded):
    """View ``lift+chunk``: each item after the chunk its teacher read ([chat start] chunk), in the format of a
    question asked with a passage in context; the items about one chunk share its keys/values, and the loss
    equals that of one forward pass over chunk + question + answer."""
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    prompts = PromptBuilder(tok, 160)
    doc = tok.encode(TEXT * 6, add_special_tokens=False)
    first, second = _item(tok), _item(tok, "What colour is the ferry?", "Ochre.")
    other = dataclasses.replace(_item(tok, "Where is the bay?", "North."), chunk=(5, 25))
    samples = student_samples([first, second, other], prompts, doc, ("lift+chunk",))
    assert [s.view for s in samples] == ["lift+chunk"] * 3
    assert samples[0].shared_prefix == prompts.chat.before + doc[0:10]
    assert samples[0].shared_prefix is samples[1].shared_prefix  # one chunk, one prefix
    assert samples[2].shared_prefix == prompts.chat.before + doc[5:25]
    assert samples[0].input_ids == prompts.question_tail(first.prompt) + prompts.chat.after + first.answer_ids
    losses = _losses_match_full_passes(model, samples)
    assert losses.prefix_tokens == 2 * len(prompts.chat.before) + 10 + 20  # each chunk's computed once
    with pytest.raises(ValueError, match="lift\\+chunk"):
        student_samples([dataclasses.replace(first, chunk=(0, 150))], prompts, doc, ("lift+chunk",))


def test_the_chunk_view_trains_each_chunks_items_together_where_they_fall():
    """Batches of the chunk view hold one chunk's items, and each trains where its chunk's last item falls in the
    epoch, not at its end; the default views are unchanged by it."""
    from liftlm.train import batch_plan, epoch_plan

    prefix_of = [("c", i // 3) for i in range(12)]  # 4 chunks of 3 items
    cfg = LiftConfig(objective="distill", epochs=1, seed=3)
    plan = epoch_plan(0, 12, cfg)
    (epoch,) = batch_plan(plan, prefix_of, 8)
    assert all(len({prefix_of[i] for i in b}) == 1 and len(b) == 3 for b in epoch)
    ends = [max(plan[0].index(i) for i in b) for b in epoch]
    assert ends == sorted(ends)  # in the order their last items come
    assert LiftConfig(objective="distill", distill_views="lift+chunk,lift+icl").views == ("lift+chunk", "lift+icl")


def test_grouping_by_length_batches_rows_of_about_one_length(tiny_loaded):
    """``--group-by-length``: a prefix's samples are sorted by length in runs of 8 batches before they are cut
    into batches, so that fewer pads run; every sample still trains once an epoch, a batch holds one prefix, and
    the setting enters the store key only when it is on and there are batches."""
    import random

    from liftlm.train import LENGTH_RUN, attach_adapter, batch_plan, epoch_plan, train

    rng = random.Random(0)
    prefix_of = [("view", i % 2) for i in range(100)]
    lengths = [rng.randint(20, 65) for _ in range(100)]
    plan = epoch_plan(0, 100, LiftConfig(objective="distill", epochs=2, seed=1))

    def pads(batched):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for e in batched for b in e)

    plain, grouped = batch_plan(plan, prefix_of, 4), batch_plan(plan, prefix_of, 4, lengths)
    for epoch, units in zip(plan, grouped):
        assert sorted(i for u in units for i in u) == sorted(epoch)
        assert all(len({prefix_of[i] for i in u}) == 1 and len(u) <= 4 for u in units)
    first = [i for u in grouped[0][:LENGTH_RUN] for i in u]  # the first run of a prefix: shortest first
    assert [lengths[i] for i in first] == sorted(lengths[i] for i in first)
    assert pads(grouped) < pads(plain) / 3
    assert batch_plan(plan, prefix_of, 4, None) == plain and batch_plan(plan, prefix_of, 1, lengths) == batch_plan(
        plan, prefix_of, 1)
    # the store key: only when on and batched (liftlm trained in the epoch's order before the setting existed)
    assert "group_by_length" not in LiftConfig().key_dict()
    assert LiftConfig(group_by_length=True, pack_batches=False).key_dict()["group_by_length"] is True
    with pytest.raises(LiftError, match="--no-pack-batches"):  # packed rows: nothing to group
        LiftConfig(group_by_length=True)
    for unbatched in (LiftConfig(group_by_length=True, batch_size=1, pack_batches=False),
                      LiftConfig(objective="ct", group_by_length=True)):
        assert unbatched.key_dict() == dataclasses.replace(unbatched, group_by_length=False).key_dict()
    # trained: fewer pads than in the epoch's order, the same tokens
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    prompts = PromptBuilder(tok, 160)
    doc = tok.encode(TEXT * 6, add_special_tokens=False)
    asks = [("Who painted the ferry?", "Ilsa Brandt."), ("What colour is the ferry at Varnholm?", "Ochre, painted in 1931."),
            ("How many?", "Forty-one ships sheltered in the bay during the great storm, by the keeper's ledger."),
            ("Where is the telescope from?", "Glasgow."), ("What stands beside the ferry?", "A brass telescope."),
            ("When?", "1931."), ("Who kept the ledger of the ships in the bay?", "The keeper did."), ("Storm?", "Great.")]
    samples = student_samples([_item(tok, q, a) for q, a in asks * 4], prompts, doc, ("lift",))
    results = {}
    for group in (False, True):
        cfg = LiftConfig(objective="distill", epochs=1, batch_size=8, group_by_length=group, seed=2,
                         pack_batches=False)  # one row a sample: the pads grouping saves
        results[group] = train(attach_adapter(copy.deepcopy(model), cfg), samples, cfg, progress=False)
    assert results[True].tokens == results[False].tokens and results[True].steps == results[False].steps == 4
    assert results[True].pad_tokens < results[False].pad_tokens / 2


def _four_samples_in_rows(tiny_loaded, monkeypatch, layout: str):
    """The tiny model and four items' samples in both views, their batches packed in ``layout``: one row for all,
    two rows, or what ``packed_rows`` chooses (any other name)."""
    from liftlm.distill import student

    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    prompts = PromptBuilder(tok, 160)
    doc = tok.encode(TEXT * 6, add_special_tokens=False)
    items = [_item(tok), _item(tok, "What colour is the ferry?", "Ochre."),
             _item(tok, "How many ships sheltered in the bay during the storm?", "Forty-one ships did."),
             _item(tok, "Where is the telescope from?", "From Glasgow, brass.")]
    samples = student_samples(items, prompts, doc, ("lift+icl", "lift"))
    layouts = {"one row": lambda lengths, *_: [list(range(len(lengths)))],
               "two rows": lambda lengths, *_: [[0, 3], [1, 2]]}
    if layout in layouts:
        monkeypatch.setattr(student, "packed_rows", layouts[layout])
    return model, samples


@pytest.mark.parametrize("layout", ["padded", "chosen", "one row", "two rows"])
def test_a_packed_batch_trains_as_its_samples_one_at_a_time(tiny_loaded, monkeypatch, layout):
    """``--pack-batches``: samples packed end to end into rows, each seeing the prefix and itself only, give the
    losses and gradients of one sample at a time, in any layout of the rows (one for all, two, or what
    ``packed_rows`` chooses); ``--no-pack-batches`` pads one row a sample, the same again (``--batch-size``: the
    batch's loss is the mean of its samples' losses, as one at a time)."""
    model, samples = _four_samples_in_rows(tiny_loaded, monkeypatch, layout)
    weight = model.model.layers[0].mlp.up_proj.weight
    for view in ("lift", "lift+icl"):
        batch = [k for k, s in enumerate(samples) if s.view == view]
        one = SoftLoss(model, samples)
        model.zero_grad()
        singles = [one([k])[0] for k in batch]
        torch.stack(singles).mean().backward()
        expected_grad = weight.grad.clone()
        model.zero_grad()
        together = SoftLoss(model, samples, pack=layout != "padded")
        assert (together.head is None) == (layout == "padded")
        loss, tokens = together(batch)
        loss.backward()
        torch.testing.assert_close(loss, torch.stack(singles).mean(), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(weight.grad, expected_grad, atol=1e-5, rtol=1e-4)
        assert tokens == sum(len(samples[k].input_ids) for k in batch)
        lengths = [len(samples[k].input_ids) for k in batch]
        if layout == "padded":  # each row left-padded to the longest
            assert together.pad_tokens == len(lengths) * max(lengths) - sum(lengths)
        elif layout == "one row":
            assert together.pad_tokens == 0
        elif layout == "two rows":
            assert together.pad_tokens == 2 * max(lengths[0] + lengths[3], lengths[1] + lengths[2]) - sum(lengths)
    model.zero_grad()


def _two_call_losses(model, samples: list, batch: list[int]) -> torch.Tensor:
    """The reference for ``--no-question-grad``: each sample alone, in two calls of the bare model — its prefix
    and its question up to the last token forward without gradients, then the positions that predict the answer
    with gradients, continuing that cache — and the batch's loss the mean of its samples'."""
    from liftlm.kvcache import cache_kwarg, prefix_cache

    losses = []
    for k in batch:
        s = samples[k]
        n = s.n_loss_tokens
        before = (s.shared_prefix or []) + s.input_ids[:len(s.input_ids) - 1 - n]
        taught = s.input_ids[len(s.input_ids) - 1 - n:-1]
        cache = prefix_cache(model, torch.tensor([before]))
        positions = torch.arange(len(before), len(before) + n)[None]
        logits = model(input_ids=torch.tensor([taught]), position_ids=positions,
                       **{cache_kwarg(model): cache}).logits[0]
        losses.append(soft_loss(logits, torch.tensor(s.top_ids), torch.tensor(s.top_logprobs)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("layout", ["chosen", "one row", "two rows"])
def test_without_question_gradients_only_the_answer_positions_train(tiny_loaded, monkeypatch, layout):
    """``--no-question-grad``: the batch's loss is the same as with the questions' gradients (the same forward
    values), its gradient that of each sample run in two calls, the question without gradients and then the
    answer positions (``_two_call_losses``), in any layout of the rows; it differs from the full gradient; only
    the answer positions count as trained tokens, and the questions as tokens run forward only."""
    model, samples = _four_samples_in_rows(tiny_loaded, monkeypatch, layout)
    weight = model.model.layers[0].self_attn.k_proj.weight  # keys: reached through the questions' keys too
    for view in ("lift", "lift+icl"):
        batch = [k for k, s in enumerate(samples) if s.view == view]
        model.zero_grad()
        expected = _two_call_losses(model, samples, batch)
        expected.backward()
        expected_grad = weight.grad.clone()
        model.zero_grad()
        full = SoftLoss(model, samples)(batch)[0]
        full.backward()
        full_grad = weight.grad.clone()
        model.zero_grad()
        answers = SoftLoss(model, samples, question_grad=False)
        loss, tokens = answers(batch)
        loss.backward()
        torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(loss, full, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(weight.grad, expected_grad, atol=1e-5, rtol=1e-4)
        assert (weight.grad - full_grad).abs().max() > 1e-3 * full_grad.abs().max()
        assert tokens == sum(samples[k].n_loss_tokens for k in batch)
        prefix = len(samples[batch[0]].shared_prefix)
        questions = sum(len(samples[k].input_ids) - 1 - samples[k].n_loss_tokens for k in batch)
        assert answers.prefix_tokens >= prefix + questions  # the prefix, then the questions (and their pads)
        if layout == "one row":
            assert answers.prefix_tokens == prefix + questions and answers.pad_tokens == 0
    model.zero_grad()


def test_without_question_gradients_a_sample_without_a_prefix_trains_alone(tiny_loaded):
    """A sample with no shared prefix (a model without a chat template, view ``lift``) trains one at a time
    without question gradients too: the question's keys/values come from a call of its own."""
    from liftlm.distill import SoftSample

    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    item = _item(tok)
    sample = SoftSample(tok.encode("Who painted the ferry? Answer:", add_special_tokens=False) + item.answer_ids,
                        item.top_ids, item.top_logprobs, None)
    weight = model.model.layers[0].self_attn.v_proj.weight
    model.zero_grad()
    expected = _two_call_losses(model, [sample], [0])
    expected.backward()
    expected_grad = weight.grad.clone()
    model.zero_grad()
    loss, tokens = SoftLoss(model, [sample], question_grad=False)([0])
    loss.backward()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(weight.grad, expected_grad, atol=1e-5, rtol=1e-4)
    assert tokens == sample.n_loss_tokens
    model.zero_grad()


def test_the_question_gradient_setting_is_checked_and_keyed(tiny_loaded):
    """``--no-question-grad`` trains other weights (its own adapter key; the default keeps every stored key), needs
    distillation samples in packed rows, and a model whose head can be packed."""
    from types import SimpleNamespace

    assert "question_grad" not in LiftConfig(objective="distill").key_dict()
    assert LiftConfig(objective="distill", question_grad=False).key_dict()["question_grad"] is False
    for bad in ({"objective": "ct"}, {"pack_batches": False}):
        with pytest.raises(LiftError, match="--no-question-grad"):
            LiftConfig(question_grad=False, **bad)
    gemma = SimpleNamespace(config=SimpleNamespace(model_type="gemma2"), parameters=lambda: iter([torch.zeros(1)]))
    with pytest.raises(LiftError, match="--no-question-grad.*gemma2"):
        SoftLoss(gemma, [], question_grad=False)
    # trained through ``train``: only the answer positions count as trained tokens, the questions as run forward
    from liftlm.train import attach_adapter, train

    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    prompts = PromptBuilder(tok, 160)
    doc = tok.encode(TEXT * 6, add_special_tokens=False)
    samples = student_samples([_item(tok), _item(tok, "What colour is the ferry?", "Ochre.")] * 4, prompts, doc,
                              ("lift+icl", "lift"))
    results = {}
    for grad in (True, False):
        cfg = LiftConfig(objective="distill", epochs=1, question_grad=grad)
        results[grad] = train(attach_adapter(copy.deepcopy(model), cfg), samples, cfg, progress=False)
    assert results[False].tokens == sum(s.n_loss_tokens for s in samples)
    assert results[True].tokens == sum(len(s.input_ids) for s in samples)
    assert results[False].prefix_tokens > results[True].prefix_tokens
    assert results[False].steps == results[True].steps == 2


def test_packed_rows_take_every_sample_once_and_weigh_pads_against_attention():
    """``packed_rows``: every sample in one row; with attention free, one row (no pads); with attention dear, one
    sample a row; between, rows of about one length, never dearer than one sample a row."""
    import random

    from liftlm.distill.student import packed_rows

    rng = random.Random(3)
    lengths = [rng.randint(55, 95) for _ in range(8)]

    def cost(rows, prefix, per_key):
        width = max(sum(lengths[j] for j in row) for row in rows)
        return len(rows) * width * (1 + per_key * (prefix + width))

    for prefix, per_key in ((25, 0.0), (480, 1.3e-4), (480, 6.5e-4), (25, 6.5e-4), (480, 1.0)):
        rows = packed_rows(lengths, prefix, per_key)
        assert sorted(j for row in rows for j in row) == list(range(8))
        assert cost(rows, prefix, per_key) <= cost([[j] for j in range(8)], prefix, per_key)
    assert packed_rows(lengths, 25, 0.0) == [list(range(8))]
    assert len(packed_rows(lengths, 480, 1.0)) == 8
    rows = packed_rows(lengths, 480, 1.3e-4)  # Qwen 1.5B after a 480-token view: fewer pads than 8 padded rows
    width = max(sum(lengths[j] for j in row) for row in rows)
    assert len(rows) * width - sum(lengths) < 8 * max(lengths) - sum(lengths)


def test_only_a_plain_output_head_is_packed(tiny_loaded):
    """A model whose logits are its output embedding over the decoder's last state (Llama, Qwen, ...) packs its
    batches; another family (a soft-capped or scaled head) keeps one padded row a sample."""
    from types import SimpleNamespace

    from liftlm.distill.student import logit_head

    body, head = logit_head(tiny_loaded.model)
    assert body is tiny_loaded.model.model and head is tiny_loaded.model.lm_head
    assert logit_head(SimpleNamespace(config=SimpleNamespace(model_type="gemma2"))) is None
    assert SoftLoss(SimpleNamespace(config=SimpleNamespace(model_type="gemma2"), parameters=lambda: iter(
        [torch.zeros(1)])), []).head is None


def test_each_documents_samples_are_trained_after_their_own_prefix(tiny_loaded):
    """Several documents train together (``train_on_documents`` takes a list): a lift+icl sample of document B
    that comes right after one of document A must not reuse A's head+tail keys/values."""
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    prompts = PromptBuilder(tok, 160)
    doc_a = tok.encode(TEXT * 6, add_special_tokens=False)
    doc_b = tok.encode(TEXT.replace("ferry", "lighthouse").upper() * 5, add_special_tokens=False)
    a = student_samples([_item(tok)], prompts, doc_a, ("lift+icl",))
    b = student_samples([_item(tok)], prompts, doc_b, ("lift+icl",))
    assert a[0].shared_prefix != b[0].shared_prefix
    samples = [a[0], b[0], a[0]]  # within PREFIX_REFRESH of each other
    losses = _losses_match_full_passes(model, samples)
    assert losses.prefix_tokens == len(a[0].shared_prefix) + len(b[0].shared_prefix)  # each kept beside the other


def test_a_long_shared_prefix_is_reused_by_its_length_and_keyed_apart(tiny_loaded, monkeypatch):
    """The head+tail view's keys/values are computed again after ``refresh_after`` samples: 8 for views of up to
    575 tokens (windows up to 576 train as before the rule), then one more per 64 tokens, so that a wide window's
    view does not cost more than its samples; ``--prefix-refresh`` sets it. Adapters trained by length at wider
    windows get another store key than those trained every 8 samples before."""
    import liftlm.distill.student as student
    from liftlm.keys import SHORT_VIEW_WINDOW, training_settings

    assert [student.refresh_after(n) for n in (30, 575, 576, 2000, 8100)] == [8, 8, 9, 31, 126]
    assert student.refresh_after(8100, 3) == 3
    assert student.refresh_after(SHORT_VIEW_WINDOW - 1) == student.PREFIX_REFRESH
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    doc = tok.encode(TEXT * 6, add_special_tokens=False)
    [sample] = student_samples([_item(tok)], PromptBuilder(tok, 160), doc, ("lift+icl",))
    view = len(sample.shared_prefix)
    monkeypatch.setattr(student, "PREFIX_TOKENS_PER_REUSE", view // 12)  # this short view as a long one
    reuse = student.refresh_after(view)
    assert 12 <= reuse < 15
    losses = SoftLoss(model, [sample] * 30)
    for k in range(30):
        losses([k])
    assert losses.prefix_tokens == 3 * view  # samples 0, reuse and 2 × reuse computed it
    every_5 = SoftLoss(model, [sample] * 30, refresh=5)
    for k in range(30):
        every_5([k])
    assert every_5.prefix_tokens == 6 * view
    cfg = LiftConfig(objective="distill")
    assert "prefix_refresh" not in training_settings(cfg, 512)  # the default's key at window 512 is unchanged
    assert training_settings(cfg, 2048)["prefix_refresh"] == "by-length"
    assert training_settings(LiftConfig(prefix_refresh=8), 2048)["prefix_refresh"] == 8
    assert "prefix_refresh" not in training_settings(LiftConfig(objective="ct"), 2048)
    with pytest.raises(LiftError, match="--prefix-refresh"):
        LiftConfig(prefix_refresh=0)


def test_objective_settings_are_checked():
    with pytest.raises(LiftError, match="--objective"):
        LiftConfig(objective="magic")
    with pytest.raises(LiftError, match="training-mode paper"):
        LiftConfig(objective="distill", training_mode="recurrent")
    with pytest.raises(LiftError, match="--distill-views"):
        LiftConfig(objective="distill", distill_views="lift,rag")
    assert LiftConfig(distill_views="lift").views == ("lift",)
    with pytest.raises(LiftError, match="--distill-loss"):
        LiftConfig(objective="distill", distill_loss="mse")
    # the ablation trains other weights: another adapter; the paper's objective has no distillation loss at all
    kl, ce = LiftConfig(objective="distill").key_dict(), LiftConfig(objective="distill", distill_loss="ce").key_dict()
    assert kl != ce and ce["distill_loss"] == "ce"
    assert "distill_loss" not in LiftConfig(objective="ct", distill_loss="ce").key_dict()
    # written questions change the items: in the key when there are any; none keeps the key adapters trained
    # before the setting existed have (its default was 0 then)
    assert LiftConfig(objective="distill").key_dict()["distill_questions"] == 2
    assert "distill_questions" not in LiftConfig(objective="distill", distill_questions=0).key_dict()
    assert "distill_questions" not in LiftConfig(objective="ct").key_dict()  # the paper's objective: no items
    with pytest.raises(LiftError, match="--distill-questions"):
        LiftConfig(objective="distill", distill_questions=-1)
    with pytest.raises(LiftError, match="--distill-kinds"):
        LiftConfig(objective="distill", distill_kinds="about,gossip")
    assert LiftConfig(distill_kinds="written, retention").kinds == ("written", "retention")
    assert "distill_kinds" not in LiftConfig(objective="distill").key_dict()  # all: as before the setting
    assert LiftConfig(objective="distill", distill_kinds="written").key_dict()["distill_kinds"] == "asked"  # (its old name)


def test_distillation_defaults_to_batches_of_8_at_5_6e_4_and_the_other_objectives_keep_theirs():
    """--objective distill trains 8 samples a step at 5.6e-4 unless told otherwise; ct and ct+distill one at a time
    at 2e-4. The defaults are resolved from the objective when read, so settings re-read with another objective
    (a server's defaults under a request's settings) take that objective's."""
    distill, ct, both = LiftConfig(objective="distill"), LiftConfig(objective="ct"), LiftConfig(objective="ct+distill")
    assert (distill.resolved_batch_size, distill.resolved_learning_rate) == (8, 5.6e-4)
    assert (ct.resolved_batch_size, ct.resolved_learning_rate) == (1, 2e-4)
    assert (both.resolved_batch_size, both.resolved_learning_rate) == (1, 2e-4)
    given = LiftConfig(objective="distill", batch_size=2, learning_rate=1e-3)
    assert (given.resolved_batch_size, given.resolved_learning_rate) == (2, 1e-3)
    again = LiftConfig.from_dict({**distill.to_dict(), "objective": "ct"})
    assert (again.resolved_batch_size, again.resolved_learning_rate) == (1, 2e-4)
    assert distill.resolved_dict()["learning_rate"] == 5.6e-4 and distill.resolved_dict()["batch_size"] == 8
    assert distill.training_dict()["batch_size"] == 8 and distill.to_dict()["batch_size"] is None
    # the store key holds the numbers trained with: one sample at a time at 2e-4, as liftlm trained before the
    # batches were the default, keeps the key such adapters have (no batch_size in it)
    old = LiftConfig(objective="distill", batch_size=1, learning_rate=2e-4).key_dict()
    assert "batch_size" not in old and old["learning_rate"] == 2e-4
    assert distill.key_dict()["batch_size"] == 8 and distill.key_dict()["learning_rate"] == 5.6e-4
    assert LiftConfig(objective="distill", batch_size=8, learning_rate=5.6e-4).key_dict() == distill.key_dict()
    assert ct.key_dict() == LiftConfig(objective="ct", learning_rate=2e-4, batch_size=8).key_dict()  # no batches
    with pytest.raises(LiftError, match="--learning-rate"):
        LiftConfig(learning_rate=0)
    with pytest.raises(LiftError, match="--batch-size"):
        LiftConfig(batch_size=0)


def test_items_and_settings_of_kind_asked_load_as_written():
    """Kind "written" was called "asked": the items cached or stored beside older adapters, and their settings, still
    load, as "written"; the store key hashes the kind under its old name, so those adapters keep their key."""
    item = DistillItem.from_dict({"kind": "asked", "prompt": "Who painted the ferry?", "chunk": [0, 10],
                                  "answer_ids": [1, 2], "top_ids": [[1], [2]], "top_logprobs": [[0.0], [0.0]]})
    assert item.kind == "written" and item.chunk == (0, 10)
    old = LiftConfig.from_dict({**LiftConfig().to_dict(), "distill_kinds": "asked, retention"})
    assert old.kinds == ("written", "retention")
    assert old.key_dict() == LiftConfig(distill_kinds="written, retention").key_dict()
    assert old.key_dict()["distill_kinds"] == "asked, retention"


def test_auto_lora_targets_add_the_mlp_for_distillation_only():
    """``--target-modules auto``: the attention projections, plus the MLP projections for ``--objective distill``.
    The key holds the modules trained, so the paper's objective keeps the key it had when the default was the
    explicit list."""
    attention = ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert LiftConfig(objective="ct").lora_targets == attention
    assert LiftConfig(objective="ct+distill").lora_targets == attention
    assert LiftConfig(objective="distill").lora_targets == attention + ["gate_proj", "up_proj", "down_proj"]
    assert LiftConfig(objective="distill", target_modules="q_proj,v_proj").lora_targets == ["q_proj", "v_proj"]
    assert LiftConfig(objective="distill", target_modules="all-linear").lora_targets == "all-linear"
    explicit = LiftConfig(objective="ct", target_modules="q_proj,k_proj,v_proj,o_proj")
    assert LiftConfig(objective="ct").key_dict() == explicit.key_dict()
    assert LiftConfig(objective="distill").key_dict()["target_modules"].endswith("gate_proj,up_proj,down_proj")
    assert "target_modules" not in LiftConfig(finetune="full").key_dict()
    assert LiftConfig().objective == "distill" and LiftConfig().lora_targets == LiftConfig(objective="distill").lora_targets


def test_the_teacher_writes_questions_about_each_fact_sentence_once(tiny_loaded):
    """With written questions, every fact-bearing sentence gets one writing request in the document (chunks
    overlap: a sentence is whole in several), and the kept questions are answered as prompts of kind "written"."""
    from liftlm.distill import teacher as distill

    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    prompts = PromptBuilder(tok, 512)
    ids = tok.encode(TEXT * 3, add_special_tokens=False)
    spans = [(0, 60), (30, 90), (60, len(ids))]
    asks: list[str] = []
    answered: list[tuple[str, str]] = []
    real_teach = distill.teach

    def spy(model, tokenizer, chat, doc_ids, rows, *args, **kwargs):
        asks.extend(p for _, k, p in rows if k == "write")
        answered.extend((k, p) for _, k, p in rows if k != "write")
        if rows and rows[0][1] == "write":  # a teacher that writes good questions
            return [DistillItem("write", p, span, tok.encode("Who painted the ferry at Varnholm?\n"
                                                               "What did the keeper's ledger list?"))
                    for span, k, p in rows]
        return real_teach(model, tokenizer, chat, doc_ids, rows, *args, **kwargs)

    distill.teach = spy
    try:
        items, counts = distill.make_items(model, tok, prompts.chat, ids, spans, 2, 3, 0.0,
                                           questions_per_sentence=2)
    finally:
        distill.teach = real_teach
    whole = [s for a, b in spans for s in fact_sentences(whole_sentences(
        tok.decode(ids[a:b]), a == 0, b == len(ids)))]
    assert len(asks) == counts["sentences"] == len(set(whole)) > 0
    assert all('Write 2 questions that the sentence "' in a for a in asks)
    # the same two questions come back for every sentence: each is kept once per document
    assert counts["written"] == 1  # "What did the keeper's ledger list?" names nothing of the sentences asked
    assert [p for p in answered if p[0] == "written"] == [("written", "Who painted the ferry at Varnholm?")]
    # the count the cost curve reports beside its times is the teacher's: the sentences it wrote questions about
    assert distill.document_fact_sentences(tok, ids, spans) == counts["sentences"]
    assert len(items) + counts["not_grounded"] == len(answered)  # (the random model's answers are not grounded)


def test_the_teacher_with_no_prompts_per_chunk_asks_the_clozes_and_their_retention_share(tiny_loaded):
    from liftlm.distill import teacher as distill

    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    prompts = PromptBuilder(tok, 512)
    ids = tok.encode(TEXT * 3, add_special_tokens=False)
    spans = [(0, 60), (30, 90), (60, len(ids))]
    answered: list[str] = []
    real_teach = distill.teach

    def spy(model, tokenizer, chat, doc_ids, rows, *args, **kwargs):
        answered.extend(k for _, k, _ in rows)
        return real_teach(model, tokenizer, chat, doc_ids, rows, *args, **kwargs)

    distill.teach = spy
    try:
        items, counts = distill.make_items(model, tok, prompts.chat, ids, spans, 0, 3, 0.25, cloze=True)
    finally:
        distill.teach = real_teach
    texts = [tok.decode(ids[a:b]) for a, b in spans]
    facts = {x for t, (a, b) in zip(texts, spans) for x in fact_sentences(whole_sentences(t, a == 0, b == len(ids)))
             if cloze(x)}
    assert answered.count("cloze") == counts["clozes"] == len(facts) > 0
    assert set(answered) == {"cloze", "retention"} and answered.count("retention") == round(len(facts) / 3)
    assert len(items) + counts["not_grounded"] == len(answered)


@pytest.mark.parametrize("objective", ["distill", "ct+distill"])
def test_distillation_end_to_end_through_lift(tiny_model_dir, tmp_path, objective):
    from liftlm import Lift

    cfg = LiftConfig(window=256, segment_length=48, context_tokens=32, epochs=1, qa_epochs=1, objective=objective,
                     distill_prompts=3, distill_answer_tokens=4, distill_retention=0.25, learning_rate=1e-3)
    events = []
    lift = Lift(str(tiny_model_dir), cfg, store=tmp_path / "store", progress=False, on_step=events.append)
    text = TEXT * 5
    done = lift.internalize(text)
    meta = done.metadata
    report = meta["distill"]
    # the teacher reports through on_step before training does: prompts answered, up to all of them
    teacher = [p for p in events if p.stage == "teacher"]
    assert teacher and events[:len(teacher)] == teacher and len(events) > len(teacher)
    assert [p.step for p in teacher] == sorted(p.step for p in teacher) and teacher[-1].step == teacher[-1].steps
    assert teacher[-1].steps == report["items"] + report["not_grounded"] + report["sentences"]
    assert report["items"] > 0 and report["kinds"]["retention"] >= 1
    assert report["sentences"] == 2  # the default writes questions about Varnholm's and Glasgow's sentences
    assert report["student_samples"] == 2 * report["items"]  # both views
    n_segments = meta["samples"]
    assert (n_segments == 0) == (objective == "distill")
    stored = [json.loads(line) for line in (done.adapter / "distill.jsonl").read_text().splitlines()]
    assert len(stored) == report["items"] and all(len(s["top_ids"]) == len(s["answer_ids"]) for s in stored)
    # a second setup reuses the cached teacher answers (no teacher run) and the stored adapter
    again = Lift(str(tiny_model_dir), cfg, store=tmp_path / "store2", progress=False)
    items, rep = again.distill.items(text, again.tokenizer.encode(text, add_special_tokens=False), None, None, None)
    assert rep["used"] == "cache" and len(items) == report["items"]
    assert lift.ask("Who painted the ferry?", max_new_tokens=4).mode == "lift+icl"
    assert not Lift(str(tiny_model_dir), cfg, store=tmp_path / "store", progress=False).internalize(text).trained
    # the ablation of prompt kinds: the student trains on the retention items of the same cached teacher items only
    only = dataclasses.replace(cfg, distill_kinds="retention")
    part = Lift(str(tiny_model_dir), only, store=tmp_path / "store", progress=False).internalize(text)
    kept = part.metadata["distill"]
    assert part.trained and kept["used"] == "cache" and kept["made"] == report["items"]
    assert kept["kinds"] == {"retention": report["kinds"]["retention"]} == {"retention": kept["items"]}
    # a third view, the teacher's chunk before each item, on the same cached items: its own adapter
    chunk = Lift(str(tiny_model_dir), dataclasses.replace(cfg, distill_views="lift+icl,lift,lift+chunk"),
                 store=tmp_path / "store", progress=False).internalize(text)
    assert chunk.trained and chunk.adapter != done.adapter and chunk.metadata["distill"]["used"] == "cache"
    assert chunk.metadata["distill"]["student_samples"] == 3 * report["items"]
    with pytest.raises(LiftError, match="--distill-kinds"):  # (the random model writes no question that passes)
        Lift(str(tiny_model_dir), dataclasses.replace(cfg, distill_kinds="written"), store=tmp_path / "s3",
             progress=False).internalize(text)


def test_the_teacher_bar_counts_prompts_when_progress_is_shown(tiny_model_dir, tmp_path, capsys):
    """What a user of ``liftlm ask`` sees by default (progress on): the teacher's bar, up to every prompt asked."""
    from liftlm import Lift

    cfg = LiftConfig(window=256, segment_length=48, context_tokens=32, epochs=1, distill_prompts=2,
                     distill_answer_tokens=3, distill_questions=0)
    done = Lift(str(tiny_model_dir), cfg, store=tmp_path / "store", progress=True).internalize(TEXT * 2)
    report = done.metadata["distill"]
    asked = report["items"] + report["not_grounded"]
    bars = capsys.readouterr().err
    assert "teacher: 100%" in bars and f"{asked}/{asked}" in bars


def _resumable_teacher(tiny_loaded, tmp_path, monkeypatch):
    """The tiny model's teacher on a text of several blocks (2 chunks a block), and its uninterrupted items."""
    from liftlm.distill import DistillSource
    from liftlm.distill import teacher as distill

    monkeypatch.setattr(distill, "TEACH_BLOCK", 2)  # 2 chunks a block: several blocks in a short text
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    chat = PromptBuilder(tok, 512).chat
    cfg = LiftConfig(window=256, segment_length=48, context_tokens=32, distill_prompts=2, distill_answer_tokens=3,
                     distill_retention=0.25)
    text = TEXT * 4
    ids = tok.encode(text, add_special_tokens=False)
    whole, report = DistillSource(cfg, "tiny", tmp_path / "whole").items(text, ids, model, tok, chat)
    return model, tok, chat, cfg, text, ids, whole, report


def test_an_interrupted_teacher_resumes_after_its_finished_blocks(tiny_loaded, tmp_path, monkeypatch):
    """The teacher appends each finished block of chunks to a record beside its cache; killed mid-document, the next
    run asks only the chunks after the record's last block and caches exactly the items of an uninterrupted run."""
    from liftlm.distill import DistillSource
    from liftlm.distill import teacher as distill

    model, tok, chat, cfg, text, ids, whole, report = _resumable_teacher(tiny_loaded, tmp_path, monkeypatch)
    assert "resumed_blocks" not in report

    source = DistillSource(cfg, "tiny", tmp_path / "cut")
    asked: list[tuple[int, int]] = []
    real_teach = distill.teach

    def killed_in_block(n):
        def teach(model, tokenizer, chat, doc_ids, rows, *args, **kwargs):
            spans = {span for span, _, _ in rows}
            if n is not None and any(span[0] >= n * 2 * cfg.effective_stride for span in spans):
                raise KeyboardInterrupt  # the user's Ctrl-C, in the block after the first n
            asked.extend(spans)
            return real_teach(model, tokenizer, chat, doc_ids, rows, *args, **kwargs)
        return teach

    monkeypatch.setattr(distill, "teach", killed_in_block(2))
    with pytest.raises(KeyboardInterrupt):
        source.items(text, ids, model, tok, chat)
    record = [json.loads(line) for line in source.partial_path(text).read_text().splitlines()]
    assert [r["block"] for r in record] == [0, 1] and not source.cache_path(text).exists()
    finished = set(asked)
    asked.clear()
    monkeypatch.setattr(distill, "teach", killed_in_block(None))
    items, again = source.items(text, ids, model, tok, chat)
    assert again["resumed_blocks"] == 2 and again["teacher_seconds"] >= record[-1]["seconds"]
    assert asked and not finished & set(asked)  # no chunk of the finished blocks asked again
    assert [(it.kind, it.prompt, it.chunk, it.answer_ids) for it in items] == \
        [(it.kind, it.prompt, it.chunk, it.answer_ids) for it in whole]
    assert {k: again[k] for k in ("items", "not_grounded", "kinds")} == \
        {k: report[k] for k in ("items", "not_grounded", "kinds")}
    assert not source.partial_path(text).exists() and source.cache_path(text).is_file()


def _writing_teacher(distill, tok, calls: list):
    """``teach`` with a teacher that writes two good questions for every sentence (the tiny random model writes
    none that pass), answering every other ask for real; each call's asks are appended to ``calls``."""
    real_teach = distill.teach

    def teach(model, tokenizer, chat, doc_ids, rows, *args, **kwargs):
        calls.append(list(rows))
        if rows and rows[0][1] == "write":
            return [DistillItem("write", p, span, tok.encode("Who painted the ferry at Varnholm?\n"
                                                               "What was counted in the keeper's ledger?"))
                    for span, k, p in rows]
        return real_teach(model, tokenizer, chat, doc_ids, rows, *args, **kwargs)
    return teach


@pytest.mark.parametrize("shape", [dict(width=64, blocks=3, prefill=4), dict(width=8, blocks=2, prefill=16)])
def test_the_teachers_shape_changes_its_calls_not_its_items(tiny_loaded, monkeypatch, shape):
    """Teaching several blocks at once, in wider batches, with chunks prefilled together (a GPU's shape) gives the
    items, counts and block records of one block at a time in batches of 32, in fewer calls."""
    from liftlm.distill import teacher as distill

    monkeypatch.setattr(distill, "TEACH_BLOCK", 2)  # 2 chunks a block: several blocks in a short text
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    chat = PromptBuilder(tok, 512).chat
    ids = tok.encode(TEXT * 4, add_special_tokens=False)
    spans = [(a, min(a + 40, len(ids))) for a in range(0, len(ids) - 20, 20)]
    assert len(spans) >= 6
    runs = []
    for s in (distill.TeacherShape(), distill.TeacherShape(**shape)):
        calls, records, forwards = [], [], []
        monkeypatch.setattr(distill, "teach", _writing_teacher(distill, tok, calls))
        hook = model.register_forward_pre_hook(lambda m, a, k, f=forwards: f.append(1), with_kwargs=True)
        try:
            items, counts = distill.make_items(model, tok, chat, ids, spans, 2, 3, 0.25, questions_per_sentence=2,
                                               on_block=records.append, shape=s)
        finally:
            hook.remove()
        runs.append(([(it.kind, it.prompt, it.chunk, it.answer_ids, it.top_ids) for it in items], counts, records,
                     len(calls), len(forwards)))
    (items, counts, records, teach_calls, forwards), (items2, counts2, records2, teach_calls2, forwards2) = runs
    assert counts["written"] > 0 and any(k == "retention" for k, *_ in items)
    assert items2 == items and counts2 == counts
    # the same records, but for the last decimal of a log-probability (wider batches add in another order)
    logprobs = [[x for r in rs for it in r["items"] for row in it.pop("top_logprobs") for x in row]
                for rs in (records, records2)]
    assert records2 == records and [r["block"] for r in records] == list(range(len(records)))
    assert logprobs[1] == pytest.approx(logprobs[0], abs=2e-4)
    assert teach_calls2 < teach_calls  # both passes of several blocks in one call each
    if shape["width"] > 32:
        assert forwards2 < forwards


def test_the_teacher_keeps_more_written_questions_with_the_words_check(tiny_loaded, monkeypatch):
    """``make_items(question_check="words")`` keeps a written question that says "the ferry" for the sentence
    naming Varnholm and Ilsa Brandt, asks it, and counts it; the default check drops it."""
    from liftlm.distill import teacher as distill

    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    chat = PromptBuilder(tok, 512).chat
    ids = tok.encode(TEXT, add_special_tokens=False)
    spans = [(0, len(ids))]
    real_teach = distill.teach

    def teach(model, tokenizer, chat, doc_ids, rows, *args, **kwargs):
        if rows and rows[0][1] == "write":
            return [DistillItem("write", p, span, tok.encode("What colour was the ferry painted?\n"
                                                               "Who painted the ferry at Varnholm?"))
                    for span, k, p in rows]
        return real_teach(model, tokenizer, chat, doc_ids, rows, *args, **kwargs)

    monkeypatch.setattr(distill, "teach", teach)
    asked = {}
    for check in ("names", "words"):
        items, counts = distill.make_items(model, tok, chat, ids, spans, 2, 3, 0.0, questions_per_sentence=2,
                                           question_check=check, trace=(trace := []))
        asked[check] = {prompt for block in trace for *_, kind, prompt, _ in block["asks"] if kind == "written"}
        asked[check, "n"] = counts["written"]
    assert asked["names"] == {"Who painted the ferry at Varnholm?"}
    assert asked["words"] == {"Who painted the ferry at Varnholm?", "What colour was the ferry painted?"}
    assert asked["words", "n"] == asked["names", "n"] + 1


def test_a_teacher_resumes_under_another_shape(tiny_loaded, tmp_path, monkeypatch):
    """The record holds blocks whatever the shape: a teacher interrupted while teaching blocks two at a time resumes
    one block at a time (as a CPU would after a GPU) and caches exactly the items of an uninterrupted run."""
    from liftlm.distill import DistillSource
    from liftlm.distill import teacher as distill

    model, tok, chat, cfg, text, ids, whole, report = _resumable_teacher(tiny_loaded, tmp_path, monkeypatch)
    assert report["teacher_shape"] == {"width": 32, "blocks": 1, "prefill": 1}  # a CPU's
    real_teach, real_shape = distill.teach, distill.teacher_shape

    def killed_after_two_blocks(model, tokenizer, chat, doc_ids, rows, *args, **kwargs):
        if any(span[0] >= 4 * cfg.effective_stride for span, _, _ in rows):  # the second group of two blocks
            raise KeyboardInterrupt
        return real_teach(model, tokenizer, chat, doc_ids, rows, *args, **kwargs)

    source = DistillSource(cfg, "tiny", tmp_path / "cut")
    monkeypatch.setattr(distill, "teacher_shape", lambda *a: distill.TeacherShape(width=64, blocks=2, prefill=2))
    monkeypatch.setattr(distill, "teach", killed_after_two_blocks)
    with pytest.raises(KeyboardInterrupt):
        source.items(text, ids, model, tok, chat)
    record = [json.loads(line) for line in source.partial_path(text).read_text().splitlines()]
    assert [r["block"] for r in record] == [0, 1]
    monkeypatch.setattr(distill, "teacher_shape", real_shape)
    monkeypatch.setattr(distill, "teach", real_teach)
    items, again = source.items(text, ids, model, tok, chat)
    assert again["resumed_blocks"] == 2
    assert [(it.kind, it.prompt, it.chunk, it.answer_ids) for it in items] == \
        [(it.kind, it.prompt, it.chunk, it.answer_ids) for it in whole]


def test_the_teachers_width_by_device_and_memory(tiny_loaded):
    from liftlm.distill import teacher as distill

    model = tiny_loaded.model
    # on a CPU: batches of 32, one block at a time, unless --teacher-batch says otherwise
    assert distill.teacher_shape(model, None, 300, 32) == distill.TeacherShape(32, 1, 1)
    assert distill.teacher_shape(model, 16, 300, 32) == distill.TeacherShape(16, 1, 1)
    assert distill.teacher_shape(model, 256, 300, 32) == distill.TeacherShape(256, 4, distill.TEACH_BLOCK)
    # a row's keys/values: layers × (keys, values) × kv heads × head size × tokens × bytes
    c = model.config
    head = c.hidden_size // c.num_attention_heads
    assert distill.row_bytes(model, 100) == c.num_hidden_layers * 2 * c.num_key_value_heads * head * 100 * 4
    # on a GPU: what a quarter of the free memory holds, between 32 and 256 rows
    gib = 2**30
    assert distill.gpu_width(80 * gib, 9 * 2**20) == 256  # an H100 and Qwen 1.5B's 500-token rows (~9 MiB)
    assert distill.gpu_width(20 * gib, 64 * 2**20) == 80
    assert distill.gpu_width(1 * gib, 64 * 2**20) == 32


def test_a_teacher_batch_below_one_is_refused():
    with pytest.raises(LiftError, match="--teacher-batch must be at least 1"):
        LiftConfig(teacher_batch=0).validate()
