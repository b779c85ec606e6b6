"""A WAN emulator in the application layer: TCP proxies that add latency and cut links.

Why here: the test and demo machines' kernels have no ``netem`` (``tc qdisc ... netem delay``),
so geo-distribution is emulated by putting a :class:`LinkProxy` between two nodes and making
each node dial its peers through the proxies. :class:`WanEmulator` names the proxies by region
pair and cuts, isolates and heals regions.

Semantics of one :class:`LinkProxy` (``forward`` = client→target, ``backward`` = target→client):

- Every chunk read arrives after ``latency_ms`` plus a uniform jitter in ``[-jitter, +jitter]``
  (never below zero), and never before a chunk read earlier in the same direction: jitter
  varies the delay but never reorders a byte stream. Reading goes on while chunks wait, so a
  steady stream sees the latency once, not once per chunk.
- At most ~4 MiB waits per direction; above that the proxy stops reading (TCP backpressure)
  until the queue drains below 1 MiB.
- A cut direction is a blackhole: bytes sent into it, or still in flight when it is cut, are
  discarded and counted; connections stay open and new ones are still accepted. Unlike a real
  partition (where TCP retransmits after healing) discarded bytes are gone, so a stream that
  lost bytes is damaged: the protocol above must notice (framing, checksums) or reconnect.
  An end of stream (EOF) waits while its direction is cut and is delivered after restore.
- EOF on one side half-closes the other after the queued bytes; the connection closes when
  both directions ended. A connection error on either side, or :meth:`LinkProxy.aclose`,
  resets both (RST, so neither mistakes it for an orderly close). If the target refuses,
  the accepted client connection is closed.

Errors: :class:`ValueError` for bad arguments, :class:`RuntimeError` for lifecycle misuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, Self

__all__ = [
    "LinkProxy",
    "LinkStatistics",
    "Direction",
    "HIGH_WATER",
    "LOW_WATER",
    "WanEmulator",
    "WanLink",
    "WanStatistics",
]

log = logging.getLogger("meridian.wan")

Direction = Literal["both", "forward", "backward"]
_Way = Literal["forward", "backward"]
_WAYS: Final[tuple[_Way, _Way]] = ("forward", "backward")
HIGH_WATER: Final = 4 * 1024 * 1024
LOW_WATER: Final = 1024 * 1024
_CHUNK: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    name: str
    connections_accepted: int
    open_connections: int
    #: Connections whose target refused, or that ended with an error (both sides reset).
    connections_failed: int
    bytes_forward: int
    bytes_backward: int
    bytes_dropped_forward: int
    bytes_dropped_backward: int
    #: Bytes read but not yet delivered, summed over the open connections.
    bytes_queued_forward: int
    bytes_queued_backward: int
    cut_forward: bool
    cut_backward: bool
    latency_ms: float
    jitter_ms: float


class _DelayLine:
    """One direction's schedule, without I/O: chunks and their release times, in order."""

    def __init__(self) -> None:
        # (release time, chunk); release times never decrease, so the head is next.
        self.items: deque[tuple[float, bytes]] = deque()
        self.queued_bytes = 0
        # Release time of the last chunk pushed: a later chunk never overtakes it.
        self.last_release = float("-inf")

    def push(self, chunk: bytes, now: float, delay: float) -> float:
        """Queues ``chunk`` (``b""`` for EOF) read at ``now``; returns its release time."""
        release = max(self.last_release, now + max(0.0, delay))
        self.last_release = release
        self.items.append((release, chunk))
        self.queued_bytes += len(chunk)
        return release

    def pop(self) -> bytes:
        """Removes and returns the head chunk; raises IndexError when empty."""
        _, chunk = self.items.popleft()
        self.queued_bytes -= len(chunk)
        return chunk


