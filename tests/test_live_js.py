"""Interop with real Yjs clients over ``/v1/sync``: JavaScript ``y-websocket`` providers on
nodes of different regions, and pycrdt's own provider, editing live."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest
import websockets

from .cluster import Cluster
from .support import TIMEOUT_FACTOR, wait_for
from .test_interop_js import JS_DIR

TIMEOUT = 20


class JsClient:
    """``tests/js/live_client.js``: a y-websocket provider driven by JSON lines."""

    def __init__(self, node: str, url: str, doc_id: str) -> None:
        self.process = subprocess.Popen(
            [node, "live_client.js", url, doc_id],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def do(self, **command: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            raise AssertionError(f"the JS client died: {self.process.stderr.read()}")
        return json.loads(line)

    def dump(self) -> dict[str, Any]:
        state: dict[str, Any] = self.do(cmd="dump")
        return state

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.do(cmd="exit")
                self.process.wait(10 * TIMEOUT_FACTOR)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, {"us-east": 1, "eu-west": 1}, latency_ms=20).start()
    try:
        cluster.wait_links_up()
        yield cluster
    finally:
        cluster.close()


def sync_url(cluster: Cluster, node_id: str) -> str:
    return f"ws://127.0.0.1:{cluster[node_id].port}/v1/sync"


def test_js_clients_in_two_regions_edit_concurrently_and_converge(
    regions: Cluster, node_js: str
) -> None:
    a = JsClient(node_js, sync_url(regions, "us-east-1"), "shared")
    b = JsClient(node_js, sync_url(regions, "eu-west-1"), "shared")
    try:
        wait_for(lambda: a.dump()["synced"] and b.dump()["synced"], timeout=TIMEOUT, what="sync")
        for i in range(20):
            a.do(cmd="insert", root="body", index=0, text=f"a{i};")
            b.do(cmd="insert", root="body", index=0, text=f"b{i};")
            a.do(cmd="set", root="settings", key=f"a{i % 3}", value=i)
            b.do(cmd="set", root="settings", key="shared", value=f"b{i}")

        def same() -> bool:
            first, second = a.dump(), b.dump()
            return first["text"] == second["text"] and first["map"] == second["map"]

        wait_for(same, timeout=TIMEOUT, what="both JS clients to converge")
        final = a.dump()
        assert len(final["text"]) == sum(len(f"a{i};") + len(f"b{i};") for i in range(20))
        # Every node stored it: the HTTP view equals what the clients show.
        for node_id in ("us-east-1", "eu-west-1"):
            with regions[node_id].client() as client:
                wait_for(
                    lambda client=client: (
                        client.get("/v1/docs/shared").json()["content"]
                        == {"body": final["text"], "settings": final["map"]}
                    ),
                    timeout=TIMEOUT,
                    what=f"{node_id}'s copy",
                )
    finally:
        a.close()
        b.close()


def test_awareness_crosses_regions(regions: Cluster, node_js: str) -> None:
    a = JsClient(node_js, sync_url(regions, "us-east-1"), "presence")
    b = JsClient(node_js, sync_url(regions, "eu-west-1"), "presence")
    try:
        wait_for(lambda: a.dump()["synced"] and b.dump()["synced"], timeout=TIMEOUT, what="sync")
        a.do(cmd="awareness", state={"user": {"name": "ada", "cursor": 3}})
        wait_for(
            lambda: {"user": {"name": "ada", "cursor": 3}} in b.dump()["peers"],
            timeout=TIMEOUT,
            what="ada's presence in the other region",
        )
        b.do(cmd="awareness", state={"user": {"name": "bob"}})
        wait_for(
            lambda: {"user": {"name": "bob"}} in a.dump()["peers"],
            timeout=TIMEOUT,
            what="bob's presence back",
        )
    finally:
        a.close()
        b.close()


def test_an_offline_client_reconnects_to_another_region_without_loss(
    regions: Cluster, node_js: str
) -> None:
    a = JsClient(node_js, sync_url(regions, "us-east-1"), "travel")
    watcher = JsClient(node_js, sync_url(regions, "us-east-1"), "travel")
    try:
        wait_for(lambda: a.dump()["synced"], timeout=TIMEOUT, what="sync")
        a.do(cmd="insert", root="body", index=0, text="online;")
        a.do(cmd="disconnect")
        for i in range(5):
            a.do(cmd="insert", root="body", index=0, text=f"offline{i};")
        watcher.do(cmd="insert", root="body", index=0, text="meanwhile;")
        a.do(cmd="connect", url=sync_url(regions, "eu-west-1"))

        def converged() -> bool:
            return a.dump()["text"] == watcher.dump()["text"]

        wait_for(converged, timeout=TIMEOUT, what="the traveller to converge")
        text = a.dump()["text"]
        for piece in ["online;", "meanwhile;", *(f"offline{i};" for i in range(5))]:
            assert text.count(piece) == 1, (piece, text)
    finally:
        a.close()
        watcher.close()


class WebsocketsChannel:
    """pycrdt's Channel over a ``websockets`` client connection (the transport only: the
    sync logic is pycrdt's own unmodified Provider)."""

    def __init__(self, websocket: Any, path: str) -> None:
        self._websocket = websocket
        self.path = path

    def __aiter__(self) -> WebsocketsChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return bytes(await self._websocket.recv())
        except websockets.ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        await self._websocket.send(message)

    async def recv(self) -> bytes:
        return bytes(await self._websocket.recv())


