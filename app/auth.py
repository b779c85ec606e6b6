"""Access tokens: signed grants that any node verifies alone, with no central service.

A token names the documents it covers (an id prefix, or a list of ids), the rights it grants
(``read``, or ``read`` and ``write``) and when it expires, signed with a key derived from the
cluster secret (every node holds it)::

    mrd1.<base64url(payload JSON)>.<base64url(HMAC-SHA256(key, "mrd1." + payload_b64))>
    key = HMAC-SHA256(cluster secret, "meridian-token-v1")

The derived key keeps tokens apart from the peer-link handshake, which signs with the secret
itself (:mod:`app.replication.protocol`): no message of one can stand for a message of the
other. The payload is compact JSON::

    {"sub"?: str, "docs": {"prefix": str} | {"ids": [str, ...]},
     "rights": ["read"] | ["read", "write"], "iat": int, "exp": int, "kid"?: str}

The token logic is plain code (:func:`create_token`, :func:`verify_token`,
:class:`Grant`, :class:`Authorizer`); the helpers at the end only find a token in what an
HTTP request or a WebSocket handshake carries. Errors::

    TokenError(status, code, message)
        401 missing_token   auth is on and the caller sent no token
        401 invalid_token   malformed, signed with another secret, or altered
        401 token_expired   past its "exp"
        403 forbidden       valid, but not for this document or this right

:mod:`app.errors` turns a :class:`TokenError` into its HTTP answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from crdt import DOCUMENT_ID

from .config import NodeSettings
from .errors import MeridianError

__all__ = [
    "MAX_TOKEN_LENGTH",
    "SUBPROTOCOL_PREFIX",
    "Authorizer",
    "Grant",
    "Right",
    "TokenError",
    "bearer_token",
    "create_token",
    "token_from_websocket",
    "verify_token",
]

Right = Literal["read", "write"]

#: Longer tokens are refused before anything else looks at them.
MAX_TOKEN_LENGTH = 4096
#: A WebSocket client that cannot set headers (a browser) may offer the subprotocol
#: ``meridian.token.<token>``.
SUBPROTOCOL_PREFIX = "meridian.token."

_VERSION = "mrd1"
_KEY_LABEL = b"meridian-token-v1"
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_PREFIX = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._:-]{0,127})?")
_RIGHTS: tuple[frozenset[str], ...] = (frozenset({"read"}), frozenset({"read", "write"}))
_REQUIRED_CLAIMS = frozenset({"docs", "rights", "iat", "exp"})
_CLAIMS = _REQUIRED_CLAIMS | {"sub", "kid"}


class TokenError(MeridianError):
    """A request refused for want of a valid token (401) or of the right (403)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @property
    def websocket_close_code(self) -> int:
        """The close code for a WebSocket refused after its handshake: 4401 or 4403 (the
        HTTP status plus 4000, the application range of RFC 6455)."""
        return 4000 + self.status


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows. Exactly one of ``prefix`` and ``ids`` is set."""

    rights: frozenset[str]
    issued_at: int
    expires_at: int
    #: Documents whose id starts with this ("" covers every document).
    prefix: str | None = None
    #: Exactly these documents.
    ids: frozenset[str] | None = None
    subject: str | None = None
    key_id: str | None = None

    def covers(self, doc_id: str) -> bool:
        """True when the token names document ``doc_id``."""
        if self.ids is not None:
            return doc_id in self.ids
        return self.prefix is not None and doc_id.startswith(self.prefix)

    def allows(self, doc_id: str | None, right: Right) -> bool:
        """True when the token grants ``right`` on ``doc_id``. ``doc_id`` None stands for a
        route about no single document (the cluster view, a listing, which shows only
        covered documents): any valid token with the right is enough."""
        if right not in self.rights:
            return False
        return doc_id is None or self.covers(doc_id)

    def list_prefix(self, prefix: str) -> str | None:
        """For a prefix grant: the prefix a listing asked for ``prefix`` runs with so that it
        shows only covered documents (the longer of the two when one extends the other), or
        None when no id can match both. An ids grant answers ``prefix`` unchanged (its
        listing is filtered id by id)."""
        if self.prefix is None:
            return prefix
        if prefix.startswith(self.prefix):
            return prefix
        if self.prefix.startswith(prefix):
            return self.prefix
        return None


def create_token(
    secret: bytes,
    *,
    prefix: str | None = None,
    ids: Iterable[str] | None = None,
    rights: Collection[str],
    ttl_seconds: int,
    subject: str | None = None,
    key_id: str | None = None,
    now: Callable[[], float] = time.time,
) -> str:
    """A token for the documents under ``prefix`` ("" for all) or for exactly ``ids``, with
    ``rights`` (``{"read"}`` or ``{"read", "write"}``), valid ``ttl_seconds`` from now.

    Raises ValueError for an empty secret, both or neither of ``prefix`` and ``ids``, an
    invalid id or prefix, other rights, a ttl that is not a positive integer, or a token that
    would be longer than :data:`MAX_TOKEN_LENGTH` (too many ids)."""
    if not secret:
        raise ValueError("tokens are signed with the cluster secret, and it is empty")
    if (prefix is None) == (ids is None):
        raise ValueError("a token covers either a prefix or a list of ids (give one of them)")
    docs: dict[str, Any]
    if prefix is not None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"prefix {prefix[:140]!r} can start no document id")
        docs = {"prefix": prefix}
    else:
        assert ids is not None
        chosen = sorted(set(ids))
        if not chosen:
            raise ValueError("a token for a list of ids needs at least one id")
        for doc_id in chosen:
            if not DOCUMENT_ID.fullmatch(doc_id):
                raise ValueError(f"invalid document id {doc_id[:140]!r}")
        docs = {"ids": chosen}
    if frozenset(rights) not in _RIGHTS:
        raise ValueError(f"rights must be ['read'] or ['read', 'write'], got {sorted(rights)}")
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be a positive integer, got {ttl_seconds!r}")
    issued = int(now())
    claims: dict[str, Any] = {}
    if subject is not None:
        claims["sub"] = subject
    claims["docs"] = docs
    claims["rights"] = sorted(rights)
    claims["iat"] = issued
    claims["exp"] = issued + ttl_seconds
    if key_id is not None:
        claims["kid"] = key_id
    payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
    token = f"{_VERSION}.{payload}.{_sign(_token_key(secret), payload)}"
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(
            f"the token would be {len(token)} characters, over {MAX_TOKEN_LENGTH}: "
            "name fewer ids, or use a prefix"
        )
    return token


def verify_token(secret: bytes, token: str, *, now: Callable[[], float] = time.time) -> Grant:
    """The grant ``token`` carries; raises :class:`TokenError` (401 ``invalid_token`` when it
    is malformed or not signed with ``secret``, 401 ``token_expired`` past its expiry)."""
    return _verify(_token_key(secret), token, now())


class Authorizer:
    """Decides a request: built once per node from its settings.

    With auth off (``required`` false) every call allows everything and returns None."""

    def __init__(
        self,
        secret: bytes | None,
        *,
        required: bool,
        now: Callable[[], float] = time.time,
    ) -> None:
        if required and not secret:
            raise ValueError("access tokens need the cluster secret")
        #: Clients must present a token.
        self.required = required
        # The derived signing key (never the secret itself: see the module docstring).
        self._key = _token_key(secret) if secret else b""
        self._now = now

    @classmethod
    def from_settings(cls, settings: NodeSettings) -> Authorizer:
        return cls(settings.secret, required=settings.auth_required)

    def authorize(self, token: str | None, doc_id: str | None, right: Right) -> Grant | None:
        """The grant that allows ``right`` on ``doc_id`` (None: a route about no single
        document), or None when auth is off. Raises :class:`TokenError`: 401
        ``missing_token`` (no token), ``invalid_token``, ``token_expired``; 403 ``forbidden``
        (another document, or a read-only token asked to write)."""
        if not self.required:
            return None
        if not token:
            raise TokenError(
                401,
                "missing_token",
                "this node requires an access token: send Authorization: Bearer <token>",
            )
        grant = _verify(self._key, token, self._now())
        if not grant.allows(doc_id, right):
            if right not in grant.rights:
                message = f"the token does not grant {right}"
            else:
                message = "the token does not cover this document"
            if doc_id is not None:
                message += f" (document {doc_id[:140]!r})"
            raise TokenError(403, "forbidden", message)
        return grant


# -- finding the token ---------------------------------------------------------------------


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value; None for no header or
    another scheme."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def token_from_websocket(scope: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(token, subprotocol to accept with) of a WebSocket handshake: its ASGI scope or the
    Starlette ``WebSocket`` itself (a mapping over its scope).

    The token is looked for in an ``Authorization: Bearer`` header, then in an offered
    subprotocol ``meridian.token.<token>``, then in the query string's ``token=``. When it
    came as a subprotocol, that subprotocol is returned second: the server must accept the
    connection with it (a browser drops a connection whose server picked none of the
    subprotocols it offered). Either may be None."""
    headers = scope.get("headers") or []
    for name, value in headers:
        if name == b"authorization":
            token = bearer_token(value.decode("latin-1"))
            if token:
                return token, None
    for subprotocol in scope.get("subprotocols") or []:
        if subprotocol.startswith(SUBPROTOCOL_PREFIX) and len(subprotocol) > len(
            SUBPROTOCOL_PREFIX
        ):
            return subprotocol[len(SUBPROTOCOL_PREFIX) :], subprotocol
    query = scope.get("query_string") or b""
    values = urllib.parse.parse_qs(query.decode("latin-1")).get("token")
    return (values[0] if values else None), None


