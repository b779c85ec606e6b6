"""Access tokens (:mod:`app.auth`): ``verify_token`` raises TokenError or returns a grant, for
raw text, for tokens validly signed over any payload (what a node of the cluster could sign:
"still checked, never trusted blindly"), and for tokens as a WebSocket handshake carries them
(``token_from_websocket``: header, subprotocol, query string). A grant answers every question
about any document id without raising.

The input's first byte picks the form; the rest is the token, the payload, or three
length-prefixed parts of a handshake."""

from __future__ import annotations

import base64
import json

from app import auth
from app.auth import Grant, TokenError, create_token, token_from_websocket, verify_token

from .._input import Input

SECRET = b"the cluster secret"
NOW = 1_800_000_000.0


def _now() -> float:
    return NOW


def seeds() -> list[bytes]:
    tokens = [
        create_token(SECRET, prefix="doc", rights={"read", "write"}, ttl_seconds=3600, now=_now),
        create_token(SECRET, ids=["a", "b:1"], rights={"read"}, ttl_seconds=60, now=_now),
        create_token(
            SECRET, prefix="", rights={"read"}, ttl_seconds=1, subject="s", key_id="k", now=_now
        ),
    ]
    payloads = [base64.urlsafe_b64decode(t.split(".")[1] + "==") for t in tokens]
    headers = [b"Bearer " + tokens[0].encode(), b"meridian.token." + tokens[1].encode(), b"x=1"]
    scope = b"".join(len(part).to_bytes(2, "big") + part for part in headers)
    return [
        *(b"\x00" + t.encode() for t in tokens),
        *(b"\x01" + p for p in payloads),
        b"\x02" + scope,
    ]


def dictionary() -> list[bytes]:
    words = ["docs", "rights", "iat", "exp", "sub", "kid", "prefix", "ids", "read", "write"]
    return [f'"{word}"'.encode() for word in words] + [
        b"mrd1.",
        b"Bearer ",
        b"token=",
        b"meridian.token.",
    ]


def test_one_input(data: bytes) -> None:
    source = Input(data)
    form = source.byte() % 3
    if form == 0:
        token: str | None = source.rest().decode("utf-8", "replace")
    elif form == 1:
        token = _signed(source.rest())
    else:
        header, subprotocol, query = source.chunk(), source.chunk(), source.chunk()
        scope = {
            "headers": [(b"authorization", header)],
            "subprotocols": [subprotocol.decode("utf-8", "replace")],
            "query_string": query,
        }
        token, _ = token_from_websocket(scope)
        if token is None:
            return
    assert token is not None
    try:
        grant = verify_token(SECRET, token, now=_now)
    except TokenError as exc:
        if exc.status != 401:
            raise
        return
    _ask(grant, token)


def _signed(payload: bytes) -> str:
    """A token over ``payload``, signed as a node of the cluster would."""
    encoded = base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")
    signature = auth._sign(auth._token_key(SECRET), encoded)
    return f"mrd1.{encoded}.{signature}"


def _ask(grant: Grant, token: str) -> None:
    if (grant.prefix is None) == (grant.ids is None):
        raise AssertionError(f"a grant with both or neither of prefix and ids: {grant}")
    for doc_id in ("doc", "", token[:40], *(grant.ids or ())):
        grant.covers(doc_id)
        grant.allows(doc_id, "read")
        grant.allows(None, "write")
        grant.list_prefix(doc_id)
    json.dumps(sorted(grant.rights))
