"""The document routes of the HTTP API (PRODUCT.md, "API (v1)"), and health.

Handlers stay thin: they read and check what the request carries, call the store, and shape the
answer. Errors are mapped to status codes in :mod:`app.http.errors`. With auth on, every document
route first checks the caller's token (:mod:`app.auth`), before it reads a body or writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from crdt import (
    FORMAT_VERSION,
    Document,
    WriteResult,
    check_document_id,
    decode_state_vector,
    parse_operations,
)
from crdt.lib0 import DecodeError
from crdt.ops import apply_operations
from crdt.storage import DocumentRecord

from ..auth import Grant
from ..cluster.router import Route
from ..codec import b64, decode_base64
from ..errors import ApiError
from ..node import VERSION, Node
from ..replication import Tracker
from .bodies import authorize, parse_json, read_body
from .models import (
    DeleteResponse,
    DocumentList,
    DocumentView,
    ErrorResponse,
    Health,
    ReplicaList,
    WriteResponse,
)
from .placement import placement_view
from .routing import Plan, dispatch, note_deleted, refuse_if_removed

__all__ = ["router"]

log = logging.getLogger("meridian.http")

OCTET_STREAM = "application/octet-stream"


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Malformed request: invalid id, body or parameter",
        401: "No access token, or an invalid or expired one (auth on)",
        403: "The token does not cover this document, or does not grant writing",
        404: "Unknown or deleted document",
        413: "Body or document too large",
        415: "Wrong content type",
        422: "Invalid operation, or a durability level this topology cannot reach",
        503: "Storage unavailable, or after= not reached in time",
    }.items()
}

_PATCH_EXAMPLE = {
    "ops": [
        {"op": "set", "path": ["settings", "theme"], "value": "dark"},
        {"op": "insert_text", "path": ["body"], "index": 0, "text": "Hello"},
        {"op": "append", "path": ["items"], "values": [3]},
    ]
}


# -- request helpers -----------------------------------------------------------------------


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _require_content_type(request: Request, expected: str) -> None:
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given != expected:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"expected Content-Type: {expected}, got {given or 'none'}",
        )


def _doc_id(doc_id: str) -> str:
    check_document_id(doc_id)
    return doc_id


def _tracker(node: Node, durability: str, doc_id: str) -> Tracker | None:
    """The tracker of a write that waits for more than ``local``; 422 when the level can
    never be reached (checked before writing, so a refused write changes nothing)."""
    if durability == "local":
        return None
    replicator = node.replicator
    if replicator is None:
        raise ApiError(
            422,
            "durability_unavailable",
            f"durability={durability} needs other nodes, and this node replicates with none; "
            "use durability=local",
        )
    reason = replicator.unreachable_level(durability, doc_id)
    if reason is not None:
        raise ApiError(422, "durability_unavailable", f"durability={durability}: {reason}")
    return Tracker(node.node_id)


async def _write_request(
    request: Request,
    doc_id: str,
    durability: str,
    content_type: str,
    creates: Callable[[bytes], Callable[[], object]],
) -> tuple[Node, Tracker | None, bytes, Plan] | Response:
    """What every write checks first (token, id, content type), then its body; then where it
    goes: the holder's answer when it was forwarded, else the tracker of its durability level
    (checked here, before writing, so a refused write changes nothing), body and plan.
    ``creates(body)`` is the check of a first write on an empty document (it may raise at
    once, for a body that does not parse)."""
    authorize(request, doc_id, "write")
    node = _node(request)
    _doc_id(doc_id)
    _require_content_type(request, content_type)
    body = await read_body(request, node.settings.cluster.http.max_body_bytes)
    check = creates(body)
    plan = await dispatch(node, request, doc_id, write=True, body=body, creates=check)
    if isinstance(plan, Response):
        return plan
    return node, _tracker(node, durability, doc_id), body, plan


async def _write_response(
    node: Node,
    result: WriteResult,
    durability: str,
    tracker: Tracker | None,
    timeout: float | None,
    response: Response,
) -> dict[str, Any]:
    """Waits for the durability level asked for, then shapes the answer (202 when the
    timeout passed first: the write stays, it is a CRDT, and the answer says how far it got)."""
    reached = "local"
    nodes = [node.node_id]
    if tracker is not None and node.replicator is not None:
        replicator = node.replicator
        if not result.changed:
            # A duplicate: nothing was fanned out for it; send this copy along so the peers
            # acknowledge that they hold it too.
            document = await node.store.get(result.doc_id)
            replicator.deliver(
                result.doc_id, result.incarnation, document.encode_state(), tracker=tracker
            )
        wait = timeout if timeout is not None else replicator.config.durability_timeout
        reached = await replicator.wait_durable(tracker, result.doc_id, durability, wait)
        nodes = sorted(tracker.nodes)
        if reached != durability:
            response.status_code = 202
    return {
        "id": result.doc_id,
        "state_vector": b64(result.state_vector),
        "changed": result.changed,
        "created": result.created,
        "incarnation": result.incarnation,
        "durability": reached,
        "durable_on": nodes,
    }


async def _wait_after(node: Node, doc_id: str, after: str | None) -> None:
    """Read-your-writes: returns once this node's copy includes state vector ``after``."""
    if after is None:
        return
    raw = decode_base64(after, "state_vector")
    try:
        clocks = decode_state_vector(raw)
    except DecodeError as exc:
        raise ApiError(
            400, "invalid_state_vector", f"after= is not a state vector: {exc}"
        ) from None
    replicator = node.replicator
    if replicator is None:
        document = await node.store.get(doc_id)
        if all(document.clocks().get(c, 0) >= k for c, k in clocks.items()):
            return
        raise ApiError(
            503, "after_not_reached", "this node's copy does not include the after= state"
        )
    timeout = replicator.config.after_timeout
    if not await replicator.wait_covered(doc_id, clocks, timeout):
        raise ApiError(
            503,
            "after_not_reached",
            f"this node's copy did not include the after= state within {timeout:g}s; "
            "retry, or read from the region that wrote it",
        )


