"""The failure detector of one peer: phi accrual over the peer's heartbeats, without I/O.

Hayashibara et al.'s *φ accrual failure detector* (2004), as Cassandra and Akka use it: the
detector keeps the intervals between the peer's heartbeats (its pings, one every
``replication.heartbeat_interval``) and, for a silence of ``t`` seconds, computes

    φ(t) = -log10(P(the next heartbeat comes later than t))

with the intervals taken as normally distributed (their mean and standard deviation over the
last :data:`WINDOW` intervals, the deviation at least :data:`MIN_DEVIATION` of the mean). φ = 8
means that such a silence happens once in 10^8 heartbeats of this link as observed so far.

The peer is suspected when the silence (of every frame, not only heartbeats) is at least
``replication.suspect_after`` **and** φ is at least ``replication.phi_threshold``. The fixed
floor keeps a steady link from being suspected after a single late heartbeat; φ lengthens
the wait on a link whose heartbeats arrive irregularly (a loaded peer, a jittery WAN), where a
fixed timeout would raise false suspicions. The link's own ``link_timeout`` still closes a
link that stays silent, which ends the suspicion's question (the peer is down).

A suspicion is local to the node that holds it and moves no data: it sends this node's
requests and writes elsewhere until the peer is heard again. That is why one bad link cannot
convict a node (the concern SWIM's indirect probes answer): no node acts on another's
suspicion, and only an explicit removal changes membership.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["MIN_DEVIATION", "WINDOW", "PhiAccrual"]

#: Heartbeat intervals remembered.
WINDOW = 200
#: The standard deviation used is at least this share of the mean interval: a link whose
#: heartbeats have been perfectly regular would otherwise call a few milliseconds late a failure.
MIN_DEVIATION = 0.1
#: Intervals needed before φ is computed; until then the fixed floor alone decides.
MIN_SAMPLES = 3


class PhiAccrual:
    """φ for one peer, fed with the arrival times of its heartbeats."""

    def __init__(self, window: int = WINDOW) -> None:
        self._intervals: deque[float] = deque(maxlen=window)
        self._sum = 0.0
        self._squares = 0.0
        self._last: float | None = None

    def heartbeat(self, now: float) -> None:
        """A heartbeat arrived at monotonic time ``now`` (one earlier than the last is
        ignored)."""
        if self._last is not None:
            if now < self._last:
                return
            interval = now - self._last
            if len(self._intervals) == self._intervals.maxlen:
                old = self._intervals[0]
                self._sum -= old
                self._squares -= old * old
            self._intervals.append(interval)
            self._sum += interval
            self._squares += interval * interval
        self._last = now

    def link_opened(self) -> None:
        """A new link: the gap since the last heartbeat of the previous link is not an
        interval of this peer's heartbeats (the history of intervals is kept)."""
        self._last = None

    @property
    def samples(self) -> int:
        return len(self._intervals)

    def mean(self) -> float | None:
        return self._sum / len(self._intervals) if self._intervals else None

    def phi(self, silence: float) -> float:
        """φ for ``silence`` seconds without a frame from the peer: 0 until
        :data:`MIN_SAMPLES` intervals are known; ``inf`` past what a float can tell."""
        n = len(self._intervals)
        if n < MIN_SAMPLES:
            return 0.0
        mean = self._sum / n
        variance = max(0.0, self._squares / n - mean * mean)
        deviation = max(math.sqrt(variance), MIN_DEVIATION * mean, 1e-3)
        later = 0.5 * math.erfc((silence - mean) / (deviation * math.sqrt(2)))
        return math.inf if later <= 0.0 else max(0.0, -math.log10(later))

    def suspects(self, silence: float, *, floor: float, threshold: float) -> bool:
        """Whether a silence of ``silence`` seconds makes the peer suspected: never before
        ``floor``; from there on once φ reaches ``threshold`` (at once while too few
        heartbeats are known to compute φ)."""
        if silence < floor:
            return False
        return len(self._intervals) < MIN_SAMPLES or self.phi(silence) >= threshold
