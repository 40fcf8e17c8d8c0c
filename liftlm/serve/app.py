"""The FastAPI app of ``liftlm serve``: documents in (trained in the background by a worker process), answers out
in the OpenAI chat-completions format, progress as server-sent events, and a web page at ``/``.

Errors are JSON in OpenAI's shape, ``{"error": {"message", "type", "code"}}``, with a 4xx status; a request that
fails changes nothing.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import LiftConfig
from ..errors import LiftError
from ..infer import MODES, uses_adapter
from .engine import BASE_MODEL, AdapterBroken, Engine
from .jobs import DONE, JobTable
from .worker import terminate

ID_PATTERN = re.compile(r"^[0-9a-f]{20}$")  # the store key: 20 lowercase hex digits
SERVER_ONLY = ("qa_model",)  # settings a request may not choose (a generator model path or URL is the server's)
STATIC = Path(__file__).parent / "static"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeSettings:
    model: str | None = None
    device: str | None = None
    store: str | None = None
    state: str | Path = "serve-state"  # the job table lives here
    defaults: LiftConfig = field(default_factory=LiftConfig)
    token: str | None = None  # bearer token for /v1 (required when binding beyond the loopback)
    max_upload_bytes: int = 20 * 1024 * 1024
    max_loaded_adapters: int = 8
    max_attempts: int = 3  # a job whose worker dies this many times fails
    max_new_tokens_limit: int = 1024
    worker: bool = True  # start the training worker (off only for tests of the web process alone)
    ray: str | None = None  # train on Ray: None off, "" a new local instance, else the cluster's address
    ray_cpus: float = 1
    ray_gpus: float = 0
    ray_retries: int = 3
    ray_jobs: int = 0  # jobs training at once on Ray (0: as many as the cluster's resources fit)


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.extra = status, message, type_, code, extra or {}


def error_response(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                   extra: dict | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "code": code, **(extra or {})}},
                        status_code=status, headers=headers)


class BodyTooLarge(Exception):
    pass


class LimitBody:
    """ASGI middleware: refuse a request body over ``limit`` bytes (by its Content-Length at once, or while it
    is read when it comes chunked)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            response = error_response(413, f"the request body is over the limit of {self.limit} bytes "
                                           "(--max-upload-mb)", code="too_large")
            return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited, send)


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


def check_id(doc_id: str) -> str:
    """A document id is a store key (20 hex digits); anything else is refused before it reaches a path."""
    if not ID_PATTERN.match(doc_id):
        raise ApiError(404, f"no such document: {doc_id[:64]!r} (ids are 20 hex digits)", code="unknown_document")
    return doc_id


def decode_document(raw: bytes, source: str) -> str:
    if b"\x00" in raw:
        raise ApiError(400, f"{source} is binary (it contains NUL bytes); send a UTF-8 text document",
                       code="binary_document")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, f"{source} is not UTF-8 text (byte {e.start}); convert it to UTF-8",
                       code="not_utf8") from None
    return text.removeprefix("\ufeff")


class Supervisor:
    """Starts the training worker process, restarts it when it dies, and puts the job it held back in the queue
    (or fails it after ``max_attempts``)."""

    def __init__(self, settings: ServeSettings, jobs_path: Path, table: JobTable):
        self.settings, self.jobs_path, self.table = settings, jobs_path, table
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = False

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "liftlm.serve.worker", "--jobs", str(self.jobs_path), "--parent", str(os.getpid())]
        for flag, value in (("--model", self.settings.model), ("--store", self.settings.store),
                            ("--device", self.settings.device)):
            if value is not None:
                cmd += [flag, str(value)]
        if self.settings.ray is not None:
            s = self.settings
            cmd += ["--ray", s.ray, "--ray-cpus", str(s.ray_cpus), "--ray-gpus", str(s.ray_gpus),
                    "--ray-retries", str(s.ray_retries), "--ray-jobs", str(s.ray_jobs)]
        return cmd

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command())
        log(f"training worker started (pid {self.proc.pid})")

    async def watch(self) -> None:
        backoff = 0.5
        while not self._stopping:
            await asyncio.sleep(0.3)
            if self._stopping or self.proc is None:
                continue
            rc = self.proc.poll()
            if rc is None:
                backoff = 0.5
                continue
            reason = f"the training worker (pid {self.proc.pid}) exited with status {rc}"
            ids = self.table.requeue_orphans(None, self.settings.max_attempts, reason)
            log(reason + (f"; its job {', '.join(ids)} is queued again (or failed after "
                          f"{self.settings.max_attempts} attempts)" if ids else ""))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            if not self._stopping:
                self.restarts += 1
                self.start()

    def stop(self) -> None:
        self._stopping = True
        terminate(self.proc, 15)
        self.table.requeue_orphans(None, self.settings.max_attempts, "the server stopped", refund=True)

    def info(self) -> dict:
        alive = self.proc is not None and self.proc.poll() is None
        ray = None if self.settings.ray is None else (self.settings.ray or "local")
        return {"pid": self.proc.pid if self.proc else None, "alive": alive, "restarts": self.restarts, "ray": ray}