Durability = Annotated[
    Literal["local", "region", "quorum", "all"],
    Query(
        description="Answer once the write is durable on this node (local, the default), on "
        "two nodes of this region, on a majority of the document's regions, or on all of them"
    ),
]
Timeout = Annotated[
    float | None,
    Query(
        gt=0,
        le=60,
        description="Seconds to wait for the durability level "
        "(default: replication.durability_timeout)",
    ),
]
After = Annotated[
    str | None,
    Query(
        max_length=65536,
        description="A state vector (base64), e.g. a write's answer: read only once this "
        "node's copy includes it (read-your-writes from any region)",
    ),
]
Local = Annotated[
    bool,
    Query(
        description="Answer from this node's own copy (404 when it has none), never from the "
        "document's holders: what an operator or `meridian status --check` compares"
    ),
]


async def _route_read(node: Node, request: Request, doc_id: str, local: bool) -> Plan | Response:
    """Where a read is served: the holder's answer, or the plan to serve it here (always
    here with ``local=true``)."""
    if local:
        record = node.catalog.get(doc_id) or node.catalog.draft(doc_id)
        if not node.catalog.allows_here(record):
            raise ApiError(404, "document_not_found", f"{doc_id!r} is not held here")
        return Plan(Route("local", node.catalog.holders(record)), record, False, None)
    return await dispatch(node, request, doc_id, write=False)


# -- routes --------------------------------------------------------------------------------

router = APIRouter()


@router.get("/v1/health", response_model=Health, tags=["node"])
async def health(request: Request) -> dict[str, Any]:
    """Liveness and identity of this node; 503 ``node_removed`` once it knows it was removed
    from the cluster (probes and load balancers send its clients elsewhere)."""
    node = _node(request)
    refuse_if_removed(node)
    return {
        "node": node.node_id,
        "region": node.region,
        "version": VERSION,
        "status": "ok",
        "storage_format": FORMAT_VERSION,
        "cluster": node.settings.cluster.name,
        "uptime_seconds": round(time.time() - node.started_at, 3),
    }


