"""The document store: documents opened on demand, a bounded hot set, durable writes, deletion.

The path of a write: validate and apply to the in-memory document → queue the update for the
storage writer (group commit) → once the transaction holding it committed, answer. A duplicate
that changes nothing is answered when the write that brought its content has committed, so an
answer always means "on disk".

Deletion (docs/design.md, "Deletion"): every document id has an *incarnation*. A delete records
a tombstone for the current incarnation and drops its content; a later write starts the next
incarnation from an empty document. Updates and tombstones are ordered by (incarnation,
deleted): a copy keeps the greatest state it has seen, content only from updates of that
incarnation while it is live. Whatever order deletes, writes and re-creations arrive in, every
copy reaches the same outcome, and an update of a deleted incarnation never brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from .document import Document
from .errors import (
    DocumentDeleted,
    DocumentNotFound,
    InvalidUpdate,
    LimitExceeded,
)
from .ops import apply_operations, parse_operations
from .records import (
    DOCUMENT_ID,
    Change,
    DocumentState,
    StoreLimits,
    StoreStatistics,
    WriteResult,
    check_document_id,
)
from .storage import Append, CompactResult, Delete, DocumentRecord, Storage

__all__ = [
    "DOCUMENT_ID",
    "Change",
    "DocumentState",
    "DocumentStore",
    "StoreLimits",
    "StoreStatistics",
    "WriteResult",
    "check_document_id",
    "open_store",
]

log = logging.getLogger("meridian.store")


class _Entry:
    """A hot document and its bookkeeping."""

    __slots__ = (
        "compact_at",
        "compacting",
        "deleted",
        "document",
        "inflight",
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

    @property
    def busy(self) -> bool:
        return self.writers > 0 or self.inflight is not None or self.compacting


class DocumentStore:
    """Documents of one node. Create with :func:`open_store`; use from one event loop."""

    def __init__(self, storage: Storage, limits: StoreLimits) -> None:
        self.storage = storage
        self.limits = limits
        self._hot: OrderedDict[str, _Entry] = OrderedDict()
        self._hot_bytes = 0
        # Loads in progress, so concurrent requests for a cold document read it once.
        self._loading: dict[str, asyncio.Future[_Entry | None]] = {}
        # Latest commit of documents no longer hot (evicted while nothing was in flight, or
        # dropped after a failure): a load waits for it before reading the disk.
        self._settling: dict[str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Ids whose disk read found no document, and nothing admitted since: a client that
        # asks for a never-written document reads the disk once, not on every request.
        # Bounded like the hot set (least recently asked dropped); admitting an id forgets it.
        self._absent: OrderedDict[str, None] = OrderedDict()
        # Counts admissions: a miss is remembered only when no document was admitted while
        # its disk read ran (one created and evicted meanwhile would be on disk, unseen).
        self._admissions = 0
        self._disk_reads = 0
        self._absent_hits = 0
        # Called with every committed change, in commit order (replication, subscribers).
        self._listeners: list[Callable[[Change], None]] = []
        self._loads = 0
        self._evictions = 0
        self._writes = 0
        self._rejected = 0
        self._compactions_queued = 0
        self._compaction_failures = 0
        #: Called with the seconds each accepted write spent being validated and applied in
        #: memory (before its commit); its exceptions are logged. The node's metrics set it.
        self.on_apply: Callable[[float], None] | None = None

    # -- reading -------------------------------------------------------------------------

    async def get(self, doc_id: str) -> Document:
        """The live document; raises DocumentNotFound / DocumentDeleted."""
        entry = await self._entry(check_document_id(doc_id))
        if entry is None:
            raise DocumentNotFound(f"document {doc_id!r} does not exist")
        if entry.deleted:
            raise DocumentDeleted(f"document {doc_id!r} was deleted")
        return entry.document

    async def lookup(self, doc_id: str) -> DocumentState | None:
        """What this node holds of ``doc_id``, tombstones included; None if never written."""
        entry = await self._entry(check_document_id(doc_id))
        if entry is None:
            return None
        return DocumentState(entry.document.incarnation, entry.deleted, entry.document)

    def subscribe(self, listener: Callable[[Change], None]) -> Callable[[], None]:
        """Calls ``listener(change)`` after each commit that changed a document (not for
        duplicates), from the event loop; returns the function that unsubscribes. A listener
        must not block; its exceptions are logged and do not affect the write."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _publish(self, change: Change) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("change listener failed for %s", change.doc_id)

    async def list_documents(
        self, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> list[DocumentRecord]:
        return await self.storage.list_documents(prefix, after, limit)

    async def _entry(self, doc_id: str) -> _Entry | None:
        entry = self._hot.get(doc_id)
        if entry is not None:
            self._hot.move_to_end(doc_id)
            return entry
        loading = self._loading.get(doc_id)
        if loading is None:
            # A task of the store's, not of the first caller: cancelling one request must not
            # fail the others waiting for the same document.
            loading = asyncio.ensure_future(self._load(doc_id))
            self._loading[doc_id] = loading
            self._tasks.add(loading)
            loading.add_done_callback(lambda task: self._loaded(doc_id, task))
        return await asyncio.shield(loading)

    def _loaded(self, doc_id: str, task: asyncio.Future[_Entry | None]) -> None:
        self._tasks.discard(task)
        if self._loading.get(doc_id) is task:
            del self._loading[doc_id]
        if not task.cancelled():
            task.exception()  # retrieved: the waiters re-raise it

    async def _load(self, doc_id: str) -> _Entry | None:
        if doc_id in self._absent:
            self._absent.move_to_end(doc_id)
            self._absent_hits += 1
            return None
        settling = self._settling.pop(doc_id, None)
        if settling is not None:
            with contextlib.suppress(Exception):
                await settling
        admissions = self._admissions
        self._disk_reads += 1
        stored = await self.storage.load(doc_id)
        if doc_id in self._hot:  # a write created it while we read the disk
            return self._hot[doc_id]
        if stored is None:
            if self._admissions == admissions:
                self._remember_absent(doc_id)
            return None
        document = self._new_document(doc_id, stored.record.incarnation)
        if not stored.record.deleted:
            document.load(stored.updates)
            document.stored_bytes = sum(len(u) for u in stored.updates)
        entry = _Entry(document, deleted=stored.record.deleted, log_rows=stored.log_rows)
        self._loads += 1
        self._admit(doc_id, entry)
        if self._compaction_due(entry):
            self._queue_compaction(doc_id, entry)
        return entry

    def _new_document(self, doc_id: str, incarnation: int) -> Document:
        return Document(
            doc_id,
            incarnation=incarnation,
            client_id=self.storage.client_id,
            max_pending_bytes=self.limits.max_pending_bytes,
        )

    def _remember_absent(self, doc_id: str) -> None:
        self._absent[doc_id] = None
        if len(self._absent) > self.limits.max_hot_documents:
            self._absent.popitem(last=False)

    def _admit(self, doc_id: str, entry: _Entry) -> None:
        self._admissions += 1
        self._absent.pop(doc_id, None)
        self._hot[doc_id] = entry
        self._hot_bytes += entry.document.stored_bytes
        self._evict(protect=doc_id)

    def _evict(self, protect: str | None = None) -> None:
        """Drops least recently used documents that are not busy; never ``protect`` (the one
        just admitted, which its caller is about to use)."""
        limits = self.limits
        if len(self._hot) <= limits.max_hot_documents and self._hot_bytes <= limits.max_hot_bytes:
            return
        # Pick victims from the least recently used end without copying the whole hot set.
        count, size = len(self._hot), self._hot_bytes
        victims = []
        for doc_id, entry in self._hot.items():
            if count <= limits.max_hot_documents and size <= limits.max_hot_bytes:
                break
            if entry.busy or doc_id == protect:
                continue
            victims.append(doc_id)
            count -= 1
            size -= entry.document.stored_bytes
        for doc_id in victims:
            self._drop(doc_id)
        self._evictions += len(victims)

    def _drop(self, doc_id: str) -> None:
        entry = self._hot.pop(doc_id, None)
        if entry is None:
            return
        self._hot_bytes -= entry.document.stored_bytes
        if entry.inflight is not None:
            self._settling[doc_id] = entry.inflight

    # -- writing -------------------------------------------------------------------------

    async def apply_update(
        self,
        doc_id: str,
        data: bytes,
        *,
        incarnation: int | None = None,
        origin: object = None,
        on_applied: Callable[[], None] | None = None,
    ) -> WriteResult:
        """Applies a Yjs v1 update and returns once it is committed. Raises InvalidUpdate
        (nothing changed), LimitExceeded, or StorageError (the write is not durable and was
        undone in memory).

        Without ``incarnation`` (a client's write) it creates the document, or its next
        incarnation when deleted. With it (a copy from another node) the update belongs to
        that incarnation: it starts it when this node holds an older one, and is ignored
        (``changed`` False) when this node holds a newer one or that one deleted.
        ``origin`` is handed to listeners with the change; ``on_applied()`` is called once
        the update is applied in memory, before the commit is awaited (a caller can then
        apply the next update of an ordered stream while this one commits)."""
        check_document_id(doc_id)
        writable = await self._writable(doc_id, incarnation)
        if isinstance(writable, WriteResult):
            return writable
        entry, created, replaced = writable
        try:
            document = entry.document
            started = time.perf_counter()
            self._check_size(document, len(data))
            try:
                store = document.apply_update(data)
            except InvalidUpdate:
                self._rejected += 1
                if document.poisoned and not created:
                    self._drop(doc_id)
                raise
            self._applied(time.perf_counter() - started)
            if created:
                self._install_fresh(doc_id, entry, replaced)
            if on_applied is not None:
                on_applied()
            return await self._commit(doc_id, entry, data if store else None, created, origin)
        finally:
            entry.writers -= 1

    async def apply_operations(
        self, doc_id: str, body: Any, *, origin: object = None
    ) -> WriteResult:
        """Applies JSON operations (PRODUCT.md) atomically; see :mod:`crdt.ops`."""
        check_document_id(doc_id)
        started = time.perf_counter()
        ops = parse_operations(body, max_operations=self.limits.max_operations)
        parsing = time.perf_counter() - started
        writable = await self._writable(doc_id, None)
        assert not isinstance(writable, WriteResult)
        entry, created, replaced = writable
        try:
            document = entry.document
            started = time.perf_counter()
            update = apply_operations(document, ops, client_id=self.storage.client_id)
            self._check_size(document, len(update))
            store = document.apply_update(update)
            self._applied(parsing + time.perf_counter() - started)
            if created:
                self._install_fresh(doc_id, entry, replaced)
            return await self._commit(doc_id, entry, update if store else None, created, origin)
        finally:
            entry.writers -= 1

    def _applied(self, seconds: float) -> None:
        if self.on_apply is not None:
            try:
                self.on_apply(seconds)
            except Exception:
                log.exception("the apply observer failed")

    def _check_size(self, document: Document, adding: int) -> None:
        limit = self.limits.max_document_bytes
        if document.stored_bytes + adding > limit:
            raise LimitExceeded(
                f"document {document.id!r} would exceed the {limit}-byte document size limit",
                limit="max_document_bytes",
            )

    async def _writable(
        self, doc_id: str, incarnation: int | None
    ) -> tuple[_Entry, bool, _Entry | None] | WriteResult:
        """The entry to write to: (entry, created, the entry it replaces), or the answer for
        an update of an incarnation this node already left behind.

        A created entry (a new document, or another incarnation) is not in the hot set yet:
        the caller admits it with :meth:`_install_fresh` once the first write applied, so a
        rejected write creates nothing. The caller owns one ``writers`` count on the entry
        and must give it back. Nothing awaits between the checks below and the caller's
        apply: two fresh copies written with this node's client id would reuse Yjs ids.
        """
        await self._entry(doc_id)
        entry = self._hot.get(doc_id)
        if entry is None:
            # Loaded, then evicted before this coroutine resumed (or it does not exist): read
            # it again; nothing yields between this load's admission and the check.
            await self._load(doc_id)
            entry = self._hot.get(doc_id)
        if entry is not None:
            current = entry.document.incarnation
            if incarnation is not None and (
                incarnation < current or (incarnation == current and entry.deleted)
            ):
                return WriteResult(doc_id, entry.document.state_vector(), False, False, current)
            if not entry.deleted and incarnation in (None, current):
                entry.writers += 1
                return entry, False, None
        if incarnation is None:
            incarnation = entry.document.incarnation + 1 if entry is not None else 1
        fresh = _Entry(
            self._new_document(doc_id, incarnation),
            deleted=False,
            log_rows=0,
        )
        fresh.writers += 1
        return fresh, True, entry

    def _install_fresh(self, doc_id: str, fresh: _Entry, replaced: _Entry | None) -> None:
        if replaced is not None:
            # Writes of the new incarnation commit after the tombstone (queue order); a load
            # must still wait for the tombstone's commit.
            fresh.inflight = replaced.inflight
            self._drop(doc_id)
        self._admit(doc_id, fresh)

    async def _commit(
        self, doc_id: str, entry: _Entry, data: bytes | None, created: bool, origin: object
    ) -> WriteResult:
        document = entry.document
        if data is None and not created:
            # Nothing new: answer once whatever brought this content is on disk.
            if entry.inflight is not None:
                await asyncio.shield(entry.inflight)
            return WriteResult(doc_id, document.state_vector(), False, False, document.incarnation)
        job = Append(doc_id, document.incarnation, data or b"\x00\x00", create=created)
        future = self.storage.submit(job)
        entry.inflight = future
        document.uncommitted += 1
        document.stored_bytes += len(job.data)
        self._hot_bytes += len(job.data)
        # Bookkeeping belongs to the commit, not to this coroutine: a cancelled request does
        # not cancel its queued write, and the entry must stay busy until that commits.
        change = Change(doc_id, document.incarnation, job.data, origin)
        future.add_done_callback(lambda done: self._settled(doc_id, entry, done, change))
        await asyncio.shield(future)
        self._writes += 1
        entry.log_rows += 1
        if self._compaction_due(entry):
            self._queue_compaction(doc_id, entry)
        self._evict()
        return WriteResult(doc_id, document.state_vector(), True, created, document.incarnation)

    def _settled(
        self, doc_id: str, entry: _Entry, future: asyncio.Future[Any], change: Change
    ) -> None:
        entry.document.uncommitted -= 1
        if entry.inflight is future:
            entry.inflight = None
        if self._settling.get(doc_id) is future:
            del self._settling[doc_id]
        if not future.cancelled() and future.exception() is not None:
            # Not durable: forget the in-memory state (the next access reloads from disk) and
            # never reuse the ids of edits that readers may have seen.
            entry.document.poisoned = True
            if self._hot.get(doc_id) is entry:
                self._drop(doc_id)
            self.storage.new_client_id()
        elif not future.cancelled():
            self._publish(change)

    async def delete(self, doc_id: str, *, origin: object = None) -> int:
        """Deletes the document (a tombstone of its current incarnation); returns that
        incarnation. Raises DocumentNotFound when it does not exist or is already deleted."""
        entry = await self._entry(check_document_id(doc_id))
        if entry is None:
            raise DocumentNotFound(f"document {doc_id!r} does not exist")
        if entry.deleted:
            raise DocumentDeleted(f"document {doc_id!r} was already deleted")
        incarnation = entry.document.incarnation
        await self._record_tombstone(doc_id, incarnation, origin)
        return incarnation

    async def apply_tombstone(
        self, doc_id: str, incarnation: int, *, origin: object = None
    ) -> bool:
        """Records another node's tombstone of ``incarnation`` unless this node holds a newer
        state (a later incarnation, or this one deleted already). True when it was recorded;
        returns once it is committed."""
        entry = await self._entry(check_document_id(doc_id))
        if entry is not None:
            current = entry.document.incarnation
            if incarnation < current or (incarnation == current and entry.deleted):
                return False
        await self._record_tombstone(doc_id, incarnation, origin)
        return True

    async def _record_tombstone(self, doc_id: str, incarnation: int, origin: object) -> None:
        tombstone = _Entry(
            self._new_document(doc_id, incarnation),
            deleted=True,
            log_rows=0,
        )
        future = self.storage.submit(Delete(doc_id, incarnation))
        tombstone.inflight = future
        # The next incarnation starts from clock 0 again: give this node's edits a new id.
        self.storage.new_client_id()
        self._drop(doc_id)
        self._admit(doc_id, tombstone)
        tombstone.document.uncommitted += 1
        change = Change(doc_id, incarnation, None, origin)
        future.add_done_callback(lambda done: self._settled(doc_id, tombstone, done, change))
        await asyncio.shield(future)

    # -- compaction ----------------------------------------------------------------------

    def _compaction_due(self, entry: _Entry) -> bool:
        due = max(entry.compact_at, self.limits.compact_after_updates)
        return not entry.compacting and entry.log_rows >= due

    def _queue_compaction(self, doc_id: str, entry: _Entry) -> None:
        entry.compacting = True
        self._compactions_queued += 1
        task = asyncio.ensure_future(self._compact(doc_id, entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compact(self, doc_id: str, entry: _Entry) -> None:
        """Folds on a reader thread, then has the writer install the snapshot."""
        result: CompactResult | None = None
        try:
            prepared = await self.storage.prepare_compaction(doc_id)
            if prepared is not None:
                result = await self.storage.submit(prepared)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # pycrdt panics are BaseExceptions
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            # Logged and counted; the log stays (nothing is lost) and the next attempt waits
            # until the log has grown by another compact_after_updates rows.
            log.error("compaction of %s failed: %s", doc_id, exc)
            self._compaction_failures += 1
            entry.compact_at = entry.log_rows + self.limits.compact_after_updates
            result = None
        finally:
            entry.compacting = False
        if result is None or result.incarnation != entry.document.incarnation:
            return
        entry.log_rows = max(0, entry.log_rows - result.rows_folded)
        entry.compact_at = 0
        if self._hot.get(doc_id) is entry:
            self._hot_bytes -= entry.document.stored_bytes
        # Rows committed after the fold read its input stay in the log.
        entry.document.stored_bytes = max(
            result.snapshot_bytes,
            entry.document.stored_bytes - result.bytes_folded + result.snapshot_bytes,
        )
        if self._hot.get(doc_id) is entry:
            self._hot_bytes += entry.document.stored_bytes
            if self._compaction_due(entry):
                # Rows committed while this compaction ran are due too.
                self._queue_compaction(doc_id, entry)

    # -- statistics ----------------------------------------------------------------------

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            hot_documents=len(self._hot),
            hot_bytes=self._hot_bytes,
            loads=self._loads,
            disk_reads=self._disk_reads,
            absent_hits=self._absent_hits,
            evictions=self._evictions,
            writes=self._writes,
            rejected_updates=self._rejected,
            compactions_queued=self._compactions_queued,
            compaction_failures=self._compaction_failures,
        )

    async def aclose(self, grace: float = 5.0) -> None:
        """Lets compactions in progress finish (up to ``grace`` seconds), then cancels the
        rest; a cancelled compaction loses nothing (the log stays)."""
        deadline = asyncio.get_running_loop().time() + grace
        while self._tasks:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await asyncio.wait(list(self._tasks), timeout=remaining)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def open_store(
    data_dir: Path, limits: StoreLimits | None = None
) -> AsyncIterator[DocumentStore]:
    """Opens the store of a data directory (its ``meridian.duckdb``); on exit, finishes
    queued writes and closes the file. Raises StorageError subclasses when it cannot open."""
    limits = limits or StoreLimits()
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    storage = Storage(
        data_dir / "meridian.duckdb",
        max_batch=limits.max_batch,
        memory_limit=limits.duckdb_memory_limit,
    )
    started = time.monotonic()
    await asyncio.to_thread(storage.open)
    log.info("storage open in %.3fs: %s", time.monotonic() - started, storage.path)
    store = DocumentStore(storage, limits)
    try:
        yield store
    finally:
        await store.aclose()
        await asyncio.to_thread(storage.close)
