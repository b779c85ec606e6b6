"""Performing actions against a node: HTTP requests over raw sockets (so that headers,
framing and bytes can lie), WebSocket sessions through the ``websockets`` client, and
WebSocket frames built by hand after a raw handshake. :func:`send` performs one action (see
:mod:`.actions`) and returns its :class:`~.actions.Outcome` (statuses answered, close codes
received, whether it hung). Nothing here decides what is a failure: :mod:`.judge` does."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import socket
import struct
import time
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from .actions import Action, Frame, HttpRequest, Outcome, RawWs, WsSession

__all__ = ["CLIENT_LOG", "TIMEOUT", "http_bytes", "send"]

#: Seconds an action may take before it counts as a hang (scaled like the test suite's).
TIMEOUT = 15.0 * float(os.environ.get("MERIDIAN_TEST_TIMEOUT_FACTOR", "1"))
#: The WebSocket client's own logger: quiet (a server that drops a connection is judged by
#: the runner, not logged by the client).
CLIENT_LOG = logging.getLogger("tests.fuzz.live.client")
CLIENT_LOG.setLevel(logging.CRITICAL)
CLIENT_LOG.propagate = False
#: Seconds to wait for an answer to raw bytes before ending the stream.
RAW_PATIENCE = 1.0


# -- sending ---------------------------------------------------------------------------------


def send(action: Action, host: str, port: int) -> Outcome:
    """Performs ``action`` against the node at ``host:port``."""
    started = time.monotonic()
    try:
        if isinstance(action, HttpRequest):
            outcome = _send_http(action, host, port)
        elif isinstance(action, WsSession):
            outcome = _send_ws(action, host, port)
        else:
            outcome = _send_raw_ws(action, host, port)
    except ConnectionRefusedError:
        outcome = Outcome(refused_connection=True)
    outcome.seconds = time.monotonic() - started
    return outcome


def http_bytes(request: HttpRequest, host: str, port: int) -> bytes:
    """The bytes of ``request`` as sent: request line, headers (Host and Content-Length added
    unless the request has its own, Connection: close unless it says otherwise), body."""
    names = {name.lower() for name, _ in request.headers}
    headers = list(request.headers)
    if b"host" not in names:
        headers.insert(0, (b"Host", f"{host}:{port}".encode()))
    if b"connection" not in names and not request.pipelined:
        headers.append((b"Connection", b"close"))
    body = request.body
    framing = request.framing
    declared = b"content-length" in names or b"transfer-encoding" in names
    if framing in ("chunked", "bad-chunked"):
        if not declared:
            headers.append((b"Transfer-Encoding", b"chunked"))
        body = _chunked(body, lie=framing == "bad-chunked")
    elif not declared and framing != "none" and (body or request.method in (b"POST", b"PUT")):
        size = len(body)
        if framing == "long":
            size += 1 + len(body) % 97
        elif framing == "short":
            size = len(body) // 2
        headers.append((b"Content-Length", str(size).encode()))
    if request.raw:
        return request.raw
    head = request.method + b" " + request.target + b" " + request.version + b"\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return head + b"\r\n" + body


def _chunked(body: bytes, *, lie: bool) -> bytes:
    out = b""
    step = max(1, len(body) // 3 or 1)
    for start in range(0, len(body), step):
        piece = body[start : start + step]
        size = len(piece) + (7 if lie else 0)
        out += f"{size:x}".encode() + b"\r\n" + piece + b"\r\n"
    return out + (b"zz\r\n" if lie else b"0\r\n\r\n")


def _send_http(request: HttpRequest, host: str, port: int) -> Outcome:
    outcome = Outcome()
    data = http_bytes(request, host, port) + b"".join(request.pipelined)
    expected = 1 + len(request.pipelined)
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if request.framing == "split":
                for start in range(0, len(data), 7):
                    sock.sendall(data[start : start + 7])
            else:
                sock.sendall(data)
            if request.framing in ("long", "bad-chunked"):
                # The body never completes: the server must notice that nothing more comes
                # (the end of the stream) instead of waiting for it.
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # answered and closed before the whole request was sent: read the answer
        head_only = request.method == b"HEAD"
        if request.raw:
            # Bytes that may not even end a request: give the server a moment to answer
            # what it could parse, then end the stream.
            _read_http(sock, outcome, expected, head_only, patience=RAW_PATIENCE)
            if not outcome.statuses and outcome.hung is not None:
                outcome.hung = None
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                _read_http(sock, outcome, expected, head_only)
        else:
            _read_http(sock, outcome, expected, head_only)
    return outcome


def _read_http(
    sock: socket.socket,
    outcome: Outcome,
    expected: int,
    head_only: bool,
    patience: float = TIMEOUT,
) -> None:
    buffer = b""
    deadline = time.monotonic() + patience
    closed = False
    while True:
        parsed, buffer = _parse_answers(buffer, closed, head_only)
        for status, body in parsed:
            if not outcome.statuses:
                outcome.body = body
            outcome.statuses.append(status)
            outcome.codes.append(_error_code(body))
        if len(outcome.statuses) >= expected or closed:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            outcome.hung = f"no complete answer within {patience:g}s ({len(buffer)} bytes came)"
            return
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            closed = True
        buffer += chunk


def _parse_answers(
    buffer: bytes, closed: bool, head_only: bool
) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete final answers at the front of ``buffer`` (1xx skipped), and what is left."""
    answers: list[tuple[int, bytes]] = []
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return answers, buffer
        lines = buffer[:end].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            # Not HTTP (never from uvicorn): keep it as an answer the runner reports.
            return [*answers, (999, buffer[:200])], b""
        status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        rest = buffer[end + 4 :]
        if 100 <= status < 200:
            buffer = rest
            continue
        if head_only or status in (204, 304):
            body, buffer = b"", rest
        elif b"content-length" in headers and headers[b"content-length"].isdigit():
            size = int(headers[b"content-length"])
            if len(rest) < size:
                return answers, buffer
            body, buffer = rest[:size], rest[size:]
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            decoded = _dechunk(rest)
            if decoded is None:
                return answers, buffer
            body, buffer = decoded
        else:
            if not closed:
                return answers, buffer
            body, buffer = rest, b""
        answers.append((status, body))


