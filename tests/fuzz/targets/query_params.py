"""Query parameters that carry binary values, as the document routes of
:mod:`app.http.documents` and :mod:`app.http.streams` parse them:

- ``after=`` (read-your-writes): the route's own ``_wait_after``, on a node without peers;
- ``since=`` of GET /v1/docs/{id}/update: ``decode_base64``, then ``Document.encode_state``;
- ``since=`` of the events WebSocket: ``decode_base64``, ``decode_state_vector``, re-encoded;
- ``cursor=`` of GET /v1/docs: ``decode_base64``, then UTF-8 with replacement.

Each raises only what its route answers with a 4xx (ApiError 400, InvalidUpdate; for the
WebSocket, ApiError or DecodeError, closed with 1007) or what ``after=`` answers when the
node's copy lacks the state (ApiError 503 ``after_not_reached``). The value is what Starlette
hands the route: the decoded query string, UTF-8 with replacement, no longer than the route's
``max_length``.

The input's first byte picks the parameter; the rest is its value."""

from __future__ import annotations

import base64
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from app.codec import decode_base64
from app.errors import ApiError
from app.http.documents import _wait_after
from crdt import Document, InvalidUpdate
from crdt.lib0 import DecodeError
from crdt.statevector import decode_state_vector, encode_state_vector

from ._seeds import STATE_VECTOR, open_document

if TYPE_CHECKING:
    from app.node import Node

#: The routes' Query(max_length=...).
MAX_STATE_VECTOR = 65536
MAX_CURSOR = 256
PARAMETERS = ("after", "since_update", "since_events", "cursor")


class _Store:
    def __init__(self, doc: Document) -> None:
        self.doc = doc

    async def get(self, doc_id: str) -> Document:
        return self.doc


class _Node:
    """What ``_wait_after`` reads of a node with no peers: its store."""

    replicator = None

    def __init__(self, doc: Document) -> None:
        self.store = _Store(doc)


def seeds() -> list[bytes]:
    values = [
        base64.b64encode(STATE_VECTOR),
        base64.urlsafe_b64encode(b"\x02\x07\x05\xe8\x07\x02").rstrip(b"="),
        b"AA==",
        b"AQcP",
        base64.b64encode(b"notes:2024"),
    ]
    return [bytes([index]) + value for index in range(len(PARAMETERS)) for value in values]


def test_one_input(data: bytes) -> None:
    parameter = PARAMETERS[data[0] % len(PARAMETERS)] if data else "after"
    value = data[1:].decode("utf-8", "replace")
    try:
        if parameter == "after":
            with open_document() as doc:
                node = cast("Node", _Node(doc))
                _run(_wait_after(node, "fuzzed", value[:MAX_STATE_VECTOR]))
        elif parameter == "since_update":
            since = decode_base64(value[:MAX_STATE_VECTOR], "state_vector")
            with open_document() as doc:
                doc.encode_state(since)
        elif parameter == "since_events":
            raw = decode_base64(value[:MAX_STATE_VECTOR], "state_vector")
            try:
                encode_state_vector(decode_state_vector(raw))
            except DecodeError:
                return
        else:
            decode_base64(value[:MAX_CURSOR], "cursor").decode("utf-8", errors="replace")
    except ApiError as exc:
        if exc.status == 400 or (parameter == "after" and exc.code == "after_not_reached"):
            return
        raise
    except InvalidUpdate:
        if parameter != "since_update":
            raise


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Runs a coroutine that never waits (the stub store answers at once)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise AssertionError("the coroutine waited")
