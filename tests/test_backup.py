"""``meridian backup`` and ``meridian restore`` on real DuckDB files and real node processes;
replacing a failed node and adding one, in real clusters on loopback (docs/operations.md)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from app.cli import main
from crdt import FORMAT_VERSION

from .cluster import Cluster
from .support import NodeProcess, run_meridian, wait_for
from .test_storage_changes import _text_updates, _write_format_1

FILE = "meridian.duckdb"


def write(client: httpx.Client, doc_id: str, value: Any) -> dict[str, Any]:
    """One acknowledged write (a map key set); returns the answer."""
    ops = [{"op": "set", "path": ["m", "v"], "value": value}]
    answer = client.patch(f"/v1/docs/{doc_id}", json={"ops": ops})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def digests(client: httpx.Client, doc_ids: list[str]) -> dict[str, Any]:
    """For each document: (digest, content), or the status of a failed read."""
    out: dict[str, Any] = {}
    for doc_id in doc_ids:
        answer = client.get(f"/v1/docs/{doc_id}", params={"digest": "true"})
        body = answer.json()
        out[doc_id] = (
            (body["digest"], body["content"]) if answer.status_code == 200 else (answer.status_code)
        )
    return out


def storage_id(data_dir: Path) -> str:
    con = duckdb.connect(str(data_dir / FILE), read_only=True)
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'storage_id'").fetchone()
    finally:
        con.close()
    assert row is not None
    return str(row[0])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    process = NodeProcess(tmp_path / "eu-west-1")
    try:
        yield process
    finally:
        process.close()


# -- one node ---------------------------------------------------------------------------------


def test_backup_of_a_killed_node_restores_every_acknowledged_write(
    tmp_path: Path, node: NodeProcess
) -> None:
    data = node.data_dir
    node.start()
    ids = [f"doc-{i}" for i in range(20)]
    with node.client() as client:
        for i, doc_id in enumerate(ids):
            write(client, doc_id, i)
        write(client, "gone", "x")
        assert client.delete("/v1/docs/gone").status_code == 200
        before = digests(client, [*ids, "gone"])
    node.kill()  # SIGKILL: the last commits are only in the write-ahead log
    original_id = storage_id(data)

    backup = tmp_path / "backups" / "eu-west-1.duckdb"
    backup.parent.mkdir()
    result = run_meridian("backup", "--data", str(data), "--out", str(backup))
    assert result.returncode == 0, result.stderr
    assert "20 documents, 1 tombstones" in result.stdout
    # One self-contained file: the log is folded in, nothing partial is left.
    assert listing(backup.parent) == ["eu-west-1.duckdb"]
    backup_sha = sha256(backup)

    restored = tmp_path / "fresh"
    result = run_meridian("restore", "--from", str(backup), "--data", str(restored))
    assert result.returncode == 0, result.stderr
    assert "new storage id" in result.stdout and "kept as" not in result.stdout
    assert sha256(backup) == backup_sha  # the backup is only read
    assert storage_id(restored) not in (original_id, "")

    again = NodeProcess(restored).start()
    try:
        with again.client() as client:
            assert digests(client, [*ids, "gone"]) == before
            assert before["gone"] == 404
            assert len(client.get("/v1/docs").json()["documents"]) == 20
    finally:
        again.close()


def test_restore_over_a_data_directory_keeps_the_replaced_file(
    tmp_path: Path, node: NodeProcess
) -> None:
    data = node.data_dir
    node.start()
    with node.client() as client:
        write(client, "kept", 1)
    assert node.terminate() == 0
    backup = tmp_path / "b.duckdb"
    assert run_meridian("backup", "--data", str(data), "--out", str(backup)).returncode == 0
    again = NodeProcess(data).start()
    with again.client() as client:
        write(client, "later", 2)
    again.kill()
    current_sha = sha256(data / FILE)

    result = run_meridian("restore", "--from", str(backup), "--data", str(data))
    assert result.returncode == 0, result.stderr
    replaced = [name for name in listing(data) if name.startswith(f"{FILE}.replaced-")]
    # The replaced file with its write-ahead log, under one new name.
    assert len(replaced) == 2 and f"{replaced[0]}.wal" == replaced[1], listing(data)
    assert sha256(data / replaced[0]) == current_sha
    assert f"kept as {data / replaced[0]}" in result.stdout
    assert f"{FILE}.wal" not in listing(data)

    third = NodeProcess(data).start()
    try:
        with third.client() as client:
            assert client.get("/v1/docs/kept").json()["content"] == {"m": {"v": 1}}
            assert client.get("/v1/docs/later").status_code == 404
    finally:
        third.close()


def test_a_format_1_backup_is_upgraded_when_restored(tmp_path: Path) -> None:
    backup = tmp_path / "old.duckdb"
    _write_format_1(
        backup,
        _text_updates(["alpha ", "beta ", "gamma"]),
        _text_updates(["milk", " eggs"], client_id=9),
    )
    result = run_meridian("restore", "--from", str(backup), "--data", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    assert "2 documents, 2 tombstones" in result.stdout
    con = duckdb.connect(str(tmp_path / "d" / FILE), read_only=True)
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    con.close()
    assert meta["format_version"] == str(FORMAT_VERSION) and len(meta["storage_id"]) == 32
    node = NodeProcess(tmp_path / "d").start()
    try:
        with node.client() as client:
            assert client.get("/v1/docs/notes").json()["content"] == {"body": "alpha beta gamma"}
    finally:
        node.close()


def test_backup_and_restore_refuse_a_running_node(tmp_path: Path, node: NodeProcess) -> None:
    data = node.data_dir
    node.start()
    with node.client() as client:
        write(client, "d", 1)
    assert node.process is not None
    pid = node.process.pid
    out = tmp_path / "b.duckdb"
    result = run_meridian("backup", "--data", str(data), "--out", str(out))
    assert result.returncode == 1
    assert f"is in use by another Meridian process (pid {pid})" in result.stderr
    assert not out.exists() and listing(tmp_path) == ["eu-west-1"]

    # A good backup, from another (stopped) node's directory.
    other = NodeProcess(tmp_path / "other").start()
    with other.client() as client:
        write(client, "other", 1)
    assert other.terminate() == 0
    assert run_meridian("backup", "--data", str(other.data_dir), "--out", str(out)).returncode == 0
    files = listing(data)
    result = run_meridian("restore", "--from", str(out), "--data", str(data))
    assert result.returncode == 1
    assert f"is in use by another Meridian process (pid {pid})" in result.stderr
    assert listing(data) == files
    with node.client() as client:  # still serving its own data
        assert client.get("/v1/docs/d").status_code == 200
        assert client.get("/v1/docs/other").status_code == 404


def test_bad_input_is_refused_and_changes_nothing(
    tmp_path: Path, node: NodeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    data = node.data_dir
    node.start()
    with node.client() as client:
        write(client, "d", 1)
    assert node.terminate() == 0
    files = listing(data)
    file_sha = sha256(data / FILE)
    good = tmp_path / "good.duckdb"
    assert run_meridian("backup", "--data", str(data), "--out", str(good)).returncode == 0
    good_sha = sha256(good)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        """The command in this process (quicker for a run of refusals)."""
        capsys.readouterr()
        status = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), status, out, err)

    # backup: an existing output, a missing directory, a directory without a storage file.
    result = run("backup", "--data", str(data), "--out", str(good))
    assert result.returncode == 1 and "already exists" in result.stderr
    assert sha256(good) == good_sha
    missing = tmp_path / "missing"
    result = run("backup", "--data", str(missing), "--out", str(tmp_path / "x.duckdb"))
    assert result.returncode == 1 and "holds no Meridian storage file" in result.stderr
    assert not missing.exists() and not (tmp_path / "x.duckdb").exists()
    result = run("backup", "--data", str(data), "--out", str(missing / "x.duckdb"))
    assert result.returncode == 1 and f"directory {missing} does not exist" in result.stderr

    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"not a database at all" * 100)
    empty = tmp_path / "empty.duckdb"
    empty.write_bytes(b"")
    foreign = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.close()
    newer = tmp_path / "newer.duckdb"
    shutil.copyfile(good, newer)
    con = duckdb.connect(str(newer))
    con.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", [FORMAT_VERSION + 1])
    con.close()
    refusals = {
        tmp_path / "nowhere.duckdb": "backup {} does not exist",
        junk: "{} is not a DuckDB database file",
        empty: "{} is not a DuckDB database file",
        foreign: "{} is a DuckDB database but not a Meridian storage file",
        newer: f"{{}} uses storage format {FORMAT_VERSION + 1}, written by a newer Meridian",
    }
    for source, message in refusals.items():
        for target in (data, tmp_path / "new-node"):
            result = run("restore", "--from", str(source), "--data", str(target))
            assert result.returncode == 1, (source, result.stdout)
            assert message.format(source) in result.stderr, result.stderr
            assert result.stderr.count("\n") == 1  # one line, no traceback
        assert listing(data) == files and sha256(data / FILE) == file_sha
        assert not (tmp_path / "new-node").exists()
    result = run("restore", "--from", str(data / FILE), "--data", str(data))
    assert result.returncode == 1 and "is the storage file of" in result.stderr

    # A data directory whose file is not a storage file cannot be backed up either.
    (tmp_path / "broken").mkdir()
    shutil.copyfile(foreign, tmp_path / "broken" / FILE)
    result = run("backup", "--data", str(tmp_path / "broken"), "--out", str(tmp_path / "y"))
    assert result.returncode == 1 and "not a Meridian storage file" in result.stderr
    assert not (tmp_path / "y").exists()
    assert [name for name in listing(tmp_path) if name.startswith(".")] == []


# -- clusters ---------------------------------------------------------------------------------

A, B = "eu-west-1", "us-east-1"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, {"us-east": 1, "eu-west": 1}, latency_ms=2).start()
    try:
        cluster.wait_links_up()
        yield cluster
    finally:
        cluster.close()


def ae_rounds(cluster: Cluster, node: str) -> int:
    """Anti-entropy rounds ``node`` has run with its one peer (across links)."""
    rounds: int = cluster.cluster_view(node)["peers"][0]["anti_entropy"]["rounds"]
    return rounds


def wait_ae_rounds(cluster: Cluster, node: str, more: int) -> None:
    """Waits until ``node`` finished ``more`` further anti-entropy rounds with its peer."""
    target = ae_rounds(cluster, node) + more
    wait_for(
        lambda: ae_rounds(cluster, node) >= target,
        timeout=30,
        what=f"{more} anti-entropy rounds of {node}",
    )


def restart(cluster: Cluster, node: str) -> None:
    process = cluster[node].process
    assert process is not None and process.terminate() == 0
    cluster.start_node(node)


def restore_scenario(cluster: Cluster, tmp_path: Path, restore_how: str) -> list[str]:
    """Backs node A up, lets it write more, restores the backup (``restore_how``: with
    ``meridian restore`` or by copying the file back), then has A write while its link to B
    is cut, and restarts A so that no outbox holds those writes any more: only anti-entropy
    can carry them to B. Returns the ids written on A after the restore."""
    data = tmp_path / A
    with cluster[A].client() as client:
        for i in range(5):
            write(client, f"before-{i}", i)
    cluster.wait_converged()
    process = cluster[A].process
    assert process is not None and process.terminate() == 0
    backup = tmp_path / "a.duckdb"
    result = run_meridian("backup", "--data", str(data), "--out", str(backup))
    assert result.returncode == 0, result.stderr

    cluster.start_node(A)
    cluster.wait_links_up()
    with cluster[A].client() as client:
        for i in range(10):
            write(client, f"after-backup-{i}", i)
    with cluster[B].client() as client:
        write(client, "from-b", "b")
    cluster.wait_converged()
    # B's checkpoint of A's feed now covers every seq A assigned since the backup.
    wait_ae_rounds(cluster, B, 2)
    process = cluster[A].process
    assert process is not None and process.terminate() == 0

    if restore_how == "meridian restore":
        result = run_meridian("restore", "--from", str(backup), "--data", str(data))
        assert result.returncode == 0, result.stderr
    else:
        shutil.copyfile(backup, data / FILE)
        assert not (data / f"{FILE}.wal").exists()

    cluster.wan.do(lambda: cluster.wan.wan.cut("us-east", "eu-west"))
    cluster.start_node(A)
    written = [f"after-restore-{i}" for i in range(3)]
    with cluster[A].client() as client:
        for i, doc_id in enumerate(written):
            write(client, doc_id, i)
    restart(cluster, A)
    cluster.wan.do(cluster.wan.wan.heal)
    cluster.wait_links_up()
    return written


def test_a_restored_copy_under_its_old_storage_id_loses_writes(
    pair: Cluster, tmp_path: Path
) -> None:
    """The danger ``meridian restore`` exists for: a plain copy keeps its storage id, its seqs
    go back, and B's checkpoint of A's feed is ahead of the seqs A assigns after the restore."""
    written = restore_scenario(pair, tmp_path, "plain copy")
    with pair[A].client() as client:
        # A pulls back from B what it lost (its own checkpoint of B's feed is older)...
        wait_for(
            lambda: client.get("/v1/docs/after-backup-9").status_code == 200,
            timeout=30,
            what="A to get its lost writes back from B",
        )
    # ...but B's anti-entropy never lists A's new documents: their seqs are below B's
    # checkpoint of A's (unchanged) storage id.
    wait_ae_rounds(pair, B, 3)
    with pair[B].client() as client:
        assert [client.get(f"/v1/docs/{d}").status_code for d in written] == [404] * 3


def test_meridian_restore_in_a_cluster_loses_no_acknowledged_write(
    pair: Cluster, tmp_path: Path
) -> None:
    written = restore_scenario(pair, tmp_path, "meridian restore")
    snapshot = pair.wait_converged()
    expected = {
        *(f"before-{i}" for i in range(5)),
        *(f"after-backup-{i}" for i in range(10)),
        "from-b",
        *written,
    }
    assert set(snapshot) == expected
    with pair[A].client() as a, pair[B].client() as b:
        ids = sorted(expected)
        assert digests(a, ids) == digests(b, ids)
        assert a.get("/v1/docs/after-restore-2").json()["content"] == {"m": {"v": 2}}


def test_a_failed_node_replaced_with_an_empty_one_catches_up(pair: Cluster, tmp_path: Path) -> None:
    data = tmp_path / A
    with pair[A].client() as client:
        for i in range(10):
            write(client, f"a-{i}", i)
        write(client, "doomed", 0)
        assert client.delete("/v1/docs/doomed").status_code == 200
    with pair[B].client() as client:
        write(client, "b-0", 0)
    pair.wait_converged()
    pair.kill(A)
    lost_id = storage_id(data)
    shutil.rmtree(data)  # the disk is gone
    with pair[B].client() as client:
        write(client, "b-1", 1)  # while A is down
    pair.start_node(A)
    snapshot = pair.wait_converged()
    assert set(snapshot) == {*(f"a-{i}" for i in range(10)), "b-0", "b-1"}
    with pair[A].client() as client:
        # The tombstone came back too: A knows the document was deleted.
        answer = client.get("/v1/docs/doomed")
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "document_deleted"
    process = pair[A].process
    assert process is not None and process.terminate() == 0
    assert storage_id(data) != lost_id


def test_a_node_added_by_a_rolling_restart_gets_everything(tmp_path: Path) -> None:
    """regions.toml gains eu-west-2; until each old node restarts with it, the new node is
    unknown to that node (refused), and nothing replicates between those two."""
    cluster = Cluster(tmp_path, {"us-east": 1, "eu-west": 2}, latency_ms=2)
    full = cluster.config.read_text()
    new_address = f', "127.0.0.1:{cluster["eu-west-2"].port}"'
    assert new_address in full
    cluster.config.write_text(full.replace(new_address, ""))
    try:
        cluster.start(skip=("eu-west-2",))
        cluster.wait_links_up()
        with cluster["eu-west-1"].client() as client:
            write(client, "old-eu", 1)
        with cluster[B].client() as client:
            write(client, "old-us", 1)

        cluster.config.write_text(full)
        cluster.start_node("eu-west-2")
        with cluster["eu-west-2"].client() as client:
            write(client, "new-node", 1)  # always writable, linked or not

        def refused_by_b() -> bool:
            peers = {p["node"]: p for p in cluster.cluster_view("eu-west-2")["peers"]}
            theirs = peers[B]
            return theirs["state"] == "refused" and "unknown_node" in theirs["last_error"]

        wait_for(refused_by_b, timeout=30, what=f"{B} to refuse the unknown eu-west-2")
        peers = {p["node"]: p for p in cluster.cluster_view("eu-west-2")["peers"]}
        assert peers["eu-west-1"]["state"] != "up"  # eu-west-1 dials, and knows no eu-west-2
        with cluster[B].client() as client:
            assert client.get("/v1/docs/new-node").status_code == 404

        for node in ("eu-west-1", B):  # one at a time
            restart(cluster, node)
        cluster.wait_links_up()
        snapshot = cluster.wait_converged()
        assert set(snapshot) == {"old-eu", "old-us", "new-node"}
    finally:
        cluster.close()