@router.get("/v1/docs", response_model=DocumentList, responses=_ERRORS, tags=["documents"])
async def list_documents(
    request: Request,
    prefix: Annotated[str, Query(max_length=128, description="Only ids starting with this")] = "",
    limit: Annotated[
        int, Query(ge=1, description="Page size (at most limits.max_list_limit)")
    ] = 100,
    cursor: Annotated[
        str | None, Query(max_length=256, description="next_cursor of the previous page")
    ] = None,
) -> dict[str, Any]:
    """Documents held by this node, in id order, a page at a time (with auth on, only those
    the caller's token covers)."""
    grant = authorize(request, None, "read")
    node = _node(request)
    limit = min(limit, node.settings.cluster.http.max_list_limit)
    after = None
    if cursor:
        after = decode_base64(cursor, "cursor").decode("utf-8", errors="replace")
    records = await _granted_documents(node, grant, prefix, after, limit + 1)
    page = records[:limit]
    more = len(records) > limit
    return {
        "documents": [{"id": r.id, "incarnation": r.incarnation} for r in page],
        "next_cursor": b64(page[-1].id.encode()) if more and page else None,
    }


async def _granted_documents(
    node: Node, grant: Grant | None, prefix: str, after: str | None, count: int
) -> list[DocumentRecord]:
    """The first ``count`` live documents under ``prefix`` after ``after`` that ``grant``
    covers (all of them when auth is off)."""
    if grant is None or grant.ids is None:
        narrowed = grant.list_prefix(prefix) if grant is not None else prefix
        if narrowed is None:
            return []
        return await node.store.list_documents(narrowed, after, count)
    # An ids grant: each id on its own (a token holds a few hundred at most).
    records: list[DocumentRecord] = []
    for doc_id in sorted(grant.ids):
        if len(records) == count:
            break
        if not doc_id.startswith(prefix) or (after is not None and doc_id <= after):
            continue
        found = await node.store.list_documents(doc_id, None, 1)
        if found and found[0].id == doc_id:
            records.append(found[0])
    return records


@router.get("/v1/docs/{doc_id}", response_model=DocumentView, responses=_ERRORS, tags=["documents"])
async def get_document(
    request: Request,
    doc_id: str,
    after: After = None,
    digest: Annotated[
        bool,
        Query(
            description="Include the SHA-256 of the document's canonical state: equal on two "
            "copies exactly when they hold the same content (costs a re-encoding)"
        ),
    ] = False,
    local: Local = False,
) -> Response:
    """The JSON view of a document: every root with its inferred type."""
    authorize(request, doc_id, "read")
    node = _node(request)
    plan = await _route_read(node, request, _doc_id(doc_id), local)
    if isinstance(plan, Response):
        return plan
    await _wait_after(node, doc_id, after)
    document = await node.store.get(doc_id)
    view = {
        "id": doc_id,
        "content": document.to_json(),
        "state_vector": b64(document.state_vector()),
        "incarnation": document.incarnation,
        "placement": placement_view(node, plan.record),
        "digest": document.digest() if digest else None,
    }
    # Encoded here rather than through the response model: pydantic refuses to serialize
    # values nested past ~250 levels, and a document may nest up to crdt.MAX_NESTING.
    return JSONResponse(view)


@router.get(
    "/v1/docs/{doc_id}/replicas",
    response_model=ReplicaList,
    responses=_ERRORS,
    tags=["documents"],
)
async def get_replicas(
    request: Request, doc_id: str, local: Local = False
) -> dict[str, Any] | Response:
    """Where the document is held and, from this node's side, whether each copy has every
    change this node has: ``in_sync``, ``sending`` (``pending`` changes queued or in flight),
    ``catching_up`` (left to the peer's anti-entropy) or ``unreachable`` (link not up)."""
    authorize(request, doc_id, "read")
    node = _node(request)
    routed = await _route_read(node, request, _doc_id(doc_id), local)
    if isinstance(routed, Response):
        return routed
    document = await node.store.get(doc_id)
    here = {
        "node": node.node_id,
        "region": node.region,
        "link": "self",
        "state": "in_sync",
        "pending": 0,
    }
    replicas = [here, *(node.replicator.replicas(doc_id) if node.replicator is not None else [])]
    return {
        "id": doc_id,
        "incarnation": document.incarnation,
        "regions": sorted({replica["region"] for replica in replicas}),
        "replicas": replicas,
    }


