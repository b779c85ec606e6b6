"""Replication between nodes: the peer protocol (no I/O), its WebSocket transport, the
per-peer outboxes, anti-entropy and the durability / read-your-writes waits.

The public face::

    async with open_replicator(store, settings) as replicator:
        await replicator.accept(websocket)           # the WS /v1/peer endpoint
        replicator.statistics()                      # /v1/cluster
"""

from .durability import LEVELS, Tracker
from .peers import Peer
from .protocol import PROTOCOL_VERSIONS
from .replicator import Replicator, open_replicator
from .session import PeerOrigin

__all__ = [
    "LEVELS",
    "PROTOCOL_VERSIONS",
    "Peer",
    "PeerOrigin",
    "Replicator",
    "Tracker",
    "open_replicator",
]
