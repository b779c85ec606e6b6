"""The WebSocket routes: ``/v1/sync/{id}`` and ``/v1/docs/{id}/events`` for clients (token
checked here, served by :mod:`app.sync`), ``/v1/peer`` for nodes (served by
:mod:`app.replication`, which authenticates with the cluster secret)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, WebSocket

from crdt import CrdtError, check_document_id, decode_state_vector, encode_state_vector
from crdt.lib0 import DecodeError

from ..auth import Authorizer, TokenError, token_from_websocket
from ..codec import close_reason, decode_base64
from ..errors import ApiError
from ..node import Node
from ..sync import serve_events, serve_sync
from ..sync.protocol import encode_permission_denied
from .routing import Plan, dispatch_websocket

__all__ = ["router"]

router = APIRouter()


async def _authorize_websocket(
    websocket: WebSocket, doc_id: str, *, sync: bool
) -> tuple[bool, str | None] | None:
    """(can write, subprotocol to accept) for a client WebSocket, or None after refusing it:
    accepted, told why (the y-websocket auth message on /v1/sync), closed with 4401/4403."""
    token, subprotocol = token_from_websocket(websocket)
    authorizer: Authorizer = websocket.app.state.authorizer
    try:
        grant = authorizer.authorize(token, doc_id, "read")
    except TokenError as exc:
        await websocket.accept(subprotocol=subprotocol)
        if sync:
            await websocket.send_bytes(encode_permission_denied(exc.message))
        await websocket.close(exc.websocket_close_code, close_reason(exc.message))
        node: Node = websocket.app.state.node
        node.hub.refused_input("sync" if sync else "events", exc.websocket_close_code)
        return None
    return grant is None or grant.allows(doc_id, "write"), subprotocol


async def _route_websocket(
    websocket: WebSocket, doc_id: str, *, write: bool
) -> Plan | Literal["invalid"] | None:
    """Serve here (the plan), or None once the socket was forwarded to a holder (and ended)
    or refused; "invalid" for an invalid id, which the endpoint refuses with 4400."""
    node: Node = websocket.app.state.node
    try:
        check_document_id(doc_id)
    except CrdtError:
        return "invalid"
    try:
        return await dispatch_websocket(node, websocket, doc_id, write=write)
    except ApiError as exc:  # a forged X-Meridian-Forwarded header
        await websocket.accept()
        await websocket.close(4400, close_reason(exc.message))
        node.hub.refused_input("sync" if write else "events", 4400)
        return None


@router.websocket("/v1/sync/{doc_id}")
async def sync_document(websocket: WebSocket, doc_id: str) -> None:
    """The y-websocket protocol: point a Yjs ``WebsocketProvider`` at ``ws://node/v1/sync``."""
    node: Node = websocket.app.state.node
    allowed = await _authorize_websocket(websocket, doc_id, sync=True)
    if allowed is None:
        return
    plan = await _route_websocket(websocket, doc_id, write=True)
    if plan is not None:
        can_write, subprotocol = allowed
        await serve_sync(
            websocket,
            node,
            doc_id,
            can_write=can_write,
            subprotocol=subprotocol,
            hint=plan != "invalid" and plan.hint,
            floor=0 if plan == "invalid" else plan.floor,
        )


@router.websocket("/v1/docs/{doc_id}/events")
async def document_events(websocket: WebSocket, doc_id: str) -> None:
    """A JSON snapshot of the document, then its new content after every change."""
    node: Node = websocket.app.state.node
    allowed = await _authorize_websocket(websocket, doc_id, sync=False)
    if allowed is None:
        return
    since = websocket.query_params.get("since")
    raw = None
    if since is not None:
        try:
            raw = encode_state_vector(decode_state_vector(decode_base64(since, "state_vector")))
        except (ApiError, DecodeError):
            await websocket.accept(subprotocol=allowed[1])
            await websocket.close(1007, "since= is not a base64 state vector")
            node.hub.refused_input("events", 1007)
            return
    if await _route_websocket(websocket, doc_id, write=False) is None:
        return
    await serve_events(websocket, node, doc_id, since=raw, subprotocol=allowed[1])


@router.websocket("/v1/peer")
async def peer_link(websocket: WebSocket) -> None:
    """Node-to-node replication (cluster-secret authenticated; not for clients)."""
    node: Node = websocket.app.state.node
    if node.replicator is None:
        await websocket.close(1008, "this node replicates with no other node")
        return
    await node.replicator.accept(websocket)