async def eventually(condition: Any) -> None:
    """Polls ``condition`` (another process's state) until true, for TIMEOUT seconds."""
    async with asyncio.timeout(TIMEOUT * TIMEOUT_FACTOR):
        while not condition():  # noqa: ASYNC110 - polling state held outside this loop
            await asyncio.sleep(0.05)


def test_a_pycrdt_provider_joins_and_converges(regions: Cluster, node_js: str) -> None:
    js = JsClient(node_js, sync_url(regions, "us-east-1"), "mixed")
    try:
        wait_for(lambda: js.dump()["synced"], timeout=TIMEOUT, what="sync")
        js.do(cmd="insert", root="body", index=0, text="from js;")

        async def python_client() -> str:
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            text = doc.get("body", type=pycrdt.Text)
            url = f"{sync_url(regions, 'eu-west-1')}/mixed"
            async with (
                websockets.connect(url) as websocket,
                pycrdt.Provider(doc, WebsocketsChannel(websocket, "mixed")) as provider,
            ):
                await asyncio.wait_for(provider.synced.wait(), TIMEOUT)
                await eventually(lambda: "from js;" in str(text))
                text.insert(0, "from python;")
                await eventually(lambda: "from python;" in js.dump()["text"])
            return str(text)

        final = asyncio.run(python_client())
        assert js.dump()["text"] == final == "from python;from js;"
    finally:
        js.close()


def test_a_js_client_on_a_non_holder_edits_live_with_one_on_a_holder(
    tmp_path: Path, node_js: str
) -> None:
    """Placement: ap-south holds none of the document, so its node splices the y-websocket
    session to a holder frame by frame; the two JavaScript clients edit live together."""
    cluster = Cluster(
        tmp_path,
        {"us-east": 1, "eu-west": 1, "ap-south": 1},
        latency_ms=10,
        placement={"replicas": 1, "followers": "false"},
    ).start()
    try:
        cluster.wait_links_up()
        with cluster["eu-west-1"].client() as client:
            put = client.put("/v1/docs/spliced/placement", json={"regions": ["eu-west"]})
            assert put.status_code == 200, put.text
        with cluster["ap-south-1"].client() as client:
            wait_for(
                lambda: client.get("/v1/docs/spliced/placement").status_code == 200,
                what="the placement at ap-south-1",
            )
        holder = JsClient(node_js, sync_url(cluster, "eu-west-1"), "spliced")
        remote = JsClient(node_js, sync_url(cluster, "ap-south-1"), "spliced")
        try:
            wait_for(
                lambda: holder.dump()["synced"] and remote.dump()["synced"],
                timeout=TIMEOUT,
                what="sync",
            )
            for i in range(10):
                holder.do(cmd="insert", root="body", index=0, text=f"h{i};")
                remote.do(cmd="insert", root="body", index=0, text=f"r{i};")
                remote.do(cmd="set", root="settings", key=f"r{i % 3}", value=i)

            def same() -> bool:
                first, second = holder.dump(), remote.dump()
                return first["text"] == second["text"] and first["map"] == second["map"]

            wait_for(same, timeout=TIMEOUT, what="both JS clients to converge")
            assert len(holder.dump()["text"]) == 10 * (len("h0;") + len("r0;"))
        finally:
            holder.close()
            remote.close()
        # The node the remote client used stored nothing of it: it only spliced frames.
        with cluster["ap-south-1"].client() as client:
            local = client.get("/v1/docs/spliced", params={"local": "true"})
            assert local.status_code == 404
            series = 'meridian_forwarded_requests_total{method="WS",route="/v1/sync/{doc_id}"}'
            wait_for(
                lambda: series in client.get("/metrics").text,
                what="the spliced sessions counted once they ended",
            )
    finally:
        cluster.close()
