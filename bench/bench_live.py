"""Live-client benchmark: Meridian's ``WS /v1/sync/{id}`` against pycrdt-websocket.

Run from the repository root with the project's virtualenv (see bench/README.md)::

    .venv/bin/python bench/bench_live.py            # full run, 3 runs per figure
    .venv/bin/python bench/bench_live.py --quick    # smoke run, small sizes

Both servers run in the same run, on the same machine, against the same load generator:

- Meridian: one standalone node, ``python -m app serve --region eu-west`` on a loopback port
  with a generated ``regions.toml`` that lists no regions (it replicates with nobody), a fresh
  data directory per measurement. Every update is committed to DuckDB before it is broadcast.
- pycrdt-websocket: ``ASGIServer(WebsocketServer(...))`` under uvicorn
  (bench/pycrdt_websocket_server.py), one YRoom per document backed by pycrdt-store's
  SQLiteYStore. It broadcasts an update first and stores it afterwards, in the background.

The load generator is a set of processes (this script with ``--worker``), separate from the
servers: asyncio clients of the ``websockets`` library speaking the y-websocket protocol byte
by byte (sync step 1 / step 2 / update frames; no awareness). This process drives them over
their stdin/stdout (one JSON object per line) and itself runs the fan-out writer.

Measured, each the median of ``--runs`` runs, for each server:

1. fan-out: 1,000 subscribers of one document, connected and synced first; one writer sends
   200 small updates paced at 20/s; the delay from sending each update to its arrival at each
   subscriber (updates are told apart by a counter in their text), p50 and p99;
2. durable throughput: 8 writers, one document each, each with an observer connection to the
   same document; a writer keeps at most ``--window`` updates that its observer has not
   received yet; for 10 s. Committed updates/s: Meridian broadcasts an update once committed,
   so its observers count commits (checked afterwards through ``GET /v1/docs/{id}``);
   pycrdt-websocket's are the rows in its SQLite store (their timestamps give the rate);
3. idle connections: 10,000 connections to 100 documents held for 35 s: how many stay open,
   how many go more than 30 s without a message (a y-websocket client reconnects then), and
   the server's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import bench_single_node as single  # noqa: E402  (this directory)
import pycrdt  # noqa: E402
from progress import Progress  # noqa: E402  (this directory)
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

HOST = single.HOST
clock = time.monotonic  # CLOCK_MONOTONIC: the same clock in every process of the machine
#: Progress on stderr (which section, run and server, how long each took); results: stdout.
progress = Progress("live")
log = progress.log

MERIDIAN = "Meridian"
PYCRDT = "pycrdt-websocket"
SERVERS = (MERIDIAN, PYCRDT)
SECTIONS = ("fanout", "throughput", "idle")
ROOT = "body"  # the Y.Text every benchmark update types into
#: y-websocket clients reconnect after this long without a message (messageReconnectTimeout).
CLIENT_SILENCE_LIMIT = 30.0


# -- sizes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    subscribers: int  # fan-out: subscribers of the one document
    fanout_updates: int  # updates the writer sends
    fanout_rate: float  # ... per second
    writers: int  # throughput: writers, one document each
    throughput_seconds: float  # how long the writers send
    window: int  # updates a writer may have sent that its observer has not received
    drain_seconds: float  # how long a store may take afterwards to hold what was sent
    idle_connections: int
    idle_documents: int
    idle_hold_seconds: float  # longer than CLIENT_SILENCE_LIMIT
    full: bool  # the targets apply to the full sizes only


FULL = Sizes(1000, 200, 20.0, 8, 10.0, 128, 30.0, 10_000, 100, 35.0, True)
QUICK = Sizes(200, 40, 20.0, 8, 3.0, 128, 10.0, 1000, 20, 20.0, False)


# -- the y-websocket protocol, by hand ---------------------------------------------------------


def var_uint(value: int) -> bytes:
    """lib0's variable-length unsigned integer: 7 bits a byte, low bits first."""
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def sync_frame(sub_type: int, payload: bytes) -> bytes:
    """A y-websocket sync message (type 0): step 1 (0), step 2 (1) or update (2)."""
    return b"\x00" + var_uint(sub_type) + var_uint(len(payload)) + payload


STEP1_EMPTY = sync_frame(0, b"\x00")  # "I have nothing": a state vector of zero clients
STEP2_EMPTY = sync_frame(1, b"\x00\x00")  # an update with no structs and no deletions
SERVER_STEP1 = b"\x00\x00"  # frame prefixes
SERVER_STEP2 = b"\x00\x01"
UPDATE = b"\x00\x02"
FANOUT_MARKER = re.compile(rb"#(\d{5});")


def typing_updates(client_id: int, tokens: Sequence[str]) -> list[bytes]:
    """Yjs v1 updates of one client typing ``tokens`` (ASCII) one after the other at the end
    of the Y.Text ``body``, one update per token. pycrdt makes the first; the others are
    encoded here (one string item whose left origin is the client's previous character),
    because pycrdt takes ~130 µs per update and the throughput run needs ~10^5 of them.
    :func:`check_typing_updates` compares the two encodings."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    first: list[bytes] = []
    doc.observe(lambda event: first.append(bytes(event.update)))
    doc.get(ROOT, type=pycrdt.Text).insert(0, tokens[0])
    updates = [first[0]]
    client = var_uint(client_id)
    clock_ = len(tokens[0])  # one clock tick per character (UTF-16 unit)
    for token in tokens[1:]:
        data = token.encode("ascii")
        updates.append(
            b"\x01\x01" + client + var_uint(clock_)  # one client, one struct, its first clock
            + b"\x84" + client + var_uint(clock_ - 1)  # string content, left origin
            + var_uint(len(data)) + data
            + b"\x00"  # no deletions
        )  # fmt: skip
        clock_ += len(data)
    return updates


def check_typing_updates() -> None:
    """Raises if the hand-encoded updates differ from pycrdt's own."""
    tokens = [f"#{i:05d};" for i in range(300)] + [f"#{i:x};" for i in range(300)]
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=424242)
    expected: list[bytes] = []
    doc.observe(lambda event: expected.append(bytes(event.update)))
    text = doc.get(ROOT, type=pycrdt.Text)
    for token in tokens:
        text.insert(len(text), token)
    if typing_updates(424242, tokens) != expected:
        raise RuntimeError("hand-encoded Yjs updates differ from pycrdt's")


