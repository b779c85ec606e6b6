"""Crash durability: "an acknowledgement means durable".

A real ``meridian serve`` process takes writes from many concurrent clients, JSON ``append``
operations and binary Yjs updates built with pycrdt, each adding one unique element to the
``items`` array of one of a few documents, and is killed with SIGKILL at a random moment while
writes are in flight. It is restarted on the same data directory, over and over, and after each
restart every element whose write was acknowledged (HTTP 200) so far must be there exactly once.
A write whose answer never came (the connection broke) may be there or not, never twice; once
seen after a restart it must stay, once found missing it must never come back. The documents
must load, and the JSON view must agree with the binary state. Compaction runs after every few
writes, so kills also land while it is due or running.

Set MERIDIAN_CRASH_SEED to replay a seed (every failure prints it). The slow variant runs
MERIDIAN_CRASH_ROUNDS rounds (default 50); select it with ``-m slow``.
"""

from __future__ import annotations

import collections
import itertools
import os
import random
import shutil
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import duckdb
import httpx
import pycrdt
import pytest

from .support import REPO, TIMEOUT_FACTOR, NodeProcess, deadline, wait_for

DOCS = ("crash-a", "crash-b", "crash-c", "crash-d")
COMPACT_AFTER = 8
# Every [limits] and [storage] key is given: app.config takes a missing key's default from
# the slotted dataclass, which yields a member descriptor instead of the value.
CONFIG = f"""\
[limits]
max_body_bytes = 4194304
max_document_bytes = 16777216
max_operations = 1000
max_list_limit = 1000

[storage]
max_hot_documents = 10000
max_hot_bytes = 268435456
compact_after_updates = {COMPACT_AFTER}
max_batch = 1024
duckdb_memory_limit = "256MB"
"""
OCTET_STREAM = "application/octet-stream"


