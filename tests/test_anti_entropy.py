"""Anti-entropy traffic grows with the differences, not with the number of documents."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pycrdt

from crdt import open_store

from .cluster import Cluster
from .support import wait_for

DOCUMENTS = 10_000
CHANGED = 100


def update_for(index: int) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=1000 + index)
    doc.get("settings", type=pycrdt.Map)["n"] = index
    return bytes(doc.get_update())


async def populate(data_dirs: list[Path]) -> None:
    """The same 10,000 documents (same bytes) in every data directory, written offline."""
    updates = [update_for(i) for i in range(DOCUMENTS)]
    for data_dir in data_dirs:
        async with open_store(data_dir) as store:
            await asyncio.gather(
                *(store.apply_update(f"doc-{i:05}", u) for i, u in enumerate(updates))
            )


def traffic(cluster: Cluster) -> int:
    total = 0
    for node in ("us-east-1", "eu-west-1"):
        for peer in cluster.cluster_view(node)["peers"]:
            total += peer["bytes_sent"]
    return total


def test_catch_up_traffic_is_proportional_to_what_changed(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, {"us-east": 1, "eu-west": 1}, latency_ms=5)
    asyncio.run(populate([tmp_path / "us-east-1", tmp_path / "eu-west-1"]))
    cluster.start()
    try:
        cluster.wait_links_up()

        def first_rounds_done() -> bool:
            return all(
                cluster.cluster_view(node)["peers"][0]["anti_entropy"]["rounds"] >= 2
                for node in ("us-east-1", "eu-west-1")
            )

        # The first contact compares every document once (summaries only: they agree).
        wait_for(first_rounds_done, timeout=120, what="the first anti-entropy rounds")
        cluster.wan.do(lambda: cluster.wan.wan.cut("us-east", "eu-west"))
        wait_for(
            lambda: cluster.cluster_view("us-east-1")["peers"][0]["state"] != "up",
            timeout=30,
            what="the link to drop",
        )
        changed_bytes = 0
        with cluster["us-east-1"].client() as client:
            for i in range(0, DOCUMENTS, DOCUMENTS // CHANGED):
                ops = {"ops": [{"op": "set", "path": ["settings", "changed"], "value": True}]}
                answer = client.patch(f"/v1/docs/doc-{i:05}", json=ops)
                assert answer.status_code == 200
                changed_bytes += len(
                    client.get(
                        f"/v1/docs/doc-{i:05}/update",
                        params={"since": answer.json()["state_vector"]},
                    ).content
                )
        before = traffic(cluster)
        cluster.wan.do(cluster.wan.wan.heal)

        def caught_up() -> bool:
            with cluster["eu-west-1"].client() as client:
                return all(
                    client.get(f"/v1/docs/doc-{i:05}").json()["content"]["settings"].get("changed")
                    for i in range(0, DOCUMENTS, DOCUMENTS // CHANGED)
                )

        wait_for(caught_up, timeout=60, what="the changed documents to arrive")
        # Let the anti-entropy rounds after the reconnection finish too.
        wait_for(
            lambda: all(
                cluster.cluster_view(node)["peers"][0]["lag_seconds"] == 0
                for node in ("us-east-1", "eu-west-1")
            ),
            timeout=30,
            what="no lag",
        )
        exchanged = traffic(cluster) - before
        print(f"{exchanged} bytes exchanged for {CHANGED} changed of {DOCUMENTS} documents")
        # Generous: 1 KiB per changed document; a listing of every document would be ~300 KB.
        assert exchanged < CHANGED * 1024, exchanged
    finally:
        cluster.close()
