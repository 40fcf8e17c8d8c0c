"""``liftlm serve`` end to end on a real uvicorn server: documents, progress events, answers with the openai client,
concurrency over several adapters, and bad input."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_helpers import DOCS, TOKEN, reference_answer

from liftlm.adapters import read_metadata


@pytest.fixture(scope="module")
def ready_docs(server):
    """The three documents, posted and trained."""
    ids = [server.post(d, title=f"doc {i}")["id"] for i, d in enumerate(DOCS)]
    jobs = [server.wait(i) for i in ids]
    assert [j["status"] for j in jobs] == ["ready"] * 3, [j["error"] for j in jobs]
    return jobs


def test_a_chat_request_scales_the_adapter(server, ready_docs, tiny_model_dir):
    doc, question = ready_docs[1], "How many vessels sought shelter?"
    for mode, scale in (("lift", 0.5), ("lift+rag", 0.25), ("lift", 1.0)):
        r = server.ask(doc["id"], question, mode=mode, adapter_scale=scale)
        assert r.status_code == 200, r.text
        want = reference_answer(tiny_model_dir, server.store, doc, question, mode, 8, adapter_scale=scale)
        assert r.json()["choices"][0]["message"]["content"] == want, (mode, scale)
    # at 0 the adapted model is the base model: the same answer as asking the base model the question alone
    zero = server.ask(doc["id"], question, mode="lift", adapter_scale=0)
    base = server.ask("base", question, mode="lift")
    assert zero.status_code == base.status_code == 200
    assert zero.json()["choices"][0]["message"]["content"] == base.json()["choices"][0]["message"]["content"]
    stream = server.ask(doc["id"], question, mode="lift", adapter_scale=0.5, stream=True)
    assert stream.status_code == 200 and "data: [DONE]" in stream.text
    chunks = [json.loads(line[5:]) for line in stream.text.splitlines()
              if line.startswith("data:") and line.strip() != "data: [DONE]"]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert streamed == reference_answer(tiny_model_dir, server.store, doc, question, "lift", 8, adapter_scale=0.5)


def sse_events(response, limit: int = 500):
    """(id, event, data) for each server-sent event of a streaming response, at most ``limit``."""
    event_id, event, data = None, None, []
    for line in response.iter_lines():
        if line.startswith("id:"):
            event_id = int(line[3:].strip())
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            yield event_id, event, json.loads("\n".join(data))
            event_id, event, data = None, None, []
            limit -= 1
            if limit == 0:
                return


def test_openai_client_chat_and_stream(server, ready_docs, tiny_model_dir):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, timeout=60, max_retries=0)
    doc = ready_docs[0]
    listed = {m.id for m in client.models.list().data}
    assert {"base", *(d["id"] for d in ready_docs)} <= listed

    question = "How many vessels sought shelter?"
    for mode in ("lift+icl", "icl", "lift", "rag", "lift+rag"):
        reply = client.chat.completions.create(model=doc["id"], messages=[{"role": "user", "content": question}],
                                               max_tokens=8, extra_body={"mode": mode})
        want = reference_answer(tiny_model_dir, server.store, doc, question, mode, 8)
        assert reply.choices[0].message.content == want, mode
        assert reply.model == doc["id"] and reply.choices[0].message.role == "assistant"
        assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 8
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
        assert reply.choices[0].finish_reason in ("stop", "length")

    plain = client.chat.completions.create(model=doc["id"], messages=[{"role": "user", "content": question}],
                                           max_tokens=8)  # default mode: lift+icl
    stream = client.chat.completions.create(model=doc["id"], messages=[{"role": "user", "content": question}],
                                            max_tokens=8, stream=True, stream_options={"include_usage": True})
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert len([p for p in pieces if p]) >= 1
    assert "".join(pieces) == plain.choices[0].message.content
    assert finish == plain.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens

    # the base model, no document
    base = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "Hello?"}],
                                          max_tokens=4, extra_body={"mode": "icl"})
    assert base.usage.completion_tokens >= 1

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="0123456789abcdef0123", messages=[{"role": "user", "content": "x"}])
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", timeout=30, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_events_follow_training_to_ready_and_resume(server):
    doc_id = server.post(DOCS[0] + " It was the coldest winter on record.", settings={"epochs": 3})["id"]
    seen = []
    with httpx.stream("GET", f"{server.url}/v1/documents/{doc_id}/events", headers=server.headers,
                      timeout=httpx.Timeout(120, connect=10)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for event_id, _, data in sse_events(r):
            seen.append((event_id, data))
            if data["status"] in ("ready", "failed"):
                break
    statuses = [d["status"] for _, d in seen]
    assert statuses[-1] == "ready", seen[-1]
    ids = [i for i, _ in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    steps = [d["progress"] for _, d in seen if d["status"] == "training" and d["progress"].get("steps")]
    assert steps, statuses
    assert all(p["stage"] in ("training", "saving") and p["loss"] > 0 and 1 <= p["epoch"] <= 3 for p in steps)
    assert [p["step"] for p in steps] == sorted(p["step"] for p in steps)
    assert steps[-1]["step"] == steps[-1]["steps"]  # the last step is always reported
    final = seen[-1][1]
    assert final["progress"]["stage"] == "ready" and final["seconds"] > 0
    read_metadata(final["adapter"])  # a complete adapter

    # reconnecting with Last-Event-ID replays exactly the events after it
    middle = ids[len(ids) // 2]
    with httpx.stream("GET", f"{server.url}/v1/documents/{doc_id}/events",
                      headers={**server.headers, "Last-Event-ID": str(middle)}, timeout=60) as r:
        replay = [(i, d["status"]) for i, _, d in sse_events(r)]
    assert [i for i, _ in replay] == [i for i in ids if i > middle]
    assert replay[-1][1] == "ready"


def test_two_uploads_of_one_document_train_once(server):
    text = DOCS[1] + " The map shows the bay and the northern cape."
    with ThreadPoolExecutor(2) as pool:  # at the same moment, as JSON and as a file upload
        a, b = pool.map(lambda f: f(), [
            lambda: server.post(text, settings={"epochs": 2}),
            lambda: httpx.post(f"{server.url}/v1/documents", headers=server.headers, timeout=60,
                               files={"file": ("map.txt", text.encode())},
                               data={"settings": json.dumps({"epochs": 2})}).json()])
    assert a["id"] == b["id"]
    assert sorted([a["queued"], b["queued"]]) == [False, True]
    job = server.wait(a["id"])
    assert job["status"] == "ready" and job["attempts"] == 1
    again = server.post(text, settings={"epochs": 2})
    assert again == {**again, "id": a["id"], "status": "ready", "queued": False}
    assert server.document(a["id"])["attempts"] == 1
    assert len([d for d in server.store.iterdir() if d.name == a["id"]]) == 1
    assert server.post(text, settings={"epochs": 1})["id"] != a["id"]  # other settings: another adapter
    with server.client() as c:
        listed = [d for d in c.get("/v1/documents").json()["data"] if d["id"] == a["id"]]
    assert len(listed) == 1


def test_concurrent_questions_get_their_own_documents_answer(server, ready_docs, tiny_model_dir):
    questions = ["Who kept the ledger?", "Where was the telescope made?", "What did the daughter become?",
                 "How many legs does a spider have?"]
    cases = [(ready_docs[i % 3], questions[(i // 3) % 4], ("lift+icl", "lift")[i % 2]) for i in range(20)]
    want = {(d["id"], q, m): reference_answer(tiny_model_dir, server.store, d, q, m, 8) for d, q, m in cases}
    per_doc = {d["id"]: {want[(d["id"], q, "lift+icl")] for q in questions if (d["id"], q, "lift+icl") in want}
               for d in ready_docs}
    assert len({a for answers in per_doc.values() for a in answers}) > 1, "the documents' answers must differ"

    def ask(case):
        d, q, m = case
        r = server.ask(d["id"], q, mode=m, max_tokens=8)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    start = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(ask, cases))
    assert time.monotonic() - start < 120
    wrong = [(d["id"], q, m, g, want[(d["id"], q, m)]) for (d, q, m), g in zip(cases, got) if g != want[(d["id"], q, m)]]
    assert not wrong
    with server.client() as c:
        status = c.get("/v1/status").json()
    assert len(status["loaded_adapters"]) <= 2  # --max-loaded-adapters 2: the least recently used went out
    assert status["adapter_loads"] >= 3


def test_question_about_a_training_document_gets_409(server):
    doc_id = server.post(DOCS[2] + " The museum opens at nine.", settings={"epochs": 100_000})["id"]  # never ready: it is deleted
    r = server.ask(doc_id, "When does the museum open?")
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["type"] == "document_not_ready" and err["status"] in ("queued", "training")
    assert "ready" in err["message"]
    assert server.ask(doc_id, "When does the museum open?", mode="icl").status_code == 200  # no adapter needed
    with server.client() as c:
        assert c.delete(f"/v1/documents/{doc_id}").json()["deleted"] is True
        assert c.get(f"/v1/documents/{doc_id}").status_code == 404
        time.sleep(1.0)
        assert c.get("/v1/status").json()["worker"]["alive"]  # the worker left the deleted job and goes on
    assert not (server.store / doc_id).exists()


BAD = [
    # (method, path, request kwargs, status, error code)
    ("POST", "/v1/documents", {"json": {"text": ""}}, 400, "empty_document"),
    ("POST", "/v1/documents", {"json": {"text": " \n\t "}}, 400, "empty_document"),
    ("POST", "/v1/documents", {"json": {"text": "abc\u0000def"}}, 400, "binary_document"),
    ("POST", "/v1/documents", {"json": {"txt": "hello"}}, 400, "unknown_field"),
    ("POST", "/v1/documents", {"json": ["hello"]}, 400, "malformed_json"),
    ("POST", "/v1/documents", {"json": {"text": 42}}, 400, "no_document"),
    ("POST", "/v1/documents", {"content": b'{"text": "abc"', "headers": {"content-type": "application/json"}},
     400, "malformed_json"),
    ("POST", "/v1/documents", {"content": b"plain", "headers": {"content-type": "text/plain"}}, 415,
     "unsupported_media_type"),
    ("POST", "/v1/documents", {"files": {"file": ("a.bin", b"\x7fELF\x00\x01\x02")}}, 400, "binary_document"),
    ("POST", "/v1/documents", {"files": {"file": ("a.txt", b"caf\xe9 au lait")}}, 400, "not_utf8"),
    ("POST", "/v1/documents", {"files": {"other": ("a.txt", b"text")}}, 400, "no_document"),
    ("POST", "/v1/documents", {"json": {"text": "x" * 60_000}}, 413, "too_large"),
    ("POST", "/v1/documents", {"files": {"file": ("big.txt", b"word " * 12_000)}}, 413, "too_large"),
    ("POST", "/v1/documents", {"json": {"text": "hello there", "settings": {"epoch": 1}}}, 400, "invalid_input"),
    ("POST", "/v1/documents", {"json": {"text": "hello there", "settings": {"epochs": -1}}}, 400, "invalid_input"),
    ("POST", "/v1/documents", {"json": {"text": "hello there", "settings": {"window": 10**6}}}, 400, "invalid_input"),
    ("POST", "/v1/documents", {"json": {"text": "hello there", "settings": [1]}}, 400, "invalid_settings"),
    ("POST", "/v1/documents", {"json": {"text": "hello there", "settings": {"qa_model": "/etc"}}}, 400,
     "invalid_settings"),
    ("POST", "/v1/documents", {"json": {"text": "hello there", "settings": {"finetune": "full"}}}, 400,
     "invalid_settings"),
    ("POST", "/v1/documents", {"json": {"text": "hello there", "settings": {"adapter_scale": 0.5}}}, 400,
     "invalid_settings"),
    ("POST", "/v1/documents", {"json": {"text": "hello there"}, "headers": {"Authorization": "Bearer nope"}},
     401, "invalid_api_key"),
    ("POST", "/v1/documents", {"json": {"text": "hello there"}, "headers": {"Authorization": ""}}, 401,
     "invalid_api_key"),
    ("GET", "/v1/documents/0123456789abcdef0123", {}, 404, "unknown_document"),
    ("GET", "/v1/documents/..%2F..%2Fetc%2Fpasswd", {}, 404, None),
    ("GET", "/v1/documents/ABCDEF0123456789ABCD", {}, 404, "unknown_document"),
    ("DELETE", "/v1/documents/0123456789abcdef0123", {}, 404, "unknown_document"),
    ("DELETE", "/v1/documents/..", {}, 404, None),
    ("GET", "/v1/documents/0123456789abcdef0123/events", {}, 404, "unknown_document"),
    ("POST", "/v1/chat/completions", {"json": {"model": "0123456789abcdef0123",
                                               "messages": [{"role": "user", "content": "hi"}]}}, 404,
     "model_not_found"),
    ("POST", "/v1/chat/completions", {"json": {"model": "../../adapters", "messages": [{"role": "user",
                                                                                       "content": "hi"}]}}, 404,
     "model_not_found"),
    ("POST", "/v1/chat/completions", {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400,
     "invalid_request"),
    ("POST", "/v1/chat/completions", {"json": {"model": "base"}}, 400, "invalid_request"),
    ("POST", "/v1/chat/completions", {"json": {"model": "base", "messages": [{"role": "system", "content": "x"}]}},
     400, "no_question"),
    ("POST", "/v1/chat/completions", {"json": {"model": "base", "messages": [{"role": "user", "content": "  "}]}},
     400, "no_question"),
    ("POST", "/v1/chat/completions", {"json": {"model": "base", "mode": "magic",
                                               "messages": [{"role": "user", "content": "hi"}]}}, 400, "invalid_mode"),
    ("POST", "/v1/chat/completions", {"json": {"model": "base", "adapter_scale": -1,
                                               "messages": [{"role": "user", "content": "hi"}]}}, 400,
     "invalid_adapter_scale"),
    ("POST", "/v1/chat/completions", {"json": {"model": "base", "max_tokens": 0,
                                               "messages": [{"role": "user", "content": "hi"}]}}, 400,
     "invalid_max_tokens"),
    ("POST", "/v1/chat/completions", {"json": {"model": "base", "max_tokens": 10**6,
                                               "messages": [{"role": "user", "content": "hi"}]}}, 400,
     "invalid_max_tokens"),
    ("GET", "/v1/models", {"headers": {"Authorization": "Basic dXNlcjpwdw=="}}, 401, "invalid_api_key"),
]


def _snapshot(server) -> tuple:
    with server.client() as c:
        docs = c.get("/v1/documents").json()["data"]
    store = sorted(p.name for p in server.store.iterdir()) if server.store.exists() else []
    return [(d["id"], d["status"], d["attempts"]) for d in docs], store


@pytest.mark.parametrize("method,path,kwargs,status,code", BAD,
                         ids=[f"{m} {p[:30]} {s} {c}" for m, p, _, s, c in BAD])
def test_bad_input_is_one_json_error_and_changes_nothing(server, method, path, kwargs, status, code):
    # let earlier tests' trainings finish, so the snapshot cannot change under this request
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with server.client() as c:
            counts = c.get("/v1/status").json()["jobs"]
        if counts["queued"] == counts["training"] == 0:
            break
        time.sleep(0.3)
    before = _snapshot(server)
    kwargs = dict(kwargs)
    headers = {**server.headers, **kwargs.pop("headers", {})} if "headers" in kwargs else server.headers
    headers = {k: v for k, v in headers.items() if v}
    r = httpx.request(method, f"{server.url}{path}", headers=headers, timeout=60, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    assert _snapshot(server) == before


def test_a_question_too_long_for_the_window_is_400(server, ready_docs):
    r = server.ask(ready_docs[0]["id"], "why " * 400, mode="lift+icl")
    assert r.status_code == 400 and "window" in r.json()["error"]["message"]
