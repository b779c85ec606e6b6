"""Forwarding (app.http.forward): the signed header as plain code, then a "front" app that
forwards every request to a "holder" app, both real uvicorn servers on loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from app.codec import close_reason
from app.http.forward import (
    FORWARDED_HEADER,
    MAX_FORWARDED_LENGTH,
    AnswerTooLarge,
    ForgedForward,
    Forwarder,
    ForwardError,
    ForwardLoop,
    ForwardStatistics,
    ForwardTimeout,
    HolderUnreachable,
    open_forwarder,
    request_target,
    sign_forwarded,
    verify_forwarded,
)

from .support import TIMEOUT_FACTOR, deadline, wait_for

SECRET = b"forward-test-secret"
NOW = 1_700_000_000.0
#: The front relays answers and holder messages up to this size.
MAX_BODY = 64 * 1024
#: Sent to the front only (never forwarded): the holder to forward to, a per-call timeout.
HOLDER = "x-test-holder"
TIMEOUT = "x-test-timeout"
#: A header the front adds itself (as nodes add the placement record): it reaches the holder,
#: while a client's header of the same name does not.
EXTRA = {"X-Meridian-Placement": "from-the-front"}


# -- the signed header, without sockets ----------------------------------------------------


def test_a_signed_header_verifies_and_names_the_forwarding_node() -> None:
    value = sign_forwarded(SECRET, "eu-west-1", "PATCH", "/v1/docs/a?x=%2B", NOW)
    node, millis, mac = value.split(";")
    assert (node, millis, len(mac)) == ("eu-west-1", "1700000000000", 64)
    assert verify_forwarded(SECRET, value, "PATCH", "/v1/docs/a?x=%2B", NOW + 29) == "eu-west-1"
    # The method is compared as the request line spells it, in capitals.
    assert verify_forwarded(SECRET, value, "patch", "/v1/docs/a?x=%2B", NOW) == "eu-west-1"


@pytest.mark.parametrize(
    ("method", "target", "secret", "now", "message"),
    [
        ("GET", "/v1/docs/a?x=%2B", SECRET, NOW, "not signed for GET"),
        ("PATCH", "/v1/docs/b?x=%2B", SECRET, NOW, "not signed for PATCH /v1/docs/b"),
        ("PATCH", "/v1/docs/a?x=+", SECRET, NOW, "not signed"),
        ("PATCH", "/v1/docs/a", SECRET, NOW, "not signed"),
        ("PATCH", "/v1/docs/a?x=%2B", b"another cluster", NOW, "not signed"),
        ("PATCH", "/v1/docs/a?x=%2B", SECRET, NOW + 31, "stale: signed 31.0s"),
        ("PATCH", "/v1/docs/a?x=%2B", SECRET, NOW - 31, "stale"),
        ("PATCH", "/v1/docs/a?x=%2B", None, NOW, "no cluster secret"),
        ("PATCH", "/v1/docs/a?x=%2B", b"", NOW, "no cluster secret"),
    ],
)
def test_a_header_for_another_request_secret_or_time_is_refused(
    method: str, target: str, secret: bytes | None, now: float, message: str
) -> None:
    value = sign_forwarded(SECRET, "eu-west-1", "PATCH", "/v1/docs/a?x=%2B", NOW)
    with pytest.raises(ForgedForward, match=message.replace("?", r"\?").replace("+", r"\+")):
        verify_forwarded(secret, value, method, target, now)


def test_a_tampered_or_malformed_header_is_refused() -> None:
    value = sign_forwarded(SECRET, "eu-west-1", "GET", "/v1/docs/a", NOW)
    node, millis, mac = value.split(";")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    refused = [
        f"{node};{millis};{flipped}",  # another MAC
        f"us-east-1;{millis};{mac}",  # another node
        f"{node};{int(millis) + 1};{mac}",  # another time
        f"{node};{millis};{mac.upper()}",  # another spelling
        "",
        "garbage",
        f"{node};{millis}",
        f"{node};{millis};{mac};extra",
        f"{node};-5;{mac}",
        f"{node};{millis};{mac[:-2]}",
        f"bad node;{millis};{mac}",
        "é;" + value,
    ]
    for forged in refused:
        with pytest.raises(ForgedForward):
            verify_forwarded(SECRET, forged, "GET", "/v1/docs/a", NOW)
    with pytest.raises(ForgedForward, match="longer than"):
        verify_forwarded(SECRET, value + " " * MAX_FORWARDED_LENGTH, "GET", "/v1/docs/a", NOW)


def test_signing_needs_a_secret_and_a_valid_node_id() -> None:
    with pytest.raises(ValueError, match="secret"):
        sign_forwarded(b"", "eu-west-1", "GET", "/", NOW)
    with pytest.raises(ValueError, match="node id"):
        sign_forwarded(SECRET, "eu;west", "GET", "/", NOW)


def test_the_request_target_keeps_escapes_and_encodes_the_rest() -> None:
    scope = {"path": "/v1/docs/é", "raw_path": b"/v1/docs/a%2Fb", "query_string": b"x=%2B&y=+"}
    assert request_target(scope) == "/v1/docs/a%2Fb?x=%2B&y=+"
    raw = {"raw_path": '/d/é "{}'.encode(), "query_string": "q=日".encode()}
    target = request_target(raw)
    assert target == "/d/%C3%A9%20%22%7B%7D?q=%E6%97%A5"
    path, _, query = target.partition("?")
    again = {"raw_path": path.encode(), "query_string": query.encode()}
    assert request_target(again) == target  # what a holder computes from what it received
    assert request_target({"path": "/only/é", "query_string": b""}) == "/only/%C3%A9"


def test_a_forwarded_request_and_a_second_signature_are_refused_before_sending() -> None:
    def request(headers: list[tuple[bytes, bytes]]) -> Request:
        scope = {"type": "http", "method": "GET", "path": "/d", "raw_path": b"/d"}
        return Request({**scope, "query_string": b"", "headers": headers})

    async def main() -> None:
        async with open_forwarder("front-1", SECRET, timeout=1, max_body=10) as forwarder:
            forwarded = request([(FORWARDED_HEADER.encode(), b"x")])
            with pytest.raises(ForwardLoop):
                await forwarder.forward_http("http://127.0.0.1:9", forwarded, b"")
            with pytest.raises(ValueError, match="this module's to set"):
                await forwarder.forward_http(
                    "http://127.0.0.1:9", request([]), b"", headers={FORWARDED_HEADER: "x"}
                )
            assert forwarder.statistics() == ForwardStatistics()

    asyncio.run(main())


def test_a_forwarder_needs_a_secret_a_node_id_and_positive_limits() -> None:
    for node_id, secret, timeout in [("n", b"", 1.0), ("n;1", SECRET, 1.0), ("n", SECRET, 0.0)]:
        with pytest.raises(ValueError):
            Forwarder(node_id, secret, timeout=timeout, max_body=1, max_message=1)


# -- servers -------------------------------------------------------------------------------


class Served:
    """An ASGI app served by uvicorn in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.ws_url = self.url.replace("http", "ws", 1)
        config = uvicorn.Config(app, log_level="warning", access_log=False, log_config=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Served:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=15, what="uvicorn to start")
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30 * TIMEOUT_FACTOR)
        self.sock.close()
        assert not self.thread.is_alive(), "server thread did not stop"


