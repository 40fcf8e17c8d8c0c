"""`liftlm eval` on the tiny model: end to end per benchmark, one adapter per document, resumption, the judge,
and bad input (one LiftError naming the flag, before anything is written)."""
from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from liftlm.errors import LiftError
from liftlm.eval import facts, runner
from liftlm.eval.cli import register, run

SMALL = ["--objective", "ct", "--segment-length", "32", "--context-tokens", "32", "--epochs", "1", "--lora-rank", "4", "--quiet",
         "--window", "256", "--max-new-tokens", "6"]
STORY = ("Mira kept the lighthouse on Varnholm for eleven winters. In the twelfth winter a letter came from her "
         "brother, who wrote that their mother was ill in the river town. Mira handed the keys to the harbour "
         "master and took the morning ferry south. She never kept a light again. ")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and leave the other core to whatever else runs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def parse(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="liftlm")
    register(parser.add_subparsers(dest="verb"))
    return parser.parse_args(["eval", *[str(a) for a in argv]])


def evaluate(*argv) -> int:
    return run(parse(*argv))


def records(out: Path, name: str = "predictions.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines() if line.strip()]


@pytest.fixture
def longbench_file(tmp_path) -> Path:
    """Two documents with two questions each, and one more document with one question."""
    rows = [
        {"_id": "a1", "dataset": "narrativeqa", "context": STORY * 3, "input": "Why does Mira leave?",
         "answers": ["her mother was ill"]},
        {"_id": "a2", "dataset": "narrativeqa", "context": STORY * 3, "input": "How long did Mira keep the light?",
         "answers": ["eleven winters"]},
        {"_id": "b1", "dataset": "musique", "context": STORY * 2, "input": "Who wrote the letter?",
         "answers": ["her brother"]},
        {"_id": "b2", "dataset": "musique", "context": STORY * 2, "input": "Where was the mother?",
         "answers": ["the river town"]},
        {"_id": "c1", "dataset": "passage_retrieval_en", "context": "Paragraph 1: " + STORY + "\nParagraph 2: Ships.",
         "input": "A keeper leaves her post.", "answers": ["Paragraph 1"]},
    ]
    path = tmp_path / "longbench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def haystack_dir(tmp_path, haystack) -> Path:
    d = tmp_path / "essays"
    d.mkdir()
    (d / "a.txt").write_text(haystack)
    return d


def test_longbench_end_to_end_one_adapter_per_document(tmp_path, tiny_model_dir, longbench_file, monkeypatch):
    import liftlm.train

    out, store = tmp_path / "out", tmp_path / "store"
    trained = []  # the answers on disk as each document's training starts
    real_train = liftlm.train.train
    monkeypatch.setitem(liftlm.train.TRAINERS, "paper",
                        lambda *a, **k: trained.append(len(records(out))) or real_train(*a, **k))
    assert evaluate("--benchmark", "longbench", "--data", longbench_file, "--methods", "icl,lift+icl,rag",
                    "--model", tiny_model_dir, "--store", store, "--out", out, *SMALL) == 0
    recs = records(out)
    assert len(recs) == 5 * 3
    assert {r["method"] for r in recs} == {"icl", "lift+icl", "rag"}
    for r in recs:
        assert {"id", "question", "gold", "prediction", "score", "method", "seconds", "metric", "task"} <= set(r)
        assert 0.0 <= r["score"] <= 1.0 and r["seconds"] >= 0
    adapters = [p for p in store.iterdir() if p.name != ".work"]  # .work: the store's locks (and checkpoints)
    assert len(adapters) == 3  # three documents, three adapters
    # each document's icl and rag answers are written before its training starts (2 + 2 questions, then 1)
    assert trained == [2 * 2, 2 * 3 + 2 * 2, 2 * 3 * 2 + 1 * 2]
    # each method answers the document's questions in a row (their prompts share the document's keys/values)
    assert [(r["id"], r["method"]) for r in recs[:6]] == [("a1", "icl"), ("a2", "icl"), ("a1", "rag"), ("a2", "rag"),
                                                           ("a1", "lift+icl"), ("a2", "lift+icl")]
    assert not list(store.glob(".work/*/checkpoint"))  # checkpoints go once the adapters are stored
    lifted = [r for r in recs if r["method"] == "lift+icl"]
    assert len({r["adapter"] for r in lifted}) == 3
    assert lifted[0]["adapter"] == lifted[1]["adapter"]  # both questions of the first document
    assert all("adapter" not in r for r in recs if r["method"] != "lift+icl")
    assert {r["metric"] for r in recs} == {"qa_f1", "retrieval"}

    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["segment_length"] == 32 and meta["seed"] == 0 and meta["window"] == 256
    assert meta["date"] and "git" in meta and meta["methods"] == ["icl", "lift+icl", "rag"]
    summary = (out / "summary.md").read_text()
    assert "| lift+icl |" in summary and "(25.84)" in summary  # the paper's NarrativeQA LIFT+ICL figure
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "niah_heatmap.png").exists()


