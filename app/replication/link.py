"""The transport around :class:`~app.replication.protocol.PeerProtocol`: a WebSocket, either
dialled with the ``websockets`` client or accepted by the node's ``WS /v1/peer`` endpoint.

:class:`PeerLink` is the thin loop of the sans-I/O design: frames received are fed to the
protocol, frames the protocol wants sent are sent (one sender at a time), events come out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

import websockets
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..codec import close_reason
from . import messages as m
from .protocol import Closed, Event, Opened, PeerProtocol, State

__all__ = [
    "ClientTransport",
    "LinkClosed",
    "PeerLink",
    "ServerTransport",
    "Transport",
    "dial",
]

log = logging.getLogger("meridian.peer")

#: WebSocket close codes: normal, protocol error, policy violation (refused).
_CLOSE_CODES = {"closed": 1000, "shutdown": 1001, "protocol_error": 1002}


class LinkClosed(Exception):
    """The connection is gone (closed by either side, or broken)."""


class LinkRefused(LinkClosed):
    """The handshake ended with a refusal (either side's ``Refuse``) or timed out; a
    connection that merely dropped during the handshake is a plain :class:`LinkClosed`."""


class Transport(Protocol):
    async def recv(self) -> bytes: ...
    async def send(self, frame: bytes) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


class ClientTransport:
    """A connection dialled with the ``websockets`` client."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def recv(self) -> bytes:
        try:
            frame = await self._connection.recv()
        except websockets.ConnectionClosed as exc:
            raise LinkClosed(str(exc)) from None
        if isinstance(frame, str):
            return b"\xff"  # a text frame: decodes as an unknown message type
        return bytes(frame)

    async def send(self, frame: bytes) -> None:
        try:
            await self._connection.send(frame)
        except websockets.ConnectionClosed as exc:
            raise LinkClosed(str(exc)) from None

    async def close(self, code: int, reason: str) -> None:
        await self._connection.close(code, close_reason(reason))


class ServerTransport:
    """A connection accepted by the ``WS /v1/peer`` endpoint (Starlette)."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def recv(self) -> bytes:
        message = await self._websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise LinkClosed(f"peer disconnected ({message.get('code')})")
        data = message.get("bytes")
        return data if data is not None else b"\xff"

    async def send(self, frame: bytes) -> None:
        try:
            await self._websocket.send_bytes(frame)
        except (RuntimeError, OSError, WebSocketDisconnect) as exc:
            # The connection is gone (uvicorn's ClientDisconnected is an OSError).
            raise LinkClosed(str(exc) or type(exc).__name__) from None

    async def close(self, code: int, reason: str) -> None:
        if self._websocket.application_state is WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(RuntimeError, OSError):
            await self._websocket.close(code, close_reason(reason))


class PeerLink:
    """One connection to a peer: the protocol object and its transport."""

    def __init__(self, protocol: PeerProtocol, transport: Transport) -> None:
        self.protocol = protocol
        self.transport = transport
        # One frame is written at a time; senders wait their turn (this is the backpressure).
        self._send_lock = asyncio.Lock()
        self.frames_sent = 0
        self.frames_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        #: Why the link ended: (code, reason, by_peer).
        self.closed: Closed | None = None

    async def handshake(self, timeout: float) -> Opened:
        """Runs the handshake; returns Opened, or raises LinkClosed with the reason (the
        peer's Refuse, ours, or a timeout)."""
        if self.protocol.role == "dialer":
            self.protocol.start()
        try:
            async with asyncio.timeout(timeout):
                await self.flush()
                while True:
                    for event in await self._receive():
                        if isinstance(event, Opened):
                            return event
                        if isinstance(event, Closed):
                            await self._finish(event)
                            raise LinkRefused(f"{event.code}: {event.reason}")
        except TimeoutError:
            await self.close("handshake_timeout", f"no handshake within {timeout:.1f}s")
            raise LinkRefused(f"handshake_timeout: no handshake within {timeout:.1f}s") from None

    async def events(self) -> AsyncIterator[Event]:
        """Events of the open link until it closes (the last one is Closed)."""
        while self.protocol.state is State.OPEN:
            try:
                events = await self._receive()
            except LinkClosed as exc:
                if self.closed is None:  # not closed by either side's message: broken
                    self.closed = Closed("connection_lost", str(exc) or "connection lost", True)
                yield self.closed
                return
            for event in events:
                if isinstance(event, Closed):
                    await self._finish(event)
                yield event

    async def send(self, message: m.Message) -> None:
        """Sends an application message; raises LinkClosed when the link is not open."""
        self.send_nowait(message)
        await self.flush()

    def send_nowait(self, message: m.Message) -> None:
        """Queues an application message for the next :meth:`flush`; raises LinkClosed when
        the link is not open (it closed under the sender: a normal event, not a bug)."""
        try:
            self.protocol.send(message)
        except m.ProtocolError as exc:
            raise LinkClosed(str(exc)) from None

    async def flush(self) -> None:
        async with self._send_lock:
            for frame in self.protocol.data_to_send():
                await self.transport.send(frame)
                self.frames_sent += 1
                self.bytes_sent += len(frame)

    async def close(self, code: str, reason: str) -> None:
        """Closes from this side, telling the peer why."""
        self.protocol.close(code, reason)
        for event in self.protocol.events_received():
            if isinstance(event, Closed):
                await self._finish(event)

    async def _receive(self) -> list[Event]:
        frame = await self.transport.recv()
        self.frames_received += 1
        self.bytes_received += len(frame)
        self.protocol.receive_data(frame)
        events = self.protocol.events_received()
        await self.flush()
        return events

    async def _finish(self, closed: Closed) -> None:
        self.closed = closed
        with _suppress_link_errors():
            await self.flush()
        with _suppress_link_errors():
            await self.transport.close(_CLOSE_CODES.get(closed.code, 1008), closed.reason)


def _suppress_link_errors() -> contextlib.suppress:
    return contextlib.suppress(LinkClosed, OSError, RuntimeError, websockets.ConnectionClosed)


async def dial(url: str, *, timeout: float, max_size: int) -> ClientTransport:
    """Opens a WebSocket to a peer's ``/v1/peer``; raises OSError / websockets errors /
    TimeoutError when it cannot."""
    connection = await websockets.connect(
        url,
        open_timeout=timeout,
        max_size=max_size,
        ping_interval=None,  # the protocol has its own heartbeats, measured as RTT
        # A link is closed because it went silent: do not wait long for a closing handshake.
        close_timeout=1.0,
        compression=None,
    )
    return ClientTransport(connection)
