"""The DuckDB file's layout: creating it, checking its format, upgrading older formats.

Part of :mod:`crdt.storage`, whose docstring draws the layout; nothing else should import this.
Every statement here runs on the write connection, in :meth:`Storage.open` before any reader
or the writer thread exists, or on a file no node has open (:func:`crdt.files.seal_file`,
:func:`crdt.files.renew_file`).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from .errors import StorageFormatError

__all__ = ["FORMAT_VERSION", "check_format", "fold_wal", "prepare", "renew_storage_id"]

log = logging.getLogger("meridian.storage")

#: The storage format this code writes. Older formats are upgraded at open; newer are refused.
FORMAT_VERSION = 3

_DELETIONS = """CREATE TABLE IF NOT EXISTS deletions (
    doc_id VARCHAR PRIMARY KEY,
    incarnation BIGINT NOT NULL,
    seq BIGINT NOT NULL
)"""

_CHECKPOINTS = """CREATE TABLE IF NOT EXISTS checkpoints (
    peer VARCHAR PRIMARY KEY,
    seq BIGINT NOT NULL,
    updated_at DOUBLE NOT NULL
)"""

_CATALOG = """CREATE TABLE IF NOT EXISTS catalog (
    doc_id VARCHAR PRIMARY KEY,
    seq BIGINT NOT NULL,
    data BLOB NOT NULL
)"""

_HINTS = """CREATE TABLE IF NOT EXISTS hints (
    doc_id VARCHAR PRIMARY KEY,
    created_at DOUBLE NOT NULL
)"""

# The current format, for new files.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    """CREATE TABLE IF NOT EXISTS documents (
        id VARCHAR PRIMARY KEY,
        incarnation BIGINT NOT NULL,
        deleted BOOLEAN NOT NULL,
        created_at DOUBLE NOT NULL,
        deleted_at DOUBLE
    )""",
    """CREATE TABLE IF NOT EXISTS updates (
        doc_id VARCHAR NOT NULL,
        incarnation BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        data BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS updates_doc ON updates (doc_id)",
    """CREATE TABLE IF NOT EXISTS snapshots (
        doc_id VARCHAR PRIMARY KEY,
        incarnation BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        data BLOB NOT NULL
    )""",
    _DELETIONS,
    _CHECKPOINTS,
    _CATALOG,
    _HINTS,
)


def prepare(con: Any, path: Path) -> str:
    """Creates the schema in a new file, or checks an existing file's format and upgrades an
    older one in one transaction. Returns the file's storage id.

    Raises :class:`StorageFormatError` for a newer or unversioned file; ``duckdb.Error`` when
    the file cannot be read or written (the caller translates it).
    """
    tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if "meta" not in tables:
        _create(con)
    else:
        version, _ = check_format(con, path)
        if version < FORMAT_VERSION:
            _upgrade(con, path, version)
    row = con.execute("SELECT value FROM meta WHERE key = 'storage_id'").fetchone()
    if row is None:
        raise StorageFormatError(f"{path} has no storage id")
    return str(row[0])


def check_format(con: Any, path: Path) -> tuple[int, str]:
    """(format version, storage id) of an existing Meridian file, changing nothing; the
    storage id is "" in a format 1 file (its upgrade makes one).

    Raises :class:`StorageFormatError` when the file is not a Meridian storage file (a DuckDB
    database without Meridian's ``meta`` table, or an empty one) or uses a format this version
    cannot read; ``duckdb.Error`` when it cannot be read.
    """
    tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if "meta" not in tables:
        raise StorageFormatError(f"{path} is a DuckDB database but not a Meridian storage file")
    row = con.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
    try:
        version = int(row[0]) if row else 0
    except ValueError:
        raise StorageFormatError(f"{path} has an unreadable storage format version") from None
    if version > FORMAT_VERSION:
        raise StorageFormatError(
            f"{path} uses storage format {version}, written by a newer Meridian; "
            f"this version reads format {FORMAT_VERSION}. Upgrade Meridian to open it."
        )
    if version < 1:
        raise StorageFormatError(f"{path} has no storage format version")
    row = con.execute("SELECT value FROM meta WHERE key = 'storage_id'").fetchone()
    if row is None and version >= 2:
        raise StorageFormatError(f"{path} has no storage id")
    return version, str(row[0]) if row else ""


def renew_storage_id(con: Any) -> str:
    """Gives a current-format file a new storage id and returns it: its seqs become a new
    seq space, whose changes feed every peer reads from the start (they hold no checkpoint
    for it). A restored copy needs one: its seqs went back, and peers' checkpoints of the
    old id are ahead of the seqs it will assign next."""
    storage_id = _new_storage_id()
    con.execute("UPDATE meta SET value = ? WHERE key = 'storage_id'", [storage_id])
    return storage_id


def fold_wal(con: Any) -> None:
    """Folds the write-ahead log into the file (DuckDB's ``CHECKPOINT``)."""
    con.execute("CHECKPOINT")


def _new_storage_id() -> str:
    return uuid.uuid4().hex


def _create(con: Any) -> None:
    con.execute("BEGIN")
    for statement in _SCHEMA:
        con.execute(statement)
    con.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [
            ("format_version", str(FORMAT_VERSION)),
            ("created_at", repr(time.time())),
            ("storage_id", _new_storage_id()),
        ],
    )
    con.execute("COMMIT")


def _upgrade(con: Any, path: Path, version: int) -> None:
    """Runs every step from ``version`` to the current format in one transaction, so a crash
    leaves the file either as it was or fully upgraded."""
    con.execute("BEGIN")
    try:
        for step in _UPGRADES[version - 1 :]:
            step(con)
        con.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", [str(FORMAT_VERSION)])
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    steps = " to ".join(str(v) for v in range(version, FORMAT_VERSION + 1))
    log.info("upgraded %s from storage format %s", path, steps)


def _format_1_to_2(con: Any) -> None:
    con.execute(_DELETIONS)
    con.execute(_CHECKPOINTS)
    # Format 1 kept no seq for tombstones. Number them after every existing row, so the
    # changes feed reports them to peers, which read this new storage id's feed from 0.
    con.execute(
        "INSERT INTO deletions "
        "SELECT id, incarnation, base + row_number() OVER (ORDER BY id) FROM documents, "
        "(SELECT coalesce(greatest((SELECT max(seq) FROM updates), "
        "(SELECT max(seq) FROM snapshots)), 0) AS base) WHERE deleted"
    )
    # The seqs of the old file get a new space: no peer holds a checkpoint for it yet.
    con.execute("INSERT INTO meta VALUES ('storage_id', ?)", [_new_storage_id()])


def _format_2_to_3(con: Any) -> None:
    # The catalog and hints start empty; the seqs of format 2 stay in their storage id's space.
    con.execute(_CATALOG)
    con.execute(_HINTS)


# _UPGRADES[v - 1] turns format v into format v + 1.
_UPGRADES: tuple[Callable[[Any], None], ...] = (_format_1_to_2, _format_2_to_3)
assert len(_UPGRADES) == FORMAT_VERSION - 1
