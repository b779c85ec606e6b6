"""Elastic membership with real node processes: a node joins a running cluster (no restart of
the others) and takes its share of the documents, leaves and hands them back, a dead node is
removed; bad joins are refused and change nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client

from app.cluster.joining import JOIN_PATH, SIGNATURE_HEADER, signed_target
from app.cluster.placement import PlacementRecord, Stamp, Topology, holders
from app.cluster.topology import Member as PlacementMember
from app.http.forward import sign_forwarded

from .cluster import SECRET, Cluster, free_port
from .support import REPO, NodeProcess, wait_for

#: One region holds each document, one node of it: a joiner's share is visible at once.
PLACEMENT = {"replicas": 1, "nodes_per_region": 1, "followers": "false", "rehome": "false"}
LAYOUT = {"us-east": 1, "eu-west": 1}
DOCS = 80


def members_of(url: str) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{url}/v1/cluster/members", timeout=10)
    answer.raise_for_status()
    return {entry["node"]: entry for entry in answer.json()["members"]}


def held(url: str) -> set[str]:
    """The live documents a node holds a copy of."""
    out: set[str] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = httpx.get(f"{url}/v1/docs", params=params, timeout=10).json()
        out |= {d["id"] for d in page["documents"]}
        cursor = page["next_cursor"]
        if not cursor:
            return out


def append(url: str, doc_id: str, value: str) -> None:
    ops = {"ops": [{"op": "append", "path": ["items"], "values": [value]}]}
    answer = httpx.patch(f"{url}/v1/docs/{doc_id}", json=ops, timeout=30)
    assert answer.status_code == 200, answer.text


def items(url: str, doc_id: str) -> list[str]:
    answer = httpx.get(f"{url}/v1/docs/{doc_id}", timeout=30)
    assert answer.status_code == 200, (doc_id, answer.text)
    return list(answer.json()["content"].get("items", []))


def meridian(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs the ``meridian`` command with the cluster secret in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=REPO,
        env={"MERIDIAN_CLUSTER_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=180,
    )


def joiner(cluster: Cluster, tmp: Path, region: str, seed: str, **kwargs: Any) -> NodeProcess:
    return NodeProcess(
        tmp,
        region=region,
        config=cluster.config,
        env={"MERIDIAN_CLUSTER_SECRET": kwargs.pop("secret", SECRET)},
        extra=["--join", seed, *kwargs.pop("extra", [])],
        **kwargs,
    )


def expected_share(nodes: list[str], region: str, doc_ids: list[str]) -> set[str]:
    """The documents rendezvous hashing gives each ``nodes[-1]`` among ``nodes``."""
    topology = Topology(
        regions=tuple(sorted(LAYOUT)),
        latency_ms={("eu-west", "us-east"): 20.0},
        replicas=1,
        members=tuple(PlacementMember(n, region) for n in nodes),
    )
    return {
        d
        for d in doc_ids
        if holders(PlacementRecord.new(d, region, Stamp(1, nodes[0])), topology) == (nodes[-1],)
    }


class Writer:
    """Appends to the documents in turn, through one node, until stopped; keeps what was
    acknowledged."""

    def __init__(self, url: str, doc_ids: list[str]) -> None:
        self.url, self.doc_ids = url, doc_ids
        self.acked: dict[str, list[str]] = {d: [] for d in doc_ids}
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        n = 0
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                doc_id = self.doc_ids[n % len(self.doc_ids)]
                value = f"w{n}"
                ops = {"ops": [{"op": "append", "path": ["items"], "values": [value]}]}
                try:
                    answer = client.patch(f"{self.url}/v1/docs/{doc_id}", json=ops)
                except httpx.HTTPError as exc:
                    self.errors.append(str(exc))
                    continue
                if answer.status_code == 200:
                    self.acked[doc_id].append(value)
                else:
                    self.errors.append(f"{answer.status_code} {answer.text[:200]}")
                n += 1

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, LAYOUT, latency_ms=10, placement=PLACEMENT).start()
    try:
        running.wait_links_up()
        yield running
    finally:
        running.close()


def check_every_ack(urls: list[str], acked: dict[str, list[str]]) -> None:
    for url in urls:
        for doc_id, values in acked.items():
            present = items(url, doc_id)
            for value in values:
                assert present.count(value) == 1, (url, doc_id, value)


def test_a_node_joins_takes_its_share_and_leaves_again(cluster: Cluster, tmp_path: Path) -> None:
    east, west = cluster["us-east-1"], cluster["eu-west-1"]
    doc_ids = [f"doc-{i}" for i in range(DOCS)]
    for doc_id in doc_ids:
        append(east.url, doc_id, "first")
    assert held(east.url) == set(doc_ids)

    new = joiner(cluster, tmp_path / "new", "us-east", f"127.0.0.1:{west.port}")
    with Writer(west.url, doc_ids[:10]) as writer:
        process = new.start()
        try:
            mine = [n for n, e in members_of(new.url).items() if e["liveness"] == "self"]
            assert len(mine) == 1
            node_id = mine[0]
            # Every node learns of it, and it becomes active once it has its share.
            for url in (east.url, west.url, new.url):
                wait_for(
                    lambda url=url: members_of(url).get(node_id, {}).get("state") == "active",
                    timeout=30,
                    what=f"{url} to list {node_id} active",
                )
            share = expected_share(["us-east-1", node_id], "us-east", doc_ids)
            assert 0 < len(share) < DOCS
            wait_for(lambda: held(new.url) == share, timeout=60, what="the joiner's share")
            wait_for(
                lambda: held(east.url) == set(doc_ids) - share,
                timeout=60,
                what="us-east-1 to drop the copies it handed over",
            )
        finally:
            writer.stop.set()
    writer.thread.join(timeout=60)
    assert sum(map(len, writer.acked.values())) > 0
    # meridian status asks the joined node too (regions.toml does not list it), and --check
    # finds every document on exactly its holders.
    status = meridian("status", "--url", east.url, "--check")
    assert status.returncode == 0, status.stdout + status.stderr
    assert node_id in status.stdout and "not asked" not in status.stdout, status.stdout
    metrics = httpx.get(f"{east.url}/metrics", timeout=10).text
    assert 'meridian_members{state="active"} 3.0' in metrics
    assert 'meridian_member_transitions_total{state="joining"} 1.0' in metrics
    for doc_id in doc_ids:
        assert items(new.url, doc_id)[0] == "first"
    check_every_ack([east.url, west.url, new.url], writer.acked)

    # A live client of the leaving node is sent away (1012: reconnect), so the node's copy
    # can go; it leaves: hands its documents back and stops, exit status 0.
    followed = sorted(share)[0]
    # A delete made at the leaving node reaches the others before it goes (its tombstone
    # stays there, and does not hold the leave up).
    deleted = sorted(share)[1]
    assert httpx.delete(f"{new.url}/v1/docs/{deleted}", timeout=30).status_code == 200
    with websockets.sync.client.connect(f"ws://{new.url[7:]}/v1/sync/{followed}") as client:
        wait_for(
            lambda: (
                httpx.get(f"{new.url}/v1/cluster", timeout=10).json()["clients"]["sync_clients"]
                == 1
            ),
            timeout=10,
            what="the client to be followed on the joined node",
        )
        leave = meridian("node", "leave", "--url", new.url, "--timeout", "120")
        assert leave.returncode == 0, leave.stdout + leave.stderr
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                client.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert process.process is not None
    assert process.process.wait(timeout=60) == 0
    new.close()
    wait_for(
        lambda: held(east.url) == set(doc_ids) - {deleted},
        timeout=60,
        what="us-east-1 holds all but the deleted one",
    )
    assert httpx.get(f"{east.url}/v1/docs/{deleted}", timeout=10).status_code == 404
    writer.acked.pop(deleted, None)
    for url in (east.url, west.url):
        assert members_of(url)[node_id]["state"] == "removed"
    status = meridian("status", "--url", east.url)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "members that are not active" in status.stdout
    assert any(node_id in line and "removed" in line for line in status.stdout.splitlines())
    check_every_ack([east.url, west.url], writer.acked)

    # A removed node restarted with its data is refused: it never comes back.
    again = NodeProcess(
        tmp_path / "new",
        region="us-east",
        config=cluster.config,
        env={"MERIDIAN_CLUSTER_SECRET": SECRET},
    )
    with pytest.raises(AssertionError, match="was removed from the cluster"):
        again.start()
    again.close()
    assert members_of(east.url)[node_id]["state"] == "removed"


def test_a_joiner_killed_half_way_resumes_and_serves_only_a_full_share(tmp_path: Path) -> None:
    """A joining node SIGKILLed while it takes its share starts again on its data: it asks
    again for every document of the share (not only those whose records are new to it), so
    when it turns active its copy of each is complete — before any old holder hands off."""
    # Slow moves (the hand-offs after it turns active too) leave room for the kill and for a
    # look at its copies before the old holder hands anything over.
    placement = {**PLACEMENT, "move_rate": 15.0}
    cluster = Cluster(tmp_path, LAYOUT, latency_ms=10, placement=placement).start()
    try:
        cluster.wait_links_up()
        east = cluster["us-east-1"]
        doc_ids = [f"r{i}" for i in range(120)]
        for doc_id in doc_ids:
            append(east.url, doc_id, "first")
        port = free_port()
        seed = f"127.0.0.1:{east.port}"
        first = joiner(cluster, tmp_path / "new", "us-east", seed, listen=f"127.0.0.1:{port}")
        first.start()
        node_id = next(n for n, e in members_of(first.url).items() if e["liveness"] == "self")
        share = expected_share(["us-east-1", node_id], "us-east", doc_ids)

        def pulled() -> int:
            view = httpx.get(f"{first.url}/v1/cluster", timeout=10).json()
            return int(view["placement"]["handoff"]["pulled"])

        wait_for(lambda: pulled() >= 5, timeout=30, what="some documents pulled")
        assert members_of(east.url)[node_id]["state"] == "joining"
        first.kill()
        first.close()
        again = joiner(cluster, tmp_path / "new", "us-east", seed, listen=f"127.0.0.1:{port}")
        again.start()
        try:
            wait_for(
                lambda: members_of(again.url)[node_id]["state"] == "active",
                timeout=60,
                what="the restarted joiner active",
            )
            # At once: every document of its share is here, whole (nothing handed off yet).
            assert held(again.url) == share
            for doc_id in sorted(share):
                answer = httpx.get(
                    f"{again.url}/v1/docs/{doc_id}", params={"local": "true"}, timeout=10
                )
                assert answer.status_code == 200, (doc_id, answer.text)
                assert answer.json()["content"]["items"] == ["first"]
            wait_for(
                lambda: held(east.url) == set(doc_ids) - share,
                timeout=60,
                what="us-east-1 to hand the share over",
            )
        finally:
            again.close()
    finally:
        cluster.close()


def wait_active(new: NodeProcess, seed_url: str) -> str:
    """The id of the joiner ``new``, once the node at ``seed_url`` lists it as active."""
    node_id = next(n for n, e in members_of(new.url).items() if e["liveness"] == "self")
    wait_for(
        lambda: members_of(seed_url)[node_id]["state"] == "active",
        timeout=30,
        what="the joiner active",
    )
    return node_id


def test_a_dead_node_is_removed_and_its_documents_move(tmp_path: Path) -> None:
    # Two regions hold each document: the dead node's documents have a copy in eu-west.
    placement = {**PLACEMENT, "replicas": 2}
    cluster = Cluster(tmp_path, LAYOUT, latency_ms=10, placement=placement).start()
    cluster.wait_links_up()
    east, west = cluster["us-east-1"], cluster["eu-west-1"]
    new = joiner(cluster, tmp_path / "new", "us-east", f"127.0.0.1:{east.port}").start()
    try:
        node_id = wait_active(new, east.url)
        doc_ids = [f"d{i}" for i in range(40)]
        for doc_id in doc_ids:  # home us-east: held by one node there, and by eu-west-1
            append(east.url, doc_id, "kept")
        share = expected_share(["us-east-1", node_id], "us-east", doc_ids)
        wait_for(lambda: held(new.url) >= share, timeout=30, what="the joiner's documents")
        new.kill()
        remove = meridian("node", "remove", node_id, "--url", west.url)
        assert remove.returncode == 0, remove.stdout + remove.stderr
        for url in (east.url, west.url):
            wait_for(
                lambda url=url: members_of(url)[node_id]["state"] == "removed",
                timeout=30,
                what="the removal everywhere",
            )
        # Its documents are served again by us-east-1 (from the other copies and hints).
        wait_for(lambda: held(east.url) >= set(doc_ids), timeout=60, what="us-east-1 takes them")
        for doc_id in doc_ids:
            assert items(east.url, doc_id) == ["kept"]
        # Removing it again is fine.
        again = meridian("node", "remove", node_id, "--url", east.url)
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        new.close()
        cluster.close()


def test_a_node_removed_while_it_runs_serves_nothing_more(tmp_path: Path) -> None:
    """``meridian node remove`` of a node that still runs: once it knows (its peers close
    their links to it because of it), it answers every document request with 503
    node_removed, closes WebSockets with 1013, and its health probe fails; nothing it is sent
    is stored there."""
    cluster = Cluster(tmp_path, LAYOUT, latency_ms=10, placement=PLACEMENT).start()
    cluster.wait_links_up()
    east = cluster["us-east-1"]
    new = joiner(cluster, tmp_path / "new", "us-east", f"127.0.0.1:{east.port}").start()
    try:
        node_id = wait_active(new, east.url)
        remove = meridian("node", "remove", node_id, "--url", east.url)
        assert remove.returncode == 0, remove.stdout + remove.stderr

        def refuses() -> bool:
            return httpx.get(f"{new.url}/v1/health", timeout=10).status_code == 503

        wait_for(refuses, timeout=30, what="the removed node knowing it")
        health = httpx.get(f"{new.url}/v1/health", timeout=10).json()
        assert health["error"]["code"] == "node_removed", health
        ops = {"ops": [{"op": "append", "path": ["items"], "values": ["stranded"]}]}
        write = httpx.patch(f"{new.url}/v1/docs/after-removal", json=ops, timeout=30)
        assert write.status_code == 503, write.text
        assert write.json()["error"]["code"] == "node_removed"
        assert httpx.get(f"{new.url}/v1/docs/after-removal", timeout=30).status_code == 503
        ws_url = new.url.replace("http", "ws") + "/v1/sync/after-removal"
        with websockets.sync.client.connect(ws_url) as websocket:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                websocket.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert "after-removal" not in held(east.url)
        page = httpx.get(f"{new.url}/v1/docs", timeout=10).json()
        assert "after-removal" not in {d["id"] for d in page["documents"]}
    finally:
        new.close()
        cluster.close()


def test_bad_joins_are_refused_and_change_nothing(cluster: Cluster, tmp_path: Path) -> None:
    east, west = cluster["us-east-1"], cluster["eu-west-1"]
    before = members_of(east.url)
    seed = f"127.0.0.1:{east.port}"
    wrong_secret = joiner(cluster, tmp_path / "a", "us-east", seed, secret="not-the-secret")
    with pytest.raises(AssertionError, match="refused this node's join: bad_signature"):
        wrong_secret.start()
    wrong_secret.close()
    taken = joiner(
        cluster, tmp_path / "b", "us-east", seed, extra=["--advertise", f"127.0.0.1:{west.port}"]
    )
    with pytest.raises(AssertionError, match=r"address \S+ is held by member eu-west-1"):
        taken.start()
    taken.close()
    # A listed node's id in another region: the command refuses it before asking anyone.
    taken_id = joiner(cluster, tmp_path / "c", "us-east", seed, extra=["--node-id", "eu-west-1"])
    with pytest.raises(AssertionError, match="node eu-west-1 is listed in region eu-west"):
        taken_id.start()
    taken_id.close()
    # Unsigned, forged or malformed requests straight to the route.
    entry = {
        "node": "us-east-x",
        "region": "mars",
        "address": "127.0.0.1:9",
        "state": "joining",
        "incarnation": 1,
        "weight": 1.0,
        "stamp": [1, "us-east-x"],
    }
    body = json.dumps(entry).encode()
    answer = httpx.post(f"{east.url}/v1/cluster/join", content=body, timeout=10)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "signature_required"
    answer = httpx.post(
        f"{east.url}/v1/cluster/join",
        content=body,
        headers={"x-meridian-signature": "us-east-x;1;00"},
        timeout=10,
    )
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "bad_signature"
    answer = httpx.post(f"{east.url}/v1/cluster/members/us-east-1/remove", timeout=10)
    assert answer.status_code == 403
    # Signed with the secret, but an unknown region, a removed id's old incarnation or
    # someone else's id: refused with the reason.
    assert (
        signed_join(east.url, entry).json()["error"]["message"].startswith("unknown region 'mars'")
    )
    other = {**entry, "node": "eu-west-1", "region": "eu-west"}
    answer = signed_join(east.url, other)
    assert answer.status_code == 409
    assert "already a member" in answer.json()["error"]["message"]
    answer = signed_join(east.url, {**entry, "state": "active", "region": "us-east"})
    assert answer.status_code == 409
    answer = signed_join(east.url, {**entry, "region": "us-east", "weight": "heavy"})
    assert answer.status_code == 422
    assert members_of(east.url) == before


def signed_join(url: str, entry: dict[str, Any]) -> httpx.Response:
    body = json.dumps(entry).encode()
    target = signed_target(JOIN_PATH, body)
    signature = sign_forwarded(SECRET.encode(), entry["node"], "POST", target, time.time())
    return httpx.post(
        f"{url}{target}", content=body, headers={SIGNATURE_HEADER: signature}, timeout=10
    )


def test_concurrent_joins_at_different_seeds_converge(cluster: Cluster, tmp_path: Path) -> None:
    east, west = cluster["us-east-1"], cluster["eu-west-1"]
    doc_ids = [f"c{i}" for i in range(40)]
    for i, doc_id in enumerate(doc_ids):
        append((east if i % 2 else west).url, doc_id, "one")
    a = joiner(cluster, tmp_path / "a", "us-east", f"127.0.0.1:{east.port}")
    b = joiner(
        cluster, tmp_path / "b", "eu-west", f"127.0.0.1:{west.port}", extra=["--weight", "3"]
    )
    started = [threading.Thread(target=node.start) for node in (a, b)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=60)
    try:
        urls = [east.url, west.url, a.url, b.url]

        def agreed() -> bool:
            lists = [httpx.get(f"{u}/v1/cluster/members", timeout=10).json() for u in urls]
            states = [{e["node"]: e["state"] for e in x["members"]} for x in lists]
            digests = {x["digest"] for x in lists}
            return (
                len(digests) == 1 and len(states[0]) == 4 and set(states[0].values()) == {"active"}
            )

        wait_for(agreed, timeout=60, what="one member list, every member active, everywhere")
        weights = {e["node"]: e["weight"] for e in members_of(east.url).values()}
        assert sorted(weights.values()) == [1.0, 1.0, 1.0, 3.0]
        # Each node says how many documents it holds and how many requests it answers.
        for url in urls:
            view = httpx.get(f"{url}/v1/cluster", timeout=10).json()
            assert view["requests"]["total"] > 0
            assert isinstance(view["requests"]["per_second"], float)
        # Every document is on exactly its holders, and reads the same everywhere.
        for doc_id in doc_ids:
            for url in urls:
                assert items(url, doc_id) == ["one"]

        def one_copy_each() -> bool:
            copies = [held(u) for u in urls]
            return all(sum(d in docs for docs in copies) == 1 for d in doc_ids)

        wait_for(one_copy_each, timeout=60, what="one copy of each document (replicas = 1)")
    finally:
        a.close()
        b.close()


def test_a_silent_peer_is_suspected_and_requests_go_elsewhere(tmp_path: Path) -> None:
    """Liveness apart from membership: a blackholed link (no reset, no close) makes the peer
    suspected after replication.suspect_after, long before the link times out; a write for a
    document it holds is then kept as a hint at once instead of waiting on the forward."""
    replication = {"heartbeat_interval": 0.2, "link_timeout": 8.0, "suspect_after": 0.8}
    cluster = Cluster(
        tmp_path, LAYOUT, latency_ms=10, placement=PLACEMENT, replication=replication
    ).start()
    try:
        cluster.wait_links_up()
        east, west = cluster["us-east-1"], cluster["eu-west-1"]
        append(west.url, "far", "one")  # home eu-west: held by eu-west-1 alone
        wait_for(
            lambda: httpx.get(f"{east.url}/v1/docs/far/placement", timeout=10).status_code == 200,
            timeout=10,
            what="the placement record at us-east-1",
        )
        cluster.wan.do(lambda: cluster.wan.wan.cut("us-east", "eu-west"))
        cut_at = time.monotonic()

        def suspected() -> bool:
            # Past suspect_after since the cut: a suspicion now is the cut's (not a pause of a
            # loaded machine just before it).
            peer = cluster.cluster_view("us-east-1")["peers"][0]
            late = time.monotonic() - cut_at > 1.5
            return late and bool(peer["suspected"]) and peer["state"] == "up"

        wait_for(suspected, timeout=5, what="eu-west-1 suspected while its link is still up")
        started = time.monotonic()
        ops = {"ops": [{"op": "append", "path": ["items"], "values": ["two"]}]}
        answer = httpx.patch(f"{east.url}/v1/docs/far", json=ops, timeout=30)
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started < 3.0
        assert answer.headers["x-meridian-served-by"] == "us-east-1", (
            answer.headers,
            cluster.cluster_view("us-east-1")["peers"][0],
        )
        view = cluster.cluster_view("us-east-1")
        assert view["placement"]["hints"] == 1, (view["placement"], view["peers"][0])
        assert view["peers"][0]["suspicions"] >= 1
        cluster.wan.do(lambda: cluster.wan.wan.heal())
        # Heard again: no longer suspected, and the hint reaches the holder.
        wait_for(
            lambda: (
                items(west.url, "far") == ["one", "two"]
                or sorted(items(west.url, "far")) == ["one", "two"]
            ),
            timeout=30,
            what="the hinted write at the holder",
        )
        wait_for(
            lambda: not cluster.cluster_view("us-east-1")["peers"][0]["suspected"],
            timeout=10,
            what="the suspicion cleared",
        )
    finally:
        cluster.close()
