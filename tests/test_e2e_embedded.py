"""End to end on the embedded SmolLM2-135M-Instruct: a made-up fact the model cannot know.

Slow-ish (about a minute on 2 CPU cores after the one-time GGUF conversion); marked ``slow``.
"""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

FACT = "The lighthouse keeper of Varnholm named his grey cat Biscuit Quartermain."
DOCUMENT = f"""The Varnholm lighthouse stands on the northern cape, where the fjord opens to the sea. It was built in 1871
from granite quarried on the island itself, and its lamp could be seen from nineteen miles away on a clear night.
For most of its working life it was kept by one family, the Aalstads, who lived in the small house at its foot.
{FACT} The cat slept every night beside the lamp room stove and was said to wake the keeper whenever fog came in.
Supplies came by boat once a fortnight in summer and once a month in winter, and in the worst storms the family went
without fresh bread for six weeks. The lamp was electrified in 1954, and the last keeper left in 1989, when the light
became automatic. The house is now a small museum, open from June to August."""
QUESTION = "What was the name of the lighthouse keeper's cat?"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = os.environ.get("LIFTLM_HOME") or str(tmp_path_factory.mktemp("liftlm-home"))
    return home


def liftlm(home, store, *argv):
    env = {**os.environ, "LIFTLM_HOME": home, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "liftlm", *map(str, argv), "--store", str(store)],
                          capture_output=True, text=True, env=env, timeout=1200)


def test_lift_icl_answers_a_made_up_fact_and_reuses_the_adapter(home, tmp_path):
    doc = tmp_path / "varnholm.txt"
    doc.write_text(DOCUMENT)
    store = tmp_path / "store"
    first = liftlm(home, store, "ask", "--document", doc, "--question", QUESTION, "--json", "--quiet")
    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)
    assert answer["trained"] is True and answer["mode"] == "lift+icl"
    assert "biscuit" in answer["answer"].lower(), answer
    second = liftlm(home, store, "ask", "--document", doc, "--question", QUESTION, "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["trained"] is False and again["adapter"] == answer["adapter"]
    assert "LIFT:" not in second.stderr  # no training progress bar: nothing was trained
    assert again["answer"] == answer["answer"]  # greedy decoding with the same adapter


def test_lift_puts_the_document_into_the_weights(home, tmp_path, monkeypatch):
    """With nothing in context, the adapted model finds the document (and the fact) more likely than the base.

    Plain segments here: a document this short fits whole in a contextualized sample's context, where reciting
    it is mere copying (training loss ~0.05 from the first step), which teaches the weights little."""
    monkeypatch.setenv("LIFTLM_HOME", home)
    from liftlm import Lift, LiftConfig
    from liftlm.infer import text_nll

    cfg = LiftConfig(objective="ct", contextualized=False, epochs=8, learning_rate=5e-4)
    lift = Lift(config=cfg, store=tmp_path / "store", progress=False)
    base_doc = text_nll(lift.loaded.model, lift.tokenizer, DOCUMENT)
    base_fact = text_nll(lift.loaded.model, lift.tokenizer, FACT)
    lift.internalize(DOCUMENT)
    assert text_nll(lift._adapted, lift.tokenizer, DOCUMENT) < 0.9 * base_doc
    assert text_nll(lift._adapted, lift.tokenizer, FACT) < base_fact
    with lift._adapted.disable_adapter():  # the ICL baseline is untouched by the adapter
        assert text_nll(lift._adapted, lift.tokenizer, DOCUMENT) == pytest.approx(base_doc, rel=1e-5)


def test_qa_file_makes_the_fact_recallable_without_the_document(home, tmp_path):
    """Auxiliary QA pairs (given with --qa-file) let the adapted model answer with no document in context.

    Measured on this document, with the paper's objective (--objective ct): QA prompts without the document
    (--qa-context-tokens 0, as mode lift asks) at lr 5e-4 for 8 stage-2 epochs recall the name, and an unrelated
    question is not answered with it; with the document in the QA prompts the model learns to read the answer from
    context and does not recall it (it answers "Whiskers"); at lr 1e-3 it answers every question with the name.
    (With the default objective, distillation, the given pairs train beside the teacher's items for 2 epochs, and
    the model answers "Whiskers".)"""
    doc = tmp_path / "varnholm.txt"
    doc.write_text(DOCUMENT)
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "What was the name of the lighthouse keeper's cat?", "answer": "Biscuit Quartermain.",
         "evidence": FACT},
        {"question": "What did the keeper of Varnholm call his grey cat?", "answer": "He called it Biscuit "
         "Quartermain.", "evidence": FACT},
    ]))
    store = tmp_path / "store"
    done = liftlm(home, store, "internalize", "--document", doc, "--objective", "ct", "--qa-file", qa,
                  "--qa-context-tokens", 0, "--learning-rate", 5e-4, "--qa-epochs", 8, "--quiet")
    assert done.returncode == 0, done.stderr
    adapter = done.stdout.strip()
    assert os.path.isfile(os.path.join(adapter, "qa.jsonl"))
    asked = liftlm(home, store, "ask", "--adapter", adapter, "--mode", "lift", "--json",
                   "--question", "What was the name of the lighthouse keeper's cat?")
    assert asked.returncode == 0, asked.stderr
    assert "biscuit" in json.loads(asked.stdout)["answer"].lower()
    other = liftlm(home, store, "ask", "--adapter", adapter, "--mode", "lift", "--json",
                   "--question", "In which year was the Varnholm lighthouse built?")
    assert other.returncode == 0 and "biscuit" not in json.loads(other.stdout)["answer"].lower()


def test_the_demo_answers_from_outside_the_window_where_icl_cannot(home, tmp_path):
    """The README demo (scripts/demo.sh) end to end: examples/kellmere.txt (1.3k tokens) with a 512-token window,
    the adapter trained by context distillation with the demo's 8 prompts per chunk, one sample a step at 2e-4
    (3-4 minutes here). The
    railway's closing year lies in the middle of the document, outside the head+tail view: ``icl`` cannot read
    it, ``lift+icl`` answers it from the adapter (measured: experiments/results/objectives-embedded-default/)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    demo = open(os.path.join(root, "scripts", "demo.sh")).read()
    assert "--distill-prompts 8" in demo and "In what year was the railway line to Kellmere shut?" in demo
    assert "--batch-size 1 --learning-rate 2e-4" in demo
    done = liftlm(home, tmp_path / "store", "ask", "--document", os.path.join(root, "examples", "kellmere.txt"),
                  "--window", 512, "--distill-prompts", 8, "--batch-size", 1, "--learning-rate", 2e-4,
                  "--mode", "icl,lift+icl", "--json",
                  "--question", "In what year was the railway line to Kellmere shut?")  # progress shown, as in the demo
    assert done.returncode == 0, done.stderr
    assert "teacher: 100%" in done.stderr and "LIFT" in done.stderr  # the bars the demo's user sees
    icl, lift_icl = (json.loads(line) for line in done.stdout.splitlines())
    assert (icl["mode"], lift_icl["mode"]) == ("icl", "lift+icl")
    assert "1964" not in icl["answer"], icl
    assert "1964" in lift_icl["answer"], lift_icl
