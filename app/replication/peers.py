"""The other nodes as replication sees them: one :class:`Peer` per node, across its
successive links, with what ``/v1/cluster`` and ``/metrics`` show of it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import Member
from .detector import PhiAccrual
from .outbox import Outbox
from .protocol import PLACEMENT_VERSION

if TYPE_CHECKING:
    from .session import PeerSession

__all__ = ["AntiEntropyStats", "Peer"]


@dataclass(slots=True)
class AntiEntropyStats:
    rounds: int = 0
    failures: int = 0
    repaired_total: int = 0
    last_at: float | None = None
    last_seconds: float = 0.0
    last_checked: int = 0
    last_repaired: list[str] = field(default_factory=list)
    last_repaired_count: int = 0
    last_bytes: int = 0
    #: Bytes exchanged by every round (listings and the syncs that repaired documents).
    bytes_total: int = 0

    def record(self, *, checked: int, repaired: list[str], seconds: float, traffic: int) -> None:
        self.rounds += 1
        self.repaired_total += len(repaired)
        self.last_at = time.time()
        self.last_seconds = seconds
        self.last_checked = checked
        self.last_repaired = repaired[:20]
        self.last_repaired_count = len(repaired)
        self.last_bytes = traffic
        self.bytes_total += traffic


class Peer:
    """Another node, across its successive links."""

    def __init__(self, member: Member, address: str, *, dialer: bool, outbox: Outbox) -> None:
        self.member = member
        self.address = address
        #: This node dials the peer (its id is smaller); else it waits for the peer to.
        self.dialer = dialer
        self.outbox = outbox
        # Set when the outbox has something to send or its window opened.
        self.wake = asyncio.Event()
        self.session: PeerSession | None = None
        self.state = "down"
        self.storage_id = ""
        self.version: int | None = None
        self.rtt: float | None = None
        self.last_error: str | None = None
        self.up_since: float | None = None
        self.links_opened = 0
        self.applied_from_peer = 0
        self.refused_from_peer = 0
        self.internal_errors = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        # (last seq, monotonic time) of the last complete changes-feed listing served to it.
        self.feed_served: tuple[int, float] | None = None
        #: Nothing received on the link for ``replication.suspect_after``: routing avoids the
        #: peer until it is heard again (a suspicion moves no data).
        self.suspected = False
        #: Times the peer became suspected since start.
        self.suspicions = 0
        #: The failure detector fed with the peer's heartbeats (across its links).
        self.detector = PhiAccrual()
        #: When this node last finished reading the peer's catalog feed (every placement record
        #: the peer had then is here): a joining node waits for it from every member.
        self.catalog_synced_at: float | None = None
        self.ae = AntiEntropyStats()

    @property
    def node_id(self) -> str:
        return self.member.node_id

    @property
    def holds_everything(self) -> bool:
        """An earlier release (peer protocol 1 or 2) knows no placement and holds every
        document: it is sent every delta, as before placement."""
        return self.version is not None and self.version < PLACEMENT_VERSION

    def caught_up(self, seq: int) -> None:
        if self.feed_served is not None and seq >= self.feed_served[0]:
            self.outbox.caught_up(self.feed_served[1])

    def _phi(self, link: Any, now: float) -> float | None:
        """The failure detector's φ for the current silence of the open link (JSON has no
        infinity: a φ past 1000 shows as 1000)."""
        if link is None or self.state != "up":
            return None
        phi = self.detector.phi(max(0.0, now - link.protocol.last_received))
        return round(min(phi, 1000.0), 2)

    def statistics(self) -> dict[str, Any]:
        outbox = self.outbox.statistics()
        now = time.monotonic()
        link = self.session.link if self.session is not None else None
        ae = self.ae
        return {
            "node": self.node_id,
            "region": self.member.region,
            "address": self.address,
            "state": self.state,
            "suspected": self.suspected,
            "suspicions": self.suspicions,
            "phi": self._phi(link, now),
            "heartbeat_interval_ms": (
                round(mean * 1000, 1) if (mean := self.detector.mean()) is not None else None
            ),
            "dials": self.dialer,
            "protocol_version": self.version,
            "rtt_ms": round(self.rtt * 1000, 3) if self.rtt is not None else None,
            "up_since": self.up_since,
            "last_error": self.last_error,
            "links_opened": self.links_opened,
            "buffered": {
                "deltas": outbox.queued,
                "bytes": outbox.queued_bytes,
                "in_flight": outbox.in_flight,
            },
            "lag_seconds": round(now - outbox.oldest, 3) if outbox.oldest is not None else 0.0,
            "deltas": {
                "acked": outbox.acked,
                "refused_by_peer": outbox.rejected,
                "left_to_anti_entropy": outbox.dropped,
                "applied_from_peer": self.applied_from_peer,
                "refused_from_peer": self.refused_from_peer,
            },
            "bytes_sent": self.bytes_sent + (link.bytes_sent if link else 0),
            "bytes_received": self.bytes_received + (link.bytes_received if link else 0),
            "anti_entropy": {
                "rounds": ae.rounds,
                "failures": ae.failures,
                "repaired_total": ae.repaired_total,
                "last_at": ae.last_at,
                "last_seconds": round(ae.last_seconds, 4),
                "last_checked": ae.last_checked,
                "last_repaired": ae.last_repaired_count,
                "last_repaired_ids": ae.last_repaired,
                "last_bytes": ae.last_bytes,
                "bytes_total": ae.bytes_total,
            },
        }
