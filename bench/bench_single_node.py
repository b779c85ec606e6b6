"""Single-node benchmark of Meridian: durable writes, acknowledgement latency, memory, start-up.

Run from the repository root with the project's virtualenv (see bench/README.md)::

    .venv/bin/python bench/bench_single_node.py            # full run, 3 runs per figure
    .venv/bin/python bench/bench_single_node.py --quick    # smoke run, small sizes

Every node under test is a real ``python -m app serve`` process on loopback, started on a fresh
data directory. The load generator is this process: plain asyncio streams speaking hand-written
HTTP/1.1 over keep-alive connections, sending request bytes built before the clock starts, so
it spends little CPU per request. Its own ceiling is measured against a trivial HTTP server.
The machine has few cores and the generator competes with the node for them: the details under
the table show the CPU each side used.

Measured, each the median of ``--runs`` runs:

1. durable writes/s through ``POST /v1/docs/{id}/update`` (a few characters typed into a
   Y.Text per update), closed loop, 1 client and 16 clients (16 documents, and one hot one);
2. acknowledgement latency p50/p99 at a paced (open-loop) 1,000 writes/s;
3. references: raw DuckDB one-row-per-transaction commits/s, pycrdt-store's SQLiteYStore
   updates/s, and the crdt engine in-process (no HTTP);
4. RSS of a node with 100,000 stored documents, 1,000 of them hot, and its start-up time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import http.client
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402
import pycrdt  # noqa: E402
from progress import Progress  # noqa: E402  (this directory)

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WORDS = ("lorem ", "ipsum ", "dolor ", "sit ", "amet, ", "elit ")
OCTET_STREAM = "application/octet-stream"


# -- sizes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    write_seconds: float  # one closed-loop throughput run
    latency_seconds: float  # one paced latency run
    latency_rate: int  # writes/s of the paced run
    reference_seconds: float  # one DuckDB / pycrdt-store / engine run
    stream_length: int  # pre-generated updates per client
    single_stream_length: int  # ... for the single client (it goes faster)
    stored_documents: int  # documents stored for the RSS / start-up figures
    hot_documents: int  # documents read into memory for the RSS figure
    full: bool  # the targets on sizes apply only to the full sizes


FULL = Sizes(5.0, 10.0, 1000, 3.0, 4000, 12000, 100_000, 1000, True)
QUICK = Sizes(1.5, 3.0, 1000, 1.0, 1000, 3000, 5000, 200, False)

CLIENTS = 16


# -- machine ---------------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info(data_root: Path) -> dict[str, str]:
    model, mhz = "unknown", ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            if key.strip() == "cpu MHz" and not mhz:
                mhz = f"{float(value):.0f} MHz"
    memory = ""
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    filesystem = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["df", "-T", str(data_root)], capture_output=True, text=True, check=True
        ).stdout
        filesystem = out.splitlines()[1].split()[1]
    has = importlib.util.find_spec
    return {
        "CPUs": f"{os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})",
        "CPU model": f"{model} {mhz}".strip(),
        "memory": memory,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "duckdb": _version("duckdb"),
        "pycrdt": _version("pycrdt"),
        "pycrdt-store": _version("pycrdt-store"),
        "fastapi / uvicorn": f"{_version('fastapi')} / {_version('uvicorn')}",
        "uvicorn HTTP parser": "httptools" if has("httptools") else "h11 (httptools not installed)",
        "uvicorn event loop": "uvloop" if has("uvloop") else "asyncio (uvloop not installed)",
        "data directory": f"{data_root} ({filesystem or 'unknown fs'})",
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


# -- Yjs updates -----------------------------------------------------------------------------


def typing_stream(client_id: int, count: int) -> list[bytes]:
    """``count`` Yjs v1 updates of one client typing a few characters at a time at the end of
    the Y.Text ``body``. Each depends only on the ones before it from the same client, so
    several streams can be sent concurrently to the same document."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    text = doc.get("body", type=pycrdt.Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(bytes(event.update)))
    position = 0
    for i in range(count):
        word = WORDS[i % len(WORDS)]
        text.insert(position, word)
        position += len(word)
    return updates


