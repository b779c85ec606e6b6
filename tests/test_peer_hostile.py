"""Hostile peers against a real node: wrong secrets, garbage before and after the handshake,
huge and truncated frames, invalid deltas. The node refuses or closes the link with a logged
reason, keeps serving, and nothing stored changes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from app.replication import messages as m
from app.replication.protocol import Identity, PeerProtocol, State

from .cluster import SECRET, Cluster
from .support import wait_for

# ap-south-1 is listed but never started: the tests speak as it.
LAYOUT = {"us-east": 1, "eu-west": 1, "ap-south": 1}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the module: every test checks that it leaves it unchanged."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    running = Cluster(tmp_path, LAYOUT).start(skip=("ap-south-1",))
    try:
        wait_for(
            lambda: running.cluster_view("us-east-1")["peers"][0]["state"] == "up",
            timeout=30,
            what="us-east-1 <-> eu-west-1",
        )
        with running["us-east-1"].client() as client:
            ops = {"ops": [{"op": "set", "path": ["m", "k"], "value": "precious"}]}
            assert client.patch("/v1/docs/kept", params={"durability": "all"}, json=ops)
        yield running
    finally:
        running.close()


def digests(cluster: Cluster) -> dict[str, Any]:
    return {
        node: cluster.snapshot(node, sorted(cluster.documents(node)))
        for node in ("us-east-1", "eu-west-1")
    }


def still_healthy(cluster: Cluster, before: dict[str, Any]) -> None:
    for node in ("us-east-1", "eu-west-1"):
        with cluster[node].client() as client:
            assert client.get("/v1/health").status_code == 200
    assert digests(cluster) == before
    view = cluster.cluster_view("us-east-1")
    assert {p["node"]: p["state"] for p in view["peers"]}["eu-west-1"] == "up"


def url(cluster: Cluster) -> str:
    return f"ws://127.0.0.1:{cluster['us-east-1'].port}/v1/peer"


async def raw_exchange(target: str, frames: list[bytes | str]) -> tuple[list[Any], int | None]:
    """Sends frames as they are; returns what came back (decoded where possible) and the
    close code."""
    received: list[Any] = []
    async with websockets.connect(target, max_size=None) as ws:
        for frame in frames:
            await ws.send(frame)
        try:
            async with asyncio.timeout(10):
                async for reply in ws:
                    assert isinstance(reply, bytes)
                    received.append(m.decode(reply))
        except websockets.ConnectionClosed:
            pass
        return received, ws.close_code


class FakePeer:
    """An authenticated (or not) peer speaking as ap-south-1."""

    def __init__(self, target: str, secret: bytes = SECRET.encode()) -> None:
        self.target = target
        self.protocol = PeerProtocol(
            "dialer",
            Identity("test", "ap-south-1", "ap-south", "fake-storage", secret),
            expected_node="us-east-1",
        )
        self.ws: Any = None

    async def __aenter__(self) -> FakePeer:
        self.ws = await websockets.connect(self.target, max_size=None)
        self.protocol.start()
        await self.flush()
        while self.protocol.state is State.HANDSHAKE:
            self.protocol.receive_data(await self.ws.recv())
            await self.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def flush(self) -> None:
        for frame in self.protocol.data_to_send():
            await self.ws.send(frame)

    async def send_raw(self, frame: bytes) -> None:
        await self.ws.send(frame)

    async def expect(self, kind: type[m.Message]) -> Any:
        """The next application message of ``kind`` (ignoring the node's own traffic)."""
        async with asyncio.timeout(10):
            while True:
                message = m.decode(await self.ws.recv())
                if isinstance(message, kind):
                    return message


def test_a_wrong_secret_is_refused_and_logged_on_both_sides(tmp_path: Path) -> None:
    running = Cluster(tmp_path, {"us-east": 1, "eu-west": 1})
    running.secrets["eu-west-1"] = "not-the-secret"
    running.start()
    try:

        def refused() -> bool:
            peer = running.cluster_view("eu-west-1")["peers"][0]
            return peer["state"] == "refused" and "authentication_failed" in peer["last_error"]

        wait_for(refused, timeout=30, what="eu-west-1 to report the refusal")
        assert running.cluster_view("us-east-1")["refused_links"]
        wait_for(
            lambda: "authentication_failed" in "".join(running["us-east-1"].process.output),  # type: ignore[union-attr]
            timeout=10,
            what="us-east-1 to log the refusal",
        )
        assert "refused" in "".join(running["eu-west-1"].process.output)  # type: ignore[union-attr]
    finally:
        running.close()


def test_a_fake_peer_with_the_wrong_secret_is_refused(cluster: Cluster) -> None:
    before = digests(cluster)

    async def attempt() -> str:
        fake = FakePeer(url(cluster), secret=b"guess")
        try:
            async with fake:
                pass
        except websockets.ConnectionClosed:
            pass
        return fake.protocol.state.value

    assert asyncio.run(attempt()) == "closed"
    still_healthy(cluster, before)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([b"\x8f\x01garbage"], "protocol_error"),
        (["a text frame"], "protocol_error"),
        (
            [m.encode(m.Hello(1, 1, "test", "ap-south-1", "ap-south", "s", b"\x00" * 32))[:20]],
            "protocol_error",
        ),
        ([b"\x01MRDN\x01\x01\xff\xff\xff\xff\x07"], "protocol_error"),  # 2 GB name declared
        ([b"\x63\x00"], "protocol_error"),  # unknown message type
        ([m.encode(m.Update(1, "kept", 1, (), b"\x00\x00"))], "protocol_error"),  # before auth
        (
            [m.encode(m.Hello(7, 9, "test", "ap-south-1", "ap-south", "s", b"\x00" * 32))],
            "incompatible_version",
        ),
        (
            [m.encode(m.Hello(1, 1, "other", "ap-south-1", "ap-south", "s", b"\x00" * 32))],
            "wrong_cluster",
        ),
        (
            [m.encode(m.Hello(1, 1, "test", "mallory-1", "ap-south", "s", b"\x00" * 32))],
            "unknown_node",
        ),
    ],
)
def test_garbage_before_authentication_is_refused(
    cluster: Cluster, frames: list[bytes | str], code: str
) -> None:
    before = digests(cluster)
    received, close_code = asyncio.run(raw_exchange(url(cluster), frames))
    assert [type(r) for r in received] == [m.Refuse]
    assert received[0].code == code
    assert close_code is not None and close_code != 1000
    still_healthy(cluster, before)
    assert code in "".join(cluster["us-east-1"].process.output)  # type: ignore[union-attr]
    refused = cluster.cluster_view("us-east-1")["refused_links"]
    assert any(code in entry["reason"] for entry in refused)


