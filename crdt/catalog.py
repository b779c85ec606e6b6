"""The catalog: one small opaque record per document id, in memory and durable.

The node keeps its placement records here (PRODUCT.md, "Placement"); the engine never reads
them: a record is bytes (the node writes JSON) of at most :data:`MAX_RECORD_BYTES`. Every
record is in memory from the store's open on, so reading one costs no I/O. A put commits
through the storage writer like any write (group commit) and changes memory only once
committed. The node replicates records to every node itself; the engine offers it a feed.

Each put takes the next seq of the file's one counter (:mod:`crdt.storage`), the counter of log
rows and tombstones: the *catalog feed* (:meth:`Catalog.since`) lists the records put after a
seq, each document once at its latest seq, and a peer keeps its checkpoint of this feed under
``f"{storage_id}/catalog"`` beside the one of the changes feed (keyed by the storage id alone).
A restored file gets a new storage id, which restarts both feeds at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .errors import LimitExceeded
from .jobs import PutCatalogRecord
from .queries import CatalogRecord
from .records import check_document_id
from .storage import Storage

__all__ = ["MAX_RECORD_BYTES", "Catalog", "CatalogRecord"]

#: The largest catalog record, in bytes.
MAX_RECORD_BYTES = 64 * 1024


class Catalog(Mapping[str, bytes]):
    """Catalog records by document id: a read-only mapping of the committed records, plus
    :meth:`put` and :meth:`since`. Reach it as ``store.catalog``; use it from the store's
    event loop."""

    def __init__(self, storage: Storage, records: Iterable[CatalogRecord]) -> None:
        self._storage = storage
        # The committed records: what the file holds.
        self._records: dict[str, CatalogRecord] = {record.doc_id: record for record in records}
        # The put of each document in flight and its bytes; the next put of it waits for it.
        self._inflight: dict[str, tuple[asyncio.Future[Any], bytes]] = {}

    def __getitem__(self, doc_id: str) -> bytes:
        return self._records[doc_id].data

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._records

    def record(self, doc_id: str) -> CatalogRecord | None:
        """``doc_id``'s committed record with its seq, or None."""
        return self._records.get(doc_id)

    async def put(self, doc_id: str, data: bytes) -> int:
        """Stores ``data`` as ``doc_id``'s record and returns its seq once committed. The same
        bytes as the committed record change nothing and return its seq. Puts of one document
        apply in call order (each waits for the previous one's commit).

        Raises InvalidDocumentId, LimitExceeded for a record over :data:`MAX_RECORD_BYTES`
        (nothing stored), StorageError when the commit failed (memory unchanged)."""
        check_document_id(doc_id)
        data = bytes(data)
        if len(data) > MAX_RECORD_BYTES:
            raise LimitExceeded(
                f"the catalog record of {doc_id!r} has {len(data)} bytes; "
                f"the limit is {MAX_RECORD_BYTES}",
                limit="catalog_record_bytes",
            )
        while (inflight := self._inflight.get(doc_id)) is not None:
            if inflight[0].done():
                # Committed, its callback not run yet: settle it now, the callback is a no-op.
                self._settle(doc_id, inflight)
            else:
                with contextlib.suppress(Exception):  # its own caller gets its error
                    await asyncio.shield(inflight[0])
        current = self._records.get(doc_id)
        if current is not None and current.data == data:
            return current.seq
        future = self._storage.submit(PutCatalogRecord(doc_id, data))
        mine = (future, data)
        self._inflight[doc_id] = mine
        # Memory follows the commit, not this coroutine: a cancelled caller's put still lands.
        future.add_done_callback(lambda _: self._settle(doc_id, mine))
        seq: int = await asyncio.shield(future)
        return seq

    def _settle(self, doc_id: str, inflight: tuple[asyncio.Future[Any], bytes]) -> None:
        if self._inflight.get(doc_id) is not inflight:
            return  # settled already
        del self._inflight[doc_id]
        future, data = inflight
        if not future.cancelled() and future.exception() is None:
            self._records[doc_id] = CatalogRecord(doc_id, future.result(), data)

    async def since(self, seq: int, limit: int = 1000) -> list[CatalogRecord]:
        """The catalog feed: ``(doc_id, seq, data)`` of each document whose record was put at a
        seq above ``seq``, once with its latest record, in seq order, at most ``limit``. Page
        on by passing the last record's seq. Read from the file: only committed records."""
        return await self._storage.catalog_since(seq, limit)
