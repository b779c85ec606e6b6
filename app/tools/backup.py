"""Backing up a stopped node's storage file and restoring it: ``meridian backup`` and
``meridian restore``.

A backup is one DuckDB file: a copy of a node's ``meridian.duckdb`` with its write-ahead log
folded in, so it holds every write the node committed, by itself. Both commands hold the data
directory's lock (:func:`app.node.lock_data_dir`) while they work, so they refuse to run while
a node uses the directory, and no node can start meanwhile.

Restoring gives the copy a new storage id. A node's seqs name positions in its changes feed,
and each peer keeps a checkpoint of that feed keyed by the storage id. An older copy under its
old id would assign again seqs its peers have already passed: their anti-entropy would never
list the documents written after the restore (until written again), and once the outboxes
that carry live deltas are lost (a restart, an overflow) those writes would reach no peer.
Under a new id, every peer reads the restored node's feed from the start; the restored node's
own checkpoints of its peers are older than what they hold, so it pulls again what it lost.

Errors: :class:`BackupError` for what the caller can fix (a missing file, a file in the way);
the engine's :class:`crdt.StorageError` family for files that are not Meridian storage files
of a readable format (StorageFormatError), unreadable ones, and a directory in use
(StorageLocked). On any error nothing is changed: the data directory keeps its file, the
backup is never written to, and no partial output is left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from pathlib import Path

from crdt.storage import StoredFile, inspect_file, renew_file, seal_file

from ..node import lock_data_dir

__all__ = ["STORAGE_FILE", "BackupError", "Restored", "backup", "restore"]

#: The storage file in a data directory.
STORAGE_FILE = "meridian.duckdb"

# Bytes 8-11 of every DuckDB database file.
_DUCKDB_MAGIC = b"DUCK"


class BackupError(Exception):
    """A backup or restore the caller asked for cannot be done as asked; nothing changed."""


@dataclasses.dataclass(frozen=True, slots=True)
class Restored:
    """A restored data directory: what its file holds now, and where the file it replaced
    was kept (None when there was none)."""

    stored: StoredFile
    replaced: Path | None


def backup(data_dir: Path, out: Path) -> StoredFile:
    """Writes a consistent copy of the storage file of ``data_dir`` (whose node is stopped) to
    ``out``, which must not exist. Blocking.

    Raises BackupError (no storage file, ``out`` exists or its directory does not, an I/O
    error), StorageLocked (a node uses the directory), StorageFormatError (not a Meridian
    storage file of a readable format) or StorageError (unreadable).
    """
    try:
        return _backup(data_dir, out)
    except OSError as exc:  # a full disk, a permission, a file system without hard links
        raise BackupError(f"cannot back up {data_dir} to {out}: {exc}") from exc


def _backup(data_dir: Path, out: Path) -> StoredFile:
    source = data_dir / STORAGE_FILE
    if not source.is_file():
        raise BackupError(f"{data_dir} holds no Meridian storage file ({STORAGE_FILE})")
    if out.exists() or out.is_symlink():
        raise BackupError(
            f"{out} already exists: choose a new name (backups are never overwritten)"
        )
    if not out.parent.is_dir():
        raise BackupError(f"directory {out.parent} does not exist")
    with lock_data_dir(data_dir):
        _check_duckdb(source)
        staged = out.with_name(f".{out.name}.partial-{os.getpid()}")
        try:
            _copy_with_wal(source, staged)
            stored = seal_file(staged)
            _fsync(staged)
            try:
                # A hard link, not a rename: it fails instead of replacing a file that
                # appeared at ``out`` meanwhile.
                os.link(staged, out)
            except FileExistsError:
                raise BackupError(f"{out} appeared while the backup was written") from None
            _fsync(out.parent)
        finally:
            _remove_with_wal(staged)
    return dataclasses.replace(stored, path=out)


def restore(source: Path, data_dir: Path) -> Restored:
    """Installs the backup ``source`` as the storage file of ``data_dir`` (created when
    missing; its node must be stopped), upgraded to the current format and under a new
    storage id. A file it replaces is kept beside it as ``meridian.duckdb.replaced-<time>``.
    ``source`` is only read. Blocking.

    Raises BackupError (no such backup, it is this directory's own file, an I/O error),
    StorageLocked, StorageFormatError or StorageError as :func:`backup` does.
    """
    try:
        return _restore(source, data_dir)
    except OSError as exc:
        raise BackupError(f"cannot restore {source} into {data_dir}: {exc}") from exc


def _restore(source: Path, data_dir: Path) -> Restored:
    if not source.is_file():
        raise BackupError(f"backup {source} does not exist")
    _check_duckdb(source)
    # Read-only first: a file that is not a Meridian storage file of a readable format is
    # refused before anything is created or moved.
    inspect_file(source)
    target = data_dir / STORAGE_FILE
    if target.exists() and target.resolve() == source.resolve():
        raise BackupError(f"{source} is the storage file of {data_dir} itself")
    with lock_data_dir(data_dir):
        staged = data_dir / f"{STORAGE_FILE}.restoring"
        _remove_with_wal(staged)  # left by a restore that was interrupted
        try:
            _copy_with_wal(source, staged)
            stored = renew_file(staged)
            _fsync(staged)
            replaced = _move_aside(target)
            os.rename(staged, target)
            _fsync(data_dir)
        finally:
            _remove_with_wal(staged)
    return Restored(dataclasses.replace(stored, path=target), replaced)


def _check_duckdb(path: Path) -> None:
    with open(path, "rb") as handle:
        header = handle.read(12)
    if header[8:12] != _DUCKDB_MAGIC:
        raise BackupError(f"{path} is not a DuckDB database file")


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _copy_with_wal(source: Path, dest: Path) -> None:
    """Copies a database file and its write-ahead log (when there is one) under ``dest``'s
    name: DuckDB replays the log when the copy is opened."""
    shutil.copyfile(source, dest)
    if _wal(source).is_file():
        shutil.copyfile(_wal(source), _wal(dest))


def _remove_with_wal(path: Path) -> None:
    for each in (path, _wal(path)):
        with contextlib.suppress(FileNotFoundError):
            each.unlink()


def _move_aside(target: Path) -> Path | None:
    """Renames the current storage file (and its log, which must never meet another file)
    to ``<name>.replaced-<UTC time>``; returns the new name, None when there was no file."""
    if not target.exists() and not _wal(target).exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = target.with_name(f"{target.name}.replaced-{stamp}")
    counter = 1
    while aside.exists() or _wal(aside).exists():
        counter += 1
        aside = target.with_name(f"{target.name}.replaced-{stamp}-{counter}")
    # The log first: the old file without its log is still a database, a new file with the
    # old log would not be.
    if _wal(target).exists():
        os.rename(_wal(target), _wal(aside))
    if target.exists():
        os.rename(target, aside)
    return aside


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
