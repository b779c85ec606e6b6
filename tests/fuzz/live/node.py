"""The node under fire: a real ``meridian serve`` process on loopback with a fresh data
directory and its own topology file, in one of three modes, or a node someone else runs.

- ``standalone``: no cluster secret, no tokens (a lone node: no replication, no records);
- ``cluster``: listed in a one-node topology with the cluster secret, tokens off: placement
  records, the member list, signed forwards and the peer endpoint are live;
- ``auth``: the same with ``[auth] required = true``: every route checks tokens.

Small limits make the limits reachable: 256 KiB bodies, 64 KiB WebSocket messages, 100
operations, 32 documents in memory (seeded ones are evicted and read back from DuckDB),
compaction every 8 updates, 0.25 s for ``after=`` and durability waits.
"""

from __future__ import annotations

import collections
import os
import re
import secrets
import signal
import socket
import time
from pathlib import Path

import httpx

from app.config import ClusterConfig, NodeSettings
from app.http import create_app
from tests.support import TIMEOUT_FACTOR, NodeProcess

__all__ = ["MODES", "ExternalNode", "LiveNode", "app_routes", "log_problems"]

MODES = ("standalone", "cluster", "auth")
SECRET_ENV = "MERIDIAN_FUZZ_SECRET"
NODE_ID = "eu-west-1"

LIMITS = {"max_body": 262144, "max_message": 65536, "max_operations": 100}

_CONFIG = f"""\
[cluster]
name = "meridian-fuzz"
secret_env = "{SECRET_ENV}"

[placement]
replicas = 1

[limits]
max_body_bytes = {LIMITS["max_body"]}
max_document_bytes = 2097152
max_operations = {LIMITS["max_operations"]}
max_list_limit = 50
max_pending_bytes = 16384

[storage]
max_hot_documents = 32
max_hot_bytes = 8388608
compact_after_updates = 8
max_batch = 64
duckdb_memory_limit = "128MB"

[clients]
max_connections = 256
max_message_bytes = {LIMITS["max_message"]}
max_buffer_bytes = 262144

[replication]
after_timeout = 0.25
durability_timeout = 0.25
"""

#: The first line of a log record: date, time, level, logger.
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ([A-Z]+) (\S+) ")

#: Known problems the run tolerates (and counts), each with what recognises its log record:
#: (logger, text the record starts with, texts it contains). See docs/fuzzing.md, "What the
#: live fuzzer found".
KNOWN_LOG_RECORDS = {
    "uvicorn-invalid-utf8": [
        ("uvicorn.error", "Invalid UTF-8 sequence received from client.", ()),
        (
            "asyncio",
            "Fatal error on transport",
            ("send_close(1007)", "InvalidState: connection is closing"),
        ),
    ],
}


