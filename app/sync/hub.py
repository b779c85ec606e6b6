"""Live clients of a node: who follows which document, and the fan-out of each change to them.

A committed change is encoded once per kind of subscriber (a y-websocket update frame; one
JSON render per burst of changes for event streams) and queued to each subscriber. Every
subscriber has a bounded buffer: one that falls too far behind is disconnected with close
code 1013 and a reason (it reconnects and resyncs); it never slows the others and memory stays
bounded. Awareness states live here too, per document, relayed to local clients and to peers.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from starlette.websockets import WebSocket

from crdt import Change, DocumentStore

from ..codec import close_reason
from . import protocol as p
from .awareness import Awareness, AwarenessError, encode_update

__all__ = ["CLOSE_TOO_SLOW", "AwarenessError", "Hub", "Subscriber"]

log = logging.getLogger("meridian.clients")

#: Close code for a subscriber that fell behind (RFC 6455: "try again later").
CLOSE_TOO_SLOW = 1013
#: A sync client that received nothing for this long gets a no-op message (y-websocket
#: clients reconnect after 30 s of silence).
KEEPALIVE_SECONDS = 10.0
#: Close codes that refuse a client's input (see :mod:`app.sync.endpoints`), by the reason
#: name statistics() and /metrics show.
REFUSED_INPUT = {
    1002: "protocol_error",
    1003: "text_frame",
    1007: "invalid_message",
    1009: "message_too_big",
    4400: "invalid_document_id",
    4401: "unauthorized",
    4403: "forbidden",
}

Kind = Literal["sync", "events"]


class Subscriber:
    """One client connection's outgoing side: a bounded queue drained by :meth:`run`."""

    def __init__(self, websocket: WebSocket, doc_id: str, kind: Kind, max_bytes: int) -> None:
        self.websocket = websocket
        self.doc_id = doc_id
        self.kind = kind
        self.max_bytes = max_bytes
        # Frames waiting to be written, and their total size.
        self._queue: collections.deque[bytes | str] = collections.deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        #: Why the hub closed it (code, reason), once it did.
        self.closing: tuple[int, str] | None = None
        #: Set once it is closing: the connection's handler stops waiting for the client.
        self.closed = asyncio.Event()
        self.last_sent = time.monotonic()
        self.sent = 0

    def send_nowait(self, frame: bytes | str) -> None:
        if self.closing is not None:
            return
        self._queue.append(frame)
        self._bytes += len(frame)
        if self._bytes > self.max_bytes:
            self.close(
                CLOSE_TOO_SLOW,
                f"too slow: {self._bytes} bytes waiting (limit {self.max_bytes}); reconnect",
            )
        self._ready.set()

    def close(self, code: int, reason: str, *, flush: bool = False) -> None:
        """Closes with ``code`` and ``reason``; ``flush`` sends what is queued first (a
        last message such as permission denied), else it is dropped."""
        if self.closing is None:
            self.closing = (code, reason)
            if not flush:
                self._queue.clear()
                self._bytes = 0
            self._ready.set()
            self.closed.set()

    async def run(self) -> None:
        """Writes queued frames until closed. A client that stops reading blocks this in a
        send; its handler then cancels this (see :meth:`serve`)."""
        while self.closing is None:
            await self._ready.wait()
            self._ready.clear()
            while self._queue and self.closing is None:
                frame = self._queue.popleft()
                self._bytes -= len(frame)
                await self._send(frame)
                self.sent += 1
                self.last_sent = time.monotonic()

    async def _send(self, frame: bytes | str) -> None:
        if isinstance(frame, bytes):
            await self.websocket.send_bytes(frame)
        else:
            await self.websocket.send_text(frame)

    async def serve(self, reader: Coroutine[Any, Any, None]) -> None:
        """Runs ``reader`` (the client's messages) and the writer until either ends or the
        subscriber is closed; then closes the connection with the reason, giving up after a
        second if the client does not read (the server then drops the connection)."""
        tasks = {
            asyncio.ensure_future(reader),
            asyncio.ensure_future(self.run()),
            asyncio.ensure_future(self.closed.wait()),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        code, reason = self.closing or (1000, "goodbye")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                while self._queue:
                    await self._send(self._queue.popleft())
                await self.websocket.close(code, close_reason(reason))


class Hub:
    """The live clients of one node. Create in the lifespan; :meth:`aclose` at the end."""

    def __init__(self, store: DocumentStore, *, node: str, region: str) -> None:
        self.store = store
        self.node = node
        self.region = region
        self._subscribers: dict[str, set[Subscriber]] = collections.defaultdict(set)
        self._awareness: dict[str, Awareness] = {}
        # Documents whose event streams need a fresh render, and the origin of the last change.
        self._dirty: dict[str, object] = {}
        #: Sends an awareness update to the peers (set by the replicator): (doc_id, update).
        self.relay_awareness: Callable[[str, bytes], None] | None = None
        #: Region of a peer node, for the events' "region" (set by the replicator).
        self.region_of: Callable[[str], str | None] = lambda node: None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe = store.subscribe(self._on_change)
        self._spawn(self._housekeeping())
        self.disconnected_slow = 0
        # Connections closed for bad input, by (endpoint, reason of REFUSED_INPUT).
        self._refused: collections.Counter[tuple[Kind, str]] = collections.Counter()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        self._unsubscribe()
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                subscriber.close(1001, "the node is shutting down")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers[subscriber.doc_id].add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        doc_id = subscriber.doc_id
        subscribers = self._subscribers.get(doc_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._subscribers[doc_id]
        if subscriber.closing is not None and subscriber.closing[0] == CLOSE_TOO_SLOW:
            self.disconnected_slow += 1
        if subscriber.closing is not None:
            self.refused_input(subscriber.kind, subscriber.closing[0])
        awareness = self._awareness.get(doc_id)
        if awareness is not None:
            removal = awareness.remove_owner(subscriber)
            if removal is not None:
                self._broadcast_awareness(doc_id, removal, origin=subscriber)

    def statistics(self) -> dict[str, Any]:
        return {
            "documents_followed": len(self._subscribers),
            "sync_clients": sum(
                1 for subs in self._subscribers.values() for s in subs if s.kind == "sync"
            ),
            "event_streams": sum(
                1 for subs in self._subscribers.values() for s in subs if s.kind == "events"
            ),
            "disconnected_slow": self.disconnected_slow,
            "refused_input": {
                kind: {r: n for (k, r), n in sorted(self._refused.items()) if k == kind}
                for kind in ("sync", "events")
            },
        }

    def refused_input(self, kind: Kind, code: int) -> None:
        """Counts a connection closed with ``code``, when that code refuses bad input."""
        reason = REFUSED_INPUT.get(code)
        if reason is not None:
            self._refused[(kind, reason)] += 1

    def followed(self, doc_id: str) -> bool:
        """Whether a live client here follows ``doc_id`` (its copy must stay)."""
        return bool(self._subscribers.get(doc_id))

    def release(self, doc_id: str, reason: str) -> int:
        """Closes every live client of ``doc_id`` here with 1012 (service restart: they
        reconnect, and another node serves them); returns how many."""
        subscribers = list(self._subscribers.get(doc_id, ()))
        for subscriber in subscribers:
            subscriber.close(1012, reason, flush=True)
        return len(subscribers)

    def connections(self) -> int:
        return sum(len(subs) for subs in self._subscribers.values())

    # -- fan-out ----------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        subscribers = self._subscribers.get(change.doc_id)
        if not subscribers:
            return
        if change.update is None:
            for subscriber in list(subscribers):
                if subscriber.kind == "sync":
                    subscriber.close(4404, "the document was deleted")
        else:
            frame = p.encode_update(change.update)  # encoded once for every sync client
            for subscriber in subscribers:
                if subscriber.kind == "sync" and subscriber is not change.origin:
                    subscriber.send_nowait(frame)
        if any(s.kind == "events" for s in subscribers):
            first = change.doc_id not in self._dirty
            self._dirty[change.doc_id] = change.origin
            if first:
                self._spawn(self._render(change.doc_id))

    async def _render(self, doc_id: str) -> None:
        """Sends every event stream of ``doc_id`` its new content, rendered once for all and
        for every change that arrived since the last render."""
        await asyncio.sleep(0)  # let a burst of commits land first
        origin = self._dirty.pop(doc_id, None)
        subscribers = [s for s in self._subscribers.get(doc_id, ()) if s.kind == "events"]
        if not subscribers:
            return
        state = await self.store.lookup(doc_id)
        if state is None:
            return
        message = self.event_message(doc_id, state, "change", origin)
        for subscriber in subscribers:
            subscriber.send_nowait(message)

    def event_message(self, doc_id: str, state: Any, kind: str, origin: object = None) -> str:
        node = getattr(origin, "node", None)
        region = (self.region_of(node) if node else None) or self.region
        body: dict[str, Any] = {
            "type": "deleted" if state.deleted else kind,
            "id": doc_id,
            "incarnation": state.incarnation,
            "region": region,
            "node": node or self.node,
        }
        if not state.deleted:
            document = state.document
            body["state_vector"] = _b64(document.state_vector())
            body["content"] = document.to_json()
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    # -- awareness ----------------------------------------------------------------------

    def awareness_states(self, doc_id: str) -> bytes | None:
        awareness = self._awareness.get(doc_id)
        return awareness.encode_all() if awareness is not None else None

    def apply_awareness(self, doc_id: str, update: bytes, origin: object) -> None:
        """An awareness update from a local client (``origin`` its Subscriber) or a peer
        (``origin`` its node id); raises AwarenessError for bytes that are not one."""
        awareness = self._awareness.get(doc_id)
        if awareness is None:
            awareness = self._awareness[doc_id] = Awareness()
        changed = awareness.apply(update, origin)
        if changed is not None:
            self._broadcast_awareness(doc_id, changed, origin)

    def peer_gone(self, node: str) -> None:
        """A peer link closed: the states it relayed are removed for local clients."""
        for doc_id, awareness in list(self._awareness.items()):
            removal = awareness.remove_owner(node)
            if removal is not None:
                self._broadcast_awareness(doc_id, removal, origin=node)

    def _broadcast_awareness(self, doc_id: str, update: bytes, origin: object) -> None:
        frame = p.encode_awareness(update)
        for subscriber in self._subscribers.get(doc_id, ()):
            if subscriber.kind == "sync" and subscriber is not origin:
                subscriber.send_nowait(frame)
        if not isinstance(origin, str) and self.relay_awareness is not None:
            self.relay_awareness(doc_id, update)

    async def _housekeeping(self) -> None:
        keepalive = p.encode_awareness(encode_update([]))
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS / 2)
            now = time.monotonic()
            for doc_id, awareness in list(self._awareness.items()):
                awareness.expire()
                if not len(awareness) and doc_id not in self._subscribers:
                    del self._awareness[doc_id]
            for subscribers in self._subscribers.values():
                for subscriber in subscribers:
                    if subscriber.kind == "sync" and now - subscriber.last_sent > KEEPALIVE_SECONDS:
                        subscriber.send_nowait(keepalive)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
