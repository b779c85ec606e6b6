"""Copies follow readers: when to gain a follower copy in a region, and when to drop it.

A node counts the reads it forwards for each document it does not hold, as an exponentially
decayed count (``follow_half_life`` seconds): a region whose clients keep reading a document
reaches ``follow_reads`` and gains a follower copy there (a record change every node sees; the
region's first node in rendezvous order takes it). The count must then fall back to a quarter
of the threshold before another gain is proposed (hysteresis: a document read around the
threshold does not flap). A follower node notes every access it serves; a follower copy idle
for ``follow_idle`` seconds is dropped (a record change again), and the hand-off drops the copy
only once the permanent holders cover it.

Homes move toward readers: every node also counts, per document, the accesses its own region's
clients make through it (reads, writes, sync sessions; decayed with the same half-life). A home
holder whose count stays under ``rehome_reads`` while a follower copy elsewhere has been in use
for ``rehome_after`` seconds moves the document's home there (:meth:`ReadTracker.cold`); the
old home's copy is then surplus and handed off. The follower threshold is above the cold one,
so a document read a little from both sides does not move back and forth.

Pure logic with an injected clock; the maps are bounded (the least recently touched entries go
first: a forgotten count is a cold one).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["FollowSettings", "ReadTracker"]

#: Documents tracked at most, in each map.
MAX_TRACKED = 100_000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FollowSettings:
    #: Follower copies at all (``placement.followers``).
    enabled: bool = True
    #: Decayed reads that gain a follower copy.
    reads: float = 20.0
    #: Seconds in which a read's weight halves.
    half_life: float = 60.0
    #: Seconds without an access after which a follower copy is dropped.
    idle: float = 600.0
    #: Homes move toward readers (``placement.rehome``).
    rehome: bool = True
    #: Decayed accesses of the home region's clients under which the home is cold.
    rehome_reads: float = 5.0
    #: Seconds a follower copy must have been in use (and this node up) before a move.
    rehome_after: float = 600.0


class ReadTracker:
    """Decayed read counts of documents read through this node, and last accesses of the
    follower copies it holds."""

    def __init__(
        self, settings: FollowSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        # doc id -> (decayed count, when counted, armed): armed once the count fell low again.
        self._reads: OrderedDict[str, tuple[float, float, bool]] = OrderedDict()
        # doc id -> last access served here from a follower copy.
        self._accessed: OrderedDict[str, float] = OrderedDict()
        # doc id -> (decayed count, when counted) of this region's clients' accesses here.
        self._local: OrderedDict[str, tuple[float, float]] = OrderedDict()
        # Counts start empty at every start: nothing is cold before rehome_after has passed.
        self._started = clock()

    def read(self, doc_id: str) -> bool:
        """Counts one forwarded read; True when it makes the document reach the threshold
        (propose a follower copy; the next proposal waits for the count to fall back)."""
        settings = self.settings
        if not settings.enabled:
            return False
        now = self._clock()
        count, at, armed = self._reads.pop(doc_id, (0.0, now, True))
        count = count * math.pow(0.5, (now - at) / settings.half_life) + 1.0
        armed = armed or count <= settings.reads / 4
        crossed = armed and count >= settings.reads
        self._reads[doc_id] = (count, now, armed and not crossed)
        _bound(self._reads)
        return crossed

    def access(self, doc_id: str) -> None:
        """Counts one access to ``doc_id`` by a client of this node's region."""
        now = self._clock()
        count, at = self._local.pop(doc_id, (0.0, now))
        self._local[doc_id] = (self._decay(count, now - at) + 1.0, now)
        _bound(self._local)

    def local_count(self, doc_id: str) -> float:
        """The decayed count of this region's accesses to ``doc_id`` through this node."""
        count, at = self._local.get(doc_id, (0.0, self._clock()))
        return self._decay(count, self._clock() - at)

    def cold(self, doc_id: str, follower_since: float) -> bool:
        """Whether this region's clients use ``doc_id`` so little that its home should move to
        the region of a follower copy in use for ``follower_since`` seconds."""
        settings = self.settings
        if not (settings.enabled and settings.rehome):
            return False
        if self._clock() - self._started < settings.rehome_after:
            return False  # the counts of before the start are gone
        return (
            follower_since >= settings.rehome_after
            and self.local_count(doc_id) < settings.rehome_reads
        )

    def _decay(self, count: float, seconds: float) -> float:
        return count * math.pow(0.5, max(seconds, 0.0) / self.settings.half_life)

    def touch(self, doc_id: str) -> None:
        """Notes an access served here from a follower copy of ``doc_id``."""
        self._accessed.pop(doc_id, None)
        self._accessed[doc_id] = self._clock()
        _bound(self._accessed)

    def idle(self, doc_ids: list[str]) -> list[str]:
        """Of the follower copies ``doc_ids`` held here, those idle for ``idle`` seconds (a
        copy never touched counts from its first check)."""
        now = self._clock()
        idle = []
        for doc_id in doc_ids:
            last = self._accessed.get(doc_id)
            if last is None:
                self._accessed[doc_id] = now
            elif now - last >= self.settings.idle:
                idle.append(doc_id)
        return idle

    def forget(self, doc_id: str) -> None:
        self._accessed.pop(doc_id, None)


def _bound(entries: OrderedDict[str, T]) -> None:
    while len(entries) > MAX_TRACKED:
        entries.popitem(last=False)
