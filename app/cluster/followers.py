"""Copies follow readers: when to gain a follower copy in a region, and when to drop it.

A node counts the reads it forwards for each document it does not hold, as an exponentially
decayed count (``follow_half_life`` seconds): a region whose clients keep reading a document
reaches ``follow_reads`` and gains a follower copy there (a record change every node sees; the
region's first node in rendezvous order takes it). The count must then fall back to a quarter
of the threshold before another gain is proposed (hysteresis: a document read around the
threshold does not flap). A follower node notes every access it serves; a follower copy idle
for ``follow_idle`` seconds is dropped (a record change again), and the hand-off drops the copy
only once the permanent holders cover it. Pure logic with an injected clock; both maps are
bounded (the least recently touched entries go first).
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
