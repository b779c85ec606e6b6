"""Regions that converge: real node processes on loopback, peer links through the WAN
emulator, partitions, crashes, durability levels and read-your-writes."""

from __future__ import annotations

import os
import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest

from .cluster import Cluster, b64
from .support import TIMEOUT_FACTOR, wait_for

LAYOUT = {"us-east": 2, "eu-west": 1, "ap-south": 1}


def seed() -> int:
    value = int(os.environ.get("MERIDIAN_TEST_SEED", random.SystemRandom().randrange(2**31)))
    print(f"seed={value} (MERIDIAN_TEST_SEED to repeat)")
    return value


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, LAYOUT, latency_ms=5).start()
    try:
        running.wait_links_up()
        yield running
    finally:
        running.close()


def binary_update(rng: random.Random) -> bytes:
    """A Yjs update from a fresh client: text inserted, a map key set."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=rng.randrange(1, 2**31))
    text = doc.get("body", type=pycrdt.Text)
    settings = doc.get("settings", type=pycrdt.Map)
    text += f"<{rng.randrange(1000)}>"
    settings[f"k{rng.randrange(5)}"] = rng.randrange(100)
    return bytes(doc.get_update())


def random_write(client: httpx.Client, rng: random.Random, doc_id: str) -> None:
    kind = rng.randrange(3)
    if kind == 0:
        response = client.post(
            f"/v1/docs/{doc_id}/update",
            content=binary_update(rng),
            headers={"content-type": "application/octet-stream"},
        )
    elif kind == 1:
        ops = [{"op": "append", "path": ["items"], "values": [rng.randrange(10**6)]}]
        response = client.patch(f"/v1/docs/{doc_id}", json={"ops": ops})
    else:
        ops = [{"op": "set", "path": ["settings", f"k{rng.randrange(5)}"], "value": "v"}]
        response = client.patch(f"/v1/docs/{doc_id}", json={"ops": ops})
    # A binary update for "settings"/"body" on a document whose root has another type is
    # fine for Yjs; JSON ops on a root of another type are a 422, which changes nothing.
    assert response.status_code in (200, 422), response.text


def write_everywhere(cluster: Cluster, rng: random.Random, writes: int, docs: int) -> None:
    """Concurrent random writes at every running node (one thread per node)."""
    errors: list[BaseException] = []

    def writer(node_id: str, node_seed: int) -> None:
        local = random.Random(node_seed)
        try:
            with cluster[node_id].client() as client:
                for _ in range(writes):
                    random_write(client, local, f"doc-{local.randrange(docs)}")
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(m.node_id, rng.randrange(2**31)))
        for m in cluster.running()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def test_concurrent_writes_at_every_node_converge(cluster: Cluster) -> None:
    rng = random.Random(seed())
    write_everywhere(cluster, rng, writes=40, docs=8)
    snapshot = cluster.wait_converged()
    assert len(snapshot) == 8
    # Peers report no backlog once quiet.
    for member in cluster.running():
        for peer in cluster.cluster_view(member.node_id)["peers"]:
            assert peer["state"] == "up"


def test_a_partitioned_region_keeps_accepting_writes_and_converges(cluster: Cluster) -> None:
    rng = random.Random(seed())
    cluster.wan.do(lambda: cluster.wan.wan.isolate("ap-south"))
    write_everywhere(cluster, rng, writes=20, docs=6)
    with cluster["ap-south-1"].client() as client:
        client.patch(
            "/v1/docs/island", json={"ops": [{"op": "set", "path": ["m", "a"], "value": 1}]}
        )
    with cluster["eu-west-1"].client() as client:
        assert client.get("/v1/docs/island").status_code == 404
    cluster.wan.do(cluster.wan.wan.heal)
    snapshot = cluster.wait_converged()
    assert "island" in snapshot


def test_a_cut_link_converges_through_a_bridge(cluster: Cluster) -> None:
    rng = random.Random(seed())
    # us-east <-> ap-south is cut; both still reach eu-west.
    cluster.wan.do(lambda: cluster.wan.wan.cut("us-east", "ap-south"))
    write_everywhere(cluster, rng, writes=20, docs=6)
    for node_id in ("us-east-1", "ap-south-1"):
        with cluster[node_id].client() as client:
            ops = [{"op": "append", "path": ["items"], "values": [node_id]}]
            assert client.patch("/v1/docs/bridged", json={"ops": ops}).status_code == 200
    # Converges while the cut lasts.
    snapshot = cluster.wait_converged()
    assert sorted(snapshot["bridged"][2]["items"]) == ["ap-south-1", "us-east-1"]


def test_a_one_way_cut_converges_after_heal(cluster: Cluster) -> None:
    rng = random.Random(seed())
    cluster.wan.do(lambda: cluster.wan.wan.cut("us-east", "eu-west", one_way=True))
    write_everywhere(cluster, rng, writes=20, docs=6)
    cluster.wan.do(cluster.wan.wan.heal)
    cluster.wait_converged()


def test_read_your_writes_across_regions_with_after(tmp_path: Path) -> None:
    running = Cluster(tmp_path, {"us-east": 1, "ap-south": 1}, latency_ms=150).start()
    try:
        running.wait_links_up()
        with running["us-east-1"].client() as writer, running["ap-south-1"].client() as reader:
            for i in range(5):
                ops = [{"op": "append", "path": ["items"], "values": [i]}]
                written = writer.patch("/v1/docs/ryw", json={"ops": ops}).json()
                view = reader.get("/v1/docs/ryw", params={"after": written["state_vector"]})
                assert view.status_code == 200, view.text
                assert view.json()["content"]["items"][-1] == i
            # A state no node will ever reach: a clear 503 after the wait, not a hang.
            impossible = b64(bytes([1, 5, 100]))  # client 5 at clock 100
            view = reader.get("/v1/docs/ryw", params={"after": impossible})
            assert view.status_code == 503
            assert view.json()["error"]["code"] == "after_not_reached"
            assert reader.get("/v1/docs/ryw", params={"after": "%%%"}).status_code == 400
    finally:
        running.close()


def test_durability_levels(cluster: Cluster) -> None:
    with cluster["us-east-1"].client() as client:
        ops = {"ops": [{"op": "set", "path": ["m", "k"], "value": 1}]}
        for level in ("region", "quorum", "all"):
            answer = client.patch("/v1/docs/durable", params={"durability": level}, json=ops)
            assert answer.status_code == 200, answer.text
            assert answer.json()["durability"] == level
        assert set(answer.json()["durable_on"]) == set(cluster.members)
        with cluster["eu-west-1"].client() as eu:
            # eu-west has one node: durability=region can never be met there.
            refused = eu.patch("/v1/docs/durable", params={"durability": "region"}, json=ops)
            assert refused.status_code == 422
            assert refused.json()["error"]["code"] == "durability_unavailable"
        # One region cut off: "all" times out, answers 202 with the level reached.
        cluster.wan.do(lambda: cluster.wan.wan.isolate("ap-south"))
        answer = client.patch(
            "/v1/docs/durable", params={"durability": "all", "timeout": 1}, json=ops
        )
        assert answer.status_code == 202
        assert answer.json()["durability"] == "quorum"
        assert "ap-south-1" not in answer.json()["durable_on"]
        cluster.wan.do(cluster.wan.wan.heal)
    cluster.wait_converged()


def list_append(client: httpx.Client, doc_id: str, value: str, durability: str) -> bool:
    try:
        answer = client.patch(
            f"/v1/docs/{doc_id}",
            params={"durability": durability},
            json={"ops": [{"op": "append", "path": ["items"], "values": [value]}]},
        )
    except httpx.HTTPError:
        return False
    return answer.status_code in (200, 202) and (
        durability == "local" or answer.json()["durability"] == durability
    )


def test_a_node_killed_during_writes_loses_no_acknowledged_write(cluster: Cluster) -> None:
    rng = random.Random(seed())
    acknowledged: list[tuple[str, str]] = []
    stop = threading.Event()

    def writer(node_id: str, tag: str) -> None:
        with cluster[node_id].client() as client:
            client.timeout = httpx.Timeout(5 * TIMEOUT_FACTOR)
            i = 0
            while not stop.is_set():
                value = f"{tag}-{i}"
                doc_id = f"log-{i % 3}"
                if list_append(client, doc_id, value, "local"):
                    acknowledged.append((doc_id, value))
                i += 1

    threads = [
        threading.Thread(target=writer, args=(node_id, f"{node_id}-{n}"))
        for node_id in ("us-east-1", "us-east-2", "eu-west-1")
        for n in range(2)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acknowledged) > 60, timeout=30, what="writes to flow")
    victim = rng.choice(["us-east-2", "eu-west-1"])
    cluster.kill(victim)
    wait_for(lambda: len(acknowledged) > 150, timeout=30, what="writes after the kill")
    cluster.start_node(victim)
    wait_for(lambda: len(acknowledged) > 250, timeout=30, what="writes after the restart")
    stop.set()
    for thread in threads:
        thread.join()
    snapshot = cluster.wait_converged()
    present = Counter(
        (doc_id, value) for doc_id, view in snapshot.items() for value in view[2]["items"]
    )
    for item in acknowledged:
        assert present[item] == 1, f"{item} present {present[item]} times"


def test_durability_all_survives_the_loss_of_the_acknowledging_node(cluster: Cluster) -> None:
    acknowledged = []
    with cluster["us-east-2"].client() as client:
        for i in range(40):
            if list_append(client, "precious", f"v{i}", "all"):
                acknowledged.append(f"v{i}")
    assert len(acknowledged) == 40
    cluster.kill("us-east-2")  # and never restarted
    for node_id in ("us-east-1", "eu-west-1", "ap-south-1"):
        with cluster[node_id].client() as client:
            items = client.get("/v1/docs/precious").json()["content"]["items"]
            assert sorted(items) == sorted(acknowledged)


def test_deletes_replicate_and_a_write_of_a_deleted_incarnation_stays_deleted(
    cluster: Cluster,
) -> None:
    ops = {"ops": [{"op": "set", "path": ["m", "k"], "value": 1}]}
    with cluster["us-east-1"].client() as a, cluster["ap-south-1"].client() as b:
        assert a.patch("/v1/docs/gone", params={"durability": "all"}, json=ops).status_code == 200
        assert a.delete("/v1/docs/gone").status_code == 200
        wait_for(
            lambda: b.get("/v1/docs/gone").status_code == 404, timeout=10, what="the tombstone"
        )
        recreated = b.patch("/v1/docs/gone", json=ops).json()
        assert recreated["incarnation"] == 2
    snapshot = cluster.wait_converged()
    assert snapshot["gone"][2] == {"m": {"k": 1}}


def test_a_node_with_open_links_stops_cleanly_and_catches_up_on_restart(
    cluster: Cluster,
) -> None:
    process = cluster["eu-west-1"].process
    assert process is not None and process.terminate() == 0
    assert "stopped" in "".join(process.output)
    with cluster["us-east-1"].client() as client:
        ops = {"ops": [{"op": "append", "path": ["items"], "values": ["while away"]}]}
        assert client.patch("/v1/docs/missed", json=ops).status_code == 200
    cluster.start_node("eu-west-1")
    snapshot = cluster.wait_converged()
    assert snapshot["missed"][2] == {"items": ["while away"]}


def test_a_slow_peer_gets_a_bounded_buffer_and_loses_nothing(tmp_path: Path) -> None:
    bound = 16_000
    running = Cluster(
        tmp_path, {"us-east": 1, "eu-west": 1}, replication={"max_outbox_bytes": bound}
    ).start()
    try:
        running.wait_links_up()
        running.wan.do(lambda: running.wan.wan.isolate("eu-west"))
        wait_for(
            lambda: running.cluster_view("us-east-1")["peers"][0]["state"] != "up",
            timeout=30,
            what="the link to drop",
        )
        written = []
        with running["us-east-1"].client() as client:
            for i in range(300):
                value = f"{i:04}-" + "x" * 100
                assert list_append(client, f"slow-{i % 7}", value, "local")
                written.append(value)
        peer = running.cluster_view("us-east-1")["peers"][0]
        assert peer["buffered"]["bytes"] <= bound
        assert peer["deltas"]["left_to_anti_entropy"] > 0
        assert peer["lag_seconds"] > 0
        running.wan.do(running.wan.wan.heal)
        snapshot = running.wait_converged()
        present = sorted(v for view in snapshot.values() for v in view[2]["items"])
        assert present == sorted(written)
        wait_for(
            lambda: running.cluster_view("us-east-1")["peers"][0]["lag_seconds"] == 0,
            timeout=30,
            what="the lag to clear once the peer caught up",
        )
    finally:
        running.close()
