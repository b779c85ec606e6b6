"""The forwarding hop's HTTP/1.1 client against a raw loopback server that answers what each
test scripts: keep-alive reuse, chunked and sized bodies, HEAD, every way an answer can fail."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from app.http.hop import HopPool, HopTimeout, Lost, NotSent, TooLarge

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n" % len(body) + b"".join(extra)
    return head + b"\r\n" + body


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The request's head and its body (by its content-length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


@contextlib.asynccontextmanager
async def serving(script: Script) -> AsyncIterator[tuple[int, list[int]]]:
    """A server running ``script`` per connection; yields its port and a list that counts
    connections."""
    connections: list[int] = []
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await script(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def run(scenario: Callable[[HopPool], Awaitable[None]], **options: float) -> None:
    async def main() -> None:
        pool = HopPool(max_body=1000, user_agent="test", **options)  # type: ignore[arg-type]
        try:
            await scenario(pool)
        finally:
            await pool.aclose()

    asyncio.run(main())


def test_a_connection_is_kept_alive_and_reused_for_sized_and_chunked_answers() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        assert head.startswith(b"PATCH /v1/docs/a%20b?x=1 HTTP/1.1\r\n")
        assert b"\r\nx-one: 1\r\n" in head and b"\r\nuser-agent: test\r\n" in head
        writer.write(ok(b"echo:" + body, b"X-Meridian-Served-By: h\r\n"))
        await read_request(reader)
        writer.write(b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        await reader.read()

    async def scenario(pool: HopPool) -> None:
        async with serving(script) as (port, connections):
            answer = await pool.request(
                "127.0.0.1", port, "PATCH", "/v1/docs/a%20b?x=1", [(b"x-one", b"1")], b"hi",
                timeout=5,
            )  # fmt: skip
            assert (answer.status, answer.body) == (200, b"echo:hi")
            assert (b"x-meridian-served-by", b"h") in answer.headers  # names lower-cased
            answer = await pool.request("127.0.0.1", port, "GET", "/", [], b"", timeout=5)
            assert (answer.status, answer.body) == (201, b"abcde")
            assert len(connections) == 1

    run(scenario)


def test_connection_close_head_and_an_expired_idle_connection_open_new_ones() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n")  # no body follows
        elif b"close" in head:
            writer.write(ok(b"bye", b"connection: close\r\n"))
        else:
            writer.write(ok(b"hello"))
        with contextlib.suppress(ConnectionError):
            await reader.read()

    async def scenario(pool: HopPool) -> None:
        async with serving(script) as (port, connections):
            head = await pool.request("127.0.0.1", port, "HEAD", "/", [], b"", timeout=5)
            assert (head.status, head.body) == (200, b"")
            bye = await pool.request("127.0.0.1", port, "GET", "/close", [], b"", timeout=5)
            assert bye.body == b"bye"
            await pool.request("127.0.0.1", port, "GET", "/", [], b"", timeout=5)
            await asyncio.sleep(0.3)  # past keepalive_expiry: the idle connection is dropped
            await pool.request("127.0.0.1", port, "GET", "/", [], b"", timeout=5)
            assert len(connections) == 4

    run(scenario, keepalive_expiry=0.2)


async def _never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await reader.read()


async def _answers_half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
    await writer.drain()


async def _answers_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"SMTP ready\r\n\r\n")
    await reader.read()


async def _answers_too_much(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(ok(b"x" * 1001))
    await reader.read()


@pytest.mark.parametrize(
    ("script", "error"),
    [(_never_answers, HopTimeout), (_answers_half, Lost), (_answers_garbage, Lost),
     (_answers_too_much, TooLarge)],
)  # fmt: skip
def test_an_answer_that_fails_raises_and_its_connection_is_not_reused(
    script: Script, error: type[Exception]
) -> None:
    async def scenario(pool: HopPool) -> None:
        async with serving(script) as (port, connections):
            with pytest.raises(error) as raised:
                await pool.request("127.0.0.1", port, "POST", "/", [], b"body", timeout=0.5)
            if isinstance(raised.value, HopTimeout):
                assert raised.value.sent  # written: its outcome is unknown
            with pytest.raises(error):
                await pool.request("127.0.0.1", port, "POST", "/", [], b"body", timeout=0.5)
            assert len(connections) == 2

    run(scenario)


def test_a_closed_port_is_not_sent_and_a_header_with_a_line_break_is_refused() -> None:
    async def scenario(pool: HopPool) -> None:
        async with serving(_never_answers) as (port, _):
            pass  # closed now
        with pytest.raises(NotSent, match="cannot connect"):
            await pool.request("127.0.0.1", port, "GET", "/", [], b"", timeout=5)
        with pytest.raises(ValueError, match="line break"):
            bad = [(b"x", b"a\r\nb: c")]
            await pool.request("127.0.0.1", port, "GET", "/", bad, b"", timeout=5)

    run(scenario)
