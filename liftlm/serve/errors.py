"""Errors as JSON in OpenAI's shape, ``{"error": {"message", "type", "code"}}``, with a 4xx status: ``ApiError``
for the handlers to raise, the app's exception handlers, and the request-body limit (``LimitBody``)."""
from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import LiftError


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


def too_large(limit: int) -> JSONResponse:
    return error_response(413, f"the request body is over the limit of {limit} bytes (--max-upload-mb)",
                          code="too_large")


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
            return await too_large(self.limit)(scope, receive, send)
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


async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.type, exc.code, exc.extra)


async def on_lift_error(request: Request, exc: LiftError) -> JSONResponse:
    return error_response(400, str(exc), code="invalid_input")


async def on_body_too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
    return too_large(request.app.state.settings.max_upload_bytes)


async def on_invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        problems.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return error_response(400, "invalid request: " + "; ".join(problems), code="invalid_request")


async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, f"{exc.detail}: {request.method} {request.url.path[:100]}", code=code)


HANDLERS = {  # FastAPI(exception_handlers=HANDLERS): every error in the one JSON shape
    ApiError: on_api_error,
    LiftError: on_lift_error,
    BodyTooLarge: on_body_too_large,
    RequestValidationError: on_invalid_request,
    StarletteHTTPException: on_http_error,
}