class _Pipe:
    """One direction of one proxied connection: a reader task and a sender task."""

    def __init__(
        self,
        proxy: LinkProxy,
        way: _Way,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.proxy, self.way, self.reader, self.writer = proxy, way, reader, writer
        self.line = _DelayLine()
        # Set when the line has chunks: wakes the sender.
        self.ready = asyncio.Event()
        # Set when the line is below the low watermark: wakes a reader held by backpressure.
        self.drained = asyncio.Event()
        self.drained.set()

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.drained.wait()
            chunk = await self.reader.read(_CHUNK)
            if chunk and self.proxy.is_cut(self.way):
                self.proxy._dropped[self.way] += len(chunk)
                continue
            self.line.push(chunk, loop.time(), self.proxy._next_delay())
            self.ready.set()
            if self.line.queued_bytes > HIGH_WATER:
                self.drained.clear()
            if not chunk:
                return

    async def send(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.ready.wait()
            release, _ = self.line.items[0]
            if (delay := release - loop.time()) > 0:
                await asyncio.sleep(delay)
            chunk = self.line.pop()
            if not self.line.items:
                self.ready.clear()
            if self.line.queued_bytes <= LOW_WATER:
                self.drained.set()
            if not chunk:
                await self.proxy._flowing[self.way].wait()
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                return
            if self.proxy.is_cut(self.way):
                self.proxy._dropped[self.way] += len(chunk)
                continue
            self.writer.write(chunk)
            await self.writer.drain()
            self.proxy._delivered[self.way] += len(chunk)


class LinkProxy:
    """A TCP proxy to ``target`` adding one-way latency and jitter, and able to cut directions.

    Call :meth:`start` (or use ``async with``) before connecting to :attr:`address`, and
    :meth:`aclose` when done. ``seed`` makes the jitter reproducible.
    Raises ValueError for a negative latency or jitter.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        latency_ms: float,
        jitter_ms: float = 0.0,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        seed: int | None = None,
        name: str = "",
    ) -> None:
        self.target, self.listen, self.name = target, listen, name or f"proxy->{target[1]}"
        self._latency_ms, self._jitter_ms = 0.0, 0.0
        self.set_latency(latency_ms, jitter_ms)
        self._random = random.Random(seed)
        self._server: asyncio.Server | None = None
        # Set while a direction flows; cleared while it is cut (EOFs wait on it).
        self._flowing = {way: asyncio.Event() for way in _WAYS}
        for event in self._flowing.values():
            event.set()
        # One task per accepted connection, owned here and cancelled by aclose().
        self._tasks: set[asyncio.Task[None]] = set()
        self._pipes: set[_Pipe] = set()
        self._closing = False
        self._accepted = 0
        self._failed = 0
        self._delivered = dict.fromkeys(_WAYS, 0)
        self._dropped = dict.fromkeys(_WAYS, 0)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); raises RuntimeError before :meth:`start`."""
        if self._server is None:
            raise RuntimeError(f"{self.name}: not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> None:
        """Binds and starts accepting; raises RuntimeError if already started, OSError on bind."""
        if self._server is not None or self._closing:
            raise RuntimeError(f"{self.name}: already started or closed")
        self._server = await asyncio.start_server(self._accept, *self.listen)

    def set_latency(self, latency_ms: float, jitter_ms: float | None = None) -> None:
        """Changes the delay of chunks read from now on; raises ValueError if negative."""
        jitter_ms = self._jitter_ms if jitter_ms is None else jitter_ms
        if latency_ms < 0 or jitter_ms < 0:
            raise ValueError("latency_ms and jitter_ms must be >= 0")
        self._latency_ms, self._jitter_ms = latency_ms, jitter_ms

    def cut(self, direction: Direction = "both") -> None:
        """Discards bytes travelling in ``direction`` (including those in flight) until restore."""
        for way in _ways(direction):
            self._flowing[way].clear()

    def restore(self, direction: Direction = "both") -> None:
        """Lets bytes read from now on (and pending EOFs) flow again in ``direction``."""
        for way in _ways(direction):
            self._flowing[way].set()

    def is_cut(self, direction: Direction) -> bool:
        """True if ``direction`` is cut (for "both": if both directions are)."""
        return all(not self._flowing[way].is_set() for way in _ways(direction))

    def statistics(self) -> LinkStatistics:
        queued = {w: sum(p.line.queued_bytes for p in self._pipes if p.way == w) for w in _WAYS}
        return LinkStatistics(
            name=self.name,
            connections_accepted=self._accepted,
            open_connections=len(self._tasks),
            connections_failed=self._failed,
            bytes_forward=self._delivered["forward"],
            bytes_backward=self._delivered["backward"],
            bytes_dropped_forward=self._dropped["forward"],
            bytes_dropped_backward=self._dropped["backward"],
            bytes_queued_forward=queued["forward"],
            bytes_queued_backward=queued["backward"],
            cut_forward=self.is_cut("forward"),
            cut_backward=self.is_cut("backward"),
            latency_ms=self._latency_ms,
            jitter_ms=self._jitter_ms,
        )

    async def aclose(self) -> None:
        """Stops listening, aborts every connection and awaits every task. Idempotent."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _next_delay(self) -> float:
        jitter = self._random.uniform(-self._jitter_ms, self._jitter_ms) if self._jitter_ms else 0.0
        return max(0.0, self._latency_ms + jitter) / 1000.0

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.transport.abort()
            return
        self._accepted += 1
        task = asyncio.create_task(self._serve(reader, writer), name=f"{self.name} connection")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        writers, clean = [client_w], False
        try:
            try:
                target_r, target_w = await asyncio.open_connection(*self.target)
            except OSError as exc:
                log.info("x connect %s target=%s:%s: %s", self.name, *self.target, exc)
                self._failed += 1
                clean = True
                return
            writers.append(target_w)
            pipes = (
                _Pipe(self, "forward", client_r, target_w),
                _Pipe(self, "backward", target_r, client_w),
            )
            clean = await self._relay(pipes)
        finally:
            for writer in writers:
                if clean:
                    writer.close()
                else:
                    _reset(writer)
            for writer in writers:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def _relay(self, pipes: tuple[_Pipe, _Pipe]) -> bool:
        """Runs both directions until both ended (True) or one failed (False)."""
        self._pipes.update(pipes)
        tasks = [asyncio.create_task(p.read()) for p in pipes]
        tasks += [asyncio.create_task(p.send()) for p in pipes]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._pipes.difference_update(pipes)
        errors = [error for task in done if (error := task.exception()) is not None]
        for error in errors:
            log.info("x %s connection reset after %r", self.name, error)
        self._failed += bool(errors)
        return not errors


def _reset(writer: asyncio.StreamWriter) -> None:
    """Aborts with a TCP reset (SO_LINGER 0), so the peer sees an error and not an EOF."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _ways(direction: Direction) -> tuple[_Way, ...]:
    if direction == "both":
        return _WAYS
    if direction in _WAYS:
        return (direction,)
    raise ValueError(f"direction must be 'both', 'forward' or 'backward', not {direction!r}")


@dataclass(frozen=True, slots=True)
class WanLink:
    #: The region the proxy's clients are in, and the region of the node it forwards to.
    a_region: str
    b_region: str
    proxy: LinkProxy
    #: The node the proxy's clients are, and the node it forwards to ("" when not named):
    #: what :meth:`WanEmulator.isolate_node` cuts by.
    a_node: str = ""
    b_node: str = ""


@dataclass(frozen=True, slots=True)
class WanStatistics:
    links: tuple[LinkStatistics, ...]
    #: Directed (from region, to region) flows cut by cut(); isolate() is listed apart.
    cut_flows: frozenset[tuple[str, str]]
    isolated: frozenset[str]
    isolated_nodes: frozenset[str] = frozenset()


class WanEmulator:
    """Named :class:`LinkProxy` objects between regions, cut and healed by region pair.

    A flow "a→b" is the traffic going from region a to region b: the forward direction of
    links added as (a, b) and the backward direction of links added as (b, a). Cuts and
    isolations are kept per region pair, so links added later obey them too. A link added
    with the ``nodes`` at its ends can also be cut by node (:meth:`isolate_node`): the links
    between two nodes of one region go through an emulator only for that.
    """

    def __init__(self, *, seed: int | None = None) -> None:
        self._seed = seed
        self._links: list[WanLink] = []
        # Directed (from, to) region flows cut by cut(), undone by restore() or heal().
        self._cut: set[tuple[str, str]] = set()
        # Regions cut from every other by isolate(), undone by rejoin() or heal().
        self._isolated: set[str] = set()
        # Nodes cut from every other by isolate_node(), undone by rejoin_node() or heal().
        self._isolated_nodes: set[str] = set()

    async def add_link(
        self,
        a_region: str,
        b_region: str,
        target: tuple[str, int],
        latency_ms: float,
        jitter_ms: float = 0,
        name: str = "",
        listen: tuple[str, int] = ("127.0.0.1", 0),
        nodes: tuple[str, str] = ("", ""),
    ) -> LinkProxy:
        """Starts a proxy for traffic from ``a_region`` to a node of ``b_region`` at ``target``,
        accepting on ``listen`` (a free loopback port by default); ``nodes`` names the node
        the proxy's clients are and the one at ``target``, for :meth:`isolate_node`.

        Connect the region-a client to the returned proxy's ``address``. Raises ValueError
        for a duplicate name or a negative latency, OSError if binding fails.
        """
        name = name or f"{a_region}->{b_region}#{len(self._links)}"
        if any(link.proxy.name == name for link in self._links):
            raise ValueError(f"a link named {name!r} exists")
        seed = None if self._seed is None else self._seed + len(self._links)
        proxy = LinkProxy(
            target,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            listen=listen,
            seed=seed,
            name=name,
        )
        await proxy.start()
        self._links.append(WanLink(a_region, b_region, proxy, *nodes))
        self._apply()
        return proxy

    def cut(self, a: str, b: str, *, one_way: bool = False) -> None:
        """Cuts the traffic between regions a and b; with ``one_way`` only the flow a→b."""
        self._cut.update({(a, b)} if one_way else {(a, b), (b, a)})
        self._apply()

    def restore(self, a: str, b: str, *, one_way: bool = False) -> None:
        """Undoes :meth:`cut` for a→b (and b→a unless ``one_way``); not :meth:`isolate`."""
        self._cut.difference_update({(a, b)} if one_way else {(a, b), (b, a)})
        self._apply()

    def isolate(self, region: str) -> None:
        """Cuts every flow between ``region`` and other regions (links inside it keep working)."""
        self._isolated.add(region)
        self._apply()

    def rejoin(self, region: str) -> None:
        """Undoes :meth:`isolate` for ``region`` (pair cuts stay)."""
        self._isolated.discard(region)
        self._apply()

    def isolate_node(self, node: str) -> None:
        """Cuts every link named with ``node`` at one of its ends (see :meth:`add_link`)."""
        self._isolated_nodes.add(node)
        self._apply()

    def rejoin_node(self, node: str) -> None:
        """Undoes :meth:`isolate_node` for ``node`` (region cuts stay)."""
        self._isolated_nodes.discard(node)
        self._apply()

    def heal(self) -> None:
        """Restores every flow: clears all cuts and isolations."""
        self._cut.clear()
        self._isolated.clear()
        self._isolated_nodes.clear()
        self._apply()

    def is_cut(self, a: str, b: str) -> bool:
        """True if traffic from region a to region b is cut."""
        isolated = a != b and (a in self._isolated or b in self._isolated)
        return isolated or (a, b) in self._cut

    def links(self) -> tuple[WanLink, ...]:
        return tuple(self._links)

    def statistics(self) -> WanStatistics:
        return WanStatistics(
            links=tuple(link.proxy.statistics() for link in self._links),
            cut_flows=frozenset(self._cut),
            isolated=frozenset(self._isolated),
            isolated_nodes=frozenset(self._isolated_nodes),
        )

    async def aclose(self) -> None:
        """Closes every proxy (concurrently) and forgets them."""
        links, self._links = self._links, []
        await asyncio.gather(*(link.proxy.aclose() for link in links))

    def _apply(self) -> None:
        for link in self._links:
            a, b, proxy = link.a_region, link.b_region, link.proxy
            alone = bool({link.a_node, link.b_node} & self._isolated_nodes)
            proxy.cut("forward") if alone or self.is_cut(a, b) else proxy.restore("forward")
            proxy.cut("backward") if alone or self.is_cut(b, a) else proxy.restore("backward")
