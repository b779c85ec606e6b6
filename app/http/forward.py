"""Forwarding: a node that does not hold a document passes each request for it to a live
holder and relays the answer (PRODUCT.md, "Placement": any node answers any request).

**One hop, never more.** The forwarding node signs what it sends::

    X-Meridian-Forwarded: <node_id>;<unix millis>;<hex HMAC-SHA256(key, message)>
    message = "<node_id>;<unix millis>;<METHOD>;<target>"    (target: raw path and query)
    key     = HMAC-SHA256(cluster secret, "meridian-forward-v1")

A request with a valid header was forwarded once already: the node receiving it serves it from
its own copy (or keeps a write as a hint), never forwards it again, even when its view of
placement names another holder. Nodes whose views disagree thus cannot bounce a request: a loop
needs a second hop, and there is none (:class:`Forwarder` refuses requests with the header).

The MAC covers the method and the target so that a header read off the wire cannot be pasted
onto another request (a GET's onto a DELETE, or onto another document); the timestamp bounds
replays of the same request to ``max_skew`` seconds. The header grants nothing (the holder still
checks the client's token): it says "a node of this cluster sent this". A standalone node (no
secret) refuses it. The key is derived, as the tokens' is (:mod:`app.auth`), so that no forward
MAC can stand for a token or a peer-link proof. Holders get the target from :func:`request_target`.

Headers: to the holder go ``Authorization`` (the token, checked there), ``Content-Type`` (how a
body is read), ``Accept`` and the node's own (``headers=``, unsigned), no other: cookies, proxies'
headers, client-sent ``X-Meridian-*`` stay behind, so no client passes for a node. Back come
``Content-Type``, ``X-State-Vector`` (read-your-writes), ``WWW-Authenticate`` (401),
``Retry-After`` (503) and all ``X-Meridian-*`` (``X-Meridian-Served-By`` names the node that
served). WebSockets are spliced frame by frame:
binary stays binary, text stays text, a frame is read from one side once the other took the
previous one, and the first side to close passes its code and reason to the other. The query
(browsers' ``?token=``), ``Authorization`` and the offered subprotocols are passed on.

Errors (the caller maps them to answers)::

    MeridianError
    └── ForwardError
        ├── ForgedForward      the header is malformed, stale or not this cluster's: 400
        ├── ForwardLoop        asked to forward a request forwarded already: a caller bug
        ├── HolderUnreachable  nothing reached the holder (no connection, refused, handshake
        │                      refused): try the next holder; a write with none left is a hint
        ├── ForwardTimeout     the request may have reached the holder, but no answer came: the
        │                      outcome is unknown, answer 504 (never replay it elsewhere)
        └── AnswerTooLarge     the holder served it, but answered more than ``max_body``: 502
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from ..codec import close_reason
from ..errors import MeridianError
from ..version import VERSION
from .hop import HopPool, HopTimeout, Lost, NotSent, TooLarge

__all__ = [
    "FORWARDED_HEADER", "MAX_FORWARDED_LENGTH", "sign_forwarded", "verify_forwarded",
    "request_target", "Forwarder", "ForwardStatistics", "open_forwarder", "ForwardError",
    "ForgedForward", "ForwardLoop", "HolderUnreachable", "ForwardTimeout", "AnswerTooLarge",
]  # fmt: skip

log = logging.getLogger("meridian.forward")

FORWARDED_HEADER: Final = "x-meridian-forwarded"
#: Longer header values are refused before anything else looks at them.
MAX_FORWARDED_LENGTH: Final = 256

_KEY_LABEL = b"meridian-forward-v1"
_NODE_ID = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"  # as app.cluster.placement spells node ids
_HEADER_VALUE = re.compile(rf"({_NODE_ID});([0-9]{{1,15}});([0-9a-f]{{64}})")
_REQUEST_HEADERS = frozenset({b"authorization", b"content-type", b"accept"})
_ANSWER_HEADERS = frozenset(
    {b"content-type", b"x-state-vector", b"www-authenticate", b"retry-after"}
)
# Kept as they are in a target (besides letters, digits and "-._~"): sub-delims, ":@/?" and
# "%" (escapes stay as sent); any other byte is percent-encoded, so no library re-encodes it.
_TARGET_SAFE = "!$&'()*+,;=:@/?%"
# Close codes a close frame may carry (RFC 6455 7.4.1), besides 3000-4999.
_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})
_USER_AGENT = f"meridian/{VERSION} (forward)"


class ForwardError(MeridianError):
    """Root of the forwarding errors."""


class ForgedForward(ForwardError):
    """A forwarded header that is malformed, stale, not this cluster's, or sent to a node with
    no secret: refuse the request with 400."""


class ForwardLoop(ForwardError):
    """The request already carries ``X-Meridian-Forwarded``: serve it here, or refuse it."""


class HolderUnreachable(ForwardError):
    """Nothing reached the holder: try another, or keep the write as a hint."""


class ForwardTimeout(ForwardError):
    """The request may have reached the holder, but no answer came: its outcome is unknown.
    ``lost``: the connection ended (a reset, the holder killed) rather than the time ran out."""

    def __init__(self, message: str, *, lost: bool = False) -> None:
        super().__init__(message)
        self.lost = lost


class AnswerTooLarge(ForwardError):
    """The holder served the request, but its answer is larger than ``max_body``."""


def request_target(scope: Mapping[str, Any]) -> str:
    """The target of a request (its ASGI scope, or a Starlette ``Request``/``WebSocket``) as
    the MAC covers it: raw path, then ``?`` and the raw query when there is one;
    percent-escapes are kept as sent, other unsafe bytes percent-encoded."""
    raw = scope.get("raw_path") or urllib.parse.quote(scope.get("path") or "/").encode()
    query = scope.get("query_string") or b""
    return urllib.parse.quote_from_bytes(raw + b"?" + query if query else raw, _TARGET_SAFE)


def sign_forwarded(secret: bytes, node_id: str, method: str, target_path: str, now: float) -> str:
    """The ``X-Meridian-Forwarded`` value with which ``node_id`` forwards ``method
    target_path`` at unix time ``now``; ValueError for an empty secret or invalid node id."""
    if not secret:
        raise ValueError("forwarded requests are signed with the cluster secret, and it is empty")
    if not re.fullmatch(_NODE_ID, node_id):
        raise ValueError(f"invalid node id {node_id[:140]!r}")
    millis = str(int(now * 1000))
    return f"{node_id};{millis};{_mac(secret, node_id, millis, method, target_path)}"


def verify_forwarded(
    secret: bytes | None,
    value: str,
    method: str,
    target_path: str,
    now: float,
    max_skew: float = 30.0,
) -> str:
    """The id of the node that forwarded this request (``value``: its header;
    ``target_path``: :func:`request_target`). Raises :class:`ForgedForward` when this node
    has no secret, or ``value`` is malformed, signed for another method, target or cluster,
    or more than ``max_skew`` seconds away from ``now``."""
    if not secret:
        raise ForgedForward("this node has no cluster secret: it accepts no forwarded request")
    if len(value) > MAX_FORWARDED_LENGTH:
        raise ForgedForward(f"{FORWARDED_HEADER} is longer than {MAX_FORWARDED_LENGTH} characters")
    match = _HEADER_VALUE.fullmatch(value.strip())
    if match is None:
        raise ForgedForward(f"{FORWARDED_HEADER} must be <node id>;<unix millis>;<hex hmac>")
    node_id, millis, mac = match.groups()
    if not hmac.compare_digest(_mac(secret, node_id, millis, method, target_path), mac):
        raise ForgedForward(
            f"{FORWARDED_HEADER} is not signed for {method.upper()} {target_path[:140]} "
            "by a node of this cluster"
        )
    skew = abs(now - int(millis) / 1000)
    if skew > max_skew:
        raise ForgedForward(
            f"{FORWARDED_HEADER} from {node_id} is stale: signed {skew:.1f}s from this "
            f"node's time (at most {max_skew:g}s)"
        )
    return node_id


def _mac(secret: bytes, node_id: str, millis: str, method: str, target: str) -> str:
    key = hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()
    signed = f"{node_id};{millis};{method.upper()};{target}".encode()
    return hmac.new(key, signed, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class ForwardStatistics:
    """Counts since the forwarder opened: HTTP answers relayed (any status), WebSockets
    spliced (and open now), and failures by kind."""

    relayed: int = 0
    websockets: int = 0
    open_websockets: int = 0
    unreachable: int = 0
    timeouts: int = 0
    too_large: int = 0


class Forwarder:
    """Forwards requests from this node to holders; see :func:`open_forwarder`."""

    def __init__(
        self,
        node_id: str,
        secret: bytes,
        *,
        timeout: float,
        max_body: int,
        max_message: int,
    ) -> None:
        if not secret:
            raise ValueError("forwarding needs the cluster secret, and it is empty")
        if not re.fullmatch(_NODE_ID, node_id):
            raise ValueError(f"invalid node id {node_id[:140]!r}")
        if not (timeout > 0 and max_body > 0 and max_message > 0):
            raise ValueError("timeout, max_body and max_message must be positive")
        self.node_id = node_id
        self._secret = secret
        self._timeout, self._max_body, self._max_message = timeout, max_body, max_message
        # Read by statistics(), by the names of ForwardStatistics' fields.
        self._counts: Counter[str] = Counter()
        # One pool of keep-alive connections to every holder, closed by open_forwarder (no
        # cookies, redirects or proxies: see app.http.hop).
        self._pool = HopPool(max_body=max_body, user_agent=_USER_AGENT)

    def statistics(self) -> ForwardStatistics:
        return ForwardStatistics(
            **{f.name: self._counts[f.name] for f in fields(ForwardStatistics)}
        )

    async def forward_http(
        self,
        base_url: str,
        request: Request,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Sends ``request`` with ``body`` (read by the caller) to the holder at ``base_url``
        (``http://host:port``), with this node's own extra ``headers`` (not covered by the
        MAC), and returns its answer, within ``timeout`` seconds in all (default: the
        forwarder's). Raises :class:`ForwardLoop`, :class:`HolderUnreachable`,
        :class:`ForwardTimeout` or :class:`AnswerTooLarge`."""
        _check_forwardable(request, headers)
        limit = self._timeout if timeout is None else timeout
        what = f"{request.method} {request.url.path} to {base_url}"
        try:
            host, port = _host_port(base_url)
            target = request_target(request.scope)
            sent_headers = [(k, v) for k, v in request.headers.raw if k.lower() in _REQUEST_HEADERS]
            sent_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
            signed = sign_forwarded(self._secret, self.node_id, request.method, target, time.time())
            sent_headers.append((FORWARDED_HEADER.encode(), signed.encode()))
            log.debug("> forward %s", what)
            answer = await self._pool.request(
                host, port, request.method, target, sent_headers, body, timeout=limit
            )
        except (NotSent, ValueError) as exc:
            self._counts["unreachable"] += 1
            raise HolderUnreachable(f"{what}: not sent ({_describe(exc)})") from exc
        except HopTimeout as exc:
            if not exc.sent:
                self._counts["unreachable"] += 1
                raise HolderUnreachable(f"{what}: not sent ({_describe(exc)})") from exc
            self._counts["timeouts"] += 1
            raise ForwardTimeout(
                f"{what}: sent, but no answer came within {limit:g}s ({_describe(exc)})"
            ) from exc
        except Lost as exc:
            self._counts["timeouts"] += 1
            raise ForwardTimeout(
                f"{what}: sent, then the connection was lost ({_describe(exc)})", lost=True
            ) from exc
        except TooLarge as exc:
            self._counts["too_large"] += 1
            raise AnswerTooLarge(f"{what}: {exc}") from exc
        log.debug("< forward %s: %d", what, answer.status)
        self._counts["relayed"] += 1
        response = Response(answer.body, status_code=answer.status)
        for name, value in answer.headers:
            if name in _ANSWER_HEADERS or name.startswith(b"x-meridian-"):
                response.raw_headers.append((name, value))
        return response

    async def forward_websocket(
        self,
        base_url: str,
        websocket: WebSocket,
        *,
        subprotocols: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Splices ``websocket`` (not accepted yet) to the same path and query on the holder
        at ``base_url`` (``http://host:port`` or ``ws://…``), offering it ``subprotocols``
        (default: the client's) and sending this node's extra ``headers``, until either side
        closes; returns once both are closed. Raises :class:`ForwardLoop` or
        :class:`HolderUnreachable` before accepting: the caller may try another holder, or
        accept and close with 1013."""
        _check_forwardable(websocket, headers)
        limit = self._timeout if timeout is None else timeout
        target = request_target(websocket.scope)
        signed = sign_forwarded(self._secret, self.node_id, "GET", target, time.time())
        sent_headers = [(FORWARDED_HEADER, signed), *(headers or {}).items()]
        if "authorization" in websocket.headers:
            sent_headers.append(("authorization", websocket.headers["authorization"]))
        if subprotocols is None:
            subprotocols = websocket.scope.get("subprotocols") or []
        what = f"WebSocket {websocket.url.path} to {base_url}"
        try:
            holder = await connect(
                re.sub(r"^http", "ws", base_url.rstrip("/")) + target,
                additional_headers=sent_headers,
                subprotocols=[Subprotocol(name) for name in subprotocols] or None,
                user_agent_header=_USER_AGENT,
                proxy=None,  # the cluster's own addresses, never through a proxy
                compression=None,  # frames are relayed as they come
                open_timeout=limit,
                close_timeout=limit,
                max_size=self._max_message,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._counts["unreachable"] += 1
            raise HolderUnreachable(f"{what}: not opened ({_describe(exc)})") from exc
        log.debug("> splice %s", what)
        self._counts["websockets"] += 1
        self._counts["open_websockets"] += 1
        try:
            try:
                await websocket.accept(subprotocol=holder.subprotocol)
            except (WebSocketDisconnect, OSError, RuntimeError):
                return  # the client left first
            end = await _splice(websocket, holder)
            log.debug("< splice %s: %s closed with %d", what, end.side, end.code)
        finally:
            self._counts["open_websockets"] -= 1
            await holder.close(1001, "the forwarding node closed the connection")


@contextlib.asynccontextmanager
async def open_forwarder(
    node_id: str,
    secret: bytes,
    *,
    timeout: float,
    max_body: int,
    max_message: int | None = None,
) -> AsyncIterator[Forwarder]:
    """The :class:`Forwarder` of node ``node_id``, signing with the cluster ``secret``;
    ``timeout``: seconds a hop takes at most; ``max_body``: the largest HTTP answer relayed;
    ``max_message``: the largest WebSocket message a holder may send (default ``max_body``).
    Its connection pool closes on exit. ValueError for an empty secret, an invalid node id
    or a limit that is not positive."""
    max_message = max_body if max_message is None else max_message
    forwarder = Forwarder(
        node_id, secret, timeout=timeout, max_body=max_body, max_message=max_message
    )
    try:
        yield forwarder
    finally:
        await forwarder._pool.aclose()


# -- splicing two WebSockets ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _End:
    """Which side closed first ("client" or "holder"), and how."""

    side: str
    code: int
    reason: str


async def _splice(websocket: WebSocket, holder: ClientConnection) -> _End:
    """Pumps frames both ways until one side closes, closes the other side with the same
    code and reason, and returns how it ended."""
    ends: list[_End] = []
    async with asyncio.TaskGroup() as group:
        pumps = [
            group.create_task(_client_to_holder(websocket, holder, ends)),
            group.create_task(_holder_to_client(holder, websocket, ends)),
        ]

        def stop(pump: asyncio.Task[bool]) -> None:
            if not pump.cancelled() and pump.exception() is None and pump.result():
                for other in pumps:  # both sides are closed: nothing left to pump
                    other.cancel()

        for pump in pumps:
            pump.add_done_callback(stop)
    return ends[0]


async def _client_to_holder(
    websocket: WebSocket, holder: ClientConnection, ends: list[_End]
) -> bool:
    """Client → holder; True when the splice ended here (and the other side is closed)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            end = _End("client", message.get("code") or 1005, message.get("reason") or "")
            return await _close_holder(end, holder, ends)
        data = message.get("bytes")
        try:
            # Awaited: the next frame is read once the holder's connection took this one.
            await holder.send(data if data is not None else message.get("text") or "")
        except ConnectionClosed as exc:
            return await _close_client(_holder_end(exc), websocket, ends)


async def _holder_to_client(
    holder: ClientConnection, websocket: WebSocket, ends: list[_End]
) -> bool:
    """Holder → client; True when the splice ended here (and the other side is closed)."""
    client_left = False
    while True:
        try:
            frame = await holder.recv()
        except ConnectionClosed as exc:
            return await _close_client(_holder_end(exc), websocket, ends)
        if client_left:
            # Drained: the holder's close answer can only be read after its last frames.
            continue
        try:
            if isinstance(frame, str):
                await websocket.send_text(frame)
            else:
                await websocket.send_bytes(frame)
        except (WebSocketDisconnect, OSError, RuntimeError):
            client_left = True  # the other pump receives how it left


async def _close_holder(end: _End, holder: ClientConnection, ends: list[_End]) -> bool:
    if ends:  # the holder closed first
        return False
    ends.append(end)
    await holder.close(_sendable(end.code, 1001), close_reason(end.reason))
    return True


async def _close_client(end: _End, websocket: WebSocket, ends: list[_End]) -> bool:
    if ends:  # the client closed first
        return False
    ends.append(end)
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await websocket.close(_sendable(end.code, 1011), close_reason(end.reason))
    return True


def _check_forwardable(connection: Request | WebSocket, headers: Mapping[str, str] | None) -> None:
    if FORWARDED_HEADER in connection.headers:
        raise ForwardLoop(f"{connection.url.path} was forwarded to this node already")
    if headers is not None and FORWARDED_HEADER in {name.lower() for name in headers}:
        raise ValueError(f"{FORWARDED_HEADER} is this module's to set")


def _host_port(base_url: str) -> tuple[str, int]:
    """The host and port of ``http://host:port``; ValueError for anything else."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ValueError(f"not an http://host:port address: {base_url[:140]!r}")
    return parts.hostname, parts.port


def _holder_end(exc: ConnectionClosed) -> _End:
    if exc.rcvd is not None:
        return _End("holder", exc.rcvd.code, exc.rcvd.reason)
    if exc.sent is not None:  # closed from this side: a message over max_size, no pong
        return _End("holder", exc.sent.code, exc.sent.reason)
    return _End("holder", 1011, "the connection to the holder was lost")


def _sendable(code: int, fallback: int) -> int:
    """``code`` if a close frame may carry it; 1000 for "no code" (1005); else ``fallback``."""
    if code == 1005:
        return 1000
    return code if code in _SENDABLE_CLOSE_CODES or 3000 <= code < 5000 else fallback


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
