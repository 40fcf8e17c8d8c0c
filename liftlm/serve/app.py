"""The FastAPI app of ``liftlm serve``: documents in (trained in the background by a worker process), answers out
in the OpenAI chat-completions format, progress as server-sent events, and a web page at ``/``.

``create_app`` wires the pieces: the settings and the lifespan (the job table, the worker's supervisor and the
engine, on ``app.state``), the bearer token and the body limit, the error handlers (``errors``) and the routers
(``documents``, ``chat``, ``models``, ``page``).

Errors are JSON in OpenAI's shape, ``{"error": {"message", "type", "code"}}``, with a 4xx status; a request that
fails changes nothing.
"""
from __future__ import annotations

import asyncio
import hmac
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from . import chat, documents, models, page
from .engine import Engine
from .errors import HANDLERS, LimitBody, error_response
from .jobs import JobTable
from .settings import ServeSettings, log
from .supervisor import Supervisor

__all__ = ["ServeSettings", "create_app"]


def create_app(settings: ServeSettings) -> FastAPI:
    app = FastAPI(title="liftlm serve", version="1", lifespan=lifespan, docs_url="/docs", redoc_url=None,
                  exception_handlers=HANDLERS)
    app.state.settings = settings
    app.middleware("http")(require_token)
    app.add_middleware(LimitBody, limit=settings.max_upload_bytes)
    for module in (page, documents, models, chat):
        app.include_router(module.router)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Open the job table (taking back the jobs a previous run left training), start the training worker, load
    the engine; on the way out stop the worker (its job goes back in the queue) and close both."""
    settings: ServeSettings = app.state.settings
    table = open_table(settings)
    # the worker first, so that it loads its copy of the model while this process loads its own
    supervisor = Supervisor(settings, table) if settings.worker else None
    if supervisor is not None:
        supervisor.start()
    app.state.table, app.state.supervisor = table, supervisor
    engine = None
    try:
        engine = await asyncio.to_thread(Engine, settings.model, settings.device, settings.store,
                                         settings.max_loaded_adapters)
        app.state.engine = engine
        if supervisor is not None:
            supervisor.start_watching()
        yield
    finally:
        if supervisor is not None:
            await supervisor.close()
        if engine is not None:
            engine.close()
        table.close()


def open_table(settings: ServeSettings) -> JobTable:
    table = JobTable(settings.jobs_path)
    orphans = table.requeue_orphans(None, settings.max_attempts, "the server restarted while it trained")
    if orphans:
        log(f"picked up {len(orphans)} job(s) left training by a previous run: {', '.join(orphans)}")
    queued = table.counts()["queued"]
    if queued:
        log(f"{queued} queued job(s) waiting for the worker")
    return table


async def require_token(request: Request, call_next):
    """HTTP middleware: with a token set, every ``/v1`` request needs ``Authorization: Bearer <token>``."""
    token = request.app.state.settings.token
    if token and request.url.path.startswith("/v1"):
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return error_response(401, "missing or wrong bearer token (Authorization: Bearer $LIFTLM_API_TOKEN)",
                                  "authentication_error", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    return await call_next(request)