def test_resume_skips_finished_examples(tmp_path, tiny_model_dir, longbench_file, monkeypatch):
    out, store = tmp_path / "out", tmp_path / "store"
    common = ["--benchmark", "longbench", "--data", longbench_file, "--methods", "icl,lift", "--model",
              tiny_model_dir, "--store", store, "--out", out, *SMALL]
    evaluate(*common, "--limit", "1")
    first = records(out)
    assert len(first) == 3 * 2  # one question per task, two methods
    with (out / "predictions.jsonl").open("a") as fh:
        fh.write('{"id": "a2", "meth')  # an interrupted write
    evaluate(*common)
    second = records(out)
    assert second[: len(first)] == first
    assert len(second) == 5 * 2 and len({(r["id"], r["method"]) for r in second}) == 10
    # adding a method answers only that method; then nothing is left to do
    evaluate(*common[:4], "--methods", "icl,lift,lift+icl", *common[6:])
    assert len(records(out)) == 15

    def refuse(*_a, **_k):
        raise AssertionError("a finished example was answered again")

    monkeypatch.setattr(runner, "generate_answer", refuse)
    evaluate(*common[:4], "--methods", "icl,lift,lift+icl", *common[6:])
    assert len(records(out)) == 15
    assert "(5.55)" in (out / "summary.md").read_text()


def test_interrupt_writes_the_report_of_what_is_done(tmp_path, tiny_model_dir, longbench_file, monkeypatch):
    out = tmp_path / "out"
    real, calls = runner.generate_answer, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(runner, "generate_answer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate("--benchmark", "longbench", "--data", longbench_file, "--methods", "icl", "--model",
                 tiny_model_dir, "--store", tmp_path / "store", "--out", out, *SMALL)
    assert len(records(out)) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert sum(cell["n"] for cell in summary["cells"]["icl"].values()) == 2


def test_resume_refuses_other_settings(tmp_path, tiny_model_dir, longbench_file):
    out = tmp_path / "out"
    common = ["--benchmark", "longbench", "--data", longbench_file, "--methods", "icl", "--model", tiny_model_dir,
              "--out", out, "--limit", "1", *SMALL]
    evaluate(*common)
    with pytest.raises(LiftError, match="--out: .*--epochs"):
        evaluate(*common, "--epochs", "2")
    with pytest.raises(LiftError, match="--max-new-tokens"):
        evaluate(*common, "--max-new-tokens", "7")


