"""The HTTP API (PRODUCT.md, "API (v1)") of one node, and the app factory.

Handlers stay thin: they read and check what the request carries, call the store, and shape the
answer. Errors are mapped to status codes in :mod:`app.errors`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request, Response
from pydantic import BaseModel, Field

from crdt import FORMAT_VERSION, check_document_id

from .config import NodeSettings
from .errors import ApiError, install_error_handlers
from .node import VERSION, Node, open_node

__all__ = ["create_app"]

log = logging.getLogger("meridian.http")

OCTET_STREAM = "application/octet-stream"


# -- response models (for the OpenAPI page; handlers return plain dicts) -------------------


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_update"])
    message: str = Field(examples=["not a valid Yjs v1 update: truncated integer at byte 3"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    node: str = Field(examples=["eu-west-1"])
    region: str = Field(examples=["eu-west"])
    version: str = Field(examples=[VERSION])
    status: str = Field(examples=["ok"])
    storage_format: int = Field(examples=[FORMAT_VERSION])
    cluster: str = Field(examples=["meridian-local"])
    uptime_seconds: float


class WriteResponse(BaseModel):
    id: str = Field(examples=["notes"])
    state_vector: str = Field(
        description="The document's state vector after the write, base64", examples=["AcW8tIEFBQ=="]
    )
    changed: bool = Field(description="False when the write brought nothing new (a duplicate)")
    created: bool = Field(description="True when the write created the document (or re-created it)")
    incarnation: int = Field(
        description="Which life of the id the document is in (see docs/design.md)"
    )
    durability: str = Field(examples=["local"], description="The durability level reached")


class Placement(BaseModel):
    mode: str = Field(examples=["default"])
    regions: list[str] = Field(examples=[["eu-west"]])
    pinned: bool = False


class DocumentView(BaseModel):
    id: str = Field(examples=["notes"])
    content: dict[str, Any] = Field(
        examples=[{"settings": {"theme": "dark"}, "body": "Hello", "items": [1, {"a": 2}]}]
    )
    state_vector: str = Field(examples=["AcW8tIEFBQ=="])
    incarnation: int
    placement: Placement


class DocumentSummary(BaseModel):
    id: str
    incarnation: int


class DocumentList(BaseModel):
    documents: list[DocumentSummary]
    next_cursor: str | None = Field(
        description="Pass as cursor= for the next page; null at the end"
    )


class DeleteResponse(BaseModel):
    id: str
    deleted: bool
    incarnation: int


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Malformed request: invalid id, body or parameter",
        404: "Unknown or deleted document",
        413: "Body or document too large",
        415: "Wrong content type",
        422: "Invalid operation",
        503: "Storage unavailable",
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


async def _read_body(request: Request, limit: int) -> bytes:
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


def _require_content_type(request: Request, expected: str) -> None:
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given != expected:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"expected Content-Type: {expected}, got {given or 'none'}",
        )


def decode_base64(value: str, what: str) -> bytes:
    """Standard or URL-safe base64, padding optional; 400 when it is neither."""
    cleaned = value.strip().replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"invalid_{what}", f"{what} is not valid base64") from exc


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _doc_id(doc_id: str) -> str:
    check_document_id(doc_id)
    return doc_id


def _check_durability(durability: str) -> str:
    if durability != "local":
        raise ApiError(
            422,
            "durability_unavailable",
            f"durability={durability} needs replication to other nodes, which this node does not "
            "have yet; use durability=local",
        )
    return durability


async def _write_request(
    request: Request, doc_id: str, durability: str, content_type: str
) -> tuple[Node, bytes]:
    """What every write checks first (id, durability, content type), then its body."""
    node = _node(request)
    _doc_id(doc_id)
    _check_durability(durability)
    _require_content_type(request, content_type)
    return node, await _read_body(request, node.settings.cluster.http.max_body_bytes)


Durability = Annotated[
    Literal["local", "region", "quorum", "all"],
    Query(description="Wait until the write is durable at this level (default: on this node)"),
]


# -- routes --------------------------------------------------------------------------------

router = APIRouter()


@router.get("/v1/health", response_model=Health, tags=["node"])
async def health(request: Request) -> dict[str, Any]:
    """Liveness and identity of this node."""
    node = _node(request)
    return {
        "node": node.node_id,
        "region": node.region,
        "version": VERSION,
        "status": "ok",
        "storage_format": FORMAT_VERSION,
        "cluster": node.settings.cluster.name,
        "uptime_seconds": round(time.time() - node.started_at, 3),
    }


@router.get("/v1/cluster", tags=["node"])
async def cluster(request: Request) -> dict[str, Any]:
    """Regions, nodes and their state, peer links, placement summary (this node's view)."""
    node = _node(request)
    config = node.settings.cluster
    live, tombstones = await node.store.storage.count_documents()
    stats = node.store.statistics()
    storage = node.store.storage.statistics()
    return {
        "cluster": config.name,
        "node": node.node_id,
        "region": node.region,
        "regions": [
            {"name": region.name, "nodes": list(region.nodes)} for region in config.regions.values()
        ]
        or [{"name": node.region, "nodes": []}],
        "nodes": [{"id": node.node_id, "region": node.region, "state": "up", "self": True}],
        "peers": [],
        "placement": {"default_replicas": config.replicas},
        "documents": {
            "live": live,
            "tombstones": tombstones,
            "hot": stats.hot_documents,
            "hot_bytes": stats.hot_bytes,
        },
        "storage": {
            "commits": storage.commits,
            "jobs_committed": storage.jobs_committed,
            "largest_batch": storage.batch_size_max,
            "queue_depth": storage.queue_depth,
            "compactions": storage.compactions,
        },
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
    """Documents held by this node, in id order, a page at a time."""
    node = _node(request)
    limit = min(limit, node.settings.cluster.http.max_list_limit)
    after = None
    if cursor:
        after = decode_base64(cursor, "cursor").decode("utf-8", errors="replace")
    records = await node.store.list_documents(prefix, after, limit + 1)
    page = records[:limit]
    more = len(records) > limit
    return {
        "documents": [{"id": r.id, "incarnation": r.incarnation} for r in page],
        "next_cursor": b64(page[-1].id.encode()) if more and page else None,
    }


@router.get("/v1/docs/{doc_id}", response_model=DocumentView, responses=_ERRORS, tags=["documents"])
async def get_document(request: Request, doc_id: str) -> dict[str, Any]:
    """The JSON view of a document: every root with its inferred type."""
    node = _node(request)
    document = await node.store.get(_doc_id(doc_id))
    return {
        "id": doc_id,
        "content": document.to_json(),
        "state_vector": b64(document.state_vector()),
        "incarnation": document.incarnation,
        "placement": {"mode": "default", "regions": [node.region], "pinned": False},
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
) -> Response:
    """The document as a binary Yjs update: all of it, or the diff since a state vector."""
    node = _node(request)
    document = await node.store.get(_doc_id(doc_id))
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
    request: Request, doc_id: str, durability: Durability = "local"
) -> dict[str, Any]:
    """Apply a binary Yjs update; creates the document if new. Answers once committed."""
    node, body = await _write_request(request, doc_id, durability, OCTET_STREAM)
    result = await node.store.apply_update(doc_id, body)
    return _write_response(result, durability)


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
    request: Request, doc_id: str, durability: Durability = "local"
) -> dict[str, Any]:
    """Apply JSON operations atomically; creates the document if new."""
    node, raw = await _write_request(request, doc_id, durability, "application/json")
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    result = await node.store.apply_operations(doc_id, body)
    return _write_response(result, durability)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@router.delete(
    "/v1/docs/{doc_id}", response_model=DeleteResponse, responses=_ERRORS, tags=["documents"]
)
async def delete_document(request: Request, doc_id: str) -> dict[str, Any]:
    """Delete a document: a tombstone for its current incarnation (see docs/design.md)."""
    node = _node(request)
    incarnation = await node.store.delete(_doc_id(doc_id))
    return {"id": doc_id, "deleted": True, "incarnation": incarnation}


