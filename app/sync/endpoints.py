"""The client WebSocket endpoints: ``/v1/sync/{id}`` (y-websocket) and ``/v1/docs/{id}/events``
(a JSON stream). Thin loops around :mod:`app.sync.protocol` and the :class:`~app.sync.hub.Hub`.

Close codes: 1002 a frame that is not the protocol, 1003 a text frame where binary is
expected, 1007 an invalid update or awareness message, 1008 not allowed (token; the sync
endpoint first sends the protocol's permission-denied message), 1009 a message over
``clients.max_message_bytes``, 1013 too many connections or a subscriber too slow, 4400 an
invalid document id, 4404 the document was deleted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from crdt import EMPTY_STATE_VECTOR, CrdtError, InvalidUpdate, LimitExceeded, check_document_id

from ..codec import close_reason
from . import protocol as p
from .awareness import AwarenessError
from .hub import Kind, Subscriber

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["serve_events", "serve_sync"]

log = logging.getLogger("meridian.clients")

#: Updates of one connection being applied and committed at once (pipelined, in order).
_UPDATES_IN_FLIGHT = 64
#: An update with no structs and no deletions (what clients send as an empty step 2).
_EMPTY_UPDATE = b"\x00\x00"


async def _open(
    websocket: WebSocket, node: Node, doc_id: str, kind: Kind, subprotocol: str | None
) -> Subscriber | None:
    """Accepts the connection and registers its subscriber; None when it was refused."""
    await websocket.accept(subprotocol=subprotocol)
    limits = node.settings.cluster.clients
    try:
        check_document_id(doc_id)
    except CrdtError as exc:
        node.hub.refused_input(kind, 4400)
        await websocket.close(4400, close_reason(str(exc)))
        return None
    hub = node.hub
    if hub.connections() >= limits.max_connections:
        await websocket.close(1013, f"too many connections (limit {limits.max_connections})")
        return None
    subscriber = Subscriber(websocket, doc_id, kind, limits.max_buffer_bytes)
    hub.subscribe(subscriber)
    return subscriber


async def _frames(websocket: WebSocket, subscriber: Subscriber, limit: int) -> Any:
    """Received frames (bytes or str) until the client leaves or the subscriber closes."""
    while subscriber.closing is None:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            data = message.get("text") or ""
        if len(data) > limit:
            subscriber.close(1009, f"message of {len(data)} bytes, limit {limit}")
            return
        yield data


async def serve_sync(
    websocket: WebSocket,
    node: Node,
    doc_id: str,
    *,
    can_write: bool,
    subprotocol: str | None,
    hint: bool = False,
    floor: int = 0,
) -> None:
    """Serves one y-websocket client of ``doc_id`` until it leaves; with ``hint``, its
    updates are kept here for the document's unreachable holders (a hint), in ``floor``'s
    incarnation at least (see :meth:`DocumentStore.apply_update`)."""
    subscriber = await _open(websocket, node, doc_id, "sync", subprotocol)
    if subscriber is None:
        return
    store, hub = node.store, node.hub
    state = await store.lookup(doc_id)
    live = state is not None and not state.deleted
    subscriber.send_nowait(
        p.encode_sync_step1(state.document.state_vector() if state and live else EMPTY_STATE_VECTOR)
    )
    awareness = hub.awareness_states(doc_id)
    if awareness is not None:
        subscriber.send_nowait(p.encode_awareness(awareness))
    slots = asyncio.Semaphore(_UPDATES_IN_FLIGHT)
    applying: set[asyncio.Task[None]] = set()

    async def apply(update: bytes, applied: asyncio.Event) -> None:
        try:
            await store.apply_update(
                doc_id, update, origin=subscriber, on_applied=applied.set, hint=hint, floor=floor
            )
        except (InvalidUpdate, LimitExceeded) as exc:
            too_big = isinstance(exc, LimitExceeded) and exc.limit != "max_nesting"
            code = 1009 if too_big else 1007
            log.info("sync client of %s sent a refused update: %s", doc_id, exc)
            subscriber.close(code, str(exc))
        except CrdtError as exc:
            subscriber.close(1011, f"could not store the update: {exc}")
        finally:
            applied.set()
            slots.release()

    async def read() -> None:
        limit = node.settings.cluster.clients.max_message_bytes
        async for frame in _frames(websocket, subscriber, limit):
            if isinstance(frame, str):
                subscriber.close(1003, "y-websocket messages are binary frames")
                return
            try:
                message = p.decode(frame)
            except p.SyncProtocolError as exc:
                subscriber.close(1002, str(exc))
                return
            if isinstance(message, p.SyncStep1):
                await _answer_step1(node, subscriber, doc_id, message.state_vector)
            elif isinstance(message, p.SyncStep2 | p.SyncUpdate):
                if message.update == _EMPTY_UPDATE:
                    continue
                if not can_write:
                    subscriber.send_nowait(p.encode_permission_denied("this token cannot write"))
                    subscriber.close(1008, "read-only token: updates are refused", flush=True)
                    return
                # Applied in order (an update may depend on the previous one), committed
                # in parallel (group commit): the next frame is read once this one is in
                # memory, not once it is on disk.
                await slots.acquire()
                applied = asyncio.Event()
                task = asyncio.ensure_future(apply(message.update, applied))
                applying.add(task)
                task.add_done_callback(applying.discard)
                await applied.wait()
            elif isinstance(message, p.AwarenessMessage):
                try:
                    hub.apply_awareness(doc_id, message.update, subscriber)
                except AwarenessError as exc:
                    subscriber.close(1007, str(exc))
                    return
            else:
                states = hub.awareness_states(doc_id)
                if states is not None:
                    subscriber.send_nowait(p.encode_awareness(states))

    try:
        await subscriber.serve(read())
    finally:
        hub.unsubscribe(subscriber)
        # Updates received are committed even if the client left meanwhile.
        await asyncio.gather(*applying, return_exceptions=True)


async def _answer_step1(
    node: Node, subscriber: Subscriber, doc_id: str, state_vector: bytes
) -> None:
    state = await node.store.lookup(doc_id)
    if state is None or state.deleted:
        subscriber.send_nowait(p.encode_sync_step2(_EMPTY_UPDATE))
        return
    try:
        update = state.document.encode_state(state_vector)
    except InvalidUpdate as exc:
        subscriber.close(1007, f"invalid state vector: {exc}")
        return
    subscriber.send_nowait(p.encode_sync_step2(update))


async def serve_events(
    websocket: WebSocket, node: Node, doc_id: str, *, since: bytes | None, subprotocol: str | None
) -> None:
    """A JSON snapshot of ``doc_id`` (or ``resumed`` when ``since`` is its current state
    vector), then a message with the new content after every change."""
    subscriber = await _open(websocket, node, doc_id, "events", subprotocol)
    if subscriber is None:
        return
    hub = node.hub
    state = await node.store.lookup(doc_id)
    if state is None:
        empty = {"type": "snapshot", "id": doc_id, "incarnation": 0, "content": {}}
        subscriber.send_nowait(json.dumps({**empty, "state_vector": "AA=="}))
    elif since is not None and not state.deleted and state.document.state_vector() == since:
        subscriber.send_nowait(hub.event_message(doc_id, state, "resumed"))
    else:
        subscriber.send_nowait(hub.event_message(doc_id, state, "snapshot"))

    async def read() -> None:
        async for _ in _frames(websocket, subscriber, 4096):
            pass  # the stream is one-way; anything sent is ignored

    try:
        await subscriber.serve(read())
    finally:
        hub.unsubscribe(subscriber)
