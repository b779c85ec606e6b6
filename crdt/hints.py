"""Hints: the documents this node holds a copy of only on behalf of their holders.

A node that accepts a write while every holder of the document is unreachable keeps the copy
with a *hint* and hands it off later (PRODUCT.md, "Placement"). A hint is durable, and a write
that needs one commits it in the same transaction (``hint=True`` on the store's writes), so an
acknowledged write never lacks its hint; forgetting the copy drops its hint in the same
transaction too. The committed hints are in memory from the store's open on.

Part of :mod:`crdt.store`, which owns the one :class:`Hints` of a store and offers
``add_hint``, ``drop_hint`` and ``hints``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Set
from typing import Any

from .jobs import AddHint, DropHint
from .storage import Storage

__all__ = ["Hints"]


class Hints(Set[str]):
    """The set of committed hints, plus the jobs in flight that change it. Use it from the
    store's event loop."""

    def __init__(self, storage: Storage, doc_ids: Iterable[str]) -> None:
        self._storage = storage
        # The documents whose hint is committed: what the file holds.
        self._committed: set[str] = set(doc_ids)
        # Per document, the jobs in flight that add or drop its hint; memory follows their
        # commits in order (their futures resolve in commit order).
        self._inflight: dict[str, int] = {}

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._committed

    def __iter__(self) -> Iterator[str]:
        return iter(self._committed)

    def __len__(self) -> int:
        return len(self._committed)

    def needed(self, doc_id: str) -> bool:
        """Whether a write that must leave ``doc_id`` hinted has to record the hint: unless
        it is committed and no job that could drop it is in flight."""
        return doc_id not in self._committed or doc_id in self._inflight

    def track(self, doc_id: str, future: asyncio.Future[Any], *, hinted: bool) -> None:
        """Follows a submitted job that leaves ``doc_id`` hinted (or not) once committed."""
        self._inflight[doc_id] = self._inflight.get(doc_id, 0) + 1
        future.add_done_callback(lambda done: self._settle(doc_id, done, hinted))

    def _settle(self, doc_id: str, future: asyncio.Future[Any], hinted: bool) -> None:
        left = self._inflight[doc_id] - 1
        if left:
            self._inflight[doc_id] = left
        else:
            del self._inflight[doc_id]
        if future.cancelled() or future.exception() is not None:
            return
        if hinted:
            self._committed.add(doc_id)
        else:
            self._committed.discard(doc_id)

    async def add(self, doc_id: str) -> None:
        """Records a hint for ``doc_id``; returns once committed (at once when it is)."""
        future = self.add_nowait(doc_id)
        if future is not None:
            await asyncio.shield(future)

    def add_nowait(self, doc_id: str) -> asyncio.Future[Any] | None:
        """Queues the hint's commit and returns its future; None when it is committed."""
        if not self.needed(doc_id):
            return None
        return self._submit(AddHint(doc_id), hinted=True)

    async def drop(self, doc_id: str) -> None:
        """Removes ``doc_id``'s hint; returns once committed (at once when there is none)."""
        if doc_id in self._committed or doc_id in self._inflight:
            await asyncio.shield(self._submit(DropHint(doc_id), hinted=False))

    def _submit(self, job: AddHint | DropHint, *, hinted: bool) -> asyncio.Future[Any]:
        future = self._storage.submit(job)
        self.track(job.doc_id, future, hinted=hinted)
        return future