# -- the token format ----------------------------------------------------------------------


def _token_key(secret: bytes) -> bytes:
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def _sign(key: bytes, payload_b64: str) -> str:
    signed = f"{_VERSION}.{payload_b64}".encode("ascii")
    return _b64encode(hmac.new(key, signed, hashlib.sha256).digest())


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _invalid(message: str) -> TokenError:
    return TokenError(401, "invalid_token", message)


def _verify(key: bytes, token: str, now: float) -> Grant:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise _invalid(f"the token is not a string of at most {MAX_TOKEN_LENGTH} characters")
    parts = token.split(".")
    if (
        len(parts) != 3
        or parts[0] != _VERSION
        or not _B64URL.fullmatch(parts[1])
        or not _B64URL.fullmatch(parts[2])
    ):
        raise _invalid("not a Meridian access token (mrd1.<payload>.<signature>)")
    # Compared as their canonical encodings: no second spelling of a signature passes.
    expected = _sign(key, parts[1])
    if not hmac.compare_digest(expected.encode("ascii"), parts[2].encode("ascii")):
        raise _invalid("the token's signature does not match: altered, or another cluster's")
    # Signed by a node of this cluster from here on; still checked, never trusted blindly.
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except (ValueError, binascii.Error, RecursionError):
        raise _invalid("the token's payload is not JSON") from None
    grant = _grant(claims)
    if now >= grant.expires_at:
        raise TokenError(401, "token_expired", f"the token expired at {_iso(grant.expires_at)}")
    return grant


