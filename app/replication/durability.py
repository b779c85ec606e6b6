"""Durability levels (PRODUCT.md, ``durability=``): which nodes must hold a write before it
is acknowledged, counted over the document's own holders.

A :class:`Tracker` follows one write: the nodes known to have committed it (this one, then
each peer that acknowledged the delta). :func:`levels_met` says which levels that set meets:

- ``local``: this node (always);
- ``region``: two nodes of this node's region;
- ``quorum``: a majority of the document's regions;
- ``all``: every holder of the document (every region, when placement does not narrow it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

__all__ = ["LEVELS", "Tracker", "levels_met"]

#: Durability levels, weakest first.
LEVELS = ("local", "region", "quorum", "all")


class Tracker:
    """A write waiting for its durability level: the nodes known to have committed it."""

    def __init__(self, node: str) -> None:
        self.nodes = {node}
        # Set whenever a node acknowledges; the waiter re-checks its level.
        self.changed = asyncio.Event()

    def on_ack(self, node: str) -> None:
        self.nodes.add(node)
        self.changed.set()


def levels_met(
    nodes: Collection[str],
    *,
    region_of: Callable[[str], str | None],
    region: str,
    doc_regions: Collection[str],
    doc_holders: Collection[str] | None,
) -> dict[str, bool]:
    """Which levels a write committed on ``nodes`` meets, for a document held in
    ``doc_regions`` by ``doc_holders`` (None: every node holds it, count regions only);
    ``region`` is the region of the node that took the write."""
    reached = {region_of(node) for node in nodes}
    in_region = [node for node in nodes if region_of(node) == region]
    wanted = set(doc_regions)
    return {
        "local": True,
        "region": len(in_region) >= 2,
        "quorum": len(reached & wanted) * 2 > len(wanted),
        "all": (wanted <= reached if doc_holders is None else set(doc_holders) <= set(nodes)),
    }
