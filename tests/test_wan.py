"""The WAN emulator: latency, order, backpressure, cuts and shutdown, over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from socket import SO_LINGER, SOL_SOCKET
from typing import Any, TypeVar

import pytest

from app.tools.wan import HIGH_WATER, LinkProxy, WanEmulator, _DelayLine

from .support import TIMEOUT_FACTOR

T = TypeVar("T")
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Runs ``scenario`` and fails if it leaves a task behind."""

    async def checked() -> None:
        await scenario()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(checked())


async def within(awaitable: Awaitable[T], seconds: float = 5.0) -> T:
    return await asyncio.wait_for(awaitable, seconds * TIMEOUT_FACTOR)


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds * TIMEOUT_FACTOR
    while not condition():
        assert time.monotonic() < end, "timed out waiting for a condition"
        await asyncio.sleep(0.005)


async def silent(reader: asyncio.StreamReader, seconds: float = 0.3) -> bool:
    """True if nothing arrives on ``reader`` for ``seconds`` (used to observe a blackhole)."""
    try:
        await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return True
    return False


class Peer:
    """A loopback server: echoes every connection, or hands each to the test (``accept``)."""

    def __init__(self, *, echo: bool) -> None:
        self.echo = echo
        self.accepted: asyncio.Queue[Streams] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def accept(self) -> Streams:
        return await within(self.accepted.get())

    def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        if self.echo:
            self.tasks.append(asyncio.create_task(self._echo(reader, writer)))
        else:
            self.accepted.put_nowait((reader, writer))

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Peer]:
        self.server = await asyncio.start_server(self._on_accept, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self.server.close()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for writer in self.writers:
                writer.transport.abort()
            await self.server.wait_closed()


@contextlib.asynccontextmanager
async def connected(address: tuple[str, int]) -> AsyncIterator[Streams]:
    reader, writer = await within(asyncio.open_connection(*address))
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


def test_delay_line_delays_each_chunk_once_and_never_reorders() -> None:
    line = _DelayLine()
    # Pipelined: chunks read 10 ms apart arrive 10 ms apart, not 100 ms apart.
    assert [line.push(b"x", now, 0.1) for now in (0.0, 0.01, 0.02)] == pytest.approx(
        [0.1, 0.11, 0.12]
    )
    # A shorter delay (jitter) waits behind the chunk before it; a negative one counts as 0.
    assert line.push(b"y", 0.03, 0.0) == pytest.approx(0.12)
    assert line.push(b"z", 1.0, -5.0) == 1.0
    assert line.queued_bytes == 5
    assert [line.pop() for _ in range(5)] == [b"x", b"x", b"x", b"y", b"z"]
    assert line.queued_bytes == 0


def test_bytes_pass_unchanged_both_ways_including_large_payloads() -> None:
    payload = os.urandom(9 * 1024 * 1024)

    async def scenario() -> None:
        async with (
            Peer(echo=True).serving() as peer,
            LinkProxy(peer.address, latency_ms=5, jitter_ms=2, seed=1) as proxy,
            connected(proxy.address) as (reader, writer),
        ):

            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            echoed = await within(reader.read(), 30)
            await sender
            assert echoed == payload
            stats = proxy.statistics()
            assert stats.bytes_forward == stats.bytes_backward == len(payload)
            assert stats.bytes_dropped_forward == stats.bytes_dropped_backward == 0

    run(scenario)


def test_a_slow_target_holds_the_proxy_at_its_high_watermark_without_losing_bytes() -> None:
    payload = os.urandom(12 * 1024 * 1024)

    async def scenario() -> None:
        async with (
            Peer(echo=False).serving() as peer,
            LinkProxy(peer.address, latency_ms=0) as proxy,
            connected(proxy.address) as (_, writer),
        ):

            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            target_reader, _ = await peer.accept()  # and not read yet
            await wait_until(lambda: proxy.statistics().bytes_queued_forward > HIGH_WATER)
            assert proxy.statistics().bytes_queued_forward <= HIGH_WATER + 64 * 1024
            assert await within(target_reader.read(), 30) == payload
            await within(sender)

    run(scenario)


def test_latency_applies_each_way_and_can_change_at_runtime() -> None:
    async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
        started = time.monotonic()
        writer.write(b"ping")
        await writer.drain()
        assert await within(reader.readexactly(4)) == b"ping"
        return time.monotonic() - started

    async def scenario() -> None:
        async with (
            Peer(echo=True).serving() as peer,
            LinkProxy(peer.address, latency_ms=50) as proxy,
            connected(proxy.address) as (reader, writer),
        ):
            assert await round_trip(reader, writer) >= 0.095
            proxy.set_latency(100)
            assert await round_trip(reader, writer) >= 0.195
            assert proxy.statistics().latency_ms == 100

    run(scenario)


def test_a_stream_of_chunks_sees_the_latency_once() -> None:
    async def scenario() -> None:
        async with (
            Peer(echo=False).serving() as peer,
            LinkProxy(peer.address, latency_ms=200) as proxy,
            connected(proxy.address) as (_, writer),
        ):
            started = time.monotonic()
            for _ in range(10):
                writer.write(b"x" * 100)
                await writer.drain()
                await asyncio.sleep(0.02)  # spreads the traffic; not a wait for a condition
            target_reader, _ = await peer.accept()
            assert await within(target_reader.readexactly(1000)) == b"x" * 1000
            elapsed = time.monotonic() - started
            # Serialised delays would take 10 x 200 ms; pipelined ones ~400 ms.
            assert 0.2 <= elapsed < 1.8 * TIMEOUT_FACTOR

    run(scenario)


def test_jitter_never_reorders_bytes() -> None:
    messages = [f"{i:05d};".encode() for i in range(300)]

    async def scenario() -> None:
        async with (
            Peer(echo=True).serving() as peer,
            LinkProxy(peer.address, latency_ms=10, jitter_ms=10, seed=7) as proxy,
            connected(proxy.address) as (reader, writer),
        ):
            for message in messages:
                writer.write(message)
                await writer.drain()
                await asyncio.sleep(0)
            writer.write_eof()
            assert await within(reader.read()) == b"".join(messages)
            assert proxy.statistics().jitter_ms == 10

    run(scenario)


@pytest.mark.parametrize("direction", ["forward", "backward", "both"])
def test_a_cut_direction_discards_its_bytes_until_restored(direction: str) -> None:
    async def scenario() -> None:
        async with (
            Peer(echo=False).serving() as peer,
            LinkProxy(peer.address, latency_ms=1) as proxy,
            connected(proxy.address) as (client_r, client_w),
        ):
            target_r, target_w = await peer.accept()
            proxy.cut(direction)  # type: ignore[arg-type]
            client_w.write(b"lost-f")
            target_w.write(b"lost-b")
            forward_cut, backward_cut = direction != "backward", direction != "forward"
            for cut, reader, lost in (
                (forward_cut, target_r, b"lost-f"),
                (backward_cut, client_r, b"lost-b"),
            ):
                if cut:
                    assert await silent(reader)
                else:
                    assert await within(reader.readexactly(6)) == lost
            stats = proxy.statistics()
            assert (stats.cut_forward, stats.cut_backward) == (forward_cut, backward_cut)
            assert stats.bytes_dropped_forward == (6 if forward_cut else 0)
            assert stats.bytes_dropped_backward == (6 if backward_cut else 0)
            # A connection opened during the cut is accepted, and its traffic discarded too.
            async with connected(proxy.address) as (_, late_w):
                late_target_r, _ = await peer.accept()
                late_w.write(b"late")
                if forward_cut:
                    assert await silent(late_target_r)
                else:
                    assert await within(late_target_r.readexactly(4)) == b"late"
            proxy.restore(direction)  # type: ignore[arg-type]
            assert not proxy.is_cut("forward") and not proxy.is_cut("backward")
            client_w.write(b"found-f")
            target_w.write(b"found-b")
            assert await within(target_r.readexactly(7)) == b"found-f"
            assert await within(client_r.readexactly(7)) == b"found-b"

    run(scenario)


def test_bytes_in_flight_when_cut_are_discarded() -> None:
    async def scenario() -> None:
        async with (
            Peer(echo=False).serving() as peer,
            LinkProxy(peer.address, latency_ms=300) as proxy,
            connected(proxy.address) as (_, client_w),
        ):
            target_r, _ = await peer.accept()
            client_w.write(b"in-flight")
            await wait_until(lambda: proxy.statistics().bytes_queued_forward == 9)
            proxy.cut("forward")
            await wait_until(lambda: proxy.statistics().bytes_dropped_forward == 9)
            proxy.restore()
            client_w.write(b"after")
            assert await within(target_r.readexactly(5)) == b"after"

    run(scenario)


def test_eof_half_closes_the_other_side_then_the_connection_closes() -> None:
    async def scenario() -> None:
        async with (
            Peer(echo=False).serving() as peer,
            LinkProxy(peer.address, latency_ms=20) as proxy,
            connected(proxy.address) as (client_r, client_w),
        ):
            target_r, target_w = await peer.accept()
            client_w.write(b"last words")
            client_w.write_eof()
            assert await within(target_r.read()) == b"last words"  # read() ends at EOF
            target_w.write(b"reply after half-close")
            target_w.close()
            assert await within(client_r.read()) == b"reply after half-close"
            await wait_until(lambda: proxy.statistics().open_connections == 0)
            assert proxy.statistics().connections_failed == 0

    run(scenario)


def test_an_eof_into_a_cut_direction_waits_for_restore() -> None:
    async def scenario() -> None:
        async with (
            Peer(echo=False).serving() as peer,
            LinkProxy(peer.address, latency_ms=1) as proxy,
            connected(proxy.address) as (_, client_w),
        ):
            target_r, _ = await peer.accept()
            proxy.cut("forward")
            client_w.write_eof()
            assert await silent(target_r)  # neither bytes nor the EOF cross a cut
            proxy.restore("forward")
            assert await within(target_r.read()) == b""
            assert target_r.at_eof()

    run(scenario)


def test_a_reset_on_one_side_closes_the_other() -> None:
    async def scenario() -> None:
        async with (
            Peer(echo=False).serving() as peer,
            LinkProxy(peer.address, latency_ms=1) as proxy,
            connected(proxy.address) as (client_r, client_w),
        ):
            _, target_w = await peer.accept()
            linger_zero = struct.pack("ii", 1, 0)
            target_w.get_extra_info("socket").setsockopt(SOL_SOCKET, SO_LINGER, linger_zero)
            target_w.transport.abort()  # a reset, not an orderly close
            with pytest.raises(ConnectionResetError):
                await within(client_r.read())
            await wait_until(lambda: proxy.statistics().open_connections == 0)
            assert proxy.statistics().connections_failed == 1
            client_w.transport.abort()

    run(scenario)


def test_a_refused_target_closes_the_client() -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        refused = probe.getsockname()

    async def scenario() -> None:
        async with (
            LinkProxy(refused, latency_ms=1) as proxy,
            connected(proxy.address) as (reader, _),
        ):
            with contextlib.suppress(ConnectionError):
                assert await within(reader.read()) == b""
            await wait_until(lambda: proxy.statistics().open_connections == 0)
            stats = proxy.statistics()
            assert stats.connections_accepted == stats.connections_failed == 1

    run(scenario)


def test_aclose_ends_every_task_even_with_bytes_waiting() -> None:
    async def scenario() -> None:
        async with Peer(echo=False).serving() as peer:
            proxy = LinkProxy(peer.address, latency_ms=10_000, name="slow")
            await proxy.start()
            address = proxy.address
            async with connected(proxy.address) as (client_r, client_w):
                await peer.accept()
                client_w.write(b"never delivered")
                client_w.write_eof()  # the EOF waits behind the bytes
                await wait_until(lambda: proxy.statistics().bytes_queued_forward > 0)
                await within(proxy.aclose())
                await proxy.aclose()  # idempotent
                assert proxy.statistics().open_connections == 0
                with contextlib.suppress(ConnectionError):
                    assert await within(client_r.read()) == b""
                with pytest.raises(OSError):
                    await asyncio.open_connection(*address)

    run(scenario)  # also asserts that no task is left


def test_wan_emulator_cuts_isolates_and_heals_by_region() -> None:
    async def scenario() -> None:
        wan = WanEmulator(seed=3)
        async with Peer(echo=False).serving() as us_node, Peer(echo=True).serving() as eu_node:
            eu_to_us = await wan.add_link("eu", "us", us_node.address, latency_ms=5)
            us_to_eu = await wan.add_link("us", "eu", eu_node.address, latency_ms=5)
            eu_to_eu = await wan.add_link("eu", "eu", eu_node.address, latency_ms=1, name="local")
            assert [link.proxy.name for link in wan.links()] == ["eu->us#0", "us->eu#1", "local"]
            with pytest.raises(ValueError, match="local"):
                await wan.add_link("eu", "ap", eu_node.address, latency_ms=1, name="local")

            def flags(proxy: LinkProxy) -> tuple[bool, bool]:
                return proxy.is_cut("forward"), proxy.is_cut("backward")

            wan.cut("eu", "us", one_way=True)  # only eu→us traffic
            assert flags(eu_to_us) == (True, False) and flags(us_to_eu) == (False, True)
            assert wan.is_cut("eu", "us") and not wan.is_cut("us", "eu")
            async with connected(eu_to_us.address) as (client_r, client_w):
                target_r, target_w = await us_node.accept()
                client_w.write(b"from eu")
                target_w.write(b"from us")
                assert await silent(target_r)
                assert await within(client_r.readexactly(7)) == b"from us"
                wan.restore("eu", "us")
                client_w.write(b"again")
                assert await within(target_r.readexactly(5)) == b"again"

            wan.isolate("eu")
            assert flags(eu_to_us) == flags(us_to_eu) == (True, True)
            assert flags(eu_to_eu) == (False, False)  # inside the region still works
            late = await wan.add_link("ap", "eu", eu_node.address, latency_ms=1)
            assert flags(late) == (True, True)  # links added later obey the isolation
            assert wan.statistics().isolated == frozenset({"eu"})
            wan.rejoin("eu")
            assert flags(late) == (False, False)

            wan.cut("us", "eu")
            assert wan.statistics().cut_flows == {("us", "eu"), ("eu", "us")}
            wan.heal()
            assert all(flags(link.proxy) == (False, False) for link in wan.links())
            async with connected(us_to_eu.address) as (reader, writer):
                writer.write(b"healed")
                assert await within(reader.readexactly(6)) == b"healed"
            assert len(wan.statistics().links) == 4
            await wan.aclose()
            assert wan.links() == ()

    run(scenario)


def test_wan_emulator_cuts_one_node_off_from_every_other() -> None:
    async def scenario() -> None:
        wan = WanEmulator(seed=4)
        async with Peer(echo=True).serving() as b_node, Peer(echo=True).serving() as c_node:
            # Three nodes: a and b in eu, c in us; every link named by its nodes.
            a_b = await wan.add_link("eu", "eu", b_node.address, 0, nodes=("a", "b"))
            a_c = await wan.add_link("eu", "us", c_node.address, 5, nodes=("a", "c"))
            b_c = await wan.add_link("eu", "us", c_node.address, 5, nodes=("b", "c"))

            def cut(proxy: LinkProxy) -> bool:
                return proxy.is_cut("forward") and proxy.is_cut("backward")

            wan.isolate_node("a")
            assert cut(a_b) and cut(a_c) and not b_c.is_cut("forward")
            assert wan.statistics().isolated_nodes == frozenset({"a"})
            async with connected(b_c.address) as (reader, writer):
                writer.write(b"b to c")  # the others still reach each other
                assert await within(reader.readexactly(6)) == b"b to c"
            wan.isolate("us")  # a region cut stays when the node rejoins
            wan.rejoin_node("a")
            assert not a_b.is_cut("forward") and cut(a_c) and cut(b_c)
            wan.isolate_node("b")
            wan.heal()
            assert not any(link.proxy.is_cut("forward") for link in wan.links())
            assert wan.statistics().isolated_nodes == frozenset()
            await wan.aclose()

    run(scenario)
