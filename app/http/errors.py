"""HTTP errors: the one place where domain errors become status codes.

Every error answer is ``{"error": {"code": "<snake_case>", "message": "<human sentence>"}}``
(PRODUCT.md). The engine raises :class:`crdt.CrdtError` subclasses; the node raises
:class:`~app.errors.ApiError` for problems that only exist at the HTTP boundary (a body too
large, a wrong content type, JSON that does not parse); :mod:`app.auth` raises
:class:`~app.auth.TokenError` (401 with a ``WWW-Authenticate: Bearer`` challenge, or 403).
Every 4xx answered here is reported to ``on_rejected(code)`` (the node's
``meridian_rejected_total``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from crdt import (
    CrdtError,
    DocumentNotFound,
    InvalidDocumentId,
    InvalidOperation,
    InvalidUpdate,
    LimitExceeded,
    StorageError,
)

from ..auth import TokenError
from ..errors import ApiError

__all__ = ["CLIENT_CLOSED_REQUEST", "error_body", "install_error_handlers"]

log = logging.getLogger("meridian.http")


#: The status counted for a request whose client left before its body was complete.
CLIENT_CLOSED_REQUEST = 499


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _status_and_code(exc: CrdtError) -> tuple[int, str]:
    if isinstance(exc, LimitExceeded):
        if exc.limit == "max_document_bytes":
            return 413, "document_too_large"
        if exc.limit == "max_pending_bytes":
            return 422, "missing_dependencies"
        if exc.limit == "max_nesting":
            return 422, "nesting_too_deep"
        return 422, "too_many_operations" if exc.limit == "max_operations" else "limit_exceeded"
    if isinstance(exc, InvalidUpdate | InvalidDocumentId):
        return 400, exc.code
    if isinstance(exc, InvalidOperation):
        return 422, exc.code
    if isinstance(exc, DocumentNotFound):
        return 404, exc.code
    if isinstance(exc, StorageError):
        return 503, "storage_unavailable"
    return 500, "internal_error"


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _challenge(exc: TokenError) -> dict[str, str]:
    """RFC 6750's challenge, on every 401 (a token that was sent and refused says so)."""
    if exc.status != 401:
        return {}
    if exc.code == "missing_token":
        return {"WWW-Authenticate": 'Bearer realm="meridian"'}
    return {"WWW-Authenticate": 'Bearer realm="meridian", error="invalid_token"'}


def install_error_handlers(
    app: FastAPI, *, on_rejected: Callable[[str], None] | None = None
) -> None:
    """Maps every error to its answer; ``on_rejected(code)`` is called for each 4xx."""

    def answer(
        status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        if on_rejected is not None and 400 <= status < 500:
            on_rejected(code)
        return JSONResponse(error_body(code, message), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return answer(exc.status, exc.code, exc.message)

    @app.exception_handler(TokenError)
    async def _token_error(request: Request, exc: TokenError) -> JSONResponse:
        return answer(exc.status, exc.code, exc.message, _challenge(exc))

    @app.exception_handler(CrdtError)
    async def _crdt_error(request: Request, exc: CrdtError) -> JSONResponse:
        status, code = _status_and_code(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return answer(status, code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        )
        return answer(400, "invalid_request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route for {request.method} {request.url.path}"
        return answer(exc.status_code, code, message, exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _disconnected(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client went away before its body was complete: nothing was written, and the
        # answer reaches nobody. 499 is the status proxies log for it (nginx's "client
        # closed request"), so /metrics does not count it as a server error.
        log.info(
            "%s %s: the client left before its body was complete", request.method, request.url.path
        )
        return answer(CLIENT_CLOSED_REQUEST, "client_disconnected", "the body was incomplete")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return JSONResponse(
            error_body("internal_error", "the node failed to answer; this is a bug"),
            status_code=500,
        )
