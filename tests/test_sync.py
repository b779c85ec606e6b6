"""``WS /v1/sync/{id}`` (y-websocket) and ``WS /v1/docs/{id}/events`` against a real node,
with real WebSocket clients speaking the protocol byte by byte."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import pycrdt
import pytest
import websockets

from app.config import ClientLimits, ClusterConfig
from app.sync import protocol as p
from app.sync.awareness import decode_update, encode_update
from crdt.lib0 import Encoder

from .support import ThreadedNode, wait_for

TIMEOUT = 10


def ws_url(node: ThreadedNode, path: str) -> str:
    return node.url.replace("http://", "ws://") + path


class Client:
    """A minimal y-websocket client around a pycrdt document."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self.ws: Any = None
        self.awareness: list[tuple[int, int, str]] = []

    async def __aenter__(self) -> Client:
        self.ws = await websockets.connect(self.url, max_size=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def receive(self) -> p.SyncMessage | tuple[str, Any]:
        frame = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
        if frame[0] == p.MESSAGE_AUTH:
            return ("auth", frame)
        message = p.decode(frame)
        if isinstance(message, p.SyncStep2 | p.SyncUpdate):
            self.doc.apply_update(message.update)
        elif isinstance(message, p.AwarenessMessage):
            self.awareness += decode_update(message.update)
        return message

    async def handshake(self) -> None:
        """Answers the server's step 1 and asks for its state (both directions synced)."""
        first = await self.receive()
        assert isinstance(first, p.SyncStep1)
        await self.ws.send(p.encode_sync_step2(bytes(self.doc.get_update(first.state_vector))))
        await self.ws.send(p.encode_sync_step1(bytes(self.doc.get_state())))
        while not isinstance(await self.receive(), p.SyncStep2):
            pass

    async def edit(self, change: Any) -> None:
        before = self.doc.get_state()
        change(self.doc)
        await self.ws.send(p.encode_update(bytes(self.doc.get_update(before))))

    async def wait_text(self, name: str, expected: str) -> None:
        async with asyncio.timeout(TIMEOUT):
            while str(self.doc.get(name, type=pycrdt.Text)) != expected:
                await self.receive()


def insert(name: str, index: int, text: str) -> Any:
    return lambda doc: doc.get(name, type=pycrdt.Text).insert(index, text)


def test_two_clients_edit_live_and_the_node_stores_it(node: ThreadedNode) -> None:
    async def scenario() -> None:
        url = ws_url(node, "/v1/sync/live")
        async with Client(url) as a, Client(url) as b:
            await a.handshake()
            await b.handshake()
            await a.edit(insert("body", 0, "hello"))
            await b.wait_text("body", "hello")
            await b.edit(insert("body", 5, " world"))
            await a.wait_text("body", "hello world")

    asyncio.run(scenario())
    with node.client() as client:
        assert client.get("/v1/docs/live").json()["content"] == {"body": "hello world"}


def test_a_reconnecting_client_resyncs_offline_edits(node: ThreadedNode) -> None:
    async def scenario() -> None:
        url = ws_url(node, "/v1/sync/offline")
        async with Client(url) as a:
            await a.handshake()
            await a.edit(insert("body", 0, "online "))
        # Offline edit, then a new connection: the handshake carries it.
        offline = Client(url)
        offline.doc = a.doc
        insert("body", 7, "offline")(offline.doc)
        async with offline:
            await offline.handshake()
        async with Client(url) as c:
            await c.handshake()
            await c.wait_text("body", "online offline")

    asyncio.run(scenario())


def test_awareness_reaches_the_other_clients_and_is_removed_when_one_leaves(
    node: ThreadedNode,
) -> None:
    async def scenario() -> None:
        url = ws_url(node, "/v1/sync/presence")
        async with Client(url) as a, Client(url) as b:
            await a.handshake()
            await b.handshake()
            state = json.dumps({"user": {"name": "ada"}})
            await a.ws.send(p.encode_awareness(encode_update([(77, 1, state)])))
            async with asyncio.timeout(TIMEOUT):
                while (77, 1, state) not in b.awareness:
                    await b.receive()
            await a.ws.close()
            async with asyncio.timeout(TIMEOUT):
                while (77, 2, "null") not in b.awareness:
                    await b.receive()
            # A newcomer gets no state of a client that left.
            async with Client(url) as c:
                await c.handshake()
                await c.ws.send(bytes([p.MESSAGE_QUERY_AWARENESS]))
                await c.edit(insert("x", 0, "x"))  # something comes back either way
                await b.wait_text("x", "x")
                assert not any(entry[0] == 77 and entry[2] != "null" for entry in c.awareness)

    asyncio.run(scenario())


def test_events_stream_mirrors_the_document(node: ThreadedNode) -> None:
    rng = random.Random(5)

    async def scenario() -> None:
        url = ws_url(node, "/v1/docs/mirror/events")
        async with websockets.connect(url) as events:
            first = json.loads(await asyncio.wait_for(events.recv(), TIMEOUT))
            assert first["type"] == "snapshot" and first["content"] == {}
            with node.client() as client:
                for i in range(30):
                    ops = [{"op": "append", "path": ["items"], "values": [rng.randrange(100)]}]
                    if i % 3 == 0:
                        ops = [{"op": "set", "path": ["m", f"k{i}"], "value": i}]
                    assert client.patch("/v1/docs/mirror", json={"ops": ops}).status_code == 200
                expected = client.get("/v1/docs/mirror").json()
            mirror: dict[str, Any] = {}
            async with asyncio.timeout(TIMEOUT):
                while mirror.get("state_vector") != expected["state_vector"]:
                    mirror = json.loads(await events.recv())
                    assert mirror["type"] == "change" and mirror["region"] == "eu-west"
            assert mirror["content"] == expected["content"]
        # Resuming at the current state vector sends no snapshot.
        resume = f"{url}?since={urllib.parse.quote(expected['state_vector'])}"
        async with websockets.connect(resume) as events:
            assert json.loads(await asyncio.wait_for(events.recv(), TIMEOUT))["type"] == "resumed"

    asyncio.run(scenario())


def huge_length() -> bytes:
    enc = Encoder()
    enc.write_var_uint(0)
    enc.write_var_uint(2)
    enc.write_var_uint(2**40)
    return enc.to_bytes()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x09\x00", 1002),  # unknown message type
        (b"\x00\x07\x00", 1002),  # unknown sync type
        (b"\x00\x02", 1002),  # truncated
        (b"\x00\x02\xff", 1002),  # truncated var uint
        (huge_length(), 1002),  # declared length far past the frame
        (p.encode_update(b"\x01\x02\x03"), 1007),  # not a Yjs update
        (p.encode_awareness(b"\x01\x01"), 1007),  # truncated awareness update
        (bytes(random.Random(3).randbytes(50)), 1002),
    ],
)
def test_malformed_frames_close_with_a_reason_and_change_nothing(
    node: ThreadedNode, frame: bytes, code: int
) -> None:
    with node.client() as client:
        ops = {"ops": [{"op": "set", "path": ["m", "k"], "value": 1}]}
        client.patch("/v1/docs/target", json=ops)
        before = client.get("/v1/docs/target", params={"digest": "true"}).json()

    async def scenario() -> tuple[int | None, str | None]:
        async with websockets.connect(ws_url(node, "/v1/sync/target")) as ws:
            await ws.recv()  # step 1
            await ws.send(frame)
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(TIMEOUT):
                    while True:
                        await ws.recv()
            return ws.close_code, ws.close_reason

    close_code, reason = asyncio.run(scenario())
    assert close_code == code and reason
    with node.client() as client:
        assert client.get("/v1/health").status_code == 200
        after = client.get("/v1/docs/target", params={"digest": "true"}).json()
        assert after["digest"] == before["digest"]