def _forwarded_by(headers: Any, method: str, target: str) -> str:
    value = headers.get(FORWARDED_HEADER)
    if value is None:
        return "nobody"
    try:
        return verify_forwarded(SECRET, value, method, target, time.time())
    except ForgedForward as exc:
        return f"forged: {exc}"


def holder_app() -> FastAPI:
    """Echoes what arrives, with the answer's status and headers chosen by the query."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()
        app.state.release = asyncio.Event()
        yield

    app = FastAPI(lifespan=lifespan)
    app.state.slow = 0  # requests that reached /slow
    app.state.closes = []  # (code, reason) with which clients of /ws/record, /ws/stream closed

    @app.api_route("/echo/{rest:path}", methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
    async def echo(request: Request) -> Response:
        target = request_target(request.scope)
        body = await request.body()
        seen = {
            "method": request.method,
            "target": target,
            "query": list(request.query_params.multi_items()),
            "headers": [[name, value] for name, value in request.headers.items()],
            "body": base64.b64encode(body).decode(),
            "forwarded_by": _forwarded_by(request.headers, request.method, target),
        }
        relayed = {
            "X-State-Vector": "AQID",
            "X-Meridian-Served-By": "holder-1",
            "X-Meridian-Region": "eu-west",
            "WWW-Authenticate": 'Bearer realm="meridian"',
            "Retry-After": "7",
        }
        kept = {"X-Internal": "secret", "Set-Cookie": "a=b", "Cache-Control": "no-store"}
        status = int(request.query_params.get("status", "200"))
        return JSONResponse(seen, status_code=status, headers=relayed | kept)

    @app.get("/checked/{rest:path}")
    async def checked(request: Request) -> Response:
        value = request.headers.get(FORWARDED_HEADER, "")
        target = request_target(request.scope)
        try:
            node = verify_forwarded(SECRET, value, request.method, target, time.time())
        except ForgedForward as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"from": node})

    @app.post("/slow")
    async def slow(request: Request) -> Response:
        app.state.slow += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60 * TIMEOUT_FACTOR):
                await app.state.release.wait()
        return Response(b"late")

    @app.get("/big")
    async def big(size: int) -> Response:
        return Response(b"x" * size, media_type="application/octet-stream")

    @app.websocket("/ws/echo/{rest:path}")
    async def ws_echo(websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=offered[0] if offered else None)
        target = request_target(websocket.scope)
        hello = {
            "target": target,
            "headers": sorted(websocket.headers.keys()),
            "authorization": websocket.headers.get("authorization"),
            "placement": websocket.headers.getlist("x-meridian-placement"),
            "forwarded_by": _forwarded_by(websocket.headers, "GET", target),
        }
        await websocket.send_text(json.dumps(hello))
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
            else:
                await websocket.send_text(message["text"])

    @app.websocket("/ws/close")
    async def ws_close(websocket: WebSocket, code: int, reason: str) -> None:
        await websocket.accept()
        await websocket.send_bytes(b"bye")
        await websocket.close(code, reason)

    @app.websocket("/ws/record")
    async def ws_record(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("ready")
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                app.state.closes.append((message.get("code"), message.get("reason")))
                return

    @app.websocket("/ws/stream")
    async def ws_stream(websocket: WebSocket) -> None:
        """Sends frames without pause until the client closes, and records how it closed."""
        await websocket.accept()

        async def send_forever() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                while True:
                    await websocket.send_bytes(b"s" * 1024)

        async with asyncio.TaskGroup() as group:
            sender = group.create_task(send_forever())
            message = await websocket.receive()
            app.state.closes.append((message.get("code"), message.get("reason")))
            sender.cancel()

    @app.websocket("/ws/refuse")
    async def ws_refuse(websocket: WebSocket) -> None:
        await websocket.close(1008)  # before accepting: the handshake gets HTTP 403

    @app.websocket("/ws/big")
    async def ws_big(websocket: WebSocket, size: int) -> None:
        await websocket.accept()
        await websocket.send_bytes(b"x" * size)
        with contextlib.suppress(WebSocketDisconnect):
            await websocket.receive_bytes()

    return app


_STATUS = {HolderUnreachable: 503, ForwardTimeout: 504, AnswerTooLarge: 502, ForwardLoop: 508}


def front_app(holder_url: str) -> FastAPI:
    """Forwards every request to ``holder_url`` (or to the test's x-test-holder header)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = 10 * TIMEOUT_FACTOR
        async with open_forwarder("front-1", SECRET, timeout=timeout, max_body=MAX_BODY) as fwd:
            app.state.forwarder = fwd
            yield

    app = FastAPI(lifespan=lifespan)

    @app.api_route("/{rest:path}", methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
    async def forward(request: Request) -> Response:
        body = await request.body()
        timeout = request.headers.get(TIMEOUT)
        holder = request.headers.get(HOLDER, holder_url)
        forwarder: Forwarder = app.state.forwarder
        try:
            return await forwarder.forward_http(
                holder, request, body, headers=EXTRA, timeout=float(timeout) if timeout else None
            )
        except ForwardError as exc:
            answer = {"error": type(exc).__name__, "message": str(exc)}
            return JSONResponse(answer, status_code=_STATUS[type(exc)])

    @app.websocket("/{rest:path}")
    async def forward_websocket(websocket: WebSocket) -> None:
        holder = websocket.headers.get(HOLDER, holder_url)
        try:
            await app.state.forwarder.forward_websocket(holder, websocket, headers=EXTRA)
        except ForwardError as exc:  # raised before accepting: accepting now still works
            await websocket.accept()
            await websocket.close(1013, close_reason(f"{type(exc).__name__}: {exc}"))

    return app


@pytest.fixture(scope="module")
def holder() -> Iterator[Served]:
    with Served(holder_app()) as served:
        try:
            yield served
        finally:
            state = served.app.state
            state.loop.call_soon_threadsafe(state.release.set)


@pytest.fixture(scope="module")
def front(holder: Served) -> Iterator[Served]:
    with Served(front_app(holder.url)) as served:
        yield served


@pytest.fixture
def client(front: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=front.url, timeout=30 * TIMEOUT_FACTOR) as http:
        yield http


@pytest.fixture
def closed_port() -> Iterator[str]:
    """The URL of a loopback port bound by no server: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- HTTP ----------------------------------------------------------------------------------

#: A raw query with an escaped "+", a "+" (a space), escaped UTF-8, a bare key and repeats.
QUERY = "x=%2B1&y=a+b&z=caf%C3%A9&flag&x=2"
BODY = bytes(range(256)) * 4


def _seen(answer: httpx.Response) -> dict[str, Any]:
    seen: dict[str, Any] = answer.json()
    return seen


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "PUT", "DELETE"])
def test_every_method_arrives_with_its_body_and_raw_query(
    client: httpx.Client, method: str
) -> None:
    answer = client.request(
        method,
        f"/echo/caf%C3%A9/a%2Fb?{QUERY}&w=日本",
        content=BODY,
        headers={"content-type": "application/octet-stream"},
    )
    assert answer.status_code == 200, answer.text
    seen = _seen(answer)
    assert seen["method"] == method
    assert seen["target"] == f"/echo/caf%C3%A9/a%2Fb?{QUERY}&w=%E6%97%A5%E6%9C%AC"
    assert seen["query"] == [
        ["x", "+1"],
        ["y", "a b"],
        ["z", "café"],
        ["flag", ""],
        ["x", "2"],
        ["w", "日本"],
    ]
    assert base64.b64decode(seen["body"]) == BODY
    assert seen["forwarded_by"] == "front-1"


def test_an_empty_body_and_no_query_arrive_as_they_are(client: httpx.Client) -> None:
    seen = _seen(client.delete("/echo/doc"))
    assert (seen["target"], seen["query"], seen["body"]) == ("/echo/doc", [], "")
    assert seen["forwarded_by"] == "front-1"


@pytest.mark.parametrize("status", [200, 202, 400, 404, 409, 413, 422, 503])
def test_the_holders_status_and_selected_headers_come_back(
    client: httpx.Client, status: int
) -> None:
    answer = client.post(f"/echo/doc?status={status}", content=b"{}")
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-state-vector"] == "AQID"
    assert answer.headers["x-meridian-served-by"] == "holder-1"
    assert answer.headers["x-meridian-region"] == "eu-west"
    assert answer.headers["www-authenticate"] == 'Bearer realm="meridian"'
    assert answer.headers["retry-after"] == "7"
    for kept in ("x-internal", "set-cookie", "cache-control"):
        assert kept not in answer.headers
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert _seen(answer)["method"] == "POST"


def test_only_the_allowed_request_headers_pass(client: httpx.Client) -> None:
    sent = {
        "Authorization": "Bearer mrd1.token",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Cookie": "session=1",
        "X-Custom": "1",
        "X-Meridian-Served-By": "a-client",
        "X-Meridian-Placement": "from-a-client",
        "X-Forwarded-For": "10.0.0.1",
        "User-Agent": "a-client/1.0",
    }
    # The holder's earlier answers set a cookie: it is never stored, hence never sent back.
    client.get("/echo/doc")
    seen = _seen(client.post("/echo/doc", content=b"{}", headers=sent))
    headers = dict(seen["headers"])
    assert {name: headers[name] for name in ("authorization", "content-type", "accept")} == {
        "authorization": "Bearer mrd1.token",
        "content-type": "application/json",
        "accept": "application/json",
    }
    transport = {"host", "content-length", "accept-encoding", "connection", "user-agent"}
    allowed = {"authorization", "content-type", "accept", FORWARDED_HEADER}
    allowed |= {"x-meridian-placement"}
    assert set(headers) <= allowed | transport, set(headers) - allowed - transport
    placement = [value for name, value in seen["headers"] if name == "x-meridian-placement"]
    assert placement == ["from-the-front"]
    assert headers["user-agent"].startswith("meridian/")
    assert headers["accept-encoding"] == "identity"
    # Without an Accept from the client, none is made up.
    bare = client.build_request("GET", "/echo/doc")
    del bare.headers["accept"]
    assert "accept" not in dict(_seen(client.send(bare))["headers"])


def test_a_closed_port_is_unreachable(client: httpx.Client, closed_port: str) -> None:
    answer = client.patch("/echo/doc", content=b"{}", headers={HOLDER: closed_port})
    assert answer.status_code == 503
    assert answer.json()["error"] == "HolderUnreachable"
    assert "cannot connect" in answer.json()["message"]


def test_a_holder_that_does_not_answer_in_time_is_a_timeout(
    client: httpx.Client, holder: Served, front: Served
) -> None:
    before = holder.app.state.slow
    timeouts = front.app.state.forwarder.statistics().timeouts
    started = time.monotonic()
    answer = client.post("/slow", content=b"write", headers={TIMEOUT: "0.3"})
    assert answer.status_code == 504
    assert answer.json()["error"] == "ForwardTimeout"
    assert time.monotonic() - started < 5 * TIMEOUT_FACTOR
    # It did reach the holder: the outcome is unknown, not "not sent".
    wait_for(lambda: holder.app.state.slow > before, what="the holder to see the request")
    assert front.app.state.forwarder.statistics().timeouts == timeouts + 1


def test_an_answer_over_the_limit_is_not_relayed(client: httpx.Client) -> None:
    fits = client.get(f"/big?size={MAX_BODY}")
    assert (fits.status_code, fits.content) == (200, b"x" * MAX_BODY)
    assert fits.headers["content-type"] == "application/octet-stream"
    answer = client.get(f"/big?size={MAX_BODY + 1}")
    assert answer.status_code == 502
    assert answer.json()["error"] == "AnswerTooLarge"


def test_a_request_forwarded_once_is_never_forwarded_again(client: httpx.Client) -> None:
    value = sign_forwarded(SECRET, "us-east-1", "GET", "/echo/doc", time.time())
    answer = client.get("/echo/doc", headers={FORWARDED_HEADER: value})
    assert answer.status_code == 508
    assert answer.json()["error"] == "ForwardLoop"


def test_the_holder_accepts_the_front_and_refuses_forgeries(
    client: httpx.Client, holder: Served
) -> None:
    assert client.get("/checked/doc?a=1").json() == {"from": "front-1"}
    with httpx.Client(base_url=holder.url) as direct:
        other_path = sign_forwarded(SECRET, "front-1", "GET", "/checked/other", time.time())
        other_secret = sign_forwarded(b"x", "front-1", "GET", "/checked/doc", time.time())
        for forged in (other_path, other_secret, "front-1;1;00", ""):
            answer = direct.get("/checked/doc", headers={FORWARDED_HEADER: forged})
            assert answer.status_code == 400, forged
            assert answer.json()["error"]


# -- WebSockets ----------------------------------------------------------------------------


def _connect(front: Served, path: str, **kwargs: Any) -> ClientConnection:
    connection: ClientConnection = connect(
        f"{front.ws_url}{path}", open_timeout=10 * TIMEOUT_FACTOR, **kwargs
    )
    return connection


def _closed(connection: ClientConnection) -> tuple[int, str]:
    """The close code and reason the connection receives next (frames before it fail)."""
    with pytest.raises(ConnectionClosed) as caught:
        connection.recv(timeout=10 * TIMEOUT_FACTOR)
    assert caught.value.rcvd is not None, caught.value
    return caught.value.rcvd.code, caught.value.rcvd.reason


def _drain(connection: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        for _ in connection:
            pass


def _wait_spliced_none(front: Served, timeout: float = 10) -> None:
    forwarder = front.app.state.forwarder
    wait_for(
        lambda: forwarder.statistics().open_websockets == 0, timeout=timeout, what="splices to end"
    )


def test_a_websocket_is_spliced_with_its_query_token_and_subprotocol(front: Served) -> None:
    path = "/ws/echo/doc?token=abc&x=%2B&y=+"
    with _connect(
        front,
        path,
        additional_headers={
            "Authorization": "Bearer t",
            "X-Custom": "1",
            "X-Meridian-Placement": "from-a-client",
        },
        subprotocols=["meridian.token.abc"],
    ) as connection:
        assert connection.subprotocol == "meridian.token.abc"
        hello = json.loads(connection.recv(timeout=10 * TIMEOUT_FACTOR))
        assert hello["target"] == path
        assert hello["authorization"] == "Bearer t"
        assert hello["forwarded_by"] == "front-1"
        assert "x-custom" not in hello["headers"]
        assert hello["placement"] == ["from-the-front"]
        assert FORWARDED_HEADER in hello["headers"]
        # Binary stays binary, text stays text, in order, both ways.
        frames: list[bytes | str] = [b"\x00\x01", "text", b"", "", "é" * 1000, bytes(5000)]
        for frame in frames:
            connection.send(frame)
        assert [connection.recv(timeout=10 * TIMEOUT_FACTOR) for _ in frames] == frames
    _wait_spliced_none(front)


def test_many_frames_pass_without_loss(front: Served) -> None:
    with _connect(front, "/ws/echo/many") as connection:
        connection.recv(timeout=10 * TIMEOUT_FACTOR)
        received: list[bytes | str] = []
        sent: list[bytes | str] = []
        end = deadline(60)
        for start in range(0, 1000, 100):  # windows: the echo's answers are read as we go
            window = [
                f"t{i}" if i % 2 else i.to_bytes(4, "big") * 64 for i in range(start, start + 100)
            ]
            for frame in window:
                connection.send(frame)
            sent += window
            received += [connection.recv(timeout=10 * TIMEOUT_FACTOR) for _ in window]
            assert time.monotonic() < end
        assert received == sent
    _wait_spliced_none(front)


def test_the_holders_close_code_and_reason_reach_the_client(front: Served) -> None:
    reason = "custom reason ✓"
    with _connect(front, f"/ws/close?code=4321&reason={reason}") as connection:
        assert connection.recv(timeout=10 * TIMEOUT_FACTOR) == b"bye"
        assert _closed(connection) == (4321, reason)
    _wait_spliced_none(front)


def test_the_clients_close_code_and_reason_reach_the_holder(front: Served, holder: Served) -> None:
    closes = holder.app.state.closes
    before = len(closes)
    with _connect(front, "/ws/record") as connection:
        assert connection.recv(timeout=10 * TIMEOUT_FACTOR) == "ready"
        connection.close(4000, "bye from the client")
    wait_for(lambda: len(closes) > before, what="the holder to see the close")
    assert closes[-1] == (4000, "bye from the client")
    _wait_spliced_none(front)


def test_a_client_closing_while_the_holder_streams_passes_its_code(
    front: Served, holder: Served
) -> None:
    closes = holder.app.state.closes
    before = len(closes)
    with _connect(front, "/ws/stream") as connection:
        for _ in range(50):
            assert connection.recv(timeout=10 * TIMEOUT_FACTOR) == b"s" * 1024
        # Read on while closing: a client that stops reading cannot read the close answer.
        reader = threading.Thread(target=_drain, args=(connection,))
        reader.start()
        connection.close(4001, "enough")
        reader.join(timeout=10 * TIMEOUT_FACTOR)
    wait_for(lambda: len(closes) > before, what="the holder to see the close")
    assert closes[-1] == (4001, "enough")
    # Well before the front's close timeout (10 s): it reads the holder's last frames while
    # it waits for the holder's close answer.
    _wait_spliced_none(front, timeout=3)


@pytest.mark.parametrize("path", ["/ws/refuse", "/ws/missing"])
def test_a_holder_refusing_the_handshake_is_unreachable(front: Served, path: str) -> None:
    with _connect(front, path) as connection:
        code, reason = _closed(connection)
    assert code == 1013
    assert reason.startswith("HolderUnreachable"), reason


def test_an_unreachable_holder_raises_before_accepting(front: Served, closed_port: str) -> None:
    with _connect(front, "/ws/echo/doc", additional_headers={HOLDER: closed_port}) as connection:
        code, reason = _closed(connection)
    assert code == 1013
    assert reason.startswith("HolderUnreachable"), reason


def test_a_holder_message_over_the_limit_closes_with_1009(front: Served) -> None:
    with _connect(front, f"/ws/big?size={MAX_BODY + 1}") as connection:
        code, _ = _closed(connection)
    assert code == 1009
    _wait_spliced_none(front)


def test_a_forwarded_websocket_is_never_forwarded_again(front: Served) -> None:
    value = sign_forwarded(SECRET, "us-east-1", "GET", "/ws/echo/doc", time.time())
    with _connect(front, "/ws/echo/doc", additional_headers={FORWARDED_HEADER: value}) as ws:
        code, reason = _closed(ws)
    assert (code, reason.split(":")[0]) == (1013, "ForwardLoop")
