"""Storage files no node has open: reading one, sealing a copy, renewing a restored one.

Part of :mod:`crdt.storage`, which re-exports these; the backup and restore commands use them
(docs/operations.md, "Backup and restore"). Every function is blocking and opens the file
itself; the caller makes sure no node uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from . import queries, schema
from .errors import StorageError
from .schema import FORMAT_VERSION

__all__ = ["StoredFile", "inspect_file", "renew_file", "seal_file"]


@dataclass(frozen=True, slots=True)
class StoredFile:
    """What :func:`seal_file` or :func:`renew_file` found in a storage file."""

    path: Path
    format_version: int
    #: "" for a format 1 file (it gets one when upgraded).
    storage_id: str
    documents: int
    tombstones: int


def inspect_file(path: Path) -> StoredFile:
    """Reads what ``path`` holds without changing it (DuckDB opens it read-only). Raises as
    :func:`seal_file`."""
    if not path.is_file():
        raise StorageError(f"{path} does not exist")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
    try:
        version, storage_id = schema.check_format(con, path)
        documents, tombstones = queries.count_documents(con)
    except duckdb.Error as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    finally:
        con.close()
    return StoredFile(path, version, storage_id, documents, tombstones)


def seal_file(path: Path) -> StoredFile:
    """Checks that ``path`` is a Meridian storage file of a format this version reads and
    folds its write-ahead log (``<path>.wal``, when there is one) into it, so the file alone
    holds every committed write. Its format is not upgraded. The caller makes sure no other
    process uses the file. Blocking.

    Raises :class:`StorageFormatError` when it is not a Meridian storage file or its format
    is newer or unversioned; StorageError when DuckDB cannot open or write it.
    """
    return _finish_file(path, renew=False)


def renew_file(path: Path) -> StoredFile:
    """:func:`seal_file`, and also upgrades an older format and gives the file a new storage
    id: for a copy a node is about to use again, whose seqs may be behind what peers saw
    under its old id. Raises as :func:`seal_file`."""
    return _finish_file(path, renew=True)


def _finish_file(path: Path, *, renew: bool) -> StoredFile:
    if not path.is_file():  # DuckDB would create it
        raise StorageError(f"{path} does not exist")
    try:
        con = duckdb.connect(str(path))
    except duckdb.Error as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
    try:
        version, storage_id = schema.check_format(con, path)
        if renew:
            schema.prepare(con, path)
            storage_id = schema.renew_storage_id(con)
            version = FORMAT_VERSION
        documents, tombstones = queries.count_documents(con)
        schema.fold_wal(con)
    except duckdb.Error as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    finally:
        con.close()
    wal = path.with_name(path.name + ".wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StorageError(f"{wal} is still there after a checkpoint of {path}")
    return StoredFile(path, version, storage_id, documents, tombstones)
