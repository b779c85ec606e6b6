"""A rolling upgrade, for real: three nodes in three regions start as "the previous release"
(peer protocol version 2 at most, ``--max-protocol-version 2``: the release before placement,
in which every node holds every document); writes keep flowing to every node while each node
in turn is stopped (SIGTERM) and started again as the new release. At every step each link
runs the highest version both of its ends speak (2 while either end is old, 3 once both are
new), no link is refused, and at the end every acknowledged write is on every node exactly
once.

The storage format's own upgrade (format 1 files opened by this version) is tested in
tests/test_storage_changes.py and tests/test_backup.py.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from app.replication import PROTOCOL_VERSIONS

from .cluster import Cluster
from .support import TIMEOUT_FACTOR, run_meridian, wait_for

NODES = ("ap-south-1", "eu-west-1", "us-east-1")
#: The previous release's highest peer protocol version, and this one's.
OLD, NEW = 2, PROTOCOL_VERSIONS[1]


def _versions(cluster: Cluster, node_id: str) -> dict[str, int | None] | None:
    """This node's negotiated version per peer, or None while a link is not up."""
    view = cluster.cluster_view(node_id)
    if any(peer["state"] != "up" for peer in view["peers"]):
        return None
    return {peer["node"]: peer["protocol_version"] for peer in view["peers"]}


def _wait_versions(cluster: Cluster, upgraded: set[str]) -> None:
    """Every link up, at version 3 between two upgraded nodes and 2 otherwise."""

    def expected() -> bool:
        for node_id in NODES:
            try:
                versions = _versions(cluster, node_id)
            except httpx.HTTPError:
                return False
            if versions is None:
                return False
            for peer, version in versions.items():
                want = NEW if {node_id, peer} <= upgraded else OLD
                if version != want:
                    return False
        return True

    wait_for(expected, timeout=30, what=f"every link at its version (upgraded: {upgraded})")


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    cluster = Cluster(tmp_path, {"ap-south": 1, "eu-west": 1, "us-east": 1}, latency_ms=5)
    for node_id in NODES:
        cluster.node_args[node_id] = ["--max-protocol-version", str(OLD)]
    return cluster


def test_rolling_upgrade_keeps_every_acknowledged_write(cluster: Cluster) -> None:
    seed = random.SystemRandom().randrange(2**31)
    print(f"seed={seed}")
    rng = random.Random(seed)
    acknowledged: list[tuple[str, str]] = []
    stop = threading.Event()

    def writer(tag: str) -> None:
        clients = {node_id: cluster[node_id].client() for node_id in NODES}
        try:
            i = 0
            while not stop.is_set():
                node_id = NODES[i % len(NODES)]
                doc_id, value = f"log-{i % 4}", f"{tag}-{i}"
                ops = {"ops": [{"op": "append", "path": ["items"], "values": [value]}]}
                try:
                    answer = clients[node_id].patch(f"/v1/docs/{doc_id}", json=ops, timeout=5)
                except httpx.HTTPError:
                    answer = None  # the node is restarting: not acknowledged
                if answer is not None and answer.status_code == 200:
                    acknowledged.append((doc_id, value))
                i += 1
        finally:
            for client in clients.values():
                client.close()

    try:
        cluster.start()
        _wait_versions(cluster, upgraded=set())
        for node_id in NODES:
            assert cluster.cluster_view(node_id)["protocol_versions"] == [1, OLD]
        threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(3)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(acknowledged) > 30, timeout=30, what="writes to flow")

        upgraded: set[str] = set()
        for node_id in rng.sample(NODES, len(NODES)):
            process = cluster[node_id].process
            assert process is not None
            assert process.terminate() == 0
            cluster.node_args[node_id] = []  # the new release
            cluster.start_node(node_id)
            upgraded.add(node_id)
            _wait_versions(cluster, upgraded)
            assert cluster.cluster_view(node_id)["protocol_versions"] == [1, NEW]
            done = len(acknowledged)
            wait_for(lambda done=done: len(acknowledged) > done + 30, timeout=30, what="writes")

        stop.set()
        for thread in threads:
            thread.join(timeout=30 * TIMEOUT_FACTOR)
        for node_id in NODES:
            view = cluster.cluster_view(node_id)
            assert all(peer["last_error"] != "incompatible_version" for peer in view["peers"])
            assert view["refused_links"] == []
        snapshot = cluster.wait_converged()
        present = Counter(
            (doc_id, value) for doc_id, entry in snapshot.items() for value in entry[2]["items"]
        )
        missing = [item for item in acknowledged if present[item] != 1]
        assert not missing, f"seed={seed}: {missing[:10]} not present exactly once"
    finally:
        stop.set()
        cluster.close()


@pytest.mark.parametrize("value", ["0", str(NEW + 1)])
def test_a_version_this_release_does_not_speak_is_refused(tmp_path: Path, value: str) -> None:
    result = run_meridian(
        "serve", "--region", "eu-west", "--listen", "127.0.0.1:0", "--data", str(tmp_path),
        "--max-protocol-version", value,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"--max-protocol-version {value}: this version speaks peer protocol 1..{NEW}" in (
        result.stderr
    )
    assert not (tmp_path / "meridian.duckdb").exists()
