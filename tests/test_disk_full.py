"""A node whose disk fills up: writes fail cleanly (503 ``storage_unavailable``, nothing
acknowledged, nothing half-applied), reads go on, and writes succeed again once space is
freed — with no restart. A real filesystem of 16 MiB (tmpfs) holds the data directory."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crdt.errors import StorageError
from crdt.jobs import Append
from crdt.storage import Storage

from .support import NodeProcess, wait_for


@contextlib.contextmanager
def small_filesystem(where: Path, size_mb: int) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> None:
    """Writes ``path`` until the filesystem is full."""
    chunk = b"\0" * 65536
    with path.open("wb") as ballast:
        try:
            while True:
                ballast.write(chunk)
                ballast.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def append(client: httpx.Client, doc_id: str, value: str) -> httpx.Response:
    ops = {"ops": [{"op": "append", "path": ["items"], "values": [value]}]}
    return client.patch(f"/v1/docs/{doc_id}", json=ops)


def test_a_full_disk_refuses_writes_cleanly_and_recovers(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small", 16) as small:
        node = NodeProcess(small / "node", region="us-east").start()
        try:
            acknowledged: dict[str, list[str]] = {f"d{i}": [] for i in range(4)}
            with node.client() as client:
                for doc_id, values in acknowledged.items():
                    assert append(client, doc_id, f"{doc_id}-before").status_code == 200
                    values.append(f"{doc_id}-before")
                fill(small / "ballast")
                refused = 0
                for n in range(40):
                    doc_id = f"d{n % 4}"
                    value = f"{doc_id}-full-{n}"
                    answer = append(client, doc_id, value)
                    if answer.status_code == 200:
                        acknowledged[doc_id].append(value)  # a page already allocated
                        continue
                    assert answer.status_code == 503, answer.text
                    error = answer.json()["error"]
                    assert error["code"] == "storage_unavailable"
                    assert "No space left on device" in error["message"]
                    refused += 1
                assert refused >= 10  # some fit in pages DuckDB had allocated already
                # Reads and the node's own view go on.
                assert client.get("/v1/health").status_code == 200
                assert client.get("/v1/docs/d0").status_code == 200
                assert client.get("/v1/cluster").status_code == 200

                (small / "ballast").unlink()
                for n in range(8):
                    doc_id = f"d{n % 4}"
                    answer = append(client, doc_id, f"{doc_id}-after-{n}")
                    assert answer.status_code == 200, answer.text
                    acknowledged[doc_id].append(f"{doc_id}-after-{n}")

                def contents(client: httpx.Client) -> dict[str, list[str]]:
                    return {
                        doc_id: client.get(f"/v1/docs/{doc_id}").json()["content"]["items"]
                        for doc_id in acknowledged
                    }

                # Exactly the acknowledged values: a refused write left nothing behind.
                assert contents(client) == acknowledged
            node.kill()
            again = NodeProcess(small / "node", region="us-east").start()
            try:
                with again.client() as client:
                    wait_for(lambda: client.get("/v1/health").status_code == 200)
                    assert contents(client) == acknowledged
            finally:
                again.close()
        finally:
            node.close()


def test_a_write_built_on_one_that_failed_is_never_stored(tmp_path: Path) -> None:
    """Once a write of an in-memory copy fails to commit (the disk is full), the writes of
    that copy queued after it fail too, even when the disk has room again: they were applied
    on top of the failed one, and stored without it they would depend on changes that exist
    nowhere (the one-hour torture run's diverged text document). Another copy's write, and
    the same document's write through a fresh copy, commit."""

    async def scenario(small: Path) -> None:
        storage = Storage(small / "meridian.duckdb", max_batch=64, memory_limit="64MB")
        await asyncio.to_thread(storage.open)
        try:
            assert await storage.submit(Append("d", 1, b"\x00\x00", create=True, lineage=7))
            ballast = small / "ballast"
            await asyncio.to_thread(fill, ballast)
            with pytest.raises(StorageError):
                await storage.submit(Append("d", 1, b"\x01" * 300_000, lineage=7))
            ballast.unlink()
            with pytest.raises(StorageError, match="builds on failed to commit"):
                await storage.submit(Append("d", 1, b"\x00\x00", lineage=7))
            assert await storage.submit(Append("d", 1, b"\x00\x00", lineage=8))
            assert await storage.submit(Append("e", 1, b"\x00\x00", create=True, lineage=9))
        finally:
            await asyncio.to_thread(storage.close)

    with small_filesystem(tmp_path / "small", 16) as small:
        asyncio.run(scenario(small))