def _dechunk(data: bytes) -> tuple[bytes, bytes] | None:
    body = b""
    position = 0
    while True:
        end = data.find(b"\r\n", position)
        if end < 0:
            return None
        size = int(data[position:end].split(b";")[0] or b"0", 16)
        start = end + 2
        if size == 0:
            trailer = data.find(b"\r\n", start)
            return (body, data[trailer + 2 :]) if trailer >= 0 else None
        if len(data) < start + size + 2:
            return None
        body += data[start : start + size]
        position = start + size + 2


def _error_code(body: bytes) -> str | None:
    try:
        value = json.loads(body)
        code = value["error"]["code"]
    except (ValueError, TypeError, KeyError):
        return None
    return code if isinstance(code, str) else None


def _send_ws(session: WsSession, host: str, port: int) -> Outcome:
    outcome = Outcome()
    url = f"ws://{host}:{port}{session.target}"
    with contextlib.ExitStack() as stack:
        try:
            ws = stack.enter_context(
                connect(
                    url,
                    additional_headers=session.headers,
                    subprotocols=[Subprotocol(name) for name in session.subprotocols] or None,
                    compression=None,
                    proxy=None,
                    open_timeout=TIMEOUT,
                    close_timeout=TIMEOUT,
                    ping_interval=None,
                    max_size=None,
                    user_agent_header=None,
                    logger=CLIENT_LOG,
                )
            )
        except InvalidStatus as exc:
            outcome.statuses.append(exc.response.status_code)
            outcome.codes.append(_error_code(exc.response.body or b""))
            return outcome
        except TimeoutError:
            outcome.hung = f"no WebSocket handshake answer within {TIMEOUT:g}s"
            return outcome
        except (InvalidHandshake, OSError) as exc:
            if isinstance(exc, ConnectionRefusedError):
                raise
            outcome.statuses.append(101)
            outcome.codes.append(f"handshake: {type(exc).__name__}")
            return outcome
        outcome.statuses.append(101)
        outcome.codes.append(None)
        try:
            if session.snapshot is not None:
                _check_snapshot(ws, session.snapshot, outcome)
            for frame in session.frames:
                _send_frame(ws, frame)
                outcome.frames_sent += 1
            if session.probe:
                ws.send(b"\x00\x00\x01\x00")  # sync step 1, empty state vector
                outcome.frames_sent += 1
                _await_step2(ws, outcome)
            ws.close(session.close_code)
        except ConnectionClosed:
            pass
        except TimeoutError:
            outcome.hung = f"no answer to the probe within {TIMEOUT:g}s"
    received = ws.protocol.close_rcvd
    if received is not None:
        outcome.close_codes.append(received.code)
    elif outcome.hung is None:
        outcome.close_codes.append(1006)
    return outcome