def _seed() -> int:
    given = os.environ.get("MERIDIAN_CRASH_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


# -- what was written and what became of it ------------------------------------------------


class Ledger:
    """Every element sent, by the fate of its write; shared by the writer threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.doc_of: dict[str, str] = {}
        self.inflight: set[str] = set()
        #: Answered 200: must be present exactly once after every restart.
        self.acked: set[str] = set()
        #: No answer (connection error), not yet looked for after a restart.
        self.unknown: set[str] = set()
        #: Unknown, then found after a restart: committed, so it must stay.
        self.survived: set[str] = set()
        #: Unknown, then absent after a restart: lost, so it must never come back.
        self.lost: set[str] = set()
        #: Anything but a 200 or a broken connection; every one fails the test.
        self.unexpected: list[str] = []
        self.round_acks = 0

    def sent(self, element: str, doc_id: str) -> None:
        with self.lock:
            self.doc_of[element] = doc_id
            self.inflight.add(element)

    def answered(self, element: str, response: httpx.Response) -> None:
        with self.lock:
            self.inflight.discard(element)
            if response.status_code == 200:
                self.acked.add(element)
                self.round_acks += 1
            else:
                self.unknown.add(element)
                self.unexpected.append(
                    f"write of {element}: HTTP {response.status_code} {response.text[:300]}"
                )

    def problem(self, message: str) -> None:
        with self.lock:
            self.unexpected.append(message)

    def settle(self) -> int:
        """The writers stopped: writes still without an answer are unknown."""
        with self.lock:
            count = len(self.inflight)
            self.unknown |= self.inflight
            self.inflight.clear()
            return count

    def check(self, client: httpx.Client) -> tuple[list[str], int, int]:
        """Compares every document with the ledger and resolves the unknown writes.
        Returns (problems, unknown found present, unknown found absent)."""
        problems: list[str] = []
        found = missing_unknown = 0
        with self.lock:
            for doc_id in DOCS:
                items = self._items(client, doc_id, problems)
                if items is None:
                    continue
                counts = collections.Counter(items)
                mine = {e for e, d in self.doc_of.items() if d == doc_id}
                must = mine & (self.acked | self.survived)
                maybe = mine & self.unknown
                duplicated = sorted(e for e, n in counts.items() if n > 1)
                absent = sorted(must - counts.keys())
                foreign = sorted(e for e in counts if self.doc_of.get(e) != doc_id)
                back = sorted(self.lost & counts.keys())
                for label, elements in (
                    ("acknowledged but missing", absent),
                    ("duplicated", duplicated),
                    ("never written to this document", foreign),
                    ("lost after an earlier restart, now back", back),
                ):
                    if elements:
                        problems.append(
                            f"{doc_id}: {len(elements)} element(s) {label}: {elements[:10]}"
                        )
                present = maybe & counts.keys()
                found += len(present)
                missing_unknown += len(maybe) - len(present)
                self.survived |= present
                self.lost |= maybe - present
                self.unknown -= maybe
            listed = client.get("/v1/docs", params={"prefix": "crash-"})
            if listed.status_code != 200:
                problems.append(f"GET /v1/docs: HTTP {listed.status_code} {listed.text[:300]}")
            cluster = client.get("/v1/cluster")
            if cluster.status_code != 200:
                problems.append(f"GET /v1/cluster: HTTP {cluster.status_code} {cluster.text[:300]}")
        return problems, found, missing_unknown

    def _items(self, client: httpx.Client, doc_id: str, problems: list[str]) -> list[str] | None:
        """The ``items`` of a document through the JSON view, checked against its binary
        state; [] when it does not exist; None (and a problem) when it cannot be read."""
        response = client.get(f"/v1/docs/{doc_id}")
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            problems.append(
                f"GET /v1/docs/{doc_id}: HTTP {response.status_code} {response.text[:300]}"
            )
            return None
        content = response.json()["content"]
        if set(content) - {"items"}:
            problems.append(f"{doc_id}: unexpected roots {sorted(content)}")
        items = content.get("items") or []
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            problems.append(f"{doc_id}: items is not a list of strings: {str(items)[:300]}")
            return None
        binary = client.get(f"/v1/docs/{doc_id}/update")
        if binary.status_code != 200:
            problems.append(f"GET /v1/docs/{doc_id}/update: HTTP {binary.status_code}")
            return items
        copy: pycrdt.Doc[object] = pycrdt.Doc()
        copy.apply_update(binary.content)
        from_binary = [str(item) for item in copy.get("items", type=pycrdt.Array)]
        if from_binary != items:
            problems.append(
                f"{doc_id}: the binary state ({len(from_binary)} items) disagrees with the "
                f"JSON view ({len(items)} items)"
            )
        return items


# -- the DuckDB file a kill left behind ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrashImage:
    """A copy of the files as the kill left them, opened in this process."""

    log_rows: dict[str, int]
    snapshots: int
    wal_bytes: int
    error: str | None

    @property
    def compaction_due(self) -> bool:
        """A document had at least COMPACT_AFTER log rows: a compaction was queued or running
        (or about to be) when the process died."""
        return any(rows >= COMPACT_AFTER for rows in self.log_rows.values())


def inspect_crash_image(data_dir: Path, scratch: Path) -> CrashImage:
    scratch.mkdir()
    try:
        for path in data_dir.glob("meridian.duckdb*"):
            shutil.copy2(path, scratch / path.name)
        wal = data_dir / "meridian.duckdb.wal"
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        try:
            con = duckdb.connect(str(scratch / "meridian.duckdb"))
        except duckdb.Error as exc:
            return CrashImage({}, 0, wal_bytes, f"{type(exc).__name__}: {exc}")
        try:
            rows = con.execute(
                "SELECT u.doc_id, count(*) FROM updates u JOIN documents d "
                "ON d.id = u.doc_id AND d.incarnation = u.incarnation GROUP BY u.doc_id"
            ).fetchall()
            snapshot_row = con.execute("SELECT count(*) FROM snapshots").fetchone()
            snapshots = int(snapshot_row[0]) if snapshot_row else 0
        except duckdb.Error as exc:
            return CrashImage({}, 0, wal_bytes, f"{type(exc).__name__}: {exc}")
        finally:
            con.close()
        return CrashImage({str(d): int(n) for d, n in rows}, snapshots, wal_bytes, None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- a node under a stream of writes -------------------------------------------------------


@dataclass(slots=True)
class RoundStats:
    round: int
    acked: int
    unknown: int
    unknown_present: int
    unknown_absent: int
    compaction_due: bool
    snapshots: int
    wal_bytes: int
    delay: float


class CrashRun:
    """One data directory, its current node process, the writers and the ledger."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        seed: int,
        clients: int,
        max_delay: float,
        binary_share: float = 0.3,
    ) -> None:
        self.seed = seed
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "eu-west-1"
        self.config = tmp_path / "regions.toml"
        self.config.write_text(CONFIG, encoding="utf-8")
        self.rng = random.Random(seed)
        self.clients = clients
        self.max_delay = max_delay
        self.binary_share = binary_share
        self.ledger = Ledger()
        self.node: NodeProcess | None = None
        self.stats: list[RoundStats] = []
        self._client_ids = itertools.count(self.rng.randrange(2**20, 2**31))
        self._client_ids_lock = threading.Lock()

    # -- node ------------------------------------------------------------------------

    def fail(self, message: str) -> NoReturn:
        output = "".join(self.node.output[-40:]) if self.node is not None else ""
        raise AssertionError(
            f"{message}\n[seed {self.seed}: rerun with MERIDIAN_CRASH_SEED={self.seed}; "
            f"data directory {self.data_dir}]\n--- node output (last lines) ---\n{output}"
        )

    def start_node(self) -> NodeProcess:
        node = NodeProcess(self.data_dir, config=self.config)
        self.node = node
        try:
            node.start()
        except AssertionError as exc:
            self.fail(f"the node did not start on the data directory: {exc}")
        return node

    def verify(self, where: str) -> tuple[int, int]:
        assert self.node is not None
        with self.node.client() as client:
            problems, found, absent = self.ledger.check(client)
        if self.ledger.unexpected:
            problems += self.ledger.unexpected[:20]
        if problems:
            self.fail(f"{where}: " + "\n".join(problems))
        return found, absent

    def close(self) -> None:
        if self.node is not None:
            self.node.close()

    # -- writers ---------------------------------------------------------------------

    def _client_id(self) -> int:
        with self._client_ids_lock:
            return next(self._client_ids)

    def _binary_update(self, client: httpx.Client, doc_id: str, element: str) -> bytes | None:
        """A client's update appending ``element``, built on the state it fetched."""
        response = client.get(f"/v1/docs/{doc_id}/update")
        ydoc: pycrdt.Doc[object] = pycrdt.Doc(client_id=self._client_id())
        if response.status_code == 200:
            ydoc.apply_update(response.content)
        elif response.status_code != 404:
            self.ledger.problem(f"GET /v1/docs/{doc_id}/update: HTTP {response.status_code}")
            return None
        items = ydoc.get("items", type=pycrdt.Array)
        before = ydoc.get_state()
        items.append(element)
        return bytes(ydoc.get_update(before))

    def _writer(self, url: str, round_no: int, index: int, stop: threading.Event) -> None:
        rng = random.Random(f"{self.seed}-{round_no}-{index}")
        try:
            with httpx.Client(base_url=url, timeout=30 * TIMEOUT_FACTOR) as client:
                for n in itertools.count():
                    if stop.is_set():
                        return
                    doc_id = rng.choice(DOCS)
                    element = f"w-{round_no}-{index}-{n}"
                    if rng.random() < self.binary_share:
                        body = self._binary_update(client, doc_id, element)
                        if body is None:
                            continue
                        self.ledger.sent(element, doc_id)
                        response = client.post(
                            f"/v1/docs/{doc_id}/update",
                            content=body,
                            headers={"content-type": OCTET_STREAM},
                        )
                    else:
                        self.ledger.sent(element, doc_id)
                        response = client.patch(
                            f"/v1/docs/{doc_id}",
                            json={
                                "ops": [{"op": "append", "path": ["items"], "values": [element]}]
                            },
                        )
                    self.ledger.answered(element, response)
        except httpx.TransportError:
            return  # the node is gone: what was in flight stays unknown
        except Exception:
            self.ledger.problem(f"writer {index} crashed:\n{traceback.format_exc()}")

    def writes_then(
        self, round_no: int, action: Callable[[NodeProcess], None]
    ) -> tuple[int, float]:
        """Runs the writers against the node, then ``action`` at a random moment after the
        first acknowledgement; returns (writes left without an answer, the delay used)."""
        node = self.node
        assert node is not None
        stop = threading.Event()
        with self.ledger.lock:
            self.ledger.round_acks = 0
        threads = [
            threading.Thread(target=self._writer, args=(node.url, round_no, i, stop), daemon=True)
            for i in range(self.clients)
        ]
        for thread in threads:
            thread.start()
        delay = self.rng.uniform(0.0, self.max_delay)
        try:
            wait_for(
                lambda: (
                    self.ledger.round_acks > 0
                    or self.ledger.unexpected
                    or not any(t.is_alive() for t in threads)
                ),
                timeout=30,
                what="a first acknowledged write",
            )
            if self.ledger.round_acks == 0:
                self.fail(
                    f"round {round_no}: no write was acknowledged: {self.ledger.unexpected[:5]}"
                )
            time.sleep(delay)  # the random moment of the kill (not a synchronisation)
            action(node)
        finally:
            stop.set()
            end = deadline(30)
            for thread in threads:
                thread.join(timeout=max(0.0, end - time.monotonic()))
        if any(t.is_alive() for t in threads):
            self.fail(f"round {round_no}: writer threads did not stop")
        return self.ledger.settle(), delay

    # -- rounds ----------------------------------------------------------------------

    def crash_round(self, round_no: int) -> RoundStats:
        acked_before = len(self.ledger.acked)
        unknown, delay = self.writes_then(round_no, lambda node: node.kill())
        image = inspect_crash_image(self.data_dir, self.tmp_path / f"image-{round_no}")
        self.start_node()
        found, absent = self.verify(f"after kill {round_no}")
        if image.error is not None:
            self.fail(f"round {round_no}: the crash image would not open here: {image.error}")
        stats = RoundStats(
            round_no,
            len(self.ledger.acked) - acked_before,
            unknown,
            found,
            absent,
            image.compaction_due,
            image.snapshots,
            image.wal_bytes,
            delay,
        )
        self.stats.append(stats)
        return stats

    def summary(self, elapsed: float) -> str:
        kills = len(self.stats)
        due = sum(s.compaction_due for s in self.stats)
        return (
            f"seed {self.seed}: {kills} SIGKILL rounds in {elapsed:.1f}s; "
            f"{len(self.ledger.acked)} acknowledged writes checked after every restart; "
            f"{sum(s.unknown for s in self.stats)} writes in flight at the kills "
            f"({len(self.ledger.survived)} committed, {len(self.ledger.lost)} lost); "
            f"{due}/{kills} kills with a compaction due or running; "
            f"snapshots in the last image {self.stats[-1].snapshots if self.stats else 0}; "
            f"largest WAL at a kill {max((s.wal_bytes for s in self.stats), default=0)} bytes"
        )