def fanout_tokens(count: int) -> list[str]:
    return [f"#{i:05d};" for i in range(count)]


def throughput_tokens(count: int) -> list[str]:
    return [f"{i:x};" for i in range(count)]


def count_tokens(text: str) -> int:
    return text.count(";")


# -- processes ---------------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Raises this process's soft limit on open files to the hard limit (children inherit
    it); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds(pid: int) -> float:
    return single._cpu_seconds(f"/proc/{pid}/stat")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class CpuWatch:
    """Shares of a core used between :meth:`start` and :meth:`stop` by named processes and by
    the whole machine (all cores; "rest" is what none of the named processes used: other
    programs, the kernel's share of loopback traffic)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before: dict[str, float] = {}
        self._started = 0.0
        #: Seconds between the last start() and stop().
        self.seconds = 0.0

    def _read(self) -> dict[str, float]:
        values = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        values["machine"] = single._machine_busy_seconds()
        return values

    def start(self) -> None:
        self._before = self._read()
        self._started = clock()

    def stop(self) -> dict[str, float]:
        after = self._read()
        self.seconds = max(clock() - self._started, 1e-9)
        shares = {name: (after[name] - self._before[name]) / self.seconds for name in after}
        shares["rest"] = max(0.0, shares["machine"] - sum(shares[n] for n in self.pids))
        return shares


def cpu_text(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in shares.items() if name != "machine")


class ServerProcess:
    """A server under test: one process on a loopback port, started on a fresh directory.
    Its output is kept; :meth:`problems` lists error lines from it."""

    name: ClassVar[str]

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.output: list[str] = []
        self._port_seen = threading.Event()
        self._drainer: threading.Thread | None = None
        self.exit_note = ""

    def command(self) -> list[str]:
        raise NotImplementedError

    def parse_port(self, line: str) -> int | None:
        raise NotImplementedError

    def sync_url(self, doc_id: str) -> str:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        if not self._port_seen.wait(timeout):
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {''.join(self.output)}")

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            port = self.parse_port(line)
            if port is not None and not self._port_seen.is_set():
                self.port = port
                self._port_seen.set()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` (noted in :attr:`exit_note`)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.exit_note = f"did not exit within {timeout:g}s of SIGTERM: killed"
                self.process.kill()
                self.process.wait()
        if self._drainer is not None:
            self._drainer.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def problems(self) -> list[str]:
        words = ("Traceback", "ERROR", "Error", "exception", "Exception")
        return [line.rstrip() for line in self.output if any(w in line for w in words)]


class MeridianNode(ServerProcess):
    name = MERIDIAN

    def command(self) -> list[str]:
        # A regions.toml with no regions: a standalone node that joins no cluster (the
        # repository's regions.toml would make it look for peers).
        config = self.data_dir.parent / f"{self.data_dir.name}-regions.toml"
        config.write_text("# standalone benchmark node: no regions, no peers\n", encoding="utf-8")
        return [
            sys.executable, "-m", "app", "serve", "--region", "eu-west",
            "--listen", f"{HOST}:0", "--data", str(self.data_dir), "--config", str(config),
            "--log-level", "warning",
        ]  # fmt: skip

    def parse_port(self, line: str) -> int | None:
        if "serving http://" not in line:
            return None
        return int(line.rsplit(":", 1)[1].strip().rstrip("/"))

    def sync_url(self, doc_id: str) -> str:
        return f"ws://{HOST}:{self.port}/v1/sync/{doc_id}"

    async def stored_tokens(self, doc_id: str) -> int:
        """Updates of the benchmark stored in ``doc_id``, read through the HTTP API."""
        try:
            body = await single.get_json(self.port, f"/v1/docs/{doc_id}")
        except RuntimeError as exc:
            if " 404 " in str(exc):
                return 0
            raise
        return count_tokens(body["content"].get(ROOT) or "")

    async def statistics(self) -> dict[str, Any]:
        cluster = await single.get_json(self.port, "/v1/cluster")
        return {"storage": cluster["storage"], "clients": cluster.get("clients", {})}


class PycrdtWebsocketServer(ServerProcess):
    name = PYCRDT

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ystore.db"

    def command(self) -> list[str]:
        script = REPO / "bench" / "pycrdt_websocket_server.py"
        return [sys.executable, str(script), "--db", str(self.db_path), "--host", HOST]

    def parse_port(self, line: str) -> int | None:
        return int(line.split()[1]) if line.startswith("serving ") else None

    def sync_url(self, doc_id: str) -> str:
        return f"ws://{HOST}:{self.port}/{doc_id}"

    def stored_rows(self) -> dict[str, tuple[int, float]]:
        """(rows, newest row's timestamp) per room path, from the store's SQLite file."""
        if not self.db_path.exists():
            return {}
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute(
                "SELECT path, COUNT(*), MAX(timestamp) FROM yupdates GROUP BY path"
            ).fetchall()
        except sqlite3.OperationalError:  # the schema is not created yet
            return {}
        finally:
            db.close()
        return {path: (count, newest) for path, count, newest in rows}

    def stored_tokens(self, doc_id: str) -> int:
        """Updates of the benchmark in the stored document ``doc_id``: its rows applied to a
        fresh document, as a room would load them."""
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute(
                "SELECT yupdate FROM yupdates WHERE path = ? ORDER BY timestamp", (f"/{doc_id}",)
            ).fetchall()
        finally:
            db.close()
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        for (update,) in rows:
            doc.apply_update(update)
        return count_tokens(str(doc.get(ROOT, type=pycrdt.Text)))


def server_class(name: str) -> type[ServerProcess]:
    return MeridianNode if name == MERIDIAN else PycrdtWebsocketServer


@contextlib.contextmanager
def running(name: str, data_dir: Path, notes: list[str]) -> Iterator[ServerProcess]:
    """A started server; stopped afterwards, its error lines and exit trouble noted."""
    server = server_class(name)(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        problems = server.problems()
        if problems:
            shown = "; ".join(problems[:5])
            notes.append(f"{name} logged {len(problems)} error line(s), first: {shown}")
        if server.exit_note:
            notes.append(f"{name} {server.exit_note}")


# -- load-generator processes ------------------------------------------------------------------


class Worker:
    """A load-generator process (this script with ``--worker``), driven by JSON lines: its
    task, then commands on stdin; events on stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, task: dict[str, Any], script: str = __file__) -> Worker:
        """Starts ``script --worker`` (this script by default; bench_hold.py has its own
        workers) and sends it ``task``."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, script, "--worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 28,  # the fan-out results are one line of a few MB
        )  # fmt: skip
        worker = cls(process)
        worker.send(task)
        return worker

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next event, which must be ``event``; raises on anything else or a timeout."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.pid} exited (status {await self.process.wait()})")
        message: dict[str, Any] = json.loads(line)
        if message.get("event") != event:
            raise RuntimeError(f"worker {self.pid}: expected {event}, got {message}")
        return message

    async def close(self, timeout: float = 60.0) -> None:
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        try:
            async with asyncio.timeout(timeout):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@contextlib.asynccontextmanager
async def open_workers(
    tasks: Sequence[dict[str, Any]], script: str = __file__
) -> AsyncIterator[list[Worker]]:
    """One worker (``script --worker``) per task; each is waited for (stdin closed) on the
    way out."""
    workers = [await Worker.start(task, script) for task in tasks]
    try:
        yield workers
    finally:
        await asyncio.gather(*(w.close() for w in workers))


def generator_pids(workers: Sequence[Worker]) -> dict[str, int]:
    return {f"generator {i + 1}": w.pid for i, w in enumerate(workers)}


def split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    return [list(items[i::parts]) for i in range(parts) if items[i::parts]]


# -- worker side -------------------------------------------------------------------------------


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Commands:
    """The coordinator's messages on stdin, one JSON object per line."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    @classmethod
    async def open(cls) -> Commands:
        reader = asyncio.StreamReader(limit=1 << 24)
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        return cls(reader)

    async def next(self) -> dict[str, Any]:
        """The next message; ``{"command": "finish"}`` once the coordinator closed stdin."""
        line = await self._reader.readline()
        return json.loads(line) if line else {"command": "finish"}