def _send_frame(ws: Any, frame: Frame) -> None:
    if frame.kind == "text":
        ws.send(frame.data, text=True)
    elif frame.kind == "binary":
        ws.send(frame.data)
    else:
        cuts = [0, *sorted(c for c in frame.cuts if 0 < c < len(frame.data)), len(frame.data)]
        ws.send([frame.data[a:b] for a, b in itertools.pairwise(cuts)])


def _await_step2(ws: Any, outcome: Outcome) -> None:
    """Reads until the answer to the probe (a sync step 2) comes; the server may close
    first (it refused an earlier frame), which ends the session too."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        message = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        if isinstance(message, bytes) and message[:2] == b"\x00\x01":
            return


def _check_snapshot(ws: Any, content: dict[str, Any], outcome: Outcome) -> None:
    message = ws.recv(timeout=TIMEOUT)
    try:
        event = json.loads(message)
    except (TypeError, ValueError):
        outcome.wrong = f"the events stream's first message is not JSON: {message[:100]!r}"
        return
    if event.get("type") != "snapshot" or event.get("content") != content:
        outcome.wrong = f"the events stream's snapshot differs from the seeded content: {event}"


def _send_raw_ws(action: RawWs, host: str, port: int) -> Outcome:
    outcome = Outcome()
    request = action.request.replace(b"\r\n", f"\r\nHost: {host}:{port}\r\n".encode(), 1)
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        head, rest = _read_head(sock, outcome)
        if head is None:
            return outcome
        status = int(head.split(b" ", 2)[1]) if head[:5] == b"HTTP/" else 999
        outcome.statuses.append(status)
        outcome.codes.append(None)
        if status != 101:
            return outcome
        try:
            for frame in action.frames:
                sock.sendall(frame)
                outcome.frames_sent += 1
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server closed first: read how
        _read_close(sock, rest, outcome)
    return outcome


def _read_head(sock: socket.socket, outcome: Outcome) -> tuple[bytes | None, bytes]:
    buffer = b""
    deadline = time.monotonic() + TIMEOUT
    while b"\r\n\r\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            outcome.hung = f"no handshake answer within {TIMEOUT:g}s"
            return None, b""
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if buffer:
                break
            outcome.close_codes.append(1006)
            return None, b""
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


def _read_close(sock: socket.socket, buffer: bytes, outcome: Outcome) -> None:
    """Reads the server's frames until its close frame (its code recorded) or the end."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        frame = _server_frame(buffer)
        if frame is not None:
            opcode, payload, buffer = frame
            if opcode == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                outcome.close_codes.append(code)
                return
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            outcome.hung = f"no close frame within {TIMEOUT:g}s"
            return
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            outcome.close_codes.append(1006)
            return
        buffer += chunk


def _server_frame(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    if len(buffer) < 2:
        return None
    opcode = buffer[0] & 0x0F
    length = buffer[1] & 0x7F
    offset = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length = struct.unpack("!H", buffer[2:4])[0]
        offset = 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length = struct.unpack("!Q", buffer[2:10])[0]
        offset = 10
    if buffer[1] & 0x80:
        offset += 4  # a server never masks; skip a mask anyway
    if len(buffer) < offset + length:
        return None
    return opcode, buffer[offset : offset + length], buffer[offset + length :]
