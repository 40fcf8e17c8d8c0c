"""``/v1/documents``: post a document (queued for the training worker, or ready at once when its adapter is
stored), list, read and delete documents, and follow one's training as server-sent events."""
from __future__ import annotations

import asyncio
import json
import shutil

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..config import ANSWER_FIELDS, LiftConfig
from .deps import EngineDep, SettingsDep, TableDep, job_or_404
from .errors import ApiError, BodyTooLarge
from .jobs import DONE, JobTable
from .settings import log

SERVER_ONLY = ("qa_model",)  # settings a request may not choose (a generator model path or URL is the server's)

router = APIRouter(prefix="/v1/documents")


@router.post("", status_code=202)
async def add_document(request: Request, settings: SettingsDep, table: TableDep, engine: EngineDep):
    text, title, settings_in = await read_submission(request)
    if not text.strip():
        raise ApiError(400, "the document is empty (or only whitespace); send a text document",
                       code="empty_document")
    config = lift_config(settings.defaults, settings_in)
    title = (title or text.strip().splitlines()[0])[:200]
    key, window, tokens = await engine.run(engine.document_key, text, config)
    stored = engine.stored(key)
    job, queued = table.submit(key, title, {**config.to_dict(), "window": window}, text, tokens, stored)
    if queued:
        log(f"queued {key} ({tokens} tokens, {title[:40]!r})")
    return JSONResponse({"id": key, "status": job["status"], "queued": queued, "document": job}, status_code=202)


@router.get("")
async def list_documents(table: TableDep):
    return {"object": "list", "data": table.list()}


@router.get("/{doc_id}")
async def get_document(doc_id: str, table: TableDep):
    return job_or_404(table, doc_id)


@router.delete("/{doc_id}")
async def delete_document(doc_id: str, table: TableDep, engine: EngineDep):
    job_or_404(table, doc_id)
    table.delete(doc_id)
    await engine.run(engine.forget, doc_id)
    path = engine.store.path(doc_id)  # doc_id is 20 hex digits (check_id): a direct child of the store
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    log(f"deleted {doc_id}")
    return {"id": doc_id, "object": "document", "deleted": True}


@router.get("/{doc_id}/events")
async def document_events(doc_id: str, request: Request, table: TableDep):
    job = job_or_404(table, doc_id)
    header = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or ""
    if header and not header.isdigit():
        raise ApiError(400, "Last-Event-ID must be a number (the id of the last event received)",
                       code="invalid_event_id")
    return StreamingResponse(events(request, table, job, int(header or 0)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def events(request: Request, table: JobTable, job: dict, last: int):
    """A document's progress events after event ``last`` (0: the current state first), until it is ready or
    failed, deleted, or the client goes away; a keep-alive comment every 15 quiet seconds."""
    doc_id = job["id"]
    if last == 0:  # a fresh subscriber gets the current state first
        last = table.last_event(doc_id)
        yield f"id: {last}\ndata: {json.dumps(job)}\n\n"
        if job["status"] in DONE:
            return
    quiet = 0.0
    while True:
        if await request.is_disconnected():
            return
        news = table.events_after(doc_id, last)
        for seq, data in news:
            last = seq
            yield f"id: {seq}\ndata: {json.dumps(data)}\n\n"
            if data["status"] in DONE:
                return
        if not news:
            if table.get(doc_id) is None:
                yield f"event: deleted\ndata: {json.dumps({'id': doc_id, 'deleted': True})}\n\n"
                return
            quiet += 0.25
            if quiet >= 15:
                quiet = 0.0
                yield ": keep-alive\n\n"
        else:
            quiet = 0.0
        await asyncio.sleep(0.25)


def lift_config(defaults: LiftConfig, settings_in) -> LiftConfig:
    """The server's LIFT settings with a request's ``settings`` over them; refused: a server-only setting, a full
    fine-tune (the service serves LoRA adapters), an unknown or invalid setting."""
    if not isinstance(settings_in, dict):
        raise ApiError(400, "'settings' must be an object of LIFT settings, e.g. {\"epochs\": 1}",
                       code="invalid_settings")
    refused = sorted(set(settings_in) & set(SERVER_ONLY))
    if refused:
        raise ApiError(400, f"{', '.join(refused)} can only be set when the server starts", code="invalid_settings")
    answer_time = sorted(set(settings_in) & set(ANSWER_FIELDS))
    if answer_time:
        raise ApiError(400, f"{', '.join(answer_time)}: an answer-time setting; send it with each chat completion "
                            "request", code="invalid_settings")
    if settings_in.get("finetune", "lora") != "lora":
        raise ApiError(400, "the service serves LoRA adapters; finetune must be 'lora'", code="invalid_settings")
    try:
        return LiftConfig.from_dict({**defaults.to_dict(), **settings_in}, strict=True)
    except TypeError as e:
        raise ApiError(400, f"invalid settings ({e})", code="invalid_settings") from None


async def read_submission(request: Request) -> tuple[str, str | None, dict]:
    """(text, title, settings) of a posted document: a multipart upload (``file``, ``title``, ``settings`` as
    JSON) or a JSON body ``{"text", "title"?, "settings"?}``."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await read_upload(request)
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


async def read_upload(request: Request) -> tuple[str, str | None, dict]:
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
    try:
        settings_in = json.loads(form.get("settings") or "{}")
    except json.JSONDecodeError as e:
        raise ApiError(400, f"the settings field is not JSON ({e})", code="malformed_json") from None
    return text, title if isinstance(title, str) else None, settings_in


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