def test_an_authenticated_peer_sending_bad_deltas_is_answered_not_disconnected(
    cluster: Cluster,
) -> None:
    before = digests(cluster)

    async def session() -> None:
        async with FakePeer(url(cluster)) as peer:
            # An invalid Yjs update, a bad incarnation, a bad state vector: each refused.
            peer.protocol.send(m.Update(1, "kept", 1, (), b"\x01\x02\x03"))
            peer.protocol.send(m.Update(2, "kept", 0, (), b"\x00\x00"))
            peer.protocol.send(m.SyncStep1(3, "kept", b"\xff\xff"))
            await peer.flush()
            rejects = {(await peer.expect(m.Reject)).seq for _ in range(2)}
            assert rejects == {1, 2}
            failure = await peer.expect(m.Failure)
            assert failure.request == 3
            # The link is still open: a ping is answered.
            peer.protocol.ping()
            await peer.flush()
            await peer.expect(m.Pong)

    asyncio.run(session())
    still_healthy(cluster, before)


@pytest.mark.parametrize(
    "frame",
    [
        b"\x14\x01\x04kept",  # truncated Update
        b"\x16\xff\xff\xff\xff\x0f",  # Ack declaring 4 billion seqs
        b"\x63",  # unknown message type
        m.encode(m.Hello(1, 1, "test", "ap-south-1", "ap-south", "s", b"\x00" * 32)),
    ],
)
def test_garbage_after_authentication_closes_the_link_with_a_reason(
    cluster: Cluster, frame: bytes
) -> None:
    before = digests(cluster)

    async def session() -> Any:
        async with FakePeer(url(cluster)) as peer:
            await peer.send_raw(frame)
            return await peer.expect(m.Refuse)

    refusal = asyncio.run(session())
    assert refusal.code == "protocol_error"
    still_healthy(cluster, before)


def test_an_oversized_frame_closes_the_link(cluster: Cluster) -> None:
    before = digests(cluster)

    async def session() -> int | None:
        async with FakePeer(url(cluster)) as peer:
            with pytest.raises(websockets.ConnectionClosed):
                await peer.send_raw(b"\x14" + b"\x00" * (40 * 1024 * 1024))
                await peer.expect(m.Refuse)
            return int(peer.ws.close_code) if peer.ws.close_code else None

    assert asyncio.run(session()) == 1009  # message too big
    still_healthy(cluster, before)


def test_forged_and_malformed_member_lists_change_nothing(cluster: Cluster) -> None:
    """An authenticated peer gossips garbage, an entry of an unknown region, and a member list
    that tries to revive a removed-looking or rewrite a listed node under a lower state: each is
    refused or loses the merge, logged and counted; the link stays up and the list is as it was."""
    before = digests(cluster)
    members_before = members(cluster)
    forged = {
        "node": "ap-south-9",
        "region": "mars",
        "address": "127.0.0.1:9",
        "state": "active",
        "incarnation": 1,
        "weight": 1.0,
        "stamp": [1, "ap-south-9"],
    }
    older = {**members_before["us-east-1"], "state": "joining", "address": "127.0.0.1:1"}
    older.pop("liveness")

    async def session() -> None:
        async with FakePeer(url(cluster)) as peer:
            for payload in (
                b"not json",
                b'{"members": 3}',
                b'{"members": [{"node": "x"}]}',
                json.dumps({"members": [forged]}).encode(),
                json.dumps({"members": [older]}).encode(),
                b"[" * 100_000,
            ):
                peer.protocol.send(m.Members(payload))
            peer.protocol.ping()
            await peer.flush()
            await peer.expect(m.Pong)

    asyncio.run(session())
    assert members(cluster) == members_before
    assert cluster.cluster_view("us-east-1")["members_refused"] >= 5
    still_healthy(cluster, before)


def members(cluster: Cluster) -> dict[str, Any]:
    with cluster["us-east-1"].client() as client:
        listed = client.get("/v1/cluster/members").json()["members"]
    # Liveness aside: the fake peer's link may still be closing.
    return {entry["node"]: {**entry, "liveness": None} for entry in listed}
