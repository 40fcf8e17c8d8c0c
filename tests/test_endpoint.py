"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1: replies, retries on 5xx and 429, no
retry on other 4xx, one clear error for a broken endpoint."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import liftlm.endpoint as endpoint_module
from liftlm.endpoint import ChatEndpoint, is_endpoint
from liftlm.errors import LiftError


class _Server:
    """Answers each POST with the next (status, body) of ``script``; records the requests."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, self.headers.get("Authorization"), json.loads(body)))
                status, reply = outer.script.pop(0)
                data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(text):
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


@pytest.fixture
def no_sleep(monkeypatch):
    slept = []
    monkeypatch.setattr(endpoint_module.time, "sleep", slept.append)
    return slept


def test_reply_model_and_key(monkeypatch, no_sleep):
    monkeypatch.setenv("LIFTLM_QA_API_KEY", "sekrit")
    server = _Server([(200, _reply("Paris"))])
    try:
        client = ChatEndpoint(server.url + "#small", "--qa-model", ("LIFTLM_QA_API_KEY",))
        assert client.chat([{"role": "user", "content": "Capital of France?"}], max_tokens=8) == "Paris"
    finally:
        server.close()
    ((path, auth, body),) = server.requests
    assert path == "/v1/chat/completions" and auth == "Bearer sekrit"
    assert body["model"] == "small" and body["max_tokens"] == 8 and body["temperature"] == 0


def test_retries_server_errors_then_succeeds(no_sleep):
    server = _Server([(500, "oops"), (429, "slow down"), (200, _reply("ok"))])
    try:
        assert ChatEndpoint(server.url + "#m", "--judge", retries=3).chat([]) == "ok"
    finally:
        server.close()
    assert len(server.requests) == 3 and no_sleep == [1, 2]


def test_client_errors_are_not_retried(no_sleep):
    server = _Server([(401, "bad key"), (200, _reply("never"))])
    try:
        with pytest.raises(LiftError, match="--judge: the endpoint .* failed .*401"):
            ChatEndpoint(server.url + "#m", "--judge", retries=3).chat([])
    finally:
        server.close()
    assert len(server.requests) == 1


def test_gives_up_after_the_retries(no_sleep):
    server = _Server([(503, "down")] * 2)
    try:
        with pytest.raises(LiftError, match="503"):
            ChatEndpoint(server.url + "#m", "--qa-model", retries=2).chat([])
    finally:
        server.close()
    assert len(server.requests) == 2 and no_sleep == [1]


def test_a_reply_that_is_not_a_chat_completion(no_sleep):
    server = _Server([(200, {"unexpected": True})])
    try:
        with pytest.raises(LiftError, match="did not answer like an OpenAI chat endpoint"):
            ChatEndpoint(server.url + "#m", "--judge").chat([])
    finally:
        server.close()


def test_spec_needs_a_model_name_unless_defaulted():
    with pytest.raises(LiftError, match="name the endpoint's model after '#'"):
        ChatEndpoint("http://127.0.0.1:9/v1", "--judge")
    assert ChatEndpoint("http://127.0.0.1:9/v1", "--qa-model", default_model="default").model == "default"
    assert is_endpoint("https://x/v1#m") and not is_endpoint("Qwen/Qwen2.5-1.5B") and not is_endpoint(None)
