"""Regression tests for defects found from outside (issue 10, "Known defects to fix first").

Each test does what the report did, against a real node, and checks the answer and the node's
health afterwards.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pycrdt
import pytest
import websockets

from app.codec import MAX_CLOSE_REASON_BYTES, close_reason
from crdt import Document, LimitExceeded
from crdt.nesting import MAX_NESTING

from .support import NodeProcess, ThreadedNode, wait_for

OCTET = {"Content-Type": "application/octet-stream"}


# -- a PATCH whose "op" is an object or a list --------------------------------------------


@pytest.mark.parametrize("op", [{}, [], {"a": 1}, ["set"], None, 1.5, True])
def test_an_op_that_is_not_a_string_is_a_422(node: ThreadedNode, op: Any) -> None:
    with node.client() as client:
        answer = client.patch("/v1/docs/d", json={"ops": [{"op": op, "path": ["r", "k"]}]})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "invalid_operation"
        assert "unknown op" in answer.json()["error"]["message"]
        # The keep-alive connection survived, and nothing was written.
        assert client.get("/v1/docs/d").status_code == 404
        assert client.get("/v1/health").status_code == 200


# -- close reasons that do not fit a close frame -------------------------------------------


def test_close_reasons_are_cut_to_fit_in_bytes() -> None:
    for reason in ["é" * 100, "😀" * 40, "a" * 500, "é" * 61 + "a", "short"]:
        cut = close_reason(reason)
        assert len(cut.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES
        assert reason.startswith(cut.removesuffix("..."))
    assert close_reason("short") == "short"


@pytest.mark.parametrize("path", ["/v1/sync/", "/v1/docs/{}/events"])
def test_a_long_multibyte_invalid_id_closes_with_a_code(node: ThreadedNode, path: str) -> None:
    bad = "é" * 100
    url = node.url.replace("http", "ws") + (path + bad if "{}" not in path else path.format(bad))

    async def scenario() -> tuple[int | None, str]:
        async with websockets.connect(url) as socket_:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket_.recv(), 10)
            assert closed.value.rcvd is not None, "closed without a close frame"
            return closed.value.rcvd.code, closed.value.rcvd.reason

    code, reason = asyncio.run(scenario())
    assert code in (4400, 1008, 1007)
    assert "id" in reason or "invalid" in reason


# -- a body shorter than its Content-Length ------------------------------------------------


def test_a_client_that_sends_less_than_it_declared_is_not_a_server_error(
    node: ThreadedNode, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw:
        raw.sendall(
            b"POST /v1/docs/short/update HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\n0123456789"
        )
        raw.shutdown(socket.SHUT_WR)
        raw.settimeout(10)
        while raw.recv(4096):
            pass

    def counted() -> str | None:
        with node.client() as client:
            text = client.get("/metrics").text
        lines = [line for line in text.splitlines() if 'route="/v1/docs/{doc_id}/update"' in line]
        return "\n".join(lines) if any("_total" in line for line in lines) else None

    lines = wait_for(counted, what="the short request to be counted")
    assert 'status="500"' not in lines
    assert 'status="499"' in lines
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    with node.client() as client:
        assert client.get("/v1/docs/short").status_code == 404


# -- nesting deepened over many updates ------------------------------------------------------


def _deepening_updates(levels_per_update: int, updates: int) -> list[bytes]:
    """Updates that each nest ``levels_per_update`` maps below the deepest map so far."""
    doc = pycrdt.Doc(client_id=7)
    current = doc.get("r", type=pycrdt.Map)
    out = []
    for _ in range(updates):
        before = doc.get_state()
        for _ in range(levels_per_update):
            child = pycrdt.Map()
            current["a"] = child
            current = child
        out.append(doc.get_update(before))
    return out


def test_nesting_is_bounded_across_updates() -> None:
    document = Document("deep")
    updates = _deepening_updates(50, 8)
    accepted = 0
    with pytest.raises(LimitExceeded, match="nested deeper"):
        for update in updates:
            document.apply_update(update)
            accepted += 1
    assert accepted == MAX_NESTING // 50
    # The refused update changed nothing, and the document still renders.
    assert document.to_json()["r"] is not None
    assert len(document.digest()) == 64


def test_out_of_order_updates_are_accepted_then_measured() -> None:
    """Yjs updates may arrive out of order (they wait for their dependencies); once the
    missing ones arrive, the document measures itself again and refuses deeper nesting."""
    updates = _deepening_updates(100, 3)
    document = Document("deep")
    for update in reversed(updates):
        document.apply_update(update)
    assert _depth(document.to_json()["r"]) == 300
    with pytest.raises(LimitExceeded, match="nested deeper"):
        document.apply_update(_deepening_updates(100, 4)[3])
    assert _depth(document.to_json()["r"]) == 300


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, dict) and "a" in value:
        value = value["a"]
        depth += 1
    return depth


def test_a_document_at_the_nesting_limit_answers_every_route(tmp_path: Path) -> None:
    """Built the way the crash report built it (many shallow updates), to exactly the limit,
    then one more level: refused with 422; every route answers, before and after a restart,
    and the subtree can be deleted without crashing the node."""
    process = NodeProcess(tmp_path / "n").start()
    try:
        with process.client() as client:
            updates = _deepening_updates(MAX_NESTING // 8, 8 + 1)
            for update in updates[:8]:
                answer = client.post("/v1/docs/deep/update", content=update, headers=OCTET)
                assert answer.status_code == 200, answer.text
            refused = client.post("/v1/docs/deep/update", content=updates[8], headers=OCTET)
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["code"] == "nesting_too_deep"
            _every_route_answers(client)
        process.terminate()
        process.start()
        with process.client() as client:
            _every_route_answers(client)
            deleted = client.patch(
                "/v1/docs/deep", json={"ops": [{"op": "delete", "path": ["r", "a"]}]}
            )
            assert deleted.status_code == 200, deleted.text
            assert client.get("/v1/docs/deep").json()["content"] == {"r": {}}
            assert client.get("/v1/health").status_code == 200
    finally:
        process.close()


def _every_route_answers(client: Any) -> None:
    view = client.get("/v1/docs/deep", params={"digest": "true"})
    assert view.status_code == 200, view.text
    assert _depth(view.json()["content"]["r"]) == MAX_NESTING
    assert client.get("/v1/docs/deep").status_code == 200
    assert client.get("/v1/docs/deep/update").status_code == 200
    assert client.get("/v1/docs/deep/replicas").status_code == 200


def test_a_session_that_deepens_nesting_is_refused_over_sync(node: ThreadedNode) -> None:
    updates = _deepening_updates(100, 3)
    url = node.url.replace("http", "ws") + "/v1/sync/deepws"

    async def scenario() -> int | None:
        async with websockets.connect(url) as ws:
            for update in updates:
                # y-websocket: messageSync (0), update (2), a var-length byte array
                await ws.send(bytes([0, 2]) + _var_uint(len(update)) + update)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(ws.recv(), 10)
                except websockets.ConnectionClosed as closed:
                    return closed.rcvd.code if closed.rcvd is not None else None
            return None

    assert asyncio.run(scenario()) == 1007
    with node.client() as client:
        assert _depth(client.get("/v1/docs/deepws").json()["content"]["r"]) == 200


def _var_uint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


# -- a peer link closing under a sender ---------------------------------------------------


def test_a_message_queued_on_a_closed_link_is_link_closed_not_a_bug() -> None:
    from app.replication import messages as m
    from app.replication.link import LinkClosed, PeerLink

    from .test_peer_protocol import pair, pump

    dialer, acceptor = pair()
    dialer.start()
    pump(dialer, acceptor)
    link = PeerLink(dialer, transport=None)  # type: ignore[arg-type]  # never reached
    link.send_nowait(m.Tombstone(1, "d", 1, ("eu-west-1",)))
    dialer.close("shutdown", "stopping")
    with pytest.raises(LinkClosed, match="link closed"):
        link.send_nowait(m.Tombstone(2, "d", 1, ("eu-west-1",)))


def test_a_peer_that_stops_during_writes_logs_no_error(tmp_path: Path) -> None:
    from .cluster import Cluster

    cluster = Cluster(tmp_path, {"us-east": 1, "eu-west": 1}, latency_ms=2).start()
    try:
        cluster.wait_links_up()
        writer = cluster["us-east-1"]
        with writer.client() as client:
            for index in range(40):
                ops = {"ops": [{"op": "append", "path": ["items"], "values": [index]}]}
                assert client.patch(f"/v1/docs/d{index % 4}", json=ops).status_code == 200
                if index == 20:
                    stopping = cluster["eu-west-1"].process
                    assert stopping is not None and stopping.terminate() == 0
        process = writer.process
        assert process is not None
        logged = "".join(process.output)
        assert '"level": "ERROR"' not in logged and "Traceback" not in logged, logged[-3000:]
    finally:
        cluster.close()
