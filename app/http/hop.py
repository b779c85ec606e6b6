"""The forwarding hop's HTTP/1.1 client: one request to a holder, its whole answer back.

The forwarding node talks to one kind of server only, another Meridian node's uvicorn, so the
client needs only what that takes: HTTP/1.1 with keep-alive, a ``Content-Length`` body out,
``Content-Length`` or chunked answers in (parsed by httptools, uvicorn's own parser), no
redirects, cookies, proxies, compression or TLS (the cluster's addresses; see
docs/operations.md for links over untrusted networks). A general client paid for what this
hop never uses: httpx took ~1.2 ms of the forwarding node's CPU per request, two thirds of
a forwarded read's (docs/benchmarks.md, "Placement").

Errors (:mod:`app.http.forward` maps them)::

    HopError
    ├── NotSent      no connection could be made: nothing reached the holder
    ├── HopTimeout   no whole answer within the time given; ``sent`` says whether the
    │                request was written to a connection (its outcome is then unknown)
    ├── Lost         the request was sent, then the connection ended or the answer could not
    │                be parsed: its outcome is unknown
    └── TooLarge     the answer's body is over ``max_body``
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, cast

import httptools

__all__ = ["HopAnswer", "HopError", "HopPool", "HopTimeout", "Lost", "NotSent", "TooLarge"]

#: Methods whose answer has no body, whatever its headers say.
_NO_BODY: Final = frozenset({"HEAD"})


class HopError(Exception):
    """Root of the hop's errors."""


class NotSent(HopError):
    """No connection to the holder could be made."""


class HopTimeout(HopError):
    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class Lost(HopError):
    """Sent, then the connection ended (or answered what cannot be parsed)."""


class TooLarge(HopError):
    """The answer's body is over the limit."""


@dataclass(frozen=True, slots=True)
class HopAnswer:
    status: int
    #: As sent, names lower-cased, in order.
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection: a request written, its answer parsed as it arrives."""

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        # The answer being read, and who waits for it.
        self._waiter: asyncio.Future[HopAnswer] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._no_body = False
        self.closed = False
        #: When it was last given back to the pool (monotonic seconds).
        self.idle_since = 0.0

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: this connection cannot be trusted again
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Lost("the holder switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(Lost(f"the holder's answer cannot be parsed ({exc})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(Lost("the connection to the holder was lost"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self._no_body:
            self.on_message_complete()
            self.close()  # the parser would wait for the body the headers announce

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._fail(TooLarge(f"the answer is over the {self._max_body}-byte limit"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            status = self._parser.get_status_code()
            waiter.set_result(HopAnswer(status, self._headers, b"".join(self._body)))
        if not self._parser.should_keep_alive():
            self.close()

    # -- the pool's side -------------------------------------------------------------------

    def exchange(self, request: bytes, *, no_body: bool) -> asyncio.Future[HopAnswer]:
        """Writes ``request``; the returned future gets the whole answer."""
        assert self._transport is not None and not self.closed
        self._waiter = asyncio.get_running_loop().create_future()
        self._headers, self._body, self._size, self._no_body = [], [], 0, no_body
        self._transport.write(request)
        return self._waiter

    def reusable(self) -> bool:
        return not self.closed and self._waiter is not None and self._waiter.done()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _fail(self, error: HopError) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.close()


class HopPool:
    """Keep-alive connections to the holders, reused one request at a time; at most
    ``max_connections`` in all (further requests wait for one), idle ones closed after
    ``keepalive_expiry`` seconds (before the holder's uvicorn closes them: 5 s)."""

    def __init__(
        self,
        *,
        max_body: int,
        max_connections: int = 256,
        keepalive_expiry: float = 4.0,
        user_agent: str = "",
    ) -> None:
        self._max_body = max_body
        self._expiry = keepalive_expiry
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, int], collections.deque[_Connection]] = {}
        self._user_agent = user_agent.encode()
        self._busy: set[_Connection] = set()

    async def request(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        *,
        timeout: float,
    ) -> HopAnswer:
        """Sends ``method target`` with ``headers`` and ``body`` to ``host:port`` and returns
        the answer, all within ``timeout`` seconds. Raises :class:`NotSent`,
        :class:`HopTimeout`, :class:`Lost` or :class:`TooLarge`."""
        message = self._encode(host, port, method, target, headers, body)
        sent = False
        try:
            async with asyncio.timeout(timeout), self._slots:
                connection = await self._acquire(host, port)
                self._busy.add(connection)
                try:
                    answer = connection.exchange(message, no_body=method.upper() in _NO_BODY)
                    sent = True
                    result = await answer
                except BaseException:
                    connection.close()  # its state is unknown: never reused
                    raise
                finally:
                    self._busy.discard(connection)
                self._release(host, port, connection)
                return result
        except TimeoutError:
            raise HopTimeout(f"no answer within {timeout:g}s", sent=sent) from None

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()

    async def _acquire(self, host: str, port: int) -> _Connection:
        idle = self._idle.get((host, port))
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be stale
            if connection.reusable() and now - connection.idle_since < self._expiry:
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        max_body = self._max_body
        try:
            _, protocol = await loop.create_connection(lambda: _Connection(max_body), host, port)
        except OSError as exc:
            raise NotSent(f"cannot connect to {host}:{port} ({exc.strerror or exc})") from exc
        return protocol

    def _release(self, host: str, port: int, connection: _Connection) -> None:
        if not connection.reusable():
            return
        connection.idle_since = time.monotonic()
        idle = self._idle.setdefault((host, port), collections.deque())
        idle.append(connection)
        # Expired ones at the other end go now rather than on a later acquire.
        while idle and connection.idle_since - idle[0].idle_since >= self._expiry:
            idle.popleft().close()

    def _encode(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
    ) -> bytes:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        headers = list(headers)
        if any(b"\r" in name + value or b"\n" in name + value for name, value in headers):
            raise ValueError("a header name or value with a line break")
        lines = [
            f"{method} {target} HTTP/1.1\r\nhost: {authority}\r\n".encode("ascii"),
            b"user-agent: %s\r\naccept-encoding: identity\r\n" % self._user_agent,
        ]
        lines += [b"%s: %s\r\n" % (name, value) for name, value in headers]
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        lines.append(body)
        return b"".join(lines)