def log(message: str) -> None:
    print(f"liftlm serve: {message}", file=sys.stderr, flush=True)


def create_app(settings: ServeSettings) -> FastAPI:
    state_dir = Path(settings.state).expanduser()
    jobs_path = state_dir / "jobs.sqlite"
    ctx: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        table = JobTable(jobs_path)
        orphans = table.requeue_orphans(None, settings.max_attempts, "the server restarted while it trained")
        if orphans:
            log(f"picked up {len(orphans)} job(s) left training by a previous run: {', '.join(orphans)}")
        queued = table.counts()["queued"]
        if queued:
            log(f"{queued} queued job(s) waiting for the worker")
        ctx.update(table=table, supervisor=None)
        if settings.worker:  # first, so that the worker loads its copy of the model while this process loads its own
            supervisor = Supervisor(settings, jobs_path, table)
            supervisor.start()
            ctx["supervisor"] = supervisor
        engine = None
        watcher = None
        try:
            engine = await asyncio.to_thread(Engine, settings.model, settings.device, settings.store,
                                             settings.max_loaded_adapters)
            ctx["engine"] = engine
            if ctx["supervisor"] is not None:
                watcher = asyncio.create_task(ctx["supervisor"].watch())
            yield
        finally:
            if ctx["supervisor"] is not None:
                ctx["supervisor"]._stopping = True
                if watcher is not None:
                    watcher.cancel()
                await asyncio.to_thread(ctx["supervisor"].stop)
            if engine is not None:
                engine.close()
            table.close()

    app = FastAPI(title="liftlm serve", version="1", lifespan=lifespan, docs_url="/docs", redoc_url=None)

    # --- errors: one JSON shape ---
    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.type, exc.code, exc.extra)

    @app.exception_handler(LiftError)
    async def _lift_error(request, exc: LiftError):
        return error_response(400, str(exc), code="invalid_input")

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request, exc):
        return error_response(413, f"the request body is over the limit of {settings.max_upload_bytes} bytes "
                                   "(--max-upload-mb)", code="too_large")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        problems = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            problems.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return error_response(400, "invalid request: " + "; ".join(problems), code="invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, f"{exc.detail}: {request.method} {request.url.path[:100]}", code=code)

    # --- authentication ---
    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if settings.token and request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.token.encode()):
                return error_response(401, "missing or wrong bearer token (Authorization: Bearer $LIFTLM_API_TOKEN)",
                                      "authentication_error", "invalid_api_key",
                                      headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    app.add_middleware(LimitBody, limit=settings.max_upload_bytes)

    def table() -> JobTable:
        return ctx["table"]

    def engine() -> Engine:
        return ctx["engine"]

    # --- the page ---
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        if name not in files:
            raise ApiError(404, f"no such file: {name[:64]!r}", code="not_found")
        return FileResponse(files[name])

    # --- documents ---
    async def read_submission(request: Request) -> tuple[str, str | None, dict]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=4)
            except BodyTooLarge:
                raise
            except Exception as e:
                raise ApiError(400, f"malformed multipart body ({e})", code="malformed_body") from None
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "the multipart form needs a file field named 'file'", code="no_document")
            text = decode_document(await upload.read(), f"the uploaded file {upload.filename!r}")
            title = form.get("title") or upload.filename
            raw_settings = form.get("settings") or "{}"
            try:
                settings_in = json.loads(raw_settings)
            except json.JSONDecodeError as e:
                raise ApiError(400, f"the settings field is not JSON ({e})", code="malformed_json") from None
            return text, title if isinstance(title, str) else None, settings_in
        if ctype not in ("application/json", ""):
            raise ApiError(415, f"send JSON ({{\"text\": ...}}) or a multipart file upload, not {ctype}",
                           code="unsupported_media_type")
        body = await request.body()
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON ({e})", code="malformed_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object {\"text\", \"title\"?, \"settings\"?}",
                           code="malformed_json")
        unknown = sorted(set(data) - {"text", "title", "settings"})
        if unknown:
            raise ApiError(400, f"unknown fields: {', '.join(unknown)} (expected text, title, settings)",
                           code="unknown_field")
        text = data.get("text")
        if not isinstance(text, str):
            raise ApiError(400, "'text' must be the document as a string", code="no_document")
        if "\x00" in text:
            raise ApiError(400, "the document is binary (it contains NUL characters); send UTF-8 text",
                           code="binary_document")
        title = data.get("title")
        if title is not None and not isinstance(title, str):
            raise ApiError(400, "'title' must be a string", code="invalid_title")
        return text, title, data.get("settings") or {}

    @app.post("/v1/documents", status_code=202)
    async def add_document(request: Request):
        text, title, settings_in = await read_submission(request)
        if not text.strip():
            raise ApiError(400, "the document is empty (or only whitespace); send a text document",
                           code="empty_document")
        if not isinstance(settings_in, dict):
            raise ApiError(400, "'settings' must be an object of LIFT settings, e.g. {\"epochs\": 1}",
                           code="invalid_settings")
        refused = sorted(set(settings_in) & set(SERVER_ONLY))
        if refused:
            raise ApiError(400, f"{', '.join(refused)} can only be set when the server starts", code="invalid_settings")
        if settings_in.get("finetune", "lora") != "lora":
            raise ApiError(400, "the service serves LoRA adapters; finetune must be 'lora'", code="invalid_settings")
        try:
            config = LiftConfig.from_dict({**settings.defaults.to_dict(), **settings_in}, strict=True)
        except TypeError as e:
            raise ApiError(400, f"invalid settings ({e})", code="invalid_settings") from None
        title = (title or text.strip().splitlines()[0])[:200]
        key, window, tokens = await engine().run(engine().document_key, text, config)
        stored = engine().stored(key)
        job, queued = table().submit(key, title, {**config.to_dict(), "window": window}, text, tokens, stored)
        if queued:
            log(f"queued {key} ({tokens} tokens, {title[:40]!r})")
        return JSONResponse({"id": key, "status": job["status"], "queued": queued, "document": job},
                            status_code=202)

    @app.get("/v1/documents")
    async def list_documents():
        return {"object": "list", "data": table().list()}

    def job_or_404(doc_id: str, with_text: bool = False) -> dict:
        job = table().get(check_id(doc_id), with_text=with_text)
        if job is None:
            raise ApiError(404, f"no such document: {doc_id}", code="unknown_document")
        return job

    @app.get("/v1/documents/{doc_id}")
    async def get_document(doc_id: str):
        return job_or_404(doc_id)

    @app.delete("/v1/documents/{doc_id}")
    async def delete_document(doc_id: str):
        job_or_404(doc_id)
        table().delete(doc_id)
        await engine().run(engine().forget, doc_id)
        path = engine().store.path(doc_id)  # doc_id is 20 hex digits (check_id): a direct child of the store
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        log(f"deleted {doc_id}")
        return {"id": doc_id, "object": "document", "deleted": True}

    @app.get("/v1/documents/{doc_id}/events")
    async def document_events(doc_id: str, request: Request):
        job = job_or_404(doc_id)
        header = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or ""
        if header and not header.isdigit():
            raise ApiError(400, "Last-Event-ID must be a number (the id of the last event received)",
                           code="invalid_event_id")
        last = int(header or 0)

        async def stream():
            nonlocal last
            if last == 0:  # a fresh subscriber gets the current state first
                last = table().last_event(doc_id)
                yield f"id: {last}\ndata: {json.dumps(job)}\n\n"
                if job["status"] in DONE:
                    return
            quiet = 0.0
            while True:
                if await request.is_disconnected():
                    return
                events = table().events_after(doc_id, last)
                for seq, data in events:
                    last = seq
                    yield f"id: {seq}\ndata: {json.dumps(data)}\n\n"
                    if data["status"] in DONE:
                        return
                if not events:
                    if table().get(doc_id) is None:
                        yield f"event: deleted\ndata: {json.dumps({'id': doc_id, 'deleted': True})}\n\n"
                        return
                    quiet += 0.25
                    if quiet >= 15:
                        quiet = 0.0
                        yield ": keep-alive\n\n"
                else:
                    quiet = 0.0
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # --- models and answers ---
    @app.get("/v1/models")
    async def models():
        base = {"id": BASE_MODEL, "object": "model", "created": 0, "owned_by": "liftlm",
                "liftlm": {"model_id": engine().model_id, "kind": "base"}}
        docs = [{"id": j["id"], "object": "model", "created": int(j["created"]), "owned_by": "liftlm",
                 "liftlm": {"kind": "document", "title": j["title"], "tokens": j["tokens"]}}
                for j in table().list() if j["status"] == "ready"]
        return {"object": "list", "data": [base, *docs]}

    @app.get("/v1/status")
    async def status():
        sup = ctx.get("supervisor")
        return {"model": engine().model_id, "worker": sup.info() if sup else None, "jobs": table().counts(),
                "loaded_adapters": engine().loaded_adapters(), "max_loaded_adapters": engine().max_loaded,
                "adapter_loads": engine().loads}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        if req.mode not in MODES:
            raise ApiError(400, f"mode must be one of {', '.join(MODES)} (got {req.mode!r})", code="invalid_mode")
        question = question_of(req.messages)
        max_new = next((n for n in (req.max_completion_tokens, req.max_tokens) if n is not None), 64)
        if not 1 <= max_new <= settings.max_new_tokens_limit:
            raise ApiError(400, f"max_tokens must be in 1..{settings.max_new_tokens_limit} (got {max_new})",
                           code="invalid_max_tokens")
        if req.model == BASE_MODEL:
            job = None
        else:
            job = table().get(req.model, with_text=True) if ID_PATTERN.match(req.model) else None
            if job is None:
                _unknown_model(req.model)
            if uses_adapter(req.mode) and job["status"] != "ready":
                p = job["progress"]
                where = f" (step {p.get('step')}/{p.get('steps')})" if job["status"] == "training" and p.get("steps") \
                    else ""
                raise ApiError(409, f"document {job['id']} is {job['status']}{where}: mode {req.mode} needs its "
                                    f"adapter; ask again when it is ready, or use mode icl or rag"
                                    + (f" (error: {job['error']})" if job["error"] else ""),
                               "document_not_ready", job["status"],
                               {"status": job["status"], "progress": job["progress"]})
        try:
            prompt = await engine().run(engine().prepare, job, question, req.mode, max_new)
        except AdapterBroken as e:
            table().fail(job["id"], f"its stored adapter is broken: {e}; post the document again to retrain")
            raise ApiError(409, f"document {job['id']}: its stored adapter is broken ({e}); post the document "
                                "again to retrain it", "document_not_ready", "failed") from None
        created = int(time.time())
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        meta = {"mode": req.mode, "document": job["id"] if job else None}
        if not req.stream:
            start = time.perf_counter()
            out = await engine().run(engine().generate, job, prompt, req.mode, max_new)
            return {"id": completion_id, "object": "chat.completion", "created": created, "model": req.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text},
                                 "finish_reason": out.finish_reason, "logprobs": None}],
                    "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                              "total_tokens": out.prompt_tokens + out.completion_tokens},
                    "liftlm": {**meta, "seconds": round(time.perf_counter() - start, 3)}}
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return StreamingResponse(stream_chat(engine(), job, prompt, req, max_new, completion_id, created, meta,
                                             include_usage),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def _unknown_model(model: str):
    raise ApiError(404, f"no such model: {model[:64]!r}; use a document id from GET /v1/models or {BASE_MODEL!r}",
                   code="model_not_found")


async def stream_chat(engine: Engine, job, prompt, req: ChatRequest, max_new: int, completion_id: str, created: int,
                      meta: dict, include_usage: bool):
    """OpenAI's streaming format: ``data: {chunk}`` lines, the text as it is decoded, then ``data: [DONE]``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def push(piece):
        loop.call_soon_threadsafe(queue.put_nowait, piece)

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": req.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}] if delta is not None
                else [], "liftlm": meta}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    future = asyncio.ensure_future(engine.run(engine.generate, job, prompt, req.mode, max_new, push, stop))
    try:
        yield chunk({"role": "assistant", "content": ""})
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
                yield chunk({"content": body})
        out = await future
        yield chunk({}, out.finish_reason)
        if include_usage:
            yield chunk(None, usage={"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                                     "total_tokens": out.prompt_tokens + out.completion_tokens})
        yield "data: [DONE]\n\n"
    except Exception as e:  # the generation failed after the stream began: say so in the stream
        yield f"data: {json.dumps({'error': {'message': f'{type(e).__name__}: {e}', 'type': 'server_error'}})}\n\n"
    finally:
        stop.set()  # a client that went away ends its generation at the next token