async def open_synced(url: str, deflate: bool, slots: asyncio.Semaphore) -> ClientConnection:
    """A y-websocket client connection that has completed the sync handshake: it sends its
    (empty) state vector, answers the server's step 1 with an empty step 2, and returns once
    the server's step 2 arrived. ``slots`` bounds the handshakes in progress."""
    async with slots:
        websocket = await connect(
            url,
            compression="deflate" if deflate else None,
            ping_interval=None,  # browsers do not ping; y-websocket counts messages only
            open_timeout=120,
            close_timeout=5,
            max_size=None,
        )
        try:
            await websocket.send(STEP1_EMPTY)
            async with asyncio.timeout(120):
                while True:
                    frame = await websocket.recv()
                    if not isinstance(frame, bytes):
                        continue
                    if frame.startswith(SERVER_STEP1):
                        await websocket.send(STEP2_EMPTY)
                    elif frame.startswith(SERVER_STEP2):
                        return websocket
        except BaseException:
            await websocket.close()
            raise


async def open_many(
    urls: Sequence[str], deflate: bool, concurrency: int = 100
) -> tuple[list[ClientConnection], list[str]]:
    """Opens and syncs a connection to each url; (connections, errors)."""
    slots = asyncio.Semaphore(concurrency)
    results = await asyncio.gather(
        *(open_synced(url, deflate, slots) for url in urls), return_exceptions=True
    )
    connections = [r for r in results if isinstance(r, ClientConnection)]
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return connections, errors


async def close_all(connections: Sequence[ClientConnection]) -> None:
    await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)


def close_text(websocket: ClientConnection) -> str:
    return f"{websocket.close_code} {websocket.close_reason or ''}".strip()


