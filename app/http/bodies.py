"""What the document routes read from a request: the caller's grant, a bounded body, JSON."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from ..auth import Authorizer, Grant, Right, bearer_token
from ..errors import ApiError

__all__ = ["authorize", "parse_json", "read_body"]


def authorize(request: Request, doc_id: str | None, right: Right) -> Grant | None:
    """The caller's grant for ``right`` on ``doc_id`` (None: no single document), None when
    auth is off; raises TokenError (401/403)."""
    authorizer: Authorizer = request.app.state.authorizer
    if not authorizer.required:
        return None  # auth off: no header to parse
    token = bearer_token(request.headers.get("authorization"))
    return authorizer.authorize(token, doc_id, right)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (checked before reading when
    the client declares a length, and while reading otherwise)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid_content_length", "Content-Length must be a number")
        if int(declared) > limit:
            raise ApiError(
                413, "body_too_large", f"body of {declared} bytes exceeds the {limit}-byte limit"
            )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """A body as JSON; 400 ``invalid_json`` when it is not (NaN and Infinity are not JSON)."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