def test_niah_grid_and_heatmap(tmp_path, tiny_model_dir, haystack_dir):
    out = tmp_path / "out"
    assert evaluate("--benchmark", "niah", "--data", haystack_dir, "--lengths", "120,240", "--depths", "0,1",
                    "--methods", "icl,lift+icl", "--model", tiny_model_dir, "--store", tmp_path / "s", "--out", out,
                    *SMALL) == 0
    recs = records(out)
    assert len(recs) == 2 * 2 * 2
    assert {(r["meta"]["length"], r["meta"]["depth"]) for r in recs} == {(120, 0.0), (120, 1.0), (240, 0.0), (240, 1.0)}
    assert all(r["task"] == "niah" and r["gold"] == ["sandwich", "dolores park", "sunny"] for r in recs)
    assert (out / "niah_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Score by depth and length" in (out / "summary.md").read_text()


def test_ruler_is_seeded(tmp_path, tiny_model_dir, haystack_dir):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        evaluate("--benchmark", "ruler", "--data", haystack_dir, "--variants", "single,multiquery", "--lengths", "300",
                 "--samples", "2", "--data-seed", "3", "--methods", "icl", "--model", tiny_model_dir, "--out", out,
                 *SMALL)
        runs.append([(r["id"], r["question"], r["gold"]) for r in records(out)])
    assert runs[0] == runs[1] and len(runs[0]) == 4
    assert {r[0] for r in runs[0]} == {"ruler_single/300/3", "ruler_single/300/4", "ruler_multiquery/300/3",
                                       "ruler_multiquery/300/4"}
    assert (tmp_path / "a" / "ruler_heatmap.png").is_file()


# ---------------------------------------------------------------- LooGLE: --max-doc-tokens and the judge


@pytest.fixture
def loogle_file(tmp_path) -> Path:
    """One LooGLE-format document: the first question's evidence at its start, the second's at its end."""
    filler = "The keeper climbed the stairs at dusk and lit the lamp. " * 40
    first, last = "Mira kept the lighthouse for eleven winters.", "The ferry company was founded in Bergen."
    qa = [{"Q": "How long did Mira keep the lighthouse?", "A": "eleven winters", "S": first},
          {"Q": "Where was the ferry company founded?", "A": "in Bergen", "S": last}]
    row = {"input": f"{first} {filler}{last}", "title": "Varnholm", "qa_pairs": repr(qa), "output": ""}
    path = tmp_path / "shortdep_qa.jsonl"
    path.write_text(json.dumps(row) + "\n")
    return path


class _Endpoint(BaseHTTPRequestHandler):
    seen: ClassVar[list] = []

    def do_POST(self):  # http.server's name for it
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Endpoint.seen.append((self.path, self.headers.get("Authorization"), body))
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": "True."}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    _Endpoint.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_loogle_cut_keeps_questions_with_evidence_inside_and_judge_endpoint(tmp_path, tiny_model_dir, loogle_file,
                                                                           endpoint, monkeypatch):
    monkeypatch.setenv("LIFTLM_JUDGE_API_KEY", "sk-test")
    out = tmp_path / "out"
    evaluate("--benchmark", "loogle", "--data", loogle_file, "--max-doc-tokens", "120", "--methods", "icl,lift+icl",
             "--judge", endpoint + "#judge-model", "--model", tiny_model_dir, "--store", tmp_path / "s", "--out", out,
             *SMALL)
    recs = records(out)
    assert [r["id"] for r in recs] == ["shortdep_qa/0/0"] * 2  # the second question's evidence was cut away
    assert recs[0]["meta"]["doc_tokens"] > 120
    assert recs[0]["metric"] == "rouge" and 0 <= recs[0]["scores"]["qa_f1"] <= 1  # F1 stored beside ROUGE-L
    verdicts = records(out, "judge.jsonl")
    assert [v["judge"] for v in verdicts] == [1.0, 1.0]
    path, auth, body = _Endpoint.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "judge-model"
    assert "eleven winters" in body["messages"][0]["content"]
    summary = (out / "summary.md").read_text()
    assert "shortdep_qa · judge" in summary and "shortdep_qa · qa_f1" in summary and "100.00 (50.44)" in summary  # the paper's LIFT+ICL ShortQA
    meta = json.loads((out / "run.json").read_text())
    assert meta["examples"] == {"loaded": 2, "kept_after_cut": 1}


def test_judge_with_a_local_model(tmp_path, tiny_model_dir, loogle_file):
    out = tmp_path / "out"
    evaluate("--benchmark", "loogle", "--data", loogle_file, "--methods", "icl", "--judge", tiny_model_dir,
             "--model", tiny_model_dir, "--out", out, *SMALL)
    verdicts = records(out, "judge.jsonl")
    assert len(verdicts) == 2 and {v["judge"] for v in verdicts} <= {0.0, 1.0}
    assert all(v["judge_model"] == str(tiny_model_dir) for v in verdicts)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("argv, flag", [
    (["--benchmark", "niah", "--methods", "icl,magic"], "--methods"),
    (["--benchmark", "niah", "--methods", ","], "--methods"),
    (["--benchmark", "niah", "--depths", "0,1.5"], "--depths"),
    (["--benchmark", "niah", "--depths", "0,half"], "--depths"),
    (["--benchmark", "niah", "--lengths", "100,-5"], "--lengths"),
    (["--benchmark", "niah", "--variants", "single"], "--variants"),
    (["--benchmark", "niah", "--needle", "A new needle."], "--needle"),
    (["--benchmark", "niah", "--max-doc-tokens", "100"], "--max-doc-tokens"),
    (["--benchmark", "niah", "--task", "narrativeqa"], "--task"),
    (["--benchmark", "niah", "--data", "/no/such/folder"], "--data"),
    (["--benchmark", "ruler", "--variants", "single,twisted"], "--variants"),
    (["--benchmark", "ruler", "--samples", "0"], "--samples"),
    (["--benchmark", "longbench"], "--data"),
    (["--benchmark", "longbench", "--data", "x.jsonl", "--task", "hotpotqa"], "--task"),
    (["--benchmark", "longbench", "--data", "x.jsonl", "--judge", "some/model"], "--judge"),
    (["--benchmark", "longbench", "--data", "x.jsonl", "--limit", "0"], "--limit"),
    (["--benchmark", "longbench", "--data", "x.jsonl", "--documents", "0"], "--documents"),
    (["--benchmark", "niah", "--documents", "1"], "--documents"),
    (["--benchmark", "loogle", "--data", "x.jsonl", "--lengths", "100"], "--lengths"),
    (["--benchmark", "loogle", "--data", "x.jsonl", "--qa-file", "qa.jsonl"], "--qa-file"),
    (["--benchmark", "loogle", "--data", "x.jsonl", "--base", "/no/such/sft/model"], "--base"),
    # facts (liftlm.eval.facts)
    (["--benchmark", "facts", "--facts", "0"], "--facts"),
    (["--benchmark", "facts", "--facts", str(len(facts.TEMPLATES) + 1)], "--facts"),
    (["--benchmark", "facts", "--controls", "-1"], "--controls"),
    (["--benchmark", "facts", "--controls", str(len(facts.CONTROLS) + 1)], "--controls"),
    (["--benchmark", "facts", "--depths", "0.2,1.5"], "--depths"),
    (["--benchmark", "facts", "--lengths", "0"], "--lengths"),
    (["--benchmark", "facts", "--samples", "0"], "--samples"),
    (["--benchmark", "facts", "--needle", "A needle."], "--needle"),
    (["--benchmark", "facts", "--variants", "single"], "--variants"),
    (["--benchmark", "facts", "--documents", "1"], "--documents"),
    (["--benchmark", "facts", "--methods", "oracle,magic"], "--methods"),
    (["--benchmark", "facts", "--data", "/no/such/folder"], "--data"),
    (["--benchmark", "niah", "--facts", "3"], "--facts"),
    (["--benchmark", "ruler", "--controls", "3"], "--controls"),
    (["--benchmark", "ruler", "--depths", "0.5"], "--depths"),
])
def test_bad_flags_are_refused_before_loading(argv, flag, tmp_path):
    with pytest.raises(LiftError) as err:
        evaluate(*argv, "--model", "/no/model/needed", "--out", tmp_path / "out")
    message = str(err.value)
    assert message.startswith(flag) or f" {flag}" in message, message
    assert "\n" not in message and not (tmp_path / "out").exists()


