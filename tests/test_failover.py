"""Failover with real node processes through the WAN emulator (issue "Elastic membership",
"Failover"): a whole region SIGKILLed, a node paused with SIGSTOP. Writes go on at every other
node, nothing acknowledged is lost, and every holder ends with every acknowledged element of
a list-append workload exactly once."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .cluster import Cluster
from .support import wait_for

LAYOUT = {"us-east": 2, "eu-west": 2, "ap-south": 1}
PLACEMENT = {"replicas": 2, "nodes_per_region": 1}
DOCUMENTS = [f"f-{i}" for i in range(16)]
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


class Appender:
    """A list-append workload: each write appends a unique element to a document's ``items``;
    the acknowledged ones are remembered per document."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.acknowledged: dict[str, list[str]] = {doc: [] for doc in DOCUMENTS}
        #: Writes whose outcome is unknown (504: sent to a node that did not answer): each may
        #: be present at most once.
        self.indeterminate: dict[str, list[str]] = {doc: [] for doc in DOCUMENTS}
        self.count = 0

    def append(self, node: str, doc_id: str) -> httpx.Response:
        self.count += 1
        element = f"{node}:{self.count}"
        ops = {"ops": [{"op": "append", "path": ["items"], "values": [element]}]}
        with self.cluster[node].client() as client:
            answer = client.patch(f"/v1/docs/{doc_id}", json=ops)
        if answer.status_code == 200:
            self.acknowledged[doc_id].append(element)
        elif answer.status_code == 504:
            self.indeterminate[doc_id].append(element)
        return answer

    def round(self, nodes: list[str], *, unknown_outcomes: bool = False) -> None:
        """One write per document, each at the next of ``nodes``; every one must be taken
        (or, with ``unknown_outcomes``, may be a 504 forward_timeout: forwarded to a node that
        stopped answering, its outcome unknown)."""
        for index, doc_id in enumerate(DOCUMENTS):
            node = nodes[index % len(nodes)]
            answer = self.append(node, doc_id)
            if unknown_outcomes and answer.status_code == 504:
                assert answer.json()["error"]["code"] == "forward_timeout", answer.text
                continue
            assert answer.status_code == 200, (node, doc_id, answer.text)

    def check_every_holder(self) -> None:
        """Every acknowledged element exactly once on every holder of its document."""
        for doc_id, elements in self.acknowledged.items():
            with self.cluster["eu-west-1"].client() as client:
                holders = client.get(f"/v1/docs/{doc_id}/placement").json()["holders"]
            for holder in holders:
                self._check_copy(holder, doc_id, elements, set(self.indeterminate[doc_id]))

    def _check_copy(
        self, holder: str, doc_id: str, acknowledged: list[str], unknown: set[str]
    ) -> None:
        with self.cluster[holder].client() as client:

            def items() -> list[Any]:
                answer = client.get(f"/v1/docs/{doc_id}", params={"local": "true"})
                if answer.status_code != 200:
                    return []
                return list(answer.json()["content"].get("items", []))

            wait_for(
                lambda: sorted(e for e in items() if e not in unknown) == sorted(acknowledged),
                timeout=60,
                what=f"every acknowledged element of {doc_id} on {holder}",
            )
            got = items()
            assert len(got) == len(set(got)), f"{doc_id} on {holder}: duplicates"


def links_down(cluster: Cluster, observer: str, gone: set[str]) -> None:
    def down() -> bool:
        peers = cluster.cluster_view(observer)["peers"]
        return all(p["state"] != "up" or p["suspected"] for p in peers if p["node"] in gone)

    wait_for(down, timeout=20, what=f"{observer} to see {sorted(gone)} down")


def test_a_whole_region_killed_the_others_keep_reading_and_writing(cluster: Cluster) -> None:
    workload = Appender(cluster)
    everyone = list(cluster.members)
    workload.round(everyone)
    with cluster["eu-west-1"].client() as client:
        pinned = client.put(
            "/v1/docs/us-only/placement", json={"regions": ["us-east"], "pinned": True}
        )
        assert pinned.status_code == 200, pinned.text
    wait_for(
        lambda: all(
            cluster.cluster_view(node)["peers"][0]["buffered"]["deltas"] == 0 for node in everyone
        ),
        what="the first writes sent",
    )
    cluster.kill("us-east-1")
    cluster.kill("us-east-2")
    survivors = ["eu-west-1", "eu-west-2", "ap-south-1"]
    for node in survivors:
        links_down(cluster, node, {"us-east-1", "us-east-2"})
    for _ in range(3):
        workload.round(survivors)
    # every document has a copy outside us-east (2 regions each): every read is served
    for node in survivors:
        with cluster[node].client() as client:
            for doc_id in DOCUMENTS:
                answer = client.get(f"/v1/docs/{doc_id}")
                assert answer.status_code == 200, (node, doc_id, answer.text)
            # the one refusal: a document pinned to the region that is gone
            ops = {"ops": [{"op": "append", "path": ["items"], "values": [1]}]}
            refused = client.patch("/v1/docs/us-only", json=ops)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "pinned_regions_unreachable"
    cluster.start_node("us-east-1")
    cluster.start_node("us-east-2")
    cluster.wait_links_up()
    workload.round(everyone)
    workload.check_every_holder()


def test_a_paused_node_is_routed_around_and_catches_up(cluster: Cluster) -> None:
    workload = Appender(cluster)
    everyone = list(cluster.members)
    workload.round(everyone)
    paused = cluster["eu-west-1"].process
    assert paused is not None and paused.process is not None
    os.kill(paused.process.pid, signal.SIGSTOP)
    try:
        others = [node for node in everyone if node != "eu-west-1"]
        started = time.monotonic()
        # A write forwarded to eu-west-1 before it is suspected waits for the forward timeout
        # and answers 504 (sent, outcome unknown: it applies it when it resumes); once it is
        # suspected, its documents' writes go to their other holders and stand-ins.
        for _ in range(3):
            workload.round(others, unknown_outcomes=True)
        print(f"3 rounds of writes with eu-west-1 paused: {time.monotonic() - started:.1f} s")
        unknown = sum(len(elements) for elements in workload.indeterminate.values())
        assert unknown <= 1, workload.indeterminate
        for node in others:
            links_down(cluster, node, {"eu-west-1"})
        workload.round(others)
    finally:
        os.kill(paused.process.pid, signal.SIGCONT)
    cluster.wait_links_up()
    workload.round(everyone)
    workload.check_every_holder()
