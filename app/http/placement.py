"""``GET/PUT /v1/docs/{id}/placement``: where a document lives, and changing it.

Any node answers both without asking another: placement records are replicated data every
node holds (:mod:`app.cluster.catalog`). A change made here is merged into this node's catalog
and sent to every peer; concurrent changes resolve the same way everywhere (the latest
stamp wins, docs/design.md, "Placement").

A change may not silently undo a pin: on a pinned document, a request that does not say
``"pinned"`` and would store its content in another region is a 409 (``conflicts_with_pin``);
moving or releasing a pin is said explicitly (``"pinned": true`` with the new regions, or
``"pinned": false``). A pin is also refused (409 ``upgrade_in_progress``) while a node of an
earlier release is linked: it holds every document and knows nothing of pins.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request

from crdt import DocumentNotFound, check_document_id

from ..cluster.placement import (
    InvalidPlacement,
    PlacementError,
    PlacementRecord,
    Policy,
    resolve_request,
)
from ..errors import ApiError
from ..node import Node
from .bodies import authorize, parse_json, read_body
from .models import ErrorResponse, Placement

__all__ = ["placement_view", "router"]

router = APIRouter()

#: A placement body is small: a few region names.
MAX_BODY = 4096

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Malformed id or body",
        401: "No access token, or an invalid one (auth on)",
        403: "The token does not grant writing this document",
        404: "No such document, and no placement set for it",
        409: "The change would break the document's pin, or a node cannot keep pins yet",
        413: "Body too large",
        422: "Unknown regions, too many or none, replicas out of range",
    }.items()
}


def placement_view(node: Node, record: PlacementRecord) -> dict[str, Any]:
    """A record as the API shows it (``GET /v1/docs/{id}``'s ``placement``, and here)."""
    catalog = node.catalog
    return {
        "id": record.doc_id,
        "policy": record.policy,
        "regions": list(catalog.regions(record)),
        "replicas": record.count if record.policy == "count" else None,
        "pinned": record.pinned,
        "home": record.current_home,
        "holders": list(catalog.holders(record)),
        "followers": list(catalog.followers(record)),
        "deleted_incarnation": record.deleted,
    }


@router.get(
    "/v1/docs/{doc_id}/placement", response_model=Placement, responses=_ERRORS, tags=["placement"]
)
async def get_placement(request: Request, doc_id: str) -> dict[str, Any]:
    """The document's placement: policy, regions, pin, home region, holders."""
    authorize(request, doc_id, "read")
    check_document_id(doc_id)
    node: Node = request.app.state.node
    record = node.catalog.get(doc_id)
    if record is None:
        if await node.store.lookup(doc_id) is None:
            raise DocumentNotFound(f"{doc_id!r} has no placement: it was never written")
        record = node.catalog.draft(doc_id)  # a node with no peers keeps no records
    return placement_view(node, record)


@router.put(
    "/v1/docs/{doc_id}/placement",
    response_model=Placement,
    responses=_ERRORS,
    tags=["placement"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "regions": {"type": "array", "items": {"type": "string"}},
                            "replicas": {"type": "integer", "minimum": 1},
                            "pinned": {"type": "boolean"},
                        },
                    },
                    "examples": {
                        "regions": {"value": {"regions": ["eu-west"], "pinned": True}},
                        "count": {"value": {"replicas": 3}},
                    },
                }
            },
        }
    },
)
async def put_placement(request: Request, doc_id: str) -> dict[str, Any]:
    """Sets the document's placement: ``{"regions": [...]}`` or ``{"replicas": N}``, with
    an optional ``"pinned": true`` (its content then never leaves those regions). Works
    before the document's first write (pin it before anything is stored)."""
    authorize(request, doc_id, "write")
    check_document_id(doc_id)
    node: Node = request.app.state.node
    body = parse_json(await read_body(request, MAX_BODY))
    catalog = node.catalog
    current = catalog.get(doc_id)
    home = current.current_home if current is not None else node.region
    if current is not None and current.pinned and isinstance(body, dict) and "pinned" not in body:
        # A change that does not mention the pin keeps it (releasing one is said explicitly).
        body = {**body, "pinned": True}
        explicit = False
    else:
        explicit = True
    try:
        policy = resolve_request(body, catalog.topology, home)
    except InvalidPlacement as exc:
        raise ApiError(422, "invalid_placement", str(exc)) from None
    except PlacementError as exc:
        raise ApiError(400, "invalid_placement", str(exc)) from None
    if current is not None and not explicit:
        _check_pin(node, current, policy)
    if policy.pinned and node.replicator is not None:
        old = sorted(p.node_id for p in node.replicator.peers.values() if p.holds_everything)
        if old:
            raise ApiError(
                409,
                "upgrade_in_progress",
                f"{', '.join(old)} run an earlier release, which holds every document: "
                "pin once every node is upgraded",
            )
    record = await catalog.change_policy(doc_id, policy)
    return placement_view(node, record)


def _check_pin(node: Node, current: PlacementRecord, policy: Policy) -> None:
    """409 when a change that does not mention the pin would store a pinned document's
    content outside its regions."""
    catalog = node.catalog
    after = current if policy == current.policy_fields else _preview(current, policy)
    outside = sorted(set(catalog.regions(after)) - set(current.regions))
    if outside:
        raise ApiError(
            409,
            "conflicts_with_pin",
            f"{current.doc_id} is pinned to {', '.join(current.regions)}; this placement would "
            f"store it in {', '.join(outside)}. Say "
            '"pinned": true with the new regions to move the pin, or "pinned": false to '
            "release it",
        )


def _preview(current: PlacementRecord, policy: Policy) -> PlacementRecord:
    """``current`` with ``policy``, unstamped: only to see where it would place content."""
    return dataclasses.replace(current, **dataclasses.asdict(policy))