def test_text_frames_and_bad_ids_are_refused(node: ThreadedNode) -> None:
    async def scenario() -> list[int | None]:
        codes = []
        async with websockets.connect(ws_url(node, "/v1/sync/t")) as ws:
            await ws.recv()
            await ws.send("text")
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            codes.append(ws.close_code)
        async with websockets.connect(ws_url(node, "/v1/sync/-bad")) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            codes.append(ws.close_code)
        return codes

    assert asyncio.run(scenario()) == [1003, 4400]


def stalled_client(node: ThreadedNode, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", node.port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def test_a_slow_subscriber_is_disconnected_without_slowing_the_others(
    node: ThreadedNode,
) -> None:
    slow = stalled_client(node, "/v1/sync/firehose")
    hub = node.node.hub

    async def scenario() -> None:
        url = ws_url(node, "/v1/sync/firehose")
        async with Client(url) as fast, Client(url) as writer:
            await fast.handshake()
            await writer.handshake()
            received = 0
            progress = asyncio.Event()

            async def keep_reading() -> None:
                nonlocal received
                while True:
                    frame = await fast.ws.recv()  # counted, not applied: a fast reader
                    if frame[:2] == bytes([p.MESSAGE_SYNC, p.UPDATE]):
                        received += 1
                        progress.set()

            reader = asyncio.ensure_future(keep_reading())
            payload = "x" * 20_000
            sent = 0
            # Batches of 10 updates; the fast subscriber gets each batch before the next
            # (its latency stays low) while the stalled one's buffer only grows.
            while not hub.disconnected_slow and sent < 600:
                for _ in range(10):
                    await writer.edit(insert("body", 0, payload))
                    sent += 1
                async with asyncio.timeout(TIMEOUT):
                    while received < sent:
                        progress.clear()
                        await progress.wait()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            wait_for(lambda: hub.disconnected_slow == 1, timeout=10, what="the disconnection")
            assert hub.statistics()["sync_clients"] == 2  # the fast one and the writer

    try:
        asyncio.run(scenario())
        # The node dropped the stalled connection: reading it now reaches its end.
        slow.settimeout(TIMEOUT)
        while slow.recv(1 << 20):
            pass
    finally:
        slow.close()


