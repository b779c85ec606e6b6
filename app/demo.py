"""``meridian demo``: start a real node and take a short scripted tour of its HTTP API.

The node is a separate ``meridian serve`` process (the same one an operator runs); the tour
talks to it over HTTP only, printing each request and what came back, with timings.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pycrdt

__all__ = ["run_demo"]


def _request(
    method: str, url: str, body: bytes | None = None, content_type: str | None = None
) -> tuple[int, bytes, float]:
    request = urllib.request.Request(url, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), time.perf_counter() - started
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), time.perf_counter() - started


def _show(title: str, method: str, url: str, status: int, body: bytes, seconds: float) -> Any:
    print(f"\n== {title}\n$ {method} {url}\n-> {status} in {seconds * 1000:.1f} ms")
    try:
        parsed = json.loads(body)
    except ValueError:
        print(f"   {len(body)} bytes of binary")
        return None
    text = json.dumps(parsed, indent=2, ensure_ascii=False)
    print("\n".join("   " + line for line in text.splitlines()))
    return parsed


def _wait_healthy(base: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the node exited with status {process.returncode}")
        try:
            status, _, _ = _request("GET", f"{base}/v1/health")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the node did not become healthy in time")


def tour(base: str) -> None:
    """The scripted tour against a running node at ``base``."""

    def call(
        title: str, method: str, path: str, body: Any = None, binary: bytes | None = None
    ) -> Any:
        data, ctype = None, None
        if body is not None:
            data, ctype = json.dumps(body).encode(), "application/json"
        if binary is not None:
            data, ctype = binary, "application/octet-stream"
        status, raw, seconds = _request(method, base + path, data, ctype)
        return _show(title, method, base + path, status, raw, seconds)

    call("Who is this node?", "GET", "/v1/health")
    ops = {
        "ops": [
            {"op": "set", "path": ["settings", "theme"], "value": "dark"},
            {"op": "insert_text", "path": ["body"], "index": 0, "text": "Hello from Meridian 😀"},
            {"op": "append", "path": ["items"], "values": ["milk", {"qty": 2}]},
        ]
    }
    written = call(
        "Write JSON operations (one durable transaction)", "PATCH", "/v1/docs/notes", ops
    )
    call("Read the JSON view", "GET", "/v1/docs/notes")

    # A Yjs client (pycrdt here; JavaScript Yjs works the same) edits its own copy and sends
    # the binary update.
    status, state, _ = _request("GET", base + "/v1/docs/notes/update")
    client: pycrdt.Doc[Any] = pycrdt.Doc()
    client.apply_update(state)
    before = client.get_state()
    text = client.get("body", type=pycrdt.Text)
    text += " and from a Yjs client"
    update = client.get_update(before)
    print(f"\n(a Yjs client made a {len(update)}-byte update)")
    call("Send a binary Yjs update", "POST", "/v1/docs/notes/update", binary=update)
    since = base64.urlsafe_b64encode(bytes.fromhex("00")).decode()
    call(
        "Diff since an empty state vector (the whole document)",
        "GET",
        f"/v1/docs/notes/update?since={since}",
    )
    if written:
        sv = written["state_vector"]
        status, diff, _seconds = _request(
            "GET", f"{base}/v1/docs/notes/update?since={urllib.parse.quote(sv)}"
        )
        print(f"\n== Diff since the first write's state vector\n-> {status}, {len(diff)} bytes")

    call(
        "Bad input is refused and changes nothing",
        "POST",
        "/v1/docs/notes/update",
        binary=os.urandom(24),
    )
    call(
        "...an invalid operation too",
        "PATCH",
        "/v1/docs/notes",
        {"ops": [{"op": "insert_text", "path": ["settings"], "index": 0, "text": "x"}]},
    )
    call("The document is unchanged", "GET", "/v1/docs/notes")
    call("List documents", "GET", "/v1/docs?prefix=no&limit=10")
    call("Delete (a tombstone)", "DELETE", "/v1/docs/notes")
    call("Gone", "GET", "/v1/docs/notes")
    call(
        "Writing again starts a new incarnation",
        "PATCH",
        "/v1/docs/notes",
        {"ops": [{"op": "set", "path": ["settings", "theme"], "value": "light"}]},
    )
    call("Cluster view of this node", "GET", "/v1/cluster")


def run_demo(*, listen: str, data: str | None, wait: bool) -> int:
    temp = None
    if data is None:
        temp = tempfile.TemporaryDirectory(prefix="meridian-demo-")
        data = str(Path(temp.name) / "eu-west-1")
    host, _, port = listen.rpartition(":")
    base = f"http://{host}:{port}"
    command = [
        sys.executable, "-m", "app", "serve", "--region", "eu-west", "--listen", listen,
        "--data", data, "--log-level", "warning",
    ]  # fmt: skip
    print(f"$ meridian serve --region eu-west --listen {listen} --data {data}", flush=True)
    process = subprocess.Popen(command)
    try:
        started = time.monotonic()
        _wait_healthy(base, process, started + 30)
        print(f"node healthy after {time.monotonic() - started:.2f} s", flush=True)
        tour(base)
        print(f"\nThe node is running: {base}/v1/health  ·  API docs: {base}/docs")
        if wait:
            print("Press Ctrl-C to stop it.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                process.wait()
        return 0
    except RuntimeError as exc:
        print(f"meridian demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        print("node stopped", flush=True)
        if temp is not None:
            temp.cleanup()
