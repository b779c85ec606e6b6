"""What a node shows of the cluster: ``GET /v1/cluster`` (this node's view: regions, nodes,
its peer links, documents, storage) and ``GET /v1/cluster/overview`` (every node's links,
gathered by the node asked).

Each node knows only its own links. To show the whole mesh — the dashboard's picture, an
operator asking "which link is down?" — the node asked fetches ``/v1/cluster`` from every peer
it knows, concurrently, at the address it replicates with (the listed one or ``--peer``'s),
with the caller's token once it verified it (any node verifies a token; nothing is forwarded
when the node requires none), and answers with each node's links and documents held. A peer
that does not answer within :data:`FETCH_TIMEOUT` is listed as not reachable, with why; the
answer never waits longer than that. Only the addresses of the topology are ever fetched,
never one from the request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter, Request

from ..auth import Authorizer, bearer_token
from ..node import Node
from ..replication import PROTOCOL_VERSIONS, Peer

__all__ = ["FETCH_TIMEOUT", "authorize_any", "member_views", "router"]

#: Seconds to wait for each peer's view.
FETCH_TIMEOUT = 2.0

router = APIRouter()


def authorize_any(request: Request) -> str | None:
    """Any valid token (when the node requires tokens): returns it, verified (None when the
    node requires none); raises TokenError (401)."""
    authorizer: Authorizer = request.app.state.authorizer
    token = bearer_token(request.headers.get("authorization"))
    authorizer.authorize(token, None, "read")
    return token if authorizer.required else None


def _placement(node: Node) -> dict[str, Any]:
    """Placement as this node sees it: the defaults, the records it holds, its hints and the
    copies it is handing off (and whether placement is on at all: a node held back below
    peer protocol 3 holds every document, as earlier releases did)."""
    config = node.settings.cluster
    replicator = node.replicator
    active = replicator is None or replicator.catalog is not None
    handoff = node.handoff.statistics() if node.handoff is not None else None
    return {
        "active": active,
        "default_replicas": config.replicas,
        "nodes_per_region": config.nodes_per_region,
        "records": len(node.catalog),
        "hints": len(node.store.hints()),
        "handoff": None
        if handoff is None
        else {
            "pending": handoff.pending,
            "handed_off": handoff.handed_off,
            "pulled": handoff.pulled,
            "failures": handoff.failures,
            "pulls_pending": handoff.pulls_pending,
            "homes_moved": handoff.homes_moved,
            "bytes_handed_off": handoff.bytes_handed_off,
            "bytes_pulled": handoff.bytes_pulled,
        },
        "records_refused": replicator.records_refused if replicator is not None else 0,
    }


@router.get("/v1/cluster", tags=["node"])
async def cluster(request: Request) -> dict[str, Any]:
    """Regions, nodes and their state, peer links, placement summary (this node's view)."""
    authorize_any(request)
    node: Node = request.app.state.node
    config = node.settings.cluster
    live, tombstones = await node.store.storage.count_documents()
    stats = node.store.statistics()
    storage = node.store.storage.statistics()
    replication = (
        node.replicator.statistics()
        if node.replicator is not None
        else {"peers": [], "refused_links": []}
    )
    return {
        "cluster": config.name,
        "node": node.node_id,
        "region": node.region,
        "regions": [
            {"name": region.name, "nodes": list(region.nodes)} for region in config.regions.values()
        ]
        or [{"name": node.region, "nodes": []}],
        "nodes": _nodes(node),
        "members": member_views(node),
        "peers": replication["peers"],
        "refused_links": replication["refused_links"],
        "members_refused": replication.get("members_refused", 0),
        "clients": node.hub.statistics(),
        "protocol_versions": list(
            node.replicator.versions if node.replicator is not None else PROTOCOL_VERSIONS
        ),
        "placement": _placement(node),
        "requests": _requests(request),
        "documents": {
            "live": live,
            "tombstones": tombstones,
            "hot": stats.hot_documents,
            "hot_bytes": stats.hot_bytes,
        },
        "storage": {
            "commits": storage.commits,
            "jobs_committed": storage.jobs_committed,
            "largest_batch": storage.batch_size_max,
            "queue_depth": storage.queue_depth,
            "compactions": storage.compactions,
        },
    }


def _requests(request: Request) -> dict[str, Any]:
    """HTTP requests this node answered: since start, and per second over the last 10 s."""
    rate = getattr(request.app.state, "metrics", None)
    if rate is None:
        return {"total": 0, "per_second": 0.0}
    return {"total": rate.requests.total, "per_second": rate.requests.per_second()}


def member_views(node: Node) -> list[dict[str, Any]]:
    """Every member (tombstones included) with its liveness as this node sees it: ``self``,
    ``up`` (linked), ``down`` (not linked) or ``removed``."""
    members = node.members
    if members is None:
        return []
    peers = node.replicator.peers if node.replicator is not None else {}
    views = []
    for entry in members.membership.entries():
        if entry.node == node.node_id:
            liveness = "self"
        elif not entry.live:
            liveness = "removed"
        else:
            peer = peers.get(entry.node)
            liveness = "up" if peer is not None and peer.state == "up" else "down"
        views.append({**entry.to_json(), "liveness": liveness})
    return views


def _nodes(node: Node) -> list[dict[str, Any]]:
    """This node and its peers: region, link state, and member state (``joining``,
    ``active``, ``leaving``; None for a node without a member list)."""
    members = node.members

    def member(node_id: str) -> str | None:
        entry = members.get(node_id) if members is not None else None
        return entry.state if entry is not None else None

    nodes = [
        {
            "id": node.node_id,
            "region": node.region,
            "state": "up",
            "self": True,
            "member": member(node.node_id),
        }
    ]
    if node.replicator is not None:
        nodes += [
            {
                "id": peer.node_id,
                "region": peer.member.region,
                "state": peer.state,
                "self": False,
                "member": member(peer.node_id),
            }
            for peer in node.replicator.peers.values()
        ]
    return nodes


def links(peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The link part of a node's ``peers`` (as ``/v1/cluster`` lists them)."""
    return [
        {
            "peer": str(peer["node"]),
            "state": str(peer["state"]),
            "rtt_ms": peer["rtt_ms"],
            "lag_seconds": peer["lag_seconds"],
        }
        for peer in peers
    ]


async def _view_of(
    client: httpx.AsyncClient, peer: Peer, headers: dict[str, str]
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "node": peer.node_id,
        "region": peer.member.region,
        "reachable": False,
        "error": None,
        "documents": None,
        "hints": None,
        "requests_per_second": None,
        "links": [],
    }
    try:
        response = await client.get(f"http://{peer.address}/v1/cluster", headers=headers)
    except httpx.TimeoutException:
        entry["error"] = f"no answer within {FETCH_TIMEOUT:g} s"
        return entry
    except httpx.HTTPError as exc:
        entry["error"] = f"cannot reach {peer.address}: {exc or type(exc).__name__}"
        return entry
    if response.status_code != 200:
        entry["error"] = f"answered {response.status_code}"
        return entry
    try:
        view = response.json()
        if view["node"] != peer.node_id:
            entry["error"] = f"{peer.address} answered as node {str(view['node'])[:64]!r}"
            return entry
        entry.update(documents=int(view["documents"]["live"]), links=links(view["peers"]))
        requests = view.get("requests")
        if isinstance(requests, dict) and isinstance(requests.get("per_second"), int | float):
            entry["requests_per_second"] = requests["per_second"]
        placement = view.get("placement")
        if isinstance(placement, dict) and isinstance(placement.get("hints"), int):
            entry["hints"] = placement["hints"]
    except (ValueError, KeyError, TypeError) as exc:
        entry["error"] = f"unexpected answer: {type(exc).__name__}"
        return entry
    entry["reachable"] = True
    return entry


@router.get("/v1/cluster/overview", tags=["node"])
async def overview(request: Request) -> dict[str, Any]:
    """Every node's links (state, RTT, lag), documents held and hints: this node's own, and each
    peer's as it answers ``GET /v1/cluster`` (``reachable: false`` with ``error`` when it
    does not within 2 s)."""
    token = authorize_any(request)
    node: Node = request.app.state.node
    live, _ = await node.store.storage.count_documents()
    replicator = node.replicator
    own = {
        "node": node.node_id,
        "region": node.region,
        "reachable": True,
        "error": None,
        "documents": live,
        "hints": len(node.store.hints()),
        "requests_per_second": _requests(request)["per_second"],
        "links": links(replicator.statistics()["peers"]) if replicator is not None else [],
    }
    peers = list(replicator.peers.values()) if replicator is not None else []
    # Only a token this node verified travels on (tokens are valid on every node).
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # trust_env=False: no proxy from the environment ever sits between two nodes.
    async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, trust_env=False) as client:
        others = await asyncio.gather(*(_view_of(client, peer, headers) for peer in peers))
    return {"cluster": node.settings.cluster.name, "node": node.node_id, "nodes": [own, *others]}
