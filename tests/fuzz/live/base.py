"""What every route's generator shares: the documents a request may name (seeded, fuzz,
invalid), how an id is spelled in a path, query strings, hostile headers, tokens, and
:meth:`Base.seal`, which applies the oracle to a write before it is sent."""

from __future__ import annotations

import random
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.auth import Right
from app.http.forward import sign_forwarded
from crdt import DOCUMENT_ID

from .actions import Framing, HttpRequest
from .content import Oracle, Tokens
from .mutate import Mutator

__all__ = ["Base", "Setting"]

#: Ids that are not document ids, several of them one character away from a seeded one.
BAD_IDS: tuple[bytes, ...] = (
    b"-leading-dash",
    b".",
    b"..",
    b"%2e%2e",
    b"a" * 129,
    b"x" * 4000,
    b"%C3%A9t%C3%A9",  # "été"
    "ünïcode".encode(),  # raw UTF-8 bytes in the path
    b"%F0%9F%98%80",  # an emoji
    b"\xff\xfe",  # not UTF-8 at all
    b"%FF%FE",
    b"seed-map%20",
    b"seed-map%0A",
    b"seed-map%00",
    b"%D1%95eed-map",  # a Cyrillic s
    b"seed-map%2F..%2Fseed-text",
    b"fz-1%2F..%2Fseed-map",
    b"a%2Fb",
    b"a%",
    b"%zz",
    b"a%3Fb",
    b"a%23b",
    b"a%5Cb",
    b"%2Fetc%2Fpasswd",
    b"..%2F..%2F..%2Fetc%2Fpasswd",
    b"a;b",
    b"a,b",
    b"a@b",
    b"a~b",
    b"a+b",
    b"",
)

_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-"


@dataclass(slots=True)
class Setting:
    """The node under fire, as the generators need to know it."""

    mode: str
    #: The cluster secret (None: a standalone node, which has none).
    secret: bytes | None
    auth: bool
    node_id: str
    max_body: int
    max_message: int
    #: Seeded live documents and their states' vectors; the deleted (tombstone) one.
    seeded: list[str] = field(default_factory=list)
    tombstone: str = "seed-gone"
    vectors: list[bytes] = field(default_factory=list)
    #: Each seeded live document's JSON view and digest.
    contents: dict[str, dict[str, Any]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)


