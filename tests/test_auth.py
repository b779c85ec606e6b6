"""Access tokens: the token format alone, then every HTTP route of a real node requiring them,
then the ``meridian token create`` command and ``serve``'s refusal to listen openly without them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest
import websockets
from websockets.sync.client import connect

from app.auth import (
    MAX_TOKEN_LENGTH,
    Authorizer,
    Grant,
    TokenError,
    bearer_token,
    create_token,
    token_from_websocket,
    verify_token,
)
from app.config import ConfigError, NodeSettings, is_loopback, parse_config
from app.http import create_app

from .support import TIMEOUT_FACTOR, NodeProcess, ThreadedNode, run_meridian, wait_for

SECRET = b"test-cluster-secret"
NOW = 1_767_225_600.0
OCTET = {"Content-Type": "application/octet-stream"}


def _clock(at: float = NOW) -> Any:
    return lambda: at


def _token(
    *,
    prefix: str | None = None,
    ids: list[str] | None = None,
    write: bool = True,
    ttl: int = 3600,
    secret: bytes = SECRET,
    now: float | None = None,
) -> str:
    return create_token(
        secret,
        prefix=prefix,
        ids=ids,
        rights=["read", "write"] if write else ["read"],
        ttl_seconds=ttl,
        now=time.time if now is None else _clock(now),
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(claims: Any, secret: bytes = SECRET, *, raw: bytes | None = None) -> str:
    """A token signed the way the format says, written independently of app.auth."""
    key = hmac.new(secret, b"meridian-token-v1", hashlib.sha256).digest()
    payload = _b64(raw if raw is not None else json.dumps(claims).encode())
    signature = hmac.new(key, f"mrd1.{payload}".encode(), hashlib.sha256).digest()
    return f"mrd1.{payload}.{_b64(signature)}"


def _refused(call: Any, status: int, code: str) -> TokenError:
    with pytest.raises(TokenError) as info:
        call()
    assert (info.value.status, info.value.code) == (status, code), info.value.message
    assert info.value.message
    return info.value


# -- the token alone -----------------------------------------------------------------------


def test_round_trip_prefix_and_ids() -> None:
    token = create_token(
        SECRET,
        prefix="team-a:",
        rights=["read", "write"],
        ttl_seconds=600,
        subject="alice",
        now=_clock(),
    )
    assert token.startswith("mrd1.") and token.count(".") == 2 and len(token) < 250
    grant = verify_token(SECRET, token, now=_clock(NOW + 599))
    assert grant == Grant(
        frozenset({"read", "write"}),
        issued_at=int(NOW),
        expires_at=int(NOW) + 600,
        prefix="team-a:",
        subject="alice",
    )
    token = create_token(
        SECRET, ids=["b", "a", "b"], rights=["read"], ttl_seconds=60, key_id="k1", now=_clock()
    )
    grant = verify_token(SECRET, token, now=_clock())
    assert grant.ids == {"a", "b"} and grant.prefix is None
    assert grant.rights == {"read"} and grant.key_id == "k1" and grant.subject is None
    # The format is what the docs say: an independent signer makes tokens that verify.
    claims = {"docs": {"prefix": ""}, "rights": ["read"], "iat": int(NOW), "exp": int(NOW) + 1}
    assert verify_token(SECRET, _signed(claims), now=_clock()).prefix == ""


def test_tampered_tokens_are_refused() -> None:
    token = _token(prefix="team-a:", write=False, now=NOW)
    version, payload, signature = token.split(".")
    # A payload that grants more, with the original signature.
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["rights"], claims["docs"] = ["read", "write"], {"prefix": ""}
    forged = f"{version}.{_b64(json.dumps(claims).encode())}.{signature}"
    _refused(lambda: verify_token(SECRET, forged, now=_clock()), 401, "invalid_token")
    # Every single-character change of the signature, including ones that decode to the
    # same bytes (the last character's unused bits).
    for index in range(len(signature)):
        for replacement in "AQgw_-":
            if signature[index] != replacement:
                altered = signature[:index] + replacement + signature[index + 1 :]
                bad = f"{version}.{payload}.{altered}"
                _refused(
                    lambda bad=bad: verify_token(SECRET, bad, now=_clock()), 401, "invalid_token"
                )
    # Another cluster's secret; the raw cluster secret as the key (no domain separation).
    _refused(lambda: verify_token(b"other", token, now=_clock()), 401, "invalid_token")
    raw_key = hmac.new(SECRET, f"mrd1.{payload}".encode(), hashlib.sha256).digest()
    undomained = f"mrd1.{payload}.{_b64(raw_key)}"
    _refused(lambda: verify_token(SECRET, undomained, now=_clock()), 401, "invalid_token")
    assert verify_token(SECRET, token, now=_clock()).rights == {"read"}


def test_expiry() -> None:
    token = _token(prefix="", ttl=60, now=NOW)
    assert verify_token(SECRET, token, now=_clock(NOW + 59.999))
    error = _refused(
        lambda: verify_token(SECRET, token, now=_clock(NOW + 60)), 401, "token_expired"
    )
    assert "2026-01-01T00:01:00" in error.message


@pytest.mark.parametrize(
    "token",
    [
        "",
        "mrd1",
        "mrd1.",
        "mrd1..",
        "mrd1.e30",
        "mrd2.e30.AAAA",
        "mrd1.e30.AAAA.AAAA",
        "Bearer mrd1.e30.AAAA",
        "mrd1.e3 0.AAAA",
        "mrd1.é.AAAA",
        "mrd1.e30=.AAAA",
        "\x00\xff" * 100,
        "mrd1." + "A" * (MAX_TOKEN_LENGTH + 1) + ".AAAA",
        "x" * 10_000_000,
        "." * 5000,
    ],
)
def test_malformed_tokens_are_invalid(token: str) -> None:
    _refused(lambda: verify_token(SECRET, token, now=_clock()), 401, "invalid_token")


def test_non_strings_are_invalid() -> None:
    for token in (None, b"mrd1.e30.AAAA", 42):
        _refused(lambda t=token: verify_token(SECRET, t, now=_clock()), 401, "invalid_token")


@pytest.mark.parametrize(
    "claims",
    [
        [],
        "x",
        {"docs": {"prefix": ""}, "rights": ["read"], "iat": 1},
        {"docs": {"prefix": ""}, "rights": ["read"], "iat": 1, "exp": 2e9, "nbf": 3},
        {"docs": {"prefix": ""}, "rights": ["write"], "iat": 1, "exp": 2_000_000_000},
        {"docs": {"prefix": ""}, "rights": [["read"]], "iat": 1, "exp": 2_000_000_000},
        {"docs": {"prefix": ""}, "rights": "read", "iat": 1, "exp": 2_000_000_000},
        {"docs": {"prefix": ""}, "rights": ["read"], "iat": 1, "exp": True},
        {"docs": {"prefix": ""}, "rights": ["read"], "iat": 1, "exp": "2000000000"},
        {"docs": {"prefix": ""}, "rights": ["read"], "iat": 1, "exp": 2e9},
        {"docs": {"prefix": "", "ids": ["a"]}, "rights": ["read"], "iat": 1, "exp": 2_000_000_000},
        {"docs": {"ids": []}, "rights": ["read"], "iat": 1, "exp": 2_000_000_000},
        {"docs": {"ids": [1]}, "rights": ["read"], "iat": 1, "exp": 2_000_000_000},
        {"docs": {"prefix": 1}, "rights": ["read"], "iat": 1, "exp": 2_000_000_000},
        {"docs": {}, "rights": ["read"], "iat": 1, "exp": 2_000_000_000},
        {"docs": {"prefix": ""}, "rights": ["read"], "iat": 1, "exp": 2_000_000_000, "sub": 5},
    ],
)
def test_signed_but_malformed_claims_are_invalid(claims: Any) -> None:
    token = _signed(claims)
    _refused(lambda: verify_token(SECRET, token, now=_clock()), 401, "invalid_token")


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe", b"[" * 3000, b"NaN"])
def test_signed_garbage_payload_is_invalid(raw: bytes) -> None:
    token = _signed(None, raw=raw)
    if len(token) <= MAX_TOKEN_LENGTH:
        _refused(lambda: verify_token(SECRET, token, now=_clock()), 401, "invalid_token")


def test_an_expired_token_far_in_the_past_is_expired_not_a_crash() -> None:
    claims = {"docs": {"prefix": ""}, "rights": ["read"], "iat": 0, "exp": -(10**30)}
    _refused(lambda: verify_token(SECRET, _signed(claims), now=_clock()), 401, "token_expired")


def test_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[Any, Any]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    token = _token(prefix="", now=NOW)
    verify_token(SECRET, token, now=_clock())
    bad = token[:-1] + ("A" if token[-1] != "A" else "B")
    _refused(lambda: verify_token(SECRET, bad, now=_clock()), 401, "invalid_token")
    assert [b for _, b in compared] == [token.split(".")[2].encode(), bad.split(".")[2].encode()]


def test_create_token_refuses_what_it_cannot_sign() -> None:
    def create(**kwargs: Any) -> str:
        arguments: dict[str, Any] = {"rights": ["read"], "ttl_seconds": 60, "prefix": "a"}
        return create_token(SECRET, **{**arguments, **kwargs})

    for kwargs, message in [
        ({"ids": ["a"]}, "either a prefix or a list of ids"),
        ({"prefix": None}, "either a prefix or a list of ids"),
        ({"prefix": None, "ids": []}, "at least one id"),
        ({"prefix": None, "ids": ["ok", "not ok"]}, "invalid document id"),
        ({"prefix": "bad prefix"}, "can start no document id"),
        ({"rights": ["write"]}, "rights must be"),
        ({"rights": ["read", "admin"]}, "rights must be"),
        ({"ttl_seconds": 0}, "positive integer"),
        ({"ttl_seconds": 1.5}, "positive integer"),
        ({"prefix": None, "ids": [f"doc-{i:04}" for i in range(400)]}, "over 4096"),
    ]:
        with pytest.raises(ValueError, match=message):
            create(**kwargs)
    with pytest.raises(ValueError, match="secret"):
        create_token(b"", prefix="", rights=["read"], ttl_seconds=1)


def test_grant_covers_and_narrows_listings() -> None:
    grant = verify_token(SECRET, _token(prefix="team-a:", write=False, now=NOW), now=_clock())
    assert grant.allows("team-a:notes", "read") and not grant.allows("team-a:notes", "write")
    assert not grant.allows("team-b:notes", "read") and not grant.allows("team-a", "read")
    assert grant.allows(None, "read") and not grant.allows(None, "write")
    assert grant.list_prefix("") == "team-a:"
    assert grant.list_prefix("team") == "team-a:"
    assert grant.list_prefix("team-a:x") == "team-a:x"
    assert grant.list_prefix("team-b") is None
    ids = verify_token(SECRET, _token(ids=["x", "y"], now=NOW), now=_clock())
    assert ids.allows("x", "write") and not ids.allows("xy", "read")
    assert ids.list_prefix("q") == "q"


def test_authorizer_decides() -> None:
    off = Authorizer(None, required=False)
    assert off.authorize(None, "doc", "write") is None
    assert off.authorize("garbage", "doc", "write") is None
    with pytest.raises(ValueError, match="secret"):
        Authorizer(None, required=True)

    on = Authorizer(SECRET, required=True, now=_clock())
    read_only = _token(prefix="team-a:", write=False, now=NOW)
    error = _refused(lambda: on.authorize(None, "team-a:x", "read"), 401, "missing_token")
    assert error.websocket_close_code == 4401
    _refused(lambda: on.authorize("", "team-a:x", "read"), 401, "missing_token")
    _refused(lambda: on.authorize("nope", "team-a:x", "read"), 401, "invalid_token")
    grant = on.authorize(read_only, "team-a:x", "read")
    assert grant is not None and grant.prefix == "team-a:"
    assert on.authorize(read_only, None, "read") == grant
    error = _refused(lambda: on.authorize(read_only, "team-b:x", "read"), 403, "forbidden")
    assert "team-b:x" in error.message and error.websocket_close_code == 4403
    error = _refused(lambda: on.authorize(read_only, "team-a:x", "write"), 403, "forbidden")
    assert "write" in error.message
    later = Authorizer(SECRET, required=True, now=_clock(NOW + 3600))
    _refused(lambda: later.authorize(read_only, "team-a:x", "read"), 401, "token_expired")


def test_finding_the_token() -> None:
    assert bearer_token(None) is None
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc  ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer") is None

    token = _token(prefix="", now=NOW)
    offered = f"meridian.token.{token}"
    assert token_from_websocket({"type": "websocket"}) == (None, None)
    assert token_from_websocket({"query_string": f"a=1&token={token}".encode()}) == (token, None)
    scope = {"subprotocols": ["y-websocket", offered], "query_string": b"token=other"}
    assert token_from_websocket(scope) == (token, offered)
    assert token_from_websocket({"subprotocols": ["meridian.token."]}) == (None, None)
    scope = {"headers": [(b"authorization", f"Bearer {token}".encode())], "subprotocols": []}
    assert token_from_websocket(scope) == (token, None)


def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1", "localhost", "LOCALHOST", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.com", "::ffff:10.0.0.1"):
        assert not is_loopback(host), host


def test_auth_section_of_the_config(tmp_path: Path) -> None:
    assert parse_config({}).auth_required is None
    assert parse_config({"auth": {}}).auth_required is True
    assert parse_config({"auth": {"required": False}}).auth_required is False
    assert parse_config({"auth": {"required": True}}).auth_required is True
    with pytest.raises(ConfigError, match=r"auth\.required must be true or false"):
        parse_config({"auth": {"required": "yes"}}, "t.toml")
    with pytest.raises(ConfigError, match=r"auth\.required must be true or false"):
        parse_config({"auth": {"required": 1}}, "t.toml")
    with pytest.raises(ConfigError, match=r"unknown key auth\.secret"):
        parse_config({"auth": {"secret": "x"}}, "t.toml")
    with pytest.raises(ConfigError, match="set the environment variable MERIDIAN_CLUSTER_SECRET"):
        NodeSettings(
            node_id="n",
            region="r",
            host="127.0.0.1",
            port=1,
            data_dir=tmp_path,
            cluster=parse_config({}),
            auth_required=True,
        )


# -- a node requiring tokens ---------------------------------------------------------------


def _requiring_tokens(node: ThreadedNode) -> ThreadedNode:
    """``node`` (not started yet) requiring tokens signed with SECRET: ThreadedNode builds
    its settings with auth off, so its app is rebuilt before it starts."""
    node.settings = dataclasses.replace(node.settings, secret=SECRET, auth_required=True)
    node.app = create_app(node.settings)
    node.server.config.app = node.app
    return node


@pytest.fixture
def auth_node(tmp_path: Path) -> Iterator[ThreadedNode]:
    """A node (uvicorn in a thread) that requires tokens signed with SECRET."""
    node = _requiring_tokens(ThreadedNode(tmp_path / "eu-west-1")).start()
    try:
        yield node
    finally:
        node.stop()


def _update(text: str) -> bytes:
    doc = pycrdt.Doc(client_id=4242)
    doc.get("body", type=pycrdt.Text).insert(0, text)
    return doc.get_update()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = {"prefix": ""}
DOC = "team-a:notes"

#: Every HTTP route behind a token: (method, path, right, request arguments).
ROUTES: list[tuple[str, str, str | None, dict[str, Any]]] = [
    ("GET", "/v1/cluster", None, {}),
    ("GET", "/v1/cluster/overview", None, {}),
    ("GET", "/v1/cluster/members", None, {}),
    ("GET", "/v1/docs", None, {}),
    ("GET", "/v1/docs/{doc_id}", "read", {}),
    ("GET", "/v1/docs/{doc_id}/update", "read", {}),
    ("GET", "/v1/docs/{doc_id}/replicas", "read", {}),
    ("POST", "/v1/docs/{doc_id}/update", "write", {"content": _update("new"), "headers": OCTET}),
    (
        "PATCH",
        "/v1/docs/{doc_id}",
        "write",
        {"json": {"ops": [{"op": "insert_text", "path": ["body"], "index": 0, "text": "new"}]}},
    ),
    ("DELETE", "/v1/docs/{doc_id}", "write", {}),
    ("GET", "/v1/docs/{doc_id}/placement", "read", {}),
    ("PUT", "/v1/docs/{doc_id}/placement", "write", {"json": {"replicas": 1}}),
]
OPEN = {("GET", "/v1/health")}
#: Membership changes: signed with the cluster secret, whatever token comes with them.
SIGNED = {
    ("POST", "/v1/cluster/join"),
    ("POST", "/v1/cluster/leave"),
    ("POST", "/v1/cluster/members/{member}/remove"),
}


def _call(
    client: httpx.Client, route: tuple[str, str, str | None, dict[str, Any]], **extra: Any
) -> httpx.Response:
    method, path, _, arguments = route
    headers = {**arguments.get("headers", {}), **extra.pop("headers", {})}
    rest = {k: v for k, v in arguments.items() if k != "headers"}
    return client.request(method, path.format(doc_id=DOC), headers=headers, **rest, **extra)


def _seed(client: httpx.Client, admin: str) -> dict[str, Any]:
    response = client.post(
        f"/v1/docs/{DOC}/update", content=_update("seed"), headers={**OCTET, **_auth(admin)}
    )
    assert response.status_code == 200, response.text
    return _snapshot(client, admin)


def _snapshot(client: httpx.Client, admin: str) -> dict[str, Any]:
    response = client.get(f"/v1/docs/{DOC}", headers=_auth(admin))
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return {"content": view["content"], "state_vector": view["state_vector"]}


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), response.headers
    else:
        assert "WWW-Authenticate" not in response.headers


def test_every_http_route_is_in_the_table(auth_node: ThreadedNode) -> None:
    """A route added without a line here (and a token check) fails this test."""
    served = {
        (method.upper(), path)
        for path, operations in auth_node.app.openapi()["paths"].items()
        for method in operations
    }
    assert served == {(method, path) for method, path, _, _ in ROUTES} | OPEN | SIGNED


@pytest.mark.parametrize("route", sorted(SIGNED))
def test_a_membership_change_needs_the_cluster_secret_not_a_token(
    auth_node: ThreadedNode, route: tuple[str, str]
) -> None:
    method, path = route
    with auth_node.client() as client:
        answer = client.request(
            method, path.format(member="eu-west-1"), headers=_auth(_token(**ADMIN))
        )
    _error(answer, 403, "signature_required")


@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_route_requires_a_token(
    auth_node: ThreadedNode, route: tuple[str, str, str | None, dict[str, Any]]
) -> None:
    admin = _token(**ADMIN)
    right = route[2]
    with auth_node.client() as client:
        before = _seed(client, admin)

        _error(_call(client, route), 401, "missing_token")
        _error(_call(client, route, headers={"Authorization": "Basic dTpw"}), 401, "missing_token")
        _error(_call(client, route, headers=_auth("mrd1.garbage.x")), 401, "invalid_token")
        _error(
            _call(client, route, headers=_auth(_token(prefix="", secret=b"other"))),
            401,
            "invalid_token",
        )
        expired = _token(prefix="", ttl=60, now=time.time() - 120)
        _error(_call(client, route, headers=_auth(expired)), 401, "token_expired")

        other = _token(prefix="team-b:")
        read_only = _token(ids=[DOC], write=False)
        if right is not None:
            _error(_call(client, route, headers=_auth(other)), 403, "forbidden")
        if right == "write":
            _error(_call(client, route, headers=_auth(read_only)), 403, "forbidden")
        # Nothing above changed the document.
        assert _snapshot(client, admin) == before

        for token in (_token(ids=[DOC], write=right == "write"), _token(prefix="team-a:")):
            answer = _call(client, route, headers=_auth(token))
            assert answer.status_code == 200, answer.text
            if route[0] == "DELETE":
                break


def test_a_refused_write_is_refused_before_its_body_is_read(auth_node: ThreadedNode) -> None:
    admin = _token(**ADMIN)
    read_only = _token(prefix="", write=False)
    with auth_node.client() as client:
        before = _seed(client, admin)
        # Headers declaring a 1 TiB body, then nothing: the answer is the token's refusal
        # (not 413), and it comes without the node waiting for the body.
        for token, status in ((None, b"401"), (read_only, b"403")):
            head = (
                f"POST /v1/docs/{DOC}/update HTTP/1.1\r\nHost: node\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 1099511627776\r\n"
                + (f"Authorization: Bearer {token}\r\n" if token else "")
                + "\r\n"
            )
            with socket.create_connection(
                ("127.0.0.1", auth_node.port), 10 * TIMEOUT_FACTOR
            ) as sock:
                sock.sendall(head.encode())
                assert sock.recv(65536).startswith(b"HTTP/1.1 " + status)
        # Neither is a body that is not an update looked at.
        answer = client.post(
            f"/v1/docs/{DOC}/update", content=b"\x00garbage", headers={**OCTET, **_auth(read_only)}
        )
        _error(answer, 403, "forbidden")
        # A refused write to a new document creates nothing.
        answer = client.patch(
            "/v1/docs/team-a:new",
            json={"ops": [{"op": "set", "path": ["m", "k"], "value": 1}]},
            headers=_auth(_token(prefix="team-b:")),
        )
        _error(answer, 403, "forbidden")
        _error(client.get("/v1/docs/team-a:new", headers=_auth(admin)), 404, "document_not_found")
        assert _snapshot(client, admin) == before


def test_list_shows_only_what_the_token_covers(auth_node: ThreadedNode) -> None:
    admin = _token(**ADMIN)
    names = ["team-a:1", "team-a:2", "team-a:3", "team-ab", "team-b:1", "zeta"]
    with auth_node.client() as client:
        for name in names:
            answer = client.patch(
                f"/v1/docs/{name}",
                json={"ops": [{"op": "set", "path": ["m", "k"], "value": 1}]},
                headers=_auth(admin),
            )
            assert answer.status_code == 200, answer.text
        assert client.delete("/v1/docs/team-a:3", headers=_auth(admin)).status_code == 200

        def listed(token: str, **params: Any) -> list[str]:
            ids: list[str] = []
            cursor = None
            while True:
                query = {**params, **({"cursor": cursor} if cursor else {})}
                answer = client.get("/v1/docs", params=query, headers=_auth(token))
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert len(body["documents"]) <= params.get("limit", 100)
                ids += [d["id"] for d in body["documents"]]
                cursor = body["next_cursor"]
                if cursor is None:
                    return ids

        assert listed(admin) == names[:2] + names[3:]
        team_a = _token(prefix="team-a:", write=False)
        assert listed(team_a) == ["team-a:1", "team-a:2"]
        assert listed(team_a, limit=1) == ["team-a:1", "team-a:2"]
        assert listed(team_a, prefix="team") == ["team-a:1", "team-a:2"]
        assert listed(team_a, prefix="team-a:2") == ["team-a:2"]
        assert listed(team_a, prefix="team-b") == []
        assert listed(team_a, prefix="zeta") == []
        chosen = _token(ids=["zeta", "team-b:1", "team-a:3", "missing", "team-a:1"])
        assert listed(chosen) == ["team-a:1", "team-b:1", "zeta"]
        assert listed(chosen, limit=1) == ["team-a:1", "team-b:1", "zeta"]
        assert listed(chosen, prefix="team-") == ["team-a:1", "team-b:1"]
        assert listed(_token(prefix="nothing-here")) == []


def test_health_and_root_stay_open(auth_node: ThreadedNode) -> None:
    with auth_node.client() as client:
        assert client.get("/v1/health").json()["status"] == "ok"
        assert client.get("/").status_code == 200
        assert client.get("/v1/health", headers=_auth("garbage")).status_code == 200
        assert client.get("/metrics").status_code == 200  # scrapers carry no token


def test_peer_link_needs_no_token(tmp_path: Path) -> None:
    """/v1/peer has its own handshake (the cluster secret): a client without a token gets
    that far, and a node refuses it there."""
    cluster = parse_config({"regions": {"eu-west": {"nodes": ["127.0.0.1:1", "127.0.0.1:2"]}}})
    node = _requiring_tokens(ThreadedNode(tmp_path / "eu-west-1", cluster=cluster)).start()
    try:
        url = node.url.replace("http://", "ws://") + "/v1/peer"
        # The WebSocket opens (a token check would answer the handshake with 403)...
        with connect(url, open_timeout=10 * TIMEOUT_FACTOR) as websocket:
            websocket.send(b"not a hello")
            # ...and the peer protocol is what refuses the stranger.
            refused = wait_for(lambda: node.node.replicator.refusals, what="the peer refusal")
        assert "protocol_error" in refused[0]["reason"], refused
    finally:
        node.stop()


def test_auth_off_ignores_authorization(node: ThreadedNode) -> None:
    with node.client() as client:
        answer = client.patch(
            "/v1/docs/free",
            json={"ops": [{"op": "set", "path": ["m", "k"], "value": 1}]},
            headers=_auth("garbage"),
        )
        assert answer.status_code == 200, answer.text
        assert client.get("/v1/cluster").status_code == 200


# -- the command line ----------------------------------------------------------------------

SECRET_ENV = "AUTH_TEST_SECRET"


def _environment(secret: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    return {**env, SECRET_ENV: secret} if secret is not None else env


def _config(tmp_path: Path, auth: str = "") -> Path:
    path = tmp_path / "regions.toml"
    path.write_text(f'[cluster]\nname = "auth-test"\nsecret_env = "{SECRET_ENV}"\n{auth}')
    return path


def test_token_create_prints_a_token_that_verifies(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    env = _environment("s3cret")
    result = run_meridian(
        "token", "create", "--prefix", "team-a:", "--read-only", "--config", config, env=env
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    grant = verify_token(b"s3cret", token)
    assert grant.prefix == "team-a:" and grant.rights == {"read"}
    assert abs(grant.expires_at - time.time() - 3600) < 60

    result = run_meridian(
        "token", "create", "--doc", "a", "--doc", "b", "--ttl", "60", "--subject", "ci",
        "--config", config, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    grant = verify_token(b"s3cret", result.stdout.strip())
    assert grant.ids == {"a", "b"} and grant.rights == {"read", "write"}
    assert grant.subject == "ci" and grant.expires_at - grant.issued_at == 60


def test_token_create_errors(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    result = run_meridian(
        "token", "create", "--prefix", "p", "--config", config, env=_environment(None)
    )
    assert result.returncode == 2 and result.stdout == ""
    assert f"set the environment variable {SECRET_ENV}" in result.stderr
    env = _environment("s3cret")
    for args, message in [
        (["--doc", "not an id"], "invalid document id"),
        (["--prefix", "p", "--ttl", "0"], "positive integer"),
        (["--prefix", "p", "--doc", "d"], "not allowed with argument"),
        ([], "one of the arguments --prefix --doc is required"),
    ]:
        result = run_meridian("token", "create", *args, "--config", config, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and result.stdout == ""


def test_serve_refuses_an_open_address_without_auth(tmp_path: Path) -> None:
    args = ["serve", "--region", "eu-west", "--listen", "0.0.0.0:0", "--data", str(tmp_path / "d")]
    result = run_meridian(*args, "--config", str(_config(tmp_path)), env=_environment("s3cret"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "listening on 0.0.0.0 needs access tokens" in lines[0]
    assert "[auth]" in lines[0] and "--insecure" in lines[0]
    # [auth] asks for tokens, and there is no secret to sign them with.
    config = _config(tmp_path, "[auth]\nrequired = true\n")
    result = run_meridian(*args, "--config", str(config), env=_environment(None))
    assert result.returncode == 2
    assert f"set the environment variable {SECRET_ENV}" in result.stderr


def test_serve_insecure_on_an_open_address(tmp_path: Path) -> None:
    process = NodeProcess(
        tmp_path / "d",
        listen="0.0.0.0:0",
        config=_config(tmp_path),
        extra=["--insecure"],
        env=_environment(None),
    ).start()
    try:
        port = process.url.rsplit(":", 1)[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/v1/docs").status_code == 200
            assert client.get("/v1/cluster").status_code == 200
        assert process.terminate() == 0
        assert "serving 0.0.0.0 without access tokens" in "".join(process.output)
    finally:
        process.close()


def test_auth_required_from_the_environment(tmp_path: Path) -> None:
    """MERIDIAN_AUTH_REQUIRED overrides auth.required: tokens on loopback, none on an open
    address (with a warning), and a clear exit for a value that is not a boolean."""
    config = _config(tmp_path)
    env = {**_environment("s3cret"), "MERIDIAN_AUTH_REQUIRED": "true"}
    process = NodeProcess(tmp_path / "on", config=config, env=env).start()
    try:
        with process.client() as client:
            _error(client.get("/v1/docs"), 401, "missing_token")
            token = _token(prefix="", secret=b"s3cret")
            assert client.get("/v1/docs", headers=_auth(token)).status_code == 200
        assert process.terminate() == 0
    finally:
        process.close()

    env = {**_environment(None), "MERIDIAN_AUTH_REQUIRED": "off"}
    process = NodeProcess(tmp_path / "off", listen="0.0.0.0:0", config=config, env=env).start()
    try:
        port = process.url.rsplit(":", 1)[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/v1/docs").status_code == 200
        assert process.terminate() == 0
        assert "serving 0.0.0.0 without access tokens" in "".join(process.output)
    finally:
        process.close()

    args = ["serve", "--region", "eu-west", "--listen", "127.0.0.1:0", "--data", str(tmp_path)]
    env = {**_environment(None), "MERIDIAN_AUTH_REQUIRED": "maybe"}
    result = run_meridian(*args, "--config", str(config), env=env)
    assert result.returncode == 2
    assert "MERIDIAN_AUTH_REQUIRED must be true or false" in result.stderr


def test_serve_with_auth_required(tmp_path: Path) -> None:
    config = _config(tmp_path, "[auth]\n")
    env = _environment("s3cret")
    result = run_meridian("token", "create", "--doc", "d1", "--config", str(config), env=env)
    token = result.stdout.strip()
    process = NodeProcess(tmp_path / "d", config=config, env=env).start()
    try:
        with process.client() as client:
            ops = {"ops": [{"op": "set", "path": ["m", "k"], "value": 1}]}
            _error(client.patch("/v1/docs/d1", json=ops), 401, "missing_token")
            assert client.patch("/v1/docs/d1", json=ops, headers=_auth(token)).status_code == 200
            _error(client.patch("/v1/docs/d2", json=ops, headers=_auth(token)), 403, "forbidden")
            assert client.get("/v1/health").status_code == 200
        assert process.terminate() == 0
    finally:
        process.close()


# -- the client WebSocket endpoints ----------------------------------------------------------


def _ws(node: ThreadedNode, path: str) -> str:
    return node.url.replace("http://", "ws://") + path


async def _first_close(url: str, **connect: Any) -> tuple[int | None, list[bytes | str]]:
    received: list[bytes | str] = []
    async with websockets.connect(url, **connect) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    received.append(await ws.recv())
        return ws.close_code, received


@pytest.mark.parametrize("path", ["/v1/sync/notes", "/v1/docs/notes/events"])
def test_websockets_need_a_token_for_the_document(auth_node: ThreadedNode, path: str) -> None:
    other = _token(prefix="other")
    expired = _token(prefix="", write=False, now=time.time() - 10_000, ttl=60)
    for url, expected in [
        (_ws(auth_node, path), 4401),
        (_ws(auth_node, path) + f"?token={other}", 4403),
        (_ws(auth_node, path) + f"?token={expired}", 4401),
        (_ws(auth_node, path) + "?token=garbage", 4401),
    ]:
        code, received = asyncio.run(_first_close(url))
        assert code == expected, (url, code)
        if path.startswith("/v1/sync"):
            assert received and isinstance(received[0], bytes) and received[0][0] == 2  # auth
    # Counted as refused input (/v1/cluster and meridian_websocket_rejected_total).
    endpoint = "sync" if path.startswith("/v1/sync") else "events"
    with auth_node.client() as client:
        view = client.get("/v1/cluster", headers=_auth(_token(**ADMIN))).json()
    assert view["clients"]["refused_input"][endpoint] == {"forbidden": 1, "unauthorized": 3}


def test_a_read_only_token_can_follow_but_not_write_over_websocket(
    auth_node: ThreadedNode,
) -> None:
    reader = _token(prefix="notes", write=False)

    async def scenario() -> tuple[int | None, bytes]:
        # The token as a subprotocol (what browsers can send), echoed by the node.
        async with websockets.connect(
            _ws(auth_node, "/v1/sync/notes"), subprotocols=[f"meridian.token.{reader}"]
        ) as ws:
            assert ws.subprotocol == f"meridian.token.{reader}"
            await ws.recv()  # sync step 1: reading is allowed
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            doc.get("body", type=pycrdt.Text).insert(0, "sneaky")
            await ws.send(b"\x00\x02" + _var_bytes(bytes(doc.get_update())))
            last = b""
            with contextlib.suppress(websockets.ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        frame = await ws.recv()
                        if isinstance(frame, bytes):
                            last = frame
            return ws.close_code, last

    code, last = asyncio.run(scenario())
    assert code == 1008 and last[0] == 2  # permission denied, then closed
    with auth_node.client() as client:
        admin = _token(prefix="")
        assert client.get("/v1/docs/notes", headers=_auth(admin)).status_code == 404


def _var_bytes(data: bytes) -> bytes:
    length, out = len(data), bytearray()
    while length > 0x7F:
        out.append(0x80 | (length & 0x7F))
        length >>= 7
    out.append(length)
    return bytes(out) + data
