"""The store and its DuckDB file: group commit, compaction, restart, deletion, limits, format."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import duckdb
import pycrdt
import pytest

from crdt import (
    DocumentDeleted,
    DocumentNotFound,
    LimitExceeded,
    StorageError,
    StorageFormatError,
    StoreLimits,
    open_store,
)
from crdt.storage import Append


def _append(value: Any) -> dict[str, Any]:
    return {"ops": [{"op": "append", "path": ["items"], "values": [value]}]}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_concurrent_writes_share_commits_and_survive_restart(tmp_path: Path) -> None:
    async def write() -> None:
        async with open_store(tmp_path) as store:
            await asyncio.gather(
                *(store.apply_operations(f"d{i % 7}", _append(i)) for i in range(700))
            )
            stats = store.storage.statistics()
            assert stats.jobs_committed == 700
            assert stats.batch_size_max > 1, "group commit put several writes in one transaction"
            assert stats.commits < 700

    async def read() -> None:
        async with open_store(tmp_path) as store:
            for d in range(7):
                document = await store.get(f"d{d}")
                assert sorted(document.to_json()["items"]) == list(range(d, 700, 7))

    run(write())
    run(read())


def test_compaction_folds_the_log_and_keeps_everything(tmp_path: Path) -> None:
    limits = StoreLimits(compact_after_updates=5)

    async def write() -> str:
        async with open_store(tmp_path, limits) as store:
            for i in range(23):
                await store.apply_operations("doc", _append(i))
            document = await store.get("doc")
            return document.digest()

    digest = run(write())
    con = duckdb.connect(str(tmp_path / "meridian.duckdb"))
    snapshots = con.execute("SELECT count(*) FROM snapshots").fetchone()
    rows = con.execute("SELECT count(*) FROM updates").fetchone()
    con.close()
    assert snapshots == (1,)
    assert rows is not None and rows[0] < 5

    async def read() -> None:
        async with open_store(tmp_path, limits) as store:
            document = await store.get("doc")
            assert document.to_json() == {"items": list(range(23))}
            assert document.digest() == digest

    run(read())


def test_cold_documents_are_evicted_and_reloaded(tmp_path: Path) -> None:
    limits = StoreLimits(max_hot_documents=3, max_hot_bytes=10_000_000)

    async def scenario() -> None:
        async with open_store(tmp_path, limits) as store:
            for i in range(10):
                await store.apply_operations(f"d{i}", _append(i))
            stats = store.statistics()
            assert stats.hot_documents <= 3
            assert stats.evictions >= 7
            for i in range(10):
                assert (await store.get(f"d{i}")).to_json() == {"items": [i]}
            assert store.statistics().loads >= 7

    run(scenario())


def test_hot_set_is_bounded_by_bytes(tmp_path: Path) -> None:
    limits = StoreLimits(max_hot_documents=1000, max_hot_bytes=2_000)

    async def scenario() -> None:
        async with open_store(tmp_path, limits) as store:
            for i in range(20):
                await store.apply_operations(f"d{i}", _append("x" * 300))
            assert store.statistics().hot_bytes <= 2_000 + 400

    run(scenario())


def test_delete_then_recreate_starts_a_new_incarnation(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            first = await store.apply_operations("doc", _append("old"))
            assert first.created and first.incarnation == 1
            assert await store.delete("doc") == 1
            with pytest.raises(DocumentDeleted):
                await store.get("doc")
            with pytest.raises(DocumentDeleted):
                await store.delete("doc")
            again = await store.apply_operations("doc", _append("new"))
            assert again.created and again.incarnation == 2
            assert (await store.get("doc")).to_json() == {"items": ["new"]}
            with pytest.raises(DocumentNotFound):
                await store.get("never")
        async with open_store(tmp_path) as store:
            document = await store.get("doc")
            assert document.incarnation == 2
            assert document.to_json() == {"items": ["new"]}
            listed = await store.list_documents()
            assert [(r.id, r.incarnation) for r in listed] == [("doc", 2)]

    run(scenario())


def test_document_size_limit(tmp_path: Path) -> None:
    limits = StoreLimits(max_document_bytes=1_000)

    async def scenario() -> None:
        async with open_store(tmp_path, limits) as store:
            await store.apply_operations("doc", _append("x" * 500))
            before = (await store.get("doc")).digest()
            with pytest.raises(LimitExceeded) as info:
                await store.apply_operations("doc", _append("y" * 600))
            assert info.value.limit == "max_document_bytes"
            assert (await store.get("doc")).digest() == before

    run(scenario())


def test_a_failing_job_fails_alone_and_the_others_commit(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            update = pycrdt.Doc(client_id=5)
            update.get("m", type=pycrdt.Map)["k"] = "v"
            good = [
                store.storage.submit(Append(f"ok{i}", 1, update.get_update(), create=True))
                for i in range(5)
            ]
            bad = store.storage.submit(Append(None, 1, b"\x00\x00", create=True))  # type: ignore[arg-type]
            results = await asyncio.gather(*good, bad, return_exceptions=True)
            assert all(isinstance(r, int) for r in results[:5])
            assert isinstance(results[5], StorageError)
            listed = await store.list_documents(prefix="ok")
            assert len(listed) == 5

    run(scenario())


def test_newer_storage_format_is_refused(tmp_path: Path) -> None:
    run(_touch(tmp_path))
    con = duckdb.connect(str(tmp_path / "meridian.duckdb"))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    con.close()

    async def reopen() -> None:
        async with open_store(tmp_path):
            pass

    with pytest.raises(StorageFormatError, match="storage format 99, written by a newer Meridian"):
        run(reopen())


def test_not_a_duckdb_file_is_a_clear_storage_error(tmp_path: Path) -> None:
    (tmp_path / "meridian.duckdb").write_bytes(b"this is not a database" * 100)

    async def reopen() -> None:
        async with open_store(tmp_path):
            pass

    with pytest.raises(StorageError, match="cannot open"):
        run(reopen())


async def _touch(path: Path) -> None:
    async with open_store(path) as store:
        await store.apply_operations("doc", _append(1))


def test_list_pages_by_prefix(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            for name in ["a1", "a2", "a3", "b1"]:
                await store.apply_operations(name, _append(name))
            first = await store.list_documents(prefix="a", limit=2)
            assert [r.id for r in first] == ["a1", "a2"]
            rest = await store.list_documents(prefix="a", after="a2", limit=2)
            assert [r.id for r in rest] == ["a3"]

    run(scenario())


def test_write_after_eviction_race_keeps_the_incarnation(tmp_path: Path) -> None:
    """Regression: a document loaded and evicted at once used to be re-created empty as
    incarnation 1, hiding (and later compacting away) acknowledged writes."""
    limits = StoreLimits(max_hot_bytes=1, compact_after_updates=2)

    async def scenario() -> None:
        async with open_store(tmp_path, limits) as store:
            await store.apply_operations("x", _append("first life"))
            await store.delete("x")
            await store.apply_operations("x", _append("second life"))
            await store.apply_operations("y", _append("other"))
            result = await store.apply_operations("x", _append("more"))
            assert (result.incarnation, result.created) == (2, False)
            await asyncio.gather(*(store.apply_operations("x", _append(i)) for i in range(20)))
        async with open_store(tmp_path, limits) as store:
            document = await store.get("x")
            assert document.incarnation == 2
            items = document.to_json()["items"]
            assert items[:2] == ["second life", "more"] and sorted(items[2:]) == list(range(20))

    run(scenario())


def test_a_rejected_write_creates_nothing(tmp_path: Path) -> None:
    from crdt import InvalidOperation, InvalidUpdate

    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            with pytest.raises(InvalidUpdate):
                await store.apply_update("new", b"\x01\x02")
            with pytest.raises(DocumentNotFound):
                await store.get("new")
            await store.apply_operations("gone", _append(1))
            await store.delete("gone")
            with pytest.raises(InvalidOperation):
                await store.apply_operations(
                    "gone", {"ops": [{"op": "remove", "path": ["x"], "index": 0, "length": 1}]}
                )
            with pytest.raises(DocumentDeleted):
                await store.get("gone")
            again = await store.apply_operations("gone", _append(2))
            assert again.incarnation == 2

    run(scenario())


def test_a_cancelled_request_still_commits_and_duplicates_wait_for_it(tmp_path: Path) -> None:
    doc = pycrdt.Doc(client_id=9)
    doc.get("m", type=pycrdt.Map)["k"] = "v"
    update = doc.get_update()

    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            await store.apply_operations("d", _append(0))
            first = asyncio.ensure_future(store.apply_update("d", update))
            for _ in range(1000):  # let the request reach the writer's queue
                if store.storage.statistics().queue_depth or first.done():
                    break
                await asyncio.sleep(0)
            first.cancel()
            committed_before = store.storage.statistics().jobs_committed
            duplicate = await store.apply_update("d", update)
            assert duplicate.changed is False
            assert store.storage.statistics().jobs_committed > committed_before
        async with open_store(tmp_path) as store:
            assert (await store.get("d")).to_json()["m"] == {"k": "v"}

    run(scenario())


def test_cancelling_one_reader_does_not_fail_the_others(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with open_store(tmp_path, StoreLimits(max_hot_documents=1)) as store:
            await store.apply_operations("a", _append(1))
            await store.apply_operations("b", _append(2))  # evicts a
            first = asyncio.ensure_future(store.get("a"))
            second = asyncio.ensure_future(store.get("a"))
            await asyncio.sleep(0)
            first.cancel()
            assert (await second).to_json() == {"items": [1]}

    run(scenario())


def test_a_missing_document_is_read_from_disk_once(tmp_path: Path) -> None:
    """A never-written id is remembered as absent (bounded like the hot set) until a write or
    a tombstone creates it; a remembered miss never hides a document."""
    limits = StoreLimits(max_hot_documents=3)

    async def scenario() -> None:
        async with open_store(tmp_path, limits) as store:
            for _ in range(5):
                assert await store.lookup("ghost") is None
                with pytest.raises(DocumentNotFound):
                    await store.get("ghost")
            stats = store.statistics()
            assert (stats.disk_reads, stats.absent_hits) == (1, 9)

            # A write creates it: found from then on, in memory and after eviction.
            await store.apply_operations("ghost", _append(1))
            for i in range(5):
                await store.apply_operations(f"other-{i}", _append(i))
            assert store.statistics().evictions > 0
            assert (await store.get("ghost")).to_json() == {"items": [1]}

            # A tombstone of another node for an id this node never saw creates it too.
            assert await store.lookup("elsewhere") is None
            assert await store.apply_tombstone("elsewhere", 1)
            state = await store.lookup("elsewhere")
            assert state is not None and state.deleted

            # The memory of misses is bounded: the oldest are read again.
            for i in range(10):
                assert await store.lookup(f"missing-{i}") is None
            before = store.statistics().disk_reads
            assert await store.lookup("missing-0") is None
            assert store.statistics().disk_reads == before + 1

    run(scenario())


def test_a_miss_read_while_a_document_is_admitted_is_not_remembered(tmp_path: Path) -> None:
    """The race the absent set guards against: a disk read that started before a document
    was created (and committed, and evicted) must not mark the id absent. White-box: it
    drives the store's private loader with a disk read held open."""

    async def scenario() -> None:
        async with open_store(tmp_path, StoreLimits(max_hot_documents=1)) as store:
            storage_load = store.storage.load
            reading = asyncio.Event()
            release = asyncio.Event()

            async def slow_load(doc_id: str) -> Any:
                found = await storage_load(doc_id)  # the disk says: not there (yet)
                if doc_id == "racy":
                    reading.set()
                    await release.wait()
                return found

            store.storage.load = slow_load  # type: ignore[method-assign]
            # The store's own disk read outside the shared loads (a writer's second look);
            # a shared load would make the write below wait for it.
            reader = asyncio.create_task(store._load("racy"))
            await reading.wait()
            # Meanwhile another path creates the document, commits it, and it is evicted.
            store.storage.load = storage_load  # type: ignore[method-assign]
            await store.apply_update("racy", _update_for("racy"))
            await store.apply_operations("evictor", _append(1))
            release.set()
            assert await reader is None  # that read started before the document existed
            state = await store.lookup("racy")
            assert state is not None and not state.deleted

    run(scenario())


