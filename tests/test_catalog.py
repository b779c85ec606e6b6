"""What the placement layer keeps in the engine: the catalog, hints, forgetting a copy, and the
storage format 3 that holds them (with the format 2 upgrade). Real DuckDB files, no mocks."""

from __future__ import annotations

import asyncio
import logging
import random
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pycrdt
import pytest

from crdt import (
    EMPTY_STATE_VECTOR,
    FORMAT_VERSION,
    MAX_RECORD_BYTES,
    CatalogRecord,
    ChangeRecord,
    DocumentNotFound,
    DocumentStore,
    InvalidDocumentId,
    InvalidUpdate,
    LimitExceeded,
    RootKind,
    SaveCheckpoint,
    StoreLimits,
    open_store,
)
from crdt.document import fold_updates
from crdt.storage import AddHint, Append, DropHint, Forget, PutCatalogRecord, inspect_file

from .support import REPO, TIMEOUT_FACTOR


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _root_update(name: str, value: int, client_id: int) -> bytes:
    """An update that needs nothing else: a fresh client's map ``name`` = {"v": value}."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    doc[name] = pycrdt.Map({"v": value})
    return bytes(doc.get_update())


def _text_updates(texts: list[str], client_id: int = 7) -> list[bytes]:
    """Real Yjs updates, one per insertion into the root text ``body``."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(bytes(event.update)))
    body = doc.get("body", type=pycrdt.Text)
    for text in texts:
        body += text
    return updates


def _set(key: str, value: Any) -> dict[str, Any]:
    return {"ops": [{"op": "set", "path": ["m", key], "value": value}]}