def test_bad_data_and_small_window_write_nothing(tmp_path, tiny_model_dir, longbench_file):
    out = tmp_path / "out"
    with pytest.raises(LiftError, match="^--data: .*no such file"):
        evaluate("--benchmark", "longbench", "--data", tmp_path / "missing.jsonl", "--model", tiny_model_dir,
                 "--out", out, "--quiet")
    with pytest.raises(LiftError, match="^--window 64 is too small for narrativeqa"):
        evaluate("--benchmark", "longbench", "--data", longbench_file, "--model", tiny_model_dir, "--out", out,
                 "--window", "64", "--quiet")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LiftError, match="^--out: .* is a file"):
        evaluate("--benchmark", "longbench", "--data", longbench_file, "--model", tiny_model_dir,
                 "--out", tmp_path / "file", "--quiet")
    assert not out.exists()


def test_take_documents_keeps_the_first_documents_of_each_task():
    from liftlm.eval.datasets import Example

    def ex(i, doc, task):
        return Example(id=str(i), document=doc, question="q", answers=["a"], task=task)

    rows = [ex(0, "A", "s"), ex(1, "B", "s"), ex(2, "A", "s"), ex(3, "C", "s"), ex(4, "C", "l"), ex(5, "A", "l"),
            ex(6, "B", "l")]
    assert [e.id for e in runner.take_documents(rows, 2)] == ["0", "1", "2", "4", "5"]
    assert [e.id for e in runner.take_documents(rows, 1)] == ["0", "2", "4"]
    assert runner.take_documents(rows, None) == rows


def test_methods_match_the_inference_modes():
    from liftlm.infer import MODES

    assert runner.METHODS == (*MODES, "oracle")


def test_torn_last_line_is_cut_and_a_bad_middle_line_refused(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": ')
    assert [r["id"] for r in runner.read_jsonl(path)] == ["a", "b"]
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(LiftError, match=":2 is not valid JSON"):
        runner.read_jsonl(path)


# ---------------------------------------------------------------- the registry


def test_an_unknown_benchmark_names_the_closest_and_all():
    from liftlm.eval.benchmarks import BENCHMARKS, get_benchmark

    assert get_benchmark("ruler").name == "ruler"
    with pytest.raises(LiftError) as err:
        evaluate("--benchmark", "nah", "--model", "/no/model/needed")
    message = str(err.value)
    assert message.startswith("--benchmark: unknown benchmark 'nah'; did you mean 'niah'?"), message
    assert message.endswith("available: " + ", ".join(BENCHMARKS))
    with pytest.raises(LiftError, match="unknown benchmark 'squad'; available: loogle, longbench, niah"):
        get_benchmark("squad")


def test_a_flag_of_another_benchmark_names_those_that_take_it(tmp_path):
    with pytest.raises(LiftError, match=r"^--lengths applies to --benchmark niah, ruler or facts, not loogle$"):
        evaluate("--benchmark", "loogle", "--data", "x.jsonl", "--lengths", "100", "--model", "m")
    with pytest.raises(LiftError, match=r"^--documents applies to --benchmark loogle or longbench, not ruler; set"):
        evaluate("--benchmark", "ruler", "--documents", "2", "--model", "m", "--data", tmp_path)