@router.get(
    "/v1/docs/{doc_id}/update",
    responses={200: {"content": {OCTET_STREAM: {}}, "description": "A Yjs v1 update"}, **_ERRORS},
    response_class=Response,
    tags=["documents"],
)
async def get_update(
    request: Request,
    doc_id: str,
    since: Annotated[
        str | None,
        Query(max_length=65536, description="A state vector (base64): return only what it lacks"),
    ] = None,
    after: After = None,
    local: Local = False,
) -> Response:
    """The document as a binary Yjs update: all of it, or the diff since a state vector."""
    authorize(request, doc_id, "read")
    node = _node(request)
    routed = await _route_read(node, request, _doc_id(doc_id), local)
    if isinstance(routed, Response):
        return routed
    await _wait_after(node, doc_id, after)
    document = await node.store.get(doc_id)
    state_vector = decode_base64(since, "state_vector") if since is not None else None
    update = document.encode_state(state_vector)
    return Response(
        update,
        media_type=OCTET_STREAM,
        headers={"X-State-Vector": b64(document.state_vector())},
    )


@router.post(
    "/v1/docs/{doc_id}/update",
    response_model=WriteResponse,
    responses=_ERRORS,
    tags=["documents"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
            "description": "A Yjs v1 update (Y.encodeStateAsUpdate, or a Y.Doc 'update' event)",
        }
    },
)
async def post_update(
    request: Request,
    response: Response,
    doc_id: str,
    durability: Durability = "local",
    timeout: Timeout = None,
) -> dict[str, Any] | Response:
    """Apply a binary Yjs update; creates the document if new. Answers once committed."""

    def creates(body: bytes) -> Callable[[], object]:
        return lambda: Document(doc_id).apply_update(body)

    routed = await _write_request(request, doc_id, durability, OCTET_STREAM, creates)
    if isinstance(routed, Response):
        return routed
    node, tracker, body, plan = routed
    result = await node.store.apply_update(
        doc_id, body, origin=tracker, hint=plan.hint, floor=plan.floor
    )
    return await _write_response(node, result, durability, tracker, timeout, response)


@router.patch(
    "/v1/docs/{doc_id}",
    response_model=WriteResponse,
    responses=_ERRORS,
    tags=["documents"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "properties": {"ops": {"type": "array"}}},
                    "example": _PATCH_EXAMPLE,
                }
            },
        }
    },
)
async def patch_document(
    request: Request,
    response: Response,
    doc_id: str,
    durability: Durability = "local",
    timeout: Timeout = None,
) -> dict[str, Any] | Response:
    """Apply JSON operations atomically; creates the document if new."""
    parsed: list[Any] = []

    def creates(raw: bytes) -> Callable[[], object]:
        parsed.append(parse_json(raw))
        limit = _node(request).settings.cluster.limits.max_operations
        ops = parse_operations(parsed[0], max_operations=limit)
        return lambda: apply_operations(Document(doc_id), ops, client_id=1)

    routed = await _write_request(request, doc_id, durability, "application/json", creates)
    if isinstance(routed, Response):
        return routed
    node, tracker, _, plan = routed
    result = await node.store.apply_operations(
        doc_id, parsed[0], origin=tracker, hint=plan.hint, floor=plan.floor
    )
    return await _write_response(node, result, durability, tracker, timeout, response)


@router.delete(
    "/v1/docs/{doc_id}", response_model=DeleteResponse, responses=_ERRORS, tags=["documents"]
)
async def delete_document(request: Request, doc_id: str) -> dict[str, Any] | Response:
    """Delete a document: a tombstone for its current incarnation (see docs/design.md)."""
    authorize(request, doc_id, "write")
    node = _node(request)
    routed = await dispatch(node, request, _doc_id(doc_id), write=True)
    if isinstance(routed, Response):
        return routed
    incarnation = await node.store.delete(doc_id, hint=routed.hint)
    await note_deleted(node, doc_id, incarnation)
    return {"id": doc_id, "deleted": True, "incarnation": incarnation}
