"""``/v1/chat/completions``: OpenAI's chat completions (whole, or streamed as server-sent events) about a
document (``model`` is its id) or the base model (``model`` "base"), in any LIFT mode."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from ..infer import MODES, uses_adapter
from .deps import ID_PATTERN, EngineDep, SettingsDep, TableDep
from .engine import BASE_MODEL, AdapterBroken, Engine
from .errors import ApiError
from .jobs import JobTable

router = APIRouter()


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list | None = None


class ChatRequest(BaseModel):
    """OpenAI's chat-completions request; unknown fields (temperature, ...) are accepted and ignored (decoding is
    greedy). ``mode`` is liftlm's own (the openai client sends it with ``extra_body``)."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message]
    stream: bool = False
    stream_options: dict | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    mode: str = "lift+icl"
    adapter_scale: float | None = None  # liftlm's own: the LoRA update's scale (default: the server's)


@router.post("/v1/chat/completions")
async def chat(req: ChatRequest, settings: SettingsDep, table: TableDep, engine: EngineDep):
    if req.mode not in MODES:
        raise ApiError(400, f"mode must be one of {', '.join(MODES)} (got {req.mode!r})", code="invalid_mode")
    question = question_of(req.messages)
    max_new = next((n for n in (req.max_completion_tokens, req.max_tokens) if n is not None), 64)
    if not 1 <= max_new <= settings.max_new_tokens_limit:
        raise ApiError(400, f"max_tokens must be in 1..{settings.max_new_tokens_limit} (got {max_new})",
                       code="invalid_max_tokens")
    scale = settings.defaults.adapter_scale if req.adapter_scale is None else req.adapter_scale
    if not 0 <= scale <= 4:
        raise ApiError(400, f"adapter_scale must be between 0 and 4 (got {scale})", code="invalid_adapter_scale")
    job = None if req.model == BASE_MODEL else document_for(table, req.model, req.mode)
    try:
        prompt = await engine.run(engine.prepare, job, question, req.mode, max_new)
    except AdapterBroken as e:
        table.fail(job["id"], f"its stored adapter is broken: {e}; post the document again to retrain")
        raise ApiError(409, f"document {job['id']}: its stored adapter is broken ({e}); post the document "
                            "again to retrain it", "document_not_ready", "failed") from None
    completion = Completion(req, job)
    if req.stream:
        return StreamingResponse(stream_chat(engine, job, prompt, max_new, completion, scale),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    start = time.perf_counter()
    out = await engine.run(engine.generate, job, prompt, req.mode, max_new, scale=scale)
    return completion.whole(out, time.perf_counter() - start)


def question_of(messages: list[Message]) -> str:
    """The question: the last user message (text, or the text parts of a list of parts)."""
    users = [m for m in messages if m.role == "user"]
    if not users:
        raise ApiError(400, "messages holds no user message; put the question in one", code="no_question")
    content = users[-1].content
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not content or not content.strip():
        raise ApiError(400, "the last user message is empty; ask something", code="no_question")
    return content.strip()


def document_for(table: JobTable, model: str, mode: str) -> dict:
    """The document that ``model`` names (with its text); refused: an unknown one, and one whose adapter is not
    ready in a mode that needs it."""
    job = table.get(model, with_text=True) if ID_PATTERN.match(model) else None
    if job is None:
        raise ApiError(404, f"no such model: {model[:64]!r}; use a document id from GET /v1/models or "
                            f"{BASE_MODEL!r}", code="model_not_found")
    if uses_adapter(mode) and job["status"] != "ready":
        p = job["progress"]
        where = f" (step {p.get('step')}/{p.get('steps')})" if job["status"] == "training" and p.get("steps") else ""
        raise ApiError(409, f"document {job['id']} is {job['status']}{where}: mode {mode} needs its adapter; ask "
                            "again when it is ready, or use mode icl or rag"
                            + (f" (error: {job['error']})" if job["error"] else ""),
                       "document_not_ready", job["status"], {"status": job["status"], "progress": job["progress"]})
    return job


class Completion:
    """One answer's response bodies in OpenAI's format: whole (``chat.completion``) or in chunks."""

    def __init__(self, req: ChatRequest, job: dict | None):
        self.req = req
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.meta = {"mode": req.mode, "document": job["id"] if job else None}

    def whole(self, out, seconds: float) -> dict:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.req.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text},
                             "finish_reason": out.finish_reason, "logprobs": None}],
                "usage": usage_of(out), "liftlm": {**self.meta, "seconds": round(seconds, 3)}}

    def chunk(self, delta: dict | None, finish: str | None = None, usage: dict | None = None) -> str:
        """A ``data:`` line of a ``chat.completion.chunk`` (``delta`` None: no choices, the usage chunk)."""
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.req.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
                if delta is not None else [], "liftlm": self.meta}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"


def usage_of(out) -> dict:
    return {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
            "total_tokens": out.prompt_tokens + out.completion_tokens}


async def stream_chat(engine: Engine, job: dict | None, prompt: list[int], max_new: int, completion: Completion,
                      scale: float = 1.0):
    """OpenAI's streaming format: ``data: {chunk}`` lines, the text as it is decoded, then ``data: [DONE]``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def push(piece):
        loop.call_soon_threadsafe(queue.put_nowait, piece)

    req = completion.req
    future = asyncio.ensure_future(engine.run(engine.generate, job, prompt, req.mode, max_new, push, stop,
                                              scale=scale))
    try:
        yield completion.chunk({"role": "assistant", "content": ""})
        started, held = False, ""  # the answer is stripped, as without streaming: no leading or trailing spaces
        while True:
            piece = await queue.get()
            if piece is None:
                break
            piece = held + piece
            if not started:
                piece = piece.lstrip()
            body = piece.rstrip()
            held = piece[len(body):]
            if body:
                started = True
                yield completion.chunk({"content": body})
        out = await future
        yield completion.chunk({}, out.finish_reason)
        if (req.stream_options or {}).get("include_usage"):
            yield completion.chunk(None, usage=usage_of(out))
        yield "data: [DONE]\n\n"
    except Exception as e:  # the generation failed after the stream began: say so in the stream
        yield f"data: {json.dumps({'error': {'message': f'{type(e).__name__}: {e}', 'type': 'server_error'}})}\n\n"
    finally:
        stop.set()  # a client that went away ends its generation at the next token
