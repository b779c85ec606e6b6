"""Where a request for a document is served: here, at another node, or kept here as a hint.

:func:`route` is the whole decision, without I/O (PRODUCT.md, "Placement"):

1. A node that holds the document serves it (a holder, or a node with a follower copy).
2. Otherwise the request goes to the nearest live holder or follower copy (one hop at most: a
   request that was forwarded already is never forwarded again, which makes loops impossible).
   A write also counts the **stand-ins** of the holders that are down (the next live nodes of
   their regions in rendezvous order, :func:`~app.cluster.placement.stand_ins`): in a region
   whose holder is down, a write stays in the region, on the node that would hold the document
   next, as a hint. A read goes to a stand-in only when no copy is live (here or elsewhere):
   its copy holds only the writes it took.
3. No live holder or stand-in: a write is committed here as a **hint** and handed off later
   (Principle 1, always writable) — unless a pin forbids this region to store the document's
   content, which is the one refusal (503 ``pinned_regions_unreachable``). A read is served
   from a copy here if there is one, and is otherwise a 503 (``holders_unreachable``).

A forwarded request that reaches a node that does not hold the document (the two nodes' views
of placement or liveness differ for a moment) is treated as if no holder were live: a write
becomes a hint here, a read is served from a copy here or refused with a 503 to retry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .placement import (
    PlacementRecord,
    Topology,
    allows_content,
    followers,
    holders,
    nearest_holder,
    stand_ins,
)

__all__ = ["Route", "route"]


@dataclass(frozen=True, slots=True)
class Route:
    """The decision for one request."""

    #: ``local``: serve from this node's copy; ``forward``: send to ``node``; ``hint``: write
    #: here and hand off; ``refuse``: answer 503 with ``code``.
    action: Literal["local", "forward", "hint", "refuse"]
    #: The holders of the document, in placement order.
    holders: tuple[str, ...]
    #: The node to forward to (``forward`` only).
    node: str | None = None
    #: Why a request is refused (``refuse`` only): an error code and a sentence.
    code: str = ""
    reason: str = ""


def route(
    record: PlacementRecord,
    topology: Topology,
    *,
    here: str,
    region: str,
    live: Callable[[str], bool],
    write: bool,
    forwarded: bool,
    has_copy: bool,
    exclude: frozenset[str] = frozenset(),
) -> Route:
    """The route of a request for ``record``'s document arriving at node ``here`` of
    ``region``. ``live(node)`` says whether a node is reachable now; ``has_copy`` whether
    this node has a copy (a hint, or one left from an earlier placement); ``exclude`` lists
    holders already tried for this request (unreachable)."""
    owners = holders(record, topology)
    copies = owners + followers(record, topology)
    if here in owners or (here in copies and has_copy):
        return Route("local", owners)
    # A follower copy not fetched yet is served by the others meanwhile.
    copies = tuple(node for node in copies if node != here)

    def reachable(node: str) -> bool:
        return node not in exclude and live(node)

    standing = stand_ins(record, topology, reachable)
    if write and here in standing:
        return Route("hint", owners)
    if not forwarded:
        target = nearest_holder(region, copies + standing if write else copies, topology, reachable)
        if target is None and not write and not has_copy:
            # No copy is live: the writes a stand-in took are better than a 503.
            target = nearest_holder(region, standing, topology, reachable)
        if target is not None:
            return Route("forward", owners, node=target)
    if write:
        if not allows_content(record, region):
            regions = ", ".join(record.regions)
            return Route(
                "refuse",
                owners,
                code="pinned_regions_unreachable",
                reason=f"{record.doc_id} is pinned to {regions}, and no node there is "
                f"reachable from region {region}; retry later",
            )
        return Route("hint", owners)
    if has_copy and allows_content(record, region):
        return Route("local", owners)
    return Route(
        "refuse",
        owners,
        code="holders_unreachable",
        reason=f"no node holding {record.doc_id} ({', '.join(owners) or 'none'}) is "
        f"reachable from {here}; retry later",
    )