class Base:
    """Shared pieces of the generators (see the module docstring)."""

    def __init__(self, m: Mutator, setting: Setting, oracle: Oracle, tokens: Tokens | None) -> None:
        self.m = m
        self.setting = setting
        self.oracle = oracle
        self.tokens = tokens
        self.fuzz_ids = [f"fz-{i}" for i in range(24)]
        self.all_seeded = [*setting.seeded, setting.tombstone]

    # -- documents ---------------------------------------------------------------------------

    def fuzz_doc(self) -> str:
        """A document no seeded check looks at: the pool, or now and then a new valid id
        (up to the 128-character limit, every allowed character)."""
        if self.m.chance(0.85):
            return self.m.pick(self.fuzz_ids)
        size = self.m.pick((1, 3, 20, 126))
        return "fz" + "".join(self.m.rng.choices(_ID_CHARS, k=size))

    def pick_doc(self, seeded: float, bad: float) -> str | None:
        """A seeded document with probability ``seeded``, None (an invalid id, spelled by
        :meth:`segment`) with probability ``bad``, else a fuzz document."""
        roll = self.m.rng.random()
        if roll < seeded:
            return self.m.pick(self.all_seeded)
        if roll < seeded + bad:
            return None
        return self.fuzz_doc()

    def segment(self, doc: str | None, spelling: float | None = None) -> bytes:
        """``doc`` as a path segment: as is, or with some characters percent-encoded (it
        decodes to the same id); an invalid id for None. ``spelling`` seeds the choices
        (the same spelling for two ids), else they come from the run's generator."""
        m = self.m if spelling is None else Mutator(random.Random(spelling))
        if doc is None:
            return m.pick(BAD_IDS)
        assert DOCUMENT_ID.fullmatch(doc), doc
        if m.chance(0.8):
            return doc.encode()
        hexes = m.pick(("%{:02X}", "%{:02x}"))
        return "".join(hexes.format(ord(c)) if m.chance(0.3) else c for c in doc).encode()

    def is_seeded(self, doc: str | None) -> bool:
        return doc in self.all_seeded

    # -- query strings -----------------------------------------------------------------------

    def query(self, params: list[tuple[str, bytes]]) -> bytes:
        """``params`` as a query string, values percent-encoded (or, now and then, raw), with
        junk parameters and separators added; the names given appear once each."""
        m = self.m
        parts = []
        for name, value in params:
            encoded = value if m.chance(0.1) else urllib.parse.quote_from_bytes(value, "").encode()
            parts.append(name.encode() + b"=" + encoded)
        for _ in range(m.rng.randrange(3) if m.chance(0.25) else 0):
            parts.insert(
                m.rng.randrange(len(parts) + 1),
                m.pick((b"", b"=", b"x", b"junk=1", b"a=%zz", b"b=" + b"%FF" * 100, b"&")),
            )
        if not parts:
            return m.pick((b"", b"", b"", b"?"))
        return b"?" + b"&".join(parts)

    def bool_param(self) -> bytes:
        return self.m.pick((b"true", b"false", b"1", b"0", b"yes", b"on", b"TRUE", b"maybe", b""))

    # -- headers ----------------------------------------------------------------------------

    def authorization(self) -> tuple[list[tuple[bytes, bytes]], str | None]:
        """Authorization headers to send and the value the node reads (the first one)."""
        if self.tokens is None:
            if self.m.chance(0.1):
                value = self.m.pick(("Bearer junk", "Basic YTpi", "Bearer " + "A" * 5000))
                return [(b"Authorization", value.encode())], value
            return [], None
        token = self.tokens.pick(self.m)
        if token is None:
            return [], None
        scheme = self.m.pick(("Bearer ", "Bearer ", "Bearer ", "bearer ", "BEARER  ", "Basic "))
        value = _header_safe(scheme + token)
        headers = [(b"Authorization", value.encode("latin-1"))]
        if self.m.chance(0.05):
            headers.append((b"Authorization", b"Bearer " + self.tokens.admin.encode()))
        return headers, value

    def token_allows(self, value: str | None, doc: str | None, right: Right) -> bool:
        """Whether the node grants ``right`` on ``doc`` to Authorization ``value`` (always
        without auth)."""
        if self.tokens is None:
            return True
        return self.tokens.allows(value, doc, right)

    def forwarded(self, method: str, target: bytes, *, valid: bool) -> bytes:
        """An ``X-Meridian-Forwarded`` value: a valid signature of ``method target`` (only
        on a node with a secret, and only when ``valid``), or a forgery of some kind."""
        secret = self.setting.secret
        now = time.time()
        signed_target = _signed_target(target)
        if valid and secret:
            return sign_forwarded(secret, "eu-west-9", method, signed_target, now).encode()
        m = self.m
        roll = m.rng.randrange(7)
        if roll == 0 and secret:  # signed for another target
            return sign_forwarded(secret, "eu-west-9", method, signed_target + "x", now).encode()
        if roll == 1 and secret:  # stale
            return sign_forwarded(secret, "eu-west-9", method, signed_target, now - 3600).encode()
        if roll == 2 and secret:  # signed for another method
            other = "GET" if method != "GET" else "DELETE"
            return sign_forwarded(secret, "eu-west-9", other, signed_target, now).encode()
        if roll == 3:  # the right shape, another cluster's key
            return sign_forwarded(b"other", "eu-west-1", method, signed_target, now).encode()
        if roll == 4:
            return f"eu-west-1;{int(now * 1000)};{'0' * 64}".encode()
        if roll == 5:
            return m.pick((b"", b";;", b"x" * 300, b"eu-west-1;99999999999999999;zz"))
        return _strip_crlf(m.bytes_(b"eu-west-1;1700000000000;" + b"ab" * 32))

    def junk_headers(self) -> list[tuple[bytes, bytes]]:
        """Headers a client may send that should change nothing: proxies' forwarding headers,
        cookies, odd bytes, a very long one, many of them."""
        m = self.m
        pool: list[tuple[bytes, bytes]] = [
            (b"X-Forwarded-For", b"10.0.0.1, 127.0.0.1"),
            (b"X-Forwarded-Host", b"evil.example"),
            (b"X-Forwarded-Proto", b"https"),
            (b"Forwarded", b"for=1.2.3.4;proto=https"),
            (b"X-Real-IP", b"1.2.3.4"),
            (b"X-Meridian-Served-By", b"not-this-node"),
            (b"X-Meridian-Placement", m.pick((b"{}", b"null", b"\xff", b"x" * 1000))),
            (b"X-Meridian-Signature", b"eu-west-1;1;" + b"0" * 64),
            (b"Cookie", b"session=" + b"x" * 100),
            (b"Accept", m.pick((b"*/*", b"application/openmetrics-text", b"text/html;q=0"))),
            (b"Accept-Encoding", m.pick((b"gzip", b"br, deflate", b"identity;q=0"))),
            (b"X-Odd", b"\xff\xfe\x80 latin-1"),
            (b"X-Long", b"y" * m.pick((1000, 8000, 60000))),
            (b"Expect", b"100-continue"),
            (b"Range", b"bytes=0-10"),
            (b"If-None-Match", b'"x"'),
            (b"Origin", b"http://evil.example"),
            (b"Upgrade", b"h2c"),
            (b"Content-Encoding", b"gzip"),
        ]
        headers = [m.pick(pool) for _ in range(m.rng.randrange(1, 4))]
        if m.chance(0.05):
            headers += [(f"X-Many-{i}".encode(), b"v") for i in range(m.pick((100, 500)))]
        return headers

    def content_type(self, expected: bytes) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Content-Type headers and whether the node reads ``expected`` from them (the first
        one, before any parameter, case-insensitive)."""
        m = self.m
        roll = m.rng.randrange(20)
        if roll < 17:
            value = m.pick((expected, expected, expected + b"; charset=utf-8", expected.upper()))
        elif roll < 19:
            value = m.pick(
                (
                    b"text/plain",
                    b"application/json" if expected != b"application/json" else b"text/json",
                    b"application/x-www-form-urlencoded",
                    b"multipart/form-data; boundary=x",
                    b"",
                    expected + b"x",
                    b"application/octet-stream; application/json",
                    b"\xff\xfe",
                )
            )
        else:
            return [], False
        headers = [(b"Content-Type", value)]
        if m.chance(0.05):
            headers.append((b"Content-Type", b"text/plain"))
        read = value.split(b";")[0].strip().lower() == expected
        return headers, read

    def framing(self, body: bytes) -> tuple[Framing, bytes | None]:
        """How to frame ``body``, and the body the node receives (None: never a whole one)."""
        roll = self.m.rng.randrange(40)
        if roll < 33:
            return "exact", body
        framing: Framing = self.m.pick(("long", "short", "chunked", "bad-chunked", "split", "none"))
        if framing in ("long", "bad-chunked"):
            return framing, None
        if framing == "short":
            return framing, body[: len(body) // 2]
        if framing == "none":
            return framing, b""
        return framing, body

    # -- the oracle --------------------------------------------------------------------------

    def seal(
        self,
        request: HttpRequest,
        *,
        refused: bool,
        changes: bool,
        rebuild: Callable[[str], HttpRequest],
    ) -> HttpRequest:
        """Decides what a write to ``request.doc`` expects. A seeded document keeps it only
        when the node must refuse it (``refused``: a reason that holds whatever the body) or
        when it cannot change it (not ``changes``); otherwise it goes to a fuzz document
        (``rebuild(doc)`` makes the same request for another id). The fuzz document is drawn
        whatever the decision, so that the run's choices do not depend on it."""
        instead = self.fuzz_doc()
        if not self.is_seeded(request.doc):
            request.expect = "refuse" if refused else "write"
            return request
        if refused:
            request.expect = "refuse"
            return request
        if not changes:
            request.expect = "same"
            return request
        other = rebuild(instead)
        other.expect = "write"
        return other


def _signed_target(target: bytes) -> str:
    """The target as the node's ``request_target`` computes it from what it received."""
    path, sep, query = target.partition(b"?")
    raw = path + b"?" + query if sep and query else path
    return urllib.parse.quote_from_bytes(raw, "!$&'()*+,;=:@/?%")


def _strip_crlf(value: bytes) -> bytes:
    return value.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")


def _header_safe(value: str) -> str:
    return "".join(c for c in value if c not in "\r\n\x00")
