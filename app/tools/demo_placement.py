"""The tour's placement step: where a document lives, a read forwarded from a region that does
not hold it, that region gaining a copy after repeated reads, and a pinned document whose
content is found in no file outside its region (the proof printed)."""

from __future__ import annotations

import json
import secrets
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from .demo_cluster import DemoCluster, DemoNode, http_request

__all__ = ["placement_step"]

#: Reads from the far region at most, waiting for its follower copy.
MAX_READS = 200


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def placement_step(cluster: DemoCluster, say: Callable[[str], None]) -> None:
    nodes = list(cluster.nodes.values())
    regions = sorted({node.region for node in nodes})
    if len(regions) < 3:
        say("\n== 4. Placement: needs three regions (skipped)")
        return
    run = secrets.token_hex(2)
    writer = next(n for n in nodes if n.region == _middle(cluster, regions))
    doc = f"notes-{run}"
    say(f"\n== 4. Placement: a document lives in the regions that use it ({writer.region})")
    op = {"op": "append", "path": ["items"], "values": [f"written in {writer.region}"]}
    answer = await http_request("PATCH", f"{writer.url}/v1/docs/{doc}", json_body={"ops": [op]})
    say(f"{writer.node_id:<12}PATCH /v1/docs/{doc} -> {answer.status}")
    placement = (await http_request("GET", f"{writer.url}/v1/docs/{doc}/placement")).json()
    say(f"{'':12}home {placement['home']}; regions {', '.join(placement['regions'])}; "
        f"holders {', '.join(placement['holders'])}")  # fmt: skip
    for node in nodes:
        held = await _holds(node, doc)
        say(
            f"  {node.node_id:<12}{node.region:<10}{'holds a copy' if held else 'holds none of it'}"
        )
    far = next((n for n in nodes if n.region not in placement["regions"]), None)
    if far is None:
        say(f"{'':12}(every region holds it: [placement] replicas covers them all here)")
    else:
        await _far_reads(far, doc, say)
    await _pinned(cluster, nodes, writer, run, say)


async def _far_reads(far: DemoNode, doc: str, say: Callable[[str], None]) -> None:
    """A read forwarded from a region that holds none of ``doc``, then repeated reads there
    until the region gains a follower copy (both timed)."""
    await _wait_record(far, doc)
    first = await http_request("GET", f"{far.url}/v1/docs/{doc}")
    served = first.headers.get("x-meridian-served-by", "?")
    say(f"{far.node_id:<12}GET /v1/docs/{doc} -> {first.status} in {_ms(first.seconds)}, "
        f"served by {served} (forwarded: {far.region} holds none of it)")  # fmt: skip
    reads, gained = 1, None
    while reads < MAX_READS:
        answer = await http_request("GET", f"{far.url}/v1/docs/{doc}")
        reads += 1
        if answer.headers.get("x-meridian-served-by") == far.node_id:
            gained = answer
            break
    if gained is None:
        say(f"{far.node_id:<12}after {reads} reads {far.region} still has no copy")
    else:
        took = _ms(gained.seconds)
        say(f"{far.node_id:<12}after {reads} reads {far.region} gained a follower copy: "
            f"GET -> {gained.status} in {took}, served by {far.node_id}")  # fmt: skip


def _middle(cluster: DemoCluster, regions: list[str]) -> str:
    """The region with the smallest total latency to the others (eu-west in regions.toml)."""

    def total(region: str) -> float:
        return sum(cluster.config.latency_ms(region, other) or 0 for other in regions)

    return min(regions, key=lambda region: (total(region), region))


async def _holds(node: DemoNode, doc: str) -> bool:
    answer = await http_request("GET", f"{node.url}/v1/docs/{doc}?local=true")
    return answer.status == 200


async def _wait_record(node: DemoNode, doc: str, timeout: float = 10.0) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        answer = await http_request("GET", f"{node.url}/v1/docs/{doc}/placement")
        if answer.status == 200:
            return


async def _pinned(
    cluster: DemoCluster,
    nodes: list[DemoNode],
    home: DemoNode,
    run: str,
    say: Callable[[str], None],
) -> None:
    doc = f"resident-{run}"
    marker = f"RESIDENT-{secrets.token_hex(6)}"
    body = {"regions": [home.region], "pinned": True}
    answer = await http_request("PUT", f"{home.url}/v1/docs/{doc}/placement", json_body=body)
    say(f"{home.node_id:<12}PUT /v1/docs/{doc}/placement {json.dumps(body)} -> {answer.status}")
    for node in nodes:
        await _wait_record(node, doc)
        op = {"op": "append", "path": ["items"], "values": [f"{marker} via {node.node_id}"]}
        written = await http_request("PATCH", f"{node.url}/v1/docs/{doc}", json_body={"ops": [op]})
        served = written.headers.get("x-meridian-served-by", "?")
        say(f"  {node.node_id:<12}PATCH (the marker) -> {written.status}, served by {served}")
    outside = [n for n in nodes if n.region != home.region]
    scanned, found = 0, []
    for node in outside:
        data_dir = getattr(node, "data_dir", None)
        if not isinstance(data_dir, Path):
            continue
        for path in data_dir.rglob("*"):
            if path.is_file():
                scanned += 1
                if marker.encode() in path.read_bytes():
                    found.append(str(path))
        held = await _holds(node, doc)
        if held:
            found.append(f"{node.node_id}'s copy")
    if scanned == 0:
        say(f"{'':12}(the nodes' files are not reachable from here: no scan)")
        return
    where = ", ".join(urllib.parse.quote(n.node_id) for n in outside)
    if found:
        say(f"RESIDENCY BROKEN: the marker is in {', '.join(found)}")
    else:
        say(f"{'':12}the marker is in none of {scanned} files of {where} "
            f"(outside {home.region}), byte by byte")  # fmt: skip
