"""What the routers share, as FastAPI dependencies: the settings, the job table, the engine and the worker's
supervisor (all on ``app.state``, set by ``create_app`` and its lifespan), and the document-id check."""
from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request

from .engine import Engine
from .errors import ApiError
from .jobs import JobTable
from .settings import ServeSettings
from .supervisor import Supervisor

ID_PATTERN = re.compile(r"^[0-9a-f]{20}$")  # the store key: 20 lowercase hex digits


def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


def get_table(request: Request) -> JobTable:
    return request.app.state.table


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_supervisor(request: Request) -> Supervisor | None:
    return request.app.state.supervisor


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
TableDep = Annotated[JobTable, Depends(get_table)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SupervisorDep = Annotated[Supervisor | None, Depends(get_supervisor)]


def check_id(doc_id: str) -> str:
    """A document id is a store key (20 hex digits); anything else is refused before it reaches a path."""
    if not ID_PATTERN.match(doc_id):
        raise ApiError(404, f"no such document: {doc_id[:64]!r} (ids are 20 hex digits)", code="unknown_document")
    return doc_id


def job_or_404(table: JobTable, doc_id: str, with_text: bool = False) -> dict:
    job = table.get(check_id(doc_id), with_text=with_text)
    if job is None:
        raise ApiError(404, f"no such document: {doc_id}", code="unknown_document")
    return job
