"""Placement with real node processes through the WAN emulator: each document lives on its
holders only, any node answers for any document, and writes whose holders are cut off are
kept as hints and handed off (PRODUCT.md, "Placement"; issue "Placement")."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest
import websockets

from app.auth import create_token
from app.http.forward import FORWARDED_HEADER, sign_forwarded

from .cluster import SECRET, Cluster
from .support import wait_for

LAYOUT = {"us-east": 2, "eu-west": 1, "ap-south": 1}
PLACEMENT = {"replicas": 2, "nodes_per_region": 1}
SEED = random.randrange(2**32)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    print(f"seed={SEED}")
    running = Cluster(tmp_path, LAYOUT, latency_ms=5, placement=PLACEMENT, seed=SEED).start()
    try:
        running.wait_links_up()
        yield running
    finally:
        running.close()


def local(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A read the node serves from its own copy (``local=true``), never from a holder."""
    params = {**kwargs.pop("params", {}), "local": "true"}
    return client.request(method, path, params=params, **kwargs)


def placement_of(cluster: Cluster, doc_id: str, node: str = "us-east-1") -> dict[str, Any]:
    with cluster[node].client() as client:
        answer = client.get(f"/v1/docs/{doc_id}/placement")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


def append(
    client: httpx.Client,
    doc_id: str,
    value: Any,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> httpx.Response:
    ops = {"ops": [{"op": "append", "path": ["items"], "values": [value]}]}
    return client.patch(f"/v1/docs/{doc_id}", json=ops, params=params, headers=headers)


def test_documents_live_exactly_on_their_holders(cluster: Cluster) -> None:
    rng = random.Random(SEED)
    nodes = list(cluster.members)
    docs = [f"doc-{i}" for i in range(1000)]
    clients = {node: cluster[node].client() for node in nodes}
    try:
        for doc_id in docs:
            answer = append(clients[rng.choice(nodes)], doc_id, doc_id)
            assert answer.status_code == 200, answer.text
        expected: dict[str, set[str]] = {node: set() for node in nodes}
        for doc_id in docs:
            placement = placement_of(cluster, doc_id, rng.choice(nodes))
            assert len(placement["regions"]) == 2
            assert len(placement["holders"]) == 2
            for holder in placement["holders"]:
                expected[holder].add(doc_id)
        # Every node holds exactly its documents (no other copy), once replication settled.
        wait_for(
            lambda: all(set(cluster.documents(node)) == expected[node] for node in nodes),
            timeout=60,
            what="every document on exactly its holders",
        )
        # Spread over the nodes of a region, and present with its content on each holder.
        assert expected["us-east-1"] and expected["us-east-2"]
        for node in nodes:
            for doc_id in rng.sample(sorted(expected[node]), 5):
                view = local(clients[node], "GET", f"/v1/docs/{doc_id}")
                assert view.json()["content"] == {"items": [doc_id]}
    finally:
        for client in clients.values():
            client.close()


def test_any_node_answers_every_route(cluster: Cluster) -> None:
    with cluster["eu-west-1"].client() as writer:
        assert append(writer, "routed", 1).status_code == 200
    placement = placement_of(cluster, "routed")
    assert placement["home"] == "eu-west"
    assert "eu-west" in placement["regions"] and len(placement["regions"]) == 2
    # a node of the region that does not hold it (latencies are equal: ties go by name)
    outsider = next(
        node
        for node, member in cluster.members.items()
        if member.region not in placement["regions"]
    )
    with cluster[outsider].client() as client, cluster["eu-west-1"].client() as holder:
        # reads: the same answer as from a holder, naming the node that served it
        view = client.get("/v1/docs/routed", params={"digest": "true"})
        direct = holder.get("/v1/docs/routed", params={"digest": "true"})
        assert view.status_code == 200, view.text
        assert view.json() == direct.json()
        assert view.headers["x-meridian-served-by"] in placement["holders"]
        assert direct.headers["x-meridian-served-by"] == "eu-west-1"
        update = client.get("/v1/docs/routed/update")
        assert update.content == holder.get("/v1/docs/routed/update").content
        since = client.get("/v1/docs/routed/update", params={"since": view.json()["state_vector"]})
        assert since.status_code == 200
        # writes, with durability and read-your-writes kept across the hop
        written = append(client, "routed", 2, durability="all")
        assert written.status_code == 200, written.text
        assert written.json()["durability"] == "all"
        state_vector = written.json()["state_vector"]
        after = client.get("/v1/docs/routed", params={"after": state_vector})
        assert after.json()["content"] == {"items": [1, 2]}
        doc = pycrdt.Doc()
        doc.apply_update(update.content)
        doc.get("items", type=pycrdt.Array).append(3)
        posted = client.post(
            "/v1/docs/routed/update",
            content=doc.get_update(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert posted.status_code == 200, posted.text
        # errors keep their codes
        bad = client.patch("/v1/docs/routed", json={"ops": [{"op": "nope", "path": ["x"]}]})
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_operation")
        missing = client.get("/v1/docs/never-written")
        assert missing.status_code == 404
        # nothing of it is stored at the node that forwarded
        assert "routed" not in cluster.documents(outsider)
        deleted = client.delete("/v1/docs/routed")
        assert deleted.status_code == 200, deleted.text
        assert holder.get("/v1/docs/routed").status_code == 404
        metrics = client.get("/metrics").text
        forwarded = [
            line
            for line in metrics.splitlines()
            if line.startswith("meridian_forwarded_requests_total{")
        ]
        assert any("PATCH" in line and "/v1/docs/{doc_id}" in line for line in forwarded), forwarded
        assert "meridian_placement_records " in metrics
        assert "routed" not in metrics  # no document id in any label


def test_a_forged_forwarded_header_is_refused(cluster: Cluster) -> None:
    with cluster["ap-south-1"].client() as client:
        for value in [
            "eu-west-1;1;00",
            "x" * 300,
            f"eu-west-1;{int(time.time() * 1000)};{'0' * 64}",
        ]:
            answer = client.get("/v1/docs/anything", headers={FORWARDED_HEADER: value})
            assert answer.status_code == 400
            assert answer.json()["error"]["code"] == "forged_forward"
        signed = sign_forwarded(b"another cluster", "eu-west-1", "GET", "/v1/docs/x", time.time())
        answer = client.get("/v1/docs/x", headers={FORWARDED_HEADER: signed})
        assert answer.status_code == 400


def test_writes_with_their_holders_cut_off_are_hints_handed_off(cluster: Cluster) -> None:
    with cluster["eu-west-1"].client() as writer:
        assert append(writer, "far", "first").status_code == 200
    placement = placement_of(cluster, "far")
    # a region that does not hold it, cut off from the others
    outside = next(r for r in LAYOUT if r not in placement["regions"])
    writer_node = f"{outside}-1"
    cluster.wan.do(lambda: cluster.wan.wan.isolate(outside))
    acknowledged = ["first"]
    with cluster[writer_node].client() as client:
        wait_for(
            lambda: all(
                p["state"] != "up"
                for p in client.get("/v1/cluster").json()["peers"]
                if cluster[p["node"]].region != outside
            ),
            what=f"{writer_node}'s links to other regions down",
        )
        for index in range(20):
            answer = append(client, "far", f"hint-{index}")
            assert answer.status_code == 200, answer.text
            acknowledged.append(f"hint-{index}")
        assert "far" in cluster.documents(writer_node)  # kept here, as a hint
    cluster.wan.do(cluster.wan.wan.heal)
    for holder in placement["holders"]:
        with cluster[holder].client() as client:

            def complete(client: httpx.Client = client) -> bool:
                items = local(client, "GET", "/v1/docs/far").json()["content"].get("items", [])
                return sorted(items) == sorted(acknowledged)

            wait_for(complete, timeout=30, what=f"every acknowledged element on {holder}")
            items = local(client, "GET", "/v1/docs/far").json()["content"]["items"]
            assert len(items) == len(set(items)) == len(acknowledged)
    wait_for(
        lambda: "far" not in cluster.documents(writer_node),
        timeout=30,
        what="the hint handed off and dropped",
    )


def test_a_new_holder_asks_a_peer_that_was_unreachable_once_it_is_back(tmp_path: Path) -> None:
    """A node that becomes a holder while a peer with content it lacks is cut off pulls from
    that peer once the link is back. Anti-entropy would not: while the node held no copy, the
    peer left the document out of the changes it listed for it, and the node's checkpoint of
    the peer's feed moved past them (the write there is the document's last one, and the
    peer's outbox gave it up to anti-entropy)."""
    cluster = Cluster(
        tmp_path,
        LAYOUT,
        latency_ms=5,
        placement=PLACEMENT,
        replication={"max_outbox_bytes": 4096},
        seed=SEED,
    ).start()
    try:
        cluster.wait_links_up()
        _pull_from_a_peer_back(cluster)
    finally:
        cluster.close()


def _pull_from_a_peer_back(cluster: Cluster) -> None:
    rounds = _anti_entropy_rounds
    with cluster["us-east-1"].client() as client:
        for doc_id in ("quiet", "filler"):
            placed = client.put(
                f"/v1/docs/{doc_id}/placement", json={"regions": ["us-east", "eu-west"]}
            )
            assert placed.status_code == 200, placed.text
        assert append(client, "quiet", "before").status_code == 200
    wait_for(
        lambda: placement_of(cluster, "quiet", "ap-south-1")["regions"] == ["us-east", "eu-west"],
        what="the placement known at ap-south-1",
    )
    # A write only eu-west-1 has: its link to the other holder is cut, and later writes
    # overflow its outbox for that holder (the write is left to anti-entropy).
    cluster.wan.do(lambda: cluster.wan.wan.cut("us-east", "eu-west"))
    with cluster["eu-west-1"].client() as client:
        wait_for(
            lambda: _link_state(client, "us-east-1") != "up",
            what="eu-west-1's links to us-east down",
        )
        answer = append(client, "quiet", "only-in-eu-west")
        assert answer.status_code == 200, answer.text
        for index in range(4):
            assert append(client, "filler", f"{index}" * 3000).status_code == 200
    # ap-south-1 compares with eu-west-1 after that write: its checkpoint passes it.
    start = rounds(cluster, "ap-south-1", "eu-west-1")
    wait_for(
        lambda: rounds(cluster, "ap-south-1", "eu-west-1") >= start + 2,
        what="two anti-entropy rounds of ap-south-1 with eu-west-1",
    )
    cluster.wan.do(lambda: cluster.wan.wan.cut("ap-south", "eu-west"))
    with cluster["ap-south-1"].client() as client:
        wait_for(
            lambda: _link_state(client, "eu-west-1") != "up",
            what="ap-south-1's link to eu-west-1 down",
        )
    with cluster["us-east-1"].client() as client:
        moved = client.put("/v1/docs/quiet/placement", json={"regions": ["ap-south", "eu-west"]})
        assert moved.status_code == 200, moved.text
    with cluster["ap-south-1"].client() as client:

        def pulls_pending() -> int:
            view = client.get("/v1/cluster").json()
            return int(view["placement"]["handoff"]["pulls_pending"])

        wait_for(lambda: pulls_pending() >= 1, what="ap-south-1 waiting to ask eu-west-1")
        cluster.wan.do(cluster.wan.wan.heal)

        def complete() -> bool:
            answer = local(client, "GET", "/v1/docs/quiet")
            items = answer.json()["content"].get("items", []) if answer.status_code == 200 else []
            return sorted(items) == ["before", "only-in-eu-west"]

        wait_for(complete, timeout=30, what="every acknowledged element on ap-south-1")
        wait_for(lambda: pulls_pending() == 0, what="no pull pending")


def _link_state(client: httpx.Client, peer: str) -> str:
    peers = client.get("/v1/cluster").json()["peers"]
    return str(next(p["state"] for p in peers if p["node"] == peer))


def _anti_entropy_rounds(cluster: Cluster, node: str, peer: str) -> int:
    peers = cluster.cluster_view(node)["peers"]
    return int(next(p["anti_entropy"]["rounds"] for p in peers if p["node"] == peer))


def test_a_pinned_document_cut_off_is_refused_and_nothing_is_stored(cluster: Cluster) -> None:
    with cluster["us-east-1"].client() as client:
        pinned = client.put(
            "/v1/docs/resident/placement", json={"regions": ["eu-west"], "pinned": True}
        )
        assert pinned.status_code == 200, pinned.text
        assert pinned.json()["holders"] == ["eu-west-1"]

    def pin_known() -> bool:
        with cluster["ap-south-1"].client() as client:
            answer = client.get("/v1/docs/resident/placement")
            return answer.status_code == 200 and answer.json()["pinned"]

    wait_for(pin_known, what="the pin known at ap-south-1")
    cluster.wan.do(lambda: cluster.wan.wan.isolate("ap-south"))
    with cluster["ap-south-1"].client() as client:
        wait_for(
            lambda: all(p["state"] != "up" for p in client.get("/v1/cluster").json()["peers"]),
            what="ap-south-1's links down",
        )
        refused = append(client, "resident", "secret")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "pinned_regions_unreachable"
    assert "resident" not in cluster.documents("ap-south-1")
    cluster.wan.do(cluster.wan.wan.heal)


def test_a_blind_hint_goes_to_the_incarnation_after_the_last_deleted(cluster: Cluster) -> None:
    """A node that never saw a deleted and re-created document, cut off from every copy,
    keeps a write as a hint without fetching: it writes into the incarnation after the
    highest its placement record knows deleted, so the holders keep the write (a first
    incarnation would be discarded as stale: an acknowledged write lost)."""
    with cluster["eu-west-1"].client() as client:
        placed = client.put("/v1/docs/blind/placement", json={"regions": ["eu-west", "us-east"]})
        assert placed.status_code == 200, placed.text
        for n in range(2):
            assert append(client, "blind", f"life-{n}").status_code == 200
            assert client.delete("/v1/docs/blind").status_code == 200
        answer = append(client, "blind", "current")
        assert answer.status_code == 200 and answer.json()["incarnation"] == 3, answer.text

    def deletion_known() -> bool:
        return placement_of(cluster, "blind", "ap-south-1")["deleted_incarnation"] == 2

    wait_for(deletion_known, what="ap-south-1's record knows incarnation 2 deleted")
    assert "blind" not in cluster.documents("ap-south-1")
    cluster.wan.do(lambda: cluster.wan.wan.isolate("ap-south"))
    with cluster["ap-south-1"].client() as client:
        wait_for(
            lambda: all(p["state"] != "up" for p in client.get("/v1/cluster").json()["peers"]),
            what="ap-south-1's links down",
        )
        hint = append(client, "blind", "blind-hint")
        assert hint.status_code == 200, hint.text
        assert hint.headers["x-meridian-served-by"] == "ap-south-1"
        assert hint.json()["incarnation"] == 3
    cluster.wan.do(cluster.wan.wan.heal)
    for holder in placement_of(cluster, "blind")["holders"]:
        with cluster[holder].client() as client:

            def both() -> bool:
                answer = local(client, "GET", "/v1/docs/blind")
                items = answer.json().get("content", {}).get("items", [])
                return sorted(items) == ["blind-hint", "current"]

            wait_for(both, timeout=30, what=f"the blind hint at {holder}")


def _sync_write(url: str, doc_id: str, text: str) -> None:
    """Writes ``text`` into root "body" through a real y-websocket session at ``url``."""

    async def session() -> None:
        async with websockets.connect(f"{url.replace('http', 'ws')}/v1/sync/{doc_id}") as ws:
            doc = pycrdt.Doc()
            doc.get("body", type=pycrdt.Text).insert(0, text)
            update = doc.get_update()
            await ws.send(bytes([0, 2]) + _var_uint(len(update)) + update)
            # the sync step 1 from the server proves the session is served; then leave
            await asyncio.wait_for(ws.recv(), 10)

    asyncio.run(session())


def _var_uint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def test_a_pinned_document_never_leaves_its_region(cluster: Cluster) -> None:
    """Residency: a marker written into a pinned document through every node and every
    route is found nowhere outside the pinned region: not in any other node's DuckDB file or
    write-ahead log, nor in their logs."""
    marker = f"MARKER-{random.Random(SEED).randrange(10**12):012d}-RESIDENT"
    with cluster["us-east-1"].client() as client:
        answer = client.put(
            "/v1/docs/pinned/placement", json={"regions": ["eu-west"], "pinned": True}
        )
        assert answer.status_code == 200, answer.text
    for node in cluster.members:
        wait_for(
            lambda node=node: placement_of(cluster, "pinned", node)["pinned"],
            what=f"the pin known at {node}",
        )
    for index, node in enumerate(cluster.members):
        with cluster[node].client() as client:
            ops = {"ops": [{"op": "append", "path": ["items"], "values": [f"{marker}-{index}"]}]}
            assert client.patch("/v1/docs/pinned", json=ops).status_code == 200
            doc = pycrdt.Doc()
            doc.get("m", type=pycrdt.Map)[f"k{index}"] = f"{marker}-bin-{index}"
            posted = client.post(
                "/v1/docs/pinned/update",
                content=doc.get_update(),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert posted.status_code == 200, posted.text
            read = client.get("/v1/docs/pinned")
            assert marker in read.text
            assert client.get("/v1/docs/pinned/update").status_code == 200
        _sync_write(cluster[node].url, "pinned", f"{marker}-ws-{index}")
    with cluster["eu-west-1"].client() as client:
        wait_for(
            lambda: client.get("/v1/docs/pinned").text.count(marker) == 3 * len(cluster.members),
            what="every marker at the holder",
        )
    outside = [m for m in cluster.members.values() if m.region != "eu-west"]
    for member in outside:
        process = member.process
        assert process is not None
        assert process.terminate() == 0  # files complete (WAL folded or kept), logs flushed
        files = [path for path in (cluster.root / member.node_id).rglob("*") if path.is_file()]
        assert any(path.name == "meridian.duckdb" for path in files)
        for path in files:
            assert marker.encode() not in path.read_bytes(), f"{marker} in {path}"
        assert marker not in "".join(process.output), f"{marker} in {member.node_id}'s log"


def test_a_placement_change_under_writes_loses_nothing(cluster: Cluster) -> None:
    """List-append writers at every node while the document's regions change twice: every
    acknowledged element ends up exactly once on every final holder, and the old copies are
    handed off and dropped. The writers create the document at four nodes at once, each with
    its own draft record, so copies are handed off and forgotten while writes go on: a node
    writing again to a copy it forgot must not reuse the Yjs ids of its earlier edits."""
    acknowledged: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(node: str, tag: str) -> None:
        try:
            with cluster[node].client() as client:
                index = 0
                while not stop.is_set():
                    value = f"{tag}-{index}"
                    answer = append(client, "moving", value)
                    if answer.status_code == 200:
                        acknowledged.append(value)
                    index += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(node, f"w{n}"))
        for n, node in enumerate(cluster.members)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(acknowledged) > 40, what="writes to flow")
        with cluster["us-east-1"].client() as client:
            for regions in (["ap-south"], ["us-east", "eu-west"]):
                moved = client.put("/v1/docs/moving/placement", json={"regions": regions})
                assert moved.status_code == 200, moved.text
                done = len(acknowledged)
                wait_for(lambda done=done: len(acknowledged) > done + 40, what="more writes")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors
    holders = placement_of(cluster, "moving")["holders"]
    assert {cluster[h].region for h in holders} == {"us-east", "eu-west"}
    for holder in holders:
        with cluster[holder].client() as client:

            def complete(client: httpx.Client = client) -> list[Any] | None:
                answer = local(client, "GET", "/v1/docs/moving")
                items = answer.json()["content"]["items"] if answer.status_code == 200 else []
                return items if set(items) >= set(acknowledged) else None

            try:
                items = wait_for(
                    complete, timeout=60, what=f"every acknowledged element on {holder}"
                )
            except AssertionError:
                answer = local(client, "GET", "/v1/docs/moving")
                held = answer.json()["content"]["items"] if answer.status_code == 200 else []
                missing = sorted(set(acknowledged) - set(held))
                raise AssertionError(
                    f"seed={SEED}: {holder} lacks {len(missing)} acknowledged elements "
                    f"{missing[:10]}; cluster: {client.get('/v1/cluster').json()['placement']}"
                ) from None
            assert len(items) == len(set(items)), "an element is present twice"
    others = [node for node in cluster.members if node not in holders]
    wait_for(
        lambda: all("moving" not in cluster.documents(node) for node in others),
        timeout=60,
        what="the old copies handed off and dropped",
    )


def test_forwarded_requests_keep_the_token_and_the_holder_checks_it(tmp_path: Path) -> None:
    """With tokens on, a non-holder forwards the caller's token; the holder verifies it too,
    and an answer keeps its status and error code across the hop."""
    cluster = Cluster(
        tmp_path, {"us-east": 1, "eu-west": 1, "ap-south": 1}, latency_ms=5, auth=True,
        placement={"replicas": 1, "followers": "false"},
    ).start()  # fmt: skip
    try:
        secret = SECRET.encode()
        admin = create_token(secret, prefix="", rights=["read"], ttl_seconds=600)
        writer = create_token(secret, prefix="team:", rights=["read", "write"], ttl_seconds=600)
        reader = create_token(secret, prefix="team:", rights=["read"], ttl_seconds=600)

        def links_up() -> bool:
            for node in cluster.members:
                with cluster[node].client() as client:
                    view = client.get("/v1/cluster", headers={"Authorization": f"Bearer {admin}"})
                    if any(peer["state"] != "up" for peer in view.json()["peers"]):
                        return False
            return True

        wait_for(links_up, timeout=30, what="every link up")
        with cluster["eu-west-1"].client() as client:
            headers = {"Authorization": f"Bearer {writer}"}
            put = client.put(
                "/v1/docs/team:doc/placement", json={"regions": ["eu-west"]}, headers=headers
            )
            assert put.status_code == 200, put.text
            assert append(client, "team:doc", 1, headers=headers).status_code == 200
        with cluster["ap-south-1"].client() as client:
            wait_for(
                lambda: (
                    client.get(
                        "/v1/docs/team:doc/placement", headers={"Authorization": f"Bearer {reader}"}
                    ).status_code
                    == 200
                ),
                what="the placement at ap-south-1",
            )
            for token, status in ((writer, 200), (reader, 403)):
                answer = append(client, "team:doc", 2, headers={"Authorization": f"Bearer {token}"})
                assert answer.status_code == status, answer.text
            read = client.get("/v1/docs/team:doc", headers={"Authorization": f"Bearer {reader}"})
            assert read.status_code == 200
            assert read.headers["x-meridian-served-by"] == "eu-west-1"
            assert read.json()["content"] == {"items": [1, 2]}
            assert client.get("/v1/docs/team:doc").status_code == 401
    finally:
        cluster.close()


def test_a_holder_killed_its_region_takes_the_writes_on_the_next_node(cluster: Cluster) -> None:
    """A document pinned to us-east whose holder is SIGKILLed stays writable from every region:
    the next us-east node in rendezvous order takes each write as a hint (the WAN-crossing
    node outside the pin may not), and hands it to the holder once it is back."""
    with cluster["eu-west-1"].client() as client:
        pinned = client.put(
            "/v1/docs/resident-us/placement", json={"regions": ["us-east"], "pinned": True}
        )
        assert pinned.status_code == 200, pinned.text
        (holder,) = pinned.json()["holders"]
        assert append(client, "resident-us", "first").status_code == 200
    spare = next(n for n in ("us-east-1", "us-east-2") if n != holder)
    cluster.kill(holder)
    acknowledged = ["first"]
    for writer in ("eu-west-1", "ap-south-1", spare):
        with cluster[writer].client() as client:

            def peer_down(client: httpx.Client = client) -> bool:
                peers = client.get("/v1/cluster").json()["peers"]
                return any(p["node"] == holder and p["state"] != "up" for p in peers)

            wait_for(peer_down, what=f"{writer} sees {holder} down")
            for index in range(5):
                answer = append(client, "resident-us", f"{writer}-{index}")
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-meridian-served-by"] == spare
                acknowledged.append(f"{writer}-{index}")
    assert "resident-us" in cluster.documents(spare)  # the stand-in's hint
    # No copy is live: a read is served by the stand-in (the writes it took), not a 503.
    with cluster["eu-west-1"].client() as client:
        read = client.get("/v1/docs/resident-us")
        assert read.status_code == 200, read.text
        assert read.headers["x-meridian-served-by"] == spare
        assert set(acknowledged[1:]) <= set(read.json()["content"]["items"])
    for outside in ("eu-west-1", "ap-south-1"):
        assert "resident-us" not in cluster.documents(outside)
    cluster.start_node(holder)
    with cluster[holder].client() as client:

        def complete() -> bool:
            answer = local(client, "GET", "/v1/docs/resident-us")
            items = answer.json()["content"].get("items", []) if answer.status_code == 200 else []
            return sorted(items) == sorted(acknowledged)

        wait_for(complete, timeout=30, what=f"every acknowledged element on {holder}")
        items = local(client, "GET", "/v1/docs/resident-us").json()["content"]["items"]
        assert len(items) == len(set(items))
    wait_for(
        lambda: "resident-us" not in cluster.documents(spare),
        timeout=30,
        what="the stand-in's hint handed off and dropped",
    )


def test_a_stand_in_writes_into_the_current_incarnation(cluster: Cluster) -> None:
    """A stand-in that has never seen a deleted and re-created document fetches it from a
    live copy before it takes a write: the write lands in the current incarnation (blind,
    it would create incarnation 1, which the holders discard as stale)."""
    with cluster["eu-west-1"].client() as client:
        for n in range(3):
            assert append(client, "reborn", f"life-{n}").status_code == 200
            assert client.delete("/v1/docs/reborn").status_code == 200
        answer = append(client, "reborn", "current")
        assert answer.status_code == 200, answer.text
        current = answer.json()["incarnation"]
        assert current == 4
    placement = placement_of(cluster, "reborn")
    if "us-east" not in placement["regions"]:
        with cluster["eu-west-1"].client() as client:
            moved = client.put(
                "/v1/docs/reborn/placement", json={"regions": ["eu-west", "us-east"]}
            )
            assert moved.status_code == 200, moved.text
        placement = placement_of(cluster, "reborn")
    (holder,) = [n for n in placement["holders"] if n.startswith("us-east")]
    spare = next(n for n in ("us-east-1", "us-east-2") if n != holder)
    with cluster[holder].client() as client:
        wait_for(
            lambda: local(client, "GET", "/v1/docs/reborn").json().get("incarnation") == current,
            what=f"{holder} at incarnation {current}",
        )
    assert "reborn" not in cluster.documents(spare)
    cluster.kill(holder)
    with cluster[spare].client() as client:

        def holder_down() -> bool:
            peers = client.get("/v1/cluster").json()["peers"]
            return any(p["node"] == holder and p["state"] != "up" for p in peers)

        wait_for(holder_down, what=f"{spare} sees {holder} down")
        answer = append(client, "reborn", "stand-in")
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-meridian-served-by"] == spare
        assert answer.json()["incarnation"] == current
    with cluster["eu-west-1"].client() as client:

        def both() -> bool:
            items = local(client, "GET", "/v1/docs/reborn").json()["content"].get("items", [])
            return sorted(items) == ["current", "stand-in"]

        wait_for(both, timeout=30, what="the stand-in's write at eu-west-1")