def log_problems(lines: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(error records, warnings' loggers, known problems' names) among ``lines`` of the
    node's output. A record is its first line and the lines after it that start no record
    (a traceback); an ERROR or CRITICAL record, or a traceback outside any record, is an
    error unless it is a known problem."""
    records: list[tuple[str, str, list[str]]] = []
    for line in lines:
        match = _RECORD.match(line)
        if match is not None:
            records.append((match.group(1), match.group(2), [line]))
        elif records:
            records[-1][2].append(line)
        elif "Traceback (most recent call last)" in line:
            records.append(("ERROR", "?", [line]))
    errors: list[str] = []
    warnings: list[str] = []
    known: list[str] = []
    for level, logger, record_lines in records:
        text = "".join(record_lines)
        if level == "WARNING":
            warnings.append(logger)
        if level not in ("ERROR", "CRITICAL") and "Traceback (most recent" not in text:
            continue
        name = _known(logger, text.split(f" {logger} ", 1)[-1], text)
        if name is not None:
            known.append(name)
        else:
            errors.append(text.rstrip())
    return errors, warnings, known


def _known(logger: str, message: str, text: str) -> str | None:
    for name, patterns in KNOWN_LOG_RECORDS.items():
        for known_logger, start, contained in patterns:
            started = logger == known_logger and message.startswith(start)
            if started and all(part in text for part in contained):
                return name
    return None


#: How the node is started: ``meridian serve`` with faulthandler listening to SIGUSR1, so
#: that a hang can be diagnosed (every thread's stack on stderr: where the event loop is).
_LAUNCHER = (
    "import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1, all_threads=True); "
    "from app.cli import main; sys.argv[0] = 'meridian'; sys.exit(main())"
)


class _Process(NodeProcess):
    def command(self) -> list[str]:
        command = super().command()
        assert command[1:3] == ["-m", "app"], command
        return [command[0], "-c", _LAUNCHER, *command[3:]]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LiveNode:
    """A node process in ``mode`` with its data and topology under ``workdir``."""

    def __init__(self, mode: str, workdir: Path) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.workdir = workdir
        self.secret = secrets.token_hex(16).encode() if mode != "standalone" else None
        self.auth = mode == "auth"
        self.node_id = NODE_ID
        self.port = _free_port() if mode != "standalone" else 0
        config = _CONFIG
        if mode != "standalone":
            config += f"\n[auth]\nrequired = {'true' if self.auth else 'false'}\n"
            config += f'\n[regions.eu-west]\nnodes = ["127.0.0.1:{self.port}"]\n'
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "regions.toml"
        self.config.write_text(config, encoding="utf-8")
        self.data = workdir / NODE_ID
        self.process: NodeProcess | None = None
        # The last lines of output (the process's own list is emptied as it is read).
        self._tail: collections.deque[str] = collections.deque(maxlen=200)

    def start(self) -> LiveNode:
        env = {
            SECRET_ENV: self.secret.decode() if self.secret else "",
            "MERIDIAN_AUTH_REQUIRED": "",
            "MERIDIAN_LOG_FORMAT": "text",
            # Yrs panics on some refused updates (caught, answered 400): no backtraces.
            "RUST_BACKTRACE": "0",
        }
        self.process = _Process(
            self.data, config=self.config, env=env, listen=f"127.0.0.1:{self.port}"
        ).start()
        self.port = int(self.process.url.rsplit(":", 1)[1])
        return self

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.process.pid if self.process and self.process.process else None

    def alive(self) -> bool:
        return bool(self.process and self.process.process and self.process.process.poll() is None)

    def exit_status(self) -> int | None:
        if self.process is None or self.process.process is None:
            return None
        return self.process.process.poll()

    def rss_kb(self) -> int | None:
        """The process's resident memory (VmRSS), in KiB."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text(encoding="ascii")
        except (OSError, ValueError):
            return None
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) if match else None

    def take_log(self) -> list[str]:
        """The node's output lines since the last call."""
        if self.process is None:
            return []
        output = self.process.output
        lines = output[:]
        del output[: len(lines)]  # the drain thread only appends: nothing is lost
        self._tail.extend(lines)
        return lines

    def log_tail(self, count: int = 40) -> list[str]:
        self.take_log()
        return [line.rstrip() for line in list(self._tail)[-count:]]

    def stop(self) -> int:
        """SIGTERM; the exit status (0 for a clean stop)."""
        assert self.process is not None
        status = self.process.terminate(timeout=60)
        return status

    def dump_stacks(self) -> list[str]:
        """Every thread's stack, as faulthandler writes it on SIGUSR1 (read back from the
        node's output once it stops growing)."""
        if not self.alive() or self.pid is None:
            return []
        self.take_log()
        os.kill(self.pid, signal.SIGUSR1)
        lines: list[str] = []
        deadline = time.monotonic() + 5 * TIMEOUT_FACTOR
        while time.monotonic() < deadline:
            more = self.take_log()
            lines += more
            if lines and not more:
                break
            time.sleep(0.2)  # output arrives through a pipe: no event to wait on
        return [line.rstrip() for line in lines]

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.process is not None
        self.take_log()
        self.process.kill()

    def close(self) -> None:
        if self.process is not None:
            self.process.close()


class ExternalNode:
    """A node started elsewhere (``--node URL``): no process to watch, no log to read."""

    def __init__(self, url: str, secret: bytes | None) -> None:
        self.mode = "external"
        parsed = httpx.URL(url)
        if parsed.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the live fuzzer only sends to loopback addresses")
        self.port = parsed.port or 80
        self.secret = secret
        self.node_id = "?"
        self.auth = False
        self.pid = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ExternalNode:
        with httpx.Client(base_url=self.url, timeout=10 * TIMEOUT_FACTOR) as client:
            health = client.get("/v1/health")
            health.raise_for_status()
            self.node_id = health.json()["node"]
            self.auth = client.get("/v1/docs").status_code == 401
        if self.auth and not self.secret:
            raise ValueError("this node requires tokens: pass the cluster secret (--secret)")
        return self

    def alive(self) -> bool:
        try:
            with httpx.Client(base_url=self.url, timeout=10 * TIMEOUT_FACTOR) as client:
                return client.get("/v1/health").status_code == 200
        except httpx.HTTPError:
            return False

    def exit_status(self) -> int | None:
        return None

    def rss_kb(self) -> int | None:
        return None

    def take_log(self) -> list[str]:
        return []

    def log_tail(self, count: int = 40) -> list[str]:
        return []

    def close(self) -> None:
        pass


def app_routes() -> set[str]:
    """Every route of the node's app, as ``METHOD /path`` (``WS /path`` for WebSockets,
    ``MOUNT /path`` for a mounted app), read from the app itself: a route added to the node
    without a generator here is noticed."""
    settings = NodeSettings(
        node_id="x", region="eu-west", host="127.0.0.1", port=1, data_dir=Path("unused"),
        cluster=ClusterConfig(),
    )  # fmt: skip
    found: set[str] = set()

    def walk(routes: list[object]) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(inner.routes)
                continue
            path = getattr(route, "path", None)
            methods = getattr(route, "methods", None)
            kind = type(route).__name__
            if "WebSocket" in kind:
                found.add(f"WS {path}")
            elif methods:
                found.update(f"{method} {path}" for method in methods)
            else:
                found.add(f"MOUNT {path}")

    walk(list(create_app(settings).routes))
    return found
