"""What the live fuzzer sends, as plain records: HTTP requests (:class:`HttpRequest`),
WebSocket sessions (:class:`WsSession`), hand-written WebSocket handshakes and frames
(:class:`RawWs`), and what came back (:class:`Outcome`). :func:`to_json` and :func:`from_json`
turn an action into a reproducer file's entry and back; :func:`describe` names one in a few
lines. :mod:`.wire` performs them."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Action",
    "Expect",
    "Frame",
    "Framing",
    "HttpRequest",
    "Outcome",
    "RawWs",
    "WsSession",
    "describe",
    "from_json",
    "to_json",
]

#: What the oracle expects of an action: ``read`` changes nothing by its nature; ``write``
#: may change a fuzz document; ``refuse`` must be refused (a 4xx, a refusing close code, or
#: no answer at all for a body that never came); ``same`` may be accepted but must leave
#: every seeded document as it was (a duplicate update, an empty change).
Expect = Literal["read", "write", "refuse", "same"]

#: How a body is framed: ``exact`` (Content-Length as sent, unless a header says otherwise),
#: ``long`` (Content-Length larger than the body, then the write side is shut: the body never
#: completes), ``short`` (smaller: the rest arrives as the next request), ``chunked``,
#: ``bad-chunked`` (chunk sizes that lie), ``split`` (sent in small pieces), ``none``
#: (no Content-Length at all).
Framing = Literal["exact", "long", "short", "chunked", "bad-chunked", "split", "none"]


@dataclass(slots=True)
class HttpRequest:
    """One HTTP request (or a few pipelined on one connection, ``pipelined``)."""

    route: str
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    expect: Expect = "read"
    #: The document the request is about once its path is decoded (None: no document).
    doc: str | None = None
    framing: Framing = "exact"
    #: More requests sent on the same connection right after this one (raw bytes each).
    pipelined: list[bytes] = field(default_factory=list)
    #: The request asks for ``after=`` (a 503 ``after_not_reached`` is then documented).
    after: bool = False
    #: The request line's protocol.
    version: bytes = b"HTTP/1.1"
    #: Bytes sent instead of a request built from the fields above (not HTTP at all).
    raw: bytes = b""
    #: A seeded document's JSON content, which a 200 answer must show.
    content: dict[str, Any] | None = None
    #: A seeded document's digest, which the whole state a 200 answer carries must have.
    digest: str | None = None


@dataclass(slots=True)
class Frame:
    """One WebSocket message: ``binary``, ``text`` (UTF-8 or not: sent as a text frame
    whatever its bytes), or ``fragments`` (a binary message cut in pieces)."""

    kind: Literal["binary", "text", "fragments"]
    data: bytes
    #: For ``fragments``: where the message is cut.
    cuts: list[int] = field(default_factory=list)


@dataclass(slots=True)
class WsSession:
    """A WebSocket connection through the ``websockets`` client: the handshake with
    ``headers`` and ``subprotocols``, the ``frames``, then (``probe``) a sync step 1 whose
    answer shows the endpoint still serves, then a close with ``close_code``."""

    route: str
    target: str
    headers: list[tuple[str, str]]
    subprotocols: list[str]
    frames: list[Frame]
    expect: Expect = "read"
    doc: str | None = None
    probe: bool = False
    close_code: int = 1000
    #: For an events stream of a seeded document: the content its first snapshot must show.
    snapshot: dict[str, Any] | None = None


@dataclass(slots=True)
class RawWs:
    """A WebSocket handshake written by hand (``request``: the whole upgrade request, the
    Host header left to :func:`send`), then hand-built ``frames`` (raw bytes each: any
    opcode, reserved bits, length or mask)."""

    route: str
    request: bytes
    frames: list[bytes]
    expect: Expect = "refuse"
    doc: str | None = None


Action = HttpRequest | WsSession | RawWs


@dataclass(slots=True)
class Outcome:
    """What came back: HTTP statuses (with each answer's error code, when JSON), the close
    code the server sent (None: none came), or ``hung`` with what was awaited."""

    statuses: list[int] = field(default_factory=list)
    codes: list[str | None] = field(default_factory=list)
    #: The first HTTP answer's body.
    body: bytes = b""
    close_codes: list[int] = field(default_factory=list)
    frames_sent: int = 0
    hung: str | None = None
    #: Something the server sent that breaks the protocol's own rules (a bad snapshot).
    wrong: str | None = None
    #: The connection could not be made at all (the node is gone).
    refused_connection: bool = False
    seconds: float = 0.0


# -- reproducer files ------------------------------------------------------------------------


def _b(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _u(text: str) -> bytes:
    return base64.b64decode(text)


def to_json(action: Action) -> dict[str, Any]:
    """``action`` as JSON (bytes in base64), for a reproducer file."""
    if isinstance(action, HttpRequest):
        return {
            "type": "http",
            "route": action.route,
            "method": _b(action.method),
            "target": _b(action.target),
            "headers": [[_b(name), _b(value)] for name, value in action.headers],
            "body": _b(action.body),
            "expect": action.expect,
            "doc": action.doc,
            "framing": action.framing,
            "pipelined": [_b(extra) for extra in action.pipelined],
            "after": action.after,
            "version": _b(action.version),
            "raw": _b(action.raw),
            "content": action.content,
            "digest": action.digest,
        }
    if isinstance(action, WsSession):
        return {
            "type": "ws",
            "route": action.route,
            "target": action.target,
            "headers": [list(pair) for pair in action.headers],
            "subprotocols": action.subprotocols,
            "frames": [
                {"kind": frame.kind, "data": _b(frame.data), "cuts": frame.cuts}
                for frame in action.frames
            ],
            "expect": action.expect,
            "doc": action.doc,
            "probe": action.probe,
            "close_code": action.close_code,
            "snapshot": action.snapshot,
        }
    return {
        "type": "raw-ws",
        "route": action.route,
        "request": _b(action.request),
        "frames": [_b(frame) for frame in action.frames],
        "expect": action.expect,
        "doc": action.doc,
    }


def from_json(data: dict[str, Any]) -> Action:
    """The action :func:`to_json` wrote."""
    if data["type"] == "http":
        return HttpRequest(
            route=data["route"],
            method=_u(data["method"]),
            target=_u(data["target"]),
            headers=[(_u(name), _u(value)) for name, value in data["headers"]],
            body=_u(data["body"]),
            expect=data["expect"],
            doc=data["doc"],
            framing=data["framing"],
            pipelined=[_u(extra) for extra in data["pipelined"]],
            after=data["after"],
            version=_u(data["version"]),
            raw=_u(data["raw"]),
            content=data.get("content"),
            digest=data.get("digest"),
        )
    if data["type"] == "ws":
        return WsSession(
            route=data["route"],
            target=data["target"],
            headers=[(name, value) for name, value in data["headers"]],
            subprotocols=data["subprotocols"],
            frames=[Frame(f["kind"], _u(f["data"]), f["cuts"]) for f in data["frames"]],
            expect=data["expect"],
            doc=data["doc"],
            probe=data["probe"],
            close_code=data["close_code"],
            snapshot=data["snapshot"],
        )
    return RawWs(
        route=data["route"],
        request=_u(data["request"]),
        frames=[_u(frame) for frame in data["frames"]],
        expect=data["expect"],
        doc=data["doc"],
    )


def describe(action: Action, limit: int = 64) -> str:
    """A few lines naming ``action``: method, target, headers, the body's first bytes (hex)."""
    if isinstance(action, HttpRequest):
        lines = [
            f"{action.route} [{action.expect}, framing {action.framing}]",
            f"  {action.method.decode('latin-1')} {action.target.decode('latin-1')[:300]!r}",
        ]
        lines += [
            f"  {n.decode('latin-1')}: {v.decode('latin-1')[:200]!r}" for n, v in action.headers
        ]
        lines.append(f"  body ({len(action.body)} bytes): {action.body[:limit].hex()}")
        if action.pipelined:
            lines.append(f"  + {len(action.pipelined)} pipelined: {action.pipelined[0][:80]!r}")
        return "\n".join(lines)
    if isinstance(action, WsSession):
        lines = [
            f"{action.route} [{action.expect}] WS {action.target[:300]!r}",
            f"  headers {action.headers!r:.300} subprotocols {action.subprotocols!r:.300}",
        ]
        lines += [
            f"  {frame.kind} frame ({len(frame.data)} bytes): {frame.data[:limit].hex()}"
            for frame in action.frames
        ]
        return "\n".join(lines)
    lines = [f"{action.route} [{action.expect}] raw WebSocket", f"  {action.request[:400]!r}"]
    lines += [f"  frame ({len(f)} bytes): {f[:limit].hex()}" for f in action.frames]
    return "\n".join(lines)
