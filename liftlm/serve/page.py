"""The web page: ``/`` and its files under ``/static`` (plain HTML/JS in ``static/``, no build step)."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from .errors import ApiError

STATIC = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page():
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/static/{name}")
async def static(name: str):
    files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
    if name not in files:
        raise ApiError(404, f"no such file: {name[:64]!r}", code="not_found")
    return FileResponse(files[name])
