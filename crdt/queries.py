"""The reads of :mod:`crdt.storage`: plain functions of a DuckDB cursor, run on its reader threads.

Part of :mod:`crdt.storage`, which re-exports the record types; nothing else should import this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "CatalogRecord",
    "ChangeRecord",
    "DocumentRecord",
    "LoadedDocument",
    "catalog",
    "catalog_since",
    "changes_since",
    "checkpoint",
    "checkpoints",
    "count_documents",
    "document_ids",
    "hints",
    "last_seq",
    "list_documents",
    "load",
    "stored_bytes",
]


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    id: str
    incarnation: int
    deleted: bool
    #: When this file first held the id (unix seconds; 0.0 where a query does not say).
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    """A document as stored: its record, then the snapshot (if any) and log rows in order."""

    record: DocumentRecord
    updates: list[bytes]
    log_rows: int
    snapshot_bytes: int
    #: The highest seq among the rows read (the snapshot's when there is no log).
    last_seq: int


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One entry of the changes feed: a document as it is now, and the seq of its latest change
    (a log row or snapshot of its current incarnation, or its tombstone when deleted)."""

    doc_id: str
    incarnation: int
    deleted: bool
    seq: int


class CatalogRecord(NamedTuple):
    """A document's catalog record and the seq at which it was last put."""

    doc_id: str
    seq: int
    data: bytes


def load(cursor: Any, doc_id: str) -> LoadedDocument | None:
    # One read transaction: a compaction installed between reading the snapshot and reading
    # the log would otherwise hide the rows it folded.
    cursor.execute("BEGIN TRANSACTION")
    try:
        row = cursor.execute(
            "SELECT incarnation, deleted FROM documents WHERE id = ?", [doc_id]
        ).fetchone()
        if row is None:
            return None
        record = DocumentRecord(doc_id, row[0], row[1])
        if record.deleted:
            return LoadedDocument(record, [], 0, 0, 0)
        snapshot = cursor.execute(
            "SELECT data, seq FROM snapshots WHERE doc_id = ? AND incarnation = ?",
            [doc_id, record.incarnation],
        ).fetchone()
        tail = cursor.execute(
            "SELECT data, seq FROM updates WHERE doc_id = ? AND incarnation = ? ORDER BY seq",
            [doc_id, record.incarnation],
        ).fetchall()
    finally:
        cursor.execute("COMMIT")
    updates = ([bytes(snapshot[0])] if snapshot else []) + [bytes(r[0]) for r in tail]
    last_seq = tail[-1][1] if tail else (snapshot[1] if snapshot else 0)
    return LoadedDocument(record, updates, len(tail), len(snapshot[0]) if snapshot else 0, last_seq)


def document_ids(cursor: Any) -> set[str]:
    """Every id with a row in ``documents`` (tombstones included)."""
    return {str(row[0]) for row in cursor.execute("SELECT id FROM documents").fetchall()}


def list_documents(cursor: Any, prefix: str, after: str | None, limit: int) -> list[DocumentRecord]:
    rows = cursor.execute(
        "SELECT id, incarnation, deleted, created_at FROM documents "
        "WHERE NOT deleted AND starts_with(id, ?) AND id > ? ORDER BY id LIMIT ?",
        [prefix, after or "", limit],
    ).fetchall()
    return [DocumentRecord(r[0], r[1], r[2], r[3]) for r in rows]


def count_documents(cursor: Any) -> tuple[int, int]:
    row = cursor.execute(
        "SELECT count(*) FILTER (WHERE NOT deleted), count(*) FILTER (WHERE deleted) FROM documents"
    ).fetchone()
    return int(row[0]), int(row[1])


def stored_bytes(cursor: Any) -> int:
    row = cursor.execute(
        "SELECT coalesce((SELECT sum(octet_length(data)) FROM updates), 0)"
        " + coalesce((SELECT sum(octet_length(data)) FROM snapshots), 0)"
    ).fetchone()
    return int(row[0])


def last_seq(cursor: Any) -> int:
    """The highest seq in the file, 0 for none (checkpoints hold other files' seqs). Rows of
    forgotten copies are gone: ``retired_seq`` in ``meta`` remembers how far seqs went."""
    row = cursor.execute(
        "SELECT greatest((SELECT max(seq) FROM updates), (SELECT max(seq) FROM snapshots), "
        "(SELECT max(seq) FROM deletions), (SELECT max(seq) FROM catalog), "
        "(SELECT CAST(value AS BIGINT) FROM meta WHERE key = 'retired_seq'))"
    ).fetchone()
    return int(row[0] or 0)


# Each source is filtered on seq before anything else: seqs grow with insertion order, so
# DuckDB's zone maps skip every row group older than ``since`` and a poll that finds few
# changes stays cheap however large the file. Only then are rows grouped and matched to the
# documents' current state: log rows and snapshots count for a live document's incarnation,
# the tombstone for a deleted one, so rows of older incarnations never count.
_CHANGES_SINCE = """
WITH content AS (
    SELECT doc_id, incarnation, max(seq) AS seq
    FROM (
        SELECT doc_id, incarnation, seq FROM updates WHERE seq > $since
        UNION ALL
        SELECT doc_id, incarnation, seq FROM snapshots WHERE seq > $since
    )
    GROUP BY doc_id, incarnation
),
changed AS (
    SELECT doc_id, incarnation, false AS deleted, seq FROM content
    UNION ALL
    SELECT doc_id, incarnation, true AS deleted, seq FROM deletions WHERE seq > $since
)
SELECT d.id, d.incarnation, d.deleted, c.seq
FROM changed AS c
JOIN documents AS d
    ON d.id = c.doc_id AND d.incarnation = c.incarnation AND d.deleted = c.deleted
ORDER BY c.seq
LIMIT $limit
"""


def changes_since(cursor: Any, since: int, limit: int) -> list[ChangeRecord]:
    # One read transaction, like load: the feed must be one consistent state of the file.
    cursor.execute("BEGIN TRANSACTION")
    try:
        rows = cursor.execute(_CHANGES_SINCE, {"since": since, "limit": limit}).fetchall()
    finally:
        cursor.execute("COMMIT")
    return [ChangeRecord(r[0], r[1], r[2], r[3]) for r in rows]


def checkpoint(cursor: Any, peer: str) -> int:
    row = cursor.execute("SELECT seq FROM checkpoints WHERE peer = ?", [peer]).fetchone()
    return int(row[0]) if row else 0


def checkpoints(cursor: Any) -> dict[str, int]:
    rows = cursor.execute("SELECT peer, seq FROM checkpoints ORDER BY peer").fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def catalog(cursor: Any) -> list[CatalogRecord]:
    rows = cursor.execute("SELECT doc_id, seq, data FROM catalog").fetchall()
    return [CatalogRecord(r[0], r[1], bytes(r[2])) for r in rows]


def catalog_since(cursor: Any, since: int, limit: int) -> list[CatalogRecord]:
    # A put replaces the document's row, so each document is there once, at its latest seq.
    rows = cursor.execute(
        "SELECT doc_id, seq, data FROM catalog WHERE seq > ? ORDER BY seq LIMIT ?", [since, limit]
    ).fetchall()
    return [CatalogRecord(r[0], r[1], bytes(r[2])) for r in rows]


def hints(cursor: Any) -> list[str]:
    return [str(r[0]) for r in cursor.execute("SELECT doc_id FROM hints").fetchall()]
