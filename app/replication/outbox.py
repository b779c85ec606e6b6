"""Deltas on their way to one peer: queued, in flight (sent, not yet acknowledged), or given
up to anti-entropy. No I/O; the replicator feeds it and the link drains it.

Memory is bounded: past ``max_bytes`` of deltas (queued and in flight together) the oldest
queued ones are dropped, and the outbox remembers since when it is behind
(``overflow_since``). Nothing is lost by dropping: every
committed change is in this node's changes feed, which the peer's anti-entropy reads; when
the peer reports it caught up (``CaughtUp``), the overflow is cleared.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["Delta", "Outbox", "OutboxStatistics"]


@dataclass(slots=True)
class Delta:
    """One committed change to deliver: an update (``data``) or a tombstone (None).
    ``on_ack(node)`` is called when the peer acknowledges it (durability waits use it)."""

    doc_id: str
    incarnation: int
    data: bytes | None
    reached: tuple[str, ...]
    enqueued_at: float
    on_ack: Callable[[str], None] | None = None
    seq: int = 0
    #: Sent on the current link and not acknowledged yet.
    sent: bool = field(default=False)
    #: Monotonic time it was last sent.
    sent_at: float = 0.0

    @property
    def size(self) -> int:
        return len(self.data or b"") + len(self.doc_id) + 16


@dataclass(frozen=True, slots=True)
class OutboxStatistics:
    queued: int
    queued_bytes: int
    in_flight: int
    dropped: int
    acked: int
    rejected: int
    #: Monotonic time of the oldest change not known to be at the peer, or None.
    oldest: float | None


class Outbox:
    """The deltas for one peer, in commit order."""

    def __init__(self, *, max_bytes: int, max_in_flight: int) -> None:
        self.max_bytes = max_bytes
        self.max_in_flight = max_in_flight
        # Deltas not sent on the current link yet, oldest first.
        self._queue: collections.deque[Delta] = collections.deque()
        self._queued_bytes = 0
        # Sent on the current link, by seq, awaiting Ack or Reject.
        self._in_flight: dict[int, Delta] = {}
        self._in_flight_bytes = 0
        self._next_seq = 1
        # When the oldest change dropped to anti-entropy was enqueued (None: nothing dropped).
        self.overflow_since: float | None = None
        self._dropped = 0
        self._acked = 0
        self._rejected = 0

    def push(self, delta: Delta) -> None:
        self._queue.append(delta)
        self._queued_bytes += delta.size
        # Queued and in-flight deltas share one budget; the oldest queued ones give way.
        while self._queue and self._queued_bytes + self._in_flight_bytes > self.max_bytes:
            self._drop(self._queue.popleft())

    def _drop(self, delta: Delta) -> None:
        self._queued_bytes -= delta.size
        self._dropped += 1
        if self.overflow_since is None or delta.enqueued_at < self.overflow_since:
            self.overflow_since = delta.enqueued_at

    def take(self, now: float) -> Iterator[Delta]:
        """Deltas to send now (each gets its seq), as many as the in-flight window allows."""
        while self._queue and len(self._in_flight) < self.max_in_flight:
            delta = self._queue.popleft()
            self._queued_bytes -= delta.size
            delta.seq = self._next_seq
            self._next_seq += 1
            delta.sent = True
            delta.sent_at = now
            self._in_flight[delta.seq] = delta
            self._in_flight_bytes += delta.size
            yield delta

    @property
    def ready(self) -> bool:
        """Something can be sent now."""
        return bool(self._queue) and len(self._in_flight) < self.max_in_flight

    def acked(self, seqs: tuple[int, ...], node: str) -> None:
        for seq in seqs:
            delta = self._in_flight.pop(seq, None)
            if delta is None:
                continue
            self._in_flight_bytes -= delta.size
            self._acked += 1
            if delta.on_ack is not None:
                delta.on_ack(node)

    def rejected(self, seq: int) -> Delta | None:
        delta = self._in_flight.pop(seq, None)
        if delta is not None:
            self._in_flight_bytes -= delta.size
            self._rejected += 1
        return delta

    def link_lost(self) -> None:
        """The link closed: what was in flight may not have arrived; send it again first
        on the next link (deltas are idempotent)."""
        for delta in sorted(self._in_flight.values(), key=lambda d: d.seq, reverse=True):
            delta.sent = False
            self._queue.appendleft(delta)
            self._queued_bytes += delta.size
        self._in_flight.clear()
        self._in_flight_bytes = 0

    def oldest_in_flight(self) -> float | None:
        """When the oldest unacknowledged delta was sent (None: nothing in flight)."""
        if not self._in_flight:
            return None
        return self._in_flight[next(iter(self._in_flight))].sent_at

    def caught_up(self, as_of: float) -> None:
        """The peer integrated this node's whole changes feed as it stood at ``as_of``."""
        if self.overflow_since is not None and self.overflow_since <= as_of:
            self.overflow_since = None

    def pending(self, doc_id: str) -> int:
        """How many of ``doc_id``'s deltas are queued or in flight (a scan: for views, not
        for the write path)."""
        waiting = itertools.chain(self._queue, self._in_flight.values())
        return sum(1 for delta in waiting if delta.doc_id == doc_id)

    def statistics(self) -> OutboxStatistics:
        oldest = [d.enqueued_at for d in self._in_flight.values()]
        if self._queue:
            oldest.append(self._queue[0].enqueued_at)
        if self.overflow_since is not None:
            oldest.append(self.overflow_since)
        return OutboxStatistics(
            queued=len(self._queue),
            queued_bytes=self._queued_bytes + self._in_flight_bytes,
            in_flight=len(self._in_flight),
            dropped=self._dropped,
            acked=self._acked,
            rejected=self._rejected,
            oldest=min(oldest) if oldest else None,
        )
