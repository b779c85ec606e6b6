"""Test support: real nodes on loopback, in this process (uvicorn in a thread) or as processes.

Deadlines scale with MERIDIAN_TEST_TIMEOUT_FACTOR (default 1) for slow machines.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from app.config import ClusterConfig, NodeSettings
from app.http import create_app

T = TypeVar("T")

TIMEOUT_FACTOR = float(os.environ.get("MERIDIAN_TEST_TIMEOUT_FACTOR", "1"))
REPO = Path(__file__).resolve().parent.parent


def run_meridian(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The meridian command (``python -m app``), run to completion from the repository with
    its output captured as text; ``env`` replaces the environment when given."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout * TIMEOUT_FACTOR,
    )


def deadline(seconds: float) -> float:
    return time.monotonic() + seconds * TIMEOUT_FACTOR


def wait_for(condition: Callable[[], T], *, timeout: float = 10.0, what: str = "condition") -> T:
    """Polls ``condition`` until it returns something truthy; fails after ``timeout`` seconds."""
    end = deadline(timeout)
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(
                f"timed out after {timeout * TIMEOUT_FACTOR:.1f}s waiting for {what}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class ThreadedNode:
    """A node served by uvicorn in a background thread, on 127.0.0.1 and a free port."""

    def __init__(
        self,
        data_dir: Path,
        *,
        region: str = "eu-west",
        node_id: str = "eu-west-1",
        cluster: ClusterConfig | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = NodeSettings(
            node_id=node_id,
            region=region,
            host="127.0.0.1",
            port=self.port,
            data_dir=data_dir,
            cluster=cluster or ClusterConfig(),
        )
        self.app = create_app(self.settings)
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="on", log_config=None
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> ThreadedNode:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=15, what="uvicorn to start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30 * TIMEOUT_FACTOR)
        self.sock.close()
        assert not self.thread.is_alive(), "server thread did not stop"

    @property
    def node(self) -> Any:
        return self.app.state.node

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30 * TIMEOUT_FACTOR)


class NodeProcess:
    """A real ``meridian serve`` process on a free loopback port."""

    READY = re.compile(r"serving (http://\S+)")

    def __init__(
        self,
        data_dir: Path,
        *,
        region: str = "eu-west",
        extra: list[str] | None = None,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        listen: str = "127.0.0.1:0",
    ) -> None:
        self.data_dir = data_dir
        self.listen = listen
        self.region = region
        self.extra = extra or []
        self.config = config
        self.env = env
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []
        self._drainer: threading.Thread | None = None

    def command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "app",
            "serve",
            "--region",
            self.region,
            "--listen",
            self.listen,
            "--data",
            str(self.data_dir),
            "--log-level",
            "warning",
        ]
        if self.config is not None:
            command += ["--config", str(self.config)]
        return command + self.extra

    def start(self, timeout: float = 30) -> NodeProcess:
        env = {**os.environ, **(self.env or {})}
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env=env,
        )
        end = deadline(timeout)
        assert self.process.stdout is not None
        while time.monotonic() < end:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = self.READY.search(line)
            if match:
                self.url = match.group(1)
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return self
        self.process.kill()
        rest = self.process.stdout.read() if self.process.stdout else ""
        self.process.wait()
        self.process.stdout.close()
        raise AssertionError(f"node did not start: {''.join(self.output)}{rest}")

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._close_output()

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM; returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=timeout * TIMEOUT_FACTOR)
        self._close_output()
        return status

    def close(self) -> None:
        """Kills the process if it still runs and releases its pipe (fixtures call this)."""
        if self.process is not None and self.process.poll() is None:
            self.kill()
        self._close_output()

    def _close_output(self) -> None:
        if self._drainer is not None:
            self._drainer.join(timeout=10)
            self._drainer = None
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30 * TIMEOUT_FACTOR)


class OutputLines:
    """The lines a child process writes to its stdout (a text pipe), read by a thread as
    they come, so a test can wait for one while the process runs."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.stream = process.stdout
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        self.lines.extend(self.stream)

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def text(self) -> str:
        return "".join(self.lines)

    def join(self) -> None:
        """Waits for the end of the stream (the process exited) and closes it."""
        self.thread.join(timeout=10)
        self.stream.close()