def small_document(index: int) -> bytes:
    """A whole small document (a short Y.Text) as one update."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=10_000_000 + index)
    doc["body"] = pycrdt.Text(f"note {index}: buy milk, call Ana")
    return bytes(doc.get_update())


# -- HTTP/1.1 over asyncio streams -------------------------------------------------------------


def post_request(doc_id: str, body: bytes) -> bytes:
    head = (
        f"POST /v1/docs/{doc_id}/update HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: {OCTET_STREAM}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode("ascii")


class HttpConnection:
    """One keep-alive connection; requests go one at a time (no pipelining)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Sends pre-built request bytes; returns (status, body)."""
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lowered = head.lower()
        at = lowered.find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError(f"response without Content-Length: {head!r}")
        length = int(head[at + 17 : lowered.index(b"\r\n", at + 2)])
        body = await self._reader.readexactly(length) if length else b""
        return status, body

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def get_json(port: int, path: str) -> Any:
    connection = await HttpConnection.open(port)
    try:
        status, body = await connection.send(get_request(path))
    finally:
        await connection.close()
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
    return json.loads(body)


# -- CPU accounting from /proc -----------------------------------------------------------------


def _cpu_seconds(stat_path: str) -> float:
    with open(stat_path, encoding="ascii") as handle:
        data = handle.read()
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores) since boot."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = handle.readline().split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class CpuMeter:
    """CPU seconds used, between two readings, by the generator (this process), by a server
    process (in total and in its main thread: the node's event loop) and by the whole
    machine (the rest is other load: the kernel's share of loopback traffic, other programs)."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid

    def read(self) -> tuple[float, float, float, float]:
        return (
            time.process_time(),
            _cpu_seconds(f"/proc/{self.pid}/stat"),
            _cpu_seconds(f"/proc/{self.pid}/task/{self.pid}/stat"),
            _machine_busy_seconds(),
        )


@dataclass
class LoadResult:
    completed: int
    elapsed: float
    latencies: list[float]
    errors: int = 0
    exhausted: bool = False
    generator_cpu: float = 0.0
    server_cpu: float = 0.0
    server_loop_cpu: float = 0.0
    machine_cpu: float = 0.0
    unsent: int = 0  # paced runs: requests still unsent at the cut-off (overload)

    @property
    def rate(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, q: float) -> float:
        return percentile(self.latencies, q)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# -- load shapes -------------------------------------------------------------------------------


async def closed_loop(
    port: int,
    lanes: Sequence[Sequence[bytes]],
    duration: float,
    meter: CpuMeter | None,
    *,
    cycle: bool = False,
) -> LoadResult:
    """One keep-alive connection per lane; each sends its next request as soon as the previous
    one is answered, until ``duration`` is over (or its requests run out, unless ``cycle``)."""
    connections = [await HttpConnection.open(port) for _ in lanes]
    latencies: list[float] = []
    errors = 0
    exhausted = False
    finished: list[float] = []
    clock = time.perf_counter

    async def run(connection: HttpConnection, requests: Sequence[bytes], deadline: float) -> None:
        nonlocal errors, exhausted
        index, count = 0, len(requests)
        while True:
            sent = clock()
            if sent >= deadline:
                break
            if index == count:
                if not cycle:
                    exhausted = True
                    break
                index = 0
            status, _ = await connection.send(requests[index])
            index += 1
            latencies.append(clock() - sent)
            if status != 200:
                errors += 1
        finished.append(clock())

    before = meter.read() if meter else (0.0, 0.0, 0.0, 0.0)
    started = clock()
    await asyncio.gather(
        *(run(c, r, started + duration) for c, r in zip(connections, lanes, strict=True))
    )
    elapsed = max(finished) - started
    after = meter.read() if meter else (0.0, 0.0, 0.0, 0.0)
    for connection in connections:
        await connection.close()
    return LoadResult(
        len(latencies) - errors,
        elapsed,
        latencies,
        errors,
        exhausted,
        *(b - a for a, b in zip(before, after, strict=True)),
    )


async def paced(
    port: int,
    lanes: Sequence[Sequence[bytes]],
    rate: float,
    duration: float,
    meter: CpuMeter,
    on_send: Callable[[int], None] | None = None,
) -> LoadResult:
    """Open loop: request j of the whole run is due at start + j / rate, on lane j mod L
    (each lane is one document and one keep-alive connection, so a document's updates stay
    in order). A request sent late because its lane was still waiting for the previous answer
    is timed from when it was due (no coordinated omission); one sent on time is timed from
    when it was sent, so the generator's timer slack does not count as server latency.
    A node that cannot sustain the rate is cut off at twice the planned duration; the requests
    not sent by then are counted in ``unsent``. ``on_send(j)`` is called just before request
    j is written (bench_hold.py times each update's delivery from then)."""
    connections = [await HttpConnection.open(port) for _ in lanes]
    count = len(lanes)
    total = int(rate * duration)
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter

    unsent = 0

    async def run(
        lane: int, connection: HttpConnection, requests: Sequence[bytes], start: float
    ) -> None:
        nonlocal errors, unsent
        previous_done = start
        cutoff = start + 2 * duration
        for k, j in enumerate(range(lane, total, count)):
            due = start + j / rate
            now = clock()
            if now > cutoff:  # far behind schedule: the server cannot sustain the rate
                unsent += len(range(j, total, count))
                break
            if now < due:
                await asyncio.sleep(due - now)
            if on_send is not None:
                on_send(j)
            sent = clock()
            status, _ = await connection.send(requests[k])
            done = clock()
            latencies.append(done - (due if previous_done > due else sent))
            previous_done = done
            if status != 200:
                errors += 1

    needed = -(-total // count)
    if any(len(requests) < needed for requests in lanes):
        raise ValueError(f"paced run needs {needed} requests per lane")
    before = meter.read()
    started = clock() + 0.05
    await asyncio.gather(
        *(run(i, c, r, started) for i, (c, r) in enumerate(zip(connections, lanes, strict=True)))
    )
    elapsed = clock() - started
    after = meter.read()
    for connection in connections:
        await connection.close()
    return LoadResult(
        len(latencies) - errors,
        elapsed,
        latencies,
        errors,
        False,
        *(b - a for a, b in zip(before, after, strict=True)),
        unsent=unsent,
    )


# -- node processes ----------------------------------------------------------------------------


class NodeUnderTest:
    """A ``python -m app serve`` process on a loopback port (like tests/support.NodeProcess),
    timed from process start until ``GET /v1/health`` answers 200."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.output: list[str] = []
        self._url_seen = threading.Event()
        self._drainer: threading.Thread | None = None

    def start(self, timeout: float = 120.0) -> float:
        """Starts the node; returns seconds from process start to a 200 from /v1/health."""
        launcher = ["-m", "app"]
        command = [
            sys.executable, *launcher, "serve", "--region", "eu-west",
            "--listen", f"{HOST}:0", "--data", str(self.data_dir), "--log-level", "warning",
        ]  # fmt: skip
        started = time.perf_counter()
        self.process = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                break
            if not self._url_seen.wait(0.002):
                continue
            if self._health_ok():
                return time.perf_counter() - started
            time.sleep(0.002)
        self.stop()
        raise RuntimeError(f"node did not start: {''.join(self.output)}")

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if "serving http://" in line and not self._url_seen.is_set():
                self.port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))
                self._url_seen.set()

    def _health_ok(self) -> bool:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
        try:
            connection.request("GET", "/v1/health")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) of the node, in KiB."""
        values: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(value.split()[0])
        return values

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._drainer is not None:
            self._drainer.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None


@contextlib.contextmanager
def running_node(data_dir: Path) -> Iterator[tuple[NodeUnderTest, float]]:
    node = NodeUnderTest(data_dir)
    startup = node.start()
    try:
        yield node, startup
    finally:
        node.stop()


# -- results -----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One line of the results table: a measurement over several runs."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    target: str = ""
    check: Callable[[float], bool] | None = None
    digits: int = 0
    details: list[str] = field(default_factory=list)
    #: A regression guard: ``--guard`` exits 1 when it is missed (targets of the issues are
    #: reported, not enforced).
    guard: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def verdict(self, full: bool) -> str:
        if self.check is None or not self.values:
            return ""
        if not full and self.target.startswith("sized:"):
            return "n/a (quick sizes)"
        return "met" if self.check(self.median) else "MISSED"

    def fmt(self, value: float) -> str:
        return f"{value:,.{self.digits}f}"


class Results:
    def __init__(self, sizes: Sizes) -> None:
        self.sizes = sizes
        self.figures: dict[str, Figure] = {}
        self.notes: list[str] = []

    def figure(self, key: str, name: str, unit: str, **kwargs: Any) -> Figure:
        if key not in self.figures:
            self.figures[key] = Figure(name, unit, **kwargs)
        return self.figures[key]

    def rows(self) -> list[list[str]]:
        rows = []
        for f in self.figures.values():
            runs = ", ".join(f.fmt(v) for v in f.values)
            target = f.target.removeprefix("sized:")
            rows.append(
                [f.name, f"{f.fmt(f.median)} {f.unit}", runs, target, f.verdict(self.sizes.full)]
            )
        return rows

    def table(self) -> str:
        header = ["measurement", "median", "runs", "target", "result"]
        rows = self.rows()
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = ["| measurement | median | runs | target | result |", "|---|---:|---|---|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows()]
        return "\n".join(lines)

    def detail_lines(self) -> list[str]:
        out = []
        for f in self.figures.values():
            out += [f"{f.name}: {d}" for d in f.details]
        return out + self.notes


#: Progress on stderr (which section and run, how long each took); results go to stdout.
PROGRESS = Progress("single-node")
log = PROGRESS.log


def _load_details(result: LoadResult, stats: tuple[int, int, int] | None = None) -> str:
    other = result.machine_cpu - result.server_cpu - result.generator_cpu
    cpu = (
        f"server CPU {result.server_cpu / result.elapsed:.0%} of a core "
        f"(event-loop thread {result.server_loop_cpu / result.elapsed:.0%}), "
        f"generator {result.generator_cpu / result.elapsed:.0%}, "
        f"rest of machine {max(other, 0) / result.elapsed:.0%}"
    )
    text = (
        f"{result.completed:,} ok in {result.elapsed:.2f}s, latency p50 "
        f"{result.percentile(50) * 1e3:.2f} ms p99 {result.percentile(99) * 1e3:.2f} ms; {cpu}"
    )
    if stats is not None:
        commits, jobs, compactions = stats
        per_commit = jobs / max(commits, 1)
        text += f"; {commits:,} commits, {per_commit:.1f} jobs/commit, {compactions} compactions"
    if result.errors:
        text += f"; {result.errors} ERRORS"
    if result.unsent:
        text += f"; OVERLOADED: {result.unsent:,} requests unsent at the cut-off"
    if result.exhausted:
        text += "; RAN OUT of pre-generated updates (rate under-reported)"
    return text


def _delta(before: tuple[int, int, int], after: tuple[int, int, int]) -> tuple[int, int, int]:
    return (after[0] - before[0], after[1] - before[1], after[2] - before[2])


async def _storage_counters(port: int) -> tuple[int, int, int]:
    storage = (await get_json(port, "/v1/cluster"))["storage"]
    return storage["commits"], storage["jobs_committed"], storage["compactions"]


# -- 1. durable writes through HTTP ------------------------------------------------------------


@dataclass
class Streams:
    lanes: list[list[bytes]]  # one typing stream per client (distinct Yjs client ids)
    single: list[bytes]  # a longer one for the single client


def make_streams(sizes: Sizes) -> Streams:
    started = time.perf_counter()
    lanes = [typing_stream(1000 + i, sizes.stream_length) for i in range(CLIENTS)]
    single = typing_stream(999, sizes.single_stream_length)
    count = sum(map(len, lanes)) + len(single)
    mean = statistics.mean(len(u) for u in lanes[0])
    seconds = time.perf_counter() - started
    log(f"pre-generated {count:,} updates (mean {mean:.0f} bytes) in {seconds:.1f}s")
    return Streams(lanes, single)


def lane_requests(doc_ids: Sequence[str], streams: Sequence[Sequence[bytes]]) -> list[list[bytes]]:
    return [[post_request(d, u) for u in s] for d, s in zip(doc_ids, streams, strict=True)]


async def _warm_up(port: int, streams: Streams) -> None:
    """A few writes on other documents so that the timed run starts with a warm process."""
    lanes = lane_requests([f"warmup-{i}" for i in range(CLIENTS)], [s[:30] for s in streams.lanes])
    await closed_loop(port, lanes, 10.0, None)


async def bench_writes(results: Results, streams: Streams, work: Path, runs: int) -> None:
    sizes = results.sizes
    scenarios = [
        ("w1", "HTTP durable writes, 1 client, 1 doc", 1, False),
        ("w16", "HTTP durable writes, 16 clients, 16 docs", CLIENTS, False),
        ("w16hot", "HTTP durable writes, 16 clients, 1 hot doc", CLIENTS, True),
    ]
    for run in PROGRESS.runs("durable writes", runs):
        for key, name, clients, hot in scenarios:
            figure = results.figure(
                key,
                name,
                "writes/s",
                target=">= 4,000/s" if key == "w16" else "",
                check=(lambda v: v >= 4000) if key == "w16" else None,
            )
            if clients == 1:
                lanes = lane_requests([f"r{run}-single"], [streams.single])
            else:
                ids = [f"r{run}-hot" if hot else f"r{run}-doc{i}" for i in range(clients)]
                lanes = lane_requests(ids, streams.lanes)
            data_dir = work / f"writes-{key}-{run}"
            with running_node(data_dir) as (node, _):
                await _warm_up(node.port, streams)
                before = await _storage_counters(node.port)
                gc.collect()
                result = await closed_loop(
                    node.port, lanes, sizes.write_seconds, CpuMeter(node.pid)
                )
                after = await _storage_counters(node.port)
            shutil.rmtree(data_dir, ignore_errors=True)
            figure.values.append(result.rate)
            figure.details.append(f"run {run + 1}: " + _load_details(result, _delta(before, after)))
            log(f"  {name}, run {run + 1}: {result.rate:,.0f} writes/s ({figure.details[-1]})")
            if key == "w16" and result.completed:
                # The regression guard: the node's event-loop CPU per write is steadier than
                # writes/s on a shared machine (contention can only inflate it).
                guard = results.figure(
                    "w16cpu",
                    "node event-loop CPU per durable write, 16 clients, 16 docs",
                    "µs",
                    target=f"<= {LOOP_CPU_GUARD_US} µs (regression guard)",
                    check=lambda v: v <= LOOP_CPU_GUARD_US,
                    guard=True,
                )
                guard.values.append(result.server_loop_cpu / result.completed * 1e6)


#: The regression guard of the write path (event-loop CPU per durable write, 16 clients):
#: 457fb7a measured ~310-330 µs, 27bb756 ~470-500 µs (a regression found by bisection:
#: docs/benchmarks.md, "Regression of the write path"); the fixes brought it back under this.
LOOP_CPU_GUARD_US = 400


# -- 2. acknowledgement latency at a paced rate ------------------------------------------------


async def bench_latency(results: Results, streams: Streams, work: Path, runs: int) -> None:
    sizes = results.sizes
    rate = sizes.latency_rate
    p50 = results.figure("lat50", f"ack latency p50 at {rate:,}/s paced", "ms", digits=2)
    p99 = results.figure(
        "lat99", f"ack latency p99 at {rate:,}/s paced", "ms", digits=2,
        target="<= 10 ms", check=lambda v: v <= 10,
    )  # fmt: skip
    achieved = results.figure("latrate", f"achieved rate of the paced {rate:,}/s run", "writes/s")
    for run in PROGRESS.runs(f"paced latency at {rate:,}/s", runs):
        lanes = lane_requests([f"p{run}-doc{i}" for i in range(CLIENTS)], streams.lanes)
        data_dir = work / f"latency-{run}"
        with running_node(data_dir) as (node, _):
            await _warm_up(node.port, streams)
            before = await _storage_counters(node.port)
            gc.collect()
            result = await paced(node.port, lanes, rate, sizes.latency_seconds, CpuMeter(node.pid))
            after = await _storage_counters(node.port)
        shutil.rmtree(data_dir, ignore_errors=True)
        p50.values.append(result.percentile(50) * 1e3)
        p99.values.append(result.percentile(99) * 1e3)
        achieved.values.append(result.rate)
        detail = f"run {run + 1}: " + _load_details(result, _delta(before, after))
        detail += f", max {max(result.latencies) * 1e3:.1f} ms"
        p99.details.append(detail)
        log(f"  paced {rate}/s, run {run + 1}: {detail}")


# -- generator ceiling and HTTP floor ----------------------------------------------------------

_TRIVIAL_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"
)


class _TrivialProtocol(asyncio.Protocol):
    """Answers every HTTP/1.1 request with a fixed 200, reading past any body."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            if len(buffer) < end + 4 + length:
                return
            del buffer[: end + 4 + length]
            assert self._transport is not None
            self._transport.write(_TRIVIAL_RESPONSE)


def serve_trivial() -> None:
    """``--serve-trivial``: a minimal HTTP server process; prints its port, runs until killed."""

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_TrivialProtocol, HOST, 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())


def start_trivial_server() -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-trivial"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


async def bench_http_floor(results: Results, streams: Streams, work: Path, runs: int) -> None:
    sizes = results.sizes
    ceiling = results.figure("gen", "load generator ceiling, 16 clients, trivial server", "req/s")
    floor = results.figure("health", "node GET /v1/health, 16 clients (no storage)", "req/s")
    post_lanes = lane_requests([f"t{i}" for i in range(CLIENTS)], [s[:1000] for s in streams.lanes])
    health_lanes = [[get_request("/v1/health")] for _ in range(CLIENTS)]
    for run in PROGRESS.runs("generator ceiling and GET /v1/health", runs):
        trivial, port = start_trivial_server()
        try:
            result = await closed_loop(
                port, post_lanes, sizes.write_seconds, CpuMeter(trivial.pid), cycle=True
            )
        finally:
            trivial.kill()
            trivial.wait()
            if trivial.stdout is not None:
                trivial.stdout.close()
        ceiling.values.append(result.rate)
        ceiling.details.append(
            f"run {run + 1}: " + _load_details(result).replace("server CPU", "trivial server CPU")
        )
        log(f"  generator ceiling, run {run + 1}: {result.rate:,.0f} req/s ({ceiling.details[-1]})")
        data_dir = work / f"health-{run}"
        with running_node(data_dir) as (node, _):
            await closed_loop(node.port, health_lanes, 0.5, None, cycle=True)
            result = await closed_loop(
                node.port, health_lanes, sizes.write_seconds, CpuMeter(node.pid), cycle=True
            )
        shutil.rmtree(data_dir, ignore_errors=True)
        floor.values.append(result.rate)
        floor.details.append(f"run {run + 1}: " + _load_details(result))
        log(f"  GET /v1/health, run {run + 1}: {result.rate:,.0f} req/s ({floor.details[-1]})")


# -- 3. references -----------------------------------------------------------------------------


def duckdb_commits(path: Path, seconds: float) -> float:
    """Single-row INSERTs, one transaction (and one commit) each, into a DuckDB file."""
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE TABLE updates (doc_id VARCHAR, seq BIGINT, data BLOB)")
        payload = b"\x01\x01\xe9\x07\x06\x84\xe9\x07\x05\x06ipsum \x00"
        count = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            con.execute("BEGIN")
            con.execute("INSERT INTO updates VALUES (?, ?, ?)", ["doc", count, payload])
            con.execute("COMMIT")
            count += 1
        return count / (time.perf_counter() - started)
    finally:
        con.close()


async def ystore_updates(db_path: Path, updates: Sequence[bytes], seconds: float) -> float:
    """The typing updates written one by one through pycrdt-store's SQLiteYStore (each write
    is its own SQLite transaction, default journal and synchronous settings)."""
    from pycrdt.store import SQLiteYStore

    store_class = type("BenchYStore", (SQLiteYStore,), {"db_path": str(db_path)})
    async with store_class(path="bench-doc") as ystore:
        await ystore.write(updates[0])  # waits for the schema
        count = 0
        started = time.perf_counter()
        deadline = started + seconds
        for update in updates[1:]:
            if time.perf_counter() >= deadline:
                break
            await ystore.write(update)
            count += 1
        return count / (time.perf_counter() - started)


async def engine_writes(data_dir: Path, lanes: Sequence[Sequence[bytes]], seconds: float) -> float:
    """The crdt engine in this process (no HTTP): one writer task per document, each awaiting
    its durable write before the next."""
    from crdt import open_store

    async with open_store(data_dir) as store:
        await store.apply_update("warmup", lanes[0][0])
        count = 0
        clock = time.perf_counter
        started = clock()
        deadline = started + seconds

        async def writer(doc_id: str, updates: Sequence[bytes]) -> None:
            nonlocal count
            for update in updates:
                if clock() >= deadline:
                    return
                await store.apply_update(doc_id, update)
                count += 1

        await asyncio.gather(*(writer(f"doc{i}", u) for i, u in enumerate(lanes)))
        return count / (clock() - started)


def remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def bench_references(results: Results, streams: Streams, work: Path, runs: int) -> None:
    seconds = results.sizes.reference_seconds
    raw = results.figure("duckdb", "reference: raw DuckDB 1-row INSERT, 1 commit each", "commits/s")
    ystore = results.figure("ystore", "reference: pycrdt-store SQLiteYStore writes", "updates/s")
    engine = results.figure(
        "engine", "reference: crdt engine in-process, 16 writers, 16 docs", "writes/s"
    )
    for run in PROGRESS.runs("references (DuckDB, SQLiteYStore, engine)", runs):
        path = work / f"raw-{run}.duckdb"
        raw.values.append(duckdb_commits(path, seconds))
        remove(path, Path(f"{path}.wal"))
        db_path = work / f"ystore-{run}.db"
        ystore.values.append(await ystore_updates(db_path, streams.single, seconds))
        remove(db_path)
        data_dir = work / f"engine-{run}"
        gc.collect()
        engine.values.append(await engine_writes(data_dir, streams.lanes, seconds))
        shutil.rmtree(data_dir, ignore_errors=True)
        log(
            f"  references, run {run + 1}: DuckDB {raw.values[-1]:,.0f} commits/s, "
            f"SQLiteYStore {ystore.values[-1]:,.0f} updates/s, "
            f"engine {engine.values[-1]:,.0f} writes/s"
        )


# -- 4. memory and start-up with many stored documents -----------------------------------------


async def populate(data_dir: Path, count: int, concurrency: int = 512) -> float:
    """Stores ``count`` small documents through the crdt engine in-process; returns seconds."""
    from crdt import open_store

    documents = [(f"doc-{i:06d}", small_document(i)) for i in range(count)]
    started = time.perf_counter()
    async with open_store(data_dir) as store:
        queue = iter(documents)

        async def worker() -> None:
            for doc_id, update in queue:
                await store.apply_update(doc_id, update)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def read_documents(port: int, doc_ids: Sequence[str]) -> float:
    """GETs the JSON view of each document (16 connections); returns reads/s."""
    lanes = [[get_request(f"/v1/docs/{d}") for d in doc_ids[i::CLIENTS]] for i in range(CLIENTS)]
    result = await closed_loop(port, lanes, 3600.0, None)
    if result.errors:
        raise RuntimeError(f"{result.errors} reads failed")
    return result.rate


async def bench_memory(results: Results, work: Path, runs: int) -> None:
    sizes = results.sizes
    stored, hot = sizes.stored_documents, sizes.hot_documents
    data_dir = work / "stored"
    log(f"  storing {stored:,} small documents through the engine ...")
    seconds = await populate(data_dir, stored)
    size = sum(p.stat().st_size for p in data_dir.iterdir() if p.is_file())
    results.notes.append(
        f"populate: {stored:,} documents stored through crdt.open_store in {seconds:.1f}s "
        f"({stored / seconds:,.0f} docs/s, 512 concurrent writers); "
        f"data directory {size / 2**20:.1f} MiB"
    )
    startup = results.figure(
        "startup", f"start-up to /v1/health with {stored:,} docs stored", "s", digits=2,
        target="sized:<= 2 s", check=lambda v: v <= 2,
    )  # fmt: skip
    empty = results.figure("startup0", "start-up to /v1/health, empty data dir", "s", digits=2)
    idle = results.figure("rss0", f"RSS idle, {stored:,} docs stored", "MiB", digits=1)
    rss = results.figure(
        "rss", f"RSS with {stored:,} stored, {hot:,} hot (read)", "MiB", digits=1,
        target="sized:<= 250 MB", check=lambda v: v * 2**20 <= 250e6,
    )  # fmt: skip
    reads = results.figure(
        "reads", f"cold reads of {hot:,} docs (GET /v1/docs/{{id}}), 16 clients", "reads/s"
    )
    step = max(1, stored // hot)
    hot_ids = [f"doc-{i:06d}" for i in range(0, stored, step)][:hot]
    for run in PROGRESS.runs("start-up, RSS and cold reads", runs):
        with running_node(work / f"empty-{run}") as (_, seconds):
            empty.values.append(seconds)
        shutil.rmtree(work / f"empty-{run}", ignore_errors=True)
        with running_node(data_dir) as (node, seconds):
            startup.values.append(seconds)
            await asyncio.sleep(0.5)
            idle.values.append(node.memory_kib()["VmRSS"] / 1024)
            reads.values.append(await read_documents(node.port, hot_ids))
            documents = (await get_json(node.port, "/v1/cluster"))["documents"]
            await asyncio.sleep(0.5)
            memory = node.memory_kib()
            rss.values.append(memory["VmRSS"] / 1024)
        rss.details.append(
            f"run {run + 1}: peak RSS {memory['VmHWM'] / 1024:.1f} MiB, "
            f"hot {documents['hot']:,} docs ({documents['hot_bytes']:,} bytes), "
            f"live {documents['live']:,}"
        )
        log(
            f"  memory, run {run + 1}: start-up {startup.values[-1]:.2f}s "
            f"(empty {empty.values[-1]:.2f}s), "
            f"RSS idle {idle.values[-1]:.1f} MiB, with {hot} hot {rss.values[-1]:.1f} MiB, "
            f"{reads.values[-1]:,.0f} reads/s"
        )


# -- main --------------------------------------------------------------------------------------

SECTIONS = ("floor", "writes", "latency", "references", "memory")


async def run_all(args: argparse.Namespace, sizes: Sizes, work: Path) -> Results:
    results = Results(sizes)
    sections = set(args.sections.split(",")) if args.sections else set(SECTIONS)
    streams = (
        make_streams(sizes) if sections & {"floor", "writes", "latency", "references"} else None
    )
    gc.collect()
    gc.freeze()  # the pre-generated updates: keep the collector from walking them mid-run
    for section in SECTIONS:
        if section not in sections:
            continue
        PROGRESS.section(section, args.runs)
        if section == "floor":
            assert streams is not None
            await bench_http_floor(results, streams, work, args.runs)
        elif section == "writes":
            assert streams is not None
            await bench_writes(results, streams, work, args.runs)
        elif section == "latency":
            assert streams is not None
            await bench_latency(results, streams, work, args.runs)
        elif section == "references":
            assert streams is not None
            await bench_references(results, streams, work, args.runs)
        elif section == "memory":
            await bench_memory(results, work, args.runs)
    return results


def report(
    results: Results, machine: dict[str, str], args: argparse.Namespace, seconds: float
) -> str:
    lines = ["Machine:"]
    lines += [f"  {key}: {value}" for key, value in machine.items()]
    lines += [
        "  note: the load generator runs on the same machine and competes with the node for its "
        "cores (see the CPU split in the details)",
        "",
        f"Results (median of {args.runs} run(s){', QUICK sizes' if args.quick else ''}; "
        f"benchmark took {seconds:.0f}s):",
        "",
        results.table(),
        "",
        "Details:",
    ]
    lines += [f"  {line}" for line in results.detail_lines()]
    return "\n".join(lines)


def results_json(
    results: Results, machine: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    figures = {
        key: {
            "name": f.name,
            "unit": f.unit,
            "median": f.median,
            "values": f.values,
            "target": f.target.removeprefix("sized:"),
            "result": f.verdict(results.sizes.full),
            "details": f.details,
        }
        for key, f in results.figures.items()
    }
    return {
        "date": datetime.date.today().isoformat(),
        "machine": machine,
        "runs": args.runs,
        "quick": args.quick,
        "figures": figures,
        "notes": results.notes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes for a smoke run (1 run by default)"
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per figure (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--sections", default="", help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--data-root", default=None, help="where data directories go (default: system temp)"
    )
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    parser.add_argument(
        "--markdown", default=None, help="also write the machine and table as Markdown here"
    )
    parser.add_argument(
        "--guard",
        action="store_true",
        help="exit with status 1 when a regression guard (the write path's) is missed",
    )
    parser.add_argument("--serve-trivial", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.serve_trivial:
        serve_trivial()
        return 0
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    sizes = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="meridian-bench-", dir=args.data_root))
    machine = machine_info(work)
    started = time.perf_counter()
    try:
        results = asyncio.run(run_all(args, sizes, work))
    finally:
        gc.unfreeze()
        shutil.rmtree(work, ignore_errors=True)
    text = report(results, machine, args, time.perf_counter() - started)
    print(text)
    if args.json:
        payload = results_json(results, machine, args)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        machine_md = "\n".join(f"- {key}: {value}" for key, value in machine.items())
        Path(args.markdown).write_text(f"{machine_md}\n\n{results.markdown()}\n", encoding="utf-8")
    missed = [
        f.name for f in results.figures.values() if f.guard and f.verdict(sizes is FULL) == "MISSED"
    ]
    if args.guard and missed:
        print(f"missed: {'; '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
