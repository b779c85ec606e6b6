"""The jobs the storage writer runs: what a caller asks :meth:`crdt.storage.Storage.submit` for.

Part of :mod:`crdt.storage`, which re-exports them; each job's docstring says what its future
resolves to once the transaction holding it committed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AddHint",
    "Append",
    "Compact",
    "CompactResult",
    "Delete",
    "DropHint",
    "Forget",
    "Job",
    "PutCatalogRecord",
    "SaveCheckpoint",
]


@dataclass(slots=True)
class Append:
    """Append an update to a document's log; ``create`` (re)creates its record first; ``hint``
    records a hint for the document in the same transaction. The result is the row's seq."""

    doc_id: str
    incarnation: int
    data: bytes
    create: bool = False
    hint: bool = False
    #: The in-memory copy the update was applied to (0: none in particular). Once a write of
    #: a lineage fails, the storage writer fails its later ones: they were applied on top of
    #: the failed one, and stored without it they would depend on changes that exist nowhere.
    lineage: int = 0


@dataclass(slots=True)
class Delete:
    """Record a tombstone for ``incarnation`` and drop that incarnation's content; ``hint`` as
    for :class:`Append`. The result is the tombstone's seq."""

    doc_id: str
    incarnation: int
    hint: bool = False


@dataclass(slots=True)
class Forget:
    """Drop this node's copy of a document: its record, log, snapshot, tombstone and hint, as
    if it had never been written here. Not a delete: nothing is recorded for peers. The seqs
    of the dropped rows are never assigned again. The result is None."""

    doc_id: str


@dataclass(slots=True)
class AddHint:
    """Record that this node holds ``doc_id`` on behalf of its holders (a no-op when it is
    recorded already). The result is None."""

    doc_id: str


@dataclass(slots=True)
class DropHint:
    """Remove ``doc_id``'s hint (a no-op when there is none). The result is None."""

    doc_id: str


@dataclass(slots=True)
class PutCatalogRecord:
    """Store ``data`` as ``doc_id``'s catalog record, replacing the previous one. The result is
    the record's new seq."""

    doc_id: str
    data: bytes


@dataclass(slots=True)
class SaveCheckpoint:
    """Record that this node has integrated ``peer``'s changes feed up to ``seq`` (``peer`` is
    that node's storage id, or any other non-empty key of a feed: the catalog feed's is
    ``f"{storage_id}/catalog"``). A lower seq than the saved one changes nothing: checkpoints
    never go down. The result is the checkpoint after the save. Raises ValueError for an empty
    peer or a negative seq."""

    peer: str
    seq: int

    def __post_init__(self) -> None:
        if not self.peer:
            raise ValueError("a checkpoint needs a peer storage id")
        if self.seq < 0:
            raise ValueError(f"a checkpoint seq cannot be negative: {self.seq}")


@dataclass(slots=True)
class Compact:
    """Install a snapshot folded from a document's log (see
    :meth:`crdt.storage.Storage.prepare_compaction`): replace the snapshot and delete the log
    rows it covers, ``seq <= covers_seq``. The result is a :class:`CompactResult`, or None
    when the document moved on to another incarnation (or was forgotten) meanwhile."""

    doc_id: str
    incarnation: int
    covers_seq: int
    data: bytes
    rows_folded: int
    #: Stored bytes (old snapshot and log rows) that the new snapshot replaces.
    bytes_folded: int


@dataclass(frozen=True, slots=True)
class CompactResult:
    incarnation: int
    rows_folded: int
    bytes_folded: int
    snapshot_bytes: int


Job = Append | Delete | Forget | AddHint | DropHint | PutCatalogRecord | Compact | SaveCheckpoint