def test_connection_and_message_limits_close_with_a_reason(tmp_path: Path) -> None:
    cluster = ClusterConfig(clients=ClientLimits(max_connections=2, max_message_bytes=1000))
    limited = ThreadedNode(tmp_path / "limited", cluster=cluster).start()
    try:

        async def scenario() -> list[tuple[int | None, str | None]]:
            url = ws_url(limited, "/v1/sync/capped")
            closes = []
            async with websockets.connect(url) as one, websockets.connect(url) as two:
                await one.recv()
                await two.recv()
                async with websockets.connect(url) as three:
                    with pytest.raises(websockets.ConnectionClosed):
                        await asyncio.wait_for(three.recv(), TIMEOUT)
                    closes.append((three.close_code, three.close_reason))
                await one.send(p.encode_update(b"\x00" * 2000))
                with pytest.raises(websockets.ConnectionClosed):
                    async with asyncio.timeout(TIMEOUT):
                        while True:
                            await one.recv()
                closes.append((one.close_code, one.close_reason))
                # The other connection is unaffected.
                await two.send(p.encode_sync_step1(b"\x00"))
                assert p.decode(await asyncio.wait_for(two.recv(), TIMEOUT))
            return closes

        (three, one) = asyncio.run(scenario())
        assert three[0] == 1013 and "too many connections" in (three[1] or "")
        assert one[0] == 1009 and "limit 1000" in (one[1] or "")
    finally:
        limited.stop()


def test_the_events_mirror_follows_edits_from_every_kind_of_client(node: ThreadedNode) -> None:
    rng = random.Random(11)

    async def scenario() -> None:
        async with websockets.connect(ws_url(node, "/v1/docs/every/events")) as events:
            json.loads(await asyncio.wait_for(events.recv(), TIMEOUT))  # the snapshot
            async with Client(ws_url(node, "/v1/sync/every")) as live:
                await live.handshake()
                with node.client() as client:
                    for i in range(45):
                        kind = i % 3
                        if kind == 0:
                            ops = [{"op": "append", "path": ["items"], "values": [i]}]
                            client.patch("/v1/docs/every", json={"ops": ops})
                        elif kind == 1:
                            doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=rng.randrange(1, 2**31))
                            doc.get("settings", type=pycrdt.Map)[f"k{i}"] = i
                            client.post(
                                "/v1/docs/every/update",
                                content=bytes(doc.get_update()),
                                headers={"content-type": "application/octet-stream"},
                            )
                        else:
                            await live.edit(insert("body", 0, f"<{i}>"))
                    expected: dict[str, Any] = {}
                    mirror: dict[str, Any] = {}
                    async with asyncio.timeout(TIMEOUT):
                        while True:
                            expected = client.get("/v1/docs/every").json()
                            if mirror.get("state_vector") == expected["state_vector"]:
                                break
                            mirror = json.loads(await events.recv())
            assert mirror["content"] == expected["content"]
            assert len(expected["content"]["items"]) == 15
            assert len(expected["content"]["settings"]) == 15

    asyncio.run(scenario())
