"""WebSockets kept open through a batch (:class:`Watcher`): they see every kind of write to
their documents as a real subscriber does, and check what the node sends them."""

from __future__ import annotations

import contextlib
import json
import threading

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app.sync.protocol import SyncProtocolError, SyncStep2, SyncUpdate, decode
from crdt import CrdtError, Document

from .wire import CLIENT_LOG, TIMEOUT

__all__ = ["Watcher"]


class Watcher:
    """A WebSocket kept open through a batch, reading everything the node sends: an events
    stream (each message a JSON event of its document) or a y-websocket client (each update
    must apply to a copy: a node must never relay what its own engine refuses). Closed, and
    judged, at the end of the batch."""

    def __init__(self, host: str, port: int, kind: str, doc: str, headers: dict[str, str]) -> None:
        self.kind = kind
        self.doc = doc
        path = f"/v1/docs/{doc}/events" if kind == "events" else f"/v1/sync/{doc}"
        self.target = path
        self.problem: str | None = None
        self.messages = 0
        self.close_code: int | None = None
        # What the sync client was sent, applied: every update must apply.
        self._copy = Document(doc)
        # Closed by stop() (a connection is used as a context manager, as websockets wants).
        self._stack = contextlib.ExitStack()
        self._ws = self._stack.enter_context(
            connect(
                f"ws://{host}:{port}{path}",
                additional_headers=headers,
                compression=None,
                proxy=None,
                open_timeout=TIMEOUT,
                close_timeout=TIMEOUT,
                ping_interval=None,
                max_size=None,
                logger=CLIENT_LOG,
            )
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self._ws:
                self.messages += 1
                if self.problem is None:
                    self.problem = self._wrong(message)
        except ConnectionClosed:
            pass
        received = self._ws.protocol.close_rcvd
        self.close_code = received.code if received is not None else 1006

    def _wrong(self, message: str | bytes) -> str | None:
        if self.kind == "events":
            try:
                event = json.loads(message)
            except (TypeError, ValueError):
                return f"an events message that is not JSON: {message[:100]!r}"
            if event.get("id") != self.doc or not isinstance(event.get("type"), str):
                return f"an events message of another document: {str(event)[:200]}"
            return None
        if not isinstance(message, bytes) or message[:1] not in (b"\x00", b"\x01", b"\x03"):
            return f"a y-websocket message a client cannot read: {message[:40]!r}"
        if message[:2] in (b"\x00\x01", b"\x00\x02"):
            try:
                decoded = decode(message)
            except SyncProtocolError as exc:
                return f"a sync message that does not decode: {exc}"
            if isinstance(decoded, SyncStep2 | SyncUpdate):
                try:
                    self._copy.apply_update(decoded.update)
                except CrdtError as exc:
                    return f"the node relayed an update its engine refuses: {exc}"
        return None

    def stop(self) -> str | None:
        """Closes the connection; what was wrong, if anything."""
        with contextlib.suppress(ConnectionClosed):
            self._stack.close()
        self._thread.join(TIMEOUT)
        if self._thread.is_alive():
            return f"{self.kind} watcher of {self.doc}: its reader did not stop"
        if self.close_code in (1011, 1006):
            return f"{self.kind} watcher of {self.doc} was closed with {self.close_code}"
        return self.problem