def run_crash_rounds(tmp_path: Path, *, rounds: int, clients: int, max_delay: float) -> CrashRun:
    run = CrashRun(tmp_path, seed=_seed(), clients=clients, max_delay=max_delay)
    started = time.monotonic()
    try:
        run.start_node()
        for round_no in range(1, rounds + 1):
            stats = run.crash_round(round_no)
            print(
                f"round {stats.round}: +{stats.acked} acked, {stats.unknown} in flight "
                f"({stats.unknown_present} committed), compaction due: {stats.compaction_due}, "
                f"kill after {stats.delay:.2f}s"
            )
        # Recovery followed by a clean stop (which checkpoints) keeps everything too.
        assert run.node is not None
        status = run.node.terminate()
        if status != 0:
            run.fail(f"SIGTERM after {rounds} crash rounds: exit status {status}")
        run.start_node()
        run.verify("after a graceful restart following the crash rounds")
        if not any(s.snapshots for s in run.stats):
            run.fail("no compaction ever happened: the test does not exercise it")
        assert run.node is not None
        status = run.node.terminate()
        if status != 0:
            run.fail(f"final SIGTERM: exit status {status}")
    finally:
        run.close()
    print(run.summary(time.monotonic() - started))
    return run


# -- tests ---------------------------------------------------------------------------------


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    run = run_crash_rounds(tmp_path, rounds=3, clients=8, max_delay=0.8)
    assert run.ledger.acked


