"""Storage format 2: the changes feed, durable per-peer checkpoints, and the format 1 upgrade."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import duckdb
import pycrdt
import pytest

from crdt import FORMAT_VERSION, ChangeRecord, SaveCheckpoint, Storage, StorageFormatError
from crdt.document import fold_updates
from crdt.storage import Append, Delete

EMPTY_UPDATE = b"\x00\x00"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def _open(path: Path) -> AsyncIterator[Storage]:
    storage = Storage(path)
    await asyncio.to_thread(storage.open)
    try:
        yield storage
    finally:
        await asyncio.to_thread(storage.close)


def _text_updates(texts: list[str], client_id: int = 7) -> list[bytes]:
    """Real Yjs updates, one per insertion into the root text ``body``."""
    doc = pycrdt.Doc(client_id=client_id)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(bytes(event.update)))
    body = doc.get("body", type=pycrdt.Text)
    for text in texts:
        body += text
    return updates


def _body(updates: list[bytes]) -> str:
    doc = pycrdt.Doc()
    doc.apply_update(fold_updates(updates))
    return str(doc.get("body", type=pycrdt.Text))


async def _append(storage: Storage, doc_id: str, incarnation: int = 1, **kw: Any) -> int:
    seq: int = await storage.submit(Append(doc_id, incarnation, EMPTY_UPDATE, **kw))
    return seq


async def _feed(storage: Storage, since: int = 0, limit: int = 1000) -> list[tuple[str, int]]:
    return [(r.doc_id, r.seq) for r in await storage.changes_since(since, limit)]


def test_feed_lists_each_document_once_at_its_latest_seq(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _open(tmp_path / "node.duckdb") as storage:
            assert storage.last_seq == 0
            assert await storage.changes_since(0, 10) == []
            a1 = await _append(storage, "a", create=True)
            b1 = await _append(storage, "b", create=True)
            a2 = await _append(storage, "a")
            c1 = await _append(storage, "c", create=True)
            b2 = await _append(storage, "b")
            assert [a1, b1, a2, c1, b2] == [1, 2, 3, 4, 5]
            assert storage.last_seq == 5
            assert await storage.changes_since(0, 10) == [
                ChangeRecord("a", 1, False, a2),
                ChangeRecord("c", 1, False, c1),
                ChangeRecord("b", 1, False, b2),
            ]
            assert await _feed(storage, since=a2) == [("c", c1), ("b", b2)]
            assert await _feed(storage, since=b1) == [("a", a2), ("c", c1), ("b", b2)]
            assert await _feed(storage, since=b2) == []

    run(scenario())


def test_feed_pages_by_the_last_seq(tmp_path: Path) -> None:
    rng = random.Random(1234)

    async def scenario() -> None:
        async with _open(tmp_path / "node.duckdb") as storage:
            latest: dict[str, int] = {}
            for _ in range(300):
                doc_id = f"d{rng.randrange(40)}"
                latest[doc_id] = await _append(storage, doc_id, create=doc_id not in latest)
            expected = sorted(latest.items(), key=lambda item: item[1])
            for limit in (1, 7, 40, 1000):
                pages: list[tuple[str, int]] = []
                since = 0
                while page := await _feed(storage, since, limit):
                    assert len(page) <= limit
                    pages += page
                    since = page[-1][1]
                assert pages == expected
            # Grouped writes from many callers at once: still one record per document.
            await asyncio.gather(*(_append(storage, f"d{i % 5}") for i in range(200)))
            tail = await _feed(storage, since=expected[-1][1])
            assert sorted(doc_id for doc_id, _ in tail) == [f"d{i}" for i in range(5)]
            assert [seq for _, seq in tail] == sorted(seq for _, seq in tail)
            assert tail[-1][1] == storage.last_seq

    run(scenario())


def test_compaction_keeps_a_document_at_its_latest_seq(tmp_path: Path) -> None:
    updates = _text_updates(["one ", "two ", "three"])

    async def scenario() -> None:
        async with _open(tmp_path / "node.duckdb") as storage:
            seqs = [
                await storage.submit(Append("doc", 1, update, create=i == 0))
                for i, update in enumerate(updates)
            ]
            other = await _append(storage, "other", create=True)
            prepared = await storage.prepare_compaction("doc")
            assert prepared is not None and prepared.covers_seq == seqs[-1]
            result = await storage.submit(prepared)
            assert result is not None and result.rows_folded == 3
            loaded = await storage.load("doc")
            assert loaded is not None and loaded.log_rows == 0
            assert _body(loaded.updates) == "one two three"
            # The log rows are gone; the snapshot carries their highest seq.
            assert await _feed(storage) == [("doc", seqs[-1]), ("other", other)]
            assert await _feed(storage, since=seqs[-2]) == [("doc", seqs[-1]), ("other", other)]
            assert await _feed(storage, since=seqs[-1]) == [("other", other)]
            more = await storage.submit(Append("doc", 1, _text_updates(["!"], client_id=8)[0]))
            assert await _feed(storage, since=other) == [("doc", more)]

    run(scenario())


def test_deletion_and_recreation(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _open(tmp_path / "node.duckdb") as storage:
            a1 = await _append(storage, "a", create=True)
            b1 = await _append(storage, "b", create=True)
            deleted = await storage.submit(Delete("a", 1))
            assert deleted == storage.last_seq > b1 > a1
            assert await storage.changes_since(0, 10) == [
                ChangeRecord("b", 1, False, b1),
                ChangeRecord("a", 1, True, deleted),
            ]
            assert await storage.changes_since(b1, 10) == [ChangeRecord("a", 1, True, deleted)]
            assert await storage.changes_since(deleted, 10) == []
            recreated = await _append(storage, "a", incarnation=2, create=True)
            assert recreated > deleted
            assert await storage.changes_since(0, 10) == [
                ChangeRecord("b", 1, False, b1),
                ChangeRecord("a", 2, False, recreated),
            ]
            # Deleted again, in one batch with writes to other documents.
            results = await asyncio.gather(
                storage.submit(Append("b", 1, EMPTY_UPDATE)),
                storage.submit(Delete("a", 2)),
                storage.submit(Append("c", 1, EMPTY_UPDATE, create=True)),
            )
            assert results == sorted(results)
            assert await storage.changes_since(recreated, 10) == [
                ChangeRecord("b", 1, False, results[0]),
                ChangeRecord("a", 2, True, results[1]),
                ChangeRecord("c", 1, False, results[2]),
            ]

    run(scenario())


def test_rows_of_other_incarnations_do_not_count(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _open(tmp_path / "node.duckdb") as storage:
            await _append(storage, "live", create=True)
            current = await _append(storage, "live", incarnation=2, create=True)
            # Late rows of an older incarnation, written after the current state.
            await _append(storage, "live", incarnation=1)
            await _append(storage, "gone", create=True)
            tombstone = await storage.submit(Delete("gone", 1))
            stray = await _append(storage, "gone", incarnation=1)
            assert stray > tombstone
            assert await storage.changes_since(0, 10) == [
                ChangeRecord("live", 2, False, current),
                ChangeRecord("gone", 1, True, tombstone),
            ]
            assert await storage.changes_since(tombstone, 10) == []

    run(scenario())


def test_seqs_are_never_reused_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "node.duckdb"
    updates = _text_updates(["x", "y"])

    async def first() -> tuple[str, int]:
        async with _open(path) as storage:
            await storage.submit(Append("kept", 1, updates[0], create=True))
            await storage.submit(Append("kept", 1, updates[1]))
            prepared = await storage.prepare_compaction("kept")
            assert prepared is not None
            await storage.submit(prepared)
            await _append(storage, "gone", create=True)
            await _append(storage, "gone")
            # The highest seq of the file is now the tombstone's: no log row holds it.
            tombstone: int = await storage.submit(Delete("gone", 1))
            assert storage.last_seq == tombstone
            return storage.storage_id, tombstone

    async def second(storage_id: str, tombstone: int) -> None:
        async with _open(path) as storage:
            assert storage.storage_id == storage_id
            assert storage.last_seq == tombstone
            assert await _append(storage, "new", create=True) == tombstone + 1
            assert await _feed(storage) == [
                ("kept", 2),
                ("gone", tombstone),
                ("new", tombstone + 1),
            ]

    storage_id, tombstone = run(first())
    assert len(storage_id) == 32 and int(storage_id, 16) >= 0
    run(second(storage_id, tombstone))


async def _new_file_id(path: Path) -> str:
    async with _open(path) as storage:
        return storage.storage_id


def test_a_new_file_gets_a_new_storage_id(tmp_path: Path) -> None:
    ids = {run(_new_file_id(tmp_path / f"{i}.duckdb")) for i in range(3)}
    assert len(ids) == 3


def test_checkpoints_are_durable_and_never_lowered(tmp_path: Path) -> None:
    path = tmp_path / "node.duckdb"

    async def first() -> None:
        async with _open(path) as storage:
            assert await storage.checkpoint("peer-a") == 0
            assert await storage.checkpoints() == {}
            assert await storage.submit(SaveCheckpoint("peer-a", 10)) == 10
            assert await storage.submit(SaveCheckpoint("peer-a", 4)) == 10
            assert await storage.submit(SaveCheckpoint("peer-b", 3)) == 3
            assert await storage.checkpoint("peer-a") == 10
            assert await storage.checkpoints() == {"peer-a": 10, "peer-b": 3}
            # Mixed with appends and a delete, queued together so they share transactions.
            jobs: list[asyncio.Future[Any]] = []
            for i in range(200):
                jobs.append(storage.submit(Append(f"d{i}", 1, EMPTY_UPDATE, create=True)))
                jobs.append(storage.submit(SaveCheckpoint("peer-b", i)))
            jobs.append(storage.submit(Delete("d0", 1)))
            results = await asyncio.gather(*jobs)
            assert results[1::2] == [max(3, i) for i in range(200)]
            assert storage.statistics().batch_size_max > 1
            assert storage.statistics().failed_jobs == 0
            assert results[-1] == storage.last_seq
            assert await storage.checkpoint("peer-b") == 199

    async def second() -> None:
        async with _open(path) as storage:
            assert await storage.checkpoints() == {"peer-a": 10, "peer-b": 199}
            assert await storage.submit(SaveCheckpoint("peer-b", 0)) == 199
            # Checkpoints hold the peers' seqs, not this file's.
            assert storage.last_seq == 201

    run(first())
    run(second())
    with pytest.raises(ValueError, match="peer"):
        SaveCheckpoint("", 1)
    with pytest.raises(ValueError, match="negative"):
        SaveCheckpoint("peer-a", -1)


# Storage format 1 exactly as Meridian wrote it, so the upgrade is tested on a real old file.
_FORMAT_1_SCHEMA = (
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
)


def _write_format_1(path: Path, notes: list[bytes], todo: list[bytes]) -> None:
    con = duckdb.connect(str(path))
    con.execute("BEGIN")
    for statement in _FORMAT_1_SCHEMA:
        con.execute(statement)
    con.executemany(
        "INSERT INTO meta VALUES (?, ?)", [("format_version", "1"), ("created_at", "1700000000.0")]
    )
    con.executemany(
        "INSERT INTO documents VALUES (?, ?, ?, ?, ?)",
        [
            ("notes", 1, False, 1700000001.0, None),
            ("todo", 2, False, 1700000002.0, None),
            ("gone", 1, True, 1700000003.0, 1700000004.0),
            ("also-gone", 3, True, 1700000005.0, 1700000006.0),
        ],
    )
    # notes: a snapshot covering seqs <= 2, then its log; todo: only a log, incarnation 2.
    con.execute("INSERT INTO snapshots VALUES ('notes', 1, 2, ?)", [fold_updates(notes[:2])])
    con.executemany(
        "INSERT INTO updates VALUES (?, ?, ?, ?)",
        [("notes", 1, 3, notes[2]), ("todo", 2, 4, todo[0]), ("todo", 2, 6, todo[1])],
    )
    con.execute("COMMIT")
    con.close()


def test_format_1_file_is_upgraded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "old.duckdb"
    notes = _text_updates(["alpha ", "beta ", "gamma"])
    todo = _text_updates(["milk", " eggs"], client_id=9)
    _write_format_1(path, notes, todo)

    async def first() -> str:
        async with _open(path) as storage:
            assert storage.last_seq == 8  # the two tombstones got seqs 7 and 8
            loaded = await storage.load("notes")
            assert loaded is not None and loaded.log_rows == 1 and loaded.last_seq == 3
            assert loaded.updates[1] == notes[2]
            assert _body(loaded.updates) == "alpha beta gamma"
            loaded = await storage.load("todo")
            assert loaded is not None and loaded.record.incarnation == 2
            assert _body(loaded.updates) == "milk eggs"
            assert await storage.count_documents() == (2, 2)
            # Old tombstones are numbered after every old row, in id order, so peers see them.
            assert await storage.changes_since(0, 10) == [
                ChangeRecord("notes", 1, False, 3),
                ChangeRecord("todo", 2, False, 6),
                ChangeRecord("also-gone", 3, True, 7),
                ChangeRecord("gone", 1, True, 8),
            ]
            assert await _append(storage, "todo", incarnation=2) == 9
            assert await storage.checkpoints() == {}
            return storage.storage_id

    with caplog.at_level(logging.INFO, logger="meridian.storage"):
        storage_id = run(first())
    upgrades = [r for r in caplog.records if "upgraded" in r.getMessage()]
    assert len(upgrades) == 1
    assert "from storage format 1 to 2" in upgrades[0].getMessage()
    assert len(storage_id) == 32

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="meridian.storage"):
        assert run(_new_file_id(path)) == storage_id
    assert not [r for r in caplog.records if "upgraded" in r.getMessage()]
    con = duckdb.connect(str(path))
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    con.close()
    assert meta == {
        "format_version": str(FORMAT_VERSION),
        "created_at": "1700000000.0",
        "storage_id": storage_id,
    }


def test_newer_format_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "node.duckdb"
    run(_new_file_id(path))
    newer = str(FORMAT_VERSION + 1)
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", [newer])
    con.close()
    with pytest.raises(StorageFormatError, match=f"storage format {newer}, written by a newer"):
        Storage(path).open()
    con = duckdb.connect(str(path))
    row = con.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
    con.close()
    assert row == (newer,)