def _update_for(text: str) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc["body"] = pycrdt.Text(text)
    return doc.get_update()


def test_a_blind_write_goes_to_its_floor_incarnation(tmp_path: Path) -> None:
    """A client's write kept as a hint with no copy to start from goes to the incarnation
    after the highest known deleted (``floor``), not to a first one; a copy of an earlier
    incarnation is left behind; a later one is written as usual."""

    def append(value: str) -> dict[str, object]:
        return {"ops": [{"op": "append", "path": ["items"], "values": [value]}]}

    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            blind = await store.apply_operations("blind", append("a"), hint=True, floor=5)
            assert (blind.incarnation, blind.created) == (5, True)
            await store.apply_operations("stale", append("old"))  # incarnation 1, live here
            moved = await store.apply_operations("stale", append("new"), floor=3)
            assert (moved.incarnation, moved.created) == (3, True)
            assert (await store.get("stale")).to_json() == {"items": ["new"]}
            await store.apply_operations("later", append("x"), floor=4)
            kept = await store.apply_operations("later", append("y"), floor=2)
            assert (kept.incarnation, kept.created) == (4, False)
        async with open_store(tmp_path) as store:  # as committed
            assert (await store.lookup("blind")).incarnation == 5  # type: ignore[union-attr]
            assert (await store.get("stale")).to_json() == {"items": ["new"]}

    asyncio.run(scenario())
