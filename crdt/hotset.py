"""The documents a store holds in memory, and what it remembers of the ones it does not.

Part of :mod:`crdt.store`. No I/O and no waiting: the store reads documents from disk and
admits them here; the hot set keeps them up to ``max_hot_documents`` and ``max_hot_bytes``
(stored bytes), drops the least recently used first, and never drops an entry in use. It also
remembers, bounded the same way, which ids a disk read found absent and which copies were
forgotten lately, so the store can tell whether a disk read is still good.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from typing import Any

from .document import Document
from .records import StoreLimits

__all__ = ["Entry", "HotSet"]


_LINEAGES = itertools.count(1)


class Entry:
    """A hot document and its bookkeeping."""

    __slots__ = (
        "compact_at",
        "compacting",
        "deleted",
        "document",
        "inflight",
        "lineage",
        "log_rows",
        "writers",
    )

    def __init__(self, document: Document, *, deleted: bool, log_rows: int) -> None:
        self.document = document
        self.deleted = deleted
        # Rows in the log after the snapshot; compaction starts past the configured count.
        self.log_rows = log_rows
        self.compacting = False
        # Log rows at which the next compaction is due (0: the configured count).
        self.compact_at = 0
        # The commit future of the latest write to this document, while it is in flight.
        self.inflight: asyncio.Future[Any] | None = None
        # Writes between taking this entry and their commit; a used entry is never evicted.
        self.writers = 0
        # Names this in-memory copy for the storage writer: once one of its writes fails to
        # commit, the later ones (applied on top of it) must not commit either.
        self.lineage = next(_LINEAGES)

    @property
    def busy(self) -> bool:
        return self.writers > 0 or self.inflight is not None or self.compacting

    def covered_by(self, clocks: dict[int, int], incarnation: int | None) -> bool:
        """Whether another copy, at state vector ``clocks`` of ``incarnation`` (None: this
        copy's), holds everything this one does: it is at a later incarnation, or at this
        one and this copy is live and its changes are all in ``clocks``."""
        current = self.document.incarnation
        if incarnation is not None and incarnation != current:
            return incarnation > current
        return not self.deleted and self.document.covered_by(clocks)


class HotSet:
    """Entries by document id, least recently used first."""

    def __init__(self, limits: StoreLimits) -> None:
        self._limits = limits
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        #: Stored bytes of the documents held; the store adds what its writes append.
        self.bytes = 0
        #: Latest commit of documents no longer held (evicted while nothing was in flight,
        #: dropped after a failure, or forgotten): a load waits for it before reading the
        #: disk. The commit's own callback removes it.
        self.settling: dict[str, asyncio.Future[Any]] = {}
        # Ids whose disk read found no document, and nothing admitted since: a client that
        # asks for a never-written document reads the disk once, not on every request.
        # Bounded like the entries (least recently asked dropped); admitting an id forgets it.
        self._absent: OrderedDict[str, None] = OrderedDict()
        #: Counts admissions: a miss is remembered only when no document was admitted while
        #: its disk read ran (one created and evicted meanwhile would be on disk, unseen).
        self.admissions = 0
        #: Counts forgotten copies. Per copy forgotten lately, the count when it was: a disk
        #: read that began before may have read the copy that is gone. Bounded like _absent;
        #: past it, every read that began before the latest dropped mark counts as stale.
        self.forgets = 0
        self._forgotten: OrderedDict[str, int] = OrderedDict()
        self._forgotten_dropped = 0
        self.evictions = 0
        self.absent_hits = 0

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, doc_id: str) -> Entry | None:
        return self._entries.get(doc_id)

    def use(self, doc_id: str) -> Entry | None:
        """The entry, now the most recently used; None when it is not held."""
        entry = self._entries.get(doc_id)
        if entry is not None:
            self._entries.move_to_end(doc_id)
        return entry

    def admit(self, doc_id: str, entry: Entry) -> None:
        """Holds ``entry`` (replacing nothing: drop the old one first), then evicts what no
        longer fits, never ``entry`` itself."""
        self.admissions += 1
        self._absent.pop(doc_id, None)
        self._entries[doc_id] = entry
        self.bytes += entry.document.stored_bytes
        self.evict(protect=doc_id)

    def evict(self, protect: str | None = None) -> None:
        """Drops least recently used documents that are not busy; never ``protect`` (the one
        just admitted, which its caller is about to use)."""
        limits = self._limits
        if len(self._entries) <= limits.max_hot_documents and self.bytes <= limits.max_hot_bytes:
            return
        # Pick victims from the least recently used end without copying the whole hot set.
        count, size = len(self._entries), self.bytes
        victims = []
        for doc_id, entry in self._entries.items():
            if count <= limits.max_hot_documents and size <= limits.max_hot_bytes:
                break
            if entry.busy or doc_id == protect:
                continue
            victims.append(doc_id)
            count -= 1
            size -= entry.document.stored_bytes
        for doc_id in victims:
            self.drop(doc_id)
        self.evictions += len(victims)

    def drop(self, doc_id: str) -> None:
        """Stops holding ``doc_id``; its commit in flight, if any, becomes settling."""
        entry = self._entries.pop(doc_id, None)
        if entry is None:
            return
        self.bytes -= entry.document.stored_bytes
        if entry.inflight is not None:
            self.settling[doc_id] = entry.inflight

    # -- what the store remembers of documents it does not hold ----------------------------

    def known_absent(self, doc_id: str) -> bool:
        """Whether a disk read found no ``doc_id`` and nothing admitted it since."""
        if doc_id not in self._absent:
            return False
        self._absent.move_to_end(doc_id)
        self.absent_hits += 1
        return True

    def remember_absent(self, doc_id: str) -> None:
        self._absent[doc_id] = None
        if len(self._absent) > self._limits.max_hot_documents:
            self._absent.popitem(last=False)

    def mark_forgotten(self, doc_id: str) -> None:
        """Records that ``doc_id``'s copy is being forgotten (see :meth:`forgotten_since`)."""
        self.forgets += 1
        self._forgotten[doc_id] = self.forgets
        self._forgotten.move_to_end(doc_id)
        if len(self._forgotten) > self._limits.max_hot_documents:
            _, count = self._forgotten.popitem(last=False)
            self._forgotten_dropped = max(self._forgotten_dropped, count)

    def forgotten_since(self, doc_id: str, count: int) -> bool:
        """Whether ``doc_id`` may have been forgotten after :attr:`forgets` was ``count``."""
        return self._forgotten.get(doc_id, 0) > count or self._forgotten_dropped > count