def _meta(path: Path) -> dict[str, str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return dict(con.execute("SELECT key, value FROM meta").fetchall())
    finally:
        con.close()


# -- the catalog ---------------------------------------------------------------------------


def test_catalog_put_get_feed_and_reopen(tmp_path: Path) -> None:
    async def first() -> tuple[str, int, int]:
        async with open_store(tmp_path) as store:
            catalog = store.catalog
            assert len(catalog) == 0 and catalog.get("a") is None and list(catalog) == []
            a1 = await catalog.put("a", b'{"v": 1}')
            b1 = await catalog.put("b", b'{"v": 2}')
            assert b1 > a1 > 0
            assert catalog.get("a") == b'{"v": 1}' and catalog["b"] == b'{"v": 2}'
            # The same bytes again: no new seq, no write at all.
            commits = store.storage.statistics().jobs_committed
            assert await catalog.put("a", b'{"v": 1}') == a1
            assert store.storage.statistics().jobs_committed == commits
            # Catalog seqs come from the file's one counter, shared with the log.
            write = await store.apply_operations("doc", _set("k", 1))
            doc_seq = store.storage.last_seq
            assert write.changed and doc_seq > b1
            a2 = await catalog.put("a", b'{"v": 3}')
            assert a2 == store.storage.last_seq
            assert catalog.record("a") == CatalogRecord("a", a2, b'{"v": 3}')
            assert dict(catalog.items()) == {"a": b'{"v": 3}', "b": b'{"v": 2}'}
            # The feed: each document once, at its latest seq, in seq order, paged.
            assert await catalog.since(0) == [
                CatalogRecord("b", b1, b'{"v": 2}'),
                CatalogRecord("a", a2, b'{"v": 3}'),
            ]
            assert [r.doc_id for r in await catalog.since(0, limit=1)] == ["b"]
            assert await catalog.since(b1) == [CatalogRecord("a", a2, b'{"v": 3}')]
            assert await catalog.since(a2) == []
            doc_id, seq, data = (await catalog.since(b1))[0]  # records unpack as tuples
            assert (doc_id, seq, data) == ("a", a2, b'{"v": 3}')
            # The two feeds stay apart: documents in one, records in the other.
            assert [r.doc_id for r in await store.storage.changes_since(0, 10)] == ["doc"]
            # A peer keeps one checkpoint per feed of this node.
            storage_id = store.storage.storage_id
            await store.storage.submit(SaveCheckpoint(f"{storage_id}/catalog", a2))
            await store.storage.submit(SaveCheckpoint(storage_id, doc_seq))
            assert await store.storage.checkpoint(f"{storage_id}/catalog") == a2
            assert await store.storage.checkpoint(storage_id) == doc_seq
            stats = store.statistics()
            assert stats.catalog_records == 2
            return storage_id, a2, store.storage.last_seq

    storage_id, a2, last = run(first())

    async def second() -> None:
        async with open_store(tmp_path) as store:
            catalog = store.catalog
            # In memory from the open on: no await needed.
            assert catalog.get("a") == b'{"v": 3}' and catalog.get("b") == b'{"v": 2}'
            assert catalog.record("a") == CatalogRecord("a", a2, b'{"v": 3}')
            assert store.storage.last_seq == last
            assert await catalog.put("a", b'{"v": 3}') == a2
            assert await catalog.put("c", b"") > last
            assert await store.storage.checkpoint(f"{storage_id}/catalog") == a2

    run(second())


def test_catalog_refuses_oversized_records_and_bad_ids(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            catalog = store.catalog
            largest = b"x" * MAX_RECORD_BYTES
            seq = await catalog.put("big", largest)
            with pytest.raises(LimitExceeded) as raised:
                await catalog.put("big", largest + b"x")
            assert raised.value.code == "limit_exceeded"
            assert str(MAX_RECORD_BYTES) in str(raised.value)
            with pytest.raises(LimitExceeded):
                await catalog.put("other", b"y" * (MAX_RECORD_BYTES + 1))
            with pytest.raises(InvalidDocumentId):
                await catalog.put("../etc", b"{}")
            assert catalog.record("big") == CatalogRecord("big", seq, largest)
            assert "other" not in catalog and len(catalog) == 1
            assert [r.doc_id for r in await catalog.since(0)] == ["big"]

    run(scenario())


def test_catalog_puts_of_one_document_apply_in_call_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            catalog = store.catalog
            await catalog.put("p", b"old")
            for round_ in range(20):
                values = [random.choice([b"old", b"x", b"y"]) for _ in range(6)]
                seqs = await asyncio.gather(*(catalog.put("p", v) for v in values))
                assert seqs == sorted(seqs), "later calls never get earlier seqs"
                assert catalog.get("p") == values[-1], round_
                assert [r.data for r in await catalog.since(0)] == [values[-1]]
            # A put whose caller is cancelled still lands, in memory too.
            task = asyncio.create_task(catalog.put("p", b"cancelled"))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await catalog.put("q", b"after")  # queued after it: it has committed
            assert catalog.get("p") == b"cancelled"

    run(scenario())


# -- hints ---------------------------------------------------------------------------------


def test_hints_commit_with_the_write_and_survive_reopen(tmp_path: Path) -> None:
    update = _root_update("r", 1, client_id=11)

    async def first() -> None:
        async with open_store(tmp_path) as store:
            assert store.hints() == frozenset()
            commits = store.storage.statistics().commits
            result = await store.apply_update("hinted", update, hint=True)
            assert result.changed and store.hints() == {"hinted"}
            # The update and its hint: one transaction.
            assert store.storage.statistics().commits == commits + 1
            await store.apply_operations("ops", _set("k", 1), hint=True)
            await store.apply_operations("plain", _set("k", 1))
            await store.apply_operations("deleted", _set("k", 1))
            await store.delete("deleted", hint=True)
            await store.add_hint("added")
            await store.add_hint("added")  # idempotent
            assert store.hints() == {"hinted", "ops", "deleted", "added"}
            assert store.statistics().hinted_documents == 4

    async def second() -> None:
        async with open_store(tmp_path) as store:
            assert store.hints() == {"hinted", "ops", "deleted", "added"}
            assert (await store.get("hinted")).to_json() == {"r": {"v": 1}}
            await store.drop_hint("ops")
            await store.drop_hint("ops")
            await store.drop_hint("never-hinted")
            # A duplicate write still leaves its hint.
            await store.drop_hint("hinted")
            result = await store.apply_update("hinted", update, hint=True)
            assert not result.changed and "hinted" in store.hints()
            assert store.hints() == {"hinted", "deleted", "added"}

    async def third() -> None:
        async with open_store(tmp_path) as store:
            assert store.hints() == {"hinted", "deleted", "added"}

    run(first())
    run(second())
    run(third())


def test_hint_and_drop_apply_in_call_order(tmp_path: Path) -> None:
    """Hint changes and hinted writes to a document in memory queue their commits at once,
    so concurrent calls take effect in call order, in memory as in the file."""

    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            await store.apply_operations("h", _set("k", -1))
            for round_ in range(30):
                kinds = [random.choice(["add", "drop", "write"]) for _ in range(5)]
                calls = [
                    store.add_hint("h")
                    if kind == "add"
                    else store.drop_hint("h")
                    if kind == "drop"
                    else store.apply_operations("h", _set("k", i), hint=True)
                    for i, kind in enumerate(kinds)
                ]
                await asyncio.gather(*calls)
                assert ("h" in store.hints()) == (kinds[-1] != "drop"), (round_, kinds)
                assert ("h" in await store.storage.hints()) == ("h" in store.hints())

    run(scenario())


_KILLED_WRITER = """
import asyncio, sys
from pathlib import Path
from crdt import open_store

async def main():
    async with open_store(Path(sys.argv[1])) as store:
        await store.apply_update("hinted", bytes.fromhex(sys.argv[2]), hint=True)
        print("acknowledged", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def test_an_acknowledged_hinted_write_survives_sigkill(tmp_path: Path) -> None:
    """A real process acknowledges a write with ``hint=True`` and is killed with SIGKILL at
    once: the reopened file has both the update and the hint."""
    update = _root_update("r", 42, client_id=5)
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path), update.hex()],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30 * TIMEOUT_FACTOR)
        assert ready, "the writer never acknowledged"
        assert process.stdout.readline().strip() == "acknowledged"
        process.kill()
        process.wait(timeout=30 * TIMEOUT_FACTOR)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    async def reopen() -> None:
        async with open_store(tmp_path) as store:
            assert store.hints() == {"hinted"}
            assert (await store.get("hinted")).to_json() == {"r": {"v": 42}}

    run(reopen())


# -- forgetting a copy ---------------------------------------------------------------------


def test_forget_drops_the_copy_without_a_tombstone(tmp_path: Path) -> None:
    async def first() -> int:
        async with open_store(tmp_path) as store:
            await store.apply_operations("keep", _set("k", 1))
            for i in range(3):
                await store.apply_operations("gone", _set("k", i), hint=True)
            await store.catalog.put("gone", b'{"holders": ["n1"]}')
            last = store.storage.last_seq  # the forgotten copy holds the file's highest seq
            assert await store.forget("gone") is True
            with pytest.raises(DocumentNotFound) as raised:
                await store.get("gone")
            assert raised.value.code == "document_not_found"  # not document_deleted
            assert await store.lookup("gone") is None
            assert [r.id for r in await store.list_documents()] == ["keep"]
            assert await store.storage.changes_since(0, 10) == [ChangeRecord("keep", 1, False, 1)]
            assert await store.storage.count_documents() == (1, 0)
            assert store.hints() == frozenset()
            # The catalog record is the placement layer's, not the copy's: it stays.
            assert store.catalog.get("gone") == b'{"holders": ["n1"]}'
            assert store.statistics().forgotten_copies == 1
            # Forgetting what is not here changes nothing and says so.
            assert await store.forget("gone") is True
            assert await store.forget("never-written") is True
            return last

    last = run(first())
    assert _meta(tmp_path / "meridian.duckdb")["retired_seq"] == str(last)

    async def second() -> None:
        async with open_store(tmp_path) as store:
            assert await store.lookup("gone") is None
            # Seqs never go back, though the rows that held the highest are gone.
            assert store.storage.last_seq == last
            result = await store.apply_operations("other", _set("k", 1))
            assert result.created
            assert (await store.storage.changes_since(last - 1, 10))[-1].seq == last + 1
            # A forgotten document comes back when written or copied again, from scratch.
            update = _root_update("r", 7, client_id=3)
            assert (await store.apply_update("gone", update, incarnation=1)).created
            assert (await store.get("gone")).to_json() == {"r": {"v": 7}}

    run(second())

    async def third() -> None:
        async with open_store(tmp_path) as store:
            assert (await store.get("gone")).to_json() == {"r": {"v": 7}}
            assert {r.id for r in await store.list_documents()} == {"keep", "other", "gone"}

    run(third())


def test_a_forgotten_document_comes_back_when_received_again(tmp_path: Path) -> None:
    """The store remembers ids that a disk read found absent; a forgotten copy becomes one,
    and receiving the document again must replace that memory."""

    async def scenario() -> None:
        async with open_store(tmp_path, StoreLimits(max_hot_documents=2)) as store:
            await store.apply_update("back", _root_update("old", 1, client_id=1))
            assert await store.forget("back") is True
            assert await store.lookup("back") is None  # read from disk: absent, remembered
            hits = store.statistics().absent_hits
            assert await store.lookup("back") is None
            assert store.statistics().absent_hits == hits + 1
            update = _root_update("new", 2, client_id=2)
            assert (await store.apply_update("back", update, incarnation=3)).created
            state = await store.lookup("back")
            assert state is not None and state.incarnation == 3
            assert state.document.to_json() == {"new": {"v": 2}}
            for i in range(3):  # evict it, then read it from disk again
                await store.apply_operations(f"evictor-{i}", _set("k", i))
            assert (await store.get("back")).to_json() == {"new": {"v": 2}}

    run(scenario())


def test_edits_after_a_forget_never_reuse_the_ids_the_holders_have(tmp_path: Path) -> None:
    """The node's own edits to a fresh copy of a document it forgot are new to the holders:
    each write after a forget lands next to every write made before it (a fresh copy starts
    from clock 0, so the node's client id must change, or the holders would discard them as
    already known — acknowledged elements lost)."""

    def append(value: str) -> dict[str, Any]:
        return {"ops": [{"op": "append", "path": ["items"], "values": [value]}]}

    async def scenario() -> None:
        holder: pycrdt.Doc[Any] = pycrdt.Doc()
        async with open_store(tmp_path) as store:
            for round_ in range(3):
                for i in range(3):
                    await store.apply_operations("moved", append(f"r{round_}-{i}"))
                copy = await store.get("moved")
                holder.apply_update(copy.encode_state(bytes(holder.get_state())))
                assert await store.forget("moved", bytes(holder.get_state())) is True
            items = holder.get("items", type=pycrdt.Array)
            assert sorted(items) == sorted(f"r{r}-{i}" for r in range(3) for i in range(3))

    run(scenario())


def test_forget_only_what_a_holder_covers(tmp_path: Path) -> None:
    updates = _text_updates(["alpha ", "beta ", "gamma"])

    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            for update in updates:
                await store.apply_update("doc", update)
            local = (await store.get("doc")).state_vector()
            # A holder that lacks the last update does not cover this copy.
            holder: pycrdt.Doc[Any] = pycrdt.Doc()
            for update in updates[:2]:
                holder.apply_update(update)
            behind = bytes(holder.get_state())
            assert await store.forget("doc", behind) is False
            assert (await store.get("doc")).state_vector() == local
            # Nor does a state vector of an older incarnation, whatever it says.
            assert await store.forget("doc", local, incarnation=0) is False
            with pytest.raises(InvalidUpdate):
                await store.forget("doc", b"\x05\x01")
            assert await store.forget("doc", local) is True
            assert await store.lookup("doc") is None

            # A holder ahead covers; so does a holder at a later incarnation.
            for update in updates:
                await store.apply_update("ahead", update)
            holder.apply_update(updates[2])
            holder.get("body", type=pycrdt.Text).insert(0, "more ")
            assert await store.forget("ahead", bytes(holder.get_state()), incarnation=1)
            await store.apply_update("later", updates[0])
            assert await store.forget("later", EMPTY_STATE_VECTOR, incarnation=2) is True

            # A tombstone: a state vector of the same incarnation says nothing of it.
            await store.apply_update("deleted", updates[0])
            await store.delete("deleted")
            assert await store.forget("deleted", local) is False
            assert await store.forget("deleted", EMPTY_STATE_VECTOR, incarnation=2) is True
            await store.apply_update("deleted-too", updates[0])
            await store.delete("deleted-too")
            assert await store.forget("deleted-too") is True
            assert await store.storage.count_documents() == (0, 0)

    run(scenario())


def test_forget_counts_the_updates_still_waiting_for_their_dependencies(tmp_path: Path) -> None:
    updates = _text_updates(["one ", "two ", "three"])

    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            await store.apply_update("gap", updates[0])
            await store.apply_update("gap", updates[2])  # waits for updates[1]
            document = await store.get("gap")
            assert document.has_pending
            integrated = document.state_vector()
            assert await store.forget("gap", integrated) is False
            holder: pycrdt.Doc[Any] = pycrdt.Doc()
            for update in updates:
                holder.apply_update(update)
            assert await store.forget("gap", bytes(holder.get_state())) is True

    run(scenario())


def test_forget_keeps_a_copy_with_a_write_in_flight(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            await store.apply_update("busy", _root_update("a", 1, client_id=1))
            applied = asyncio.Event()
            write = asyncio.create_task(
                store.apply_update(
                    "busy", _root_update("b", 2, client_id=2), on_applied=applied.set
                )
            )
            await applied.wait()  # applied in memory, its commit not awaited yet
            assert await store.forget("busy") is False
            await write
            assert (await store.get("busy")).to_json() == {"a": {"v": 1}, "b": {"v": 2}}
            assert await store.forget("busy") is True

    run(scenario())


@pytest.mark.parametrize("hot", [True, False], ids=["hot", "cold"])
def test_a_write_racing_a_forget_is_never_lost(tmp_path: Path, hot: bool) -> None:
    """Many rounds of a forget (with the state vector a holder had before the write) and a
    write to the same document, interleaved at random: the write is always there after,
    in memory and in the file, whether it came before the forget (which then refuses) or
    after (and starts a fresh copy)."""
    rounds = 120
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    # A cold document is evicted before each round, so both sides load it from disk.
    limits = StoreLimits(max_hot_documents=1000 if hot else 2)
    outcomes: dict[str, int] = {"forgotten": 0, "kept": 0}

    async def yield_randomly() -> None:
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)

    async def forget(store: DocumentStore, doc_id: str, holder: bytes) -> bool:
        await yield_randomly()
        return await store.forget(doc_id, holder)

    async def write(store: DocumentStore, doc_id: str, round_: int) -> None:
        await yield_randomly()
        await store.apply_update(doc_id, _root_update("w", round_, client_id=10_000 + round_))

    async def scenario() -> None:
        async with open_store(tmp_path, limits) as store:
            for round_ in range(rounds):
                doc_id = f"race-{round_}"
                await store.apply_update(doc_id, _root_update("base", round_, client_id=1))
                holder = (await store.get(doc_id)).state_vector()
                if not hot:
                    await store.apply_operations("evict-a", _set("k", round_))
                    await store.apply_operations("evict-b", _set("k", round_))
                forgot, _ = await asyncio.gather(
                    forget(store, doc_id, holder), write(store, doc_id, round_)
                )
                outcomes["forgotten" if forgot else "kept"] += 1
                content = (await store.get(doc_id)).to_json()
                assert content["w"] == {"v": round_}, f"seed {seed}, round {round_}: {content}"
                assert ("base" in content) == (not forgot), f"seed {seed}, round {round_}"

    run(scenario())

    async def reopen() -> None:
        async with open_store(tmp_path) as store:
            for round_ in range(rounds):
                content = (await store.get(f"race-{round_}")).to_json()
                assert content["w"] == {"v": round_}, f"seed {seed}, round {round_}"

    run(reopen())
    assert outcomes["forgotten"] and outcomes["kept"], f"seed {seed}: {outcomes}"


def test_a_load_that_read_a_forgotten_copy_reads_again(tmp_path: Path) -> None:
    """White-box, like the absent-set race in test_store.py: a disk read of a document that
    began before the copy was forgotten must not bring the copy back into memory."""

    async def scenario() -> None:
        async with open_store(tmp_path, StoreLimits(max_hot_documents=1)) as store:
            await store.apply_update("racy", _root_update("r", 1, client_id=1))
            await store.apply_operations("evictor", _set("k", 1))  # "racy" is cold now
            storage_load = store.storage.load
            reading = asyncio.Event()
            release = asyncio.Event()

            async def slow_load(doc_id: str) -> Any:
                found = await storage_load(doc_id)  # the disk says: there
                if doc_id == "racy" and not reading.is_set():
                    reading.set()
                    await release.wait()
                return found

            store.storage.load = slow_load  # type: ignore[method-assign]
            reader = asyncio.create_task(store._load("racy"))
            await reading.wait()
            assert await store.forget("racy") is True
            release.set()
            assert await reader is None
            assert await store.lookup("racy") is None
            store.storage.load = storage_load  # type: ignore[method-assign]

    run(scenario())


def test_writer_batches_keep_queue_order(tmp_path: Path) -> None:
    """Jobs queued back to back (the writer takes them in one or a few batches): creates,
    forgets, hints and catalog records of one document land as if run one by one."""

    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            storage = store.storage
            first, second = _root_update("a", 1, client_id=1), _root_update("b", 2, client_id=2)
            futures = [
                storage.submit(Append("x", 1, first, create=True, hint=True)),
                storage.submit(PutCatalogRecord("x", b"1")),
                storage.submit(Forget("x")),
                storage.submit(Append("x", 1, second, create=True)),
                storage.submit(AddHint("x")),
                storage.submit(DropHint("x")),
                storage.submit(AddHint("y")),
                storage.submit(PutCatalogRecord("x", b"2")),
                storage.submit(Forget("z")),
            ]
            results = await asyncio.gather(*futures)
            seqs = [results[i] for i in (0, 1, 3, 7)]
            assert seqs == sorted(seqs) and len(set(seqs)) == 4
            loaded = await storage.load("x")
            assert loaded is not None and loaded.updates == [second]
            assert await storage.hints() == ["y"]
            assert await storage.catalog_since(0, 10) == [CatalogRecord("x", results[7], b"2")]

    run(scenario())


# -- storage format 3 and the upgrade of format 2 -------------------------------------------

# Storage format 2 exactly as Meridian wrote it, so the upgrade is tested on a real old file.
_FORMAT_2_SCHEMA = (
    "CREATE TABLE meta(key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    "CREATE TABLE documents(id VARCHAR PRIMARY KEY, incarnation BIGINT NOT NULL, "
    "deleted BOOLEAN NOT NULL, created_at DOUBLE NOT NULL, deleted_at DOUBLE)",
    "CREATE TABLE updates(doc_id VARCHAR NOT NULL, incarnation BIGINT NOT NULL, "
    "seq BIGINT NOT NULL, data BLOB NOT NULL)",
    "CREATE INDEX updates_doc ON updates(doc_id)",
    "CREATE TABLE snapshots(doc_id VARCHAR PRIMARY KEY, incarnation BIGINT NOT NULL, "
    "seq BIGINT NOT NULL, data BLOB NOT NULL)",
    "CREATE TABLE deletions(doc_id VARCHAR PRIMARY KEY, incarnation BIGINT NOT NULL, "
    "seq BIGINT NOT NULL)",
    "CREATE TABLE checkpoints(peer VARCHAR PRIMARY KEY, seq BIGINT NOT NULL, "
    "updated_at DOUBLE NOT NULL)",
)
_FORMAT_2_ID = "0123456789abcdef0123456789abcdef"


def _write_format_2(path: Path, notes: list[bytes]) -> None:
    con = duckdb.connect(str(path))
    con.execute("BEGIN")
    for statement in _FORMAT_2_SCHEMA:
        con.execute(statement)
    con.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("format_version", "2"), ("created_at", "1700000000.0"), ("storage_id", _FORMAT_2_ID)],
    )
    con.executemany(
        "INSERT INTO documents VALUES (?, ?, ?, ?, ?)",
        [("notes", 1, False, 1700000001.0, None), ("gone", 2, True, 1700000002.0, 1700000003.0)],
    )
    con.execute("INSERT INTO snapshots VALUES ('notes', 1, 2, ?)", [fold_updates(notes[:2])])
    con.execute("INSERT INTO updates VALUES ('notes', 1, 4, ?)", [notes[2]])
    con.execute("INSERT INTO deletions VALUES ('gone', 2, 5)")
    con.execute("INSERT INTO checkpoints VALUES ('peer-a', 17, 1700000004.0)")
    con.execute("COMMIT")
    con.close()


def test_format_2_file_is_upgraded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert FORMAT_VERSION == 3
    notes = _text_updates(["alpha ", "beta ", "gamma"])
    path = tmp_path / "meridian.duckdb"
    _write_format_2(path, notes)
    assert inspect_file(path).format_version == 2  # reading it changes nothing

    async def first() -> None:
        async with open_store(tmp_path) as store:
            storage = store.storage
            # The same seq space, under the same storage id: peers' checkpoints stay valid.
            assert storage.storage_id == _FORMAT_2_ID and storage.last_seq == 5
            assert await storage.changes_since(0, 10) == [
                ChangeRecord("notes", 1, False, 4),
                ChangeRecord("gone", 2, True, 5),
            ]
            assert await storage.checkpoints() == {"peer-a": 17}
            body = (await store.get("notes")).root("body", RootKind.TEXT)
            assert str(body) == "alpha beta gamma"
            assert len(store.catalog) == 0 and store.hints() == frozenset()
            assert await store.catalog.put("notes", b"{}") == 6
            await store.apply_operations("new", _set("k", 1), hint=True)
            assert store.storage.last_seq == 7

    with caplog.at_level(logging.INFO, logger="meridian.storage"):
        run(first())
    upgrades = _upgrades(caplog)
    assert len(upgrades) == 1 and upgrades[0].endswith("from storage format 2 to 3")
    meta = _meta(path)
    assert meta == {
        "format_version": "3",
        "created_at": "1700000000.0",
        "storage_id": _FORMAT_2_ID,
    }

    async def second() -> None:
        async with open_store(tmp_path) as store:
            assert store.catalog.get("notes") == b"{}" and store.hints() == {"new"}

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="meridian.storage"):
        run(second())
    assert not _upgrades(caplog)


def _upgrades(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "meridian.storage" and r.getMessage().startswith("upgraded ")
    ]


def test_a_new_file_has_the_format_3_tables(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with open_store(tmp_path):
            pass

    run(scenario())
    con = duckdb.connect(str(tmp_path / "meridian.duckdb"), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    finally:
        con.close()
    assert {"catalog", "hints"} <= tables
    assert _meta(tmp_path / "meridian.duckdb")["format_version"] == str(FORMAT_VERSION)


def test_a_load_of_an_id_never_written_reads_nothing(tmp_path: Path) -> None:
    """The file's ids are kept in memory: a lookup of an id with no row answers None without a
    read; a cold document is still read, a forgotten one is not, across a restart too."""

    async def scenario() -> None:
        limits = StoreLimits(max_hot_documents=1)
        async with open_store(tmp_path, limits) as store:
            await store.apply_update("kept", _root_update("m", 1, 11))
            await store.apply_update("gone", _root_update("m", 2, 12))
            await store.apply_update("other", _root_update("m", 3, 13))  # evicts the others
            state = await store.lookup("gone")
            assert state is not None
            await store.forget("gone", state.document.reach_vector(), incarnation=1)
            before = store.storage.statistics()
            assert await store.lookup("never-written") is None
            assert await store.lookup("gone") is None
            after = store.storage.statistics()
            assert after.loads == before.loads
            assert after.loads_skipped == before.loads_skipped + 2
        async with open_store(tmp_path, limits) as store:
            assert await store.lookup("gone") is None
            assert await store.lookup("never-written") is None
            assert store.storage.statistics().loads == 0
            kept = await store.lookup("kept")
            assert kept is not None and not kept.deleted
            assert store.storage.statistics().loads == 1

    run(scenario())


def test_moves_are_paced_evenly_after_a_burst() -> None:
    from app.cluster.handoff import Pace

    pace = Pace(100.0, burst=4)  # one move every 10 ms
    now = 50.0
    delays = [pace.delay(now) for _ in range(8)]
    # the first four start at once, the rest one interval apart
    assert delays[:4] == [0.0, 0.0, 0.0, 0.0]
    assert delays[4:] == pytest.approx([0.01, 0.02, 0.03, 0.04])
    # after an idle spell, a burst again (not the backlog of unused slots)
    later = now + 10.0
    assert [pace.delay(later) for _ in range(4)] == [0.0, 0.0, 0.0, 0.0]
    assert pace.delay(later) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        Pace(0.0)