async def fanout_worker(task: dict[str, Any], commands: Commands) -> None:
    """Subscribers of one document: records when each numbered update arrives at each."""
    expected = int(task["updates"])
    started = clock()
    connections, errors = await open_many(task["urls"], task["deflate"])
    emit("ready", connected=len(connections), errors=errors[:5], failed=len(errors),
         seconds=clock() - started)  # fmt: skip
    arrivals = [[0.0] * expected for _ in connections]
    closed: list[str] = []
    complete = 0
    all_complete = asyncio.Event()

    async def follow(websocket: ClientConnection, times: list[float]) -> None:
        nonlocal complete
        remaining = expected
        try:
            async for frame in websocket:
                now = clock()
                if isinstance(frame, bytes) and frame.startswith(UPDATE):
                    for match in FANOUT_MARKER.finditer(frame):
                        index = int(match[1])
                        if index < expected and not times[index]:
                            times[index] = now
                            remaining -= 1
                    if remaining == 0:
                        complete += 1
                        if complete == len(connections):
                            all_complete.set()
        except ConnectionClosed:
            pass
        closed.append(close_text(websocket))

    readers = [
        asyncio.ensure_future(follow(c, t)) for c, t in zip(connections, arrivals, strict=True)
    ]
    finish = asyncio.ensure_future(commands.next())
    done = asyncio.ensure_future(all_complete.wait())
    await asyncio.wait({finish, done}, return_when=asyncio.FIRST_COMPLETED)
    done.cancel()
    emit("done", arrivals=[[round(t, 6) for t in times] for times in arrivals], closed=closed)
    await finish
    for reader in readers:
        reader.cancel()
    await close_all(connections)


@dataclass
class IdleClient:
    synced_at: float
    last_message: float
    longest_silence: float = 0.0
    messages: int = 0
    closed: str | None = None  # the close code and reason, if the connection ended

    def silence_until(self, now: float) -> float:
        return max(self.longest_silence, now - self.last_message)


async def idle_worker(task: dict[str, Any], commands: Commands) -> None:
    """Idle clients: connected and synced, then only reading until told to finish."""
    started = clock()
    connections, errors = await open_many(task["urls"], task["deflate"], concurrency=200)
    now = clock()
    clients = [IdleClient(now, now) for _ in connections]
    emit("ready", connected=len(connections), errors=errors[:5], failed=len(errors),
         seconds=now - started)  # fmt: skip

    async def hold(websocket: ClientConnection, client: IdleClient) -> None:
        try:
            async for _ in websocket:
                now = clock()
                client.longest_silence = max(client.longest_silence, now - client.last_message)
                client.last_message = now
                client.messages += 1
        except ConnectionClosed:
            pass
        client.closed = close_text(websocket)

    readers = [asyncio.ensure_future(hold(c, s)) for c, s in zip(connections, clients, strict=True)]
    await commands.next()
    now = clock()
    silences = [c.silence_until(now) for c in clients]
    emit(
        "done",
        open=sum(c.closed is None for c in clients),
        closed=[c.closed for c in clients if c.closed is not None][:20],
        closed_count=sum(c.closed is not None for c in clients),
        silent_over_limit=sum(s > CLIENT_SILENCE_LIMIT for s in silences),
        longest_silence=max(silences, default=0.0),
        median_silence=statistics.median(silences) if silences else 0.0,
        messages=sum(c.messages for c in clients),
        held_seconds=now - max((c.synced_at for c in clients), default=now),
    )
    for reader in readers:
        reader.cancel()
    await close_all(connections)


@dataclass
class Lane:
    """One writer and the observer of its document."""

    writer: ClientConnection
    observer: ClientConnection
    frames: list[bytes]
    sent: int = 0
    observed: int = 0
    echoes: int = 0  # frames the writer received (pycrdt-websocket echoes the sender's own)
    last_observed: float = 0.0
    exhausted: bool = False
    progress: asyncio.Event = field(default_factory=asyncio.Event)


async def throughput_worker(task: dict[str, Any], commands: Commands) -> None:
    """Writers, each with an observer of its document; a writer keeps at most ``window``
    updates its observer has not received. Sends for ``seconds`` after the "go"."""
    window, seconds = int(task["window"]), float(task["seconds"])
    tokens = throughput_tokens(int(task["updates"]))
    urls: list[str] = task["urls"]
    connections, errors = await open_many([u for url in urls for u in (url, url)], task["deflate"])
    if errors:
        emit("ready", failed=len(errors), errors=errors[:5])
        await close_all(connections)
        return
    lanes = [
        Lane(connections[2 * i], connections[2 * i + 1],
             [sync_frame(2, u) for u in typing_updates(client_id, tokens)])
        for i, client_id in enumerate(task["client_ids"])
    ]  # fmt: skip
    emit("ready", failed=0)

    async def observe(lane: Lane) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in lane.observer:
                if isinstance(frame, bytes) and frame.startswith(UPDATE):
                    lane.observed += 1
                    lane.last_observed = clock()
                    lane.progress.set()

    async def drain_echoes(lane: Lane) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in lane.writer:
                if isinstance(frame, bytes) and frame.startswith(UPDATE):
                    lane.echoes += 1

    async def write(lane: Lane, deadline: float) -> None:
        frames = lane.frames
        while (now := clock()) < deadline:
            if lane.sent - lane.observed >= window:
                lane.progress.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(deadline - now):
                        await lane.progress.wait()
                continue
            if lane.sent == len(frames):
                lane.exhausted = True
                return
            await lane.writer.send(frames[lane.sent])
            lane.sent += 1

    readers = [asyncio.ensure_future(observe(lane)) for lane in lanes]
    readers += [asyncio.ensure_future(drain_echoes(lane)) for lane in lanes]
    await commands.next()  # go
    started, started_wall = clock(), time.time()
    await asyncio.gather(*(write(lane, started + seconds) for lane in lanes))
    stopped = clock()

    async def caught_up(lane: Lane) -> None:
        while lane.observed < lane.sent:
            lane.progress.clear()
            await lane.progress.wait()

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            await asyncio.gather(*(caught_up(lane) for lane in lanes))
    emit(
        "sent",
        started=started,
        started_wall=started_wall,
        stopped=stopped,
        lanes=[
            {"sent": lane.sent, "observed": lane.observed, "echoes": lane.echoes,
             "last_observed": lane.last_observed, "exhausted": lane.exhausted}
            for lane in lanes
        ],
    )  # fmt: skip
    await commands.next()  # finish: the clients leave
    for reader in readers:
        reader.cancel()
    await close_all([c for lane in lanes for c in (lane.writer, lane.observer)])
    emit("closed")