@pytest.mark.slow
def test_acknowledged_writes_survive_many_sigkills(tmp_path: Path) -> None:
    """Deselected by default (pyproject: -m 'not slow'); run with ``pytest -m slow``."""
    rounds = int(os.environ.get("MERIDIAN_CRASH_ROUNDS", "50"))
    run = run_crash_rounds(tmp_path, rounds=rounds, clients=12, max_delay=1.5)
    assert len(run.stats) == rounds


def test_sigterm_during_writes_exits_zero_and_keeps_acknowledged_writes(tmp_path: Path) -> None:
    run = CrashRun(tmp_path, seed=_seed(), clients=8, max_delay=0.6)
    try:
        for round_no in (1, 2):
            run.start_node()
            statuses: list[int] = []
            unknown, _ = run.writes_then(
                round_no, lambda node, out=statuses: out.append(node.terminate())
            )
            if statuses != [0]:
                run.fail(f"SIGTERM {round_no} during writes: exit status {statuses}")
            assert run.node is not None
            if not any("stopped" in line for line in run.node.output):
                run.fail(f"SIGTERM {round_no}: the node did not report a clean stop")
            run.start_node()
            run.verify(f"after SIGTERM {round_no} ({unknown} writes without an answer)")
            assert run.node is not None
            assert run.node.terminate() == 0
    finally:
        run.close()
    assert run.ledger.acked


