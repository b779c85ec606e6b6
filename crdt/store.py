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

Placement (PRODUCT.md): a node holds only some documents. The store keeps what the node needs
for it: the catalog of placement records (``store.catalog``, :mod:`crdt.catalog`), hints for
copies held on behalf of unreachable holders (``hint=True`` on writes, :mod:`crdt.hints`), and
:meth:`DocumentStore.forget`, which drops this node's copy of a document, unlike a delete: no
tombstone, nothing replicated, the document lives on at its holders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from .catalog import Catalog, CatalogRecord
from .document import Document
from .errors import (
    DocumentDeleted,
    DocumentNotFound,
    InvalidUpdate,
    LimitExceeded,
)
from .hints import Hints
from .hotset import Entry, HotSet
from .lib0 import DecodeError
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
from .statevector import decode_state_vector
from .storage import Append, CompactResult, Delete, DocumentRecord, Forget, Storage

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


class DocumentStore:
    """Documents of one node. Create with :func:`open_store`; use from one event loop.

    ``catalog`` and ``hints`` are what the storage file holds (:func:`open_store` reads them).
    """

    def __init__(
        self,
        storage: Storage,
        limits: StoreLimits,
        *,
        catalog: Iterable[CatalogRecord],
        hints: Iterable[str],
    ) -> None:
        self.storage = storage
        self.limits = limits
        #: The catalog of placement records, all in memory.
        self.catalog = Catalog(storage, catalog)
        # The copies held on behalf of their holders (committed), and hint jobs in flight.
        self._hints = Hints(storage, hints)
        # The documents in memory, and what is remembered of the others.
        self._hot = HotSet(limits)
        # Loads in progress, so concurrent requests for a cold document read it once.
        self._loading: dict[str, asyncio.Future[Entry | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Called with every committed change, in commit order (replication, subscribers).
        self._listeners: list[Callable[[Change], None]] = []
        self._loads = 0
        self._disk_reads = 0
        self._forgotten_copies = 0
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

    async def _entry(self, doc_id: str) -> Entry | None:
        entry = self._hot.use(doc_id)
        if entry is not None:
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

    def _loaded(self, doc_id: str, task: asyncio.Future[Entry | None]) -> None:
        self._tasks.discard(task)
        if self._loading.get(doc_id) is task:
            del self._loading[doc_id]
        if not task.cancelled():
            task.exception()  # retrieved: the waiters re-raise it

    async def _load(self, doc_id: str) -> Entry | None:
        if self._hot.known_absent(doc_id):
            return None
        while True:
            settling = self._hot.settling.get(doc_id)
            if settling is not None:
                with contextlib.suppress(Exception):
                    await settling
            admissions, forgets = self._hot.admissions, self._hot.forgets
            self._disk_reads += 1
            stored = await self.storage.load(doc_id)
            hot = self._hot.get(doc_id)
            if hot is not None:  # a write created it while we read the disk
                return hot
            if not self._hot.forgotten_since(doc_id, forgets):
                break  # else the copy read may be gone: read again
        if stored is None:
            if self._hot.admissions == admissions:
                self._hot.remember_absent(doc_id)
            return None
        document = self._new_document(doc_id, stored.record.incarnation)
        if not stored.record.deleted:
            document.load(stored.updates)
            document.stored_bytes = sum(len(u) for u in stored.updates)
        entry = Entry(document, deleted=stored.record.deleted, log_rows=stored.log_rows)
        self._loads += 1
        self._hot.admit(doc_id, entry)
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

    # -- writing -------------------------------------------------------------------------

    async def apply_update(
        self,
        doc_id: str,
        data: bytes,
        *,
        incarnation: int | None = None,
        origin: object = None,
        on_applied: Callable[[], None] | None = None,
        hint: bool = False,
        floor: int = 0,
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
        apply the next update of an ordered stream while this one commits). ``hint`` records
        a hint for the document (see :meth:`add_hint`) in the transaction of the update, so
        it is committed when this returns; an update ignored for its incarnation records none.
        ``floor`` (a client's write): the lowest incarnation it may go to, the one after the
        highest known to be deleted; a copy held here of an earlier one is left behind, as a
        copy of a later incarnation received from a peer would leave it."""
        check_document_id(doc_id)
        writable = await self._writable(doc_id, incarnation, floor)
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
                    self._hot.drop(doc_id)
                raise
            self._applied(time.perf_counter() - started)
            if created:
                self._install_fresh(doc_id, entry, replaced)
            if on_applied is not None:
                on_applied()
            return await self._commit(
                doc_id, entry, data if store else None, created, origin, hint=hint
            )
        finally:
            entry.writers -= 1

    async def apply_operations(
        self,
        doc_id: str,
        body: Any,
        *,
        origin: object = None,
        hint: bool = False,
        floor: int = 0,
    ) -> WriteResult:
        """Applies JSON operations (PRODUCT.md) atomically; see :mod:`crdt.ops`. ``hint`` and
        ``floor`` as for :meth:`apply_update`."""
        check_document_id(doc_id)
        started = time.perf_counter()
        ops = parse_operations(body, max_operations=self.limits.max_operations)
        parsing = time.perf_counter() - started
        writable = await self._writable(doc_id, None, floor)
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
            return await self._commit(
                doc_id, entry, update if store else None, created, origin, hint=hint
            )
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
        self, doc_id: str, incarnation: int | None, floor: int = 0
    ) -> tuple[Entry, bool, Entry | None] | WriteResult:
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
        if incarnation is None and floor and (entry is None or entry.document.incarnation < floor):
            incarnation = floor  # as if a copy of that incarnation came from a peer
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
        fresh = Entry(
            self._new_document(doc_id, incarnation),
            deleted=False,
            log_rows=0,
        )
        fresh.writers += 1
        return fresh, True, entry

    def _install_fresh(self, doc_id: str, fresh: Entry, replaced: Entry | None) -> None:
        if replaced is not None:
            # Writes of the new incarnation commit after the tombstone (queue order); a load
            # must still wait for the tombstone's commit.
            fresh.inflight = replaced.inflight
            self._hot.drop(doc_id)
        self._hot.admit(doc_id, fresh)

    async def _commit(
        self,
        doc_id: str,
        entry: Entry,
        data: bytes | None,
        created: bool,
        origin: object,
        *,
        hint: bool,
    ) -> WriteResult:
        document = entry.document
        if data is None and not created:
            # Nothing new: answer once whatever brought this content is on disk (and the
            # hint, queued now to keep its order with other hint changes).
            hinted = self._hints.add_nowait(doc_id) if hint else None
            if entry.inflight is not None:
                await asyncio.shield(entry.inflight)
            if hinted is not None:
                await asyncio.shield(hinted)
            return WriteResult(doc_id, document.state_vector(), False, False, document.incarnation)
        hint = hint and self._hints.needed(doc_id)
        job = Append(
            doc_id,
            document.incarnation,
            data or b"\x00\x00",
            create=created,
            hint=hint,
            lineage=entry.lineage,
        )
        future = self.storage.submit(job)
        if hint:
            self._hints.track(doc_id, future, hinted=True)
        entry.inflight = future
        document.uncommitted += 1
        document.stored_bytes += len(job.data)
        self._hot.bytes += len(job.data)
        # Bookkeeping belongs to the commit, not to this coroutine: a cancelled request does
        # not cancel its queued write, and the entry must stay busy until that commits.
        change = Change(doc_id, document.incarnation, job.data, origin)
        future.add_done_callback(lambda done: self._settled(doc_id, entry, done, change))
        await asyncio.shield(future)
        self._writes += 1
        entry.log_rows += 1
        if self._compaction_due(entry):
            self._queue_compaction(doc_id, entry)
        self._hot.evict()
        return WriteResult(doc_id, document.state_vector(), True, created, document.incarnation)

    def _settled(
        self, doc_id: str, entry: Entry, future: asyncio.Future[Any], change: Change
    ) -> None:
        entry.document.uncommitted -= 1
        if entry.inflight is future:
            entry.inflight = None
        if self._hot.settling.get(doc_id) is future:
            del self._hot.settling[doc_id]
        if not future.cancelled() and future.exception() is not None:
            # Not durable: forget the in-memory state (the next access reloads from disk) and
            # never reuse the ids of edits that readers may have seen.
            entry.document.poisoned = True
            if self._hot.get(doc_id) is entry:
                self._hot.drop(doc_id)
            self.storage.new_client_id()
        elif not future.cancelled():
            self._publish(change)

    async def delete(self, doc_id: str, *, origin: object = None, hint: bool = False) -> int:
        """Deletes the document (a tombstone of its current incarnation); returns that
        incarnation. Raises DocumentNotFound when it does not exist or is already deleted.
        ``hint`` records a hint in the tombstone's transaction (see :meth:`add_hint`)."""
        entry = await self._entry(check_document_id(doc_id))
        if entry is None:
            raise DocumentNotFound(f"document {doc_id!r} does not exist")
        if entry.deleted:
            raise DocumentDeleted(f"document {doc_id!r} was already deleted")
        incarnation = entry.document.incarnation
        await self._record_tombstone(doc_id, incarnation, origin, hint=hint)
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
        await self._record_tombstone(doc_id, incarnation, origin, hint=False)
        return True

    async def _record_tombstone(
        self, doc_id: str, incarnation: int, origin: object, *, hint: bool
    ) -> None:
        tombstone = Entry(
            self._new_document(doc_id, incarnation),
            deleted=True,
            log_rows=0,
        )
        hint = hint and self._hints.needed(doc_id)
        future = self.storage.submit(Delete(doc_id, incarnation, hint=hint))
        if hint:
            self._hints.track(doc_id, future, hinted=True)
        tombstone.inflight = future
        # The next incarnation starts from clock 0 again: give this node's edits a new id.
        self.storage.new_client_id()
        self._hot.drop(doc_id)
        self._hot.admit(doc_id, tombstone)
        tombstone.document.uncommitted += 1
        change = Change(doc_id, incarnation, None, origin)
        future.add_done_callback(lambda done: self._settled(doc_id, tombstone, done, change))
        await asyncio.shield(future)

    # -- hints and forgetting (placement) -------------------------------------------------

    def hints(self) -> frozenset[str]:
        """The documents this node holds a copy of on behalf of their holders (committed
        hints), from memory."""
        return frozenset(self._hints)

    async def add_hint(self, doc_id: str) -> None:
        """Records durably that this node holds ``doc_id`` only on behalf of its holders and
        must hand the copy off; returns once committed (at once when it is). A write that
        needs the hint should pass ``hint=True`` instead, which commits it with the write."""
        await self._hints.add(check_document_id(doc_id))

    async def drop_hint(self, doc_id: str) -> None:
        """Removes ``doc_id``'s hint (its copy was handed off, or placement now puts it
        here); returns once committed (at once when there is none)."""
        await self._hints.drop(check_document_id(doc_id))

    async def forget(
        self, doc_id: str, covered_by: bytes | None = None, *, incarnation: int | None = None
    ) -> bool:
        """Drops this node's copy of ``doc_id`` (its content or tombstone, log, snapshot and
        hint) in one transaction, and from memory: afterwards the store behaves as if it had
        never held it (``get`` raises DocumentNotFound, the changes feed and listings omit
        it) and a later write or copy from a peer starts afresh. Not a delete: nothing is
        recorded or replicated, the document lives on at its holders. Returns True once the
        drop committed (or when there was no copy), False when the copy was kept.

        ``covered_by`` is a holder's encoded state vector of its copy of ``incarnation``
        (default: this copy's). The copy is dropped only if that covers it: the holder's
        incarnation is later, or it is the same, this copy is live and every change it holds
        (those waiting for dependencies included) is in the state vector. A state vector
        says nothing of deletions, nor of a tombstone: the caller makes sure the holder got
        them (e.g. sent it ``document.encode_state(covered_by)``, which carries this copy's
        delete set). Without ``covered_by`` the copy is dropped unconditionally.

        The copy is kept (False) while a write to it is between apply and commit or it is
        being compacted. The check and the drop are atomic for writes: a write that comes
        after the check commits after the drop, to a fresh copy, and is never lost. Live
        subscribers are the caller's to check. Raises InvalidDocumentId, InvalidUpdate for a
        malformed state vector, StorageError when the drop did not commit (the copy stays).
        """
        check_document_id(doc_id)
        clocks: dict[int, int] | None = None
        if covered_by is not None:
            try:
                clocks = decode_state_vector(covered_by)
            except DecodeError as exc:
                raise InvalidUpdate(f"invalid state vector: {exc}") from exc
        await self._entry(doc_id)
        entry = self._hot.get(doc_id)
        if entry is None:
            # Evicted before this coroutine resumed, or never written: read it again;
            # nothing yields between this load's admission and the checks below.
            await self._load(doc_id)
            entry = self._hot.get(doc_id)
        # Nothing awaits from here to the submit: no write can land between check and drop.
        if entry is None:
            await self._hints.drop(doc_id)
            return True
        if entry.busy or entry.document.uncommitted or doc_id in self._hot.settling:
            return False
        if clocks is not None and not entry.covered_by(clocks, incarnation):
            return False
        future = self.storage.submit(Forget(doc_id))
        self._hints.track(doc_id, future, hinted=False)
        # A fresh copy starts from clock 0 again, while the holders keep this node's edits of
        # the dropped one: a later edit here under the same client id would reuse their
        # (client, clock) ids and be discarded everywhere as already known.
        self.storage.new_client_id()
        self._hot.drop(doc_id)
        self._hot.mark_forgotten(doc_id)
        # Loads and writes from now on wait for the drop to commit, then start afresh.
        self._hot.settling[doc_id] = future
        future.add_done_callback(lambda done: self._forgot(doc_id, done))
        await asyncio.shield(future)
        return True

    def _forgot(self, doc_id: str, future: asyncio.Future[Any]) -> None:
        if self._hot.settling.get(doc_id) is future:
            del self._hot.settling[doc_id]
        if not future.cancelled() and future.exception() is None:
            self._forgotten_copies += 1

    # -- compaction ----------------------------------------------------------------------

    def _compaction_due(self, entry: Entry) -> bool:
        due = max(entry.compact_at, self.limits.compact_after_updates)
        return not entry.compacting and entry.log_rows >= due

    def _queue_compaction(self, doc_id: str, entry: Entry) -> None:
        entry.compacting = True
        self._compactions_queued += 1
        task = asyncio.ensure_future(self._compact(doc_id, entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compact(self, doc_id: str, entry: Entry) -> None:
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
            self._hot.bytes -= entry.document.stored_bytes
        # Rows committed after the fold read its input stay in the log.
        entry.document.stored_bytes = max(
            result.snapshot_bytes,
            entry.document.stored_bytes - result.bytes_folded + result.snapshot_bytes,
        )
        if self._hot.get(doc_id) is entry:
            self._hot.bytes += entry.document.stored_bytes
            if self._compaction_due(entry):
                # Rows committed while this compaction ran are due too.
                self._queue_compaction(doc_id, entry)

    # -- statistics ----------------------------------------------------------------------

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            hot_documents=len(self._hot),
            hot_bytes=self._hot.bytes,
            loads=self._loads,
            disk_reads=self._disk_reads,
            absent_hits=self._hot.absent_hits,
            evictions=self._hot.evictions,
            writes=self._writes,
            rejected_updates=self._rejected,
            compactions_queued=self._compactions_queued,
            compaction_failures=self._compaction_failures,
            forgotten_copies=self._forgotten_copies,
            hinted_documents=len(self._hints),
            catalog_records=len(self.catalog),
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
    try:
        catalog, hints = await storage.catalog_records(), await storage.hints()
    except BaseException:
        await asyncio.to_thread(storage.close)
        raise
    store = DocumentStore(storage, limits, catalog=catalog, hints=hints)
    try:
        yield store
    finally:
        await store.aclose()
        await asyncio.to_thread(storage.close)