WORKERS: dict[str, Callable[[dict[str, Any], Commands], Coroutine[Any, Any, None]]] = {
    "fanout": fanout_worker,
    "idle": idle_worker,
    "throughput": throughput_worker,
}


async def worker_main() -> None:
    raise_fd_limit()
    commands = await Commands.open()
    task = await commands.next()
    await WORKERS[task["kind"]](task, commands)


def run_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """Runs ``main`` on uvloop when it is installed (as uvicorn does for both servers)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


# -- results -----------------------------------------------------------------------------------


@dataclass
class Metric:
    """One line of the results table: a measurement of each server over several runs."""

    name: str
    unit: str
    digits: int = 0
    target: str = ""
    check: Callable[[float], bool] | None = None
    values: dict[str, list[float]] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)

    def add(self, server: str, value: float) -> None:
        self.values.setdefault(server, []).append(value)

    def median(self, server: str) -> float | None:
        values = self.values.get(server)
        return statistics.median(values) if values else None

    def cell(self, server: str) -> str:
        median = self.median(server)
        if median is None:
            return "-"
        runs = ", ".join(f"{v:,.{self.digits}f}" for v in self.values[server])
        text = f"{median:,.{self.digits}f} {self.unit}".rstrip()
        return text if len(self.values[server]) == 1 else f"{text} ({runs})"

    def verdict(self, server: str, full: bool) -> str:
        median = self.median(server)
        if self.check is None or median is None:
            return ""
        if not full:
            return "n/a (quick)"
        return "met" if self.check(median) else "missed"


class Results:
    def __init__(self, sizes: Sizes, servers: Sequence[str]) -> None:
        self.sizes = sizes
        self.servers = list(servers)
        self.metrics: dict[str, Metric] = {}
        self.notes: list[str] = []

    def metric(self, key: str, name: str, unit: str, **kwargs: Any) -> Metric:
        if key not in self.metrics:
            self.metrics[key] = Metric(name, unit, **kwargs)
        return self.metrics[key]

    def rows(self) -> list[list[str]]:
        rows = []
        for m in self.metrics.values():
            verdicts = [m.verdict(s, self.sizes.full) for s in self.servers]
            verdict = " / ".join(verdicts) if any(verdicts) else ""
            rows.append([m.name, *(m.cell(s) for s in self.servers), m.target, verdict])
        return rows

    def header(self) -> list[str]:
        met = "met? (" + " / ".join(self.servers) + ")"
        return ["metric", *(f"{s} median (runs)" for s in self.servers), "target", met]

    def table(self) -> str:
        header, rows = self.header(), self.rows()
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in self.rows()
        ]
        return "\n".join(lines)

    def markdown(self) -> str:
        header = self.header()
        lines = [
            "| " + " | ".join(header) + " |",
            "|---|" + "---:|" * len(self.servers) + "---|---|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows()]
        return "\n".join(lines)


def percentile(values: Sequence[float], q: float) -> float:
    return single.percentile(values, q)


# -- 1. fan-out --------------------------------------------------------------------------------


async def fanout_run(
    name: str, results: Results, work: Path, run: int, args: argparse.Namespace
) -> None:
    sizes = results.sizes
    p50 = results.metric(
        "fan50", f"fan-out delay p50, 1 writer -> {sizes.subscribers:,} subscribers", "ms", digits=1
    )
    p99 = results.metric(
        "fan99", f"fan-out delay p99, 1 writer -> {sizes.subscribers:,} subscribers", "ms",
        digits=1, target="<= 30 ms", check=lambda v: v <= 30,
    )  # fmt: skip
    delivered = results.metric(
        "fanok", "fan-out updates delivered", "%", digits=2,
        target="100 %", check=lambda v: v >= 100,
    )  # fmt: skip
    frames = [sync_frame(2, u) for u in typing_updates(7, fanout_tokens(sizes.fanout_updates))]
    doc_id = f"fanout-{run}"
    with running(name, work / f"fanout-{name}-{run}", results.notes) as server:
        url = server.sync_url(doc_id)
        slots = asyncio.Semaphore(1)
        writer = await open_synced(url, args.deflate, slots)
        echoes = asyncio.ensure_future(_drain(writer))
        per_worker = split([url] * sizes.subscribers, args.workers)
        tasks = [{"kind": "fanout", "urls": urls, "updates": sizes.fanout_updates,
                  "deflate": args.deflate} for urls in per_worker]  # fmt: skip
        async with open_workers(tasks) as workers:
            ready = [await w.expect("ready", 300) for w in workers]
            failed = sum(r["failed"] for r in ready)
            if failed:
                results.notes.append(
                    f"{name} fan-out run {run + 1}: {failed} subscribers failed to connect: "
                    f"{[e for r in ready for e in r['errors']][:3]}"
                )
            connect_seconds = max(r["seconds"] for r in ready)
            subscribers = sum(r["connected"] for r in ready)
            await asyncio.sleep(1.0)  # let the connection bursts settle
            rss_before = rss_mib(server.pid)
            watch = CpuWatch({"server": server.pid, **generator_pids(workers)})
            watch.start()
            sends = await send_paced(writer, frames, sizes.fanout_rate)
            deadline = clock() + 15.0
            outcomes = await asyncio.gather(
                *(w.expect("done", max(1.0, deadline - clock())) for w in workers),
                return_exceptions=True,
            )
            if any(isinstance(o, BaseException) for o in outcomes):  # stragglers: stop them
                for w in workers:
                    w.send({"command": "finish"})
                outcomes = [
                    o if not isinstance(o, BaseException) else await w.expect("done", 60)
                    for o, w in zip(outcomes, workers, strict=True)
                ]
            shares = watch.stop()
            for w in workers:
                w.send({"command": "finish"})
        echoes.cancel()
        await writer.close()
        rss_after = rss_mib(server.pid)
        stats = await server.statistics() if isinstance(server, MeridianNode) else None
    delays: list[float] = []
    # Per update: the delay to its first and to its last subscriber.
    first = [float("inf")] * len(sends)
    last = [0.0] * len(sends)
    missing = 0
    closed: list[str] = []
    for outcome in outcomes:
        assert isinstance(outcome, dict)
        closed += outcome["closed"]
        for times in outcome["arrivals"]:
            for index, arrived in enumerate(times):
                if arrived:
                    delay = (arrived - sends[index]) * 1e3
                    delays.append(delay)
                    first[index] = min(first[index], delay)
                    last[index] = max(last[index], delay)
                else:
                    missing += 1
    worst = sorted(range(len(sends)), key=lambda i: last[i], reverse=True)[:3]
    total = sizes.subscribers * sizes.fanout_updates
    p50.add(name, percentile(delays, 50))
    p99.add(name, percentile(delays, 99))
    delivered.add(name, 100.0 * len(delays) / total)
    detail = (
        f"{name} run {run + 1}: {subscribers:,} subscribers synced in {connect_seconds:.1f}s; "
        f"{len(delays):,} of {total:,} (subscriber, update) arrivals, {missing:,} missing; "
        f"p50 {p50.values[name][-1]:.1f} ms, p99 {p99.values[name][-1]:.1f} ms, "
        f"max {max(delays, default=float('nan')):.1f} ms; "
        f"writer sent {len(sends)} updates over {sends[-1] - sends[0]:.1f}s; per update, "
        f"median delay to its first subscriber {statistics.median(first):.1f} ms and to its "
        f"last {statistics.median(last):.1f} ms; slowest to reach all: "
        f"{', '.join(f'#{i} {last[i]:.0f} ms' for i in worst)}; "
        f"CPU (share of a core): {cpu_text(shares)}; server CPU per delivered frame "
        f"{shares['server'] * watch.seconds / max(len(delays), 1) * 1e6:.0f} µs; "
        f"server RSS {rss_before:.0f} -> {rss_after:.0f} MiB"
    )
    if closed:
        detail += f"; {len(closed)} subscribers CLOSED by the server: {sorted(set(closed))[:3]}"
    if stats is not None:
        detail += f"; disconnected as slow: {stats['clients'].get('disconnected_slow', '?')}"
    p99.details.append(detail)
    log(f"  {detail}")


async def _drain(websocket: ClientConnection) -> int:
    """Reads (and counts) what the server sends a writer, so that it never stops reading."""
    count = 0
    with contextlib.suppress(ConnectionClosed):
        async for _ in websocket:
            count += 1
    return count


async def send_paced(writer: ClientConnection, frames: Sequence[bytes], rate: float) -> list[float]:
    """Sends frame i at start + i / rate; returns the time each was handed to the socket."""
    sends: list[float] = []
    start = clock() + 0.05
    for index, frame in enumerate(frames):
        delay = start + index / rate - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        sends.append(clock())
        await writer.send(frame)
    return sends


# -- 2. durable throughput ---------------------------------------------------------------------


async def throughput_run(
    name: str, results: Results, work: Path, run: int, args: argparse.Namespace
) -> None:
    sizes = results.sizes
    rate = results.metric(
        "tput", f"durable updates/s, {sizes.writers} writers, {sizes.writers} docs, over WS",
        "updates/s", target=">= 15,000/s", check=lambda v: v >= 15_000,
    )  # fmt: skip
    kept = results.metric(
        "kept", "updates stored / updates sent (after the clients left)", "%", digits=1,
        target="100 %", check=lambda v: v >= 100,
    )  # fmt: skip
    applied = results.metric(
        "applied", "updates/s received by the observers (broadcast)", "updates/s"
    )
    doc_ids = [f"tput-{run}-{i}" for i in range(sizes.writers)]
    # Enough pre-made updates for 25,000/s in all (the run notes it if a writer runs out).
    per_writer = int(25_000 * sizes.throughput_seconds / sizes.writers) + 1000
    with running(name, work / f"throughput-{name}-{run}", results.notes) as server:
        groups = split(list(enumerate(doc_ids)), min(args.workers, sizes.writers))
        tasks = [
            {"kind": "throughput", "urls": [server.sync_url(d) for _, d in group],
             "client_ids": [1000 + i for i, _ in group], "updates": per_writer,
             "window": sizes.window, "seconds": sizes.throughput_seconds,
             "deflate": args.deflate}
            for group in groups
        ]  # fmt: skip
        stats_before = await server.statistics() if isinstance(server, MeridianNode) else None
        async with open_workers(tasks) as workers:
            for w in workers:
                ready = await w.expect("ready", 120)
                if ready["failed"]:
                    raise RuntimeError(f"{name}: throughput clients failed: {ready['errors']}")
            watch = CpuWatch({"server": server.pid, **generator_pids(workers)})
            watch.start()
            for w in workers:
                w.send({"command": "go"})
            reports = [await w.expect("sent", sizes.throughput_seconds + 120) for w in workers]
            shares = watch.stop()
            lanes = [lane for report in reports for lane in report["lanes"]]
            sent = sum(lane["sent"] for lane in lanes)
            observed = sum(lane["observed"] for lane in lanes)
            started = min(r["started"] for r in reports)
            started_wall = min(r["started_wall"] for r in reports)
            last_observed = max(lane["last_observed"] for lane in lanes)
            applied.add(name, observed / max(last_observed - started, 1e-9))
            extra = ""
            if isinstance(server, PycrdtWebsocketServer):
                # Committed: the rows in the store. Wait, clients still connected, until it
                # holds everything sent or stops growing.
                drained = await wait_stored(server, sent, sizes.drain_seconds)
                rows, newest = drained
                committed_rate = rows / max(newest - started_wall, 1e-9) if rows else 0.0
                extra = (
                    f"store held {rows:,} rows {newest - started_wall:.1f}s after the start "
                    f"(waited up to {sizes.drain_seconds:g}s after sending, clients connected)"
                )
            else:
                committed_rate = observed / max(last_observed - started, 1e-9)
            for w in workers:
                w.send({"command": "finish"})
            for w in workers:
                await w.expect("closed", 120)
        if isinstance(server, PycrdtWebsocketServer):
            await asyncio.sleep(3.0)  # the rooms close when their last client leaves
            after_leave = sum(r for r, _ in server.stored_rows().values())
            extra += f"; {after_leave:,} rows 3s after the clients left"
        elif isinstance(server, MeridianNode):
            stats_after = await server.statistics()
            assert stats_before is not None
            commits = stats_after["storage"]["commits"] - stats_before["storage"]["commits"]
            jobs = (
                stats_after["storage"]["jobs_committed"] - stats_before["storage"]["jobs_committed"]
            )
            extra = f"{commits:,} commits, {jobs / max(commits, 1):.1f} jobs/commit"
    # The server has stopped: what did it keep? Meridian: restarted on its data directory and
    # asked through the HTTP API; pycrdt-websocket: its SQLite file (pending writes are gone).
    if isinstance(server, MeridianNode):
        with running(name, server.data_dir, results.notes) as reopened:
            assert isinstance(reopened, MeridianNode)
            stored = [await reopened.stored_tokens(d) for d in doc_ids]
    else:
        assert isinstance(server, PycrdtWebsocketServer)
        stored = [await asyncio.to_thread(server.stored_tokens, d) for d in doc_ids]
    stored_total = sum(stored)
    rate.add(name, committed_rate)
    kept.add(name, 100.0 * stored_total / max(sent, 1))
    exhausted = sum(lane["exhausted"] for lane in lanes)
    detail = (
        f"{name} run {run + 1}: sent {sent:,} updates in {sizes.throughput_seconds:g}s "
        f"(window {sizes.window}/writer), observers received {observed:,} "
        f"({applied.values[name][-1]:,.0f}/s); committed {committed_rate:,.0f}/s ({extra}); "
        f"stored after restart: {stored_total:,} = {kept.values[name][-1]:.1f}% of sent "
        f"(per document: {', '.join(f'{s:,}' for s in stored)}); "
        f"CPU (share of a core): {cpu_text(shares)}"
    )
    if exhausted:
        detail += f"; {exhausted} writers RAN OUT of pre-made updates (rate under-reported)"
    rate.details.append(detail)
    log(f"  {detail}")


async def wait_stored(
    server: PycrdtWebsocketServer, expected: int, limit: float
) -> tuple[int, float]:
    """Polls the store until it holds ``expected`` rows, stops growing for 5 s, or ``limit``
    seconds pass; returns (rows, the newest row's timestamp)."""
    deadline = clock() + limit
    last_count, last_change = -1, clock()
    while True:
        rows = await asyncio.to_thread(server.stored_rows)
        count = sum(r for r, _ in rows.values())
        newest = max((t for _, t in rows.values()), default=0.0)
        now = clock()
        if count != last_count:
            last_count, last_change = count, now
        if count >= expected or now - last_change >= 5.0 or now >= deadline:
            return count, newest
        await asyncio.sleep(1.0)


# -- 3. idle connections -----------------------------------------------------------------------


async def idle_run(
    name: str, results: Results, work: Path, run: int, args: argparse.Namespace
) -> None:
    sizes = results.sizes
    n = sizes.idle_connections
    held = results.metric(
        "held", f"idle connections open after {sizes.idle_hold_seconds:g}s (of {n:,})",
        "", target=f"{n:,}", check=lambda v: v >= n,
    )  # fmt: skip
    silent = results.metric(
        "silent", f"... silent > {CLIENT_SILENCE_LIMIT:g}s (a y-websocket client reconnects)", "",
        target="0", check=lambda v: v == 0,
    )  # fmt: skip
    rss = results.metric("rss", f"server RSS with {n:,} connections", "MiB", digits=0)
    per = results.metric("rssper", "... RSS per connection", "KiB", digits=1)
    urls_of = [f"idle-{run}-{i % sizes.idle_documents:03d}" for i in range(n)]
    with running(name, work / f"idle-{name}-{run}", results.notes) as server:
        urls = [server.sync_url(d) for d in urls_of]
        await asyncio.sleep(1.0)
        rss_empty = rss_mib(server.pid)
        tasks = [{"kind": "idle", "urls": part, "deflate": args.deflate}
                 for part in split(urls, args.idle_workers)]  # fmt: skip
        async with open_workers(tasks) as workers:
            watch = CpuWatch({"server": server.pid, **generator_pids(workers)})
            watch.start()
            ready = [await w.expect("ready", 600) for w in workers]
            connect_shares = watch.stop()
            connected = sum(r["connected"] for r in ready)
            failed = sum(r["failed"] for r in ready)
            connect_seconds = max(r["seconds"] for r in ready)
            rss_connected = rss_mib(server.pid)
            watch.start()
            await asyncio.sleep(sizes.idle_hold_seconds)
            hold_shares = watch.stop()
            rss_held = rss_mib(server.pid)
            for w in workers:
                w.send({"command": "finish"})
            done = [await w.expect("done", 120) for w in workers]
    still_open = sum(d["open"] for d in done)
    over = sum(d["silent_over_limit"] for d in done)
    held.add(name, still_open)
    silent.add(name, over)
    rss.add(name, rss_held)
    per.add(name, (rss_held - rss_empty) * 1024 / max(connected, 1))
    closed = [c for d in done for c in d["closed"]]
    detail = (
        f"{name} run {run + 1}: {connected:,} connected and synced in {connect_seconds:.1f}s "
        f"({failed:,} failed{': ' + str(ready[0]['errors'][:2]) if failed else ''}; CPU "
        f"meanwhile: {cpu_text(connect_shares)}); held {sizes.idle_hold_seconds:g}s: "
        f"{still_open:,} open, {sum(d['closed_count'] for d in done):,} closed by the server"
        f"{' ' + str(sorted(set(closed))[:3]) if closed else ''}; "
        f"{sum(d['messages'] for d in done):,} messages received while idle, longest silence "
        f"{max(d['longest_silence'] for d in done):.1f}s; server RSS {rss_empty:.0f} MiB "
        f"empty, {rss_connected:.0f} MiB once connected, {rss_held:.0f} MiB after the hold; "
        f"server CPU while idle {hold_shares['server']:.1%}"
    )
    held.details.append(detail)
    log(f"  {detail}")


# -- main --------------------------------------------------------------------------------------

SECTION_RUNS: dict[
    str, Callable[[str, Results, Path, int, argparse.Namespace], Awaitable[None]]
] = {
    "fanout": fanout_run,
    "throughput": throughput_run,
    "idle": idle_run,
}


async def run_all(args: argparse.Namespace, results: Results, work: Path) -> None:
    for section in args.sections:
        progress.section(section, args.runs)
        for run in progress.runs(section, args.runs):
            # Alternate which server goes first, so that drift in the machine's load does
            # not always favour the same one.
            order = results.servers if run % 2 == 0 else results.servers[::-1]
            for name in order:
                with progress.step(f"{section} on {name}"):
                    await SECTION_RUNS[section](name, results, work, run, args)


def report(
    results: Results, machine: dict[str, str], args: argparse.Namespace, seconds: float
) -> str:
    lines = ["Machine:", *(f"  {key}: {value}" for key, value in machine.items())]
    lines += [
        f"  load generator: {args.workers} worker processes (fan-out, throughput), "
        f"{args.idle_workers} (idle), asyncio + websockets, uvloop; permessage-deflate "
        f"{'offered' if args.deflate else 'not offered'}",
        "  note: the servers and the load generator share the machine's cores (CPU per run in "
        "the details)",
        "",
        f"Results (median of {args.runs} run(s){', QUICK sizes' if args.quick else ''}; "
        f"benchmark took {seconds:.0f}s):",
        "",
        results.table(),
        "",
        "Details:",
    ]
    lines += [f"  {d}" for m in results.metrics.values() for d in m.details]
    lines += [f"  note: {n}" for n in results.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run by default")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument("--sections", default="", help=f"subset of {','.join(SECTIONS)}")
    parser.add_argument("--servers", default="", help=f"subset of {','.join(SERVERS)}")
    parser.add_argument(
        "--workers", type=int, default=2, help="load-generator processes (fan-out, throughput)"
    )
    parser.add_argument(
        "--idle-workers", type=int, default=2, help="load-generator processes (idle section)"
    )
    parser.add_argument(
        "--deflate", action="store_true",
        help="clients offer permessage-deflate (as browsers do); default: no compression",
    )  # fmt: skip
    parser.add_argument("--data-root", default=None, help="where data directories go")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    parser.add_argument("--markdown", default=None, help="also write the table as Markdown here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_loop(worker_main())
        return 0
    args.runs = args.runs or (1 if args.quick else 3)
    args.sections = args.sections.split(",") if args.sections else list(SECTIONS)
    servers = args.servers.split(",") if args.servers else list(SERVERS)
    if unknown := (set(args.sections) - set(SECTIONS)) | (set(servers) - set(SERVERS)):
        parser.error(f"unknown sections or servers: {', '.join(sorted(unknown))}")
    limit = raise_fd_limit()
    sizes = QUICK if args.quick else FULL
    if limit < sizes.idle_connections + 1000 and "idle" in args.sections:
        parser.error(f"the open-files limit is {limit}: too low for {sizes.idle_connections:,}")
    check_typing_updates()
    work = Path(tempfile.mkdtemp(prefix="meridian-bench-live-", dir=args.data_root))
    machine = single.machine_info(work)
    machine["pycrdt-websocket / websockets"] = (
        f"{single._version('pycrdt-websocket')} / {single._version('websockets')}"
    )
    machine["open-files limit"] = str(limit)
    results = Results(sizes, servers)
    started = time.perf_counter()
    try:
        run_loop(run_all(args, results, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(results, machine, args, time.perf_counter() - started)
    print(text)
    if args.json:
        payload = {
            "date": datetime.date.today().isoformat(),
            "machine": machine,
            "runs": args.runs,
            "quick": args.quick,
            "metrics": {
                key: {
                    "name": m.name,
                    "unit": m.unit,
                    "target": m.target,
                    "values": m.values,
                    "medians": {s: m.median(s) for s in servers},
                    "details": m.details,
                }
                for key, m in results.metrics.items()
            },
            "notes": results.notes,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        machine_md = "\n".join(f"- {key}: {value}" for key, value in machine.items())
        Path(args.markdown).write_text(f"{machine_md}\n\n{results.markdown()}\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
