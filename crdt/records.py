"""The store's public records: document ids, limits, write results, changes, statistics."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .document import Document
from .errors import InvalidDocumentId

__all__ = [
    "DOCUMENT_ID",
    "Change",
    "DocumentState",
    "StoreLimits",
    "StoreStatistics",
    "WriteResult",
    "check_document_id",
]

#: Document ids, as PRODUCT.md defines them.
DOCUMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def check_document_id(doc_id: str) -> str:
    if not DOCUMENT_ID.fullmatch(doc_id):
        raise InvalidDocumentId(
            f"invalid document id {doc_id[:140]!r}: ids are 1-128 characters from "
            "A-Z a-z 0-9 . _ : - and start with a letter or digit"
        )
    return doc_id


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Limits and tuning of a store; every field is a documented setting (docs/configuration.md)."""

    #: Largest stored size of one document (its snapshot plus log) that a write may reach.
    max_document_bytes: int = 16 * 1024 * 1024
    #: Most JSON operations in one request.
    max_operations: int = 1000
    #: Documents kept in memory at most; colder ones are evicted (their state is on disk).
    max_hot_documents: int = 10_000
    #: Stored bytes of the documents kept in memory at most.
    max_hot_bytes: int = 256 * 1024 * 1024
    #: Bytes of updates waiting for missing dependencies that one document may hold.
    max_pending_bytes: int = 64 * 1024
    #: Log rows of one document after which it is compacted into its snapshot.
    compact_after_updates: int = 256
    #: Jobs in one storage transaction at most (group commit).
    max_batch: int = 1024
    #: DuckDB's memory limit.
    duckdb_memory_limit: str = "256MB"


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: the document's new state vector, whether it changed anything, and
    whether it created the document (or a new incarnation of it)."""

    doc_id: str
    state_vector: bytes
    changed: bool
    created: bool
    incarnation: int


@dataclass(frozen=True, slots=True)
class Change:
    """A committed change, as :meth:`DocumentStore.subscribe` listeners see it: an update
    (``update`` is its bytes) or a tombstone (``update`` is None) of ``incarnation``.
    ``origin`` is whatever the writer passed (replication uses it to know where it came from)."""

    doc_id: str
    incarnation: int
    update: bytes | None
    origin: object


@dataclass(frozen=True, slots=True)
class DocumentState:
    """What a node holds of a document id: its incarnation, whether that incarnation is
    deleted, and the document (empty for a tombstone). Use it at once: an evicted document
    is replaced by a fresh load."""

    incarnation: int
    deleted: bool
    document: Document


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    hot_documents: int
    hot_bytes: int
    #: Documents read from disk into memory.
    loads: int
    #: Disk reads of a document (found or not).
    disk_reads: int
    #: Reads of a never-written document answered from memory (no disk read).
    absent_hits: int
    evictions: int
    writes: int
    rejected_updates: int
    compactions_queued: int
    compaction_failures: int
    #: Copies dropped by ``forget`` since the store opened.
    forgotten_copies: int = 0
    #: Documents with a committed hint (held on behalf of their holders).
    hinted_documents: int = 0
    #: Records in the catalog.
    catalog_records: int = 0