def test_second_node_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    run = CrashRun(tmp_path, seed=_seed(), clients=4, max_delay=0.0)
    first = run.start_node()
    try:
        assert first.process is not None
        second: list[subprocess.CompletedProcess[str]] = []

        def start_second(_: NodeProcess) -> None:
            # While the writers keep writing to the first node.
            command = NodeProcess(run.data_dir, config=run.config).command()
            second.append(
                subprocess.run(
                    command,
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=60 * TIMEOUT_FACTOR,
                    check=False,
                )
            )

        run.writes_then(1, start_second)
        result = second[0]
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"a second node started on the same directory:\n{output}"
        assert "in use" in output and str(run.data_dir) in output, output
        assert str(first.process.pid) in output, output
        # The first node kept serving: it still answers, writes and reads.
        assert first.process.poll() is None
        run.verify("the first node, after the second was refused")
        with first.client() as client:
            response = client.patch(
                f"/v1/docs/{DOCS[0]}",
                json={"ops": [{"op": "append", "path": ["items"], "values": ["after-second"]}]},
            )
            assert response.status_code == 200, response.text
            assert "after-second" in client.get(f"/v1/docs/{DOCS[0]}").json()["content"]["items"]
        lock = (run.data_dir / "meridian.lock").read_text(encoding="utf-8").strip()
        assert lock == str(first.process.pid)
        # And what it acknowledged survives its own crash.
        run.ledger.sent("after-second", DOCS[0])
        run.ledger.answered("after-second", response)
        first.kill()
        run.start_node()
        run.verify("after killing the first node")
        assert run.node is not None
        assert run.node.terminate() == 0
    finally:
        run.close()


def test_second_node_refusal_is_one_line_with_status_1(tmp_path: Path) -> None:
    """What app/cli.py documents for a data directory in use: one line, status 1 (uvicorn's
    startup exits with status 3 and a logged traceback unless the CLI catches it)."""
    first = NodeProcess(tmp_path / "eu-west-1").start()
    try:
        result = subprocess.run(
            NodeProcess(tmp_path / "eu-west-1").command(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60 * TIMEOUT_FACTOR,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert "meridian: error: data directory" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        first.close()