def _grant(claims: Any) -> Grant:
    if not isinstance(claims, dict) or not _REQUIRED_CLAIMS <= claims.keys() <= _CLAIMS:
        # An unknown claim may restrict what a newer version grants: refuse, never ignore.
        raise _invalid(f"the token's claims must be {sorted(_REQUIRED_CLAIMS)} (+ sub, kid)")
    docs, rights = claims["docs"], claims["rights"]
    issued, expires = claims["iat"], claims["exp"]
    subject, key_id = claims.get("sub"), claims.get("kid")
    if not all(_is_int(value) for value in (issued, expires)):
        raise _invalid("the token's iat and exp must be integers")
    if (
        not isinstance(rights, list)
        or not all(isinstance(right, str) for right in rights)
        or frozenset(rights) not in _RIGHTS
    ):
        raise _invalid("the token's rights must be ['read'] or ['read', 'write']")
    if not all(value is None or isinstance(value, str) for value in (subject, key_id)):
        raise _invalid("the token's sub and kid must be strings")
    prefix: str | None = None
    ids: frozenset[str] | None = None
    if isinstance(docs, dict) and docs.keys() == {"prefix"} and isinstance(docs["prefix"], str):
        prefix = docs["prefix"]
    elif (
        isinstance(docs, dict)
        and docs.keys() == {"ids"}
        and isinstance(docs["ids"], list)
        and docs["ids"]
        and all(isinstance(doc_id, str) for doc_id in docs["ids"])
    ):
        ids = frozenset(docs["ids"])
    else:
        raise _invalid('the token\'s docs must be {"prefix": str} or {"ids": [str, ...]}')
    return Grant(
        frozenset(rights), issued, expires, prefix=prefix, ids=ids, subject=subject, key_id=key_id
    )


def _iso(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{seconds} (unix time)"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