def _write_response(result: Any, durability: str) -> dict[str, Any]:
    return {
        "id": result.doc_id,
        "state_vector": b64(result.state_vector),
        "changed": result.changed,
        "created": result.created,
        "incarnation": result.incarnation,
        "durability": durability,
    }


# -- the app -------------------------------------------------------------------------------


def create_app(
    settings: NodeSettings,
    *,
    on_ready: Callable[[Node], None] | None = None,
    on_startup_error: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The ASGI app of one node. Its lifespan opens the node (lock, storage) and closes it;
    ``on_ready(node)`` is called once the node serves, ``on_startup_error(exc)`` when it
    could not open (the CLI prints it as one line)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            opened = open_node(settings)
            node = await opened.__aenter__()
        except Exception as exc:
            if on_startup_error is not None:
                on_startup_error(exc)
            raise
        try:
            app.state.node = node
            if on_ready is not None:
                on_ready(node)
            yield
        except BaseException as exc:
            if not await opened.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await opened.__aexit__(None, None, None)

    app = FastAPI(
        title="Meridian",
        version=VERSION,
        summary="A geo-distributed document store built on CRDTs",
        description=(
            "Documents are Yjs documents. Binary bodies are Yjs v1 updates; state vectors in "
            "JSON and query strings are base64. Errors are "
            '`{"error": {"code": ..., "message": ...}}`.'
        ),
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def root() -> dict[str, Any]:
        return {"service": "meridian", "api": "/v1", "openapi": "/docs"}

    return app
